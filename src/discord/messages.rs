//! Every sentence the bot says on Discord. Pure, so it is tested without a gateway.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::grant::Issued;
use crate::link::VALID_FOR_SECS;

/// Discord's limit for a link button's `url`.
pub const BUTTON_URL_MAX: usize = 512;

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `HH:MM:SS UTC`.
pub fn clock(t: SystemTime) -> String {
    let s = unix(t);
    format!("{:02}:{:02}:{:02} UTC", s / 3600 % 24, s / 60 % 60, s % 60)
}

/// The DM's text. With `inline_link`, the link goes in the text as a Markdown link (when it is
/// too long for a button); otherwise the caller adds a link button.
pub fn dm_text(issued: &Issued, inline_link: Option<&str>) -> String {
    let t = unix(issued.expires_at);
    let mut s = format!(
        "Console for **{}** ({}). The link works **once**, and only until <t:{t}:T> ({}, <t:{t}:R>): open it now.",
        issued.instance,
        issued.region,
        clock(issued.expires_at)
    );
    if let Some(link) = inline_link {
        s.push_str(&format!("\n[Open the console](<{link}>)"));
    }
    s.push_str(&format!("\nTencent RequestId `{}`", issued.request_id));
    s
}

/// What the DM becomes once the link is dead.
pub fn dm_expired(issued: &Issued) -> String {
    format!(
        "Console for **{}** ({}): expired at {}. Run `/vnc` again for a new link.",
        issued.instance,
        issued.region,
        clock(issued.expires_at)
    )
}

pub fn reply_sent(issued: &Issued) -> String {
    let t = unix(issued.expires_at);
    format!(
        "The console link for **{}** ({}) is in your DMs. It works once and expires <t:{t}:R> ({}), {VALID_FOR_SECS} seconds after it was made.",
        issued.instance,
        issued.region,
        clock(issued.expires_at)
    )
}

pub const REPLY_DMS_CLOSED: &str = "I could not send you a DM, so no link was sent (it is posted nowhere else). \
Allow DMs from this server: right-click the server icon → Privacy Settings → turn on Direct Messages, then run `/vnc` again.";

pub const REPLY_DM_FAILED: &str =
    "Discord did not accept the DM with your link, so it was discarded. Try again in a moment.";

pub const REPLY_NOT_IN_GUILD: &str =
    "/vnc works only in the team's server, not in DMs. Run it in a channel there.";

pub const REPLY_OTHER_GUILD: &str = "/vnc is not enabled in this server.";

pub const REPLY_SHUTTING_DOWN: &str =
    "The bot is restarting and not taking new requests. Try again in a minute.";

pub const REPLY_UNKNOWN_COMMAND: &str = "This bot does not know that command.";

/// How an outcome code reads in the audit channel.
pub fn outcome_text(code: &str) -> &str {
    match code {
        "delivered" => "delivered by DM",
        "dms_closed" => "not delivered: DMs closed, link discarded",
        "dm_failed" => "not delivered: DM failed, link discarded",
        other => other,
    }
}

/// One line for the audit channel. Everything the member typed is escaped; the link is never
/// an argument.
pub fn audit_line(
    user: u64,
    instance: &str,
    region: Option<&str>,
    reason: Option<&str>,
    outcome: &str,
    request_id: Option<&str>,
) -> String {
    let mut s = format!("/vnc by <@{user}>: {}", escape(instance, 40));
    if let Some(r) = region {
        s.push_str(&format!(" ({})", escape(r, 40)));
    }
    s.push_str(&format!(" → **{outcome}**"));
    if let Some(rid) = request_id {
        s.push_str(&format!(", RequestId {}", escape(rid, 64)));
    }
    if let Some(r) = reason.filter(|r| !r.trim().is_empty()) {
        s.push_str(&format!(". Reason: {}", escape(r, 200)));
    }
    s
}

/// User text made inert: no formatting, no mentions, bounded.
pub fn escape(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars * 2));
    for c in s.chars().take(max_chars) {
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '#' | '[' | ']' | '(' | ')' | '<' => {
                out.push('\\');
                out.push(c);
            }
            // A zero-width space after @ stops @everyone/@here even where mentions would parse.
            '@' => out.push_str("@\u{200b}"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_mentions_and_markdown() {
        assert_eq!(
            escape("@everyone **hi**", 100),
            "@\u{200b}everyone \\*\\*hi\\*\\*"
        );
        assert_eq!(escape("<@123>\nx", 100), "\\<@\u{200b}123\\> x");
        assert_eq!(escape(&"a".repeat(500), 10).len(), 10);
    }

    #[test]
    fn audit_lines_escape_what_members_typed() {
        let l = audit_line(
            42,
            "ins-a1b2c3d4",
            Some("ap-guangzhou"),
            Some("@everyone *now*"),
            "delivered",
            Some("rid-1"),
        );
        assert_eq!(
            l,
            "/vnc by <@42>: ins-a1b2c3d4 (ap-guangzhou) → **delivered**, RequestId rid-1. Reason: @\u{200b}everyone \\*now\\*"
        );
    }

    #[test]
    fn clock_is_utc() {
        assert_eq!(
            clock(UNIX_EPOCH + std::time::Duration::from_secs(3600 * 25 + 61)),
            "01:01:01 UTC"
        );
    }
}
