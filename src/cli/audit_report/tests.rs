//! The projection from records to rows, on records as newer bots will write them (the chain is
//! not the point here: `tests/audit_report.rs` runs the binary over journals the writer made).

use serde_json::json;
use time::macros::datetime;

use super::select::{Raw, Selection};
use super::*;

fn raw(v: Value) -> Raw {
    let fields = v.as_object().unwrap().clone();
    Raw {
        line: v.to_string(),
        seq: fields["seq"].as_u64().unwrap(),
        time: fields
            .get("time")
            .and_then(Value::as_str)
            .and_then(select::parse_time),
        event: fields["event"].as_str().unwrap().to_owned(),
        fields,
    }
}

fn project(records: Vec<Value>) -> Vec<GrantRow> {
    let mut p = Projection::default();
    for r in records {
        p.add(&raw(r));
    }
    p.rows(&Selection::default())
}

fn granted(seq: u64, extra: Value) -> Value {
    let mut r = json!({
        "seq": seq, "time": "2026-12-01T10:00:00.12Z", "event": "granted",
        "actor_id": "42", "actor_name": "alice", "instance": "ins-a1b2c3d4",
        "region": "ap-guangzhou", "reason": "incident", "rule": 1,
        "until": "2026-12-01T10:10:00Z",
    });
    r.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    r
}

#[test]
fn todays_records_make_a_row_with_the_rule_links_refusals_and_end() {
    let rows = project(vec![
        granted(1, json!({})),
        json!({"seq": 2, "event": "requested", "refers_to": 1, "actor_id": "42", "actor_name": "alice"}),
        json!({"seq": 3, "event": "issued", "refers_to": 2}),
        json!({"seq": 4, "event": "requested", "refers_to": 1}),
        // A press refused on the instance's state refers to its `requested`.
        json!({"seq": 5, "event": "invalid", "refers_to": 4, "code": "instance_not_ready"}),
        json!({"seq": 6, "event": "denied", "refers_to": 1, "code": "not_holder"}),
        // Another grant's records do not count here.
        json!({"seq": 7, "event": "issued", "refers_to": 99}),
        json!({"seq": 8, "time": "2026-12-01T10:05:00Z", "event": "ended", "refers_to": 1,
               "code": "done", "actor_id": "42", "actor_name": "alice"}),
        json!({"seq": 9, "event": "ended", "refers_to": 1, "code": "expired"}),
    ]);
    assert_eq!(rows.len(), 1);
    let g = &rows[0];
    assert_eq!((g.grant, g.links_minted, g.presses_refused), (1, 1, 2));
    assert_eq!(g.granted_at.as_deref(), Some("2026-12-01T10:00:00.120Z"));
    assert_eq!(g.until.as_deref(), Some("2026-12-01T10:10:00.000Z"));
    assert_eq!(g.ended_at.as_deref(), Some("2026-12-01T10:05:00.000Z"));
    assert_eq!(g.ended_why.as_deref(), Some("done"), "the first end counts");
    assert_eq!(g.ended_by.as_deref(), Some("alice (42)"));
    assert_eq!(g.end, Some(datetime!(2026-12-01 10:05 UTC)));
    assert_eq!(g.allowed.describe(), "rule 1");
    assert!(!g.allowed.is_break_glass());
    let json = serde_json::to_value(&g.allowed).unwrap();
    assert_eq!(json, json!({"rule": 1}), "absent fields stay absent");
}

#[test]
fn newer_fields_show_when_present() {
    let rows = project(vec![
        granted(
            1,
            json!({
                "instance_name": "web-01",
                "rule_roles": ["555000000000000001", "555000000000000002"],
                "approvers": [{"id": "43", "name": "bob"}, {"id": "44", "name": "carol"}],
                "on_call": {"provider": "pagerduty", "user": "PUSER01"},
            }),
        ),
        granted(2, json!({"break_glass": true})),
        granted(
            3,
            json!({"break_glass": true, "acknowledged_by": {"id": "45", "name": "dave"}}),
        ),
        granted(4, json!({"break_glass": true})),
        json!({"seq": 5, "event": "acknowledged", "refers_to": 4, "actor_id": "46", "actor_name": "erin"}),
        granted(6, json!({"break_glass": false, "on_call": false})),
    ]);
    let d: Vec<String> = rows.iter().map(|g| g.allowed.describe()).collect();
    assert_eq!(
        d[0],
        "rule 1; roles 555000000000000001, 555000000000000002; approved by bob (43), carol (44); on call: provider: pagerduty, user: PUSER01"
    );
    assert_eq!(rows[0].instance_label(), "web-01 (ins-a1b2c3d4)");
    assert_eq!(d[1], "rule 1; BREAK-GLASS, NOT acknowledged");
    assert_eq!(d[2], "rule 1; BREAK-GLASS, acknowledged by dave (45)");
    assert_eq!(d[3], "rule 1; BREAK-GLASS, acknowledged by erin (46)");
    assert_eq!(d[4], "rule 1");
    let t = Totals::of(&rows);
    assert_eq!((t.break_glass, t.break_glass_unacknowledged), (3, 1));
    let json = serde_json::to_value(&rows[0]).unwrap();
    assert_eq!(json["instance_name"], "web-01");
    assert_eq!(json["allowed"]["approvers"][1]["name"], "carol");
}

#[test]
fn csv_cells_never_start_a_formula_and_show_hidden_characters() {
    assert_eq!(csv_cell("=1+1"), "'=1+1");
    assert_eq!(csv_cell("+1"), "'+1");
    assert_eq!(csv_cell("-1"), "'-1");
    assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
    assert_eq!(csv_cell("\tx"), "\\tx");
    assert_eq!(csv_cell("a\u{202E}b"), "a\\u{202e}b");
    assert_eq!(csv_cell("plain = text"), "plain = text");
}

#[test]
fn the_html_marks_break_glass_and_escapes_everything() {
    let rows = project(vec![
        granted(
            1,
            json!({"reason": "<img src=x onerror=alert(1)>", "actor_name": "\"eve'\u{202E}"}),
        ),
        granted(2, json!({"break_glass": true})),
        granted(3, json!({"break_glass": true, "acknowledged_by": "dave"})),
    ]);
    let report = Report {
        path: Path::new("/j/audit.jsonl"),
        chain: Chain {
            verified: true,
            records: 3,
            head_seq: Some(3),
            head_hash: Some("ab".repeat(32)),
            problem: None,
        },
        sel: Selection::default(),
        totals: Totals::of(&rows),
        rows,
        now: datetime!(2026-12-01 12:00 UTC),
    };
    let h = html::render(&report);
    assert!(!h.contains("<img") && !h.contains('\u{202E}'), "{h}");
    assert!(h.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(h.contains("&quot;eve&#39;\\u{202e} (42)"));
    assert!(h.contains("<tr id=\"grant-2\" class=\"bg unack\">"));
    assert!(h.contains("<tr id=\"grant-3\" class=\"bg\">"));
    assert!(h.contains("break-glass: NOT acknowledged"));
    assert!(h.contains("<div id=\"total-break-glass\" class=\"alert\"><dt>Break-glass uses</dt><dd>2 <small>(1 not acknowledged)</small></dd>"));
    assert!(h.contains("class=\"bar bg unack\" data-grant=\"2\""));
    for external in [
        "http:", "https:", "src=\"", "url(", "@import", "<link", "<script",
    ] {
        assert!(!h.contains(external), "{external} in the page");
    }
}

/// Break-glass as the bot writes it: `break_glass`, then `granted` referring to it, then the
/// use's answers referring to the use. Refused presses on Acknowledge are no presses of the
/// grant.
#[test]
fn break_glass_records_land_on_the_grants_row_with_their_answer() {
    let used = |seq: u64| {
        json!({"seq": seq, "event": "break_glass", "actor_id": "42", "actor_name": "alice",
               "instance": "ins-a1b2c3d4", "reason": "INC-9 the primary is down"})
    };
    let about = |seq: u64, event: &str, to: u64, who: (&str, &str)| json!({"seq": seq, "event": event, "refers_to": to, "actor_id": who.0, "actor_name": who.1});
    let erin = ("46", "erin");
    let rows = project(vec![
        used(1),
        granted(2, json!({"refers_to": 1})),
        json!({"seq": 3, "event": "denied", "refers_to": 1, "code": "not_approver", "actor_id": "47"}),
        json!({"seq": 4, "event": "delivered", "refers_to": 1, "channel": "9", "message": "8"}),
        about(5, "acknowledged", 1, erin),
        about(6, "flagged", 1, ("48", "frank")),
        used(10),
        granted(11, json!({"refers_to": 10})),
        about(12, "ack_overdue", 10, ("local", "vncbot")),
        about(13, "flagged", 10, erin),
        about(14, "acknowledged", 10, ("48", "frank")),
        used(20),
        granted(21, json!({"refers_to": 20})),
        about(22, "ack_overdue", 20, ("local", "vncbot")),
        // A grant that refers to something that is no break-glass use is no break-glass.
        granted(30, json!({"refers_to": 29})),
    ]);
    let d: Vec<String> = rows.iter().map(|g| g.allowed.describe()).collect();
    assert_eq!(
        d,
        [
            "rule 1; BREAK-GLASS, acknowledged by erin (46)",
            "rule 1; BREAK-GLASS, FLAGGED by erin (46)",
            "rule 1; BREAK-GLASS, NOT acknowledged (overdue)",
            "rule 1",
        ]
    );
    assert_eq!(rows[0].presses_refused, 0);
    let t = Totals::of(&rows);
    assert_eq!(
        (
            t.break_glass,
            t.break_glass_unacknowledged,
            t.break_glass_flagged
        ),
        (3, 1, 1)
    );
    let report = Report {
        path: Path::new("/j/audit.jsonl"),
        chain: Chain {
            verified: true,
            records: 30,
            head_seq: Some(30),
            head_hash: Some("ab".repeat(32)),
            problem: None,
        },
        sel: Selection::default(),
        totals: t,
        rows,
        now: datetime!(2026-12-01 12:00 UTC),
    };
    let h = html::render(&report);
    assert!(h.contains("<tr id=\"grant-2\" class=\"bg\">"), "{h}");
    assert!(h.contains("<tr id=\"grant-11\" class=\"bg unack flagged\">"));
    assert!(h.contains("break-glass: FLAGGED"));
    assert!(h.contains("<tr id=\"grant-21\" class=\"bg unack\">"));
    assert!(h.contains("<dd>3 <small>(1 not acknowledged, 1 flagged)</small></dd>"));
}

#[test]
fn each_row_names_the_config_its_grant_was_recorded_under() {
    let digest = "0123456789abcdef".repeat(4);
    let rows = project(vec![
        // A journal from before digests were recorded: no config named.
        granted(1, json!({})),
        granted(2, json!({"config_digest": digest})),
    ]);
    assert_eq!(rows[0].config_digest, None);
    assert_eq!(rows[1].config_digest.as_deref(), Some(digest.as_str()));
    let report = Report {
        path: Path::new("/j/audit.jsonl"),
        chain: Chain {
            verified: true,
            records: 2,
            head_seq: Some(2),
            head_hash: Some("ab".repeat(32)),
            problem: None,
        },
        sel: Selection::default(),
        totals: Totals::of(&rows),
        rows,
        now: datetime!(2026-12-01 12:00 UTC),
    };
    let mut table = Vec::new();
    write_table(&report, &mut table).unwrap();
    let table = String::from_utf8(table).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[1].ends_with("CONFIG"), "{table}");
    assert!(lines[2].ends_with(" -"), "{table}");
    assert!(lines[3].ends_with(" 0123456789ab"), "{table}");
    let mut csv = Vec::new();
    write_csv(&report, &mut csv).unwrap();
    let csv = String::from_utf8(csv).unwrap();
    assert!(csv.lines().next().unwrap().ends_with(",config_digest"));
    assert!(csv.lines().nth(2).unwrap().ends_with(&format!(",{digest}")));
    let json = serde_json::to_value(&report.rows[1]).unwrap();
    assert_eq!(json["config_digest"], digest.as_str());
}

#[test]
fn an_extension_moves_the_rows_end_and_a_revoke_names_the_admin() {
    let rows = project(vec![
        granted(1, json!({})),
        json!({"seq": 2, "event": "extended", "refers_to": 1, "actor_id": "42", "actor_name": "alice",
               "until": "2026-12-01T10:20:00Z", "previous_until": "2026-12-01T10:10:00Z"}),
        json!({"seq": 3, "time": "2026-12-01T10:15:00Z", "event": "ended", "refers_to": 1,
               "code": "revoked", "actor_id": "7100", "actor_name": "root-admin"}),
    ]);
    let g = &rows[0];
    assert_eq!(g.until.as_deref(), Some("2026-12-01T10:20:00.000Z"));
    assert_eq!(g.ended_why.as_deref(), Some("revoked"));
    assert_eq!(g.ended_by.as_deref(), Some("root-admin (7100)"));
}
