//! Break-glass uses survive a restart: the open ones (and the last day's, which the daily cap
//! counts) are rebuilt from the journal with their answers and posts, their overdue deadline is
//! scheduled again, and one that became overdue while the bot was down is recorded at start.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::{approver_roles, AckStanding, BreakGlassDue, BreakGlassUse, DAY};
use crate::audit::{read_records, Actor, Event};
use crate::core::grants::parse_rfc3339;
use crate::core::grants::timers::Due;
use crate::core::Core;
use crate::ids::{InstanceId, Region, Snowflake};
use crate::tencent::Console;

impl<C: Console> Core<C> {
    /// Rebuilds break-glass uses from the journal; records `ack_overdue` for those whose deadline
    /// passed while the bot was down, and schedules the others'. Returns (open, overdue at
    /// start).
    pub async fn resume_break_glass(&self, journal: &Path) -> std::io::Result<(usize, usize)> {
        let now = self.clock.now();
        let policy = self.policy();
        let approvals = policy.approvals.clone();
        let ack_within = approvals.as_ref().map_or(
            Duration::from_secs(u64::from(crate::config::DEFAULT_ACK_HOURS) * 3600),
            |a| a.ack_within(),
        );
        let mut slots: HashMap<u64, BreakGlassUse> = HashMap::new();
        for record in read_records(journal)? {
            let r = record?;
            let e = &r.entry;
            let used = e.refers_to.filter(|q| slots.contains_key(q));
            match r.event {
                Event::BreakGlass => {
                    let Actor::Discord { id: user, name } = r.actor() else {
                        continue;
                    };
                    let parsed = (
                        parse_rfc3339(&r.time),
                        e.until.as_deref().and_then(parse_rfc3339),
                        e.guild.and_then(Snowflake::new),
                        e.instance
                            .as_deref()
                            .and_then(|i| InstanceId::parse(i).ok()),
                        e.region.as_deref().and_then(|i| Region::parse(i).ok()),
                    );
                    let (Some(at), Some(until), Some(guild), Some(instance), Some(region)) = parsed
                    else {
                        tracing::warn!(
                            seq = r.seq,
                            "a break-glass use could not be read back; skipped"
                        );
                        continue;
                    };
                    // Who may answer: the rule's approvers in force now.
                    let gate = e
                        .rule
                        .and_then(|i| policy.rules.get(i))
                        .map(|rule| rule.gate.clone())
                        .unwrap_or_default();
                    let (approvers, admins) = match &approvals {
                        Some(a) => (approver_roles(&gate, a), a.admin_roles.clone()),
                        None => (gate.approver_roles.clone(), Vec::new()),
                    };
                    slots.insert(
                        r.seq,
                        BreakGlassUse {
                            id: r.seq,
                            grant: 0,
                            user,
                            name,
                            guild,
                            instance,
                            region,
                            reason: e.reason.clone().unwrap_or_default(),
                            rule: e.rule,
                            approver_roles: approvers,
                            admin_roles: admins,
                            at,
                            until,
                            ack_by: at + ack_within,
                            standing: AckStanding::Open,
                            overdue: false,
                            posts: Vec::new(),
                        },
                    );
                }
                Event::Granted => {
                    if let Some(s) = used.and_then(|q| slots.get_mut(&q)) {
                        s.grant = r.seq;
                    }
                }
                Event::Delivered => {
                    if let (Some(s), Some(c), Some(m)) =
                        (used.and_then(|q| slots.get_mut(&q)), e.channel, e.message)
                    {
                        s.posts.push((c, m));
                    }
                }
                Event::Acknowledged | Event::Flagged => {
                    let (Some(s), Actor::Discord { id, .. }) =
                        (used.and_then(|q| slots.get_mut(&q)), r.actor())
                    else {
                        continue;
                    };
                    if s.is_open() {
                        s.standing = if r.event == Event::Acknowledged {
                            AckStanding::Acknowledged { by: id }
                        } else {
                            AckStanding::Flagged { by: id }
                        };
                    }
                }
                Event::AckOverdue => {
                    if let Some(s) = used.and_then(|q| slots.get_mut(&q)) {
                        s.overdue = true;
                    }
                }
                _ => {}
            }
        }
        // A use whose `granted` was never written (the write failed, or the bot stopped between
        // the two) opened nothing: no open use to answer, and not one the cap counts.
        slots.retain(|_, u| u.grant != 0 && (u.is_open() || u.at + DAY > now));
        let waiting: Vec<BreakGlassUse> = slots
            .values()
            .filter(|u| u.is_open() && !u.overdue)
            .cloned()
            .collect();
        let open = slots.values().filter(|u| u.is_open()).count();
        *self.break_glass.slots() = slots;
        self.count_unacknowledged();
        let mut lapsed = 0;
        for u in waiting {
            if u.ack_by <= now {
                lapsed += 1;
                self.mark_overdue(u.id).await;
            } else {
                self.timers
                    .schedule(u.ack_by, Due::BreakGlass(BreakGlassDue::AckOverdue(u.id)));
            }
        }
        tracing::info!(
            open,
            overdue_at_start = lapsed,
            "break-glass uses rebuilt from the journal"
        );
        Ok((open, lapsed))
    }
}
