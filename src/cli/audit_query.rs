//! `vncbot audit query`: the journal's records as written, filtered by time, member, instance,
//! event and grant, as JSON lines or CSV: the event history an auditor exports, without `jq`.
//!
//! Text from members and from Tencent reaches a terminal or a spreadsheet here, so it is escaped:
//! JSON lines keep every value exactly (hidden characters as `\uXXXX` escapes a JSON reader
//! decodes), CSV cells show hidden characters as visible escapes and never start a formula.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;
use time::OffsetDateTime;
use vncbot::text::{json_escape_hidden, visible};

use super::audit_report::csv_cell;
use super::audit_report::select::{journal_path, read_raw, Chain, Raw, Selection, When};
use super::Exit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

enum Sink<W: Write> {
    Json(W),
    Csv(Box<csv::Writer<W>>),
}

pub struct Options {
    pub since: Option<When>,
    pub until: Option<When>,
    pub member: Option<String>,
    pub instance: Option<String>,
    pub events: Vec<String>,
    pub grant: Option<u64>,
    pub format: Format,
    pub file: Option<PathBuf>,
}

/// The CSV's columns: the fields every record may carry, then whatever else it holds as JSON.
const COLUMNS: [&str; 17] = [
    "seq",
    "time",
    "event",
    "actor_id",
    "actor_name",
    "instance",
    "instance_name",
    "region",
    "reason",
    "rule",
    "code",
    "request_id",
    "refers_to",
    "until",
    "count",
    "prev",
    "hash",
];

/// Parses an `--event` value: a journal event name (`granted`, `ended`, …).
pub fn parse_event(value: &str) -> Result<String, String> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        Ok(v.to_owned())
    } else {
        Err("expected an event name as the journal writes it: granted, requested, issued, ended, denied, …".into())
    }
}

/// Which records a query keeps.
struct Filter {
    sel: Selection,
    events: HashSet<String>,
    grant: Option<u64>,
    /// The grant's record and every record that refers to one of these, transitively (a press's
    /// `issued` refers to its `requested`, which refers to the grant).
    family: HashSet<u64>,
}

impl Filter {
    fn keeps(&mut self, r: &Raw) -> bool {
        if let Some(g) = self.grant {
            let refers = r.u64("refers_to");
            if r.seq == g || refers.is_some_and(|q| self.family.contains(&q)) {
                self.family.insert(r.seq);
            } else {
                return false;
            }
        }
        (self.events.is_empty() || self.events.contains(&r.event))
            && self
                .sel
                .member
                .as_ref()
                .is_none_or(|m| m.matches(Some(r.actor_id()), Some(r.actor_name())))
            && self
                .sel
                .instance
                .as_ref()
                .is_none_or(|i| i.matches(r.str("instance"), r.str("instance_name")))
            && self.sel.overlaps(r.time, r.time)
    }
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
    let path = match journal_path(config_path, opts.file, "query") {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut filter = Filter {
        sel,
        events: opts.events.iter().cloned().collect(),
        grant: opts.grant,
        family: HashSet::new(),
    };
    let chain = match Chain::check(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return Exit::Config;
        }
    };
    let mut seen_events = BTreeSet::new();
    let stdout = io::BufWriter::new(io::stdout().lock());
    let mut sink = match opts.format {
        Format::Jsonl => Sink::Json(stdout),
        Format::Csv => Sink::Csv(Box::new(csv::Writer::from_writer(stdout))),
    };
    let mut written = match &mut sink {
        Sink::Csv(w) => w
            .write_record(COLUMNS.iter().chain(&["other"]))
            .map_err(io::Error::from),
        Sink::Json(_) => Ok(()),
    };
    let read = read_raw(&path, |r| {
        seen_events.insert(r.event.clone());
        // Records appended after the verified head are not vouched for by this run's verdict.
        let unverified = chain.head_seq.is_some_and(|head| r.seq > head);
        if written.is_err() || unverified || !filter.keeps(&r) {
            return;
        }
        written = match &mut sink {
            Sink::Csv(w) => write_csv_row(w, &r),
            Sink::Json(out) => write_json_line(&r, out),
        };
    });
    if let Err(e) = read {
        eprintln!("error: cannot read {}: {e}", path.display());
        return Exit::Config;
    }
    let flushed = match &mut sink {
        Sink::Csv(w) => w.flush(),
        Sink::Json(out) => out.flush(),
    };
    if let Err(e) = written.and(flushed) {
        eprintln!("error: cannot write the records: {e}");
        return Exit::Temporary;
    }
    // A mistyped event name would otherwise look like a quiet journal.
    for e in opts.events.iter().filter(|e| !seen_events.contains(*e)) {
        let known: Vec<&str> = seen_events.iter().map(String::as_str).collect();
        eprintln!(
            "note: no record in this journal has event {e:?} (it has: {})",
            known.join(", ")
        );
    }
    // The records are printed either way; stderr and the exit code say whether the chain vouches
    // for them.
    if chain.verified {
        Exit::Ok
    } else {
        eprintln!("{}", visible(&chain.line(&path)));
        Exit::Refused
    }
}

fn write_json_line(r: &Raw, out: &mut impl Write) -> io::Result<()> {
    // The line as the journal holds it (its fields in their order, its hash checkable).
    writeln!(out, "{}", json_escape_hidden(&r.line))
}

/// One record as a CSV row.
fn write_csv_row(w: &mut csv::Writer<impl Write>, r: &Raw) -> io::Result<()> {
    let mut other = r.fields.clone();
    let mut cells: Vec<String> = COLUMNS
        .iter()
        .map(|c| match other.remove(*c) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s,
            Some(v) => v.to_string(),
        })
        .collect();
    cells.push(if other.is_empty() {
        String::new()
    } else {
        Value::Object(other).to_string()
    });
    Ok(w.write_record(cells.iter().map(|c| csv_cell(c)))?)
}
