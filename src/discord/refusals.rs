//! What a member is told when the core refuses: one sentence per refusal, in Discord's words
//! (`/vnc`, its options, buttons, role mentions). The terminal has its own (`vncbot url`).

use crate::core::refusal::secs;
use crate::core::{Refusal, MAX_REASON_CHARS, MIN_BREAK_GLASS_REASON_CHARS, MIN_REASON_CHARS};
use crate::ids::{InstanceId, Region, Snowflake};
use crate::limits::Limited;

/// The sentence for a refusal, as the member reads it.
pub fn say(r: &Refusal) -> String {
    match r {
        Refusal::NotInGuild => {
            "/vnc works only in the team's server, not in DMs. Run it in a channel there.".into()
        }
        Refusal::OtherGuild => "/vnc is not enabled in this server.".into(),
        Refusal::BadInstance(e) => e.to_string(),
        Refusal::BadRegion {
            problem,
            configured,
        } => format!("{problem} This bot serves: {configured}."),
        Refusal::RegionNotServed(region, configured) => {
            format!("{region} is not one of this bot's regions. It serves: {configured}.")
        }
        Refusal::NotServed(n) => capitalised(&n.to_string()),
        Refusal::ReasonRequired => format!("A reason is required: say why you need the console in the reason option, in at least {MIN_REASON_CHARS} characters (for example the incident or ticket)."),
        Refusal::ReasonTooShort => format!("The reason is too short: give at least {MIN_REASON_CHARS} characters (for example the incident or ticket)."),
        Refusal::ReasonTooLong => format!("The reason is too long: keep it under {MAX_REASON_CHARS} characters."),
        Refusal::Denied {
            instance,
            region,
            would_allow,
            needs_tags,
        } => denied(instance, region, would_allow, needs_tags),
        Refusal::UnknownName { name, not_an_id } => format!("No instance you may open is named {name}, and it is not an instance ID either ({not_an_id}). Type a few letters in the instance option and pick from the list, or give its ID (ins-…)."),
        Refusal::AmbiguousName { name, choices } => format!(
            "Several instances you may open are named {name}: {}. Run /vnc again with one of these IDs.",
            choices.join("; ")
        ),
        Refusal::NotReady { label, state } => format!(
            "{label} is {state}: start it first (or wait until it is RUNNING), then try again."
        ),
        Refusal::Limited(l) => limited(*l),
        Refusal::TooManyRefusals { retry_after } => format!("Too many of your requests were refused in the last minute. Check the instance ID, region and your roles, and try again in {} seconds.", secs(*retry_after)),
        Refusal::AuditUnavailable(_) => "The bot cannot write its audit trail right now, so it cannot open consoles. The admins have been alerted; try again later.".into(),
        Refusal::UnknownGrant => {
            "This button is not valid: it belongs to no access this bot knows of. Run /vnc again."
                .into()
        }
        Refusal::GrantEnded => "This access has ended; run /vnc again.".into(),
        Refusal::NotHolder => {
            "This button belongs to someone else's access. Run /vnc to ask for your own.".into()
        }
        Refusal::LinksUsed(n) => {
            format!("This access has used all of its {n} links. Run /vnc again for a new window.")
        }
        Refusal::PressInProgress => {
            "A link is already being made for this access; it will appear in a moment.".into()
        }
        Refusal::RolesUnavailable => "Discord did not tell me your current roles, so no link was made. Try again in a moment.".into(),
        Refusal::RoleRemoved { instance, region } => format!("Your roles no longer allow {instance} in {region}, so this access has ended. Ask an admin if you need it."),
        Refusal::Tencent { message, .. } => message.clone(),
        Refusal::BreakGlassNotOffered => "Break-glass is not offered for this instance: the rule that allows it has no break-glass roles. Run /vnc without break_glass to ask the approvers.".into(),
        Refusal::BreakGlassNotAllowed { roles } => {
            let roles: Vec<String> = roles.iter().map(|r| format!("<@&{r}>")).collect();
            format!(
                "Break-glass on this instance is only for members with one of these roles: {}. Run /vnc without break_glass to ask the approvers.",
                roles.join(", ")
            )
        }
        Refusal::BreakGlassReasonShort => format!("Break-glass needs a reason of at least {MIN_BREAK_GLASS_REASON_CHARS} characters in the reason option: what is broken and why it cannot wait for an approver (for example the incident)."),
        Refusal::BreakGlassOverCap { per_day, retry_after } => format!(
            "You have used break-glass {per_day} time(s) in the last 24 hours, the most allowed. Run /vnc without break_glass to ask the approvers, or try break-glass again in {} minutes.",
            secs(*retry_after).div_ceil(60)
        ),
    }
}

pub(crate) fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn denied(
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

fn limited(l: Limited) -> String {
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
