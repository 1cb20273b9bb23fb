//! `audit report --format html`: one self-contained page an auditor can keep or mail. No script,
//! font, image or stylesheet is fetched (a Content-Security-Policy of `default-src 'none'` says so
//! to the browser too); the timeline is inline SVG. Every text that came from a member or from
//! Tencent is HTML-escaped, with hidden characters shown as escapes.

use std::collections::BTreeMap;
use std::fmt::Write;

use time::{Duration, OffsetDateTime};
use vncbot::text::visible;

use super::select::{self, format_time};
use super::{GrantRow, Report};

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1b1b1b;background:#fff}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.15em;margin:1.4em 0 .4em}h3{font-size:1em;margin:.8em 0 .3em}
.chain{padding:.5em .8em;border-radius:4px;font-weight:600;overflow-wrap:anywhere}
.chain.ok{background:#e3f4e6;border:1px solid #2e7d32}.chain.bad{background:#fde2e1;border:2px solid #b00020;color:#7a0014}
.meta{color:#555}
dl.summary{display:grid;grid-template-columns:repeat(auto-fill,minmax(10em,1fr));gap:.5em;margin:0}
dl.summary div{border:1px solid #ccc;border-radius:4px;padding:.4em .6em}
dl.summary dt{color:#555;font-size:.85em}dl.summary dd{margin:0;font-size:1.5em;font-weight:600}dl.summary small{display:block;font-size:.6em}
dl.summary div.alert{border:2px solid #b00020;background:#fde2e1}
table{border-collapse:collapse;width:100%}
table.grants th,table.grants td{border-bottom:1px solid #ddd;padding:.3em .4em;text-align:left;vertical-align:top;overflow-wrap:break-word}
table.grants th{background:#f3f3f3;position:sticky;top:0;white-space:nowrap}
table.grants td.t{white-space:nowrap}
tr.bg td:first-child{border-left:4px solid #e08a00}
tr.unack{background:#fde2e1}tr.unack td:first-child{border-left:4px solid #b00020}
.badge{display:inline-block;padding:0 .35em;border-radius:3px;font-size:.8em;font-weight:700;color:#fff;background:#e08a00}
.badge.unack{background:#b00020}
table.timeline th{width:16em;text-align:right;padding-right:.6em;font-weight:normal;overflow-wrap:anywhere}
table.timeline td{border-left:1px solid #999;border-right:1px solid #999}
table.timeline svg{display:block;width:100%;height:18px;background:#fafafa}
rect.bar{fill:#3b6ea5}rect.bar.bg{fill:#e08a00}rect.bar.unack{fill:#b00020;stroke:#000;stroke-width:1}
.axis{display:flex;justify-content:space-between;color:#555;font-size:.85em}
.legend span{margin-right:1em}.swatch{display:inline-block;width:1em;height:.8em;vertical-align:middle;margin-right:.3em}
";

/// Text made safe between tags and inside quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in visible(s).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn render(r: &Report) -> String {
    let mut h = String::with_capacity(16 * 1024 + r.rows.len() * 1024);
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    // Belt and braces: the page references nothing outside itself, and the browser is told to
    // fetch nothing even if a bug let a reference through.
    h.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n");
    h.push_str("<meta name=\"referrer\" content=\"no-referrer\">\n");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n");
    h.push_str("<title>vncbot audit report</title>\n<style>");
    h.push_str(STYLE);
    h.push_str("</style></head><body>\n<h1>vncbot audit report</h1>\n");
    let ok = if r.chain.verified { "ok" } else { "bad" };
    let _ = writeln!(
        h,
        "<p id=\"chain\" class=\"chain {ok}\">{}</p>",
        esc(&r.chain.line(r.path))
    );
    let _ = writeln!(h, "<p class=\"meta\">{}</p>", esc(&selection_line(r)));
    summary(&mut h, r);
    timeline(&mut h, r);
    grants(&mut h, r);
    h.push_str("</body></html>\n");
    h
}

fn selection_line(r: &Report) -> String {
    let mut s = match (r.sel.since, r.sel.until) {
        (None, None) => "Every grant in the journal".to_owned(),
        (since, until) => format!(
            "Grants open at any time from {} to {}",
            since.map(short_time).unwrap_or("the first record".into()),
            until.map(short_time).unwrap_or("the last record".into())
        ),
    };
    if let Some(m) = &r.sel.member {
        let _ = write!(s, ", member {}", m.as_str());
    }
    if let Some(i) = &r.sel.instance {
        let _ = write!(s, ", instance {}", i.as_str());
    }
    let _ = write!(s, ". Made {}.", short_time(r.now));
    s
}

/// Times in the page are to the second (the JSON and CSV keep milliseconds).
fn short_time(t: OffsetDateTime) -> String {
    let full = format_time(t);
    format!("{} {}Z", &full[..10], &full[11..19])
}

fn short(t: Option<&str>) -> String {
    match t.and_then(select::parse_time) {
        Some(t) => short_time(t),
        None => "-".to_owned(),
    }
}

fn summary(h: &mut String, r: &Report) {
    let t = &r.totals;
    h.push_str("<h2>Summary</h2>\n<dl class=\"summary\" id=\"summary\">\n");
    let item = |h: &mut String, id: &str, label: &str, n: String, alert: bool| {
        let class = if alert { " class=\"alert\"" } else { "" };
        let _ = writeln!(
            h,
            "<div id=\"total-{id}\"{class}><dt>{label}</dt><dd>{n}</dd></div>"
        );
    };
    item(h, "grants", "Grants", t.grants.to_string(), false);
    item(h, "members", "Members", t.members.to_string(), false);
    item(h, "instances", "Instances", t.instances.to_string(), false);
    item(
        h,
        "links",
        "Links minted",
        t.links_minted.to_string(),
        false,
    );
    item(
        h,
        "refused",
        "Presses refused",
        t.presses_refused.to_string(),
        false,
    );
    let mut notes = Vec::new();
    if t.break_glass_unacknowledged > 0 {
        notes.push(format!("{} not acknowledged", t.break_glass_unacknowledged));
    }
    if t.break_glass_flagged > 0 {
        notes.push(format!("{} flagged", t.break_glass_flagged));
    }
    let glass = if notes.is_empty() {
        t.break_glass.to_string()
    } else {
        format!("{} <small>({})</small>", t.break_glass, notes.join(", "))
    };
    item(
        h,
        "break-glass",
        "Break-glass uses",
        glass,
        !notes.is_empty(),
    );
    h.push_str("</dl>\n");
}

fn classes(g: &GrantRow) -> &'static str {
    match (
        g.allowed.is_break_glass(),
        g.allowed.is_acknowledged(),
        g.allowed.is_flagged(),
    ) {
        (true, false, true) => "bg unack flagged",
        (true, false, false) => "bg unack",
        (true, true, _) => "bg",
        _ => "",
    }
}

/// The span the timeline draws: the period asked for, else the grants' own.
fn span(r: &Report) -> (OffsetDateTime, OffsetDateTime) {
    let lo = r
        .sel
        .since
        .or_else(|| r.rows.iter().filter_map(|g| g.start).min())
        .unwrap_or(r.now);
    let hi = r
        .sel
        .until
        .or_else(|| r.rows.iter().filter_map(|g| g.end.or(g.start)).max())
        .unwrap_or(r.now);
    (lo, hi.max(lo + Duration::MINUTE))
}

fn timeline(h: &mut String, r: &Report) {
    h.push_str("<h2>Timeline</h2>\n");
    if r.rows.is_empty() {
        h.push_str("<p>No grant in this selection.</p>\n");
        return;
    }
    let (lo, hi) = span(r);
    h.push_str("<p class=\"legend\"><span><i class=\"swatch\" style=\"background:#3b6ea5\"></i>grant</span><span><i class=\"swatch\" style=\"background:#e08a00\"></i>break-glass, acknowledged</span><span><i class=\"swatch\" style=\"background:#b00020\"></i>break-glass, NOT acknowledged or flagged</span></p>\n");
    let by_member = group(&r.rows, |g| (g.member_id.clone(), g.member()));
    let by_instance = group(&r.rows, |g| (g.instance.clone(), g.instance_label()));
    for (id, title, groups) in [
        ("by-member", "By member", by_member),
        ("by-instance", "By instance", by_instance),
    ] {
        let _ = writeln!(
            h,
            "<h3>{title}</h3>\n<table class=\"timeline\" id=\"{id}\">"
        );
        for (label, rows) in groups.values() {
            let _ = write!(
                h,
                "<tr><th>{}</th><td><svg viewBox=\"0 0 1000 18\" preserveAspectRatio=\"none\" role=\"img\">",
                esc(label)
            );
            for g in rows {
                bar(h, g, lo, hi);
            }
            h.push_str("</svg></td></tr>\n");
        }
        let _ = writeln!(
            h,
            "<tr><th></th><td class=\"axis\"><span>{}</span><span>{}</span></td></tr></table>",
            short_time(lo),
            short_time(hi)
        );
    }
}

/// Rows grouped under a key, each group with its label, in key order.
fn group(
    rows: &[GrantRow],
    key: impl Fn(&GrantRow) -> (String, String),
) -> BTreeMap<String, (String, Vec<&GrantRow>)> {
    let mut groups: BTreeMap<String, (String, Vec<&GrantRow>)> = BTreeMap::new();
    for g in rows {
        let (k, label) = key(g);
        groups
            .entry(k)
            .or_insert_with(|| (label, Vec::new()))
            .1
            .push(g);
    }
    groups
}

fn bar(h: &mut String, g: &GrantRow, lo: OffsetDateTime, hi: OffsetDateTime) {
    let Some(start) = g.start else { return };
    let end = g.end.unwrap_or(start).max(start);
    let whole = (hi - lo).as_seconds_f64();
    let at = |t: OffsetDateTime| ((t - lo).as_seconds_f64() / whole * 1000.0).clamp(0.0, 1000.0);
    let (x0, x1) = (at(start), at(end));
    // A ten-minute grant in a month is a sliver: never thinner than can be seen.
    let width = (x1 - x0).max(3.0);
    let x = x0.min(1000.0 - width);
    let mut tip = format!(
        "grant {}: {} on {}, {} to {}",
        g.grant,
        g.member(),
        g.instance_label(),
        g.granted_at.as_deref().unwrap_or("?"),
        g.ended_at.as_deref().or(g.until.as_deref()).unwrap_or("?"),
    );
    if g.allowed.is_break_glass() {
        tip.push_str(if g.allowed.is_acknowledged() {
            " (break-glass, acknowledged)"
        } else if g.allowed.is_flagged() {
            " (break-glass, FLAGGED)"
        } else {
            " (break-glass, NOT acknowledged)"
        });
    }
    let _ = write!(
        h,
        "<a href=\"#grant-{id}\"><rect class=\"bar {class}\" data-grant=\"{id}\" x=\"{x:.1}\" y=\"2\" width=\"{width:.1}\" height=\"14\"><title>{tip}</title></rect></a>",
        id = g.grant,
        class = classes(g),
        tip = esc(&tip),
    );
}

/// The end's code, and who ended it when someone other than the holder did.
fn why(g: &GrantRow, now: OffsetDateTime) -> String {
    let mut why = esc(&g.ended_text(now));
    let holder = format!("{} ({})", g.member_name, g.member_id);
    if let Some(by) = g.ended_by.as_deref().filter(|by| *by != holder) {
        let _ = write!(why, "<br><small>by {}</small>", esc(by));
    }
    why
}

fn grants(h: &mut String, r: &Report) {
    h.push_str("<h2>Grants</h2>\n<table class=\"grants\" id=\"grants\"><thead><tr>");
    for col in [
        "Grant",
        "Member",
        "Instance",
        "Region",
        "Reason",
        "Allowed by",
        "Granted",
        "Until",
        "Ended",
        "Why",
        "Links",
        "Refused",
    ] {
        let _ = write!(h, "<th>{col}</th>");
    }
    h.push_str("</tr></thead><tbody>\n");
    let dash = |s: Option<&str>| esc(s.unwrap_or("-"));
    for g in &r.rows {
        let mut allowed = esc(&g.allowed.describe());
        if g.allowed.is_break_glass() {
            allowed.push_str(if g.allowed.is_acknowledged() {
                " <span class=\"badge\">break-glass</span>"
            } else if g.allowed.is_flagged() {
                " <span class=\"badge unack\">break-glass: FLAGGED</span>"
            } else {
                " <span class=\"badge unack\">break-glass: NOT acknowledged</span>"
            });
        }
        let _ = writeln!(
            h,
            "<tr id=\"grant-{id}\" class=\"{class}\"><td>{id}</td><td>{member}</td><td>{instance}</td><td>{region}</td><td class=\"reason\">{reason}</td><td>{allowed}</td><td class=\"t\">{granted}</td><td class=\"t\">{until}</td><td class=\"t\">{ended}</td><td>{why}</td><td>{links}</td><td>{refused}</td></tr>",
            id = g.grant,
            class = classes(g),
            member = esc(&g.member()),
            instance = esc(&g.instance_label()),
            region = dash(g.region.as_deref()),
            reason = dash(g.reason.as_deref()),
            granted = short(g.granted_at.as_deref()),
            until = short(g.until.as_deref()),
            ended = short(g.ended_at.as_deref()),
            why = why(g, r.now),
            links = g.links_minted,
            refused = g.presses_refused,
        );
    }
    h.push_str("</tbody></table>\n");
}
