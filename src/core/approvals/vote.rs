//! A press on Approve or Deny: [`check_vote`] decides from memory (pure), then the vote is
//! recorded, and a deciding vote records the decision, all under the request's lock.

use std::time::SystemTime;

use super::{request_entry, ApprovalEvent, ApprovalRequest, Standing, Vote};
use crate::audit::{Actor, Entry, Event};
use crate::core::grants::{parse_rfc3339, rfc3339};
use crate::core::{Core, Grant};
use crate::ids::Snowflake;
use crate::tencent::Console;

/// Approve or Deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Choice {
    Approve,
    Deny,
}

impl Choice {
    pub fn code(self) -> &'static str {
        self.into()
    }
}

/// Why a press on a request's button was refused; each is recorded with its code. The
/// sentences a member reads live with the adapter (src/discord/approvals.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VoteRefusal {
    /// The `custom_id` names no request this bot knows of.
    Unknown,
    /// The request was already decided, expired or cancelled.
    Closed(Standing),
    Expired,
    NotApprover,
    OwnRequest,
    AlreadyVoted,
    /// Cancel pressed by someone other than the requester.
    NotRequester,
    /// Discord could not give the presser's roles now.
    RolesUnavailable,
    /// The journal could not be written (the error's text).
    Audit(String),
}

impl VoteRefusal {
    /// The code of its journal record.
    pub fn code(&self) -> &'static str {
        match self {
            VoteRefusal::Unknown => "bad_button",
            VoteRefusal::Closed(_) | VoteRefusal::Expired => "request_closed",
            VoteRefusal::NotApprover => "not_approver",
            VoteRefusal::OwnRequest => "own_request",
            VoteRefusal::AlreadyVoted => "already_voted",
            VoteRefusal::NotRequester => "not_requester",
            VoteRefusal::RolesUnavailable => "roles_unavailable",
            VoteRefusal::Audit(_) => "audit_unavailable",
        }
    }
}

/// A vote recorded, and what it decided.
#[derive(Debug, Clone)]
pub struct Voted {
    pub request: ApprovalRequest,
    /// The grant an approving vote started.
    pub grant: Option<Grant>,
}

/// Whether `voter` (holding `roles`, fetched afresh) may vote on `r` now. Pure.
pub fn check_vote(
    r: &ApprovalRequest,
    voter: u64,
    roles: Option<&[Snowflake]>,
    now: SystemTime,
) -> Result<(), VoteRefusal> {
    if !r.is_pending() {
        return Err(VoteRefusal::Closed(r.standing.clone()));
    }
    if now >= r.expires {
        return Err(VoteRefusal::Expired);
    }
    if voter == r.user {
        return Err(VoteRefusal::OwnRequest);
    }
    let roles = roles.ok_or(VoteRefusal::RolesUnavailable)?;
    if !r.gate.may_vote(roles) {
        return Err(VoteRefusal::NotApprover);
    }
    if r.votes.iter().any(|v| v.voter == voter) {
        return Err(VoteRefusal::AlreadyVoted);
    }
    Ok(())
}

impl<C: Console> Core<C> {
    /// A press on Approve or Deny by `voter`, whose roles were just fetched (`None`: Discord
    /// could not say). Serialised per request: the vote is recorded, then a Deny records
    /// `request_denied`, and the N-th distinct Approve records `approved` and starts the grant
    /// (its window from now). A refused press is recorded with its code.
    pub async fn vote(
        &self,
        id: u64,
        voter: &Actor,
        roles: Option<Vec<Snowflake>>,
        choice: Choice,
    ) -> Result<Voted, VoteRefusal> {
        let Actor::Discord { id: who, name } = voter.clone() else {
            return Err(VoteRefusal::NotApprover);
        };
        let lock = self.approvals.lock_for(id);
        let _held = lock.lock().await;
        let Some(r) = self.approval_request(id) else {
            return Err(self.refuse_vote(voter, None, VoteRefusal::Unknown).await);
        };
        if let Err(refusal) = check_vote(&r, who, roles.as_deref(), self.clock.now()) {
            return Err(self.refuse_vote(voter, Some(&r), refusal).await);
        }
        let audit = |e: crate::audit::AuditError| VoteRefusal::Audit(e.to_string());
        self.journal
            .append(
                Event::ApprovalVote,
                voter,
                Entry {
                    code: Some(choice.code().to_owned()),
                    ..request_entry(&r)
                },
            )
            .await
            .map_err(audit)?;
        let mut r = {
            let mut slots = self.approvals.slots();
            let s = slots.get_mut(&id).ok_or(VoteRefusal::Unknown)?;
            s.votes.push(Vote {
                voter: who,
                name,
                choice,
            });
            s.clone()
        };
        let decided = match choice {
            Choice::Deny => Some(Standing::Denied { by: who }),
            Choice::Approve if r.approvals() >= r.gate.approvals_required as usize => {
                Some(Standing::Approved { grant: 0 })
            }
            Choice::Approve => None,
        };
        let Some(standing) = decided else {
            self.approvals.emit(ApprovalEvent::Voted(r.clone()));
            return Ok(Voted {
                request: r,
                grant: None,
            });
        };
        let grant = match standing {
            Standing::Denied { .. } => {
                self.journal
                    .append(Event::RequestDenied, voter, request_entry(&r))
                    .await
                    .map_err(audit)?;
                r.standing = standing;
                None
            }
            _ => {
                let approvers: Vec<String> = r
                    .votes
                    .iter()
                    .filter(|v| v.choice == Choice::Approve)
                    .map(|v| v.voter.to_string())
                    .collect();
                self.journal
                    .append(
                        Event::Approved,
                        voter,
                        Entry {
                            code: Some(approvers.join(",")),
                            ..request_entry(&r)
                        },
                    )
                    .await
                    .map_err(audit)?;
                // An extension's approval extends its grant (src/core/approvals/extend.rs).
                if let Some(g) = self.extension_target(r.id) {
                    match self.extend_now(g, &r.requester(), r.rule).await {
                        Ok(_) => {}
                        Err(crate::core::ExtendRefusal::Audit(e)) => {
                            return Err(VoteRefusal::Audit(e))
                        }
                        Err(e) => {
                            tracing::warn!(request = id, grant = g, refusal = ?e, "an approved extension found its grant ended");
                        }
                    }
                    r.standing = Standing::Approved { grant: g };
                    None
                } else {
                    let grant = self.grant_approved(&r).await.map_err(audit)?;
                    r.standing = Standing::Approved { grant: grant.id };
                    Some(grant)
                }
            }
        };
        if let Some(s) = self.approvals.slots().get_mut(&id) {
            s.standing = r.standing.clone();
        }
        self.approvals.emit(ApprovalEvent::Closed {
            request: r.clone(),
            grant: grant.clone(),
        });
        Ok(Voted { request: r, grant })
    }

    /// The grant an approval starts: `granted`, referring to the request, its window from now.
    async fn grant_approved(&self, r: &ApprovalRequest) -> Result<Grant, crate::audit::AuditError> {
        let until = self.clock.now() + r.window;
        let appended = self
            .journal
            .append(
                Event::Granted,
                &r.requester(),
                Entry {
                    channel: r.channel.map(Snowflake::get),
                    reason: r.reason.clone(),
                    rule: r.rule,
                    until: Some(rfc3339(until)),
                    ..request_entry(r)
                },
            )
            .await?;
        self.count(&crate::core::Outcome::Granted);
        let grant = Grant {
            id: appended.seq,
            user: r.user,
            name: r.name.clone(),
            guild: r.guild,
            instance: r.instance.clone(),
            region: r.region.clone(),
            reason: r.reason.clone(),
            until: parse_rfc3339(&rfc3339(until)).unwrap_or(until),
            dm: None,
        };
        self.start_grant(grant.clone());
        Ok(grant)
    }

    /// Records a refused press on a request's button, and returns the refusal.
    pub(super) async fn refuse_vote(
        &self,
        voter: &Actor,
        r: Option<&ApprovalRequest>,
        refusal: VoteRefusal,
    ) -> VoteRefusal {
        let event = match refusal {
            VoteRefusal::NotApprover | VoteRefusal::OwnRequest | VoteRefusal::NotRequester => {
                Event::Denied
            }
            _ => Event::Invalid,
        };
        let entry = Entry {
            code: Some(refusal.code().to_owned()),
            ..r.map(request_entry).unwrap_or_default()
        };
        if let Err(e) = self.journal.append(event, voter, entry).await {
            return VoteRefusal::Audit(e.to_string());
        }
        refusal
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::access::{ApprovalMode, Gate};
    use crate::ids::{InstanceId, Region};

    const APPROVER: u64 = 9;

    fn request(now: SystemTime) -> ApprovalRequest {
        ApprovalRequest {
            id: 5,
            user: 1,
            name: "alice".into(),
            guild: Snowflake::new(800000000000000001).unwrap(),
            channel: None,
            instance: InstanceId::parse("ins-a1b2c3d4").unwrap(),
            region: Region::parse("ap-guangzhou").unwrap(),
            reason: Some("INC-1 database down".into()),
            rule: Some(0),
            gate: Gate {
                approval: ApprovalMode::Required,
                approver_roles: vec![Snowflake::new(APPROVER).unwrap()],
                approvals_required: 2,
                ..Gate::default()
            },
            window: Duration::from_secs(600),
            expires: now + Duration::from_secs(60),
            votes: vec![],
            standing: Standing::Pending,
            posts: vec![],
        }
    }

    fn roles(r: &[u64]) -> Vec<Snowflake> {
        r.iter().map(|&r| Snowflake::new(r).unwrap()).collect()
    }

    #[test]
    fn check_vote_branch_by_branch() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let r = request(now);
        let approver = roles(&[APPROVER]);
        assert_eq!(check_vote(&r, 2, Some(&approver), now), Ok(()));
        // The requester, even holding the approver role.
        assert_eq!(
            check_vote(&r, 1, Some(&approver), now),
            Err(VoteRefusal::OwnRequest)
        );
        assert_eq!(
            check_vote(&r, 2, Some(&roles(&[3])), now),
            Err(VoteRefusal::NotApprover)
        );
        assert_eq!(
            check_vote(&r, 2, None, now),
            Err(VoteRefusal::RolesUnavailable)
        );
        let mut voted = r.clone();
        voted.votes.push(Vote {
            voter: 2,
            name: "bob".into(),
            choice: Choice::Approve,
        });
        assert_eq!(
            check_vote(&voted, 2, Some(&approver), now),
            Err(VoteRefusal::AlreadyVoted)
        );
        assert_eq!(check_vote(&voted, 3, Some(&approver), now), Ok(()));
        assert_eq!(
            check_vote(&r, 2, Some(&approver), r.expires),
            Err(VoteRefusal::Expired)
        );
        for standing in [
            Standing::Approved { grant: 8 },
            Standing::Denied { by: 4 },
            Standing::Expired,
            Standing::Cancelled,
        ] {
            let mut closed = r.clone();
            closed.standing = standing.clone();
            // A closed request says so first, to anyone, naming who decided.
            assert_eq!(
                check_vote(&closed, 1, None, now),
                Err(VoteRefusal::Closed(standing))
            );
        }
    }
}
