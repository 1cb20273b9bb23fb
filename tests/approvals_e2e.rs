//! Approvals through the real serenity client against the fake Discord: a request posted for
//! approvers, votes pressed in the guild channel by members with roles, the decision, and the
//! requester's Open console.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::fake_discord::{vnc, Call, TOKEN};
use support::mock_cvm;
use support::Fakes;
use vncbot::config::{Config, TencentCredentials};

const PROD_ROLE: u64 = 555000000000000003;
const APPROVER: u64 = 555000000000000009;
const APPROVALS: u64 = 810000000000000003;

/// The fakes' config with a rule for `PROD_ROLE` that needs `quorum` approvals.
async fn start_bot(quorum: u32, ttl_minutes: u32) -> Fakes {
    let bot = Fakes::start("approvals").await;
    let text = bot.config.replace(
        "[limits]",
        &format!(
            "[[allow]]\nroles = [{PROD_ROLE}]\ninstances = [\"*\"]\nregions = [\"*\"]\napproval = \"required\"\napprover_roles = [{APPROVER}]\napprovals_required = {quorum}\nrequest_ttl_minutes = {ttl_minutes}\nwarning = \"production database\"\n\n[approvals]\nchannel_id = {APPROVALS}\n\n[limits]"
        ),
    );
    let config = Config::parse(&text).unwrap();
    let creds = TencentCredentials {
        secret_id: mock_cvm::SECRET_ID.into(),
        secret_key: mock_cvm::SECRET_KEY.to_string().into(),
        session_token: None,
    };
    let clock = bot.clock.clone();
    tokio::spawn(async move {
        if let Err(e) = vncbot::app::run_with(config, None, TOKEN, creds, clock).await {
            panic!("the bot stopped: {e}");
        }
    });
    tokio::time::timeout(Duration::from_secs(20), bot.discord.wait_ready())
        .await
        .expect("the bot connects");
    bot
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

/// Asks for access as `user`; returns the request's id and its post in the approvals channel.
async fn ask(bot: &Fakes, user: u64) -> (u64, u64) {
    let before = posts(bot).len();
    let token = bot.discord.invoke(vnc(
        user,
        vec![PROD_ROLE],
        vec![
            ("instance", "ins-running1"),
            ("reason", "INC-42 the database is down"),
        ],
    ));
    let reply = bot.discord.reply(&token).await;
    assert!(
        reply
            .content()
            .contains("you will get a DM when it is decided"),
        "{reply:?}"
    );
    let post = posts(bot).get(before).cloned().expect("the request's post");
    let custom = post.body["components"][0]["components"][0]["custom_id"]
        .as_str()
        .unwrap();
    let id: u64 = custom
        .strip_prefix("vnc:approve:")
        .unwrap()
        .parse()
        .unwrap();
    (id, post.reply["id"].as_str().unwrap().parse().unwrap())
}

/// The DM with the request's Cancel button.
async fn cancel_dm(bot: &Fakes, request: u64) -> Call {
    bot.discord
        .wait_for(Duration::from_secs(10), "the Cancel DM", |c| {
            c.method == "POST"
                && c.body["components"][0]["components"][0]["custom_id"]
                    == format!("vnc:cancel:{request}")
        })
        .await
}

async fn vote(bot: &Fakes, user: u64, request: (u64, u64), choice: &str) -> String {
    let roles = bot_roles(user);
    bot.discord.press_in_guild(
        user,
        roles,
        APPROVALS,
        request.1,
        &format!("vnc:{choice}:{}", request.0),
    )
}

/// The roles each test member holds (also what Discord answers when asked afresh).
fn bot_roles(user: u64) -> Vec<u64> {
    match user {
        7002 => vec![support::ONCALL_ROLE],
        7001 => vec![PROD_ROLE, APPROVER],
        _ => vec![APPROVER],
    }
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

#[tokio::test]
async fn a_quorum_of_two_approves_once_and_the_requester_opens_the_console() {
    let bot = start_bot(2, 30).await;
    for u in [7001, 7002, 7003, 7004, 7005] {
        bot.discord.set_roles(u, bot_roles(u));
    }
    let request = ask(&bot, 7001).await;
    let post = bot
        .discord
        .calls()
        .into_iter()
        .find(|c| c.method == "POST" && c.path.ends_with(&format!("{APPROVALS}/messages")))
        .unwrap();
    let text = post.content();
    for want in [
        "<@7001>",
        &format!("<@&{APPROVER}>"),
        "ins-running1",
        "ap-guangzhou",
        "INC-42 the database is down",
        &format!("Request {}", request.0),
        "expires <t:",
        "0 of 2 approvals",
        "production database",
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
    // The requester got a Cancel button by DM.
    cancel_dm(&bot, request.0).await;

    // Bad votes: the requester's own, one without the approver role.
    let t = vote(&bot, 7001, request, "approve").await;
    assert!(followup(&bot, &t).await.contains("your own request"));
    let t = vote(&bot, 7002, request, "approve").await;
    assert!(followup(&bot, &t).await.contains("approver role"));
    // A forged custom_id.
    let t = bot.discord.press_in_guild(
        7003,
        vec![APPROVER],
        APPROVALS,
        request.1,
        "vnc:approve:12x",
    );
    assert!(followup(&bot, &t).await.contains("not valid"));

    let t = vote(&bot, 7003, request, "approve").await;
    post_edit(&bot, request.1, "1 of 2 approvals (<@7003>)").await;
    let again = vote(&bot, 7003, request, "approve").await;
    assert!(followup(&bot, &again).await.contains("already voted"));
    let _ = t;

    // Two approvers press at once: exactly one decision, and the late one is told.
    let a = vote(&bot, 7004, request, "approve").await;
    let b = vote(&bot, 7005, request, "approve").await;
    let dm = bot
        .discord
        .wait_for(Duration::from_secs(10), "the approved grant's DM", |c| {
            c.method == "POST"
                && c.body["components"][0]["components"][0]["custom_id"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("vnc:open:"))
        })
        .await;
    let recs = records(&bot);
    let approved: Vec<&Value> = recs.iter().filter(|r| r["event"] == "approved").collect();
    assert_eq!(approved.len(), 1, "{recs:?}");
    let by = approved[0]["code"].as_str().unwrap().to_owned();
    let (winner, late) = if by == "7003,7004" {
        (7004, b)
    } else {
        assert_eq!(by, "7003,7005");
        (7005, a)
    };
    let told = followup(&bot, &late).await;
    assert!(told.contains("already approved"), "{told}");
    // Told who decided: the two approvers whose votes made the quorum.
    assert!(told.contains(&format!("by <@7003>, <@{winner}>")), "{told}");
    assert!(
        dm.content()
            .contains(&format!("Approved by <@7003>, <@{winner}>")),
        "{}",
        dm.content()
    );
    post_edit(&bot, request.1, "**Approved**").await;

    // The journal says who approved, and the grant refers to the request.
    let votes: Vec<&Value> = recs
        .iter()
        .filter(|r| r["event"] == "approval_vote")
        .collect();
    assert_eq!(votes.len(), 2);
    assert!(votes
        .iter()
        .all(|v| v["refers_to"] == request.0 && v["code"] == "approve"));
    let granted = recs.iter().find(|r| r["event"] == "granted").unwrap();
    assert_eq!(granted["refers_to"], request.0);
    assert_eq!(granted["actor_id"], "7001");
    for code in ["own_request", "not_approver", "already_voted", "bad_button"] {
        assert!(recs.iter().any(|r| r["code"] == code), "no {code} record");
    }

    // The requester presses Open console and gets a link.
    let g = bot.discord.grant_dm(7001).expect("the grant's DM");
    let t = bot.discord.press_open(&g);
    let shown = bot.discord.press_result(&t).await;
    assert!(shown.path.ends_with("@original"), "{shown:?}");
    assert_eq!(bot.cvm.seen().len(), 1);
}

#[tokio::test]
async fn deny_expiry_and_cancel_each_close_the_request_and_tell_the_requester() {
    let bot = start_bot(1, 10).await;
    for u in [7001, 7003] {
        bot.discord.set_roles(u, bot_roles(u));
    }
    // Denied by one eligible approver.
    let denied = ask(&bot, 7001).await;
    vote(&bot, 7003, denied, "deny").await;
    post_edit(&bot, denied.1, "**Denied** by <@7003>").await;
    bot.discord
        .wait_for(Duration::from_secs(10), "the denial DM", |c| {
            c.method == "POST" && c.content().contains("was denied by <@7003>")
        })
        .await;
    // Expired: at half the TTL it is posted again, at the TTL it expires.
    let expiring = ask(&bot, 7001).await;
    bot.clock.advance(Duration::from_secs(5 * 60 + 1));
    bot.discord
        .wait_for(Duration::from_secs(10), "the reminder", |c| {
            c.method == "POST"
                && c.path.ends_with(&format!("{APPROVALS}/messages"))
                && c.content().contains(&format!("Request {}", expiring.0))
                && c.reply["id"].as_str() != Some(&expiring.1.to_string())
        })
        .await;
    bot.clock.advance(Duration::from_secs(5 * 60));
    post_edit(&bot, expiring.1, "**Expired**").await;
    let t = vote(&bot, 7003, expiring, "approve").await;
    assert!(followup(&bot, &t).await.contains("expired"));
    // Cancelled by the requester from their DM.
    let cancelled = ask(&bot, 7001).await;
    let dm = cancel_dm(&bot, cancelled.0).await;
    let channel: u64 = dm
        .path
        .trim_start_matches("/api/v10/channels/")
        .trim_end_matches("/messages")
        .parse()
        .unwrap();
    let msg: u64 = dm.reply["id"].as_str().unwrap().parse().unwrap();
    bot.discord
        .press(7001, channel, msg, &format!("vnc:cancel:{}", cancelled.0));
    post_edit(&bot, cancelled.1, "**Cancelled**").await;
    let t = vote(&bot, 7003, cancelled, "approve").await;
    assert!(followup(&bot, &t).await.contains("cancelled"));
    let recs = records(&bot);
    for event in ["request_denied", "expired", "cancelled"] {
        assert_eq!(
            recs.iter().filter(|r| r["event"] == event).count(),
            1,
            "{event}"
        );
    }
    assert!(!recs.iter().any(|r| r["event"] == "granted"));
    assert!(bot.cvm.seen().is_empty());
}
