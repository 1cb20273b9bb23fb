//! Break-glass through the real serenity client against the fake Discord: `/vnc …
//! break_glass:True` by a member with a break-glass role grants at once and is posted loudly in
//! the approvals channel; approvers press Acknowledge or Flag in the guild channel; an
//! unanswered use goes overdue on the moved clock and is posted again; the refusals grant
//! nothing; and an open acknowledgement survives a restart.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::fake_discord::{vnc, Call, TOKEN};
use support::mock_cvm;
use support::{Fakes, ONCALL_ROLE};
use vncbot::config::{Config, TencentCredentials};

const PROD_ROLE: u64 = 555000000000000003;
const GLASS_ROLE: u64 = 555000000000000008;
const APPROVER: u64 = 555000000000000009;
const ADMIN: u64 = 555000000000000007;
const APPROVALS: u64 = 810000000000000003;
const REASON: &str = "INC-42 the primary database is down";
const MEMBER: u64 = 7001;

/// The fakes' config with an approval rule for `PROD_ROLE` that offers break-glass to
/// `GLASS_ROLE` (5 minutes, `per_day` a day, acknowledged within an hour), and the admin
/// endpoint on `admin`.
fn config(bot: &Fakes, per_day: u32, admin: &str) -> Config {
    let text = bot.config.replace(
        "[limits]",
        &format!(
            "[[allow]]\nroles = [{PROD_ROLE}]\ninstances = [\"*\"]\nregions = [\"*\"]\napproval = \"required\"\napprover_roles = [{APPROVER}]\nbreak_glass_roles = [{GLASS_ROLE}]\n\n[approvals]\nchannel_id = {APPROVALS}\nbreak_glass_minutes = 5\nbreak_glass_per_day = {per_day}\nack_hours = 1\nadmin_roles = [{ADMIN}]\n\n[admin]\nlisten = \"{admin}\"\n\n[limits]"
        ),
    );
    Config::parse(&text).unwrap()
}

fn creds() -> TencentCredentials {
    TencentCredentials {
        secret_id: mock_cvm::SECRET_ID.into(),
        secret_key: mock_cvm::SECRET_KEY.to_string().into(),
        session_token: None,
    }
}

/// A free loopback address for the admin endpoint.
fn admin_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// The bot in this test's runtime; returns the fakes and the admin address.
async fn start_bot(per_day: u32) -> (Fakes, String) {
    let bot = Fakes::start("break-glass").await;
    let admin = admin_addr();
    let config = config(&bot, per_day, &admin);
    let clock = bot.clock.clone();
    tokio::spawn(async move {
        if let Err(e) = vncbot::app::run_with(config, None, TOKEN, creds(), clock).await {
            panic!("the bot stopped: {e}");
        }
    });
    tokio::time::timeout(Duration::from_secs(20), bot.discord.wait_ready())
        .await
        .expect("the bot connects");
    for u in [MEMBER, 7002, 7003, 7004] {
        bot.discord.set_roles(u, roles(u));
    }
    (bot, admin)
}

/// The roles each test member holds (also what Discord answers when asked afresh).
fn roles(user: u64) -> Vec<u64> {
    match user {
        MEMBER => vec![PROD_ROLE, GLASS_ROLE, APPROVER],
        7002 => vec![PROD_ROLE],
        _ => vec![APPROVER],
    }
}

fn records(bot: &Fakes) -> Vec<Value> {
    std::fs::read_to_string(bot.journal())
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn posts(bot: &Fakes) -> Vec<Call> {
    bot.discord
        .calls()
        .into_iter()
        .filter(|c| {
            c.method == "POST" && c.path == format!("/api/v10/channels/{APPROVALS}/messages")
        })
        .collect()
}

/// `/vnc … break_glass:True` as `user` with `roles`; returns the reply's text.
async fn break_glass(bot: &Fakes, user: u64, roles: Vec<u64>, reason: &str) -> String {
    let token = bot.discord.invoke(vnc(
        user,
        roles,
        vec![
            ("instance", "ins-running1"),
            ("reason", reason),
            ("break_glass", "true"),
        ],
    ));
    bot.discord.reply(&token).await.content()
}

/// A use that must be granted: its id and its post (message id) in the approvals channel.
async fn use_it(bot: &Fakes) -> (u64, u64, Call) {
    let before = posts(bot).len();
    let reply = break_glass(bot, MEMBER, roles(MEMBER), REASON).await;
    assert!(
        reply.contains("**Break-glass**") && reply.contains("in your DMs"),
        "{reply}"
    );
    let post = bot
        .discord
        .wait_for(Duration::from_secs(10), "the break-glass post", |c| {
            c.method == "POST"
                && c.path == format!("/api/v10/channels/{APPROVALS}/messages")
                && c.content().contains("BREAK-GLASS")
        })
        .await;
    let post = posts(bot).get(before).cloned().unwrap_or(post);
    let custom = post.body["components"][0]["components"][0]["custom_id"]
        .as_str()
        .unwrap();
    let id: u64 = custom.strip_prefix("vnc:ack:").unwrap().parse().unwrap();
    assert_eq!(
        post.body["components"][0]["components"][1]["custom_id"],
        format!("vnc:flag:{id}")
    );
    let message = post.reply["id"].as_str().unwrap().parse().unwrap();
    (id, message, post)
}

fn press(bot: &Fakes, user: u64, message: u64, custom_id: &str) -> String {
    bot.discord
        .press_in_guild(user, roles(user), APPROVALS, message, custom_id)
}

async fn followup(bot: &Fakes, token: &str) -> String {
    let c = bot
        .discord
        .wait_for(Duration::from_secs(15), "the press's follow-up", |c| {
            c.method == "POST" && c.path.contains(token) && !c.path.ends_with("/callback")
        })
        .await;
    assert_eq!(c.body["flags"].as_u64(), Some(64), "ephemeral: {}", c.body);
    c.body["content"].as_str().unwrap_or_default().to_owned()
}

async fn post_edit(bot: &Fakes, message: u64, containing: &str) -> Call {
    bot.discord
        .wait_for(Duration::from_secs(10), containing, |c| {
            c.method == "PATCH"
                && c.path == format!("/api/v10/channels/{APPROVALS}/messages/{message}")
                && c.body["content"]
                    .as_str()
                    .is_some_and(|t| t.contains(containing))
        })
        .await
}

async fn gauge(admin: &str) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("vncbot_break_glass_unacknowledged")?
                .strip_prefix(' ')
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no vncbot_break_glass_unacknowledged in\n{text}"))
}

#[tokio::test]
async fn break_glass_grants_at_once_is_posted_loudly_and_an_approver_acknowledges_it() {
    let (bot, admin) = start_bot(2).await;
    assert_eq!(gauge(&admin).await, 0.0, "exported at 0 from the start");
    let (id, message, post) = use_it(&bot).await;
    let text = post.content();
    for want in [
        "BREAK-GLASS",
        "<@7001>",
        &format!("<@&{APPROVER}>"),
        "ins-running1",
        "ap-guangzhou",
        "without approval",
        "for 5 min",
        REASON,
        &format!("Break-glass use {id}"),
    ] {
        assert!(text.contains(want), "missing {want:?} in {text}");
    }
    // Only the approver role is pinged.
    assert_eq!(
        post.body["allowed_mentions"]["roles"],
        serde_json::json!([APPROVER.to_string()])
    );
    assert_eq!(
        post.body["allowed_mentions"]["users"],
        serde_json::json!([])
    );
    // The member's usual Open console DM, marked as break-glass.
    let dm = bot
        .discord
        .wait_for(Duration::from_secs(10), "the grant's DM", |c| {
            c.method == "POST"
                && c.body["components"][0]["components"][0]["custom_id"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("vnc:open:"))
        })
        .await;
    assert!(
        dm.content().starts_with("**Break-glass**"),
        "{}",
        dm.content()
    );
    assert_eq!(gauge(&admin).await, 1.0);

    // Recorded before anything was shown: the use with the rule's roles and the reason, and a
    // grant that refers to it, for 5 minutes.
    let recs = records(&bot);
    let used = recs.iter().find(|r| r["event"] == "break_glass").unwrap();
    assert_eq!(used["seq"], id);
    assert_eq!(used["actor_id"], "7001");
    assert_eq!(used["reason"], REASON);
    assert_eq!(
        used["rule_roles"],
        serde_json::json!([PROD_ROLE.to_string()])
    );
    assert_eq!(used["count"], 1);
    let granted = recs.iter().find(|r| r["event"] == "granted").unwrap();
    assert_eq!(granted["refers_to"], id);
    assert!(!recs.iter().any(|r| r["event"] == "approval_requested"));

    // Bad presses: the member's own (though they hold the approver role), one without the
    // approver role, a forged id and a foreign one (the grant's seq names no use).
    let t = press(&bot, MEMBER, message, &format!("vnc:ack:{id}"));
    assert!(followup(&bot, &t)
        .await
        .contains("your own break-glass use"));
    let t = press(&bot, 7002, message, &format!("vnc:flag:{id}"));
    assert!(followup(&bot, &t).await.contains("approver role"));
    let t = press(&bot, 7003, message, "vnc:ack:12x");
    assert!(followup(&bot, &t).await.contains("not valid"));
    let grant = granted["seq"].as_u64().unwrap();
    let t = press(&bot, 7003, message, &format!("vnc:ack:{grant}"));
    assert!(followup(&bot, &t).await.contains("not valid"));
    assert_eq!(gauge(&admin).await, 1.0, "no state change");

    // An approver acknowledges; a second press is told who did.
    press(&bot, 7003, message, &format!("vnc:ack:{id}"));
    let edit = post_edit(&bot, message, "**Acknowledged** by <@7003>").await;
    assert_eq!(edit.body["components"], serde_json::json!([]));
    let t = press(&bot, 7004, message, &format!("vnc:flag:{id}"));
    assert!(followup(&bot, &t)
        .await
        .contains("already acknowledged by <@7003>"));
    assert_eq!(gauge(&admin).await, 0.0);
    let recs = records(&bot);
    let acks: Vec<&Value> = recs
        .iter()
        .filter(|r| r["event"] == "acknowledged")
        .collect();
    assert_eq!(acks.len(), 1);
    assert_eq!(
        (&acks[0]["actor_id"], &acks[0]["refers_to"]),
        (&"7003".into(), &id.into())
    );
    assert!(!recs.iter().any(|r| r["event"] == "flagged"));
    for code in [
        "own_break_glass",
        "not_approver",
        "bad_button",
        "already_answered",
    ] {
        assert!(recs.iter().any(|r| r["code"] == code), "no {code} record");
    }

    // And the member opens the console.
    let g = bot.discord.grant_dm(MEMBER).expect("the grant's DM");
    let t = bot.discord.press_open(&g);
    let shown = bot.discord.press_result(&t).await;
    assert!(shown.path.ends_with("@original"), "{shown:?}");
    assert_eq!(bot.cvm.seen().len(), 1);
}

#[tokio::test]
async fn a_flag_and_an_overdue_use_posted_again_with_the_gauge() {
    let (bot, admin) = start_bot(2).await;
    // Flagged by an approver.
    let (flagged, message, _) = use_it(&bot).await;
    press(&bot, 7003, message, &format!("vnc:flag:{flagged}"));
    post_edit(&bot, message, "**Flagged** by <@7003>").await;
    let t = press(&bot, 7004, message, &format!("vnc:ack:{flagged}"));
    assert!(followup(&bot, &t)
        .await
        .contains("already flagged by <@7003>"));

    // Nobody answers the next one: an hour on, `ack_overdue` and a louder post, once.
    let (late, message, _) = use_it(&bot).await;
    assert_eq!(gauge(&admin).await, 1.0);
    let before = posts(&bot).len();
    bot.clock.advance(Duration::from_secs(3600 + 1));
    let again = bot
        .discord
        .wait_for(Duration::from_secs(10), "the overdue post", |c| {
            c.method == "POST"
                && c.path == format!("/api/v10/channels/{APPROVALS}/messages")
                && c.content().contains("NOT ACKNOWLEDGED IN TIME")
        })
        .await;
    assert!(
        again.content().contains(&format!("Break-glass use {late}")),
        "{}",
        again.content()
    );
    // The admins are pinged too now.
    assert_eq!(
        again.body["allowed_mentions"]["roles"],
        serde_json::json!([APPROVER.to_string(), ADMIN.to_string()])
    );
    post_edit(&bot, message, "Acknowledgement overdue").await;
    assert_eq!(gauge(&admin).await, 1.0, "overdue is still unacknowledged");
    // Another hour passes: no second overdue (checked once the answer below is shown).
    bot.clock.advance(Duration::from_secs(3600));
    let recs = records(&bot);
    let overdue: Vec<&Value> = recs
        .iter()
        .filter(|r| r["event"] == "ack_overdue")
        .collect();
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0]["refers_to"], late);

    // Answered late, on the new post: both posts show it.
    let repost: u64 = again.reply["id"].as_str().unwrap().parse().unwrap();
    press(&bot, 7003, repost, &format!("vnc:ack:{late}"));
    post_edit(&bot, message, "**Acknowledged** by <@7003>").await;
    post_edit(&bot, repost, "**Acknowledged** by <@7003>").await;
    assert_eq!(gauge(&admin).await, 0.0);
    assert_eq!(posts(&bot).len(), before + 1, "posted again once");
    let recs = records(&bot);
    assert_eq!(
        recs.iter().filter(|r| r["event"] == "ack_overdue").count(),
        1
    );
    let flags: Vec<&Value> = recs.iter().filter(|r| r["event"] == "flagged").collect();
    assert_eq!(flags.len(), 1);
    assert_eq!(
        (&flags[0]["actor_id"], &flags[0]["refers_to"]),
        (&"7003".into(), &flagged.into())
    );

    // `vncbot audit report` shows each on its grant's row, with how it was answered, over the
    // journal the bot wrote (its chain verified).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vncbot"))
        .args(["audit", "report", "--format", "json"])
        .arg(bot.journal())
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let allowed: Vec<&Value> = report["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| &g["allowed"])
        .collect();
    assert_eq!(allowed.len(), 2, "{report:#}");
    assert_eq!(allowed[0]["break_glass"]["use"], flagged);
    assert_eq!(allowed[0]["flagged_by"]["id"], "7003");
    assert_eq!(allowed[1]["break_glass"]["use"], late);
    assert_eq!(allowed[1]["acknowledged_by"]["id"], "7003");
    assert_eq!(allowed[1]["ack_overdue"], true);
    assert_eq!(report["totals"]["break_glass"], 2);
    assert_eq!(report["totals"]["break_glass_flagged"], 1);
    assert_eq!(report["totals"]["break_glass_unacknowledged"], 0);
}

#[tokio::test]
async fn each_refusal_is_answered_recorded_and_grants_nothing() {
    let (bot, admin) = start_bot(1).await;
    // Without a break-glass role.
    let said = break_glass(&bot, 7002, vec![PROD_ROLE], REASON).await;
    assert!(
        said.contains("only for members with one of these roles")
            && said.contains(&format!("<@&{GLASS_ROLE}>")),
        "{said}"
    );
    // A reason of 19 characters once trimmed.
    let short = format!("   {}   ", "x".repeat(19));
    let said = break_glass(&bot, MEMBER, roles(MEMBER), &short).await;
    assert!(said.contains("at least 20 characters"), "{said}");
    // A rule that offers no break-glass (the on-call rule).
    let said = break_glass(&bot, 7005, vec![ONCALL_ROLE], REASON).await;
    assert!(said.contains("not offered"), "{said}");
    assert!(!bot
        .discord
        .calls()
        .iter()
        .any(|c| c.content().contains("BREAK-GLASS")));
    assert_eq!(gauge(&admin).await, 0.0);
    // Over the daily cap (1 here): the first is granted, the second refused.
    use_it(&bot).await;
    let said = break_glass(&bot, MEMBER, roles(MEMBER), REASON).await;
    assert!(said.contains("1 time(s) in the last 24 hours"), "{said}");

    let recs = records(&bot);
    for (event, code) in [
        ("denied", "break_glass_not_allowed"),
        ("invalid", "break_glass_reason_short"),
        ("invalid", "break_glass_not_offered"),
        ("limited", "break_glass_over_cap"),
    ] {
        assert_eq!(
            recs.iter()
                .filter(|r| r["event"] == event && r["code"] == code)
                .count(),
            1,
            "{event} {code} in {recs:#?}"
        );
    }
    assert_eq!(recs.iter().filter(|r| r["event"] == "granted").count(), 1);
    assert_eq!(
        recs.iter().filter(|r| r["event"] == "break_glass").count(),
        1
    );
    assert_eq!(posts(&bot).len(), 1);
}

/// Runs the bot on a runtime of its own, so that dropping the runtime stops it as a crash would:
/// every task gone at once, nothing recorded on the way out.
fn start_in_own_runtime(config: Config, clock: vncbot::clock::Clock) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.spawn(async move {
        let _ = vncbot::app::run_with(config, None, TOKEN, creds(), clock).await;
    });
    rt
}

async fn registered(bot: &Fakes, times: usize) {
    bot.discord
        .wait_for(Duration::from_secs(20), "command registration", |_| {
            bot.discord
                .count(|c| c.method == "PUT" && c.path.contains("/commands"))
                >= times
        })
        .await;
}

#[tokio::test]
async fn an_open_acknowledgement_survives_a_restart_and_goes_overdue_at_start() {
    let bot = Fakes::start("break-glass-restart").await;
    for u in [MEMBER, 7003] {
        bot.discord.set_roles(u, roles(u));
    }
    let first = start_in_own_runtime(config(&bot, 2, &admin_addr()), bot.clock.clone());
    registered(&bot, 1).await;
    let (id, message, _) = use_it(&bot).await;
    // The bot dies (every task dropped before the clock moves, so its own timer cannot fire);
    // while it is down the hour for an acknowledgement runs out.
    tokio::task::spawn_blocking(move || first.shutdown_timeout(Duration::from_secs(10)))
        .await
        .unwrap();
    bot.clock.advance(Duration::from_secs(3600 + 1));
    let admin = admin_addr();
    let second = start_in_own_runtime(config(&bot, 2, &admin), bot.clock.clone());
    registered(&bot, 2).await;
    // Recorded at start, and posted again once the gateway is up.
    let again = bot
        .discord
        .wait_for(Duration::from_secs(10), "the overdue post", |c| {
            c.method == "POST"
                && c.path == format!("/api/v10/channels/{APPROVALS}/messages")
                && c.content().contains("NOT ACKNOWLEDGED IN TIME")
        })
        .await;
    assert!(again.content().contains(&format!("Break-glass use {id}")));
    assert_eq!(gauge(&admin).await, 1.0);
    // The first post's buttons still work after the restart.
    press(&bot, 7003, message, &format!("vnc:ack:{id}"));
    post_edit(&bot, message, "**Acknowledged** by <@7003>").await;
    assert_eq!(gauge(&admin).await, 0.0);
    let recs = records(&bot);
    assert_eq!(
        recs.iter().filter(|r| r["event"] == "ack_overdue").count(),
        1
    );
    assert_eq!(
        recs.iter().filter(|r| r["event"] == "acknowledged").count(),
        1
    );
    second.shutdown_background();
}
