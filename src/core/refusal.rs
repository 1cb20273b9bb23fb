//! Why no link: each refusal names what happened, with what the person asking needs to fix it,
//! and maps to one [`Outcome`]. The sentences are the adapters'.

use std::time::Duration;

use crate::audit::AuditError;
use crate::ids::{InstanceId, InvalidInstanceId, InvalidRegion, Region, Snowflake};
use crate::limits::Limited;
use crate::tencent::TencentError;

use super::outcome::Outcome;

/// Longest reason we accept (and the Discord option's `max_length`).
pub const MAX_REASON_CHARS: usize = 200;
/// Shortest reason when `audit.require_reason` is on: "deploy" is not an explanation.
pub const MIN_REASON_CHARS: usize = 8;
/// Shortest reason for break-glass (visible characters, a run of spaces counted once): access without approval must say
/// why in words an approver can check later.
pub const MIN_BREAK_GLASS_REASON_CHARS: usize = 20;

/// Why no link (or no grant). The sentence a person is told is the adapter's: Discord's in
/// `discord::refusals`, the terminal's in the CLI.
#[derive(Debug)]
pub enum Refusal {
    NotInGuild,
    OtherGuild,
    BadInstance(InvalidInstanceId),
    BadRegion {
        problem: InvalidRegion,
        configured: String,
    },
    RegionNotServed(Region, String),
    /// The instance's product, or the product in that region, is not served by this bot.
    NotServed(crate::config::NotServed),
    ReasonRequired,
    ReasonTooShort,
    ReasonTooLong,
    Denied {
        instance: InstanceId,
        region: Region,
        would_allow: Vec<Snowflake>,
        /// Tags (as written in the config) of rules for the member's roles that the catalog
        /// could not vouch for.
        needs_tags: Vec<String>,
    },
    UnknownName {
        name: String,
        not_an_id: String,
    },
    AmbiguousName {
        name: String,
        choices: Vec<String>,
    },
    NotReady {
        label: String,
        state: String,
    },
    Limited(Limited),
    TooManyRefusals {
        retry_after: Duration,
    },
    /// Fail closed: nothing happens that cannot be recorded.
    AuditUnavailable(AuditError),
    UnknownGrant,
    GrantEnded,
    NotHolder,
    LinksUsed(u32),
    PressInProgress,
    RolesUnavailable,
    RoleRemoved {
        instance: InstanceId,
        region: Region,
    },
    Tencent {
        error: Box<TencentError>,
        message: String,
    },
    /// Break-glass on a rule without `break_glass_roles` (or with no `[approvals]` to post in).
    BreakGlassNotOffered,
    /// Break-glass by a member holding none of these roles.
    BreakGlassNotAllowed {
        roles: Vec<Snowflake>,
    },
    /// Break-glass with a reason shorter than [`MIN_BREAK_GLASS_REASON_CHARS`].
    BreakGlassReasonShort,
    /// Break-glass past the member's `per_day` uses in the last 24 hours; the oldest of them
    /// leaves that window after `retry_after`.
    BreakGlassOverCap {
        per_day: u32,
        retry_after: Duration,
    },
    /// A rule for the member's roles needs them on call, and PagerDuty (as cached) says they
    /// are not, are not mapped, or cannot be asked.
    NotOnCall {
        instance: InstanceId,
        region: Region,
        on_call: Box<crate::oncall::OnCall>,
    },
    /// A press on a grant given because the member was on call, who is no longer (the shift
    /// ended, or was handed over): the grant ends. With `Unavailable`, PagerDuty cannot be asked
    /// and the grant stays.
    ShiftEnded {
        instance: InstanceId,
        region: Region,
        on_call: Box<crate::oncall::OnCall>,
    },
}

impl Refusal {
    pub fn outcome(&self) -> Outcome {
        match self {
            Refusal::NotInGuild => Outcome::NotInGuild,
            Refusal::OtherGuild => Outcome::OtherGuild,
            Refusal::BadInstance(_) => Outcome::BadInstance,
            Refusal::BadRegion { .. } | Refusal::RegionNotServed(..) => Outcome::BadRegion,
            Refusal::NotServed(crate::config::NotServed::Region { .. }) => Outcome::BadRegion,
            Refusal::NotServed(crate::config::NotServed::Product { .. }) => Outcome::BadInstance,
            Refusal::ReasonRequired | Refusal::ReasonTooShort | Refusal::ReasonTooLong => {
                Outcome::BadReason
            }
            Refusal::Denied { .. } => Outcome::Denied,
            Refusal::Limited(Limited::User { .. }) => Outcome::LimitedUser,
            Refusal::Limited(Limited::Instance { .. }) => Outcome::LimitedInstance,
            Refusal::TooManyRefusals { .. } => Outcome::TooManyRefusals,
            Refusal::AuditUnavailable(_) => Outcome::AuditUnavailable,
            Refusal::UnknownGrant => Outcome::BadButton,
            Refusal::GrantEnded => Outcome::GrantEnded,
            Refusal::NotHolder => Outcome::NotHolder,
            Refusal::LinksUsed(_) => Outcome::LinksUsed,
            Refusal::PressInProgress => Outcome::PressInProgress,
            Refusal::RolesUnavailable => Outcome::RolesUnavailable,
            Refusal::RoleRemoved { .. } => Outcome::RoleRemoved,
            Refusal::UnknownName { .. } => Outcome::UnknownName,
            Refusal::AmbiguousName { .. } => Outcome::AmbiguousName,
            Refusal::NotReady { .. } => Outcome::InstanceNotReady,
            Refusal::Tencent { error, .. } => Outcome::tencent(error),
            Refusal::BreakGlassNotOffered => Outcome::BreakGlassNotOffered,
            Refusal::BreakGlassNotAllowed { .. } => Outcome::BreakGlassNotAllowed,
            Refusal::BreakGlassReasonShort => Outcome::BreakGlassReasonShort,
            Refusal::BreakGlassOverCap { .. } => Outcome::BreakGlassOverCap,
            Refusal::NotOnCall { .. } | Refusal::ShiftEnded { .. } => Outcome::Denied,
        }
    }

    /// A denial only because the catalog cannot vouch for a tag rule right now: a passing
    /// problem, not a lost role.
    pub fn needs_tags(&self) -> bool {
        matches!(self, Refusal::Denied { needs_tags, .. } if !needs_tags.is_empty())
    }

    /// Tencent's RequestId, where the refusal came from Tencent.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Refusal::Tencent { error, .. } => error.request_id(),
            _ => None,
        }
    }
}

impl From<InvalidInstanceId> for Refusal {
    fn from(e: InvalidInstanceId) -> Self {
        Refusal::BadInstance(e)
    }
}

/// Whole seconds to wait, rounded up (a wait of 0.2 s is "1 second").
pub fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// For logs: the refusal's code, and the underlying error where there is one. Never shown to a
/// person (the adapters have the sentences).
impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused: {}", self.outcome().code())?;
        match self {
            Refusal::AuditUnavailable(e) => write!(f, ": {e}"),
            Refusal::Tencent { error, .. } => write!(f, ": {error}"),
            _ => Ok(()),
        }
    }
}
