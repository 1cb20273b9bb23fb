//! Break-glass: `/vnc … break_glass:True` by a member holding one of the rule's
//! `break_glass_roles` skips approval in an emergency, loudly. It needs a reason of at least
//! [`MIN_BREAK_GLASS_REASON_CHARS`] characters and stays within `break_glass_per_day` uses per
//! member in any 24 hours (a rolling window, counted from the journal's `break_glass` records, so
//! a restart does not reset it).
//!
//! A use is identified by the `seq` of its `break_glass` record; that number is all an
//! Acknowledge or Flag button's `custom_id` carries. Each change is recorded before it is shown:
//! `break_glass` (with the rule's roles and the reason) → `granted` (referring to it, its window
//! `min(grant_minutes, break_glass_minutes)` from now) → `acknowledged` | `flagged` by an
//! approver other than the member, or `ack_overdue` after `ack_hours` with neither (re-posted once,
//! the `[approvals] admin_roles` pinged too). Answers are serialised per use ([`ack`]); the core's
//! timer task serves the overdue deadline on the injected clock, and [`rebuild`] brings open uses
//! back at start. The approvals channel's message is the use's face, rendered from
//! [`BreakGlassEvent`]s.

mod ack;
mod rebuild;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use super::grants::timers::Due;
use super::grants::{parse_rfc3339, rfc3339};
use super::{Authority, Core, Grant, Outcome, Refusal, Request, MIN_BREAK_GLASS_REASON_CHARS};
use crate::access::Gate;
use crate::audit::{Actor, Entry, Event};
use crate::config::ApprovalsConfig;
use crate::ids::{InstanceId, Region, Snowflake};
use crate::limits::Spend;
use crate::tencent::Console;

pub use ack::{check_answer, AckRefusal, Answer};

/// The window `break_glass_per_day` counts in.
pub const DAY: Duration = Duration::from_secs(24 * 3600);
/// How soon an `ack_overdue` that could not be recorded is tried again.
const OVERDUE_RETRY: Duration = Duration::from_secs(60);
/// Break-glass events an adapter may fall behind by.
const EVENTS: usize = 1024;

/// Where a use's acknowledgement stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckStanding {
    /// Nobody has acknowledged or flagged it yet.
    Open,
    Acknowledged {
        by: u64,
    },
    Flagged {
        by: u64,
    },
}

/// One break-glass use and its acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakGlassUse {
    /// The `seq` of the `break_glass` record.
    pub id: u64,
    /// The `seq` of the `granted` record it opened (0 until known).
    pub grant: u64,
    pub user: u64,
    pub name: String,
    pub guild: Snowflake,
    pub instance: InstanceId,
    pub region: Region,
    pub reason: String,
    pub rule: Option<usize>,
    /// Roles whose members may acknowledge or flag it, pinged when it is posted: the rule's
    /// approver roles, or `[approvals] admin_roles` for a rule that has none.
    pub approver_roles: Vec<Snowflake>,
    /// `[approvals] admin_roles`, pinged too once it is overdue.
    pub admin_roles: Vec<Snowflake>,
    /// When it was used, and when the grant it opened ends.
    pub at: SystemTime,
    pub until: SystemTime,
    /// When it becomes overdue without an answer.
    pub ack_by: SystemTime,
    pub standing: AckStanding,
    /// `ack_overdue` is recorded.
    pub overdue: bool,
    /// Its messages in the approvals channel (channel, message): the post, and the overdue one.
    pub posts: Vec<(u64, u64)>,
}

impl BreakGlassUse {
    pub fn member(&self) -> Actor {
        Actor::Discord {
            id: self.user,
            name: self.name.clone(),
        }
    }

    /// Neither acknowledged nor flagged: what `vncbot_break_glass_unacknowledged` counts.
    pub fn is_open(&self) -> bool {
        self.standing == AckStanding::Open
    }

    /// How long the grant it opened lasts.
    pub fn window(&self) -> Duration {
        self.until.duration_since(self.at).unwrap_or_default()
    }
}

/// What break-glass opened: the use, and its grant.
#[derive(Debug, Clone)]
pub struct BrokeGlass {
    pub used: BreakGlassUse,
    pub grant: Grant,
}

/// What became of uses, for the adapters to render (recorded before it is sent).
#[derive(Debug, Clone)]
pub enum BreakGlassEvent {
    /// Acknowledged or flagged: edit its posts.
    Answered(BreakGlassUse),
    /// `ack_hours` passed with no answer: post it once more, louder.
    Overdue(BreakGlassUse),
}

/// Something due for a use, served on the core's timer task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakGlassDue {
    AckOverdue(u64),
}

/// The roles that may answer a use of this rule: its approver roles, else the admins'.
pub fn approver_roles(gate: &Gate, approvals: &ApprovalsConfig) -> Vec<Snowflake> {
    if gate.approver_roles.is_empty() {
        approvals.admin_roles.clone()
    } else {
        gate.approver_roles.clone()
    }
}

/// Whether a member holding `roles` may use break-glass on a rule with `gate` now, with this
/// `reason`, having used it at `used` (times within the last 24 hours). Pure: every branch is
/// a refusal the member reads.
pub fn check_break_glass(
    gate: &Gate,
    approvals: Option<&ApprovalsConfig>,
    roles: &[Snowflake],
    reason: Option<&str>,
    used: &[SystemTime],
    now: SystemTime,
) -> Result<(), Refusal> {
    let Some(approvals) = approvals.filter(|_| !gate.break_glass_roles.is_empty()) else {
        return Err(Refusal::BreakGlassNotOffered);
    };
    if !gate.may_break_glass(roles) {
        return Err(Refusal::BreakGlassNotAllowed {
            roles: gate.break_glass_roles.clone(),
        });
    }
    if reason.map_or(0, crate::text::readable_chars) < MIN_BREAK_GLASS_REASON_CHARS {
        return Err(Refusal::BreakGlassReasonShort);
    }
    let in_window: Vec<SystemTime> = used.iter().copied().filter(|t| *t + DAY > now).collect();
    if in_window.len() >= approvals.break_glass_per_day as usize {
        let oldest = in_window.iter().min().copied().unwrap_or(now);
        return Err(Refusal::BreakGlassOverCap {
            per_day: approvals.break_glass_per_day,
            retry_after: (oldest + DAY).duration_since(now).unwrap_or_default(),
        });
    }
    Ok(())
}

/// Every use the core remembers (open ones, and any from the last 24 hours for the cap).
pub(crate) struct BreakGlasses {
    slots: Mutex<HashMap<u64, BreakGlassUse>>,
    /// One lock per use: answers to it are decided one at a time.
    locks: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    /// Held from a member's cap check to their `break_glass` record: two uses at once cannot
    /// both pass the cap.
    using: tokio::sync::Mutex<()>,
    events: broadcast::Sender<BreakGlassEvent>,
}

impl Default for BreakGlasses {
    fn default() -> Self {
        Self {
            slots: Mutex::default(),
            locks: Mutex::default(),
            using: tokio::sync::Mutex::default(),
            events: broadcast::channel(EVENTS).0,
        }
    }
}

impl BreakGlasses {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, BreakGlassUse>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_for(&self, id: u64) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry(id).or_default())
    }

    fn emit(&self, event: BreakGlassEvent) {
        let _ = self.events.send(event);
    }
}

impl<C: Console> Core<C> {
    /// What becomes of break-glass uses: answers and overdue ones.
    pub fn break_glass_events(&self) -> broadcast::Receiver<BreakGlassEvent> {
        self.break_glass.events.subscribe()
    }

    /// The use with this id, in whatever state.
    pub fn break_glass_use(&self, id: u64) -> Option<BreakGlassUse> {
        self.break_glass.slots().get(&id).cloned()
    }

    /// Uses nobody has acknowledged or flagged: the `vncbot_break_glass_unacknowledged` gauge.
    pub fn break_glass_unacknowledged(&self) -> usize {
        self.break_glass
            .slots()
            .values()
            .filter(|u| u.is_open())
            .count()
    }

    fn count_unacknowledged(&self) {
        let open = self.break_glass_unacknowledged();
        self.metrics
            .break_glass_unacknowledged
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// `/vnc … break_glass:True`: decides as for a grant (the allowlist and the member's
    /// limit), then checks break-glass ([`check_break_glass`]); records `break_glass` and a
    /// `granted` referring to it, and schedules the acknowledgement's deadline. A refusal is
    /// recorded with its code, and nothing is granted.
    pub async fn break_glass(&self, req: Request) -> Result<BrokeGlass, Refusal> {
        let Actor::Discord { id: user, name } = req.actor.clone() else {
            return Err(Refusal::NotInGuild);
        };
        let policy = self.policy();
        let a = self.admit(&req, Spend::Member).await?;
        let guild = a.guild.ok_or(Refusal::NotInGuild)?;
        let gate = a
            .rule
            .and_then(|r| policy.rules.get(r))
            .map(|r| r.gate.clone())
            .unwrap_or_default();
        let roles = match &req.authority {
            Authority::Roles(r) => r.as_slice(),
            Authority::LocalCredentials => &[],
        };
        let _using = self.break_glass.using.lock().await;
        let now = self.clock.now();
        self.forget_old_uses(now);
        let used: Vec<SystemTime> = self
            .break_glass
            .slots()
            .values()
            .filter(|u| u.user == user)
            .map(|u| u.at)
            .collect();
        let approvals = policy.approvals.as_ref();
        if let Err(refusal) =
            check_break_glass(&gate, approvals, roles, a.reason.as_deref(), &used, now)
        {
            return Err(self.refuse_request(&req, &a, refusal).await);
        }
        let approvals = approvals.ok_or(Refusal::BreakGlassNotOffered)?;
        let window = policy.grant_for.min(approvals.break_glass_for());
        // Whole seconds, as the journal keeps them, so a rebuilt use is the same use.
        let until = parse_rfc3339(&rfc3339(now + window)).unwrap_or(now + window);
        let in_day = used.iter().filter(|t| **t + DAY > now).count() as u64 + 1;
        let id = self
            .record(
                Event::BreakGlass,
                &req,
                Some(&a.instance),
                Some(&a.region),
                Entry {
                    rule: a.rule,
                    until: Some(rfc3339(until)),
                    count: Some(in_day),
                    ..Entry::default()
                },
            )
            .await
            .map_err(Refusal::AuditUnavailable)?;
        let granted = self
            .record(
                Event::Granted,
                &req,
                Some(&a.instance),
                Some(&a.region),
                Entry {
                    rule: a.rule,
                    until: Some(rfc3339(until)),
                    refers_to: Some(id),
                    ..Entry::default()
                },
            )
            .await
            .map_err(Refusal::AuditUnavailable)?;
        self.count(&Outcome::Granted);
        let grant = Grant {
            id: granted,
            user,
            name: name.clone(),
            guild,
            instance: a.instance.clone(),
            region: a.region.clone(),
            reason: a.reason.clone(),
            until,
            dm: None,
        };
        self.start_grant(grant.clone());
        // Listed as break-glass by `/vncadmin grants`, and not extendable (src/core/admin.rs).
        self.mark_break_glass(granted);
        let used = BreakGlassUse {
            id,
            grant: granted,
            user,
            name,
            guild,
            instance: a.instance,
            region: a.region,
            reason: a.reason.unwrap_or_default(),
            rule: a.rule,
            approver_roles: approver_roles(&gate, approvals),
            admin_roles: approvals.admin_roles.clone(),
            at: now,
            until,
            ack_by: now + approvals.ack_within(),
            standing: AckStanding::Open,
            overdue: false,
            posts: Vec::new(),
        };
        self.break_glass.slots().insert(id, used.clone());
        self.count_unacknowledged();
        self.timers
            .schedule(used.ack_by, Due::BreakGlass(BreakGlassDue::AckOverdue(id)));
        Ok(BrokeGlass { used, grant })
    }

    /// Answered uses are kept a day (the cap counts them, a late press hears who answered);
    /// open ones until someone answers.
    fn forget_old_uses(&self, now: SystemTime) {
        self.break_glass
            .slots()
            .retain(|_, u| u.is_open() || u.at + DAY > now);
    }

    /// Records where a use was posted (`delivered`, referring to it), so a restart can edit it.
    pub async fn record_break_glass_post(&self, id: u64, post: (u64, u64)) {
        let instance = {
            let mut slots = self.break_glass.slots();
            let Some(u) = slots.get_mut(&id) else {
                return;
            };
            u.posts.push(post);
            u.instance.to_string()
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
            tracing::error!(break_glass = id, error = %e, "AUDIT WRITE FAILED for a break-glass post");
        }
    }

    /// Serves a use's deadline (on the core's timer task).
    pub(crate) async fn fire_break_glass(&self, due: BreakGlassDue) {
        match due {
            BreakGlassDue::AckOverdue(id) => self.mark_overdue(id).await,
        }
    }

    /// `ack_overdue`, once, for a use still open: recorded, then announced for the re-post.
    async fn mark_overdue(&self, id: u64) {
        let lock = self.break_glass.lock_for(id);
        let _held = lock.lock().await;
        let Some(u) = self
            .break_glass_use(id)
            .filter(|u| u.is_open() && !u.overdue)
        else {
            return;
        };
        let written = self
            .journal
            .append(Event::AckOverdue, &super::grants::bot(), use_entry(&u))
            .await;
        if let Err(e) = written {
            // A journal busy for a moment (another writer holding its lock) must not silence the
            // escalation until the next restart: tried again shortly.
            tracing::error!(break_glass = id, error = %e, "AUDIT WRITE FAILED for an overdue break-glass acknowledgement; trying again in a minute");
            self.timers.schedule(
                self.clock.now() + OVERDUE_RETRY,
                Due::BreakGlass(BreakGlassDue::AckOverdue(id)),
            );
            return;
        }
        let u = {
            let mut slots = self.break_glass.slots();
            let Some(s) = slots.get_mut(&id) else {
                return;
            };
            s.overdue = true;
            s.clone()
        };
        self.break_glass.emit(BreakGlassEvent::Overdue(u));
    }
}

/// What every record about a use carries.
fn use_entry(u: &BreakGlassUse) -> Entry {
    Entry {
        guild: Some(u.guild.get()),
        instance: Some(u.instance.to_string()),
        region: Some(u.region.to_string()),
        refers_to: Some(u.id),
        ..Entry::default()
    }
}

#[cfg(test)]
mod tests;
