//! On-call rules through the real serenity client against the fake Discord, with the PagerDuty
//! stand-in as the rota: an on-call member granted (until the shift's end, evidence journaled),
//! one off call or unmapped refused with the sentence, approval skipped for the on-call, a shift
//! that ends during a grant, and PagerDuty down within and past the grace period.

mod support;

use std::time::{Duration, SystemTime};

use serde_json::Value;
use support::fake_discord::{vnc, Call, TOKEN};
use support::mock_cvm;
use support::Fakes;
use vncbot::config::{Config, TencentCredentials};
use vncbot_sandbox::pagerduty::{Fault, MockPagerDuty, OnCall as Entry};

/// The role of the `on_call = true` rule.
const PROD: u64 = 555000000000000003;
/// The role of the approval rule whose on-call members skip the votes.
const GATED: u64 = 555000000000000004;
const APPROVER: u64 = 555000000000000009;
const APPROVALS: u64 = 810000000000000003;
/// On call at level 1 (shift ends in 5 minutes).
const ALICE: u64 = 7101;
/// Mapped, on call only at level 2.
const BOB: u64 = 7102;
/// Not in [oncall.users].
const CAROL: u64 = 7103;

struct Bot {
    fakes: Fakes,
    pd: MockPagerDuty,
    admin: String,
    shift_end: SystemTime,
}

fn entry(user: &str, level: u32, end: Option<SystemTime>) -> Entry {
    Entry {
        policy: "PPOLICY1".into(),
        level,
        user: user.into(),
        start: SystemTime::now() - Duration::from_secs(3600),
        end,
    }
}

async fn start_bot() -> Bot {
    let fakes = Fakes::start("oncall").await;
    let pd = MockPagerDuty::start().await;
    pd.add_policy("PPOLICY1");
    pd.add_user("PALICE1", "Alice");
    pd.add_user("PBOB001", "Bob");
    let shift_end = fakes.clock.now() + Duration::from_secs(300);
    pd.set_oncalls(vec![
        entry("PALICE1", 1, Some(shift_end)),
        entry("PBOB001", 2, None),
    ]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let admin = format!("127.0.0.1:{port}");
    let text = fakes.config.replace(
        "[limits]",
        &format!(
            r#"[[allow]]
roles = [{PROD}]
instances = ["*"]
regions = ["*"]
on_call = true

[[allow]]
roles = [{GATED}]
instances = ["*"]
regions = ["*"]
approval = "required"
approver_roles = [{APPROVER}]
on_call_skips_approval = true

[approvals]
channel_id = {APPROVALS}

[oncall]
provider = "pagerduty"
api_base = "{}"
escalation_policy_ids = ["PPOLICY1"]
refresh_secs = 60
stale_grace_secs = 300

[oncall.users]
"{ALICE}" = "PALICE1"
"{BOB}" = "PBOB001"

[admin]
listen = "{admin}"

[limits]"#,
            pd.api_base()
        ),
    );
    let config = Config::parse(&text).unwrap();
    let creds = TencentCredentials {
        secret_id: mock_cvm::SECRET_ID.into(),
        secret_key: mock_cvm::SECRET_KEY.to_string().into(),
        session_token: None,
    };
    let clock = fakes.clock.clone();
    let key = Some(vncbot_sandbox::pagerduty::TOKEN.to_string().into());
    tokio::spawn(async move {
        if let Err(e) = vncbot::app::run_with_oncall(config, None, TOKEN, creds, clock, key).await {
            panic!("the bot stopped: {e}");
        }
    });
    tokio::time::timeout(Duration::from_secs(20), fakes.discord.wait_ready())
        .await
        .expect("the bot connects");
    // Start-up checked the policy and both users, and read the rota once.
    assert_eq!(pd.seen_at("/escalation_policies/PPOLICY1").len(), 1);
    assert_eq!(pd.seen_at("/users/").len(), 2);
    assert_eq!(pd.seen_at("/oncalls").len(), 1);
    Bot {
        fakes,
        pd,
        admin,
        shift_end,
    }
}

impl Bot {
    fn records(&self) -> Vec<Value> {
        std::fs::read_to_string(self.fakes.journal())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn last(&self, event: &str) -> Value {
        self.records()
            .into_iter()
            .rev()
            .find(|r| r["event"] == event)
            .unwrap_or_else(|| panic!("no {event} record"))
    }

    /// Moves the clock by a refresh and waits until the refresh after it has been asked for:
    /// by then the first one's answer is in the cache.
    async fn refresh(&self, times: usize) {
        for _ in 0..times {
            let n = self.pd.seen_at("/oncalls").len();
            self.fakes.clock.advance(Duration::from_secs(60));
            self.pd
                .wait_for("/oncalls", n + 1, Duration::from_secs(10))
                .await;
        }
    }

    async fn ask(&self, user: u64, role: u64) -> Call {
        self.fakes.discord.set_roles(user, vec![role]);
        let token = self.fakes.discord.invoke(vnc(
            user,
            vec![role],
            vec![
                ("instance", "ins-running1"),
                ("reason", "INC-7 web is down"),
            ],
        ));
        self.fakes.discord.reply(&token).await
    }

    async fn healthz(&self) -> String {
        reqwest::get(format!("http://{}/healthz", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

fn rfc3339_secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn parse(t: &str) -> i64 {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .unwrap()
        .unix_timestamp()
}

#[tokio::test]
async fn an_on_call_member_is_granted_until_the_shift_ends_and_the_report_says_why() {
    let bot = start_bot().await;
    let g = bot
        .fakes
        .discord
        .grant(vnc(ALICE, vec![PROD], vec![("instance", "ins-running1")]))
        .await;
    let granted = bot.last("granted");
    assert_eq!(granted["seq"].as_u64(), Some(g.grant));
    let evidence = &granted["on_call"];
    assert_eq!(evidence["status"], "on_call");
    assert_eq!(evidence["policy"], "PPOLICY1");
    assert_eq!(evidence["level"], 1);
    assert_eq!(evidence["pagerduty_user"], "PALICE1");
    // The window is 10 minutes; the shift ends in 5: the grant ends with the shift.
    let until = parse(granted["until"].as_str().unwrap());
    assert_eq!(until, rfc3339_secs(bot.shift_end));
    assert_eq!(parse(evidence["shift_end"].as_str().unwrap()), until);

    // A press asks again, and mints while she is on call.
    let t = bot.fakes.discord.press_open(&g);
    let shown = bot.fakes.discord.press_result(&t).await;
    assert!(
        shown.body.to_string().contains("Connect"),
        "{:?}",
        shown.body
    );

    // `vncbot audit report` shows the evidence in "how it was allowed".
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vncbot"))
        .args(["audit", "report", "--format", "csv"])
        .arg(bot.fakes.journal())
        .output()
        .unwrap();
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(csv.contains("PPOLICY1"), "{csv}");
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_vncbot"))
        .args(["audit", "report"])
        .arg(bot.fakes.journal())
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("on call (PPOLICY1, level"), "{table}");
}

#[tokio::test]
async fn members_off_call_or_unmapped_are_refused_with_the_reason() {
    let bot = start_bot().await;
    let reply = bot.ask(BOB, PROD).await.content();
    assert!(
        reply.contains("only while you are on call")
            && reply.contains(
                "PagerDuty does not have you on call right now (at escalation level 1 or below"
            ),
        "{reply}"
    );
    let denied = bot.last("denied");
    assert_eq!(denied["code"], "denied");
    assert_eq!(denied["on_call"]["status"], "not_on_call");
    assert_eq!(denied["actor_id"], BOB.to_string());

    let reply = bot.ask(CAROL, PROD).await.content();
    assert!(
        reply.contains("not linked to a PagerDuty user ([oncall.users]"),
        "{reply}"
    );
    assert_eq!(bot.last("denied")["on_call"]["status"], "not_mapped");
    assert!(bot.fakes.discord.grant_dm(BOB).is_none());
    assert!(bot.fakes.discord.grant_dm(CAROL).is_none());
}

#[tokio::test]
async fn on_call_members_skip_the_votes_and_others_wait_for_them() {
    let bot = start_bot().await;
    let posts = || {
        bot.fakes.discord.count(|c| {
            c.method == "POST" && c.path == format!("/api/v10/channels/{APPROVALS}/messages")
        })
    };
    let reply = bot.ask(ALICE, GATED).await;
    assert!(reply.content().contains("in your DMs"), "{reply:?}");
    assert!(bot.fakes.discord.grant_dm(ALICE).is_some());
    assert_eq!(posts(), 0, "no request was posted for approvers");
    let granted = bot.last("granted");
    assert_eq!(granted["on_call"]["status"], "on_call");
    assert!(bot
        .records()
        .iter()
        .all(|r| r["event"] != "approval_requested"));
    assert_eq!(
        parse(granted["until"].as_str().unwrap()),
        rfc3339_secs(bot.shift_end)
    );

    // Bob is on call only at level 2: his request waits for approvers, evidence attached.
    let reply = bot.ask(BOB, GATED).await;
    assert!(
        reply
            .content()
            .contains("you will get a DM when it is decided"),
        "{reply:?}"
    );
    let requested = bot.last("approval_requested");
    assert_eq!(requested["on_call"]["status"], "not_on_call");
}

#[tokio::test]
async fn a_shift_that_ends_during_a_grant_refuses_the_press_and_ends_the_grant() {
    let bot = start_bot().await;
    let g = bot
        .fakes
        .discord
        .grant(vnc(ALICE, vec![PROD], vec![("instance", "ins-running1")]))
        .await;
    // Alice hands over to Bob before her shift's end.
    bot.pd.set_oncalls(vec![entry("PBOB001", 1, None)]);
    bot.refresh(2).await;
    let t = bot.fakes.discord.press_open(&g);
    let ended = bot.fakes.discord.press_result(&t).await;
    let text = ended.body.to_string();
    assert!(
        text.contains("PagerDuty does not have you on call")
            || text.contains("no longer has you on call"),
        "{text}"
    );
    let end = bot.last("ended");
    assert_eq!(end["code"], "shift_ended");
    assert_eq!(end["refers_to"].as_u64(), Some(g.grant));
    let refused = bot
        .records()
        .into_iter()
        .find(|r| r["event"] == "denied" && r["refers_to"].as_u64() == Some(g.grant))
        .expect("the refused press");
    assert_eq!(refused["on_call"]["status"], "shift_ended");
    // Nothing was minted for it.
    assert!(bot.records().iter().all(|r| r["event"] != "issued"));
}

#[tokio::test]
async fn pagerduty_down_is_served_for_the_grace_then_nobody_is_on_call() {
    let bot = start_bot().await;
    assert_eq!(bot.healthz().await, "ok\n");
    bot.pd.set_down(Some(Fault::Status(500)));
    bot.refresh(2).await;
    // Two failed refreshes, two minutes: within the 5-minute grace the last rota is served.
    let detail = bot.healthz().await;
    assert!(
        detail.contains("oncall: PagerDuty failing (PagerDuty answered HTTP 500"),
        "{detail}"
    );
    let reply = bot.ask(ALICE, PROD).await;
    assert!(reply.content().contains("in your DMs"), "{reply:?}");

    // Past the grace: nobody is on call, and everyone hears why.
    bot.refresh(5).await;
    let detail = bot.healthz().await;
    assert!(
        detail.contains("oncall: STALE") && detail.contains("nobody counts as on call"),
        "{detail}"
    );
    let reply = bot.ask(ALICE, PROD).await.content();
    assert!(reply.contains("PagerDuty could not be reached"), "{reply}");
    assert_eq!(bot.last("denied")["on_call"]["status"], "unavailable");
    let metrics = reqwest::get(format!("http://{}/metrics", bot.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("vncbot_oncall_stale 1"), "{metrics}");

    // PagerDuty back: the next refresh serves again.
    bot.pd.set_down(None);
    bot.refresh(2).await;
    assert!(!bot.healthz().await.contains("oncall"));
}
