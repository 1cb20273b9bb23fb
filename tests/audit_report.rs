//! `vncbot audit report` and `vncbot audit query`, run as an auditor would, over journals written
//! through the library's own `Journal` (the same writer the bot uses); and the HTML report
//! rendered in a real headless Chromium.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use support::TempDir;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use vncbot::audit::{Actor, Appended, Entry, Event, Journal};

const ALICE: u64 = 700000000000000001;
const BOB: u64 = 700000000000000002;
const MALLORY: u64 = 700000000000000003;

/// What a member typed, at its most hostile: a spreadsheet formula, a direction override, ANSI
/// colour and a script tag.
const HOSTILE: &str =
    "=cmd|' /C calc'!A0 \u{202E}gpj.exe \u{1b}[31mred\u{1b}[0m <script>alert(1)</script>";

fn vncbot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vncbot"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("USER", "tester");
    c
}

fn run(args: &[&str], journal: &Path) -> Output {
    vncbot().args(args).arg(journal).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn discord(id: u64, name: &str) -> Actor {
    Actor::Discord {
        id,
        name: name.into(),
    }
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap()
}

/// A journal of three grants, written by the bot's own writer:
/// 1. alice on ins-web00001: two links, one press by bob refused, ended `done`;
/// 2. mallory on ins-db000001 with a hostile reason, ended `role_removed` by the bot;
/// 3. bob on ins-web00001, still live for two hours.
struct Fixture {
    _dir: TempDir,
    path: PathBuf,
    head: Appended,
}

fn fixture(tag: &str) -> Fixture {
    let dir = TempDir::new(tag);
    let path = dir.join("audit.jsonl");
    let (j, _) = Journal::open(&path).unwrap();
    let alice = discord(ALICE, "alice");
    let bob = discord(BOB, "bob");
    let mallory = discord(MALLORY, "mal\u{202E}lory");
    let bot = Actor::Local {
        user: "vncbot".into(),
    };
    let on = |instance: &str| Entry {
        guild: Some(800000000000000001),
        instance: Some(instance.into()),
        region: Some("ap-guangzhou".into()),
        ..Entry::default()
    };
    let grant = |actor: &Actor, instance: &str, reason: &str, for_secs: u64| {
        j.append_blocking(
            Event::Granted,
            actor,
            Entry {
                reason: Some(reason.into()),
                rule: Some(0),
                until: Some(rfc3339(SystemTime::now() + Duration::from_secs(for_secs))),
                ..on(instance)
            },
        )
        .unwrap()
        .seq
    };
    let refers = |instance: &str, to: u64| Entry {
        refers_to: Some(to),
        ..on(instance)
    };
    let append = |event, actor: &Actor, entry| j.append_blocking(event, actor, entry).unwrap();

    let g1 = grant(&alice, "ins-web00001", "incident 42", 600);
    for _ in 0..2 {
        let press = append(Event::Requested, &alice, refers("ins-web00001", g1)).seq;
        append(Event::Issued, &alice, refers("ins-web00001", press));
    }
    append(
        Event::Denied,
        &bob,
        Entry {
            code: Some("not_holder".into()),
            ..refers("ins-web00001", g1)
        },
    );
    append(
        Event::Ended,
        &alice,
        Entry {
            code: Some("done".into()),
            ..refers("ins-web00001", g1)
        },
    );

    let g2 = grant(&mallory, "ins-db000001", HOSTILE, 600);
    let press = append(Event::Requested, &mallory, refers("ins-db000001", g2)).seq;
    append(Event::Issued, &mallory, refers("ins-db000001", press));
    append(
        Event::Ended,
        &bot,
        Entry {
            code: Some("role_removed".into()),
            ..refers("ins-db000001", g2)
        },
    );

    grant(&bob, "ins-web00001", "deploy", 7200);
    let head = j.head();
    Fixture {
        _dir: dir,
        path,
        head,
    }
}

fn json_report(args: &[&str], journal: &Path) -> (Value, Output) {
    let mut all = vec!["audit", "report", "--format", "json"];
    all.extend_from_slice(args);
    let out = run(&all, journal);
    let doc = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    (doc, out)
}

fn grant_ids(doc: &Value) -> Vec<u64> {
    doc["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["grant"].as_u64().unwrap())
        .collect()
}

#[test]
fn the_report_has_one_row_per_grant_in_every_format() {
    let f = fixture("report-formats");
    let head = format!("up to seq {}, sha256 {}", f.head.seq, f.head.hash);

    let (doc, out) = json_report(&[], &f.path);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(doc["chain"]["verified"], true);
    assert_eq!(doc["chain"]["head_seq"], f.head.seq);
    assert_eq!(doc["chain"]["head_hash"], f.head.hash.as_str());
    assert_eq!(grant_ids(&doc), [1, 8, 12]);
    let g1 = &doc["grants"][0];
    assert_eq!(g1["member_id"], ALICE.to_string());
    assert_eq!(g1["member_name"], "alice");
    assert_eq!(g1["instance"], "ins-web00001");
    assert_eq!(g1["region"], "ap-guangzhou");
    assert_eq!(g1["reason"], "incident 42");
    assert_eq!(g1["allowed"]["rule"], 0);
    assert_eq!(g1["links_minted"], 2);
    assert_eq!(g1["presses_refused"], 1);
    assert_eq!(g1["ended_why"], "done");
    assert!(g1["granted_at"].as_str().unwrap().ends_with('Z'));
    assert!(g1["ended_at"].is_string() && g1["until"].is_string());
    assert_eq!(doc["grants"][1]["ended_why"], "role_removed");
    assert_eq!(doc["grants"][1]["ended_by"], "vncbot (local)");
    assert!(doc["grants"][2]["ended_at"].is_null());
    assert_eq!(doc["totals"]["grants"], 3);
    assert_eq!(doc["totals"]["members"], 3);
    assert_eq!(doc["totals"]["instances"], 2);
    assert_eq!(doc["totals"]["links_minted"], 3);
    assert_eq!(doc["totals"]["presses_refused"], 1);

    let out = run(&["audit", "report"], &f.path);
    assert_eq!(out.status.code(), Some(0));
    let table = text(&out.stdout);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("chain verified: 12 records") && header.ends_with(&head),
        "{header}"
    );
    assert!(
        lines.next().unwrap().starts_with("GRANT  MEMBER"),
        "{table}"
    );
    let row = lines.next().unwrap();
    for cell in [
        "alice (700000000000000001)",
        "ins-web00001",
        "incident 42",
        "rule 0",
        "done",
    ] {
        assert!(row.contains(cell), "{cell} in {row}");
    }
    assert!(table.contains("(live)"), "{table}");
    assert!(
        table.contains(
            "3 grant(s), 3 member(s), 2 instance(s), 3 link(s) minted, 1 press(es) refused"
        ),
        "{table}"
    );

    let out = run(&["audit", "report", "--format", "csv"], &f.path);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains(&head), "{}", text(&out.stderr));
    let mut csv = csv::Reader::from_reader(&out.stdout[..]);
    let columns: Vec<String> = csv.headers().unwrap().iter().map(String::from).collect();
    for c in [
        "member_id",
        "instance_name",
        "reason",
        "rule_roles",
        "approvers",
        "break_glass",
        "acknowledged_by",
        "on_call",
        "ended_why",
        "links_minted",
        "presses_refused",
    ] {
        assert!(columns.iter().any(|h| h == c), "{c} in {columns:?}");
    }
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    let col = |name: &str| columns.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[0][col("member_name")], "alice");
    assert_eq!(&rows[0][col("links_minted")], "2");
    assert_eq!(&rows[2][col("ended_why")], "(live)");

    let out = run(&["audit", "report", "--format", "html"], &f.path);
    assert_eq!(out.status.code(), Some(0));
    let html = text(&out.stdout);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("default-src 'none'"));
    for id in ["grant-1", "grant-8", "grant-12"] {
        assert!(html.contains(&format!("<tr id=\"{id}\"")), "{id}");
    }
    assert!(html.contains(&head));
}

#[test]
fn filters_select_grants_by_member_instance_and_period() {
    let f = fixture("report-filters");
    let ids = |args: &[&str]| {
        let (doc, out) = json_report(args, &f.path);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        grant_ids(&doc)
    };
    assert_eq!(ids(&["--member", "ALICE"]), [1]);
    assert_eq!(ids(&["--member", &BOB.to_string()]), [12]);
    assert_eq!(ids(&["--member", "nobody"]), Vec::<u64>::new());
    assert_eq!(ids(&["--instance", "ins-web00001"]), [1, 12]);
    assert_eq!(ids(&["--instance", "INS-DB000001"]), [8]);
    assert_eq!(
        ids(&["--member", "bob", "--instance", "ins-db000001"]),
        Vec::<u64>::new()
    );
    assert_eq!(ids(&["--since", "30m"]), [1, 8, 12]);
    assert_eq!(ids(&["--since", "7d", "--until", "2099-01-01"]), [1, 8, 12]);
    assert_eq!(ids(&["--until", "2000-01-01"]), Vec::<u64>::new());
    // An hour from now only the live grant (until two hours from now) still overlaps.
    let later = rfc3339(SystemTime::now() + Duration::from_secs(3600));
    assert_eq!(ids(&["--since", &later]), [12]);
    let today = OffsetDateTime::now_utc().date().to_string();
    assert_eq!(ids(&["--since", &today, "--until", &today]), [1, 8, 12]);

    // The query: raw records, by event, grant, member, instance, time.
    let seqs = |args: &[&str]| -> Vec<u64> {
        let mut all = vec!["audit", "query"];
        all.extend_from_slice(args);
        let out = run(&all, &f.path);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(seqs(&[]), (1..=12).collect::<Vec<_>>());
    assert_eq!(
        seqs(&["--event", "granted", "--event", "ended"]),
        [1, 7, 8, 11, 12]
    );
    assert_eq!(seqs(&["--grant", "1"]), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(seqs(&["--grant", "8", "--event", "issued"]), [10]);
    assert_eq!(seqs(&["--member", "bob"]), [6, 12]);
    assert_eq!(seqs(&["--instance", "ins-db000001"]), [8, 9, 10, 11]);
    assert_eq!(seqs(&["--until", "2000-01-01"]), Vec::<u64>::new());
    assert_eq!(
        seqs(&["--since", "1h", "--member", "alice", "--event", "issued"]),
        [3, 5]
    );
    // A mistyped event name is pointed out rather than looking like a quiet journal.
    let out = run(&["audit", "query", "--event", "grant"], &f.path);
    assert!(out.stdout.is_empty());
    assert!(text(&out.stderr).contains("no record in this journal has event \"grant\""));
}

fn assert_inert(what: &str, s: &str) {
    for bad in ['\u{1b}', '\u{202E}', '\u{9b}'] {
        assert!(!s.contains(bad), "{what} holds {bad:?}: {s}");
    }
}

#[test]
fn hostile_text_is_escaped_in_every_format() {
    let f = fixture("report-hostile");
    for format in ["table", "csv", "json", "html"] {
        let out = run(
            &[
                "audit",
                "report",
                "--member",
                MALLORY.to_string().as_str(),
                "--format",
                format,
            ],
            &f.path,
        );
        assert_eq!(out.status.code(), Some(0), "{format}");
        assert_inert(format, &text(&out.stdout));
        assert_inert(format, &text(&out.stderr));
    }
    let table = text(&run(&["audit", "report"], &f.path).stdout);
    assert!(
        table.contains("mal\\u{202e}lory") && table.contains("\\u{202e}gpj.exe"),
        "{table}"
    );
    let out = run(
        &["audit", "query", "--grant", "8", "--format", "csv"],
        &f.path,
    );
    assert!(text(&out.stdout).contains("\\u{1b}[31mred"));

    let (doc, _) = json_report(&[], &f.path);
    assert_eq!(
        doc["grants"][1]["reason"], HOSTILE,
        "JSON keeps the value exactly"
    );
    assert_eq!(doc["grants"][1]["member_name"], "mal\u{202E}lory");

    let out = run(&["audit", "report", "--format", "csv"], &f.path);
    let mut csv = csv::Reader::from_reader(&out.stdout[..]);
    let reason = csv
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "reason")
        .unwrap();
    let row = csv.records().nth(1).unwrap().unwrap();
    assert!(row[reason].starts_with("'=cmd|"), "{:?}", &row[reason]);

    let html = text(&run(&["audit", "report", "--format", "html"], &f.path).stdout);
    assert!(!html.contains("<script"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    for format in ["jsonl", "csv"] {
        let out = run(
            &["audit", "query", "--grant", "8", "--format", format],
            &f.path,
        );
        assert_eq!(out.status.code(), Some(0), "{format}");
        assert_inert(format, &text(&out.stdout));
    }
    let out = run(&["audit", "query", "--grant", "8"], &f.path);
    let first: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(
        first["reason"], HOSTILE,
        "JSON lines decode to the record as written"
    );
    assert_eq!(first["actor_name"], "mal\u{202E}lory");
    let out = run(
        &["audit", "query", "--grant", "8", "--format", "csv"],
        &f.path,
    );
    let mut csv = csv::Reader::from_reader(&out.stdout[..]);
    let headers = csv.headers().unwrap().clone();
    let at = |h: &str| headers.iter().position(|c| c == h).unwrap();
    let row = csv.records().next().unwrap().unwrap();
    assert!(
        row[at("reason")].starts_with("'=cmd|"),
        "{:?}",
        &row[at("reason")]
    );
    assert_eq!(&row[at("actor_name")], "mal\\u{202e}lory");
    assert_eq!(&row[at("seq")], "8");
}

#[test]
fn a_tampered_journal_makes_the_header_say_not_verified() {
    let f = fixture("report-tampered");
    let journal = std::fs::read_to_string(&f.path).unwrap();
    std::fs::write(&f.path, journal.replacen("incident 42", "routine chk", 1)).unwrap();

    let out = run(&["audit", "report"], &f.path);
    assert_eq!(out.status.code(), Some(1), "the exit code says it too");
    let header = text(&out.stdout).lines().next().unwrap().to_owned();
    assert!(
        header.starts_with("chain NOT verified:")
            && header.contains("DAMAGED at line 1: record seq 1 was edited"),
        "{header}"
    );
    let (doc, out) = json_report(&[], &f.path);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(doc["chain"]["verified"], false);
    assert!(doc["chain"]["head_hash"].is_null());
    assert_eq!(grant_ids(&doc), [1, 8, 12], "the rows are still shown");
    let html = text(&run(&["audit", "report", "--format", "html"], &f.path).stdout);
    assert!(html.contains("class=\"chain bad\""), "{html}");
    let out = run(&["audit", "query"], &f.path);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("chain NOT verified"));
}

#[test]
fn bad_options_are_usage_errors_that_say_what_is_expected() {
    let f = fixture("report-options");
    let cases: &[(&[&str], &str)] = &[
        (
            &["audit", "report", "--since", "yesterday"],
            "expected an RFC 3339 time",
        ),
        (
            &["audit", "report", "--until", "2026-13-01"],
            "a duration back from now (7d, 12h, 30m)",
        ),
        (
            &["audit", "query", "--since", "7y"],
            "expected an RFC 3339 time",
        ),
        (
            &["audit", "report", "--format", "pdf"],
            "table, csv, json, html",
        ),
        (&["audit", "query", "--format", "json"], "jsonl, csv"),
        (
            &["audit", "report", "--since", "1h", "--until", "2h"],
            "the period is empty",
        ),
        (
            &["audit", "report", "--member", " "],
            "--member needs an ID or a name",
        ),
        (
            &["audit", "query", "--event", "Granted"],
            "expected an event name",
        ),
        (&["audit", "query", "--grant", "first"], "invalid digit"),
    ];
    for (args, says) in cases {
        let out = run(args, &f.path);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let out = run(
        &["audit", "report"],
        &f.path.with_file_name("missing.jsonl"),
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("cannot read"),
        "{}",
        text(&out.stderr)
    );
}

/// Debian's `chromium`, if installed.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
        .find(|p| p.is_file())
}

/// Loads `page` in headless Chromium with every host name unresolvable and the browser's own
/// background traffic turned down, and returns the DOM as the browser built it and the URLs the
/// page asked for (from Chromium's net log: requests the page initiated, as opposed to the
/// browser's own, which carry no origin).
fn load_in_chromium(browser: &Path, dir: &Path, page: &Path, tag: &str) -> (String, Vec<String>) {
    let net_log = dir.join(format!("{tag}-net.json"));
    let out = Command::new(browser)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.join(format!("{tag}-profile")).display()
        ))
        .arg(format!("--log-net-log={}", net_log.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium: {}", text(&out.stderr));
    let log: Value = serde_json::from_slice(&std::fs::read(&net_log).unwrap()).unwrap();
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    let fetched = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == start_job)
        .filter(|e| e["params"]["url"].is_string() && e["params"]["initiator"] != "not an origin")
        .map(|e| e["params"]["url"].as_str().unwrap().to_owned())
        .collect();
    (text(&out.stdout), fetched)
}

#[test]
fn the_html_report_renders_in_headless_chromium_and_fetches_nothing() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and chromium is missing: .ci/run installs Debian's chromium package"
        );
        eprintln!(
            "SKIPPED: chromium is not installed (apt-get install chromium); in CI this fails"
        );
        return;
    };
    let f = fixture("report-browser");
    // Break-glass grants as the coming records will carry them, one of them acknowledged. The
    // writer cannot produce these fields yet, so they are appended by hand: the chain breaks at
    // them, which the page must say too.
    let until = rfc3339(SystemTime::now() + Duration::from_secs(1800));
    let now = rfc3339(SystemTime::now());
    let mut journal = std::fs::read_to_string(&f.path).unwrap();
    for (seq, ack) in [
        (13, "null"),
        (14, r#"{"id":"700000000000000004","name":"carol"}"#),
    ] {
        journal.push_str(&format!(
            r#"{{"seq":{seq},"time":"{now}","event":"granted","actor_id":"{ALICE}","actor_name":"alice","instance":"ins-db000001","instance_name":"db-01","region":"ap-guangzhou","reason":"database down","rule":2,"break_glass":true,"acknowledged_by":{ack},"until":"{until}","prev":"{}","hash":"{}"}}"#,
            "0".repeat(64),
            "f".repeat(64)
        ));
        journal.push('\n');
    }
    std::fs::write(&f.path, journal).unwrap();
    let out = run(&["audit", "report", "--format", "html"], &f.path);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let dir = f.path.parent().unwrap();
    let page = dir.join("report.html");
    std::fs::write(&page, &out.stdout).unwrap();

    let (dom, fetched) = load_in_chromium(&browser, dir, &page, "report");
    assert!(fetched.is_empty(), "the page fetched {fetched:?}");
    assert!(
        dom.contains("<p id=\"chain\" class=\"chain bad\">chain NOT verified:"),
        "{dom}"
    );
    for row in [
        "<tr id=\"grant-1\" class=\"\"><td>1</td><td>alice (700000000000000001)</td><td>ins-web00001</td>",
        "<tr id=\"grant-12\" class=\"\"><td>12</td><td>bob (700000000000000002)</td>",
        "<tr id=\"grant-13\" class=\"bg unack\"><td>13</td><td>alice (700000000000000001)</td><td>db-01 (ins-db000001)</td>",
        "<tr id=\"grant-14\" class=\"bg\">",
    ] {
        assert!(dom.contains(row), "{row} in {dom}");
    }
    assert!(dom.contains("BREAK-GLASS, acknowledged by carol (700000000000000004)"));
    assert!(dom.contains("<span class=\"badge unack\">break-glass: NOT acknowledged</span>"));
    assert!(dom.contains(
        "<div id=\"total-break-glass\" class=\"alert\"><dt>Break-glass uses</dt><dd>2 <small>(1 not acknowledged)</small></dd></div>"
    ));
    assert!(dom.contains("<div id=\"total-grants\"><dt>Grants</dt><dd>5</dd></div>"));
    // Both timelines drew every grant; the unacknowledged use stands out.
    for timeline in ["by-member", "by-instance"] {
        let part = dom.split(&format!("id=\"{timeline}\"")).nth(1).unwrap();
        let part = part.split("</table>").next().unwrap();
        assert_eq!(part.matches("<rect class=\"bar").count(), 5, "{part}");
        assert_eq!(part.matches("class=\"bar bg unack\"").count(), 1, "{part}");
    }
    // The hostile reason is text, not markup: no script element, no live direction override.
    assert!(!dom.contains("<script"), "{dom}");
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!dom.contains('\u{202E}') && !dom.contains('\u{1b}'));

    // The net log would have shown a fetch: the same browser, a page that fetches an image.
    let probe = dir.join("probe.html");
    std::fs::write(
        &probe,
        "<!DOCTYPE html><img src=\"http://probe.invalid/x.png\">",
    )
    .unwrap();
    let (_, fetched) = load_in_chromium(&browser, dir, &probe, "probe");
    assert_eq!(fetched, ["http://probe.invalid/x.png"]);
}
