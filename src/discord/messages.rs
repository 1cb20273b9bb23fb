//! Every sentence the bot says on Discord. Pure, so it is tested without a gateway.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::core::{EndWhy, Grant, HeadsUp, Issued};
use crate::link::VALID_FOR_SECS;
use crate::text::is_format_char;

/// Discord's limit for a link button's `url`.
pub const BUTTON_URL_MAX: usize = 512;
/// Discord's limit for a message's text.
pub const MESSAGE_MAX: usize = 2000;
/// Discord's limit for an embed's description.
pub const EMBED_DESCRIPTION_MAX: usize = 4096;

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `HH:MM:SS UTC`.
pub fn clock(t: SystemTime) -> String {
    crate::link::utc_clock(t)
}

/// How an instance is named to a member: `**web-01** (ins-…, region)` where the catalog knows
/// its name (untrusted text from the cloud account: escaped and bounded), else `**ins-…**
/// (region)`.
pub fn instance_label(g: &Grant, name: Option<&str>) -> String {
    match name.filter(|n| !n.trim().is_empty()) {
        Some(n) => format!("**{}** ({}, {})", escape(n, 60), g.instance, g.region),
        None => format!("**{}** ({})", g.instance, g.region),
    }
}

/// The grant's DM, waiting for a press.
/// The answer to `/vnc` when its request could not be posted for the approvers.
pub const REQUEST_NOT_POSTED: &str = "This instance needs an approver's OK, but the bot could not post your request in the approvals channel, so it was cancelled. The admins have been alerted; try again later.";

pub fn grant_dm(g: &Grant, name: Option<&str>) -> String {
    let u = unix(g.until);
    format!(
        "Console access to {} until <t:{u}:t> (<t:{u}:R>). Press **Open console** when you are at the keyboard: each press makes a fresh link that works once, for {VALID_FOR_SECS} seconds.",
        instance_label(g, name)
    )
}

/// The ephemeral answer to `/vnc` once the grant's DM is sent.
pub fn grant_reply(g: &Grant, name: Option<&str>) -> String {
    let u = unix(g.until);
    format!(
        "Console access to {} is in your DMs until <t:{u}:t> (<t:{u}:R>): press **Open console** there when you are ready.",
        instance_label(g, name)
    )
}

/// The DM while a fresh link is in it. With `inline_link`, the link goes in the text as a
/// Markdown link (when it is too long for a button); otherwise the caller adds a link button.
pub fn link_dm(
    issued: &Issued,
    g: &Grant,
    name: Option<&str>,
    heads_up: Option<HeadsUp>,
    inline_link: Option<&str>,
) -> String {
    let t = unix(issued.expires_at);
    let u = unix(g.until);
    let mut s = format!(
        "Console link for {}: it works **once**, until <t:{t}:T> ({}, <t:{t}:R>). Access lasts until <t:{u}:t> (<t:{u}:R>).",
        instance_label(g, name),
        clock(issued.expires_at)
    );
    if let Some(h) = heads_up {
        // A mention renders the name; `allowed_mentions` (none) keeps it from pinging.
        s.push_str(&format!(
            "\nHeads-up: <@{}> opened this console {} s ago.",
            h.user,
            h.ago.as_secs()
        ));
    }
    if let Some(link) = inline_link {
        s.push_str(&format!("\n[Open the console](<{link}>)"));
    }
    s.push_str(&format!("\nTencent RequestId `{}`", issued.request_id));
    s
}

/// The embed's text when the link is too long for the message itself.
pub fn dm_embed_link(link: &str) -> String {
    format!("[Open the console]({link})")
}

/// The DM once its grant has ended: no buttons.
pub fn grant_ended_dm(g: &Grant, name: Option<&str>, why: EndWhy, at: SystemTime) -> String {
    let n = unix(at);
    let revoked;
    let why = match why {
        EndWhy::Done => " (you pressed Done)",
        EndWhy::Expired => "",
        EndWhy::RoleRemoved => ": your roles no longer allow it",
        EndWhy::DmFailed => "",
        EndWhy::RegionDropped => ": the bot no longer serves its region",
        EndWhy::Revoked { by } => {
            // A mention renders the admin's name; `allowed_mentions` (none) keeps it silent.
            revoked = format!(": an admin, <@{by}>, revoked it");
            &revoked
        }
    };
    format!(
        "Console access to {} ended <t:{n}:R>{why}. Run `/vnc` again if you need it.",
        instance_label(g, name)
    )
}

pub const REPLY_DMS_CLOSED: &str = "I could not send you a DM, so no link was sent (it is posted nowhere else). \
Allow DMs from this server: right-click the server icon → Privacy Settings → turn on Direct Messages, then run `/vnc` again.";

pub const REPLY_DM_FAILED: &str =
    "Discord did not accept the DM with your console access, so none was granted. Try again in a moment.";

/// A press whose link could not be shown in the DM.
pub const PRESS_NOT_SHOWN: &str =
    "Discord did not take the link into your DM, so it was discarded. Press **Open console** again in a moment.";

pub const REPLY_SHUTTING_DOWN: &str =
    "The bot is restarting and not taking new requests. Try again in a minute.";

pub const REPLY_UNKNOWN_COMMAND: &str = "This bot does not know that command.";

/// One line for the audit channel. Everything the member typed is escaped; the link is never
/// an argument.
pub fn audit_line(
    actor: &crate::audit::Actor,
    instance: &str,
    region: Option<&str>,
    reason: Option<&str>,
    outcome: &str,
    request_id: Option<&str>,
) -> String {
    let by = match actor {
        crate::audit::Actor::Discord { .. } => "/vnc",
        crate::audit::Actor::Local { .. } => "vncbot url",
    };
    let mut s = format!("{by} by {}: {}", who(actor), escape(instance, 40));
    if let Some(r) = region {
        s.push_str(&format!(" ({})", escape(r, 40)));
    }
    s.push_str(&format!(" → **{}**", escape(outcome, 100)));
    if let Some(rid) = request_id {
        s.push_str(&format!(", RequestId {}", escape(rid, 64)));
    }
    if let Some(r) = reason.filter(|r| !r.trim().is_empty()) {
        s.push_str(&format!(". Reason: {}", escape(r, 200)));
    }
    s
}

/// How a line names its actor: a mention (which pings nobody: the bot allows no mentions), or
/// the local user's escaped name.
pub fn who(actor: &crate::audit::Actor) -> String {
    match actor {
        crate::audit::Actor::Discord { id, .. } => format!("<@{id}>"),
        crate::audit::Actor::Local { user } => escape(user, 60),
    }
}

/// The journal's head, witnessed in the audit channel (see `vncbot audit verify --head`), with
/// its Ed25519 signature when a signing key is configured (a forged line then does not verify).
pub fn anchor_line(head: &crate::audit::Appended, signature: Option<&str>) -> String {
    match signature {
        None => format!(
            "journal head: seq {}, sha256 {} (check with `vncbot audit verify --head {}:{}`)",
            head.seq, head.hash, head.seq, head.hash
        ),
        Some(sig) => format!(
            "journal head: seq {}, sha256 {}, signature {sig} (check with `vncbot audit verify --head {}:{}:{sig} --public-key KEY`)",
            head.seq, head.hash, head.seq, head.hash
        ),
    }
}

/// The counted refusals of one member in one window.
pub fn refusals_line(user: u64, count: u64, window: Duration) -> String {
    format!(
        "{count} more refused /vnc request(s) from <@{user}> in the last {} seconds (each is in the journal)",
        window.as_secs()
    )
}

/// User text made inert: no formatting, no mentions, no links or embeds, no invisible or
/// direction-changing characters, bounded.
pub fn escape(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars * 2));
    let mut prev = None;
    for c in s.chars().take(max_chars) {
        // A zero-width space after "://" stops Discord from turning a bare URL into a link
        // (and from fetching an embed for it).
        if prev == Some(':') && c == '/' {
            out.push('\u{200b}');
        }
        prev = Some(c);
        match c {
            '\\' | '*' | '_' | '~' | '`' | '|' | '>' | '#' | '[' | ']' | '(' | ')' | '<' => {
                out.push('\\');
                out.push(c);
            }
            // A zero-width space after @ stops @everyone/@here even where mentions would parse.
            '@' => out.push_str("@\u{200b}"),
            c if c.is_control() => out.push(' '),
            c if is_format_char(c) => out.push('\u{FFFD}'),
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
    fn escape_defuses_links_and_direction_tricks() {
        let e = escape("see https://evil.example/x", 100);
        assert!(!e.contains("https://"), "{e}");
        assert!(e.contains("https:\u{200b}//evil.example/x"), "{e}");
        let e = escape("ins-\u{202E}gpj.exe\u{2066}a\u{200D}b\u{FEFF}", 100);
        for c in ['\u{202E}', '\u{2066}', '\u{200D}', '\u{FEFF}'] {
            assert!(!e.contains(c), "{e:?}");
        }
        assert_eq!(e.matches('\u{FFFD}').count(), 4);
        // Tencent's error code in the outcome is escaped too.
        let l = audit_line(
            &crate::audit::Actor::Discord {
                id: 1,
                name: "m".into(),
            },
            "ins-a1b2c3d4",
            None,
            None,
            "Tencent failed: X_Y`<@1>",
            None,
        );
        assert!(l.contains("X\\_Y\\`\\<@\u{200b}1\\>"), "{l}");
    }

    #[test]
    fn audit_lines_escape_what_members_typed() {
        let l = audit_line(
            &crate::audit::Actor::Discord {
                id: 42,
                name: "m".into(),
            },
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
