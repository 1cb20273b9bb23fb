//! Approvals: on a rule with `approval = "required"`, `/vnc` posts a request that approvers vote
//! on, and the grant starts when enough of them approve it.
//!
//! A request is identified by the `seq` of its `approval_requested` record; that number is all
//! an Approve, Deny or Cancel button's `custom_id` carries. Each state change is recorded before
//! it is shown: `approval_requested` → `approval_vote`… → `approved` (then `granted`, its window
//! starting at approval) | `request_denied` | `expired` | `cancelled`. Votes on one request are
//! serialised ([`vote`]), so exactly one decision is recorded. The approvals channel message is
//! the request's face, rendered from [`ApprovalEvent`]s; never the source of truth.

mod extend;
mod rebuild;
mod vote;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use super::grants::timers::Due;
use super::{Core, Grant, Refusal, Request};
use crate::access::Gate;
use crate::audit::{Actor, Entry, Event};
use crate::ids::{InstanceId, Region, Snowflake};
use crate::limits::Spend;
use crate::tencent::Console;

pub use extend::EXTEND_CODE;
pub use vote::{check_vote, Choice, VoteRefusal, Voted};

/// Approval events an adapter may fall behind by.
const EVENTS: usize = 1024;

/// One vote on a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    pub voter: u64,
    pub name: String,
    pub choice: Choice,
}

/// Where a request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    Pending,
    /// Approved; the grant it started.
    Approved {
        grant: u64,
    },
    /// Denied by this approver.
    Denied {
        by: u64,
    },
    Expired,
    Cancelled,
}

/// A request for access that waits for approvers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequest {
    /// The `seq` of the `approval_requested` record.
    pub id: u64,
    pub user: u64,
    pub name: String,
    pub guild: Snowflake,
    pub channel: Option<Snowflake>,
    pub instance: InstanceId,
    pub region: Region,
    pub reason: Option<String>,
    pub rule: Option<usize>,
    /// The rule's approvers, quorum and warning, as they were when it was asked.
    pub gate: Gate,
    /// How long the grant lasts once approved.
    pub window: Duration,
    pub expires: SystemTime,
    pub votes: Vec<Vote>,
    pub standing: Standing,
    /// Its messages in the approvals channel (channel, message): the post, and the reminder.
    pub posts: Vec<(u64, u64)>,
}

impl ApprovalRequest {
    pub fn requester(&self) -> Actor {
        Actor::Discord {
            id: self.user,
            name: self.name.clone(),
        }
    }

    pub fn approvals(&self) -> usize {
        self.votes
            .iter()
            .filter(|v| v.choice == Choice::Approve)
            .count()
    }

    pub fn is_pending(&self) -> bool {
        self.standing == Standing::Pending
    }
}

/// What `/vnc` opened: a grant at once, or a request for approvers.
#[derive(Debug)]
pub enum Opened {
    Granted(Grant),
    Requested(ApprovalRequest),
}

/// What became of requests, for the adapters to render (the state is already changed and
/// recorded when one is sent).
#[derive(Debug, Clone)]
pub enum ApprovalEvent {
    /// A vote was recorded: show who voted.
    Voted(ApprovalRequest),
    /// The request was decided, expired or cancelled: edit its post, tell the requester (with
    /// the grant when approved).
    Closed {
        request: ApprovalRequest,
        grant: Option<Grant>,
    },
    /// Half its time has passed with no decision: post it once more.
    Reminder(ApprovalRequest),
}

/// Something due for a request, served on the core's timer task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalDue {
    Expires(u64),
    Remind(u64),
}

/// Every request the core knows and the events about them.
pub(crate) struct Approvals {
    slots: Mutex<HashMap<u64, ApprovalRequest>>,
    /// One lock per request: presses on it are decided one at a time.
    locks: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    events: broadcast::Sender<ApprovalEvent>,
}

impl Default for Approvals {
    fn default() -> Self {
        Self {
            slots: Mutex::default(),
            locks: Mutex::default(),
            events: broadcast::channel(EVENTS).0,
        }
    }
}

impl Approvals {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ApprovalRequest>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_for(&self, id: u64) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(id).or_default())
    }

    fn emit(&self, event: ApprovalEvent) {
        let _ = self.events.send(event);
    }
}

impl<C: Console> Core<C> {
    /// What becomes of requests: votes, decisions, reminders.
    pub fn approval_events(&self) -> broadcast::Receiver<ApprovalEvent> {
        self.approvals.events.subscribe()
    }

    /// Requests still waiting for a decision: the `vncbot_approvals_pending` gauge.
    pub fn pending_approvals(&self) -> usize {
        let slots = self.approvals.slots();
        slots.values().filter(|r| r.is_pending()).count()
    }

    /// The request with this id, in whatever state.
    pub fn approval_request(&self, id: u64) -> Option<ApprovalRequest> {
        self.approvals.slots().get(&id).cloned()
    }

    /// `/vnc`: decides as for a grant; when the rule that allows it needs approval, records
    /// `approval_requested` (the reason is required then) and schedules its expiry and reminder
    /// instead of granting.
    pub async fn open(&self, req: Request) -> Result<Opened, Refusal> {
        let Actor::Discord { id: user, name } = req.actor.clone() else {
            return Err(Refusal::NotInGuild);
        };
        let policy = self.policy();
        let (a, on_call) = self.admit_on_call(&req, Spend::Member).await?;
        let gate = a
            .rule
            .and_then(|r| policy.rules.get(r))
            .map(|r| r.gate.clone())
            .unwrap_or_default();
        // An on-call member of an `on_call_skips_approval` rule needs no votes: the evidence
        // goes with the grant instead.
        let skips = gate.on_call_skips_approval && on_call.shift().is_some();
        if !gate.needs_approval() || skips {
            return self
                .grant_on_call(&req, a, &on_call)
                .await
                .map(Opened::Granted);
        }
        let guild = a.guild.ok_or(Refusal::NotInGuild)?;
        if a.reason.is_none() {
            return Err(self.refuse_request(&req, &a, Refusal::ReasonRequired).await);
        }
        let expires = self.clock.now() + gate.request_ttl;
        let id = self
            .record(
                Event::ApprovalRequested,
                &req,
                Some(&a.instance),
                Some(&a.region),
                Entry {
                    rule: a.rule,
                    until: Some(super::grants::rfc3339(expires)),
                    count: Some(u64::from(gate.approvals_required)),
                    on_call: (gate.on_call || gate.on_call_skips_approval)
                        .then(|| on_call.evidence())
                        .flatten(),
                    ..Entry::default()
                },
            )
            .await
            .map_err(Refusal::AuditUnavailable)?;
        let request = ApprovalRequest {
            id,
            user,
            name,
            guild,
            channel: a.channel,
            instance: a.instance,
            region: a.region,
            reason: a.reason,
            rule: a.rule,
            window: policy.grant_for,
            expires: super::grants::parse_rfc3339(&super::grants::rfc3339(expires))
                .unwrap_or(expires),
            gate,
            votes: Vec::new(),
            standing: Standing::Pending,
            posts: Vec::new(),
        };
        self.approvals.slots().insert(id, request.clone());
        self.schedule_request(&request);
        Ok(Opened::Requested(request))
    }

    fn schedule_request(&self, r: &ApprovalRequest) {
        let now = self.clock.now();
        let left = r.expires.duration_since(now).unwrap_or_default();
        self.timers
            .schedule(r.expires, Due::Approval(ApprovalDue::Expires(r.id)));
        if left > r.gate.request_ttl / 2 {
            self.timers.schedule(
                r.expires - r.gate.request_ttl / 2,
                Due::Approval(ApprovalDue::Remind(r.id)),
            );
        }
    }

    /// A refusal found after admission (the reason an approval rule needs): recorded like any.
    pub(crate) async fn refuse_request(
        &self,
        req: &Request,
        a: &super::Approved,
        refusal: Refusal,
    ) -> Refusal {
        let outcome = refusal.outcome();
        let written = self
            .record(
                outcome.event(),
                req,
                Some(&a.instance),
                Some(&a.region),
                Entry {
                    code: Some(outcome.code().to_owned()),
                    rule: a.rule,
                    ..Entry::default()
                },
            )
            .await;
        match written {
            Ok(_) => {
                self.count(&outcome);
                refusal
            }
            Err(e) => Refusal::AuditUnavailable(e),
        }
    }

    /// Records where the request was posted (`approval_posted`), so a restart can edit it.
    pub async fn record_request_post(&self, id: u64, post: (u64, u64)) {
        let instance = {
            let mut slots = self.approvals.slots();
            let Some(r) = slots.get_mut(&id) else {
                return;
            };
            r.posts.push(post);
            r.instance.to_string()
        };
        let written = self
            .journal
            .append(
                Event::Delivered,
                &super::grants::bot(),
                Entry {
                    instance: Some(instance),
                    channel: Some(post.0),
                    message: Some(post.1),
                    refers_to: Some(id),
                    ..Entry::default()
                },
            )
            .await;
        if let Err(e) = written {
            tracing::error!(request = id, error = %e, "AUDIT WRITE FAILED for a request's post");
        }
    }

    /// Serves a request's deadline (on the core's timer task).
    pub(crate) async fn fire_approval(&self, due: ApprovalDue) {
        match due {
            ApprovalDue::Expires(id) => {
                if let Err(e) = self
                    .close_request(id, &super::grants::bot(), Closing::Expired)
                    .await
                {
                    tracing::debug!(request = id, refusal = ?e, "a request's expiry found it closed");
                }
            }
            ApprovalDue::Remind(id) => {
                if let Some(r) = self
                    .approval_request(id)
                    .filter(ApprovalRequest::is_pending)
                {
                    self.approvals.emit(ApprovalEvent::Reminder(r));
                }
            }
        }
    }

    /// A press whose `custom_id` names no request in a form we make: recorded, refused.
    pub async fn refuse_request_button(&self, presser: &Actor) -> VoteRefusal {
        self.refuse_vote(presser, None, VoteRefusal::Unknown).await
    }

    /// The requester withdraws their request (the Cancel button in their DM).
    pub async fn cancel_request(
        &self,
        id: u64,
        by: &Actor,
    ) -> Result<ApprovalRequest, VoteRefusal> {
        match self.close_request(id, by, Closing::Cancelled).await {
            // A refused Cancel (not the requester's, forged, or late) is recorded like a vote.
            Err(
                refusal @ (VoteRefusal::Unknown
                | VoteRefusal::NotRequester
                | VoteRefusal::Closed(_)),
            ) => {
                let r = self.approval_request(id);
                Err(self.refuse_vote(by, r.as_ref(), refusal).await)
            }
            done => done,
        }
    }

    async fn close_request(
        &self,
        id: u64,
        by: &Actor,
        how: Closing,
    ) -> Result<ApprovalRequest, VoteRefusal> {
        let lock = self.approvals.lock_for(id);
        let _held = lock.lock().await;
        let r = self.approval_request(id).ok_or(VoteRefusal::Unknown)?;
        let by_requester = matches!(by, Actor::Discord { id, .. } if *id == r.user);
        if how == Closing::Cancelled && !by_requester {
            return Err(VoteRefusal::NotRequester);
        }
        if !r.is_pending() {
            return Err(VoteRefusal::Closed(r.standing.clone()));
        }
        let (event, standing) = match how {
            Closing::Expired => (Event::Expired, Standing::Expired),
            Closing::Cancelled => (Event::Cancelled, Standing::Cancelled),
        };
        self.journal
            .append(event, by, request_entry(&r))
            .await
            .map_err(|e| VoteRefusal::Audit(e.to_string()))?;
        let request = {
            let mut slots = self.approvals.slots();
            let s = slots.get_mut(&id).ok_or(VoteRefusal::Unknown)?;
            s.standing = standing;
            s.clone()
        };
        self.approvals.emit(ApprovalEvent::Closed {
            request: request.clone(),
            grant: None,
        });
        Ok(request)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Expired,
    Cancelled,
}

/// What every record about a request carries.
fn request_entry(r: &ApprovalRequest) -> Entry {
    Entry {
        guild: Some(r.guild.get()),
        instance: Some(r.instance.to_string()),
        region: Some(r.region.to_string()),
        refers_to: Some(r.id),
        ..Entry::default()
    }
}
