//! The pure checks branch by branch, and the core over a real journal: a use, its answer, the
//! daily cap and the overdue deadline across a restart.

use std::num::NonZeroU32;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::*;
use crate::access::{ApprovalMode, Rule};
use crate::audit::Journal;
use crate::clock::Clock;
use crate::config::LimitsConfig;
use crate::core::{Authority, Policy};
use crate::limits::RequestLimits;
use crate::tencent::{TencentError, VncUrl};

const ROLE: u64 = 555000000000000003;
const GLASS: u64 = 555000000000000008;
const APPROVER: u64 = 555000000000000009;
const ADMIN: u64 = 555000000000000007;
const GUILD: u64 = 800000000000000001;
const REASON: &str = "INC-7 the primary database is down";

fn sf(n: u64) -> Snowflake {
    Snowflake::new(n).unwrap()
}

fn gate(break_glass: &[u64]) -> Gate {
    Gate {
        approval: ApprovalMode::Required,
        approver_roles: vec![sf(APPROVER)],
        break_glass_roles: break_glass.iter().map(|r| sf(*r)).collect(),
        ..Gate::default()
    }
}

fn approvals(per_day: u32) -> ApprovalsConfig {
    ApprovalsConfig {
        channel_id: sf(810000000000000003),
        break_glass_minutes: 5,
        break_glass_per_day: per_day,
        ack_hours: 2,
        admin_roles: vec![sf(ADMIN)],
    }
}

#[test]
fn check_break_glass_branch_by_branch() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000_000);
    let a = approvals(2);
    let mine = [sf(ROLE), sf(GLASS)];
    let ok = |used: &[SystemTime]| {
        check_break_glass(&gate(&[GLASS]), Some(&a), &mine, Some(REASON), used, now)
    };
    assert!(ok(&[]).is_ok());
    // A rule without break-glass roles, or no [approvals] to post in: not offered.
    assert!(matches!(
        check_break_glass(&gate(&[]), Some(&a), &mine, Some(REASON), &[], now),
        Err(Refusal::BreakGlassNotOffered)
    ));
    assert!(matches!(
        check_break_glass(&gate(&[GLASS]), None, &mine, Some(REASON), &[], now),
        Err(Refusal::BreakGlassNotOffered)
    ));
    // Without the role, named in the refusal.
    match check_break_glass(
        &gate(&[GLASS]),
        Some(&a),
        &[sf(ROLE)],
        Some(REASON),
        &[],
        now,
    ) {
        Err(Refusal::BreakGlassNotAllowed { roles }) => assert_eq!(roles, vec![sf(GLASS)]),
        other => panic!("{other:?}"),
    }
    // Twenty characters after trimming, counted as characters, not bytes.
    let short = format!("  {}  ", "x".repeat(19));
    for reason in [None, Some("INC-7"), Some(short.as_str())] {
        assert!(
            matches!(
                check_break_glass(&gate(&[GLASS]), Some(&a), &mine, reason, &[], now),
                Err(Refusal::BreakGlassReasonShort)
            ),
            "{reason:?}"
        );
    }
    let twenty = "é".repeat(20);
    assert!(check_break_glass(&gate(&[GLASS]), Some(&a), &mine, Some(&twenty), &[], now).is_ok());
    // The cap counts a rolling 24 hours, and says when the oldest use leaves it.
    let hour = Duration::from_secs(3600);
    assert!(ok(&[now - 25 * hour, now - 30 * hour, now - hour]).is_ok());
    match ok(&[now - 23 * hour, now - hour]) {
        Err(Refusal::BreakGlassOverCap {
            per_day,
            retry_after,
        }) => {
            assert_eq!(per_day, 2);
            assert_eq!(retry_after, hour);
        }
        other => panic!("{other:?}"),
    }
}

fn a_use(now: SystemTime) -> BreakGlassUse {
    BreakGlassUse {
        id: 5,
        grant: 6,
        user: 1,
        name: "alice".into(),
        guild: sf(GUILD),
        instance: InstanceId::parse("ins-a1b2c3d4").unwrap(),
        region: Region::parse("ap-guangzhou").unwrap(),
        reason: REASON.into(),
        rule: Some(0),
        approver_roles: vec![sf(APPROVER)],
        admin_roles: vec![],
        at: now,
        until: now + Duration::from_secs(300),
        ack_by: now + Duration::from_secs(7200),
        standing: AckStanding::Open,
        overdue: false,
        posts: vec![],
    }
}

#[test]
fn check_answer_branch_by_branch() {
    let u = a_use(SystemTime::UNIX_EPOCH);
    let approver = [sf(APPROVER)];
    assert_eq!(check_answer(&u, 2, Some(&approver)), Ok(()));
    // The member, even holding the approver role.
    assert_eq!(
        check_answer(&u, 1, Some(&approver)),
        Err(AckRefusal::OwnUse)
    );
    assert_eq!(
        check_answer(&u, 2, Some(&[sf(ROLE)])),
        Err(AckRefusal::NotApprover)
    );
    assert_eq!(check_answer(&u, 2, None), Err(AckRefusal::RolesUnavailable));
    // Overdue is still open: an approver may answer it late.
    let late = BreakGlassUse {
        overdue: true,
        ..u.clone()
    };
    assert_eq!(check_answer(&late, 2, Some(&approver)), Ok(()));
    for standing in [
        AckStanding::Acknowledged { by: 4 },
        AckStanding::Flagged { by: 4 },
    ] {
        let answered = BreakGlassUse {
            standing: standing.clone(),
            ..u.clone()
        };
        // Says who answered first, to anyone.
        assert_eq!(
            check_answer(&answered, 1, None),
            Err(AckRefusal::Answered(standing))
        );
    }
    // A rule with no approver roles is answered by the admins.
    let none = Gate {
        approver_roles: vec![],
        ..gate(&[GLASS])
    };
    assert_eq!(approver_roles(&none, &approvals(2)), vec![sf(ADMIN)]);
}

struct NoConsole;

impl Console for NoConsole {
    async fn describe_instance_vnc_url(
        &self,
        _: &Region,
        _: &InstanceId,
        _: &(dyn Fn() -> bool + Sync),
    ) -> Result<VncUrl, TencentError> {
        Err(TencentError::Withdrawn)
    }
}

fn core(path: &Path, clock: &Clock) -> Core<NoConsole> {
    let n = |v| NonZeroU32::new(v).unwrap();
    let policy = Policy {
        rules: vec![Rule {
            roles: vec![sf(ROLE)],
            instances: vec!["*".into()],
            regions: None,
            tags: vec![],
            gate: gate(&[GLASS]),
        }],
        regions: vec![Region::parse("ap-guangzhou").unwrap()],
        require_reason: false,
        guilds: vec![sf(GUILD)],
        grant_for: Duration::from_secs(600),
        links_per_grant: 3,
        tencent: None,
        approvals: Some(approvals(2)),
    };
    let limits = RequestLimits::new(&LimitsConfig {
        per_user_per_minute: n(10),
        per_instance_per_minute: n(10),
        refusals_per_user_per_minute: n(10),
        api_per_second: n(10),
    });
    let (journal, _) = Journal::open_clocked(path, clock.clone()).unwrap();
    Core::new(policy, limits, journal, NoConsole).with_clock(clock.clone())
}

fn ask(user: u64) -> Request {
    Request {
        actor: Actor::Discord {
            id: user,
            name: format!("m{user}"),
        },
        authority: Authority::Roles(vec![sf(ROLE), sf(GLASS)]),
        guild: Some(sf(GUILD)),
        channel: None,
        instance: "ins-a1b2c3d4".into(),
        region: None,
        reason: Some(REASON.into()),
    }
}

fn approver(id: u64) -> Actor {
    Actor::Discord {
        id,
        name: format!("v{id}"),
    }
}

fn events(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["event"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// A use grants at once for the shorter window, is answered once, and the cap and an open
/// use's overdue deadline survive a restart (an overdue that passed while down is recorded at
/// start, once).
#[tokio::test]
async fn a_use_its_answer_the_cap_and_the_deadline_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let clock = Clock::adjustable();
    let before = core(&path, &clock);
    let first = before.break_glass(ask(1)).await.unwrap();
    // min(10-minute grants, 5-minute break-glass).
    assert_eq!(first.used.window(), Duration::from_secs(300));
    assert_eq!(first.grant.until, first.used.until);
    assert!(before.grant_is_live(first.grant.id));
    assert_eq!(before.break_glass_unacknowledged(), 1);
    before
        .record_break_glass_post(first.used.id, (77, 88))
        .await;
    let answered = before
        .answer_break_glass(
            first.used.id,
            &approver(9),
            Some(vec![sf(APPROVER)]),
            Answer::Acknowledge,
        )
        .await
        .unwrap();
    assert_eq!(answered.standing, AckStanding::Acknowledged { by: 9 });
    assert_eq!(
        before
            .answer_break_glass(
                first.used.id,
                &approver(10),
                Some(vec![sf(APPROVER)]),
                Answer::Flag
            )
            .await,
        Err(AckRefusal::Answered(AckStanding::Acknowledged { by: 9 }))
    );
    assert_eq!(before.break_glass_unacknowledged(), 0);
    clock.advance(Duration::from_secs(3600));
    let second = before.break_glass(ask(1)).await.unwrap();
    drop(before);

    // Down for 150 minutes: the second use's 2-hour deadline passed.
    clock.advance(Duration::from_secs(150 * 60));
    let after = core(&path, &clock);
    assert_eq!(after.resume_break_glass(&path).await.unwrap(), (1, 1));
    let open = after.break_glass_use(second.used.id).unwrap();
    assert!(open.overdue && open.is_open());
    assert_eq!(open.grant, second.grant.id);
    assert_eq!(
        after.break_glass_use(first.used.id).unwrap().posts,
        vec![(77, 88)]
    );
    assert_eq!(after.break_glass_unacknowledged(), 1);
    // The cap (2 a day) counts both uses from before the restart.
    assert!(matches!(
        after.break_glass(ask(1)).await,
        Err(Refusal::BreakGlassOverCap { per_day: 2, .. })
    ));
    // Another start records no second overdue.
    let again = core(&path, &clock);
    assert_eq!(again.resume_break_glass(&path).await.unwrap(), (1, 0));
    let events = events(&path);
    assert_eq!(events.iter().filter(|e| *e == "ack_overdue").count(), 1);
    assert_eq!(events.iter().filter(|e| *e == "break_glass").count(), 2);
    assert_eq!(
        events.iter().filter(|e| *e == "limited").count(),
        1,
        "the refusal over the cap is recorded"
    );
    // Flagged late, by an approver, after the restart.
    let flagged = again
        .answer_break_glass(
            second.used.id,
            &approver(10),
            Some(vec![sf(APPROVER)]),
            Answer::Flag,
        )
        .await
        .unwrap();
    assert_eq!(flagged.standing, AckStanding::Flagged { by: 10 });
    assert_eq!(again.break_glass_unacknowledged(), 0);
}

/// Twenty characters an approver can read: invisible format characters (zero-width spaces,
/// bidi marks) and padding between a few letters are not a reason.
#[test]
fn a_reason_of_invisible_characters_or_padding_is_short() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000_000);
    let a = approvals(2);
    let mine = [sf(ROLE), sf(GLASS)];
    let check =
        |reason: &str| check_break_glass(&gate(&[GLASS]), Some(&a), &mine, Some(reason), &[], now);
    let padded = format!("a{}b", " ".repeat(18));
    let invisible = "\u{200B}".repeat(20);
    let mixed = format!("INC-7{}", "\u{200B}\u{202E}\u{2060}".repeat(5));
    for reason in [padded.as_str(), invisible.as_str(), mixed.as_str()] {
        assert!(
            matches!(check(reason), Err(Refusal::BreakGlassReasonShort)),
            "{reason:?}"
        );
    }
    // Words separated by single spaces still count as written.
    assert!(check("INC-7 the primary is down").is_ok());
}

/// Acknowledge and Flag pressed at once by several approvers: exactly one answer is recorded,
/// every other press hears who answered, and the gauge goes to zero once, never below.
#[tokio::test]
async fn concurrent_answers_record_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let clock = Clock::adjustable();
    let core = std::sync::Arc::new(core(&path, &clock));
    let used = core.break_glass(ask(1)).await.unwrap().used;
    let presses = (0..8u64).map(|i| {
        let core = std::sync::Arc::clone(&core);
        let answer = if i % 2 == 0 {
            Answer::Acknowledge
        } else {
            Answer::Flag
        };
        tokio::spawn(async move {
            core.answer_break_glass(used.id, &approver(20 + i), Some(vec![sf(APPROVER)]), answer)
                .await
        })
    });
    let mut answered = 0;
    for press in presses.collect::<Vec<_>>() {
        match press.await.unwrap() {
            Ok(_) => answered += 1,
            Err(AckRefusal::Answered(s)) => assert_ne!(s, AckStanding::Open),
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(answered, 1);
    assert_eq!(core.break_glass_unacknowledged(), 0);
    let events = events(&path);
    let answers = events
        .iter()
        .filter(|e| *e == "acknowledged" || *e == "flagged")
        .count();
    assert_eq!(answers, 1, "{events:?}");
}

/// The cap's 24 hours are rolling: a use leaves them a day after it was made (the refusal says
/// how long is left, to the second), and refused attempts over the cap do not count.
#[tokio::test]
async fn the_cap_frees_a_use_exactly_a_day_later_and_refusals_do_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let clock = Clock::adjustable();
    let core = core(&path, &clock);
    core.break_glass(ask(1)).await.unwrap();
    clock.advance(Duration::from_secs(3600));
    core.break_glass(ask(1)).await.unwrap();
    for _ in 0..3 {
        assert!(matches!(
            core.break_glass(ask(1)).await,
            Err(Refusal::BreakGlassOverCap { .. })
        ));
    }
    clock.advance(Duration::from_secs(23 * 3600 - 1));
    let r = core.break_glass(ask(1)).await;
    assert!(
        matches!(r, Err(Refusal::BreakGlassOverCap { retry_after, .. })
            if retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1)),
        "{r:?}"
    );
    clock.advance(Duration::from_secs(1));
    core.break_glass(ask(1)).await.unwrap();
}

/// A `break_glass` whose `granted` never made it to the journal (the write failed, or the bot
/// stopped between the two) opened nothing: after a restart it is not an open use (no gauge, no
/// overdue re-post about access nobody had) and it does not count against the cap.
#[tokio::test]
async fn a_use_without_its_grant_is_not_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let clock = Clock::adjustable();
    let before = core(&path, &clock);
    let used = before.break_glass(ask(1)).await.unwrap().used;
    drop(before);
    // Keep the journal up to the `break_glass` record: its `granted` was never written.
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .take_while(|l| !l.contains("\"granted\""))
        .collect();
    assert!(kept.last().unwrap().contains("\"break_glass\""));
    std::fs::write(&path, format!("{}\n", kept.join("\n"))).unwrap();

    clock.advance(Duration::from_secs(3 * 3600));
    let after = core(&path, &clock);
    assert_eq!(after.resume_break_glass(&path).await.unwrap(), (0, 0));
    assert_eq!(after.break_glass_use(used.id), None);
    assert_eq!(after.break_glass_unacknowledged(), 0);
    assert!(!events(&path).iter().any(|e| e == "ack_overdue"));
    after.break_glass(ask(1)).await.unwrap();
    after.break_glass(ask(1)).await.unwrap();
}

/// An `ack_overdue` that cannot be written when it falls due (another writer holds the
/// journal's lock past the wait) is tried again, not dropped until the next restart.
#[tokio::test]
async fn an_overdue_that_could_not_be_recorded_is_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let clock = Clock::adjustable();
    let core = std::sync::Arc::new(core(&path, &clock));
    core.run_timers();
    let mut answers = core.break_glass_events();
    let used = core.break_glass(ask(1)).await.unwrap().used;
    let held = std::fs::File::open(&path).unwrap();
    rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
    clock.advance(Duration::from_secs(2 * 3600 + 1));
    // The overdue's write waits out the journal's lock wait (10 s) and fails.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(!core.journal().is_healthy());
    drop(held);
    assert!(!events(&path).iter().any(|e| e == "ack_overdue"));
    clock.advance(OVERDUE_RETRY);
    let event = tokio::time::timeout(Duration::from_secs(15), answers.recv())
        .await
        .expect("the overdue was tried again")
        .unwrap();
    assert!(matches!(event, BreakGlassEvent::Overdue(u) if u.id == used.id));
    assert_eq!(
        events(&path).iter().filter(|e| *e == "ack_overdue").count(),
        1
    );
}
