//! `vncbot demo` as a user runs it: a clean environment, no config, no accounts; it plays the
//! tour against the built-in stand-ins and exits 0.
// Deploy builds (`--no-default-features`) have no `demo` command.
#![cfg(feature = "demo")]

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// One run of `vncbot demo` as a user runs it (clean environment, no config), shared by the
/// tests that read its transcript: the tour takes about 20 s.
fn demo() -> &'static Output {
    static RUN: OnceLock<Output> = OnceLock::new();
    RUN.get_or_init(|| {
        Command::new(env!("CARGO_BIN_EXE_vncbot"))
            .arg("demo")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NO_PROXY", "127.0.0.1,localhost")
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap()
    })
}

#[test]
fn the_demo_plays_the_whole_flow_and_exits_0() {
    let out = demo();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    for expect in [
        // Autocomplete, from the catalog.
        "web-01 · ins-web00001 · RUNNING",
        // The grant, its DM and buttons.
        "is in your DMs until",
        "[Open console] [Done]",
        // A press: a fresh link in the DM.
        "[Connect → https://img.qcloud.com/qcloud/app/active_vnc/index.html?InstanceVncUrl=",
        // Scrubbed after 15 s, Open console back.
        "15 seconds later",
        // Refused, with the roles that may.
        "None of your roles may open ins-web00001",
        "These roles may: @on-call",
        // Stopped: refused before Tencent.
        "is STOPPED: start it first",
        "console action was called 1 time(s)",
        // Done.
        "(you pressed Done)",
        // The trail.
        "journal head: seq",
        "granted",
        ": intact, ",
        "The tour is over.",
    ] {
        assert!(stdout.contains(expect), "missing {expect:?} in\n{stdout}");
    }
    // The link's secret part never reaches the transcript (the button shows its start only).
    assert!(!stdout.contains("wss%3A%2F%2F"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// The transcript's scenes, in order: each heading with the lines under it.
fn scenes(stdout: &str) -> Vec<(String, Vec<String>)> {
    let mut scenes: Vec<(String, Vec<String>)> = Vec::new();
    for line in stdout.lines() {
        if let Some(title) = line.strip_prefix("── ") {
            scenes.push((title.to_owned(), Vec::new()));
        } else if let Some((_, lines)) = scenes.last_mut() {
            lines.push(line.to_owned());
        }
    }
    scenes
}

/// The journal as the transcript lists it at the end: seq → (event, refers_to).
fn listed_journal(stdout: &str) -> BTreeMap<u64, (String, Option<u64>)> {
    let (_, lines) = scenes(stdout)
        .into_iter()
        .find(|(t, _)| t.starts_with("The audit journal"))
        .expect("the journal's listing");
    lines
        .iter()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "seq").then_some(())?;
            let seq = w.next()?.parse().ok()?;
            let event = w.next()?.to_owned();
            let refers = l
                .split("(refers to ")
                .nth(1)
                .and_then(|r| r.trim_end_matches(')').parse().ok());
            Some((seq, (event, refers)))
        })
        .collect()
}

#[test]
fn each_scene_narrates_what_the_journal_recorded_in_order_and_no_grant_is_left_open() {
    let out = demo();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let journal = listed_journal(&stdout);
    assert!(journal.len() >= 20, "{stdout}");
    // Every record is narrated once, under the scene that caused it, in the journal's order.
    let mut narrated = Vec::new();
    for (title, lines) in scenes(&stdout) {
        for line in &lines {
            let Some(told) = line.trim_start().strip_prefix("journal: ") else {
                continue;
            };
            if told == "nothing recorded" {
                continue;
            }
            for item in told.split(" · ") {
                let mut w = item.split_whitespace();
                assert_eq!(w.next(), Some("seq"), "{title}: {line}");
                let seq: u64 = w.next().unwrap().parse().unwrap();
                let event = w.next().unwrap().to_owned();
                narrated.push((seq, event, title.clone()));
            }
        }
    }
    let seqs: Vec<u64> = narrated.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(
        seqs,
        journal.keys().copied().collect::<Vec<_>>(),
        "{stdout}"
    );
    for (seq, event, title) in &narrated {
        assert_eq!(&journal[seq].0, event, "seq {seq} under {title:?}");
    }
    // What each scene says it does is what its records are.
    let under = |scene: &str| -> Vec<&str> {
        narrated
            .iter()
            .filter(|(_, _, t)| t.contains(scene))
            .map(|(_, e, _)| e.as_str())
            .collect()
    };
    assert_eq!(under("runs /vnc instance:web-01"), ["granted", "delivered"]);
    assert_eq!(under("without the on-call role"), ["denied"]);
    assert_eq!(
        under("presses Approve"),
        ["approval_vote", "approved", "granted", "delivered"]
    );
    assert_eq!(
        under("Open console on db-prod"),
        ["requested", "issued", "delivered"]
    );
    // The tour ends every grant it opened.
    for (seq, (event, _)) in &journal {
        if event == "granted" {
            assert!(
                journal
                    .values()
                    .any(|(e, refers)| e == "ended" && *refers == Some(*seq)),
                "grant {seq} was left open:\n{stdout}"
            );
        }
    }
}

#[test]
fn the_demo_shows_one_approval_from_request_to_console() {
    let out = demo();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let scenes = scenes(&stdout);
    let scene = |name: &str| -> String {
        scenes
            .iter()
            .find(|(t, _)| t.contains(name))
            .map(|(_, lines)| lines.join("\n"))
            .unwrap_or_else(|| panic!("no scene {name:?} in\n{stdout}"))
    };
    // The request: the requester is told, the approvers are asked in their channel.
    let asked = scene("its rule needs an approver");
    for want in [
        "only Alice sees: Asked @approvers",
        "#approvals:      @approvers: @alice asks for console access to db-prod (ins-dbprod01)",
        "production database",
        "0 of 1 approvals",
        "[Approve] [Deny]",
        "[Cancel]",
    ] {
        assert!(asked.contains(want), "missing {want:?} in\n{asked}");
    }
    // An approver's press: the request shows who approved, the requester gets Open console.
    let pressed = scene("Carol (an approver) presses Approve");
    for want in [
        "1 of 1 approvals (@carol)",
        "Alice's DM:      Approved by @carol.",
        "[Open console] [Done]",
    ] {
        assert!(pressed.contains(want), "missing {want:?} in\n{pressed}");
    }
    // The requester's Open console: a link.
    let opened = scene("Open console on db-prod");
    assert!(
        opened.contains("[Connect → https://img.qcloud.com/qcloud/app/active_vnc/index.html?"),
        "{opened}"
    );
    assert!(stdout.contains("approved by @carol"), "{stdout}");
}

/// Issue 20's scenes: a role grant read from the server's audit log is journaled with who gave
/// it, and a member PagerDuty has on call is let through an approval rule without votes.
#[test]
fn the_demo_records_a_role_grant_and_lets_an_on_call_member_through() {
    let out = demo();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let scenes = scenes(&stdout);
    let scene = |name: &str| -> String {
        scenes
            .iter()
            .find(|(t, _)| t.contains(name))
            .map(|(_, lines)| lines.join("\n"))
            .unwrap_or_else(|| panic!("no scene {name:?} in\n{stdout}"))
    };
    let given = scene("gives Dave the on-call role");
    assert!(given.contains("role_granted"), "{given}");
    let through = scene("Dave, on call in PagerDuty");
    for want in [
        "only Dave sees:  Console access to db-prod",
        "[Open console] [Done]",
        "granted",
    ] {
        assert!(through.contains(want), "missing {want:?} in\n{through}");
    }
    // No vote was asked for: nothing new in the approvals channel, no approval records.
    assert!(!through.contains("approval_requested"), "{through}");
    assert!(!through.contains("#approvals"), "{through}");
    // The audit channel names who gave the role.
    assert!(stdout.contains("gave"), "{stdout}");
}

/// A printed command line split as a POSIX shell would (single quotes only, as the demo quotes),
/// without its trailing `# comment`.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            '#' if !quoted && !any => break,
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// `vncbot demo --keep`: the printed commands, run as printed, reach the stand-ins: `vncbot run`
/// gets ready, curl reads its health and metrics, `vncbot url` mints a link whose record the
/// running bot posts to the audit channel, and `audit verify` passes; every record names the
/// config it was written under.
#[tokio::test]
async fn demo_keep_prints_commands_that_work_as_printed() {
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_vncbot"))
        .args(["demo", "--keep"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut commands: Vec<Vec<String>> = Vec::new();
    let mut journal = None;
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(path) = line.strip_prefix("  journal: ") {
                journal = Some(std::path::PathBuf::from(path));
            }
            if let Some(cmd) = line.strip_prefix("  $ ") {
                commands.push(words(cmd));
                if cmd.contains(" audit verify ") {
                    return;
                }
            }
        }
        panic!("the demo ended before printing its commands");
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the demo prints its commands within 2 minutes");
    let journal = journal.expect("the journal's path");
    let env: Vec<(String, String)> = commands
        .iter()
        .find(|c| c[0] == "export")
        .expect("an export line")[1..]
        .iter()
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let named = |word: &str| -> Vec<String> {
        commands
            .iter()
            .find(|c| c.iter().any(|w| w == word))
            .unwrap_or_else(|| panic!("no command with {word:?}: {commands:?}"))
            .clone()
    };
    let shell = |c: &[String]| {
        let mut cmd = tokio::process::Command::new(&c[0]);
        cmd.args(&c[1..])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().cloned())
            .kill_on_drop(true);
        cmd
    };
    // curl, as printed: its URL and headers.
    let http = reqwest::Client::new();
    let curl = |c: Vec<String>| {
        let url = c.iter().find(|w| w.starts_with("http://")).unwrap().clone();
        let mut req = http.get(url);
        if let Some(i) = c.iter().position(|w| w == "-H") {
            let (k, v) = c[i + 1].split_once(": ").unwrap();
            req = req.header(k, v);
        }
        req
    };

    let ending = |suffix: &str| -> Vec<String> {
        commands
            .iter()
            .find(|c| c.iter().any(|w| w.ends_with(suffix)))
            .unwrap_or_else(|| panic!("no command ending {suffix:?}: {commands:?}"))
            .clone()
    };

    let _run = shell(&named("run"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The bot is a process of its own: its readiness is asked until it answers, within a bound.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = curl(ending("/healthz")).send().await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "vncbot run never got ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = curl(ending("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("vncbot_build_info"));

    let url = shell(&named("url")).output().await.unwrap();
    assert_eq!(
        url.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&url.stderr)
    );
    assert!(String::from_utf8_lossy(&url.stdout)
        .starts_with("https://img.qcloud.com/qcloud/app/active_vnc/index.html?InstanceVncUrl="));
    // The running bot follows the journal and posts the url's record in the audit channel.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = curl(ending("/messages"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let posted: Value = serde_json::from_str(&body).unwrap();
        let lines: Vec<&str> = posted
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["content"].as_str())
            .collect();
        if lines
            .iter()
            .any(|l| l.starts_with("vncbot url by") && l.contains("ins-web00001"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the url's record never reached the audit channel: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let verify = shell(&named("verify")).output().await.unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    // Every record names the config it was written under: the tour's, then (with the admin
    // endpoint added) the url's.
    let records: Vec<Value> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let digest = |r: &Value| r["config_digest"].as_str().map(str::to_owned);
    assert!(
        records
            .iter()
            .all(|r| digest(r).is_some_and(|d| d.len() == 64)),
        "{records:#?}"
    );
    let local: std::collections::BTreeSet<_> = records
        .iter()
        // `vncbot url`'s own records (the bots write theirs as "vncbot").
        .filter(|r| r["actor_id"] == "local" && r["actor_name"] != "vncbot")
        .map(digest)
        .collect();
    assert_eq!(local.len(), 1, "{records:#?}");
    assert_ne!(local.first().unwrap(), &digest(&records[0]));
    let _ = demo.start_kill();
}
