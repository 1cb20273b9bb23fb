//! Requests survive a restart: rebuilt from the journal with their votes and posts, their
//! timers scheduled again, and those that lapsed while the bot was down expired at start.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::{ApprovalRequest, Choice, Closing, Standing, Vote};
use crate::audit::{read_records, Actor, Event};
use crate::core::grants::{bot, parse_rfc3339};
use crate::core::Core;
use crate::ids::{InstanceId, Region, Snowflake};
use crate::tencent::Console;

/// Requests closed longer ago than this are not rebuilt (a late press hears "not valid").
const REMEMBER_CLOSED: Duration = Duration::from_secs(24 * 3600);

impl<C: Console> Core<C> {
    /// Rebuilds requests from the journal; expires those that lapsed while the bot was down and
    /// schedules the others' expiry and reminder. Returns (pending, lapsed).
    pub async fn resume_approvals(&self, journal: &Path) -> std::io::Result<(usize, usize)> {
        let now = self.clock.now();
        let policy = self.policy();
        let mut slots: HashMap<u64, ApprovalRequest> = HashMap::new();
        // An extension's request → the grant it asks to extend.
        let mut extends: HashMap<u64, u64> = HashMap::new();
        for record in read_records(journal)? {
            let r = record?;
            let e = &r.entry;
            let request = || e.refers_to.and_then(|q| slots.get(&q)).map(|q| q.id);
            match r.event {
                Event::ApprovalRequested => {
                    let Actor::Discord { id: user, name } = r.actor() else {
                        continue;
                    };
                    let parsed = (
                        e.until.as_deref().and_then(parse_rfc3339),
                        e.guild.and_then(Snowflake::new),
                        e.instance
                            .as_deref()
                            .and_then(|i| InstanceId::parse(i).ok()),
                        e.region.as_deref().and_then(|i| Region::parse(i).ok()),
                    );
                    let (Some(expires), Some(guild), Some(instance), Some(region)) = parsed else {
                        tracing::warn!(seq = r.seq, "a request could not be read back; skipped");
                        continue;
                    };
                    if expires + REMEMBER_CLOSED < now {
                        continue;
                    }
                    // The approvers in force now; the quorum as it was asked.
                    let Some(mut gate) = e
                        .rule
                        .and_then(|i| policy.rules.get(i))
                        .map(|rule| rule.gate.clone())
                        .filter(|g| g.needs_approval())
                    else {
                        tracing::warn!(
                            seq = r.seq,
                            "a request's rule no longer needs approval; it is expired"
                        );
                        continue;
                    };
                    if let (Some(super::EXTEND_CODE), Some(g)) = (e.code.as_deref(), e.refers_to) {
                        extends.insert(r.seq, g);
                    }
                    if let Some(n) = e.count.and_then(|n| u32::try_from(n).ok()) {
                        gate.approvals_required = n.max(1);
                    }
                    // Never wait longer than the rule's TTL from when it was asked (the record's
                    // time is to the millisecond: a second's slack).
                    let written = parse_rfc3339(&r.time).unwrap_or(now);
                    let expires = expires.min(written + gate.request_ttl + Duration::from_secs(1));
                    slots.insert(
                        r.seq,
                        ApprovalRequest {
                            id: r.seq,
                            user,
                            name,
                            guild,
                            channel: e.channel.and_then(Snowflake::new),
                            instance,
                            region,
                            reason: e.reason.clone(),
                            rule: e.rule,
                            gate,
                            window: policy.grant_for,
                            expires,
                            votes: Vec::new(),
                            standing: Standing::Pending,
                            posts: Vec::new(),
                        },
                    );
                }
                Event::Delivered => {
                    if let (Some(q), Some(c), Some(m)) = (request(), e.channel, e.message) {
                        if let Some(s) = slots.get_mut(&q) {
                            s.posts.push((c, m));
                        }
                    }
                }
                Event::ApprovalVote => {
                    let (Some(q), Actor::Discord { id, name }) = (request(), r.actor()) else {
                        continue;
                    };
                    let choice = match e.code.as_deref() {
                        Some("approve") => Choice::Approve,
                        Some("deny") => Choice::Deny,
                        _ => continue,
                    };
                    if let Some(s) = slots.get_mut(&q) {
                        s.votes.push(Vote {
                            voter: id,
                            name,
                            choice,
                        });
                    }
                }
                Event::Approved | Event::RequestDenied | Event::Expired | Event::Cancelled => {
                    let Some(s) = request().and_then(|q| slots.get_mut(&q)) else {
                        continue;
                    };
                    s.standing = match (r.event, r.actor()) {
                        (Event::Approved, _) => Standing::Approved {
                            grant: extends.get(&s.id).copied().unwrap_or(0),
                        },
                        (Event::RequestDenied, Actor::Discord { id, .. }) => {
                            Standing::Denied { by: id }
                        }
                        (Event::RequestDenied, _) => Standing::Denied { by: 0 },
                        (Event::Expired, _) => Standing::Expired,
                        _ => Standing::Cancelled,
                    };
                }
                Event::Granted => {
                    if let Some(s) = request().and_then(|q| slots.get_mut(&q)) {
                        s.standing = Standing::Approved { grant: r.seq };
                    }
                }
                _ => {}
            }
        }
        let pending: Vec<ApprovalRequest> =
            slots.values().filter(|r| r.is_pending()).cloned().collect();
        *self.approvals.slots() = slots;
        let (mut live, mut lapsed) = (0, 0);
        for r in pending {
            if r.expires <= now {
                lapsed += 1;
                if let Err(e) = self.close_request(r.id, &bot(), Closing::Expired).await {
                    tracing::error!(request = r.id, refusal = ?e, "could not expire a request that lapsed while the bot was down");
                }
            } else {
                live += 1;
                self.schedule_request(&r);
            }
        }
        // Open break-glass acknowledgements and their deadlines come back with the requests.
        self.resume_break_glass(journal).await?;
        Ok((live, lapsed))
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::access::{ApprovalMode, Gate, Rule};
    use crate::audit::Journal;
    use crate::clock::Clock;
    use crate::config::LimitsConfig;
    use crate::core::{Authority, Opened, Policy, Request};
    use crate::limits::RequestLimits;
    use crate::tencent::{TencentError, VncUrl};

    const ROLE: u64 = 555000000000000003;
    const APPROVER: u64 = 555000000000000009;

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

    fn sf(n: u64) -> Snowflake {
        Snowflake::new(n).unwrap()
    }

    fn core(path: &Path, clock: &Clock) -> Core<NoConsole> {
        let n = |v| NonZeroU32::new(v).unwrap();
        let policy = Policy {
            rules: vec![Rule {
                roles: vec![sf(ROLE)],
                instances: vec!["*".into()],
                regions: None,
                tags: vec![],
                gate: Gate {
                    approval: ApprovalMode::Required,
                    approver_roles: vec![sf(APPROVER)],
                    approvals_required: 2,
                    request_ttl: Duration::from_secs(600),
                    ..Gate::default()
                },
            }],
            regions: vec![Region::parse("ap-guangzhou").unwrap()],
            require_reason: false,
            guilds: vec![sf(800000000000000001)],
            grant_for: Duration::from_secs(600),
            links_per_grant: 3,
            tencent: None,
            approvals: None,
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
            authority: Authority::Roles(vec![sf(ROLE)]),
            guild: Some(sf(800000000000000001)),
            channel: None,
            instance: "ins-a1b2c3d4".into(),
            region: None,
            reason: Some("INC-7 the disk is full".into()),
        }
    }

    fn voter(id: u64) -> Actor {
        Actor::Discord {
            id,
            name: format!("v{id}"),
        }
    }

    /// A restart keeps a pending request with its vote (a second approval then approves it)
    /// and expires one that lapsed while the bot was down.
    #[tokio::test]
    async fn pending_requests_and_votes_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let clock = Clock::adjustable();
        let before = core(&path, &clock);
        let Opened::Requested(old) = before.open(ask(1)).await.unwrap() else {
            panic!("needs approval");
        };
        clock.advance(Duration::from_secs(300));
        let Opened::Requested(pending) = before.open(ask(2)).await.unwrap() else {
            panic!("needs approval");
        };
        before.record_request_post(pending.id, (77, 88)).await;
        before
            .vote(
                pending.id,
                &voter(9),
                Some(vec![sf(APPROVER)]),
                Choice::Approve,
            )
            .await
            .unwrap();
        drop(before);
        // Down for 6 minutes: the first request (10-minute TTL) lapsed, the second did not.
        clock.advance(Duration::from_secs(360));
        let after = core(&path, &clock);
        assert_eq!(after.resume_approvals(&path).await.unwrap(), (1, 1));
        assert_eq!(
            after.approval_request(old.id).unwrap().standing,
            Standing::Expired
        );
        let r = after.approval_request(pending.id).unwrap();
        assert_eq!(r.votes.len(), 1);
        assert_eq!(r.posts, vec![(77, 88)]);
        assert_eq!(r.expires, pending.expires);
        // The same voter again is refused; another approver completes the quorum.
        assert!(matches!(
            after
                .vote(
                    pending.id,
                    &voter(9),
                    Some(vec![sf(APPROVER)]),
                    Choice::Approve
                )
                .await,
            Err(super::super::VoteRefusal::AlreadyVoted)
        ));
        let voted = after
            .vote(
                pending.id,
                &voter(10),
                Some(vec![sf(APPROVER)]),
                Choice::Approve,
            )
            .await
            .unwrap();
        let grant = voted.grant.expect("approved");
        assert!(after.grant_is_live(grant.id));
        // And a third restart knows it was approved, with its grant.
        let again = core(&path, &clock);
        assert_eq!(again.resume_approvals(&path).await.unwrap(), (0, 0));
        assert_eq!(
            again.approval_request(pending.id).unwrap().standing,
            Standing::Approved { grant: grant.id }
        );
    }

    /// A Cancel refused (pressed by someone other than the requester, naming no request, or on a
    /// request already closed) is answered and recorded with its code, like any refused press.
    #[tokio::test]
    async fn refused_cancels_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let clock = Clock::adjustable();
        let c = core(&path, &clock);
        let Opened::Requested(r) = c.open(ask(1)).await.unwrap() else {
            panic!("needs approval");
        };
        assert_eq!(
            c.cancel_request(r.id, &voter(2)).await.unwrap_err(),
            super::super::VoteRefusal::NotRequester
        );
        assert_eq!(
            c.cancel_request(999_999, &voter(2)).await.unwrap_err(),
            super::super::VoteRefusal::Unknown
        );
        c.cancel_request(r.id, &voter(1)).await.unwrap();
        assert_eq!(
            c.cancel_request(r.id, &voter(1)).await.unwrap_err(),
            super::super::VoteRefusal::Closed(Standing::Cancelled)
        );
        let codes: Vec<(String, String)> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["event"].as_str().unwrap_or_default().to_owned(),
                    v["code"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .filter(|(_, code)| !code.is_empty())
            .collect();
        let want = |e: &str, c: &str| (e.to_owned(), c.to_owned());
        for expected in [
            want("denied", "not_requester"),
            want("invalid", "bad_button"),
            want("invalid", "request_closed"),
        ] {
            assert!(codes.contains(&expected), "{expected:?} not in {codes:?}");
        }
    }
}
