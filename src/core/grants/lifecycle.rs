//! A grant's life: opened by `/vnc`, its DM recorded, ended by Done, a lost role, a dropped
//! region or its window's end. Each change is recorded, then announced as a [`GrantEvent`].

use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::timers::Due;
use super::{is_holder, EndWhy, Grant, GrantEvent, GrantState, HEADS_UP_WINDOW, REMEMBER_ENDED};
use crate::audit::{Actor, Entry, Event};
use crate::core::{Core, Outcome, Refusal, Request};
use crate::limits::Spend;
use crate::tencent::Console;

pub(crate) fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// The bot itself, as the actor of what its timers do.
pub(crate) fn bot() -> Actor {
    Actor::Local {
        user: "vncbot".into(),
    }
}

impl<C: Console> Core<C> {
    /// `/vnc`: decides as for a link (the member's limit counts it), then records a `granted`
    /// record with `until` and schedules the window's end. No Tencent call.
    pub async fn grant(&self, req: Request) -> Result<Grant, Refusal> {
        let Actor::Discord { .. } = req.actor else {
            // Grants are for Discord members; `vncbot url` mints at once.
            return Err(Refusal::NotInGuild);
        };
        let a = self.admit(&req, Spend::Member).await?;
        self.grant_admitted(&req, a).await
    }

    /// Records the grant an admitted `/vnc` opens, and schedules its end.
    pub(crate) async fn grant_admitted(
        &self,
        req: &Request,
        a: crate::core::Approved,
    ) -> Result<Grant, Refusal> {
        let Actor::Discord { id: user, name } = req.actor.clone() else {
            return Err(Refusal::NotInGuild);
        };
        let guild = a.guild.ok_or(Refusal::NotInGuild)?;
        let until = self.clock.now() + self.policy().grant_for;
        let id = self
            .record(
                Event::Granted,
                req,
                Some(&a.instance),
                Some(&a.region),
                Entry {
                    rule: a.rule,
                    until: Some(rfc3339(until)),
                    ..Entry::default()
                },
            )
            .await
            .map_err(Refusal::AuditUnavailable)?;
        self.count(&Outcome::Granted);
        let grant = Grant {
            id,
            user,
            name,
            guild,
            instance: a.instance,
            region: a.region,
            reason: a.reason,
            // Whole seconds, as the journal keeps it, so a rebuilt grant is the same grant.
            until: parse_rfc3339(&rfc3339(until)).unwrap_or(until),
            dm: None,
        };
        self.start_grant(grant.clone());
        Ok(grant)
    }

    /// Holds a recorded grant and schedules its end (`/vnc`, or an approval).
    pub(crate) fn start_grant(&self, grant: Grant) {
        let (id, until) = (grant.id, grant.until);
        self.grants.slots().insert(id, GrantState::new(grant));
        self.timers.schedule(until, Due::GrantEnds(id));
    }

    /// Records the DM that carries a grant's buttons, or the outcome that kept it from being
    /// sent (which ends the grant: nobody could press its buttons). A DM whose record cannot be
    /// written ends the grant too, in memory for good: fail closed.
    pub async fn record_grant_dm(
        &self,
        grant: &Grant,
        dm: Result<(u64, u64), Outcome>,
    ) -> Result<(), Refusal> {
        let entry = Entry {
            instance: Some(grant.instance.to_string()),
            region: Some(grant.region.to_string()),
            refers_to: Some(grant.id),
            ..Entry::default()
        };
        let holder = grant.holder();
        match dm {
            Ok((channel, message)) => {
                if let Some(s) = self.grants.slots().get_mut(&grant.id) {
                    s.grant.dm = Some((channel, message));
                }
                let written = self
                    .append(
                        Event::Delivered,
                        &holder,
                        Entry {
                            channel: Some(channel),
                            message: Some(message),
                            ..entry
                        },
                    )
                    .await;
                if let Err(e) = written {
                    tracing::error!(error = %e, grant = grant.id, "AUDIT WRITE FAILED for a grant's DM; the grant is ended");
                    let _ = self.end_grant(grant.id, &holder, EndWhy::DmFailed).await;
                    return Err(Refusal::AuditUnavailable(e));
                }
                Ok(())
            }
            Err(outcome) => {
                let written = self.note(&outcome, &holder, entry).await;
                self.end_grant(grant.id, &holder, EndWhy::DmFailed).await?;
                written.map(|_| ()).map_err(Refusal::AuditUnavailable)
            }
        }
    }

    /// Ends a grant: `Done` only by its holder. `Ok(None)` when it had already ended. The end
    /// holds in memory even when its record cannot be written (then `AuditUnavailable`): a
    /// grant is never usable again once ended.
    pub async fn end_grant(
        &self,
        id: u64,
        by: &Actor,
        why: EndWhy,
    ) -> Result<Option<Grant>, Refusal> {
        let ended = {
            let mut slots = self.grants.slots();
            match slots.get_mut(&id) {
                None => Err(None),
                Some(s) if s.ended => Ok(None),
                Some(s) if why == EndWhy::Done && !is_holder(&s.grant, by) => {
                    Err(Some(s.grant.clone()))
                }
                Some(s) => {
                    s.ended = true;
                    s.end_why = Some(why);
                    Ok(Some(s.grant.clone()))
                }
            }
        };
        let grant = match ended {
            Ok(Some(g)) => g,
            Ok(None) => return Ok(None),
            Err(None) => return Err(self.refuse_button(by).await),
            Err(Some(g)) => {
                return Err(self.refuse_press(by, Some(&g), Refusal::NotHolder).await);
            }
        };
        let recorded = self
            .append(
                Event::Ended,
                by,
                Entry {
                    code: Some(why.code().to_owned()),
                    instance: Some(grant.instance.to_string()),
                    region: Some(grant.region.to_string()),
                    refers_to: Some(grant.id),
                    ..Entry::default()
                },
            )
            .await;
        self.grants.emit(GrantEvent::Ended {
            grant: grant.clone(),
            why,
        });
        // An extension still waiting for approvers has nothing left to extend.
        self.withdraw_extension(grant.id).await;
        match recorded {
            Ok(_) => Ok(Some(grant)),
            Err(e) => {
                tracing::error!(error = %e, grant = grant.id, code = why.code(),
                    "AUDIT WRITE FAILED for a grant's end; it stays ended in memory");
                Err(Refusal::AuditUnavailable(e))
            }
        }
    }

    /// Ends a grant whose window has run out (a no-op if it ended otherwise, or if an
    /// extension moved its end past now: its timer at the old end then finds it live).
    pub async fn expire_grant(&self, id: u64) -> Result<Option<Grant>, Refusal> {
        let now = self.clock.now();
        let extended = self
            .grants
            .slots()
            .get(&id)
            .is_some_and(|s| !s.ended && !s.grant.is_over(now));
        if extended {
            return Ok(None);
        }
        self.end_grant(id, &bot(), EndWhy::Expired).await
    }

    /// Why a grant ended, once it has.
    pub fn grant_end_why(&self, id: u64) -> Option<EndWhy> {
        self.grants.slots().get(&id).and_then(|s| s.end_why)
    }

    /// The grant with this id, live or ended.
    pub fn grant_by_id(&self, id: u64) -> Option<Grant> {
        self.grants.slots().get(&id).map(|s| s.grant.clone())
    }

    /// Whether a grant is live (not ended and within its window).
    pub fn grant_is_live(&self, id: u64) -> bool {
        let now = self.clock.now();
        self.grants.slots().get(&id).is_some_and(|s| s.is_live(now))
    }

    /// Forgets grants that ended long ago.
    /// Grants whose window is open now: the `vncbot_grants_live` gauge.
    pub fn live_grants(&self) -> usize {
        let now = self.clock.now();
        self.grants
            .slots()
            .values()
            .filter(|s| s.is_live(now))
            .count()
    }

    pub fn shrink_grants(&self) {
        let now = self.clock.now();
        self.grants
            .slots()
            .retain(|_, s| s.grant.until + REMEMBER_ENDED > now);
        let mut recent = self.grants.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|_, (_, at)| now.duration_since(*at).unwrap_or_default() < HEADS_UP_WINDOW);
    }
}
