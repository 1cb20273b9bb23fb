//! `vncbot demo`: the whole flow on loopback, with the built-in stand-ins for Discord and
//! Tencent Cloud (the `vncbot-sandbox` crate, built with the default `demo` feature), a temporary config and journal, and the real bot (the same
//! code path as `vncbot run`). Prints what each member sees, then the audit trail.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vncbot::config::{Config, TencentCredentials};
use vncbot_sandbox::fake_discord::{self, Call, FakeDiscord, Invocation, TOKEN};
use vncbot_sandbox::mock_cvm::{MockCvm, MockInstance, SECRET_ID, SECRET_KEY};
use vncbot_sandbox::{GUILD, ONCALL_ROLE};

use super::Exit;

const ALICE: u64 = 100000000000000001;
const BOB: u64 = 100000000000000002;
const AUDIT_CHANNEL: u64 = 810000000000000002;

pub fn main(keep: bool) -> Exit {
    // A stand-in that times out says so in one line (its full record holds the demo's links).
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unexpected failure");
        let what = what.split("; calls:").next().unwrap_or(what);
        eprintln!(
            "error: the demo did not go as scripted: {}",
            what.chars().take(200).collect::<String>()
        );
    }));
    let dir = match tempfile::Builder::new().prefix("vncbot-demo-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot create a temporary directory: {e}");
            return Exit::Config;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return Exit::Config;
        }
    };
    let journal = dir.path().join("audit.jsonl");
    let exit = match runtime.block_on(async move { tokio::spawn(tour(keep, journal)).await }) {
        Ok(exit) => exit,
        Err(_) => Exit::Temporary,
    };
    // The bot stops with the runtime, before its directory goes.
    drop(runtime);
    drop(dir);
    exit
}

fn say(s: &str) {
    println!("{s}");
}

fn step(title: &str) {
    println!("\n── {title}");
}

/// Discord's markup as a member reads it: timestamps as times, mentions as names, buttons.
fn render(content: &str) -> String {
    let mut out = String::new();
    let mut rest = content;
    while let Some(i) = rest.find("<t:") {
        out.push_str(&rest[..i]);
        let tail = &rest[i + 3..];
        let Some(end) = tail.find('>') else {
            out.push_str(&rest[i..]);
            rest = "";
            break;
        };
        let (secs, style) = tail[..end].split_once(':').unwrap_or((&tail[..end], "f"));
        let t = secs.parse::<u64>().unwrap_or(0);
        out.push_str(&if style == "R" {
            relative(t)
        } else {
            vncbot::link::utc_clock(UNIX_EPOCH + Duration::from_secs(t))
        });
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    out.replace(&format!("<@{ALICE}>"), "@alice")
        .replace(&format!("<@{BOB}>"), "@bob")
        .replace(&format!("<@&{ONCALL_ROLE}>"), "@on-call")
        .replace("**", "")
        .replace("\\(", "(")
        .replace("\\)", ")")
        .replace("\\_", "_")
}

fn relative(t: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match t.cmp(&now) {
        std::cmp::Ordering::Greater => format!("in {} s", t - now),
        _ => format!("{} s ago", now - t),
    }
}

fn buttons(body: &Value) -> String {
    let Some(rows) = body["components"].as_array() else {
        return String::new();
    };
    let labels: Vec<String> = rows
        .iter()
        .flat_map(|r| r["components"].as_array().cloned().unwrap_or_default())
        .map(|b| match b["url"].as_str() {
            Some(url) => format!(
                "[{} → {}…]",
                b["label"].as_str().unwrap_or("link"),
                url.chars().take(72).collect::<String>()
            ),
            None => format!("[{}]", b["label"].as_str().unwrap_or("?")),
        })
        .collect();
    labels.join(" ")
}

fn show(who: &str, c: &Call) {
    let content = render(&c.content());
    for (i, line) in content.lines().enumerate() {
        say(&format!("   {}{line}", if i == 0 { who } else { "   " }));
    }
    let b = buttons(c.message());
    if !b.is_empty() {
        say(&format!("      {b}"));
    }
}

/// `/vnc` by a member named `name`, with the demo's reason.
fn vnc(
    user: u64,
    name: &'static str,
    roles: Vec<u64>,
    instance: &'static str,
) -> Invocation<'static> {
    let options = vec![("instance", instance), ("reason", "INC-4711 web is down")];
    Invocation {
        name,
        ..fake_discord::vnc(user, roles, options)
    }
}

async fn tour(keep: bool, journal: std::path::PathBuf) -> Exit {
    let discord = FakeDiscord::start().await;
    let tencent = MockCvm::start().await;
    tencent.set_instances(
        "ap-guangzhou",
        [
            MockInstance::new("ins-web00001", "web-01", 5).tag("env", "prod"),
            MockInstance::new("ins-web00002", "web-02", 6).tag("env", "prod"),
            MockInstance::new("ins-stopped1", "db-01", 9).state("STOPPED"),
        ],
    );
    // Quoted and escaped as a TOML string, whatever the temporary path holds.
    let toml_path = format!("{:?}", journal.display().to_string());
    let text = format!(
        r#"
[discord]
guild_ids = [{GUILD}]
audit_channel_id = {AUDIT_CHANNEL}
{discord}

[tencent]
regions = ["ap-guangzhou"]
endpoint = "{endpoint}"

[[allow]]
roles = [{ONCALL_ROLE}]
instances = ["*"]
regions = ["*"]

[audit]
path = {journal}
"#,
        discord = discord.config_lines(),
        endpoint = tencent.endpoint(),
        journal = toml_path
    );
    let config = match Config::parse(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: the demo's own config is invalid (a bug): {e}");
            return Exit::Config;
        }
    };
    let creds = TencentCredentials {
        secret_id: SECRET_ID.into(),
        secret_key: SECRET_KEY.to_string().into(),
        session_token: None,
    };
    say("vncbot demo: the whole flow on loopback, against built-in stand-ins for Discord and");
    say("Tencent Cloud that check what the real services check (signatures, timestamps, fields).");
    say(&format!(
        "  Discord stand-in: {}   Tencent Cloud stand-in: {}\n  journal: {}",
        discord.rest,
        tencent.endpoint(),
        journal.display()
    ));
    tokio::spawn(async move {
        if let Err(e) = vncbot::app::run(config, None, TOKEN, creds).await {
            eprintln!("error: the bot stopped: {e}");
        }
    });
    discord.wait_ready().await;
    // The catalog's first listing runs in the background at start.
    for _ in 0..100 {
        let t = discord.autocomplete(ALICE, vec![ONCALL_ROLE], "web");
        if !discord.choices(&t).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    discord.set_roles(ALICE, vec![ONCALL_ROLE]);
    discord.set_roles(BOB, vec![]);

    step("1. Alice (on-call) types \"web\" in /vnc instance:  (autocomplete, from memory)");
    let t = discord.autocomplete(ALICE, vec![ONCALL_ROLE], "web");
    for (label, _) in discord.choices(&t).await {
        say(&format!("     {label}"));
    }

    step("2. Alice runs /vnc instance:web-01 reason:\"INC-4711 web is down\"");
    let t = discord.invoke(vnc(ALICE, "alice", vec![ONCALL_ROLE], "web-01"));
    show("only Alice sees: ", &discord.reply(&t).await);
    let Some(g) = discord.grant_dm(ALICE) else {
        eprintln!("error: no grant DM was sent");
        return Exit::Temporary;
    };
    if let Some(dm) = discord
        .calls()
        .into_iter()
        .find(|c| c.method == "POST" && c.path.ends_with(&format!("/{}/messages", g.channel)))
    {
        show("Alice's DM:      ", &dm);
    }
    say("   (nothing asked of Tencent yet: the link is made when Alice presses)");

    step("3. Alice presses Open console");
    let shown = discord.press_result(&discord.press_open(&g)).await;
    show("Alice's DM now:  ", &shown);

    step("4. 15 seconds later the dead link is scrubbed, and Open console is back");
    let scrubbed = discord
        .wait_for(Duration::from_secs(25), "the scrub", |c| {
            c.method == "PATCH" && c.path.ends_with(&format!("/messages/{}", g.message))
        })
        .await;
    show("Alice's DM now:  ", &scrubbed);

    step("5. Bob, without the on-call role, runs /vnc instance:ins-web00001");
    let t = discord.invoke(vnc(BOB, "bob", vec![], "ins-web00001"));
    show("only Bob sees:   ", &discord.reply(&t).await);

    step("6. Alice opens db-01, which is stopped: refused before Tencent is asked");
    let t = discord.invoke(vnc(ALICE, "alice", vec![ONCALL_ROLE], "db-01"));
    discord.reply(&t).await;
    if let Some(db) = discord.grant_dm(ALICE) {
        let answer = discord.press_result(&discord.press_open(&db)).await;
        show("only Alice sees: ", &answer);
    }
    say(&format!(
        "   Tencent's console action was called {} time(s) in all",
        tencent.seen().len()
    ));

    step("7. Alice presses Done on web-01");
    let done = discord.press_button(&g, "done");
    show("Alice's DM now:  ", &discord.press_result(&done).await);

    step("The audit channel (a line per event, never the link)");
    let path = format!("/api/v10/channels/{AUDIT_CHANNEL}/messages");
    // The channel is posted in the background: give the last lines a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for c in discord.calls().iter().filter(|c| c.path == path) {
        say(&format!(
            "   {}",
            render(c.body["content"].as_str().unwrap_or_default())
        ));
    }

    step("The audit journal (hash-chained, fsynced; never the link)");
    let records = std::fs::read_to_string(&journal).unwrap_or_default();
    for line in records.lines() {
        let r: Value = serde_json::from_str(line).unwrap_or_default();
        say(&format!(
            "   seq {:>2} {:<10} {:<8} {:<14} {}{}",
            r["seq"],
            r["event"].as_str().unwrap_or("?"),
            r["actor_name"].as_str().unwrap_or("?"),
            r["instance"].as_str().unwrap_or(""),
            r["code"].as_str().unwrap_or(""),
            r["refers_to"]
                .as_u64()
                .map(|s| format!(" (refers to {s})"))
                .unwrap_or_default(),
        ));
    }
    let leaked = tencent
        .issued()
        .iter()
        .any(|v| records.contains(v.as_str()));

    step("vncbot audit verify");
    let verdict = match vncbot::audit::verify_file(&journal) {
        Ok(Ok(s)) => {
            say(&format!(
                "   {}: intact, {} records, head seq {} sha256 {}",
                journal.display(),
                s.records,
                s.last_seq,
                s.last_hash
            ));
            Exit::Ok
        }
        Ok(Err(e)) => {
            say(&format!("   DAMAGED at {e}"));
            Exit::Refused
        }
        Err(e) => {
            say(&format!("   cannot read the journal: {e}"));
            Exit::Audit
        }
    };
    if leaked {
        say("   error: a console link is in the journal");
        return Exit::Refused;
    }
    if keep {
        say(&format!(
            "\nStill running (Ctrl-C to stop). Point things at the stand-ins:\n\
             \x20 vncbot url: put `endpoint = \"{}\"` under [tencent] and run with\n\
             \x20   TENCENTCLOUD_SECRET_ID={SECRET_ID} TENCENTCLOUD_SECRET_KEY={SECRET_KEY} (the stand-in's own)\n\
             \x20 curl -s http://{}/api/v10/gateway   (the Discord stand-in)\n\
             \x20 the journal: {}",
            tencent.endpoint(),
            discord.rest,
            journal.display()
        ));
        let _ = tokio::signal::ctrl_c().await;
    }
    say("\nThe tour is over.");
    verdict
}
