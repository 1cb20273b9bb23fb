//! A press on Acknowledge or Flag: [`check_answer`] decides from memory (pure), then the answer
//! is recorded under the use's lock, so exactly one answer is recorded.

use super::{use_entry, AckStanding, BreakGlassEvent, BreakGlassUse};
use crate::audit::{Actor, Entry, Event};
use crate::core::Core;
use crate::ids::Snowflake;
use crate::tencent::Console;

/// Acknowledge (it was justified) or Flag (it was not, or needs a look).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Answer {
    Acknowledge,
    Flag,
}

impl Answer {
    fn event(self) -> Event {
        match self {
            Answer::Acknowledge => Event::Acknowledged,
            Answer::Flag => Event::Flagged,
        }
    }
}

/// Why a press on a use's button was refused; each is recorded with its code. The sentences
/// live with the adapter (src/discord/break_glass.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckRefusal {
    /// The `custom_id` names no use this bot knows of (forged, foreign or forgotten).
    Unknown,
    /// Someone already acknowledged or flagged it.
    Answered(AckStanding),
    /// Pressed by the member who used it.
    OwnUse,
    NotApprover,
    /// Discord could not give the presser's roles now.
    RolesUnavailable,
    /// The journal could not be written (the error's text).
    Audit(String),
}

impl AckRefusal {
    /// The code of its journal record.
    pub fn code(&self) -> &'static str {
        match self {
            AckRefusal::Unknown => "bad_button",
            AckRefusal::Answered(_) => "already_answered",
            AckRefusal::OwnUse => "own_break_glass",
            AckRefusal::NotApprover => "not_approver",
            AckRefusal::RolesUnavailable => "roles_unavailable",
            AckRefusal::Audit(_) => "audit_unavailable",
        }
    }
}

/// Whether `presser` (holding `roles`, fetched afresh) may answer `u` now. Pure. An answered
/// use says so first, to anyone, naming who answered.
pub fn check_answer(
    u: &BreakGlassUse,
    presser: u64,
    roles: Option<&[Snowflake]>,
) -> Result<(), AckRefusal> {
    if !u.is_open() {
        return Err(AckRefusal::Answered(u.standing.clone()));
    }
    if presser == u.user {
        return Err(AckRefusal::OwnUse);
    }
    let roles = roles.ok_or(AckRefusal::RolesUnavailable)?;
    if !u.approver_roles.iter().any(|r| roles.contains(r)) {
        return Err(AckRefusal::NotApprover);
    }
    Ok(())
}

impl<C: Console> Core<C> {
    /// A press on Acknowledge or Flag by `presser`, whose roles were just fetched (`None`:
    /// Discord could not say). Serialised per use: `acknowledged` or `flagged` is recorded with
    /// who, then announced. A refused press is recorded with its code.
    pub async fn answer_break_glass(
        &self,
        id: u64,
        presser: &Actor,
        roles: Option<Vec<Snowflake>>,
        answer: Answer,
    ) -> Result<BreakGlassUse, AckRefusal> {
        let Actor::Discord { id: who, .. } = presser else {
            return Err(AckRefusal::NotApprover);
        };
        let lock = self.break_glass.lock_for(id);
        let _held = lock.lock().await;
        let Some(u) = self.break_glass_use(id) else {
            return Err(self.refuse_answer(presser, None, AckRefusal::Unknown).await);
        };
        if let Err(refusal) = check_answer(&u, *who, roles.as_deref()) {
            return Err(self.refuse_answer(presser, Some(&u), refusal).await);
        }
        self.journal
            .append(
                answer.event(),
                presser,
                Entry {
                    code: Some(<&str>::from(answer).to_owned()),
                    ..use_entry(&u)
                },
            )
            .await
            .map_err(|e| AckRefusal::Audit(e.to_string()))?;
        let u = {
            let mut slots = self.break_glass.slots();
            let s = slots.get_mut(&id).ok_or(AckRefusal::Unknown)?;
            s.standing = match answer {
                Answer::Acknowledge => AckStanding::Acknowledged { by: *who },
                Answer::Flag => AckStanding::Flagged { by: *who },
            };
            s.clone()
        };
        self.count_unacknowledged();
        self.break_glass.emit(BreakGlassEvent::Answered(u.clone()));
        Ok(u)
    }

    /// A press whose `custom_id` is in a use button's namespace but not in our exact form:
    /// recorded, refused.
    pub async fn refuse_break_glass_button(&self, presser: &Actor) -> AckRefusal {
        self.refuse_answer(presser, None, AckRefusal::Unknown).await
    }

    async fn refuse_answer(
        &self,
        presser: &Actor,
        u: Option<&BreakGlassUse>,
        refusal: AckRefusal,
    ) -> AckRefusal {
        let event = match refusal {
            AckRefusal::NotApprover | AckRefusal::OwnUse => Event::Denied,
            _ => Event::Invalid,
        };
        let entry = Entry {
            code: Some(refusal.code().to_owned()),
            ..u.map(use_entry).unwrap_or_default()
        };
        if let Err(e) = self.journal.append(event, presser, entry).await {
            return AckRefusal::Audit(e.to_string());
        }
        refusal
    }
}
