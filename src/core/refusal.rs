//! Why no link: each refusal carries the sentence the member is told, and maps to one
//! [`Outcome`].

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

#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("/vnc works only in the team's server, not in DMs. Run it in a channel there.")]
    NotInGuild,
    #[error("/vnc is not enabled in this server.")]
    OtherGuild,
    #[error("{0}")]
    BadInstance(#[from] InvalidInstanceId),
    #[error("{problem} This bot serves: {configured}.")]
    BadRegion {
        problem: InvalidRegion,
        configured: String,
    },
    #[error("{0} is not one of this bot's regions. It serves: {1}.")]
    RegionNotServed(Region, String),
    /// The instance's product, or the product in that region, is not served by this bot.
    #[error("{}", capitalised(.0))]
    NotServed(crate::config::NotServed),
    #[error("A reason is required: say why you need the console, in at least {MIN_REASON_CHARS} characters (for example the incident or ticket).")]
    ReasonRequired,
    #[error("The reason is too short: give at least {MIN_REASON_CHARS} characters (for example the incident or ticket).")]
    ReasonTooShort,
    #[error("The reason is too long: keep it under {MAX_REASON_CHARS} characters.")]
    ReasonTooLong,
    #[error("{}", denied_message(instance, region, would_allow, needs_tags))]
    Denied {
        instance: InstanceId,
        region: Region,
        would_allow: Vec<Snowflake>,
        /// Tags (as written in the config) of rules for the member's roles that the catalog
        /// could not vouch for.
        needs_tags: Vec<String>,
    },
    #[error("No instance you may open is named {name}, and it is not an instance ID either ({not_an_id}). Type a few letters in the instance option and pick from the list, or give its ID (ins-…).")]
    UnknownName { name: String, not_an_id: String },
    #[error("Several instances you may open are named {name}: {}. Run /vnc again with one of these IDs.", choices.join("; "))]
    AmbiguousName { name: String, choices: Vec<String> },
    #[error("{label} is {state}: start it first (or wait until it is RUNNING), then try again.")]
    NotReady { label: String, state: String },
    #[error("{}", limited_message(*.0))]
    Limited(Limited),
    #[error("Too many of your requests were refused in the last minute. Check the instance ID, region and your roles, and try again in {} seconds.", secs(*retry_after))]
    TooManyRefusals { retry_after: Duration },
    /// Fail closed: nothing happens that cannot be recorded.
    #[error("The bot cannot write its audit trail right now, so it cannot open consoles. The admins have been alerted; try again later.")]
    AuditUnavailable(#[source] AuditError),
    #[error(
        "This button is not valid: it belongs to no access this bot knows of. Run /vnc again."
    )]
    UnknownGrant,
    #[error("This access has ended; run /vnc again.")]
    GrantEnded,
    #[error("This button belongs to someone else's access. Run /vnc to ask for your own.")]
    NotHolder,
    #[error("This access has used all of its {0} links. Run /vnc again for a new window.")]
    LinksUsed(u32),
    #[error("A link is already being made for this access; it will appear in a moment.")]
    PressInProgress,
    #[error(
        "Discord did not tell me your current roles, so no link was made. Try again in a moment."
    )]
    RolesUnavailable,
    #[error("Your roles no longer allow {instance} in {region}, so this access has ended. Ask an admin if you need it.")]
    RoleRemoved {
        instance: InstanceId,
        region: Region,
    },
    #[error("{message}")]
    Tencent {
        error: Box<TencentError>,
        message: String,
    },
}

fn capitalised(e: &crate::config::NotServed) -> String {
    let s = e.to_string();
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn denied_message(
    instance: &InstanceId,
    region: &Region,
    would_allow: &[Snowflake],
    needs_tags: &[String],
) -> String {
    if !needs_tags.is_empty() {
        return format!(
            "None of your roles may open {instance} in {region}: the rule for your roles needs the tags {}, and the catalog cannot vouch for them (the instance does not carry them, or the catalog does not know it, or is off or failing). Check the ID, try again in a minute, or ask an admin.",
            needs_tags.join(" or ")
        );
    }
    if would_allow.is_empty() {
        format!("None of your roles may open {instance} in {region}, and no rule allows that instance there. Ask an admin if you need it.")
    } else {
        let roles: Vec<String> = would_allow.iter().map(|r| format!("<@&{r}>")).collect();
        format!(
            "None of your roles may open {instance} in {region}. These roles may: {}. Ask an admin if you need one.",
            roles.join(", ")
        )
    }
}

fn limited_message(l: Limited) -> String {
    match l {
        Limited::User { retry_after } => format!(
            "You have asked for consoles too often. Try again in {} seconds.",
            secs(retry_after)
        ),
        Limited::Instance { retry_after } => format!(
            "That instance's console was opened too often in the last minute (Tencent allows 30 reconnects a minute). Try again in {} seconds.",
            secs(retry_after)
        ),
    }
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
            Refusal::Limited(Limited::User { .. }) => Outcome::LimitedMember,
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
            Refusal::NotReady { .. } => Outcome::NotReady,
            Refusal::Tencent { error, .. } => Outcome::tencent(error),
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
