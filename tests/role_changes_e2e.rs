//! Who may, recorded: the bot as a process, through the real serenity client, against the fake
//! Discord's audit log. Roles the config names given, taken, changed and deleted are journaled
//! with who, whom and why, and get a channel line; other roles are not; the permissions of the
//! bot's commands too; what happened while the bot was down is backfilled at start, each entry
//! once, even when the live event races the backfill and across restarts; and a bot without
//! `VIEW_AUDIT_LOG` says so and runs on.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::fake_discord::{vnc, AuditEntry, Call, FakeDiscord, GUILD_MODERATION};
use support::{Fakes, GUILD, ONCALL_ROLE, WEB_ROLE};
use tokio::io::AsyncReadExt;
use tokio::process::Child;

const AUDIT_CHANNEL: u64 = 810000000000000002;
/// A role the config does not name.
const FUN_ROLE: u64 = 555000000000000077;
const ADMIN: u64 = 4001;
const MEMBER: u64 = 4002;

fn config(f: &Fakes) -> std::path::PathBuf {
    let text = f.config.replace(
        "[tencent]",
        &format!("audit_channel_id = {AUDIT_CHANNEL}\n\n[tencent]"),
    );
    f.write_config(&text)
}

fn spawn_bot(cfg: &Path) -> Child {
    support::bot_command(Path::new(env!("CARGO_BIN_EXE_vncbot")), cfg)
        .env("RUST_LOG", "vncbot=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGTERM, a clean exit, and what the bot logged.
async fn stop(mut bot: Child) -> String {
    let pid = bot.id().expect("still running") as libc::pid_t;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut log = String::new();
    let mut stderr = bot.stderr.take().unwrap();
    let read = async { stderr.read_to_string(&mut log).await };
    let (status, _) = tokio::time::timeout(Duration::from_secs(40), async {
        tokio::join!(bot.wait(), read)
    })
    .await
    .expect("the bot exits after SIGTERM");
    assert_eq!(status.unwrap().code(), Some(0), "{log}");
    log
}

/// Waits for the `n`th READY (the bot registers its commands at each).
async fn wait_ready(discord: &FakeDiscord, n: usize) {
    discord
        .wait_for_count(Duration::from_secs(30), "command registration", n, |c| {
            c.method == "PUT" && c.path.ends_with("/commands")
        })
        .await;
}

/// Waits for the `n`th audit log page read (each start reads action 25's pages, then 31, 32).
async fn wait_pages(discord: &FakeDiscord, n: usize) {
    discord
        .wait_for_count(Duration::from_secs(30), "audit log pages", n, |c| {
            c.method == "GET" && c.path.ends_with("/audit-logs")
        })
        .await;
}

fn is_line(c: &Call, text: &str) -> bool {
    c.method == "POST"
        && c.path == format!("/api/v10/channels/{AUDIT_CHANNEL}/messages")
        && c.body["content"].as_str().is_some_and(|s| s.contains(text))
}

/// The audit channel's line containing `text`.
async fn line(discord: &FakeDiscord, text: &str) -> String {
    discord
        .wait_for(Duration::from_secs(20), text, |c| is_line(c, text))
        .await
        .body["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn lines_with(discord: &FakeDiscord, text: &str) -> usize {
    discord.count(|c| is_line(c, text))
}

fn records(f: &Fakes) -> Vec<Value> {
    std::fs::read_to_string(f.journal())
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The journal's role records for one audit log entry.
fn recorded(f: &Fakes, entry: u64) -> Vec<Value> {
    records(f)
        .into_iter()
        .filter(|r| r["audit_log_entry"].as_str().and_then(|s| s.parse().ok()) == Some(entry))
        .collect()
}

#[tokio::test]
async fn role_changes_to_configured_roles_are_recorded_with_who_whom_and_why_and_others_are_not() {
    let f = Fakes::start("roles-live").await;
    let discord = &f.discord;
    let bot = spawn_bot(&config(&f));
    wait_ready(discord, 1).await;
    // The backfill at READY is done (three actions, nothing found): what follows arrives live.
    wait_pages(discord, 3).await;
    let intents = discord.identified_intents();
    assert!(
        intents
            .iter()
            .all(|i| i & GUILD_MODERATION != 0 && i & 1 != 0),
        "GUILDS and GUILD_MODERATION asked at IDENTIFY: {intents:?}"
    );

    // Given, on an allow role.
    let given = discord.audit(
        GUILD,
        &AuditEntry::role_given(ADMIN, MEMBER, ONCALL_ROLE, "oncall", Some("rota week 49")),
    );
    let l = line(discord, &format!("audit log entry {given}")).await;
    assert_eq!(
        l,
        format!("role change: <@{ADMIN}> gave <@{MEMBER}> the role <@&{ONCALL_ROLE}> (\"oncall\") (reason: rota week 49), audit log entry {given}")
    );
    let r = &recorded(&f, given)[0];
    assert_eq!(r["event"], "role_granted");
    assert_eq!(r["actor_id"], ADMIN.to_string());
    assert_eq!(r["actor_name"], format!("user{ADMIN}"));
    assert_eq!(r["target"], MEMBER.to_string());
    assert_eq!(r["role"], ONCALL_ROLE.to_string());
    assert_eq!(r["role_name"], "oncall");
    assert_eq!(r["reason"], "rota week 49");
    assert_eq!(r["guild"], GUILD.to_string());
    assert_eq!(r["via"], "gateway");

    // A role the config does not name: nothing. Then taken, from the same member.
    let fun = discord.audit(
        GUILD,
        &AuditEntry::role_given(ADMIN, MEMBER, FUN_ROLE, "fun", None),
    );
    let taken = discord.audit(
        GUILD,
        &AuditEntry::role_taken(ADMIN, MEMBER, ONCALL_ROLE, "oncall", Some("shift over")),
    );
    let l = line(discord, &format!("audit log entry {taken}")).await;
    assert!(
        l.contains(&format!("<@{ADMIN}> took the role <@&{ONCALL_ROLE}> (\"oncall\") from <@{MEMBER}> (reason: shift over)")),
        "{l}"
    );
    assert_eq!(recorded(&f, taken)[0]["event"], "role_revoked");

    // Changed, then deleted (the web role of the second rule).
    let updated = discord.audit(
        GUILD,
        &AuditEntry::role_updated(ADMIN, WEB_ROLE, "web", "web-admins"),
    );
    let l = line(discord, &format!("audit log entry {updated}")).await;
    assert!(
        l.contains(&format!(
            "changed the role <@&{WEB_ROLE}> (\"web-admins\"): name, permissions"
        )),
        "{l}"
    );
    let r = &recorded(&f, updated)[0];
    assert_eq!(r["event"], "role_updated");
    assert_eq!(r["changed"], serde_json::json!(["name", "permissions"]));
    let deleted = discord.audit(
        GUILD,
        &AuditEntry::role_deleted(ADMIN, WEB_ROLE, "web-admins"),
    );
    let l = line(discord, &format!("audit log entry {deleted}")).await;
    assert!(
        l.contains(&format!("deleted the role <@&{WEB_ROLE}> (\"web-admins\")")),
        "{l}"
    );
    assert_eq!(recorded(&f, deleted)[0]["event"], "role_deleted");
    // An unrelated role's update or delete: nothing either.
    let fun_deleted = discord.audit(GUILD, &AuditEntry::role_deleted(ADMIN, FUN_ROLE, "fun"));

    // The permissions of the bot's command changed.
    let command = 910000000000000001;
    discord.update_command_permissions(
        GUILD,
        command,
        &[
            (GUILD, 1, false),
            (ONCALL_ROLE, 1, true),
            (MEMBER, 2, false),
        ],
    );
    let l = line(discord, "command permissions:").await;
    assert!(
        l.contains(&format!("command {command} changed in server {GUILD}: @\u{200b}everyone denied, <@&{ONCALL_ROLE}> allowed, <@{MEMBER}> denied")),
        "{l}"
    );
    let r = records(&f)
        .into_iter()
        .find(|r| r["event"] == "command_permissions_changed")
        .unwrap();
    assert_eq!(r["command"], command.to_string());
    assert_eq!(
        r["permissions"],
        serde_json::json!([
            "role:@everyone=deny",
            format!("role:{ONCALL_ROLE}=allow"),
            format!("user:{MEMBER}=deny")
        ])
    );

    stop(bot).await;
    assert!(recorded(&f, fun).is_empty() && recorded(&f, fun_deleted).is_empty());
    assert_eq!(lines_with(discord, "\"fun\""), 0);
    for entry in [given, taken, updated, deleted] {
        assert_eq!(recorded(&f, entry).len(), 1, "entry {entry} recorded once");
    }

    // The auditor's query finds them by event.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vncbot"))
        .args([
            "audit",
            "query",
            "--event",
            "role_granted",
            "--event",
            "role_revoked",
        ])
        .arg(f.journal())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let found: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        found
            .iter()
            .map(|r| r["event"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["role_granted", "role_revoked"]
    );
    assert_eq!(found[0]["audit_log_entry"], given.to_string());
}

#[tokio::test]
async fn changes_made_while_the_bot_was_down_are_backfilled_each_once_across_restarts() {
    let f = Fakes::start("roles-backfill").await;
    let discord = &f.discord;
    let cfg = config(&f);
    let bot = spawn_bot(&cfg);
    wait_ready(discord, 1).await;
    let live = discord.audit(
        GUILD,
        &AuditEntry::role_given(ADMIN, MEMBER, ONCALL_ROLE, "oncall", Some("live")),
    );
    line(discord, &format!("audit log entry {live}")).await;
    stop(bot).await;

    // While the bot is down: a grant, another role's change, a revoke, a delete.
    let down = discord.add_audit_entry(
        GUILD,
        &AuditEntry::role_given(ADMIN, 4003, ONCALL_ROLE, "oncall", Some("while down")),
    );
    let fun = discord.add_audit_entry(
        GUILD,
        &AuditEntry::role_given(ADMIN, 4003, FUN_ROLE, "fun", None),
    );
    // One serenity cannot read (no user): skipped, the rest of its page still recorded.
    let by_discord = discord.add_audit_entry_by_discord(
        GUILD,
        &AuditEntry::role_given(0, 4005, ONCALL_ROLE, "oncall", None),
    );
    let revoked = discord.add_audit_entry(
        GUILD,
        &AuditEntry::role_taken(ADMIN, MEMBER, ONCALL_ROLE, "oncall", None),
    );
    let deleted = discord.add_audit_entry(GUILD, &AuditEntry::role_deleted(ADMIN, WEB_ROLE, "web"));

    let bot = spawn_bot(&cfg);
    wait_ready(discord, 2).await;
    // The revoke also arrives live, racing the backfill.
    discord.dispatch_audit_entry(revoked);
    let l = line(discord, &format!("audit log entry {down}")).await;
    assert!(
        l.contains(&format!("<@{ADMIN}> gave <@4003> the role <@&{ONCALL_ROLE}> (\"oncall\") (reason: while down), read from the audit log at start (made <t:")),
        "{l}"
    );
    line(discord, &format!("audit log entry {revoked}")).await;
    line(discord, &format!("audit log entry {deleted}")).await;
    let r = &recorded(&f, down)[0];
    assert_eq!(r["via"], "backfill");
    assert_eq!(
        r["actor_name"],
        format!("user{ADMIN}"),
        "named from the page's users"
    );
    // The backfill asked for each action after the newest entry of it recorded.
    wait_pages(discord, 6).await;
    let asked = discord.audit_log_queries();
    assert_eq!(
        asked[3..6],
        [
            format!("action_type=25&after={live}&limit=100"),
            "action_type=31&after=0&limit=100".to_owned(),
            "action_type=32&after=0&limit=100".to_owned(),
        ],
        "{asked:?}"
    );

    // A third start: nothing new in the log, and the old entries arrive live again.
    stop(bot).await;
    let bot = spawn_bot(&cfg);
    wait_ready(discord, 3).await;
    discord.dispatch_audit_entry(live);
    discord.dispatch_audit_entry(down);
    let sentinel = discord.audit(
        GUILD,
        &AuditEntry::role_given(ADMIN, 4004, ONCALL_ROLE, "oncall", None),
    );
    line(discord, &format!("audit log entry {sentinel}")).await;
    wait_pages(discord, 9).await;
    let asked = discord.audit_log_queries();
    assert_eq!(
        asked[6..9],
        [
            format!("action_type=25&after={revoked}&limit=100"),
            "action_type=31&after=0&limit=100".to_owned(),
            format!("action_type=32&after={deleted}&limit=100"),
        ],
        "{asked:?}"
    );
    stop(bot).await;

    for entry in [live, down, revoked, deleted, sentinel] {
        assert_eq!(recorded(&f, entry).len(), 1, "entry {entry} recorded once");
        assert_eq!(
            lines_with(discord, &format!("audit log entry {entry}")),
            1,
            "entry {entry} posted once"
        );
    }
    assert!(recorded(&f, fun).is_empty());
    assert!(recorded(&f, by_discord).is_empty());
}

#[tokio::test]
async fn backfill_asks_after_the_newest_entry_recorded_and_pages() {
    let f = Fakes::start("roles-pages").await;
    let discord = &f.discord;
    let cfg = config(&f);
    // More than a page of changes before the first start (other roles' mostly).
    let mut ours = Vec::new();
    for i in 0..230u64 {
        let role = if i % 50 == 7 { ONCALL_ROLE } else { FUN_ROLE };
        let id = discord.add_audit_entry(
            GUILD,
            &AuditEntry::role_given(ADMIN, 5000 + i, role, "r", None),
        );
        if role == ONCALL_ROLE {
            ours.push(id);
        }
    }
    let bot = spawn_bot(&cfg);
    wait_ready(discord, 1).await;
    let last = *ours.last().unwrap();
    line(discord, &format!("audit log entry {last}")).await;
    // Three pages of action 25 (100, 100, 30 entries), one each of 31 and 32.
    wait_pages(discord, 5).await;
    stop(bot).await;
    let asked = discord.audit_log_queries();
    assert_eq!(asked.len(), 5, "{asked:?}");
    assert_eq!(asked[0], "action_type=25&after=0&limit=100");
    let after: Vec<u64> = asked[1..3]
        .iter()
        .map(|q| {
            q.split("after=")
                .nth(1)
                .unwrap()
                .split('&')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(
        after[0] > 0 && after[1] > after[0],
        "each page after the last: {asked:?}"
    );
    for entry in &ours {
        assert_eq!(recorded(&f, *entry).len(), 1);
    }
    assert_eq!(
        records(&f)
            .iter()
            .filter(|r| r["event"] == "role_granted")
            .count(),
        ours.len()
    );
}

#[tokio::test]
async fn without_view_audit_log_the_bot_warns_and_runs() {
    let f = Fakes::start("roles-403").await;
    let discord = &f.discord;
    discord.forbid_audit_log();
    let bot = spawn_bot(&config(&f));
    wait_ready(discord, 1).await;
    let warning = line(discord, "WARNING: cannot read the audit log").await;
    assert!(
        warning.contains("View Audit Log permission \\(VIEW\\_AUDIT\\_LOG\\)"),
        "{warning}"
    );
    // It runs on: a member still gets access.
    let g = discord
        .grant(vnc(
            MEMBER,
            vec![ONCALL_ROLE],
            vec![("instance", "ins-running1")],
        ))
        .await;
    assert_eq!(g.user, MEMBER);
    let log = stop(bot).await;
    assert!(
        log.contains("lacks the View Audit Log permission (VIEW_AUDIT_LOG)"),
        "{log}"
    );
    assert!(!records(&f).iter().any(|r| r["event"] == "role_granted"));
}
