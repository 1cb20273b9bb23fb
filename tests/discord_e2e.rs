//! The real bot (serenity client) against the fake Discord and the mock Tencent endpoint.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::fake_discord::{vnc, Call, GrantDm, Invocation, TOKEN};
use support::mock_cvm::{self, Scripted};
use support::{Fakes, ONCALL_ROLE, OTHER_GUILD, WEB_ROLE};
use vncbot::config::{Config, TencentCredentials};
use vncbot::link::CONSOLE_PAGE;

/// The bot runs in this process, against the fakes.
type Bot = Fakes;

async fn start_bot(tweak: impl Fn(String) -> String) -> Bot {
    start_bot_after(tweak, |_| {}).await
}

/// As [`start_bot`], after `setup` has prepared the fakes (the catalog is listed at start).
async fn start_bot_after(tweak: impl Fn(String) -> String, setup: impl FnOnce(&Bot)) -> Bot {
    let bot = Fakes::start("e2e").await;
    setup(&bot);
    let config = Config::parse(&tweak(bot.config.clone())).unwrap();
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
        .expect("the bot connects and registers /vnc");
    bot
}

/// The final text of the ephemeral reply for an interaction.
async fn reply_text(bot: &Bot, token: &str) -> String {
    let call = bot.discord.reply(token).await;
    assert!(call.path.ends_with("@original"), "{call:?}");
    assert_eq!(
        call.body["allowed_mentions"]["parse"],
        serde_json::json!([]),
        "{:?}",
        call.body
    );
    call.content()
}

/// Presses Open console and waits for what the press did: the DM edited (a link, or the grant
/// ended) or an ephemeral follow-up.
async fn press(bot: &Bot, g: &GrantDm) -> (String, Call) {
    let token = bot.discord.press_button(g, "open");
    let shown = bot.discord.press_result(&token).await;
    (token, shown)
}

/// The ephemeral follow-up a press got.
async fn press_followup(bot: &Bot, token: &str) -> String {
    let c = bot
        .discord
        .wait_for(Duration::from_secs(15), "the press's follow-up", |c| {
            c.method == "POST" && c.path.contains(token) && !c.path.ends_with("/callback")
        })
        .await;
    assert_eq!(c.body["flags"].as_u64(), Some(64), "ephemeral: {}", c.body);
    assert_eq!(c.body["allowed_mentions"]["parse"], serde_json::json!([]));
    c.body["content"].as_str().unwrap_or_default().to_owned()
}

/// `/vnc` then Open console: the DM edit that shows the link.
async fn open_console(
    bot: &Bot,
    user: u64,
    roles: Vec<u64>,
    options: Vec<(&str, &str)>,
) -> (GrantDm, Call) {
    let g = bot.discord.grant(vnc(user, roles, options)).await;
    let (_, shown) = press(bot, &g).await;
    assert!(shown.path.ends_with("@original"), "{shown:?}");
    (g, shown)
}

/// The first DM the bot sent in `dm_channel`.
fn first_dm(bot: &Bot, dm_channel: u64) -> Call {
    bot.discord
        .calls()
        .into_iter()
        .find(|c| {
            c.method == "POST" && c.path == format!("/api/v10/channels/{dm_channel}/messages")
        })
        .expect("a DM was sent")
}

/// The edit that scrubs an expired link from a DM, once the link's 15 seconds have passed.
async fn expiry_edit(bot: &Bot, dm_channel: u64) -> Call {
    // The press records what became of its link right after the DM edit: let it finish, as 15 s
    // of real time would, before the link's time is up.
    let deadline = Instant::now() + Duration::from_secs(10);
    while journal_events(bot).last().is_some_and(|e| e == "issued") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bot.clock.advance(Duration::from_secs(16));
    bot.discord
        .wait_for(Duration::from_secs(25), "the expiry edit", |c| {
            c.method == "PATCH"
                && c.path
                    .starts_with(&format!("/api/v10/channels/{dm_channel}/messages/"))
        })
        .await
}

fn journal_events(bot: &Bot) -> Vec<String> {
    let text = std::fs::read_to_string(bot.journal()).unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn allowed_member_gets_the_link_by_dm_only() {
    let bot = start_bot(|t| t).await;
    let sent = Instant::now();
    bot.discord.set_roles(111, vec![ONCALL_ROLE]);
    let token = bot.discord.invoke(vnc(
        111,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-running1")],
    ));
    let text = reply_text(&bot, &token).await;
    assert!(
        text.contains("is in your DMs") && text.contains("<t:"),
        "{text}"
    );

    let callback = &bot.discord.calls_for(&token)[0];
    assert!(callback.path.ends_with("/callback"));
    assert_eq!(
        (
            callback.body["type"].as_u64(),
            callback.body["data"]["flags"].as_u64()
        ),
        (Some(5), Some(64))
    );
    assert!(callback.at.duration_since(sent) < Duration::from_secs(3));

    // The grant's DM: no link and no Tencent call yet, Open console and Done.
    let dm_channel = bot.discord.dm_channels_of(111)[0];
    let dm = first_dm(&bot, dm_channel);
    assert!(
        bot.cvm.seen().is_empty(),
        "nothing is minted before a press"
    );
    let buttons = &dm.body["components"][0]["components"];
    assert_eq!(
        (buttons[0]["label"].as_str(), buttons[1]["label"].as_str()),
        (Some("Open console"), Some("Done"))
    );
    let content = dm.body["content"].as_str().unwrap();
    assert!(
        content.contains("ins-running1") && content.contains(":t>") && content.contains(":R>"),
        "{content}"
    );
    let g = GrantDm {
        message: dm.reply["id"].as_str().unwrap().parse().unwrap(),
        grant: buttons[0]["custom_id"].as_str().unwrap()[9..]
            .parse()
            .unwrap(),
        channel: dm_channel,
        user: 111,
    };

    // Open console: a deferred update at once, then the DM shows a fresh link.
    let pressed = Instant::now();
    let (press_token, shown) = press(&bot, &g).await;
    let callback = &bot.discord.calls_for(&press_token)[0];
    assert_eq!(callback.body["type"].as_u64(), Some(6));
    assert!(callback.at.duration_since(pressed) < Duration::from_secs(3));
    let link = format!("{CONSOLE_PAGE}{}", bot.cvm.issued()[0]);
    assert_eq!(
        shown.body["components"][0]["components"][0]["url"],
        link.as_str()
    );
    assert_eq!(shown.body["components"][0]["components"][0]["style"], 5);
    assert_eq!(
        shown.body["components"][0]["components"][0]["label"],
        "Connect"
    );
    let content = shown.body["content"].as_str().unwrap();
    assert!(
        content.contains("ins-running1") && content.contains("once") && content.contains(":R>")
    );
    // The link is in that DM and nowhere else.
    for c in bot.discord.calls() {
        if c.path != shown.path {
            assert!(
                !c.body.to_string().contains(&bot.cvm.issued()[0]),
                "link leaked in {}",
                c.path
            );
        }
    }
    // After 15 s the dead link is scrubbed, and Open console is back while the grant lasts.
    let expired = expiry_edit(&bot, dm_channel).await;
    assert_eq!(
        journal_events(&bot),
        ["granted", "delivered", "requested", "issued", "delivered"]
    );
    assert!(!expired.body.to_string().contains(&bot.cvm.issued()[0]));
    assert_eq!(
        expired.body["components"][0]["components"][0]["label"],
        "Open console"
    );
}

#[tokio::test]
async fn refusals_never_reach_tencent() {
    let bot = start_bot(|t| t).await;
    let d = &bot.discord;
    let denied = d.invoke(vnc(222, vec![WEB_ROLE], vec![("instance", "ins-running1")]));
    let text = reply_text(&bot, &denied).await;
    assert!(
        text.contains("None of your roles") && text.contains(&format!("<@&{ONCALL_ROLE}>")),
        "{text}"
    );

    let no_roles = d.invoke(vnc(223, vec![], vec![("instance", "ins-web00001")]));
    assert!(reply_text(&bot, &no_roles)
        .await
        .contains("None of your roles"));

    let malformed = d.invoke(vnc(
        224,
        vec![ONCALL_ROLE],
        vec![("instance", "INS-RUNNING1")],
    ));
    assert!(reply_text(&bot, &malformed).await.contains("lower case"));

    let region = d.invoke(vnc(
        225,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-running1"), ("region", "ap-mars")],
    ));
    assert!(reply_text(&bot, &region)
        .await
        .contains("not a Tencent Cloud region"));

    let other = d.invoke(Invocation {
        guild: Some(OTHER_GUILD),
        ..vnc(226, vec![ONCALL_ROLE], vec![("instance", "ins-running1")])
    });
    assert!(reply_text(&bot, &other)
        .await
        .contains("not enabled in this server"));

    let in_dm = d.invoke(Invocation {
        guild: None,
        ..vnc(227, vec![], vec![("instance", "ins-running1")])
    });
    assert!(reply_text(&bot, &in_dm).await.contains("not in DMs"));

    let unknown = d.invoke(Invocation {
        command: "other",
        ..vnc(228, vec![ONCALL_ROLE], vec![])
    });
    assert!(reply_text(&bot, &unknown).await.contains("does not know"));

    let hostile = "@everyone <@&1> **x**\u{0007}".repeat(20);
    let h = d.invoke(vnc(229, vec![ONCALL_ROLE], vec![("instance", &hostile)]));
    let text = reply_text(&bot, &h).await;
    assert!(text.len() < 400, "{text}");

    assert!(
        bot.cvm.seen().is_empty(),
        "no refused request reached Tencent"
    );
    let events = journal_events(&bot);
    assert_eq!(
        events.iter().filter(|e| *e == "denied").count(),
        2,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "invalid").count(),
        5,
        "{events:?}"
    );
}

/// Tencent's own errors, as Tencent gives them: with the catalog off, so that a stopped instance
/// reaches Tencent instead of being refused from the catalog's list (which would race its
/// first refresh).
#[tokio::test]
async fn tencent_errors_are_explained() {
    let bot = start_bot(|t| t.replace("[limits]", "[catalog]\nenabled = false\n\n[limits]")).await;
    let explain = |user: u64, instance: &'static str| {
        let bot = &bot;
        async move {
            let g = bot
                .discord
                .grant(vnc(user, vec![ONCALL_ROLE], vec![("instance", instance)]))
                .await;
            let token = bot.discord.press_button(&g, "open");
            press_followup(bot, &token).await
        }
    };
    assert!(explain(301, "ins-nothere1")
        .await
        .contains("no instance ins-nothere1 in ap-guangzhou"));
    assert!(explain(302, "ins-stopped1")
        .await
        .contains("does not allow a console"));
    bot.cvm
        .script([Scripted::Error("AuthFailure.SignatureFailure")]);
    let text = explain(303, "ins-running1").await;
    assert!(
        text.contains("misconfigured") && text.contains("admins"),
        "{text}"
    );
    assert!(!text.contains(mock_cvm::SECRET_KEY));
}

#[tokio::test]
async fn closed_dms_mean_no_link_anywhere() {
    let bot = start_bot(|t| t).await;
    bot.discord.close_dms(401);
    let token = bot.discord.invoke(vnc(
        401,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-running1")],
    ));
    let text = reply_text(&bot, &token).await;
    assert!(
        text.contains("could not send you a DM") && text.contains("Privacy Settings"),
        "{text}"
    );
    // Nothing was minted: a grant nobody can press is ended at once.
    assert!(bot.cvm.issued().is_empty());
    assert_eq!(journal_events(&bot), ["granted", "dm_failed", "ended"]);
}

#[tokio::test]
async fn a_slow_tencent_does_not_delay_the_deferral() {
    let bot = start_bot(|t| t.replace("timeout_secs = 2", "timeout_secs = 10")).await;
    bot.cvm.script([Scripted::Delay(Duration::from_secs(4))]);
    let g = bot
        .discord
        .grant(vnc(
            501,
            vec![ONCALL_ROLE],
            vec![("instance", "ins-running1")],
        ))
        .await;
    let sent = Instant::now();
    let token = bot.discord.press_button(&g, "open");
    let callback = bot
        .discord
        .wait_for(Duration::from_secs(3), "the deferral", |c| {
            c.path.contains(&token) && c.path.ends_with("/callback")
        })
        .await;
    assert!(callback.at.duration_since(sent) < Duration::from_secs(3));
    let shown = bot.discord.press_result(&token).await;
    assert!(shown.path.ends_with("@original"));
    assert!(shown.body["content"]
        .as_str()
        .unwrap()
        .contains("works **once**"));
}

#[tokio::test]
async fn the_per_member_limit_says_when_to_retry() {
    let bot = start_bot(|t| t).await;
    for i in 0..3 {
        let id = format!("ins-load{i:04}");
        bot.discord
            .grant(vnc(601, vec![ONCALL_ROLE], vec![("instance", &id)]))
            .await;
    }
    let t = bot.discord.invoke(vnc(
        601,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-load0003")],
    ));
    let text = reply_text(&bot, &t).await;
    assert!(
        text.contains("too often") && text.contains("Try again in"),
        "{text}"
    );
    assert_eq!(bot.cvm.seen().len(), 0, "grants mint nothing");
}

#[tokio::test]
async fn fifty_members_at_once_are_all_served_within_tencents_limit() {
    let bot = start_bot(|t| t).await;
    let ids: Vec<String> = (0..50).map(|i| format!("ins-load{i:04}")).collect();
    let mut grants = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        grants.push(
            bot.discord
                .grant(vnc(
                    7000 + i as u64,
                    vec![ONCALL_ROLE],
                    vec![("instance", id)],
                ))
                .await,
        );
    }
    // All fifty press at once.
    let tokens: Vec<String> = grants
        .iter()
        .map(|g| bot.discord.press_button(g, "open"))
        .collect();
    for t in &tokens {
        let shown = bot.discord.press_result(t).await;
        assert!(shown.path.ends_with("@original"), "{shown:?}");
    }
    let seen = bot.cvm.seen();
    assert_eq!(seen.len(), 50);
    assert!(
        seen.iter().all(|s| s.verdict == "ok"),
        "no RequestLimitExceeded"
    );
    assert!(
        bot.cvm.max_per_second() <= 10,
        "{}",
        bot.cvm.max_per_second()
    );
}

#[tokio::test]
async fn discord_rest_errors_never_stop_the_bot() {
    let bot = start_bot(|t| t).await;
    let d = &bot.discord;
    // The deferral fails: nothing more can be said on that interaction, and nothing is minted.
    d.fail("POST", "/callback", 500, 1);
    let t = d.invoke(vnc(
        801,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-running1")],
    ));
    d.wait_for(Duration::from_secs(5), "the failed deferral", |c| {
        c.path.contains(&t)
    })
    .await;
    // Opening the DM channel is rate limited: the grant is ended and the member told.
    d.fail("POST", "/users/@me/channels", 429, 1);
    let t = d.invoke(vnc(
        802,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-web00001")],
    ));
    let text = reply_text(&bot, &t).await;
    assert!(text.contains("did not accept the DM"), "{text}");
    // The reply edit fails with 404: logged, and the DM still went out.
    d.fail("PATCH", "@original", 404, 1);
    let t = d.invoke(vnc(
        803,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-load0001")],
    ));
    d.wait_for(Duration::from_secs(10), "the 404 reply edit", |c| {
        c.path.contains(&t) && c.status == 404
    })
    .await;
    // The DM send fails with 500.
    d.fail("POST", "/messages", 500, 1);
    let t = d.invoke(vnc(
        804,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-load0002")],
    ));
    assert!(reply_text(&bot, &t).await.contains("did not accept the DM"));
    // And everyone else is still served.
    let t = d.invoke(vnc(
        805,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-load0003")],
    ));
    assert!(reply_text(&bot, &t).await.contains("in your DMs"));
    let events = journal_events(&bot);
    assert_eq!(
        events.iter().filter(|e| *e == "dm_failed").count(),
        2,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "delivered").count(),
        2,
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|e| *e == "granted").count(),
        4,
        "the failed deferral granted nothing: {events:?}"
    );
    assert!(bot.cvm.seen().is_empty(), "grants mint nothing");
}

#[tokio::test]
async fn the_audit_channel_gets_one_line_per_request_never_the_link() {
    const AUDIT_CHANNEL: u64 = 810000000000000002;
    let bot = start_bot(|t| {
        t.replace(
            "[tencent]",
            &format!("audit_channel_id = {AUDIT_CHANNEL}\n\n[tencent]"),
        )
    })
    .await;
    let d = &bot.discord;
    let path = format!("/api/v10/channels/{AUDIT_CHANNEL}/messages");
    // The first two posts fail: the line is retried, and the member is not kept waiting.
    d.fail("POST", &path, 500, 2);
    let g = bot
        .discord
        .grant(vnc(
            901,
            vec![ONCALL_ROLE],
            vec![
                ("instance", "ins-running1"),
                ("reason", "@everyone **now** INC-1"),
            ],
        ))
        .await;
    press(&bot, &g).await;
    let denied = d.invoke(vnc(902, vec![WEB_ROLE], vec![("instance", "ins-running1")]));
    assert!(reply_text(&bot, &denied)
        .await
        .contains("None of your roles"));

    let posted = |n: usize| {
        let d = d.clone();
        let path = path.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let lines: Vec<_> = d
                    .calls()
                    .into_iter()
                    .filter(|c| c.method == "POST" && c.path == path && c.status == 200)
                    // The journal head anchored at start is not a request's line.
                    .filter(|c| {
                        !c.body["content"]
                            .as_str()
                            .unwrap_or_default()
                            .starts_with("journal head:")
                    })
                    .collect();
                if lines.len() >= n || Instant::now() > deadline {
                    return lines;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // One line for the grant, one for the link minted by the press, one for the refusal.
    let lines = posted(3).await;
    assert_eq!(lines.len(), 3, "{:#?}", d.calls());
    let rid = &bot.cvm.seen()[0].request_id;
    let first = lines[0].body["content"].as_str().unwrap();
    assert!(
        first.contains("<@901>") && first.contains("ins-running1 (ap-guangzhou)"),
        "{first}"
    );
    assert!(
        first.contains("granted") && first.contains(&format!("grant {}", g.grant)),
        "{first}"
    );
    assert!(
        first.contains("@\u{200b}everyone \\*\\*now\\*\\*"),
        "{first}"
    );
    let minted = lines[1].body["content"].as_str().unwrap();
    assert!(
        minted.contains("<@901>")
            && minted.contains("delivered by DM")
            && minted.contains(rid.as_str()),
        "{minted}"
    );
    let second = lines[2].body["content"].as_str().unwrap();
    assert!(
        second.contains("<@902>") && second.contains("**denied**"),
        "{second}"
    );
    for l in &lines {
        assert_eq!(l.body["allowed_mentions"]["parse"], serde_json::json!([]));
        assert!(!l.body.to_string().contains(&bot.cvm.issued()[0]));
    }
    let failed = d
        .calls()
        .into_iter()
        .filter(|c| c.path == path && c.status == 500)
        .count();
    assert_eq!(failed, 2);
}

#[tokio::test]
async fn no_link_is_issued_when_the_journal_cannot_be_written() {
    let bot = start_bot(|t| t).await;
    let journal = bot.journal();
    std::fs::remove_file(&journal).unwrap();
    std::fs::create_dir(&journal).unwrap();
    let t = bot.discord.invoke(vnc(
        1001,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-running1")],
    ));
    let text = reply_text(&bot, &t).await;
    assert!(text.contains("cannot write its audit trail"), "{text}");
    assert!(bot.cvm.seen().is_empty(), "Tencent was never called");
    assert!(
        bot.discord.dm_channels_of(1001).is_empty(),
        "no DM was opened"
    );
}

async fn get(addr: &str, path: &str) -> (u16, String) {
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

#[tokio::test]
async fn healthz_and_metrics() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("127.0.0.1:{port}");
    let bot = start_bot(|t| format!("{t}\n[admin]\nlisten = \"{admin}\"\n")).await;
    let (status, body) = get(&admin, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    open_console(
        &bot,
        1101,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-running1")],
    )
    .await;
    let g = bot
        .discord
        .grant(vnc(
            1102,
            vec![ONCALL_ROLE],
            vec![("instance", "ins-nothere1")],
        ))
        .await;
    let t = bot.discord.press_button(&g, "open");
    press_followup(&bot, &t).await;
    let (status, metrics) = get(&admin, "/metrics").await;
    assert_eq!(status, 200);
    for expect in [
        "vncbot_commands_total{outcome=\"delivered\"}",
        "vncbot_commands_total{outcome=\"InvalidInstanceId.NotFound\"}",
        "vncbot_tencent_errors_total{code=\"InvalidInstanceId.NotFound\"}",
        "vncbot_tencent_request_duration_seconds_count",
        "vncbot_tencent_queue_wait_seconds_count",
        "vncbot_audit_write_duration_seconds_count",
        "vncbot_gateway_connected 1",
        "vncbot_dm_failures_total",
    ] {
        assert!(metrics.contains(expect), "missing {expect} in\n{metrics}");
    }
    assert!(!metrics.contains("bjvnc"));
    assert_eq!(get(&admin, "/nope").await.0, 404);

    // An unwritable journal makes the bot unhealthy.
    let journal = bot.journal();
    std::fs::remove_file(&journal).unwrap();
    std::fs::create_dir(&journal).unwrap();
    // The writer notices at its next write (or its idle check, within 5 s); `/healthz` itself
    // only reads memory. A request is the next write.
    let t = bot.discord.invoke(vnc(
        1103,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-running1")],
    ));
    assert!(reply_text(&bot, &t).await.contains("audit trail"));
    let (status, body) = get(&admin, "/healthz").await;
    assert_eq!(status, 503);
    assert!(body.contains("audit journal"), "{body}");
}

#[tokio::test]
async fn a_link_too_long_for_a_button_goes_in_the_dm_as_a_markdown_link() {
    let bot = start_bot(|t| t).await;
    bot.cvm.set_token_len(600);
    let (_, dm) = open_console(
        &bot,
        1201,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-running1")],
    )
    .await;
    let link = format!("{CONSOLE_PAGE}{}", bot.cvm.issued()[0]);
    assert!(link.len() > 512);
    // No link button (only Done); the link is a Markdown link in the text.
    assert!(
        !dm.body["components"].to_string().contains("\"url\""),
        "{}",
        dm.body
    );
    let content = dm.body["content"].as_str().unwrap();
    assert!(
        content.contains(&format!("[Open the console](<{link}>)")),
        "{content}"
    );
    assert!(
        content.chars().count() <= 2000,
        "within Discord's message limit"
    );
}

#[tokio::test]
async fn a_required_reason_is_enforced_and_offered_as_required() {
    let bot = start_bot(|t| t.replace("[audit]", "[audit]\nrequire_reason = true")).await;
    let put = bot
        .discord
        .calls()
        .into_iter()
        .find(|c| c.method == "PUT")
        .unwrap();
    let options = put.body[0]["options"].as_array().unwrap();
    let reason = options.iter().find(|o| o["name"] == "reason").unwrap();
    assert_eq!(reason["required"], true);
    assert_eq!(reason["max_length"], 200);
    let instance = options.iter().find(|o| o["name"] == "instance").unwrap();
    assert_eq!(
        (
            instance["required"].as_bool(),
            instance["max_length"].as_u64()
        ),
        (Some(true), Some(64))
    );
    let region = options.iter().find(|o| o["name"] == "region").unwrap();
    assert_eq!(region["choices"].as_array().unwrap().len(), 2);
    assert_eq!(put.body[0]["dm_permission"], false);

    let none = bot.discord.invoke(vnc(
        1301,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-running1")],
    ));
    assert!(reply_text(&bot, &none)
        .await
        .contains("A reason is required"));
    let short = bot.discord.invoke(vnc(
        1302,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-running1"), ("reason", "fix")],
    ));
    assert!(reply_text(&bot, &short).await.contains("too short"));
    let g = bot
        .discord
        .grant(vnc(
            1303,
            vec![ONCALL_ROLE],
            vec![
                ("instance", "ins-running1"),
                ("reason", "INC-42 disk full on web"),
            ],
        ))
        .await;
    press(&bot, &g).await;
    assert_eq!(bot.cvm.seen().len(), 1);
    let journal = std::fs::read_to_string(bot.journal()).unwrap();
    assert!(journal.contains("INC-42 disk full on web"));
}

#[tokio::test]
async fn a_link_too_long_for_the_message_text_goes_in_an_embed() {
    let bot = start_bot(|t| t).await;
    bot.cvm.set_token_len(2500);
    let (g, dm) = open_console(
        &bot,
        1301,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-running1")],
    )
    .await;
    let link = format!("{CONSOLE_PAGE}{}", bot.cvm.issued()[0]);
    assert!(link.len() > 2000);
    let content = dm.body["content"].as_str().unwrap();
    assert!(content.chars().count() <= 2000 && !content.contains(&link));
    let description = dm.body["embeds"][0]["description"].as_str().unwrap();
    assert!(description.contains(&link), "{}", dm.body);
    assert!(description.chars().count() <= 4096);
    // The expiry edit drops the embed as well as the text.
    let expired = expiry_edit(&bot, g.channel).await;
    assert_eq!(
        journal_events(&bot),
        ["granted", "delivered", "requested", "issued", "delivered"]
    );
    assert_eq!(expired.body["embeds"], serde_json::json!([]));
    assert!(!expired.body.to_string().contains(&link));
}

/// Discord took the grant's DM but its answer was lost: the bot sends it again with the same
/// nonce, learns the message's ID, records it delivered, and its buttons work.
#[tokio::test]
async fn a_dm_whose_answer_was_lost_is_still_recorded_and_usable() {
    let bot = start_bot(|t| t).await;
    bot.discord.lose_answer("POST", "/messages", 1);
    let g = bot
        .discord
        .grant(vnc(
            1401,
            vec![ONCALL_ROLE],
            vec![("instance", "ins-running1")],
        ))
        .await;
    let posts = bot.discord.calls().into_iter().filter(|c| {
        c.method == "POST" && c.path == format!("/api/v10/channels/{}/messages", g.channel)
    });
    assert_eq!(posts.count(), 2, "sent once more after the lost answer");
    assert_eq!(journal_events(&bot), ["granted", "delivered"]);
    let (_, shown) = press(&bot, &g).await;
    assert!(shown.path.ends_with("@original"));
    let expired = expiry_edit(&bot, g.channel).await;
    assert!(expired.path.ends_with(&g.message.to_string()));
    assert!(!expired.body.to_string().contains(&bot.cvm.issued()[0]));
}

/// A member with no role hammering `/vnc` cannot flood the journal or the audit channel, nor
/// crowd out the line about someone else's link.
#[tokio::test]
async fn a_flood_of_refused_requests_is_answered_but_not_recorded_one_by_one() {
    const AUDIT_CHANNEL: u64 = 810000000000000002;
    let bot = start_bot(|t| {
        t.replace(
            "[tencent]",
            &format!("audit_channel_id = {AUDIT_CHANNEL}\n\n[tencent]"),
        )
        .replace("[limits]", "[limits]\nrefusals_per_user_per_minute = 3")
    })
    .await;
    let d = &bot.discord;
    let mut replies = Vec::new();
    for _ in 0..12 {
        let t = d.invoke(vnc(666, vec![], vec![("instance", "ins-running1")]));
        replies.push(reply_text(&bot, &t).await);
    }
    assert!(
        replies[..3]
            .iter()
            .all(|r| r.contains("None of your roles")),
        "{replies:?}"
    );
    assert!(
        replies[3..].iter().all(|r| r.contains("Too many")),
        "{replies:?}"
    );
    let ok = d.invoke(vnc(
        667,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-running1")],
    ));
    assert!(reply_text(&bot, &ok).await.contains("in your DMs"));

    let events = journal_events(&bot);
    assert_eq!(
        events.iter().filter(|e| *e == "denied").count(),
        3,
        "only the refusals within the budget are recorded one by one: {events:?}"
    );
    let path = format!("/api/v10/channels/{AUDIT_CHANNEL}/messages");
    d.wait_for(Duration::from_secs(15), "the delivered line", |c| {
        c.path == path
            && c.body["content"]
                .as_str()
                .is_some_and(|s| s.contains("<@667>"))
    })
    .await;
    let from_flooder = d.count(|c| {
        c.path == path
            && c.body["content"]
                .as_str()
                .is_some_and(|s| s.contains("<@666>"))
    });
    assert_eq!(
        from_flooder, 1,
        "one line for the flooder's first refusal this minute"
    );
}

/// The grant's buttons against everything the issue lists: forwarded presses, forged and
/// oversized ids, a failed member fetch, a Tencent failure, a removed role, the last link, Done,
/// two presses at once, and a heads-up between members. Each gets a private answer and a journal
/// record that refers to its grant, and no link anywhere but the holder's DM.
#[tokio::test]
async fn grant_buttons_refuse_what_they_must_and_keep_the_grant_usable() {
    let bot =
        start_bot(|t| t.replace("[limits]", "[grants]\nlinks_per_grant = 3\n\n[limits]")).await;
    let d = &bot.discord;
    let g = bot
        .discord
        .grant(vnc(
            2001,
            vec![ONCALL_ROLE],
            vec![("instance", "ins-running1")],
        ))
        .await;
    let followup = |user: u64, custom: String| {
        let t = d.press(user, g.channel, g.message, &custom);
        let bot = &bot;
        async move { press_followup(bot, &t).await }
    };
    // Someone else presses (the DM was forwarded): refused.
    let other = followup(2002, format!("vnc:open:{}", g.grant)).await;
    assert!(other.contains("someone else"), "{other}");
    // Forged, malformed and oversized ids.
    for forged in [
        "vnc:open:999999".to_owned(),
        "vnc:open:abc".to_owned(),
        "x".repeat(100),
    ] {
        let text = followup(2001, forged).await;
        assert!(text.contains("not valid"), "{text}");
    }
    // Discord cannot say what the member's roles are now: no link, try again.
    d.fail("GET", "/members/", 500, 1);
    let text = followup(2001, format!("vnc:open:{}", g.grant)).await;
    assert!(text.contains("current roles"), "{text}");
    // Tencent fails: said so, and the grant is still usable.
    bot.cvm.script([Scripted::Error(
        "OperationDenied.InstanceOperationInProgress",
    )]);
    let text = followup(2001, format!("vnc:open:{}", g.grant)).await;
    assert!(text.contains("busy"), "{text}");
    assert!(bot.cvm.issued().is_empty());
    let (_, shown) = press(&bot, &g).await;
    assert!(shown.path.ends_with("@original"), "{shown:?}");

    // A second member opens the same console: the heads-up names the first, pinging nobody.
    let (_, shown) = open_console(
        &bot,
        2003,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-running1")],
    )
    .await;
    let content = shown.body["content"].as_str().unwrap();
    assert!(
        content.contains("Heads-up: <@2001> opened this console"),
        "{content}"
    );
    assert_eq!(
        shown.body["allowed_mentions"]["parse"],
        serde_json::json!([])
    );

    // Two presses at once on one grant: one link, one "already being made".
    let g4 = bot
        .discord
        .grant(vnc(
            2004,
            vec![ONCALL_ROLE],
            vec![("instance", "ins-web00001")],
        ))
        .await;
    bot.cvm
        .script([Scripted::Delay(Duration::from_millis(800))]);
    let first = bot.discord.press_button(&g4, "open");
    d.wait_for(
        Duration::from_secs(5),
        "the first press's member fetch",
        |c| c.method == "GET" && c.path.ends_with("/members/2004"),
    )
    .await;
    let second = bot.discord.press_button(&g4, "open");
    assert!(press_followup(&bot, &second)
        .await
        .contains("already being made"));
    assert!(bot
        .discord
        .press_result(&first)
        .await
        .path
        .ends_with("@original"));
    // Up to the last link (3 per grant here), then refused.
    for _ in 0..2 {
        let (_, shown) = press(&bot, &g4).await;
        assert!(shown.path.ends_with("@original"), "{shown:?}");
    }
    let t = bot.discord.press_button(&g4, "open");
    assert!(press_followup(&bot, &t)
        .await
        .contains("all of its 3 links"));

    // Done ends the grant: the DM says so, and a later press is refused.
    let t = bot.discord.press_button(&g4, "done");
    let ended = bot.discord.press_result(&t).await;
    let content = ended.body["content"].as_str().unwrap();
    assert!(
        content.contains("ended") && content.contains("Done"),
        "{content}"
    );
    assert_eq!(ended.body["components"], serde_json::json!([]));
    let t = bot.discord.press_button(&g4, "open");
    assert!(press_followup(&bot, &t)
        .await
        .contains("has ended; run /vnc again"));

    // The role is removed: the next press ends the grant, and the DM says so.
    d.set_roles(2001, vec![]);
    let t = bot.discord.press_button(&g, "open");
    let ended = bot.discord.press_result(&t).await;
    assert!(ended.body["content"]
        .as_str()
        .unwrap()
        .contains("no longer allow"));
    assert!(press_followup(&bot, &t).await.contains("no longer allow"));
    let t = bot.discord.press_button(&g, "open");
    assert!(press_followup(&bot, &t).await.contains("has ended"));

    // Every press on the first grant is in the journal and refers to it.
    let records: Vec<serde_json::Value> = std::fs::read_to_string(bot.journal())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let about = |code: &str| {
        records
            .iter()
            .filter(|r| r["code"] == code && r["refers_to"] == g.grant)
            .count()
    };
    assert_eq!(about("not_holder"), 1);
    assert_eq!(about("roles_unavailable"), 1);
    assert_eq!(about("role_removed"), 2, "the refusal and the grant's end");
    assert_eq!(about("grant_ended"), 1);
    assert_eq!(
        records.iter().filter(|r| r["code"] == "bad_button").count(),
        3
    );
    // Links went only into DM edits of their holders' presses.
    for value in bot.cvm.issued() {
        for c in d.calls() {
            if c.body.to_string().contains(&value) {
                assert!(c.path.ends_with("@original"), "link in {}", c.path);
            }
        }
    }
}

/// Waits until the bot's catalog lists something for an on-call member (the first refresh runs
/// in the background at start); returns what autocomplete offers for `typed` then.
async fn when_listed(bot: &Bot, typed: &str) -> Vec<(String, String)> {
    for _ in 0..100 {
        let t = bot.discord.autocomplete(9999, vec![ONCALL_ROLE], typed);
        let choices = bot.discord.choices(&t).await;
        if !choices.is_empty() {
            return choices;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the catalog never listed anything for {typed:?}");
}

fn catalog_fixture(bot: &Bot) {
    use support::mock_cvm::MockInstance;
    bot.cvm.set_instances(
        "ap-guangzhou",
        [
            MockInstance::new("ins-web00001", "web-01", 5).public_ip("203.0.113.7"),
            MockInstance::new("ins-web00002", "web-02", 6),
            MockInstance::new("ins-stopped1", "db-01", 9).state("STOPPED"),
            MockInstance::new("ins-dup00001", "twin", 10),
            MockInstance::new("ins-dup00002", "twin", 11),
            MockInstance::new("ins-tagged01", "stage-01", 12).tag("env", "staging"),
            MockInstance::new("ins-hostile1", "@everyone **<@&1>** \u{202e}evil", 13),
        ],
    );
}

#[tokio::test]
async fn autocomplete_lists_only_what_the_member_may_open_from_memory() {
    let bot = start_bot_after(|t| t, catalog_fixture).await;
    let all = when_listed(&bot, "web").await;
    // Exact, then prefix, then substring; label like `web-01 · ins-… · RUNNING · 10.0.0.5 · region`.
    assert_eq!(all[0].1, "ins-web00001", "{all:?}");
    assert!(
        all[0].0.starts_with("web-01 · ins-web00001 · RUNNING · "),
        "{all:?}"
    );
    assert!(all
        .iter()
        .all(|(label, value)| label.chars().count() <= 100 && value.len() <= 100));
    // By IP and tag value too.
    assert_eq!(when_listed(&bot, "203.0.113.7").await[0].1, "ins-web00001");
    assert_eq!(when_listed(&bot, "staging").await[0].1, "ins-tagged01");
    // The web role sees only its instances; no role, nothing.
    let t = bot.discord.autocomplete(5001, vec![WEB_ROLE], "");
    let web: Vec<String> = bot
        .discord
        .choices(&t)
        .await
        .into_iter()
        .map(|c| c.1)
        .collect();
    assert_eq!(web, ["ins-web00001", "ins-web00002"]);
    let t = bot.discord.autocomplete(5002, vec![], "web");
    assert!(bot.discord.choices(&t).await.is_empty());
    // A storm of keystrokes costs no Tencent call beyond the background refresh.
    let console_calls = bot.cvm.seen().len();
    let tokens: Vec<String> = (0..50)
        .map(|i| {
            bot.discord
                .autocomplete(5003, vec![ONCALL_ROLE], &"web-0"[..1 + i % 5])
        })
        .collect();
    for t in &tokens {
        bot.discord.choices(t).await;
    }
    assert_eq!(bot.cvm.seen().len(), console_calls);
    // Hostile names are listed without control or direction characters.
    let hostile = when_listed(&bot, "evil").await;
    assert!(!hostile[0].0.contains('\u{202e}'), "{hostile:?}");
    assert!(journal_events(&bot).is_empty(), "typing is not asking");
}

#[tokio::test]
async fn names_resolve_to_one_instance_or_say_why_not() {
    let bot = start_bot_after(|t| t, catalog_fixture).await;
    when_listed(&bot, "web-01").await;
    // A unique name: the grant is for its ID, and the DM names it.
    let g = bot
        .discord
        .grant(vnc(5101, vec![ONCALL_ROLE], vec![("instance", "web-01")]))
        .await;
    let dm = first_dm(&bot, g.channel);
    let content = dm.body["content"].as_str().unwrap();
    assert!(
        content.contains("**web-01** (ins-web00001, ap-guangzhou)"),
        "{content}"
    );
    // Two carry the name: both listed, nothing granted.
    let t = bot
        .discord
        .invoke(vnc(5102, vec![ONCALL_ROLE], vec![("instance", "twin")]));
    let text = reply_text(&bot, &t).await;
    assert!(
        text.contains("ins-dup00001") && text.contains("ins-dup00002") && text.contains("RUNNING"),
        "{text}"
    );
    // None the member may open carries it: said so, with a hint (and the web role may not
    // learn that db-01 exists).
    let t = bot
        .discord
        .invoke(vnc(5103, vec![WEB_ROLE], vec![("instance", "db-01")]));
    let text = reply_text(&bot, &t).await;
    assert!(text.contains("No instance you may open is named"), "{text}");
    assert!(!text.contains("ins-stopped1"), "{text}");
    // A hostile name is echoed inert.
    let t = bot.discord.invoke(vnc(
        5104,
        vec![ONCALL_ROLE],
        vec![("instance", "@everyone <#1> **x**")],
    ));
    let text = reply_text(&bot, &t).await;
    // Quoted (in code, so nothing in it renders or pings) and bounded.
    assert!(text.contains("`@everyone <#1> **x**`"), "{text}");
    assert!(
        bot.cvm.seen().is_empty(),
        "nothing reached the console action"
    );
}

#[tokio::test]
async fn a_stopped_instance_is_refused_before_tencent_is_asked() {
    let bot = start_bot_after(|t| t, catalog_fixture).await;
    when_listed(&bot, "db-01").await;
    let g = bot
        .discord
        .grant(vnc(5201, vec![ONCALL_ROLE], vec![("instance", "db-01")]))
        .await;
    let catalog_reads = bot.cvm.seen_catalog().len();
    let t = bot.discord.press_button(&g, "open");
    let text = press_followup(&bot, &t).await;
    assert!(
        text.contains("`db-01` (ins-stopped1) is STOPPED: start it first"),
        "{text}"
    );
    assert!(bot.cvm.seen().is_empty(), "no DescribeInstanceVncUrl call");
    let reread = &bot.cvm.seen_catalog()[catalog_reads..];
    assert!(
        reread.iter().any(|s| s.body.contains("ins-stopped1")),
        "the one instance was read again first"
    );
    // Started meanwhile: the re-read sees it running, and Tencent is asked.
    use support::mock_cvm::MockInstance;
    bot.cvm
        .put_instance(MockInstance::new("ins-stopped1", "db-01", 9));
    let (_, shown) = press(&bot, &g).await;
    assert!(shown.path.ends_with("@original"), "{shown:?}");
    assert_eq!(bot.cvm.seen().len(), 1);
}

#[tokio::test]
async fn tag_rules_match_only_what_the_catalog_vouches_for() {
    const TAG_ROLE: u64 = 555000000000000009;
    let bot = start_bot_after(
        |t| {
            format!("{t}\n[[allow]]\nroles = [{TAG_ROLE}]\ninstances = [\"*\"]\nregions = [\"*\"]\ntags = [\"env=staging\"]\n")
        },
        catalog_fixture,
    )
    .await;
    when_listed(&bot, "stage-01").await;
    bot.discord
        .grant(vnc(5301, vec![TAG_ROLE], vec![("instance", "stage-01")]))
        .await;
    // Untagged, and unknown to the catalog: refused, and the refusal says why.
    let t = bot.discord.invoke(vnc(
        5302,
        vec![TAG_ROLE],
        vec![("instance", "ins-web00001")],
    ));
    assert!(reply_text(&bot, &t).await.contains("None of your roles"));
    let t = bot.discord.invoke(vnc(
        5303,
        vec![TAG_ROLE],
        vec![("instance", "ins-unknown1")],
    ));
    let text = reply_text(&bot, &t).await;
    assert!(
        text.contains("env=staging") && text.contains("catalog cannot vouch"),
        "{text}"
    );
}

/// The window runs out: `ended` (expired) is recorded, the DM says so with no buttons, and a
/// press afterwards is told to run /vnc again. The clock is moved past the window.
#[tokio::test]
async fn a_grant_ends_when_its_window_runs_out() {
    let bot = start_bot(|t| t.replace("[limits]", "[grants]\nminutes = 1\n\n[limits]")).await;
    let g = bot
        .discord
        .grant(vnc(
            6001,
            vec![ONCALL_ROLE],
            vec![("instance", "ins-running1")],
        ))
        .await;
    bot.clock.advance(Duration::from_secs(61));
    let ended = bot
        .discord
        .wait_for(Duration::from_secs(15), "the grant's end in its DM", |c| {
            c.method == "PATCH"
                && c.path.ends_with(&format!("/messages/{}", g.message))
                && c.body["content"]
                    .as_str()
                    .is_some_and(|t| t.contains("ended"))
        })
        .await;
    assert_eq!(ended.body["components"], serde_json::json!([]));
    let t = bot.discord.press_button(&g, "open");
    assert!(press_followup(&bot, &t)
        .await
        .contains("has ended; run /vnc again"));
    let records: Vec<serde_json::Value> = std::fs::read_to_string(bot.journal())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records
        .iter()
        .any(|r| r["event"] == "ended" && r["code"] == "expired" && r["refers_to"] == g.grant));
    assert!(bot.cvm.seen().is_empty());
}

/// The role is removed while Tencent is making the link: the roles are read again before the
/// link is shown, so the link is discarded (and recorded), the grant ends, and the DM says so.
#[tokio::test]
async fn a_role_removed_while_tencent_makes_the_link_shows_no_link() {
    let bot = start_bot(|t| t).await;
    bot.discord.set_roles(7001, vec![ONCALL_ROLE]);
    let g = bot
        .discord
        .grant(vnc(
            7001,
            vec![ONCALL_ROLE],
            vec![("instance", "ins-running1")],
        ))
        .await;
    // Slow, but inside the client's 2 s timeout (no retry).
    bot.cvm
        .script([Scripted::Delay(Duration::from_millis(1500))]);
    let t = bot.discord.press_button(&g, "open");
    bot.discord
        .wait_for(Duration::from_secs(5), "the press's member fetch", |c| {
            c.method == "GET" && c.path.ends_with("/members/7001")
        })
        .await;
    bot.discord.set_roles(7001, vec![]);
    let ended = bot.discord.press_result(&t).await;
    let content = ended.body["content"].as_str().unwrap_or_default();
    assert!(content.contains("no longer allow"), "{content}");
    assert_eq!(bot.cvm.issued().len(), 1, "Tencent did make a link");
    let link = &bot.cvm.issued()[0];
    for c in bot.discord.calls() {
        assert!(
            !c.body.to_string().contains(link.as_str()),
            "link shown in {}",
            c.path
        );
    }
    let records: Vec<Value> = std::fs::read_to_string(bot.journal())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rid = &bot.cvm.seen()[0].request_id;
    assert!(records.iter().any(|r| r["event"] == "denied"
        && r["code"] == "role_removed"
        && r["request_id"] == rid.as_str()));
    assert!(records
        .iter()
        .any(|r| r["event"] == "ended" && r["refers_to"] == g.grant));
    assert!(!records
        .iter()
        .any(|r| r["event"] == "delivered" && r["request_id"] == rid.as_str()));
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

/// Discord hangs: a press whose member fetch hangs is answered once the REST bound runs out and
/// frees its grant (the next press mints); a hung audit-channel post holds up neither `/vnc`
/// nor presses, and `/healthz` names both troubles while they last.
#[tokio::test]
async fn a_hung_discord_neither_freezes_presses_nor_the_audit_feed() {
    const AUDIT_CHANNEL: u64 = 810000000000000002;
    let admin = admin_addr();
    let bot = start_bot(|t| {
        format!(
            "{}\n[admin]\nlisten = \"{admin}\"\n",
            t.replace(
                "[tencent]",
                &format!("audit_channel_id = {AUDIT_CHANNEL}\n\n[tencent]"),
            )
        )
    })
    .await;
    let d = &bot.discord;
    // Every audit-channel post hangs for a while: the feed's first line waits on Discord.
    d.hang("POST", &format!("/channels/{AUDIT_CHANNEL}/messages"), 3);
    let g = d
        .grant(vnc(
            8001,
            vec![ONCALL_ROLE],
            vec![("instance", "ins-running1")],
        ))
        .await;
    d.hang("GET", "/members/8001", 1);
    let t = d.press_button(&g, "open");
    // Meanwhile another member's /vnc is served.
    d.grant(vnc(
        8002,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-web00001")],
    ))
    .await;
    let text = press_followup(&bot, &t).await;
    assert!(text.contains("current roles"), "{text}");
    let (_, detail) = get(&admin, "/healthz").await;
    assert!(detail.contains("REST call(s) failed"), "{detail}");
    // The guard is free: the next press mints.
    let (_, shown) = press(&bot, &g).await;
    assert!(shown.path.ends_with("@original"), "{shown:?}");
    // The feed is stalled on its hung line, and says so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, detail) = get(&admin, "/healthz").await;
        if detail.contains("audit channel: a line has waited") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stall never showed: {detail}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The gateway goes away (its socket closed, reconnects refused): readiness fails within 30 s
/// and the gauge drops; once it is back, the bot is ready again.
#[tokio::test]
async fn losing_the_gateway_makes_the_bot_unready_until_it_is_back() {
    let admin = admin_addr();
    let bot = start_bot(|t| format!("{t}\n[admin]\nlisten = \"{admin}\"\n")).await;
    assert_eq!(get(&admin, "/healthz").await.0, 200);
    bot.discord.drop_gateway();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(&admin, "/healthz").await;
        if status == 503 {
            assert!(body.contains("gateway"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready 30 s after the gateway went away"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, metrics) = get(&admin, "/metrics").await;
    assert!(metrics.contains("vncbot_gateway_connected 0"), "{metrics}");
    bot.discord.restore_gateway();
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&admin, "/healthz").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready again after the gateway came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
