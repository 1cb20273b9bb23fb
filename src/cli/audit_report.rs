//! `vncbot audit report`: one row per grant, read from the journal. Who (the member), what (the
//! instance), why (the reason), how it was allowed, when and how long, and what happened under it
//! (links minted, presses refused), under a header that says whether the chain verified.
//!
//! The rows are a projection of the journal's records, made here and nowhere else: a `granted`
//! record opens a row (its `seq` is the grant's id); records that refer to it (`refers_to`) fill
//! it in: `requested` per press, `issued` per link (referring to its `requested`), a press
//! refused or failed (referring to the grant or to its `requested`), and `ended` with its code.
//! A break-glass grant refers to its `break_glass` record, and that use's `acknowledged`,
//! `flagged` and `ack_overdue` records (which refer to the use) land on the grant's row. Fields a newer bot writes (`instance_name`, `rule_roles`, `approvers`,
//! `break_glass`, `acknowledged_by`, `on_call`) show when present and are simply absent before.

mod allowed;
pub mod html;
pub mod select;

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use vncbot::text::{json_escape_hidden, visible};

pub use self::allowed::{text_of, Allowed};
use self::select::{format_time, journal_path, read_raw, Chain, Raw, Selection, When};
use super::Exit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
    Html,
}

/// The command line's options, as clap parsed them.
pub struct Options {
    pub since: Option<When>,
    pub until: Option<When>,
    pub member: Option<String>,
    pub instance: Option<String>,
    pub format: Format,
    pub file: Option<PathBuf>,
}

/// One grant, as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct GrantRow {
    pub grant: u64,
    pub member_id: String,
    pub member_name: String,
    pub instance: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    pub region: Option<String>,
    pub reason: Option<String>,
    pub allowed: Allowed,
    pub granted_at: Option<String>,
    pub until: Option<String>,
    pub ended_at: Option<String>,
    /// The `ended` record's code: done, expired, revoked, role_removed, …
    pub ended_why: Option<String>,
    /// Who ended it (the holder, an admin, or the bot itself for expiry).
    pub ended_by: Option<String>,
    pub links_minted: u64,
    /// Presses that minted no link: refused by policy or limits, or failed at Tencent.
    pub presses_refused: u64,
    /// The digest of the config in force when the grant was recorded (its `granted` record's
    /// `config_digest`; absent in journals from before digests were recorded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    #[serde(skip)]
    pub start: Option<OffsetDateTime>,
    #[serde(skip)]
    pub end: Option<OffsetDateTime>,
}

impl GrantRow {
    fn open(r: &Raw) -> Self {
        let opt = |k: &str| r.fields.get(k).filter(|v| !v.is_null()).cloned();
        let until = r.str("until").and_then(select::parse_time);
        GrantRow {
            grant: r.seq,
            member_id: r.actor_id().to_owned(),
            member_name: r.actor_name().to_owned(),
            instance: r.str("instance").unwrap_or_default().to_owned(),
            instance_name: r.str("instance_name").map(str::to_owned),
            region: r.str("region").map(str::to_owned),
            reason: r.str("reason").map(str::to_owned),
            allowed: Allowed {
                rule: r.u64("rule"),
                rule_roles: opt("rule_roles"),
                approvers: opt("approvers"),
                break_glass: opt("break_glass"),
                acknowledged_by: opt("acknowledged_by"),
                on_call: opt("on_call"),
                flagged_by: opt("flagged_by"),
                ack_overdue: opt("ack_overdue"),
            },
            granted_at: r.time.map(format_time),
            until: until.map(format_time),
            ended_at: None,
            ended_why: None,
            ended_by: None,
            links_minted: 0,
            presses_refused: 0,
            config_digest: r.str("config_digest").map(str::to_owned),
            start: r.time,
            end: until,
        }
    }

    /// What the table and CSV show for the end: the code, or whether the grant is still open.
    pub fn ended_text(&self, now: OffsetDateTime) -> String {
        match (&self.ended_why, self.end) {
            (Some(why), _) => why.clone(),
            (None, Some(end)) if end > now => "(live)".to_owned(),
            (None, _) => "(no end recorded)".to_owned(),
        }
    }

    pub fn member(&self) -> String {
        format!("{} ({})", self.member_name, self.member_id)
    }

    pub fn instance_label(&self) -> String {
        match &self.instance_name {
            Some(n) => format!("{n} ({})", self.instance),
            None => self.instance.clone(),
        }
    }
}

/// Folds the journal's records into one row per grant, in grant order.
#[derive(Default)]
pub struct Projection {
    rows: Vec<GrantRow>,
    by_grant: HashMap<u64, usize>,
    /// A press's `requested` seq → its grant, so its `issued` counts for the grant.
    presses: HashMap<u64, u64>,
    /// A `break_glass` record's seq → the grant it opened (once its `granted` is read).
    glass: HashMap<u64, Option<u64>>,
}

impl Projection {
    fn index(&self, grant: Option<u64>) -> Option<usize> {
        grant.and_then(|g| self.by_grant.get(&g).copied())
    }

    pub fn add(&mut self, r: &Raw) {
        let refers = r.u64("refers_to");
        match r.event.as_str() {
            "break_glass" => {
                self.glass.insert(r.seq, None);
                return;
            }
            "granted" => {
                self.by_grant.insert(r.seq, self.rows.len());
                let mut row = GrantRow::open(r);
                if let Some(used) = refers.and_then(|u| self.glass.get_mut(&u)) {
                    *used = Some(r.seq);
                    row.allowed.break_glass = Some(serde_json::json!({ "use": refers }));
                }
                self.rows.push(row);
                return;
            }
            "requested" => {
                if let Some(g) = refers.filter(|g| self.by_grant.contains_key(g)) {
                    self.presses.insert(r.seq, g);
                }
                return;
            }
            "issued" => {
                let g = refers.and_then(|q| self.presses.get(&q).copied());
                if let Some(i) = self.index(g) {
                    self.rows[i].links_minted += 1;
                }
                return;
            }
            _ => {}
        }
        // What refers to a break-glass use: only its answers count on the grant's row (a
        // refused press on Acknowledge is no press of the grant).
        if let Some(used) = refers.and_then(|u| self.glass.get(&u)) {
            if let Some(i) = self.index(*used) {
                self.answer(i, r);
            }
            return;
        }
        // An outcome of a press refers to the press's `requested`; the rest to the grant.
        let grant = refers.map(|q| self.presses.get(&q).copied().unwrap_or(q));
        let Some(i) = self.index(grant) else {
            return;
        };
        let g = &mut self.rows[i];
        if g.instance_name.is_none() {
            g.instance_name = r.str("instance_name").map(str::to_owned);
        }
        match r.event.as_str() {
            "denied" | "limited" | "invalid" | "failed" => {
                g.presses_refused += r.u64("count").unwrap_or(1).max(1);
            }
            "ended" if g.ended_at.is_none() => {
                g.ended_at = r.time.map(format_time);
                g.ended_why = r.str("code").map(str::to_owned);
                g.ended_by = Some(format!("{} ({})", r.actor_name(), r.actor_id()));
                if r.time.is_some() {
                    g.end = r.time;
                }
            }
            // Extended once (the Extend button): the row shows the new end.
            "extended" => {
                if let Some(until) = r.str("until").and_then(select::parse_time) {
                    g.until = Some(format_time(until));
                    if g.ended_at.is_none() {
                        g.end = Some(until);
                    }
                }
            }
            // An acknowledgement written as its own record, by whoever acknowledged.
            "acknowledged" | "flagged" | "ack_overdue" => self.answer(i, r),
            _ => {}
        }
    }

    /// A break-glass use's answer (or its lack) on its grant's row.
    fn answer(&mut self, i: usize, r: &Raw) {
        let a = &mut self.rows[i].allowed;
        let who = || {
            Some(serde_json::json!({
                "id": r.actor_id(),
                "name": r.actor_name(),
            }))
        };
        match r.event.as_str() {
            "acknowledged" if !a.is_answered() => {
                a.acknowledged_by = who();
            }
            "flagged" if !a.is_answered() => {
                a.flagged_by = who();
            }
            "ack_overdue" => a.ack_overdue = Some(Value::Bool(true)),
            _ => {}
        }
    }

    /// The rows the selection keeps.
    pub fn rows(self, sel: &Selection) -> Vec<GrantRow> {
        self.rows
            .into_iter()
            .filter(|g| {
                sel.member
                    .as_ref()
                    .is_none_or(|m| m.matches(Some(&g.member_id), Some(&g.member_name)))
                    && sel
                        .instance
                        .as_ref()
                        .is_none_or(|p| p.matches(Some(&g.instance), g.instance_name.as_deref()))
                    && sel.overlaps(g.start, g.end)
            })
            .collect()
    }
}

/// The report's totals (the HTML summary, the table's last line).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub grants: usize,
    pub members: usize,
    pub instances: usize,
    pub links_minted: u64,
    pub presses_refused: u64,
    pub break_glass: usize,
    pub break_glass_unacknowledged: usize,
    /// Break-glass uses an approver flagged as not justified.
    pub break_glass_flagged: usize,
}

impl Totals {
    pub fn of(rows: &[GrantRow]) -> Self {
        let members: BTreeSet<_> = rows.iter().map(|g| &g.member_id).collect();
        let instances: BTreeSet<_> = rows.iter().map(|g| &g.instance).collect();
        let glass = rows.iter().filter(|g| g.allowed.is_break_glass());
        Totals {
            grants: rows.len(),
            members: members.len(),
            instances: instances.len(),
            links_minted: rows.iter().map(|g| g.links_minted).sum(),
            presses_refused: rows.iter().map(|g| g.presses_refused).sum(),
            break_glass: glass.clone().count(),
            break_glass_unacknowledged: glass
                .clone()
                .filter(|g| !g.allowed.is_acknowledged() && !g.allowed.is_flagged())
                .count(),
            break_glass_flagged: glass.filter(|g| g.allowed.is_flagged()).count(),
        }
    }
}

/// Everything a format needs.
pub struct Report<'a> {
    pub path: &'a Path,
    pub chain: Chain,
    pub sel: Selection,
    pub rows: Vec<GrantRow>,
    pub totals: Totals,
    pub now: OffsetDateTime,
}

pub fn main(config_path: &Path, opts: Options) -> Exit {
    let now = OffsetDateTime::now_utc();
    let sel = match Selection::new(opts.since, opts.until, opts.member, opts.instance, now) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::BadInput;
        }
    };
    let path = match journal_path(config_path, opts.file, "report") {
        Ok(p) => p,
        Err(code) => return code,
    };
    let read = || -> io::Result<(Chain, Vec<GrantRow>)> {
        let chain = Chain::check(&path)?;
        let mut p = Projection::default();
        // Records appended after the verified head are left for the next report: the header
        // vouches for the rows up to it.
        read_raw(&path, |r| {
            if chain.head_seq.is_none_or(|head| r.seq <= head) {
                p.add(&r)
            }
        })?;
        Ok((chain, p.rows(&sel)))
    };
    let (chain, rows) = match read() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return Exit::Config;
        }
    };
    let report = Report {
        path: &path,
        totals: Totals::of(&rows),
        chain,
        sel,
        rows,
        now,
    };
    let mut out = io::BufWriter::new(io::stdout().lock());
    let written = match opts.format {
        Format::Table => write_table(&report, &mut out),
        Format::Csv => {
            // The chain's verdict goes to stderr: a CSV file holds only its rows.
            eprintln!("{}", visible(&report.chain.line(report.path)));
            write_csv(&report, &mut out)
        }
        Format::Json => write_json(&report, &mut out),
        Format::Html => out.write_all(html::render(&report).as_bytes()),
    }
    .and_then(|()| out.flush());
    if let Err(e) = written {
        eprintln!("error: cannot write the report: {e}");
        return Exit::Temporary;
    }
    // A report over a damaged chain is still written, and the exit code says it is not vouched for.
    if report.chain.verified {
        Exit::Ok
    } else {
        Exit::Refused
    }
}

/// A cell for a terminal: hidden characters made visible, bounded.
fn cell(s: &str, max: usize) -> String {
    let s = visible(s);
    if s.chars().count() <= max {
        return s.into_owned();
    }
    let mut cut: String = s.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

fn write_table(r: &Report, out: &mut impl Write) -> io::Result<()> {
    writeln!(out, "{}", visible(&r.chain.line(r.path)))?;
    let header = [
        "GRANT",
        "MEMBER",
        "INSTANCE",
        "REGION",
        "REASON",
        "ALLOWED BY",
        "GRANTED",
        "UNTIL",
        "ENDED",
        "WHY",
        "LINKS",
        "REFUSED",
        "CONFIG",
    ];
    let short = |t: &Option<String>| {
        t.as_deref()
            .map(|t| t.replace('T', " ").trim_end_matches('Z').to_owned())
            .unwrap_or_else(|| "-".into())
    };
    let rows: Vec<[String; 13]> = r
        .rows
        .iter()
        .map(|g| {
            [
                g.grant.to_string(),
                cell(&g.member(), 40),
                cell(&g.instance_label(), 40),
                cell(g.region.as_deref().unwrap_or("-"), 20),
                cell(g.reason.as_deref().unwrap_or("-"), 40),
                cell(&g.allowed.describe(), 60),
                short(&g.granted_at),
                short(&g.until),
                short(&g.ended_at),
                cell(&g.ended_text(r.now), 24),
                g.links_minted.to_string(),
                g.presses_refused.to_string(),
                // The digest's first 12 digits tell configs apart; CSV and JSON carry it whole.
                g.config_digest
                    .as_deref()
                    .map_or("-".into(), |d| visible(d).chars().take(12).collect()),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    writeln!(out, "{}", line(&header.map(String::from)))?;
    for row in &rows {
        writeln!(out, "{}", line(row))?;
    }
    let t = &r.totals;
    writeln!(
        out,
        "{} grant(s), {} member(s), {} instance(s), {} link(s) minted, {} press(es) refused, {} break-glass use(s) ({} not acknowledged, {} flagged)",
        t.grants, t.members, t.instances, t.links_minted, t.presses_refused, t.break_glass, t.break_glass_unacknowledged, t.break_glass_flagged
    )
}

/// A cell for a spreadsheet: hidden characters made visible, and no leading `=`, `+`, `-` or `@`
/// that would make the cell a formula (OWASP's CSV injection advice: prefix a quote).
pub fn csv_cell(s: &str) -> String {
    let s = visible(s);
    if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.into_owned()
    }
}

fn write_csv(r: &Report, out: &mut impl Write) -> io::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record([
        "grant",
        "member_id",
        "member_name",
        "instance",
        "instance_name",
        "region",
        "reason",
        "rule",
        "rule_roles",
        "approvers",
        "break_glass",
        "acknowledged_by",
        "on_call",
        "granted_at",
        "until",
        "ended_at",
        "ended_why",
        "ended_by",
        "links_minted",
        "presses_refused",
        "flagged_by",
        "ack_overdue",
        "config_digest",
    ])?;
    let text = |v: &Option<Value>| v.as_ref().map(text_of).unwrap_or_default();
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    for g in &r.rows {
        let a = &g.allowed;
        let cells = [
            g.grant.to_string(),
            g.member_id.clone(),
            g.member_name.clone(),
            g.instance.clone(),
            opt(&g.instance_name),
            opt(&g.region),
            opt(&g.reason),
            a.rule.map(|r| r.to_string()).unwrap_or_default(),
            text(&a.rule_roles),
            text(&a.approvers),
            text(&a.break_glass),
            text(&a.acknowledged_by),
            text(&a.on_call),
            opt(&g.granted_at),
            opt(&g.until),
            opt(&g.ended_at),
            g.ended_text(r.now),
            opt(&g.ended_by),
            g.links_minted.to_string(),
            g.presses_refused.to_string(),
            text(&a.flagged_by),
            text(&a.ack_overdue),
            opt(&g.config_digest),
        ];
        w.write_record(cells.iter().map(|c| csv_cell(c)))?;
    }
    w.flush()
}

fn write_json(r: &Report, out: &mut impl Write) -> io::Result<()> {
    #[derive(Serialize)]
    struct Doc<'a> {
        journal: String,
        chain: &'a Chain,
        since: Option<String>,
        until: Option<String>,
        totals: &'a Totals,
        grants: &'a [GrantRow],
    }
    let doc = Doc {
        journal: r.path.display().to_string(),
        chain: &r.chain,
        since: r.sel.since.map(format_time),
        until: r.sel.until.map(format_time),
        totals: &r.totals,
        grants: &r.rows,
    };
    let text = serde_json::to_string_pretty(&doc).map_err(io::Error::other)?;
    writeln!(out, "{}", json_escape_hidden(&text))
}

#[cfg(test)]
mod tests;
