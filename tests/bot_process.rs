//! `vncbot run` as a process: clean shutdown on SIGTERM, and a journal that survives SIGKILL.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::fake_discord::{vnc, Invocation};
use support::mock_cvm::Scripted;
use support::{Fakes, ONCALL_ROLE};
use tokio::process::{Child, Command};

fn spawn_bot(cfg: &Path) -> Child {
    support::bot_command(Path::new(env!("CARGO_BIN_EXE_vncbot")), cfg)
        .env("RUST_LOG", "vncbot=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = child.id().expect("still running") as libc::pid_t;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// `/vnc` on `instance` by an on-call member.
fn on_call(user: u64, instance: &str) -> Invocation<'_> {
    vnc(user, vec![ONCALL_ROLE], vec![("instance", instance)])
}

async fn verify(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vncbot"))
        .args(["audit", "verify"])
        .arg(path)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test]
async fn sigterm_finishes_requests_in_flight_and_exits_0() {
    let f = Fakes::start("sigterm").await;
    let (discord, cvm) = (&f.discord, &f.cvm);
    let cfg = f.write_config(&f.config);
    let mut bot = spawn_bot(&cfg);
    discord.wait_ready().await;

    let g = discord.grant(on_call(1, "ins-running1")).await;
    cvm.script([Scripted::Delay(Duration::from_millis(1500))]);
    let slow = discord.press_open(&g);
    discord
        .wait_for(Duration::from_secs(5), "the deferral", |c| {
            c.path.contains(&slow)
        })
        .await;
    signal(&bot, libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = discord.invoke(on_call(2, "ins-web00001"));
    assert!(discord.reply(&late).await.content().contains("restarting"));
    let shown = discord.press_result(&slow).await;
    assert!(
        shown.path.ends_with("@original") && shown.body.to_string().contains("once"),
        "the press in flight was finished: {shown:?}"
    );

    // It also waits for the DM's expiry edit (due 15 s after the link was made) before exiting.
    let status = tokio::time::timeout(Duration::from_secs(40), bot.wait())
        .await
        .expect("the bot exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let dm_channel = discord.dm_channels_of(1)[0];
    let expiry_edits = discord.count(|c| {
        c.method == "PATCH"
            && c.path
                .starts_with(&format!("/api/v10/channels/{dm_channel}/messages/"))
    });
    assert_eq!(expiry_edits, 1, "the dead link was removed before exit");
    assert_eq!(
        cvm.seen().len(),
        1,
        "nothing new was minted after the signal"
    );
    let (code, text) = verify(&f.journal()).await;
    assert_eq!(code, Some(0), "{text}");
}

#[tokio::test]
async fn a_journal_killed_mid_burst_verifies_after_the_restart_seal() {
    let f = Fakes::start("sigkill").await;
    let (discord, cvm) = (&f.discord, &f.cvm);
    let cfg = f.write_config(&f.config);
    let journal = f.journal();
    let mut bot = spawn_bot(&cfg);
    discord.wait_ready().await;

    let ids: Vec<String> = (0..40).map(|i| format!("ins-load{i:04}")).collect();
    let mut grants = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        grants.push(discord.grant(on_call(100 + i as u64, id)).await);
    }
    for g in &grants {
        discord.press_open(g);
    }
    // A press's DM edit with a link (command replies edit `@original` too).
    let link_dm = |c: &support::fake_discord::Call| {
        c.method == "PATCH"
            && c.path.ends_with("@original")
            && c.status == 200
            && c.body["content"]
                .as_str()
                .is_some_and(|t| t.contains("Tencent RequestId"))
    };
    // Kill it mid-burst, once a few links are out and the first has reached its DM (each DM
    // follows its link after one more member fetch).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while (cvm.issued().len() < 8 || discord.count(link_dm) == 0)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    signal(&bot, libc::SIGKILL);
    let _ = bot.wait().await;
    let dms_before_kill = discord.count(link_dm);
    assert!(dms_before_kill >= 1, "no DM went out before the kill");
    // A crash between write and line end leaves a torn line; SIGKILL rarely lands there, so make
    // sure of it the way such a crash would.
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.extend_from_slice(br#"{"seq":9999,"time":"2026-"#);
    std::fs::write(&journal, &bytes).unwrap();
    let (code, text) = verify(&journal).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("torn"), "{text}");

    let mut bot = spawn_bot(&cfg);
    tokio::time::timeout(Duration::from_secs(20), async {
        while discord.calls().iter().filter(|c| c.method == "PUT").count() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the bot restarts and reconnects");
    // A grant from before the crash still works: its buttons survive the restart.
    let before = grants.last().unwrap();
    let shown = discord.press_result(&discord.press_open(before)).await;
    assert!(shown.path.ends_with("@original"), "{shown:?}");
    let after = discord.grant(on_call(999, "ins-running1")).await;
    let shown = discord.press_result(&discord.press_open(&after)).await;
    assert!(shown.path.ends_with("@original"), "{shown:?}");
    signal(&bot, libc::SIGTERM);
    assert_eq!(bot.wait().await.unwrap().code(), Some(0));

    let (code, text) = verify(&journal).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("1 sealed"), "{text}");

    // Every DM that went out has its `issued` record.
    let records: Vec<Value> = std::fs::read_to_string(&journal)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let dms: Vec<String> = discord
        .calls()
        .iter()
        .filter(|c| link_dm(c))
        .map(|c| {
            let content = c.body["content"].as_str().unwrap();
            content.rsplit('`').nth(1).unwrap().to_owned()
        })
        .collect();
    // Links minted just before the kill may not have reached a DM; those that did are audited.
    assert_eq!(dms.len(), dms_before_kill + 2);
    for rid in &dms {
        assert!(
            records
                .iter()
                .any(|r| r["event"] == "issued" && r["request_id"] == rid.as_str()),
            "DM with RequestId {rid} has no issued record"
        );
    }
}

#[tokio::test]
async fn sighup_reloads_a_good_config_and_keeps_the_old_one_on_error() {
    use support::WEB_ROLE;
    let f = Fakes::start("sighup").await;
    let discord = &f.discord;
    let text = f.config.clone();
    let cfg = f.write_config(&text);
    let mut bot = spawn_bot(&cfg);
    discord.wait_ready().await;
    let web =
        |user: u64, instance: &'static str| vnc(user, vec![WEB_ROLE], vec![("instance", instance)]);
    let t = discord.invoke(web(1, "ins-running1"));
    assert!(discord
        .reply(&t)
        .await
        .content()
        .contains("None of your roles"));

    // Good config: the web role may now open every instance.
    f.write_config(&text.replace("instances = [\"ins-web*\"]", "instances = [\"*\"]"));
    signal(&bot, libc::SIGHUP);
    let mut allowed = false;
    for user in 2..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = discord.invoke(web(user, "ins-running1"));
        if discord.reply(&t).await.content().contains("in your DMs") {
            allowed = true;
            break;
        }
    }
    assert!(allowed, "the reloaded allowlist took effect");

    // Broken config: logged and ignored; the last good one stays in force.
    f.write_config("[discord]\nguild_ids = []\n");
    signal(&bot, libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = discord.invoke(web(100, "ins-web00001"));
    assert!(
        discord.reply(&t).await.content().contains("in your DMs"),
        "still serving with the last good config"
    );
    discord.set_roles(101, vec![WEB_ROLE]);
    let t = discord.invoke(web(101, "ins-stopped1"));
    assert!(discord.reply(&t).await.content().contains("in your DMs"));
    let g = discord.grant_dm(101).unwrap();
    let answer = discord.press_result(&discord.press_open(&g)).await;
    // Refused for its state (by the catalog, before Tencent), not for the member's role.
    let text = answer.body["content"].as_str().unwrap_or_default();
    assert!(
        text.contains("does not allow a console") || text.contains("is STOPPED"),
        "the wider rule is still in force: {answer:?}"
    );

    signal(&bot, libc::SIGTERM);
    assert_eq!(bot.wait().await.unwrap().code(), Some(0));
}

#[tokio::test]
async fn json_logs_are_one_object_a_line_with_stable_fields() {
    let f = Fakes::start("jsonlog").await;
    let (discord, cvm) = (&f.discord, &f.cvm);
    let text = f.config.clone() + "\n[log]\nformat = \"json\"\n";
    let cfg = f.write_config(&text);
    let bot = support::bot_command(Path::new(env!("CARGO_BIN_EXE_vncbot")), &cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    discord.wait_ready().await;
    let g = discord.grant(on_call(1, "ins-running1")).await;
    discord.press_result(&discord.press_open(&g)).await;
    signal(&bot, libc::SIGTERM);
    let out = bot.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(lines.len() >= 3, "{stderr}");
    let mut issued = false;
    for line in lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v.get(field).is_some(), "no {field} in {line}");
        }
        if v["message"] == "console URL issued" {
            issued = true;
            assert_eq!(v["instance"], "ins-running1");
            assert_eq!(v["request_id"], cvm.seen()[0].request_id.as_str());
        }
    }
    assert!(issued, "{stderr}");
}

/// serenity's `shutdown_all` returns early when no shard runner exists, so a bot whose gateway
/// is down used to ignore SIGTERM for good. The gateway here accepts connections and drops them.
#[tokio::test]
async fn sigterm_while_the_gateway_is_down_exits_0_promptly() {
    let f = Fakes::start("gateway-down").await;
    let down = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = down.local_addr().unwrap();
    let config = f.config.replace(
        &format!("ws://{}", f.discord.gateway),
        &format!("ws://{addr}"),
    );
    assert_ne!(config, f.config, "the config names the fake gateway");
    let cfg = f.write_config(&config);
    let mut bot = spawn_bot(&cfg);
    // The bot is up and trying: it has reached the (dead) gateway once.
    let (conn, _) = tokio::time::timeout(Duration::from_secs(20), down.accept())
        .await
        .expect("the bot tries the gateway")
        .unwrap();
    drop(conn);
    signal(&bot, libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(10), bot.wait())
        .await
        .expect("the bot exits within 10 s of SIGTERM although the gateway is down")
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

/// The journal's head is witnessed in the audit channel at start and at shutdown, after every
/// other line, and `audit verify --head` accepts the last one.
#[tokio::test]
async fn the_journal_head_is_anchored_at_start_and_at_shutdown() {
    const AUDIT_CHANNEL: u64 = 810000000000000002;
    let f = Fakes::start("anchor").await;
    let discord = &f.discord;
    let config = f.config.replace(
        "[tencent]",
        &format!("audit_channel_id = {AUDIT_CHANNEL}\n\n[tencent]"),
    );
    let cfg = f.write_config(&config);
    let mut bot = spawn_bot(&cfg);
    discord.wait_ready().await;
    let path = format!("/api/v10/channels/{AUDIT_CHANNEL}/messages");
    let is_anchor = |c: &support::fake_discord::Call| {
        c.path == path
            && c.body["content"]
                .as_str()
                .is_some_and(|s| s.starts_with("journal head:"))
    };
    discord
        .wait_for(Duration::from_secs(10), "the anchor at start", is_anchor)
        .await;
    let t = discord.invoke(on_call(1, "ins-running1"));
    assert!(discord.reply(&t).await.content().contains("in your DMs"));
    signal(&bot, libc::SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(40), bot.wait())
        .await
        .expect("the bot exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let posts: Vec<_> = discord
        .calls()
        .into_iter()
        .filter(|c| c.path == path)
        .collect();
    let last = posts.last().expect("lines were posted");
    assert!(is_anchor(last), "the head is the last line: {:#?}", posts);
    let text = last.body["content"].as_str().unwrap();
    let words: Vec<&str> = text.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let (seq, hash) = (words[3], words[5]);
    let journal = std::fs::read_to_string(f.journal()).unwrap();
    let last_record: Value = serde_json::from_str(journal.lines().last().unwrap()).unwrap();
    assert_eq!(last_record["seq"].to_string(), seq);
    assert_eq!(last_record["hash"].as_str(), Some(hash));
    let out = Command::new(env!("CARGO_BIN_EXE_vncbot"))
        .args(["audit", "verify", "--head", &format!("{seq}:{hash}")])
        .arg(f.journal())
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A grant whose window runs out while the bot is down is ended at the next start, and its DM
/// is edited; a live grant's DM gets its Open console back.
#[tokio::test]
async fn grants_that_lapsed_while_the_bot_was_down_are_ended_at_start() {
    let f = Fakes::start("lapsed").await;
    let discord = &f.discord;
    let config = f
        .config
        .replace("[limits]", "[grants]\nminutes = 1\n\n[limits]");
    let cfg = f.write_config(&config);
    let mut bot = spawn_bot(&cfg);
    discord.wait_ready().await;
    let g = discord.grant(on_call(1, "ins-running1")).await;
    signal(&bot, libc::SIGTERM);
    assert_eq!(bot.wait().await.unwrap().code(), Some(0));
    // The window runs out while the bot is down: the next start's clock is a minute ahead (a
    // debug build's test seam), instead of this test waiting a minute.
    let _bot = support::bot_command(Path::new(env!("CARGO_BIN_EXE_vncbot")), &cfg)
        .env("RUST_LOG", "vncbot=debug")
        .env("VNCBOT_DEBUG_CLOCK_SKEW_SECS", "61")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ended = discord
        .wait_for(Duration::from_secs(20), "the lapsed grant's DM edit", |c| {
            c.method == "PATCH"
                && c.path.ends_with(&format!("/messages/{}", g.message))
                && c.body["content"]
                    .as_str()
                    .is_some_and(|t| t.contains("ended"))
        })
        .await;
    assert_eq!(ended.body["components"], serde_json::json!([]));
    let journal = std::fs::read_to_string(f.journal()).unwrap();
    assert!(journal.lines().any(|l| l.contains(r#""event":"ended""#)
        && l.contains(r#""code":"expired""#)
        && l.contains(&format!(r#""refers_to":{}"#, g.grant))));
}

/// At start the journal is held against the bot's own last anchor in the audit channel: a
/// journal truncated since stops the start (exit 6) with what was expected and found and how to
/// inspect it; an anchor posted by someone else is not the bot's; `on_anchor_mismatch = "warn"`
/// starts anyway.
#[tokio::test]
async fn a_journal_truncated_since_the_last_anchor_stops_the_start() {
    const AUDIT_CHANNEL: u64 = 810000000000000002;
    let f = Fakes::start("anchor-check").await;
    let discord = &f.discord;
    let config = f.config.replace(
        "[tencent]",
        &format!("audit_channel_id = {AUDIT_CHANNEL}\n\n[tencent]"),
    );
    let cfg = f.write_config(&config);
    let mut bot = spawn_bot(&cfg);
    discord.wait_ready().await;
    for user in 1..=2 {
        discord.grant(on_call(user, "ins-running1")).await;
    }
    signal(&bot, libc::SIGTERM);
    assert_eq!(bot.wait().await.unwrap().code(), Some(0));

    // Someone else's line that looks like an anchor, newer than the bot's: not the bot's word.
    let zeros = "0".repeat(64);
    discord.post_as(
        AUDIT_CHANNEL,
        4242,
        &format!("journal head: seq 1, sha256 {zeros}"),
    );
    // The journal loses its last records, as a truncation by hand would.
    let journal = f.journal();
    let text = std::fs::read_to_string(&journal).unwrap();
    let kept: Vec<&str> = text.lines().take(2).collect();
    std::fs::write(&journal, format!("{}\n", kept.join("\n"))).unwrap();
    let last = text.lines().count();

    let run = |cfg: std::path::PathBuf| async move {
        let out = support::bot_command(Path::new(env!("CARGO_BIN_EXE_vncbot")), &cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output();
        tokio::time::timeout(Duration::from_secs(30), out)
            .await
            .expect("the bot stops at once")
            .unwrap()
    };
    let out = run(cfg.clone()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains(&format!("expected seq {last}"))
            && stderr.contains("ends at seq 2")
            && stderr.contains("vncbot audit verify --head"),
        "{stderr}"
    );
    let after = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(
        after.lines().count(),
        2,
        "nothing was written to the journal"
    );

    // An operator who restored the journal on purpose starts it with a warning.
    let warn = f.write_config(&config.replace("[audit]", "[audit]\non_anchor_mismatch = \"warn\""));
    let registered =
        |c: &support::fake_discord::Call| c.method == "PUT" && c.path.contains("/commands");
    let before = discord.count(registered);
    let mut bot = spawn_bot(&warn);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while discord.count(registered) == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bot did not start with warn"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&bot, libc::SIGTERM);
    assert_eq!(bot.wait().await.unwrap().code(), Some(0));
}

/// Records appended by someone who can write the journal point a grant's DM at the audit
/// channel's anchor (and at another server channel): after a restart the bot edits neither — a
/// rebuilt DM target is used only once Discord confirms it is the holder's DM.
#[tokio::test]
async fn a_forged_dm_target_never_makes_the_bot_edit_the_audit_channel() {
    use vncbot::audit::{Actor, Entry, Event, Journal};
    const AUDIT_CHANNEL: u64 = 810000000000000002;
    const OPS_CHANNEL: u64 = 810000000000000009;
    let f = Fakes::start("forged-dm").await;
    let discord = &f.discord;
    let config = f.config.replace(
        "[tencent]",
        &format!("audit_channel_id = {AUDIT_CHANNEL}\n\n[tencent]"),
    );
    let cfg = f.write_config(&config);
    let mut bot = spawn_bot(&cfg);
    discord.wait_ready().await;
    let anchor = discord
        .wait_for(Duration::from_secs(10), "the anchor at start", |c| {
            c.path == format!("/api/v10/channels/{AUDIT_CHANNEL}/messages")
                && c.body["content"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("journal head:"))
        })
        .await;
    let anchor_id: u64 = anchor.reply["id"].as_str().unwrap().parse().unwrap();
    signal(&bot, libc::SIGTERM);
    assert_eq!(bot.wait().await.unwrap().code(), Some(0));

    // Two correctly chained grants, each with a `delivered` naming a channel that is no DM.
    let (journal, _) = Journal::open(&f.journal()).unwrap();
    let holder = Actor::Discord {
        id: 77,
        name: "mallory".into(),
    };
    let until = time::OffsetDateTime::now_utc() + time::Duration::minutes(5);
    let until = until
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    for (channel, message) in [(AUDIT_CHANNEL, anchor_id), (OPS_CHANNEL, 5)] {
        let granted = journal
            .append_blocking(
                Event::Granted,
                &holder,
                Entry {
                    guild: Some(support::GUILD),
                    instance: Some("ins-running1".into()),
                    region: Some("ap-guangzhou".into()),
                    until: Some(until.clone()),
                    ..Entry::default()
                },
            )
            .unwrap();
        journal
            .append_blocking(
                Event::Delivered,
                &holder,
                Entry {
                    channel: Some(channel),
                    message: Some(message),
                    refers_to: Some(granted.seq),
                    ..Entry::default()
                },
            )
            .unwrap();
    }
    drop(journal);

    let mut bot = spawn_bot(&cfg);
    // The rebuilt grants are announced (and so the resumption is visible to auditors).
    let rebuilt = |c: &support::fake_discord::Call| {
        c.path == format!("/api/v10/channels/{AUDIT_CHANNEL}/messages")
            && c.body["content"]
                .as_str()
                .is_some_and(|s| s.contains("rebuilt at start"))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while discord.count(rebuilt) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rebuilt grants' lines"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Discord was asked what the other channel is, and neither target was edited.
    discord
        .wait_for(
            Duration::from_secs(10),
            "the check of the ops channel",
            |c| c.method == "GET" && c.path == format!("/api/v10/channels/{OPS_CHANNEL}"),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&bot, libc::SIGTERM);
    assert_eq!(bot.wait().await.unwrap().code(), Some(0));
    let edits: Vec<String> = discord
        .calls()
        .into_iter()
        .filter(|c| c.method == "PATCH" || c.method == "DELETE")
        .filter(|c| c.path.contains("/channels/"))
        .map(|c| c.path)
        .collect();
    assert!(edits.is_empty(), "{edits:?}");
}
