//! The Extend button: a grant's window grows once by the window in force, counted from its
//! current end. Checked from memory first ([`Core::begin_extend`], no Discord call), then against
//! the member's roles as Discord gives them now ([`Core::finish_extend`]), as a press on Open
//! console is. When the rule that allows it needs approval, the extension is a request for
//! approvers instead, and their approval extends this grant (src/core/approvals/extend.rs).
//!
//! Recorded as `extended` (`until` the new end, `previous_until` the old one); the end's timer is
//! scheduled again, and the one at the old end finds the grant live and leaves it.

use std::time::SystemTime;

use super::lifecycle::{parse_rfc3339, rfc3339};
use super::timers::Due;
use super::{is_holder, Extension, Grant, GrantEvent};
use crate::audit::{Actor, Entry, Event};
use crate::core::approvals::ApprovalRequest;
use crate::core::decision::authorize;
use crate::core::{Authority, Core, Refusal};
use crate::ids::Snowflake;
use crate::tencent::Console;

/// A grant whose window was extended.
#[derive(Debug, Clone)]
pub struct Extended {
    /// The grant, `until` its new end.
    pub grant: Grant,
    pub previous: SystemTime,
}

/// What a press on Extend did.
#[derive(Debug)]
pub enum Extending {
    Extended(Extended),
    /// The rule needs approval: this request asks approvers for the extension.
    Requested(ApprovalRequest),
}

/// Why a press on Extend was refused.
#[derive(Debug)]
pub enum ExtendRefusal {
    /// What a press on Open console would be told too (unknown, ended, not the holder, roles);
    /// recorded as such.
    Press(Refusal),
    /// The grant's one extension was used.
    AlreadyExtended,
    /// Its extension waits for approvers (this request).
    AlreadyAsked { request: u64 },
    /// The journal could not be written: nothing was extended.
    Audit(String),
}

impl ExtendRefusal {
    /// The code of its journal record.
    pub fn code(&self) -> String {
        match self {
            ExtendRefusal::Press(r) => return r.outcome().code().to_owned(),
            ExtendRefusal::AlreadyExtended => "already_extended",
            ExtendRefusal::AlreadyAsked { .. } => "extension_pending",
            ExtendRefusal::Audit(_) => "audit_unavailable",
        }
        .to_owned()
    }
}

impl<C: Console> Core<C> {
    /// First half of a press on Extend, from memory: the grant is live, the presser holds it,
    /// and its extension is still to be had; it is claimed now, so two presses at once extend
    /// once. Refusals are recorded.
    pub async fn begin_extend(&self, id: u64, presser: &Actor) -> Result<Grant, ExtendRefusal> {
        let now = self.clock.now();
        let checked = {
            let mut slots = self.grants.slots();
            match slots.get_mut(&id) {
                None => Err((None, ExtendRefusal::Press(Refusal::UnknownGrant))),
                Some(s) if !s.is_live(now) => Err((
                    Some(s.grant.clone()),
                    ExtendRefusal::Press(Refusal::GrantEnded),
                )),
                Some(s) if !is_holder(&s.grant, presser) => Err((
                    Some(s.grant.clone()),
                    ExtendRefusal::Press(Refusal::NotHolder),
                )),
                Some(s) => match s.extension {
                    Extension::Used => Err((Some(s.grant.clone()), ExtendRefusal::AlreadyExtended)),
                    Extension::Asked { request } => Err((
                        Some(s.grant.clone()),
                        ExtendRefusal::AlreadyAsked { request },
                    )),
                    Extension::Available => {
                        s.extension = Extension::Used;
                        Ok(s.grant.clone())
                    }
                },
            }
        };
        match checked {
            Ok(g) => Ok(g),
            Err((g, refusal)) => Err(self.refuse_extend(presser, g.as_ref(), refusal).await),
        }
    }

    /// Second half: the presser's roles as Discord gives them now (`None`: Discord could not
    /// say; the claim is given back). A rule that no longer allows the instance ends the grant,
    /// as a press does; a rule that needs approval opens a request; otherwise the window grows.
    pub async fn finish_extend(
        &self,
        grant: Grant,
        presser: &Actor,
        roles: Option<Vec<Snowflake>>,
    ) -> Result<Extending, ExtendRefusal> {
        let Some(roles) = roles else {
            self.release_extension(grant.id);
            let r = self
                .refuse_press(presser, Some(&grant), Refusal::RolesUnavailable)
                .await;
            return Err(ExtendRefusal::Press(r));
        };
        let policy = self.policy();
        let tags = self
            .catalog_view()
            .and_then(|v| v.lookup(&grant.instance).map(|i| i.tags.clone()));
        let rule = match authorize(
            &policy.rules,
            &Authority::Roles(roles),
            &grant.instance,
            &grant.region,
            tags.as_deref(),
        ) {
            Ok(rule) => rule,
            Err(denied) if denied.needs_tags() => {
                self.release_extension(grant.id);
                return Err(ExtendRefusal::Press(
                    self.refuse_press(presser, Some(&grant), denied).await,
                ));
            }
            Err(_) => {
                return Err(ExtendRefusal::Press(
                    self.role_removed(presser, &grant).await,
                ))
            }
        };
        let gate = rule
            .and_then(|r| policy.rules.get(r))
            .map(|r| r.gate.clone())
            .unwrap_or_default();
        if gate.needs_approval() {
            return self
                .ask_extension(&grant, rule, gate)
                .await
                .map(Extending::Requested)
                .map_err(|e| ExtendRefusal::Audit(e.to_string()));
        }
        self.extend_now(grant.id, presser, rule)
            .await
            .map(Extending::Extended)
    }

    /// Records `extended` and moves the grant's end by the window in force: from a press, or
    /// once approvers approved (`by` is then the holder, the approvers are on `approved`).
    pub(crate) async fn extend_now(
        &self,
        id: u64,
        by: &Actor,
        rule: Option<usize>,
    ) -> Result<Extended, ExtendRefusal> {
        let now = self.clock.now();
        let window = self.policy().grant_for;
        let Some(g) = self
            .grants
            .slots()
            .get(&id)
            .filter(|s| s.is_live(now))
            .map(|s| s.grant.clone())
        else {
            return Err(ExtendRefusal::Press(Refusal::GrantEnded));
        };
        let previous = g.until;
        let until = previous + window;
        // Whole seconds, as the journal keeps it, so a rebuilt grant is the same grant.
        let until = parse_rfc3339(&rfc3339(until)).unwrap_or(until);
        self.append(
            Event::Extended,
            by,
            Entry {
                guild: Some(g.guild.get()),
                instance: Some(g.instance.to_string()),
                region: Some(g.region.to_string()),
                rule,
                refers_to: Some(id),
                until: Some(rfc3339(until)),
                previous_until: Some(rfc3339(previous)),
                ..Entry::default()
            },
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, grant = id, "AUDIT WRITE FAILED for an extension; the grant keeps its end");
            ExtendRefusal::Audit(e.to_string())
        })?;
        let grant = {
            let mut slots = self.grants.slots();
            let Some(s) = slots.get_mut(&id) else {
                return Err(ExtendRefusal::Press(Refusal::UnknownGrant));
            };
            s.grant.until = until;
            s.extension = Extension::Used;
            s.grant.clone()
        };
        self.timers.schedule(until, Due::GrantEnds(id));
        self.grants.emit(GrantEvent::Extended {
            grant: grant.clone(),
        });
        Ok(Extended { grant, previous })
    }

    /// Whether the grant's DM should offer Extend: it is live and its extension unused.
    pub fn may_extend(&self, id: u64) -> bool {
        let now = self.clock.now();
        self.grants
            .slots()
            .get(&id)
            .is_some_and(|s| s.is_live(now) && s.extension == Extension::Available)
    }

    /// A claim that came to nothing (Discord could not give the roles): Extend may be pressed
    /// again.
    pub(crate) fn release_extension(&self, id: u64) {
        if let Some(s) = self.grants.slots().get_mut(&id) {
            if s.extension == Extension::Used {
                s.extension = Extension::Available;
            }
        }
    }

    /// Records a refused press on Extend.
    async fn refuse_extend(
        &self,
        presser: &Actor,
        grant: Option<&Grant>,
        refusal: ExtendRefusal,
    ) -> ExtendRefusal {
        if let ExtendRefusal::Press(r) = refusal {
            return ExtendRefusal::Press(self.refuse_press(presser, grant, r).await);
        }
        let entry = Entry {
            code: Some(refusal.code()),
            instance: grant.map(|g| g.instance.to_string()),
            region: grant.map(|g| g.region.to_string()),
            refers_to: grant.map(|g| g.id),
            ..Entry::default()
        };
        match self.append(Event::Invalid, presser, entry).await {
            Ok(_) => refusal,
            Err(e) => ExtendRefusal::Audit(e.to_string()),
        }
    }
}
