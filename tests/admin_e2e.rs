//! Admin controls through the real serenity client against the fake Discord: `/vncadmin grants`
//! and `revoke` (by id, by member, refused to a non-admin), the Extend button (once, its end's
//! timer moved, through approvers when the rule needs them, rebuilt at a restart), the select
//! menu for a name several instances carry, and an approvals channel the bot cannot post in.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::fake_discord::{vnc, AdminOption, Call, GrantDm, TOKEN};
use support::mock_cvm::{self, MockInstance};
use support::{Fakes, ONCALL_ROLE};
use vncbot::config::{Config, TencentCredentials};

const PROD_ROLE: u64 = 555000000000000003;
const APPROVER: u64 = 555000000000000009;
const ADMIN: u64 = 555000000000000007;
const GLASS_ROLE: u64 = 555000000000000008;
const APPROVALS: u64 = 810000000000000003;
/// Where the fake's slash commands are run (and their ephemeral answers shown).
const COMMAND_CHANNEL: u64 = 820000000000000001;

/// The fakes' config with an approval rule for `PROD_ROLE` (one approval), the approvals
/// channel and `ADMIN` as the admin role.
fn config_text(bot: &Fakes) -> String {
    bot.config.replace(
        "[limits]",
        &format!(
            "[[allow]]\nroles = [{PROD_ROLE}]\ninstances = [\"*\"]\nregions = [\"*\"]\napproval = \"required\"\napprover_roles = [{APPROVER}]\nbreak_glass_roles = [{GLASS_ROLE}]\n\n[approvals]\nchannel_id = {APPROVALS}\nadmin_roles = [{ADMIN}]\n\n[limits]"
        ),
    )
}

fn creds() -> TencentCredentials {
    TencentCredentials {
        secret_id: mock_cvm::SECRET_ID.into(),
        secret_key: mock_cvm::SECRET_KEY.to_string().into(),
        session_token: None,
    }
}

/// Runs the bot on `text` and the fakes' clock; waits until it has registered its commands.
async fn run_bot(bot: &Fakes, text: &str) {
    let config = Config::parse(text).unwrap();
    let clock = bot.clock.clone();
    tokio::spawn(async move {
        if let Err(e) = vncbot::app::run_with(config, None, TOKEN, creds(), clock).await {
            panic!("the bot stopped: {e}");
        }
    });
    tokio::time::timeout(Duration::from_secs(20), bot.discord.wait_ready())
        .await
        .expect("the bot connects");
}

async fn start_bot() -> Fakes {
    let bot = Fakes::start("admin").await;
    bot.cvm.set_instances(
        "ap-guangzhou",
        [
            MockInstance::new("ins-running1", "db-01", 3),
            MockInstance::new("ins-dup00001", "twin", 10),
            MockInstance::new("ins-dup00002", "twin", 11),
        ],
    );
    run_bot(&bot, &config_text(&bot)).await;
    bot
}

fn records(bot: &Fakes) -> Vec<Value> {
    std::fs::read_to_string(bot.journal())
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The ephemeral follow-up a press or pick got.
async fn followup(bot: &Fakes, token: &str) -> String {
    let c = bot
        .discord
        .wait_for(Duration::from_secs(15), "the follow-up", |c| {
            c.method == "POST" && c.path.contains(token) && !c.path.ends_with("/callback")
        })
        .await;
    assert_eq!(c.body["flags"].as_u64(), Some(64), "ephemeral: {}", c.body);
    c.content()
}

/// `/vncadmin` as `user` (who holds `roles` as Discord gives them afresh); its answer.
async fn admin(
    bot: &Fakes,
    user: u64,
    roles: Vec<u64>,
    sub: &str,
    opts: Vec<AdminOption<'_>>,
) -> String {
    bot.discord.set_roles(user, roles.clone());
    let t = bot.discord.vncadmin(user, roles, sub, opts);
    bot.discord.reply(&t).await.content()
}

/// A PATCH of a grant's DM whose text contains `containing`.
async fn dm_edit(bot: &Fakes, g: &GrantDm, containing: &str) -> Call {
    bot.discord
        .wait_for(Duration::from_secs(10), containing, |c| {
            c.method == "PATCH"
                && c.path == format!("/api/v10/channels/{}/messages/{}", g.channel, g.message)
                && c.content().contains(containing)
        })
        .await
}

fn custom_ids(message: &Value) -> Vec<String> {
    message["components"][0]["components"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["custom_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn until(r: &Value, key: &str) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(
        r[key].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
}

#[tokio::test]
async fn admins_list_and_revoke_grants_and_nobody_else_may() {
    let bot = start_bot().await;
    let g1 = bot
        .discord
        .grant(vnc(
            7001,
            vec![ONCALL_ROLE],
            vec![("instance", "ins-running1")],
        ))
        .await;
    let g2 = bot
        .discord
        .grant(vnc(
            7002,
            vec![ONCALL_ROLE],
            vec![("instance", "ins-dup00001")],
        ))
        .await;
    // A request waits for approvers.
    let t = bot.discord.invoke(vnc(
        7003,
        vec![PROD_ROLE],
        vec![
            ("instance", "ins-running1"),
            ("reason", "INC-42 the database is down"),
        ],
    ));
    bot.discord.reply(&t).await;
    let request = records(&bot)
        .iter()
        .find(|r| r["event"] == "approval_requested")
        .map(|r| r["seq"].as_u64().unwrap())
        .unwrap();

    // A break-glass grant: listed as such, and it has no Extend.
    let t = bot.discord.invoke(vnc(
        7004,
        vec![PROD_ROLE, GLASS_ROLE],
        vec![
            ("instance", "ins-dup00002"),
            ("reason", "INC-77 the primary is down and nobody is awake"),
            ("break_glass", "true"),
        ],
    ));
    bot.discord.reply(&t).await;
    let glass = bot
        .discord
        .grant_dm(7004)
        .expect("the break-glass grant's DM");
    let glass_dm = bot
        .discord
        .calls()
        .into_iter()
        .find(|c| {
            c.method == "POST" && c.path == format!("/api/v10/channels/{}/messages", glass.channel)
        })
        .unwrap();
    assert_eq!(
        custom_ids(&glass_dm.body),
        [
            format!("vnc:open:{}", glass.grant),
            format!("vnc:done:{}", glass.grant)
        ]
    );

    let text = admin(&bot, 7100, vec![ADMIN], "grants", vec![]).await;
    assert!(
        text.lines()
            .any(|l| l.contains(&format!("grant {}: <@7004>", glass.grant))
                && l.contains("⚠ **break-glass**")),
        "{text}"
    );
    assert_eq!(text.matches("break-glass").count(), 1, "{text}");
    for want in [
        "**Live grants**: 3".to_owned(),
        format!(
            "• grant {}: <@7001>, **db-01** (ins-running1, ap-guangzhou) until <t:",
            g1.grant
        ),
        format!("• grant {}: <@7002>", g2.grant),
        "0 link(s) used".to_owned(),
        "**Pending requests**: 1".to_owned(),
        format!("• request {request}: <@7003>"),
        "0 of 1 approval(s)".to_owned(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in {text}");
    }

    // Not an admin as Discord says now, though the interaction claims the role: refused and
    // recorded, and nothing ended.
    bot.discord.set_roles(7005, vec![ONCALL_ROLE]);
    let t = bot.discord.vncadmin(
        7005,
        vec![ADMIN],
        "revoke",
        vec![AdminOption::Integer("grant", g1.grant as i64)],
    );
    let text = bot.discord.reply(&t).await.content();
    assert!(text.contains("Only members with an admin role"), "{text}");
    let text = admin(&bot, 7001, vec![ONCALL_ROLE], "grants", vec![]).await;
    assert!(text.contains("Only members with an admin role"), "{text}");
    let recs = records(&bot);
    let refused: Vec<&Value> = recs.iter().filter(|r| r["code"] == "not_admin").collect();
    assert_eq!(refused.len(), 2, "{recs:?}");
    assert!(refused.iter().all(|r| r["event"] == "denied"));
    assert!(!recs.iter().any(|r| r["event"] == "ended"));

    // Revoked by id: recorded with who, the holder's DM says who ended it.
    let text = admin(
        &bot,
        7100,
        vec![ADMIN],
        "revoke",
        vec![AdminOption::Integer("grant", g1.grant as i64)],
    )
    .await;
    assert!(
        text.contains(&format!("Revoked grant {}", g1.grant)),
        "{text}"
    );
    let edit = dm_edit(&bot, &g1, "revoked it").await;
    assert!(edit.content().contains("<@7100>"), "{}", edit.content());
    assert_eq!(edit.body["components"], serde_json::json!([]));
    let ended = records(&bot)
        .into_iter()
        .find(|r| r["event"] == "ended" && r["refers_to"] == g1.grant)
        .unwrap();
    assert_eq!(ended["code"], "revoked");
    assert_eq!(ended["actor_id"], "7100");
    // Its buttons are dead now.
    let t = bot.discord.press_open(&g1);
    assert!(followup(&bot, &t).await.contains("ended"));

    // Revoked by member.
    let text = admin(
        &bot,
        7100,
        vec![ADMIN],
        "revoke",
        vec![AdminOption::User("member", 7002)],
    )
    .await;
    assert!(
        text.contains(&format!("Revoked grant {}", g2.grant)),
        "{text}"
    );
    dm_edit(&bot, &g2, "revoked it").await;

    // Nothing to revoke: said plainly.
    let text = admin(
        &bot,
        7100,
        vec![ADMIN],
        "revoke",
        vec![AdminOption::User("member", 7002)],
    )
    .await;
    assert!(text.contains("holds no live grant"), "{text}");
    let text = admin(
        &bot,
        7100,
        vec![ADMIN],
        "revoke",
        vec![AdminOption::Integer("grant", 999_999)],
    )
    .await;
    assert!(text.contains("No grant has the id 999999"), "{text}");
    let text = admin(
        &bot,
        7100,
        vec![ADMIN],
        "revoke",
        vec![AdminOption::Integer("grant", g1.grant as i64)],
    )
    .await;
    assert!(text.contains("already ended"), "{text}");
    assert_eq!(bot.cvm.seen().len(), 0);
}

#[tokio::test]
async fn extend_once_moves_the_end_and_survives_a_restart() {
    let bot = start_bot().await;
    let g = bot
        .discord
        .grant(vnc(
            7001,
            vec![ONCALL_ROLE],
            vec![("instance", "ins-running1")],
        ))
        .await;
    let dm = bot
        .discord
        .calls()
        .into_iter()
        .find(|c| {
            c.method == "POST" && c.path == format!("/api/v10/channels/{}/messages", g.channel)
        })
        .unwrap();
    assert_eq!(
        custom_ids(&dm.body),
        [
            format!("vnc:open:{}", g.grant),
            format!("vnc:done:{}", g.grant),
            format!("vnc:extend:{}", g.grant)
        ]
    );
    let granted = records(&bot)
        .into_iter()
        .find(|r| r["event"] == "granted")
        .unwrap();
    let old_until = until(&granted, "until");

    let t = bot.discord.press_button(&g, "extend");
    let said = followup(&bot, &t).await;
    assert!(
        said.contains("Extended: this access now lasts until"),
        "{said}"
    );
    // The DM shows the new end, and no Extend button.
    let shown = bot
        .discord
        .wait_for(Duration::from_secs(10), "the DM after Extend", |c| {
            c.path.contains(&t) && c.method == "PATCH" && c.path.ends_with("@original")
        })
        .await;
    assert_eq!(
        custom_ids(&shown.body),
        [
            format!("vnc:open:{}", g.grant),
            format!("vnc:done:{}", g.grant)
        ]
    );
    let extended = records(&bot)
        .into_iter()
        .find(|r| r["event"] == "extended")
        .expect("an extended record");
    assert_eq!(extended["refers_to"], g.grant);
    assert_eq!(extended["actor_id"], "7001");
    assert_eq!(until(&extended, "previous_until"), old_until);
    let new_until = until(&extended, "until");
    assert_eq!(new_until - old_until, time::Duration::minutes(10));
    assert!(shown
        .content()
        .contains(&format!("<t:{}:t>", new_until.unix_timestamp())));

    // Once per grant.
    let t = bot.discord.press_button(&g, "extend");
    assert!(followup(&bot, &t).await.contains("already extended"));
    assert_eq!(
        records(&bot)
            .iter()
            .filter(|r| r["code"] == "already_extended")
            .count(),
        1
    );

    // Past the old end the grant lives on: a press mints a link.
    bot.clock.advance(Duration::from_secs(10 * 60 + 5));
    let t = bot.discord.press_open(&g);
    let shown = bot.discord.press_result(&t).await;
    assert!(shown.path.ends_with("@original"), "{shown:?}");
    assert!(
        shown.content().contains("Console link"),
        "{}",
        shown.content()
    );
    assert!(!records(&bot).iter().any(|r| r["event"] == "ended"));

    // A restart (a second bot on the same journal) rebuilds the extension: its new end, and
    // Extend refused.
    let after = Fakes::start("admin-restart").await;
    after.clock.advance(Duration::from_secs(10 * 60 + 5));
    after.discord.set_roles(7001, vec![ONCALL_ROLE]);
    let text = config_text(&after).replace(
        &after.journal().display().to_string(),
        &bot.journal().display().to_string(),
    );
    // Grants are rebuilt before the gateway is joined: by the time commands are registered,
    // the grant was resumed.
    run_bot(&after, &text).await;
    let rec = records(&bot)
        .into_iter()
        .find(|r| r["event"] == "resumed" && r["refers_to"] == g.grant)
        .unwrap();
    assert_eq!(until(&rec, "until"), new_until);
    let t = after.discord.press(
        7001,
        g.channel,
        g.message,
        &format!("vnc:extend:{}", g.grant),
    );
    assert!(followup(&after, &t).await.contains("already extended"));

    // Past the new end, the first bot ends it.
    bot.clock.advance(Duration::from_secs(10 * 60));
    dm_edit(&bot, &g, "ended").await;
    let ended = records(&bot)
        .into_iter()
        .find(|r| r["event"] == "ended" && r["refers_to"] == g.grant)
        .unwrap();
    assert_eq!(ended["code"], "expired");
}

#[tokio::test]
async fn extend_on_an_approval_rule_asks_the_approvers_and_their_ok_extends() {
    let bot = start_bot().await;
    bot.discord.set_roles(7003, vec![PROD_ROLE]);
    bot.discord.set_roles(7010, vec![APPROVER]);
    let t = bot.discord.invoke(vnc(
        7003,
        vec![PROD_ROLE],
        vec![
            ("instance", "ins-running1"),
            ("reason", "INC-42 the database is down"),
        ],
    ));
    bot.discord.reply(&t).await;
    let post = bot
        .discord
        .wait_for(Duration::from_secs(10), "the request's post", |c| {
            c.method == "POST" && c.path == format!("/api/v10/channels/{APPROVALS}/messages")
        })
        .await;
    let request: u64 = custom_ids(&post.body)[0]
        .strip_prefix("vnc:approve:")
        .unwrap()
        .parse()
        .unwrap();
    let message: u64 = post.reply["id"].as_str().unwrap().parse().unwrap();
    bot.discord.press_in_guild(
        7010,
        vec![APPROVER],
        APPROVALS,
        message,
        &format!("vnc:approve:{request}"),
    );
    let dm = bot
        .discord
        .wait_for(Duration::from_secs(10), "the approved grant's DM", |c| {
            c.method == "POST"
                && custom_ids(&c.body)
                    .iter()
                    .any(|i| i.starts_with("vnc:extend:"))
        })
        .await;
    let g = bot.discord.grant_dm(7003).expect("the grant's DM");
    assert!(dm.content().contains("Approved by <@7010>"));

    // Extend asks the approvers again.
    let t = bot.discord.press_button(&g, "extend");
    let said = followup(&bot, &t).await;
    assert!(said.contains("needs an approver's OK to extend"), "{said}");
    let ext_post = bot
        .discord
        .wait_for(Duration::from_secs(10), "the extension's post", |c| {
            c.method == "POST"
                && c.path == format!("/api/v10/channels/{APPROVALS}/messages")
                && c.content()
                    .contains(&format!("**Extension** of grant {}", g.grant))
        })
        .await;
    let ext: u64 = custom_ids(&ext_post.body)[0]
        .strip_prefix("vnc:approve:")
        .unwrap()
        .parse()
        .unwrap();
    let requested = records(&bot).into_iter().find(|r| r["seq"] == ext).unwrap();
    assert_eq!(requested["event"], "approval_requested");
    assert_eq!(requested["code"], "extend");
    assert_eq!(requested["refers_to"], g.grant);
    assert!(!records(&bot).iter().any(|r| r["event"] == "extended"));
    // A second press while it waits.
    let t = bot.discord.press_button(&g, "extend");
    assert!(followup(&bot, &t).await.contains(&format!("request {ext}")));

    // The approver's OK extends this grant (no new grant), and the member is told.
    let ext_message: u64 = ext_post.reply["id"].as_str().unwrap().parse().unwrap();
    bot.discord.press_in_guild(
        7010,
        vec![APPROVER],
        APPROVALS,
        ext_message,
        &format!("vnc:approve:{ext}"),
    );
    bot.discord
        .wait_for(Duration::from_secs(10), "the extension's DM", |c| {
            c.method == "POST"
                && c.content().contains(&format!(
                    "to extend grant {} for `ins-running1` was approved by <@7010>",
                    g.grant
                ))
        })
        .await;
    let edit = dm_edit(&bot, &g, "Console access to").await;
    assert_eq!(
        custom_ids(&edit.body),
        [
            format!("vnc:open:{}", g.grant),
            format!("vnc:done:{}", g.grant)
        ]
    );
    let recs = records(&bot);
    let extended = recs.iter().find(|r| r["event"] == "extended").unwrap();
    assert_eq!(extended["refers_to"], g.grant);
    assert_eq!(recs.iter().filter(|r| r["event"] == "granted").count(), 1);
    assert_eq!(recs.iter().filter(|r| r["event"] == "approved").count(), 2);
}

#[tokio::test]
async fn a_name_several_instances_carry_offers_a_menu_to_pick_from() {
    let bot = start_bot().await;
    // The catalog is listed in the background at start: wait until it knows the twins.
    let mut listed = false;
    for _ in 0..100 {
        let t = bot.discord.autocomplete(9999, vec![ONCALL_ROLE], "twin");
        if bot.discord.choices(&t).await.len() == 2 {
            listed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(listed, "the catalog never listed the twins");

    let t = bot.discord.invoke(vnc(
        5102,
        vec![ONCALL_ROLE],
        vec![("instance", "twin"), ("reason", "INC-9 the twin is slow")],
    ));
    let menu = bot.discord.reply(&t).await;
    assert!(
        menu.content().contains("ins-dup00001") && menu.content().contains("Pick one below"),
        "{}",
        menu.content()
    );
    let select = &menu.body["components"][0]["components"][0];
    assert_eq!(select["type"], 3, "{}", menu.body);
    let custom = select["custom_id"].as_str().unwrap().to_owned();
    assert!(custom.starts_with("vnc:pick:"), "{custom}");
    let labels: Vec<&str> = select["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["label"].as_str().unwrap())
        .collect();
    assert_eq!(
        labels,
        [
            "twin · ins-dup00001 · ap-guangzhou",
            "twin · ins-dup00002 · ap-guangzhou"
        ]
    );
    let message: u64 = menu.reply["id"].as_str().unwrap().parse().unwrap();
    assert!(!records(&bot).iter().any(|r| r["event"] == "granted"));

    // Another member's pick, a forged menu and a value the menu did not offer: refused.
    let pick = |user: u64, id: &str, value: &'static str| {
        bot.discord.select_in_guild(
            user,
            vec![ONCALL_ROLE],
            COMMAND_CHANNEL,
            message,
            id,
            vec![value],
        )
    };
    let t = pick(5103, &custom, "ins-dup00002");
    assert!(followup(&bot, &t).await.contains("offered to someone else"));
    let t = pick(5102, "vnc:pick:999999", "ins-dup00002");
    assert!(followup(&bot, &t).await.contains("no longer valid"));
    let t = pick(5102, "vnc:pick:1x", "ins-dup00002");
    assert!(followup(&bot, &t).await.contains("no longer valid"));
    let t = pick(5102, &custom, "ins-running1");
    assert!(followup(&bot, &t)
        .await
        .contains("not one of the instances"));
    let recs = records(&bot);
    assert_eq!(
        recs.iter().filter(|r| r["code"] == "not_your_menu").count(),
        1
    );
    assert_eq!(recs.iter().filter(|r| r["code"] == "bad_menu").count(), 3);
    assert!(!recs.iter().any(|r| r["event"] == "granted"));

    // The member's pick proceeds as /vnc instance:<ID> with the same reason.
    bot.discord.set_roles(5102, vec![ONCALL_ROLE]);
    let t = pick(5102, &custom, "ins-dup00002");
    let answer = bot.discord.reply(&t).await;
    assert!(
        answer.content().contains("in your DMs"),
        "{}",
        answer.content()
    );
    assert_eq!(answer.body["components"], serde_json::json!([]));
    let g = bot.discord.grant_dm(5102).expect("the grant's DM");
    let granted = records(&bot)
        .into_iter()
        .find(|r| r["event"] == "granted")
        .unwrap();
    assert_eq!(granted["seq"], g.grant);
    assert_eq!(granted["instance"], "ins-dup00002");
    assert_eq!(granted["reason"], "INC-9 the twin is slow");
    assert_eq!(granted["actor_id"], "5102");
    // The menu is used up.
    let t = pick(5102, &custom, "ins-dup00001");
    assert!(followup(&bot, &t).await.contains("no longer valid"));
}

#[tokio::test]
async fn an_approvals_channel_the_bot_cannot_post_in_stops_the_start() {
    let bot = Fakes::start("admin-unpostable").await;
    bot.discord.unpostable(APPROVALS);
    let config = Config::parse(&config_text(&bot)).unwrap();
    let ended = tokio::time::timeout(
        Duration::from_secs(20),
        vncbot::app::run_with(config, None, TOKEN, creds(), bot.clock.clone()),
    )
    .await
    .expect("the start is refused at once");
    let e = ended.expect_err("the bot refuses to start");
    assert!(
        matches!(e, vncbot::app::RunError::ApprovalsChannel(_)),
        "{e:?}"
    );
    let text = e.to_string();
    for want in [
        &format!("approvals.channel_id {APPROVALS}"),
        "403",
        "Missing Access",
        "View Channel and Send Messages",
    ] {
        assert!(text.contains(want), "missing {want:?} in {text}");
    }
    // Nothing was registered or posted.
    assert!(!bot.discord.calls().iter().any(|c| c.method != "GET"));

    // Readable, but the channel's overwrites deny the bot Send Messages.
    let no_send = Fakes::start("admin-no-send").await;
    no_send.discord.deny_send(APPROVALS);
    no_send
        .discord
        .set_roles(support::fake_discord::APP_ID, vec![]);
    let config = Config::parse(&config_text(&no_send)).unwrap();
    let e = tokio::time::timeout(
        Duration::from_secs(20),
        vncbot::app::run_with(config, None, TOKEN, creds(), no_send.clock.clone()),
    )
    .await
    .expect("the start is refused at once")
    .expect_err("the bot refuses to start");
    let text = e.to_string();
    assert!(
        text.contains(&format!(
            "approvals.channel_id {APPROVALS}: the bot lacks Send Messages"
        )),
        "{text}"
    );

    // With [approvals] only for /vncadmin (no rule needs approvers), it starts, loudly.
    let only_admin = Fakes::start("admin-only").await;
    only_admin.discord.unpostable(APPROVALS);
    let text = only_admin.config.replace(
        "[limits]",
        &format!("[approvals]\nchannel_id = {APPROVALS}\nadmin_roles = [{ADMIN}]\n\n[limits]"),
    );
    run_bot(&only_admin, &text).await;
}
