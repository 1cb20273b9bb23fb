//! What a terminal user is told when `vncbot url` is refused: the CLI's own sentences, naming
//! its flags (`--region`, `--reason`) and never Discord's buttons or mentions.

use vncbot::core::refusal::secs;
use vncbot::core::{Refusal, MAX_REASON_CHARS, MIN_REASON_CHARS};
use vncbot::limits::Limited;

/// The sentence for a refusal, as a terminal user reads it.
pub fn say(r: &Refusal) -> String {
    match r {
        Refusal::BadInstance(e) => e.to_string(),
        Refusal::BadRegion {
            problem,
            configured,
        } => format!("{problem} This bot serves: {configured}; pick one with --region."),
        Refusal::RegionNotServed(region, configured) => format!(
            "{region} is not one of this bot's regions. It serves: {configured}; pick one with --region."
        ),
        Refusal::NotServed(n) => {
            let s = n.to_string();
            let mut c = s.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
        Refusal::ReasonRequired => format!(
            "A reason is required: add --reason \"…\" saying why you need the console, in at least {MIN_REASON_CHARS} characters (for example the incident or ticket)."
        ),
        Refusal::ReasonTooShort => format!(
            "The reason is too short: give --reason at least {MIN_REASON_CHARS} characters (for example the incident or ticket)."
        ),
        Refusal::ReasonTooLong => format!(
            "The reason is too long: keep --reason under {MAX_REASON_CHARS} characters."
        ),
        Refusal::Denied {
            instance, region, ..
        } => format!(
            "The local credentials may not open {instance} in {region}. Check the ID and --region, or ask an admin."
        ),
        Refusal::UnknownName { name, not_an_id } => format!(
            "No instance you may open is named {name}, and it is not an instance ID either ({not_an_id}). List them with `vncbot instances`, or give the ID (ins-…)."
        ),
        Refusal::AmbiguousName { name, choices } => format!(
            "Several instances you may open are named {name}: {}. Run `vncbot url` again with one of these IDs.",
            choices.join("; ")
        ),
        Refusal::NotReady { label, state } => format!(
            "{label} is {state}: start it first (or wait until it is RUNNING), then try again."
        ),
        Refusal::Limited(Limited::User { retry_after }) => format!(
            "You have asked for consoles too often. Try again in {} seconds.",
            secs(*retry_after)
        ),
        Refusal::Limited(Limited::Instance { retry_after }) => format!(
            "That instance's console was opened too often in the last minute (Tencent allows 30 reconnects a minute). Try again in {} seconds.",
            secs(*retry_after)
        ),
        Refusal::TooManyRefusals { retry_after } => format!(
            "Too many of your requests were refused in the last minute. Check the instance ID, --region and --reason, and try again in {} seconds.",
            secs(*retry_after)
        ),
        Refusal::AuditUnavailable(e) => format!(
            "the audit journal cannot be written, so no console is opened ({e}). Fix the journal (see `vncbot audit verify`) and try again."
        ),
        Refusal::Tencent { message, .. } => message.clone(),
        // Discord's own: a terminal never meets these.
        other => format!("refused ({}).", other.outcome().code()),
    }
}
