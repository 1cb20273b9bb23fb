//! The PagerDuty client and the on-call cache against the PagerDuty stand-in: the headers, the
//! pages, the start-up checks, a 429's wait, a 401, a hanging or failing PagerDuty within and
//! past the grace period; and a missing key, through the binary.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use vncbot::clock::Clock;
use vncbot::config::Config;
use vncbot::metrics::Metrics;
use vncbot::oncall::startup::{self, OnCallStartError};
use vncbot::oncall::{OnCall, OnCallCache, OnCallConfig, PagerDuty, PagerDutyError};
use vncbot_sandbox::pagerduty::{Fault, MockPagerDuty, OnCall as Entry, ACCEPT, TOKEN};

const ALICE: u64 = 700000000000000001;
const BOB: u64 = 700000000000000002;

fn config(pd: &MockPagerDuty, policies: &[&str]) -> OnCallConfig {
    let text = format!(
        r#"
[discord]
guild_ids = [800000000000000001]
[tencent]
regions = ["ap-guangzhou"]
[[allow]]
roles = [555000000000000001]
instances = ["*"]
regions = ["*"]
on_call = true
[oncall]
provider = "pagerduty"
api_base = "{}"
escalation_policy_ids = [{}]
refresh_secs = 60
stale_grace_secs = 300
[oncall.users]
"{ALICE}" = "PALICE1"
"{BOB}" = "PBOB001"
"#,
        pd.api_base(),
        policies
            .iter()
            .map(|p| format!("{p:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Config::parse(&text).unwrap().oncall.unwrap()
}

fn key() -> SecretString {
    TOKEN.to_string().into()
}

fn entry(policy: &str, level: u32, user: &str, end: Option<SystemTime>) -> Entry {
    Entry {
        policy: policy.into(),
        level,
        user: user.into(),
        start: SystemTime::now() - Duration::from_secs(3600),
        end,
    }
}

/// A stand-in with policies P1 and P2, Alice and Bob, and `n` more entries of other users.
async fn pagerduty(n: usize) -> MockPagerDuty {
    let pd = MockPagerDuty::start().await;
    pd.add_policy("PPOLICY1");
    pd.add_policy("PPOLICY2");
    pd.add_user("PALICE1", "Alice");
    pd.add_user("PBOB001", "Bob");
    let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
    let mut entries = vec![
        entry("PPOLICY1", 1, "PALICE1", Some(in_an_hour)),
        entry("PPOLICY2", 2, "PBOB001", None),
    ];
    entries.extend((0..n).map(|i| entry("PPOLICY2", 3, &format!("POTHER{i:02}"), None)));
    pd.set_oncalls(entries);
    pd
}

#[tokio::test]
async fn every_page_is_read_with_both_headers() {
    let pd = pagerduty(5).await;
    pd.set_page_size(2);
    let client = PagerDuty::new(&config(&pd, &["PPOLICY1", "PPOLICY2"]), &key()).unwrap();
    let shifts = client.oncalls().await.unwrap();
    assert_eq!(shifts.len(), 7);
    let seen = pd.seen_at("/oncalls");
    assert_eq!(seen.len(), 4, "7 entries in pages of 2");
    for (i, r) in seen.iter().enumerate() {
        assert_eq!(
            r.header("authorization"),
            Some(&*format!("Token token={TOKEN}"))
        );
        assert_eq!(r.header("accept"), Some(ACCEPT));
        let q = r.path.replace("%5B%5D", "[]");
        for part in [
            "escalation_policy_ids[]=PPOLICY1",
            "escalation_policy_ids[]=PPOLICY2",
            "include[]=users",
            "limit=100",
            &format!("offset={}", i * 2),
        ] {
            assert!(q.contains(part), "{part} not in {q}");
        }
    }
    let alice = shifts.iter().find(|s| s.user == "PALICE1").unwrap();
    assert_eq!((alice.policy.as_str(), alice.level), ("PPOLICY1", 1));
    assert!(alice.end.is_some());
    assert_eq!(
        shifts.iter().find(|s| s.user == "PBOB001").unwrap().end,
        None
    );
}

#[tokio::test]
async fn a_refused_key_and_an_unknown_policy_stop_the_start_with_a_clear_line() {
    let pd = pagerduty(0).await;
    let wrong: SecretString = "not-the-key".to_string().into();
    let metrics = Arc::new(Metrics::new());
    let c = config(&pd, &["PPOLICY1"]);
    let err = startup::start(&c, &wrong, Clock::adjustable(), Arc::clone(&metrics))
        .await
        .err()
        .expect("a 401 stops the start");
    assert!(matches!(
        err,
        OnCallStartError::Refused(PagerDutyError::Unauthorized)
    ));
    let line = err.to_string();
    assert!(
        line.contains("401") && line.contains("PAGERDUTY_TOKEN"),
        "{line}"
    );
    assert!(!line.contains("not-the-key"), "{line}");
    // The stand-in refused it for the header, not for anything else.
    assert_eq!(
        pd.seen()[0].header("authorization"),
        Some("Token token=not-the-key")
    );

    let c = config(&pd, &["PPOLICY1", "PNOSUCH1"]);
    let err = startup::start(&c, &key(), Clock::adjustable(), metrics)
        .await
        .err()
        .expect("an unknown policy stops the start");
    let line = err.to_string();
    assert!(
        line.starts_with(
            "oncall.escalation_policy_ids[1]: PagerDuty knows no escalation policy \"PNOSUCH1\""
        ),
        "{line}"
    );
}

#[tokio::test]
async fn an_unknown_mapped_user_is_a_warning_naming_the_member_and_the_key() {
    let pd = MockPagerDuty::start().await;
    pd.add_policy("PPOLICY1");
    pd.add_user("PALICE1", "Alice");
    let c = config(&pd, &["PPOLICY1"]);
    let (cache, checked) =
        startup::start(&c, &key(), Clock::adjustable(), Arc::new(Metrics::new()))
            .await
            .unwrap();
    assert_eq!(checked.warnings.len(), 1, "{:?}", checked.warnings);
    let w = &checked.warnings[0];
    assert!(
        w.starts_with(&format!(
            "oncall.users.\"{BOB}\": PagerDuty knows no user \"PBOB001\""
        )),
        "{w}"
    );
    assert!(
        w.contains(&format!("Discord member {BOB} will never count as on call")),
        "{w}"
    );
    assert_eq!(pd.seen_at("/users/").len(), 2);
    // Start-up filled the cache: nobody is on call, and that is an answer, not a failure.
    assert_eq!(cache.lookup(ALICE), OnCall::Off { max_level: 1 });
    assert!(cache.health_detail().is_none());
}

#[tokio::test]
async fn a_429_is_waited_out_as_ratelimit_reset_says() {
    let pd = pagerduty(0).await;
    let clock = Clock::adjustable();
    let c = config(&pd, &["PPOLICY1"]);
    let client = PagerDuty::new(&c, &key()).unwrap();
    let cache = Arc::new(OnCallCache::new(c, clock.clone()));
    pd.fail_next(Fault::RateLimited { reset_secs: 7 });
    let wait = cache.refresh_once(&client).await;
    assert!(
        wait > Duration::from_millis(6900) && wait <= Duration::from_secs(7),
        "{wait:?}"
    );
    // The refresher waits those 7 seconds (on the injected clock), then asks again.
    let mut attempts = cache.attempts();
    pd.fail_next(Fault::RateLimited { reset_secs: 7 });
    cache.spawn_refresher(client, Duration::ZERO);
    attempts.changed().await.unwrap();
    assert_eq!(pd.seen_at("/oncalls").len(), 2);
    clock.advance(Duration::from_secs(7));
    pd.wait_for("/oncalls", 3, Duration::from_secs(10)).await;
    attempts.changed().await.unwrap();
    assert!(matches!(cache.lookup(ALICE), OnCall::On(_)));
    // A plain refresh waits `refresh_secs`.
    assert!(cache.health_detail().is_none());
}

#[tokio::test]
async fn a_failing_or_hanging_pagerduty_is_served_for_the_grace_then_nobody_is_on_call() {
    let pd = pagerduty(0).await;
    let clock = Clock::adjustable();
    let metrics = Arc::new(Metrics::new());
    let c = config(&pd, &["PPOLICY1", "PPOLICY2"]);
    let client = PagerDuty::new(&c, &key())
        .unwrap()
        .with_timeout(Duration::from_millis(300));
    let cache = OnCallCache::new(c, clock.clone()).with_metrics(Arc::clone(&metrics));
    cache.refresh_once(&client).await;
    let OnCall::On(shift) = cache.lookup(ALICE) else {
        panic!("Alice is on call at level 1")
    };
    assert_eq!((shift.policy.as_str(), shift.level), ("PPOLICY1", 1));
    assert_eq!(
        cache.lookup(BOB),
        OnCall::Off { max_level: 1 },
        "level 2 is too deep"
    );
    assert_eq!(cache.lookup(42), OnCall::NotMapped);

    pd.set_down(Some(Fault::Status(500)));
    clock.advance(Duration::from_secs(60));
    cache.refresh_once(&client).await;
    pd.set_down(Some(Fault::Hang));
    clock.advance(Duration::from_secs(200));
    cache.refresh_once(&client).await;
    assert!(
        matches!(cache.lookup(ALICE), OnCall::On(_)),
        "within the grace"
    );
    let detail = cache.health_detail().unwrap();
    assert!(detail.contains("did not answer within"), "{detail}");
    assert!(metrics.render().contains("vncbot_oncall_stale 0"));

    clock.advance(Duration::from_secs(101));
    cache.refresh_once(&client).await;
    assert!(matches!(cache.lookup(ALICE), OnCall::Unavailable { .. }));
    let detail = cache.health_detail().unwrap();
    assert!(
        detail.contains("STALE") && detail.contains("nobody counts as on call"),
        "{detail}"
    );
    let text = metrics.render();
    assert!(text.contains("vncbot_oncall_stale 1"), "{text}");
    assert!(
        text.contains("vncbot_oncall_refresh_failures_total 3"),
        "{text}"
    );

    pd.set_down(None);
    cache.refresh_once(&client).await;
    assert!(matches!(cache.lookup(ALICE), OnCall::On(_)));
    assert!(metrics.render().contains("vncbot_oncall_stale 0"));
}

#[tokio::test]
async fn a_missing_key_is_one_clear_line_from_run_and_check_config() {
    let dir = support::TempDir::new("oncall-key");
    let cfg = support::write_config(
        &dir,
        &support::config_text(&dir, "http://127.0.0.1:9", "")
            .replace(
                "[limits]",
                "[oncall]\nprovider = \"pagerduty\"\napi_base = \"http://127.0.0.1:9\"\nescalation_policy_ids = [\"PPOLICY1\"]\n\n[limits]",
            ),
    );
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_vncbot"));
    let out = support::bot_command(bin, &cfg).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("PAGERDUTY_TOKEN is not set: export it before starting vncbot"),
        "{stderr}"
    );
    let out = tokio::process::Command::new(bin)
        .args(["check-config", "--config"])
        .arg(&cfg)
        .env_clear()
        .env("DISCORD_TOKEN", "x")
        .env("TENCENTCLOUD_SECRET_ID", "x")
        .env("TENCENTCLOUD_SECRET_KEY", "x")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("PAGERDUTY_TOKEN is not set"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("oncall: PagerDuty at http://127.0.0.1:9/"),
        "{stdout}"
    );
    // --offline checks no environment: the key is not needed.
    let out = tokio::process::Command::new(bin)
        .args(["check-config", "--offline", "--config"])
        .arg(&cfg)
        .env_clear()
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
