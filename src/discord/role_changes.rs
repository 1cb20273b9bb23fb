//! Who may, recorded (the adapter's half): the server's audit log entries about roles, as they
//! happen (`GUILD_AUDIT_LOG_ENTRY_CREATE`, which needs the `GUILD_MODERATION` intent and the
//! `VIEW_AUDIT_LOG` permission) and backfilled at start (`GET /guilds/{id}/audit-logs`), and the
//! permissions of the bot's own commands (`APPLICATION_COMMAND_PERMISSIONS_UPDATE`, no intent).
//! The core decides what to record and records each entry once ([`crate::core::role_changes`]);
//! this file reads serenity's types into plain data and writes each record's channel line.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;
use serenity::all::{
    CommandPermissionType, CommandPermissions, Context, GuildId, Http, LightMethod, Request, Route,
};
use serenity::model::guild::audit_log::{AuditLogEntry, Change};

use super::messages::escape;
use super::Bot;
use crate::audit::{Event, Record};
use crate::core::role_changes::{self as core_roles, Via, BACKFILLED_ACTIONS};

/// Discord's largest audit log page.
const PAGE: usize = 100;
/// Pages read per server and action at one start (50,000 entries): a bound, so a server whose
/// log is mostly other roles' changes does not keep the backfill going for long.
const MAX_PAGES: usize = 500;
/// Discord's snowflake epoch (2015-01-01), in Unix milliseconds.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// Reads serenity's entry into the core's plain data.
fn plain(
    entry: &AuditLogEntry,
    guild: u64,
    user_name: Option<String>,
) -> core_roles::AuditLogEntry {
    let roles = |r: &Option<Vec<serenity::all::AffectedRole>>| {
        r.iter()
            .flatten()
            .map(|a| (a.id.get(), a.name.clone()))
            .collect::<Vec<_>>()
    };
    let changes = entry
        .changes
        .iter()
        .flatten()
        .map(|c| match c {
            // Discord lists the roles given or taken in `new_value`.
            Change::RolesAdded { old, new } => {
                core_roles::Change::RolesAdded(roles(new).into_iter().chain(roles(old)).collect())
            }
            Change::RolesRemove { old, new } => {
                core_roles::Change::RolesRemoved(roles(new).into_iter().chain(roles(old)).collect())
            }
            Change::Name { old, new } => core_roles::Change::Name {
                old: old.clone(),
                new: new.clone(),
            },
            other => core_roles::Change::Key(other.key().to_owned()),
        })
        .collect();
    core_roles::AuditLogEntry {
        id: entry.id.get(),
        guild,
        action: entry.action.num(),
        user: entry.user_id.get(),
        user_name,
        target: entry.target_id.map(|t| t.get()),
        reason: entry.reason.clone(),
        changes,
    }
}

/// `GUILD_AUDIT_LOG_ENTRY_CREATE`: recorded if it touches a role the config names.
pub async fn on_entry(ctx: &Context, bot: &Bot, entry: &AuditLogEntry, guild: GuildId) {
    let plain = plain(entry, guild.get(), None);
    if !bot.core.role_entry_matters(&plain) {
        return;
    }
    // The event names who acted by ID only; their name is one REST call away (the record is
    // written without it if that fails).
    let name = match entry.user_id.to_user(&ctx.http).await {
        Ok(u) => Some(u.name),
        Err(e) => {
            tracing::debug!(error = %e, "could not read the name of who changed a role");
            None
        }
    };
    let plain = core_roles::AuditLogEntry {
        user_name: name,
        ..plain
    };
    if let Err(e) = bot.core.record_role_entry(&plain, Via::Gateway).await {
        tracing::error!(error = %e, entry = plain.id, guild = %guild,
            "AUDIT WRITE FAILED: a role change was not recorded; the backfill at the next start tries again");
    }
}

/// `APPLICATION_COMMAND_PERMISSIONS_UPDATE` for one of the bot's commands in a served server.
pub async fn on_command_permissions(ctx: &Context, bot: &Bot, p: &CommandPermissions) {
    let ours = ctx
        .http
        .application_id()
        .is_none_or(|a| a == p.application_id);
    let served = bot
        .core
        .policy()
        .guilds
        .iter()
        .any(|g| g.get() == p.guild_id.get());
    if !ours || !served {
        return;
    }
    let guild = p.guild_id.get();
    let overwrites = p
        .permissions
        .iter()
        .map(|o| {
            let id = o.id.get();
            // Discord's constants: the guild's ID is @everyone, one less is every channel.
            let (kind, target) = match o.kind {
                CommandPermissionType::Role if id == guild => ("role", "@everyone".to_owned()),
                CommandPermissionType::Role => ("role", id.to_string()),
                CommandPermissionType::User => ("user", id.to_string()),
                CommandPermissionType::Channel if id == guild - 1 => ("channel", "all".to_owned()),
                CommandPermissionType::Channel => ("channel", id.to_string()),
                _ => ("unknown", id.to_string()),
            };
            let verdict = if o.permission { "allow" } else { "deny" };
            format!("{kind}:{target}={verdict}")
        })
        .collect();
    if let Err(e) = bot
        .core
        .record_command_permissions(guild, p.id.get(), overwrites)
        .await
    {
        tracing::error!(error = %e, command = %p.id, guild,
            "AUDIT WRITE FAILED: a change to the bot's command permissions was not recorded");
    }
}

/// Reads what the audit log holds since the newest entry recorded, for every served server and
/// recorded action, in the background (at READY: again after a new session, which is what a
/// long outage gives).
pub fn spawn_backfill(bot: Arc<Bot>, http: Arc<Http>) {
    tokio::spawn(async move {
        let mut recorded = 0;
        for guild in bot.core.policy().guilds.clone() {
            match backfill_guild(&bot, &http, guild.get()).await {
                Ok(n) => recorded += n,
                Err(Stop::Forbidden) => {
                    let why = format!(
                        "cannot read the audit log of server {guild}: the bot lacks the View Audit Log permission (VIEW_AUDIT_LOG). Role changes made while it was down are not recorded, and Discord sends none as they happen. Re-invite the bot with that permission (permissions=128 in the invite URL; see the README)"
                    );
                    tracing::warn!(guild = %guild, "{why}");
                    bot.audit_feed
                        .post(format!("WARNING: {}", escape(&why, 600)));
                }
                Err(Stop::Other) => {}
            }
        }
        if recorded > 0 {
            tracing::info!(
                recorded,
                "recorded role changes made while the bot was down"
            );
        }
    });
}

enum Stop {
    /// 403: no `VIEW_AUDIT_LOG`.
    Forbidden,
    /// Logged where it happened.
    Other,
}

async fn backfill_guild(bot: &Bot, http: &Http, guild: u64) -> Result<usize, Stop> {
    let mut recorded = 0;
    for action in BACKFILLED_ACTIONS {
        let mut after = bot.core.role_backfill_after(guild, action);
        for _ in 0..MAX_PAGES {
            let page = match audit_log_page(http, guild, action, after).await {
                Ok(p) => p,
                Err(e) if status(&e) == Some(403) => return Err(Stop::Forbidden),
                Err(e) => {
                    bot.rest("read the server's audit log", Err::<(), _>(e));
                    return Err(Stop::Other);
                }
            };
            let full = page.audit_log_entries.len() >= PAGE;
            let mut entries: Vec<(u64, Value)> = page
                .audit_log_entries
                .into_iter()
                .filter_map(|v| Some((v["id"].as_str()?.parse().ok()?, v)))
                .collect();
            // Oldest first, so the journal has them in the order they happened.
            entries.sort_by_key(|(id, _)| *id);
            let newest = entries.last().map(|(id, _)| *id);
            for (id, raw) in entries.into_iter().filter(|(id, _)| *id > after) {
                // One at a time: an entry serenity cannot read (Discord leaves `user_id` null
                // for some of its own actions) is skipped, not the whole page, every start.
                let e = match serde_json::from_value::<AuditLogEntry>(raw) {
                    Ok(e) => e,
                    Err(err) => {
                        tracing::warn!(entry = id, guild, error = %err,
                            "an audit log entry could not be read and was not recorded; see it in the server's audit log");
                        continue;
                    }
                };
                let name = page
                    .users
                    .iter()
                    .find(|u| u.id == e.user_id.get().to_string())
                    .map(|u| u.username.clone());
                match bot
                    .core
                    .record_role_entry(&plain(&e, guild, name), Via::Backfill)
                    .await
                {
                    Ok(n) => recorded += n,
                    Err(err) => {
                        tracing::error!(error = %err, entry = id, guild,
                            "AUDIT WRITE FAILED: stopped recording role changes from the audit log; the next start tries again");
                        return Err(Stop::Other);
                    }
                }
            }
            match newest {
                Some(newest) if full => after = after.max(newest),
                _ => break,
            }
        }
    }
    Ok(recorded)
}

/// One page of the audit log: the entries as Discord sent them (each read with serenity's
/// [`AuditLogEntry`] on its own) and the users they name.
#[derive(Deserialize)]
struct Page {
    audit_log_entries: Vec<Value>,
    #[serde(default)]
    users: Vec<PageUser>,
}

#[derive(Deserialize)]
struct PageUser {
    id: String,
    username: String,
}

/// `GET /guilds/{id}/audit-logs?action_type=…&after=…&limit=100`. serenity's own
/// `GuildId::audit_logs` has no `after`; its route is used as it is. With `after`, Discord
/// answers the entries just after it, newest first.
async fn audit_log_page(http: &Http, guild: u64, action: u8, after: u64) -> serenity::Result<Page> {
    let params = vec![
        ("action_type", action.to_string()),
        ("after", after.to_string()),
        ("limit", PAGE.to_string()),
    ];
    let route = Route::GuildAuditLogs {
        guild_id: GuildId::new(guild),
    };
    http.fire(Request::new(route, LightMethod::Get).params(Some(params)))
        .await
}

fn status(e: &serenity::Error) -> Option<u16> {
    match e {
        serenity::Error::Http(h) => h.status_code().map(|s| s.as_u16()),
        _ => None,
    }
}

/// The audit channel's line for a role record or a command permissions record.
pub(super) fn line(r: &Record) -> Option<String> {
    if r.event == Event::CommandPermissionsChanged {
        return Some(command_permissions_line(r));
    }
    let e = &r.entry;
    let by = format!("<@{}>", r.actor_id.parse::<u64>().ok()?);
    let role = || {
        let id = e
            .role
            .map_or_else(|| "?".to_owned(), |r| format!("<@&{r}>"));
        match e.role_name.as_deref() {
            Some(n) => format!("{id} (\"{}\")", escape(n, 100)),
            None => id,
        }
    };
    let member = e
        .target
        .map_or_else(|| "?".to_owned(), |t| format!("<@{t}>"));
    let mut text = match r.event {
        Event::RoleGranted => format!("{by} gave {member} the role {}", role()),
        Event::RoleRevoked => format!("{by} took the role {} from {member}", role()),
        Event::RoleUpdated => format!(
            "{by} changed the role {}: {}",
            role(),
            escape(&e.changed.clone().unwrap_or_default().join(", "), 200)
        ),
        Event::RoleDeleted => format!("{by} deleted the role {}", role()),
        _ => return None,
    };
    if let Some(reason) = e.reason.as_deref() {
        text.push_str(&format!(" (reason: {})", escape(reason, 200)));
    }
    if let Some(entry) = e.audit_log_entry {
        if e.via.as_deref() == Some(Via::Backfill.as_str()) {
            let at = ((entry >> 22) + DISCORD_EPOCH_MS) / 1000;
            text.push_str(&format!(
                ", read from the audit log at start (made <t:{at}:f>; audit log entry {entry})"
            ));
        } else {
            text.push_str(&format!(", audit log entry {entry}"));
        }
    }
    Some(format!("role change: {text}"))
}

fn command_permissions_line(r: &Record) -> String {
    let e = &r.entry;
    let overwrites = e.permissions.clone().unwrap_or_default();
    let shown: Vec<String> = overwrites
        .iter()
        .take(20)
        .map(|o| {
            let (target, verdict) = o.split_once('=').unwrap_or((o, "?"));
            let verdict = if verdict == "allow" {
                "allowed"
            } else {
                "denied"
            };
            let who = match target.split_once(':') {
                Some(("role", "@everyone")) => "@\u{200b}everyone".to_owned(),
                Some(("role", id)) => format!("<@&{}>", escape(id, 20)),
                Some(("user", id)) => format!("<@{}>", escape(id, 20)),
                Some(("channel", "all")) => "every channel".to_owned(),
                Some(("channel", id)) => format!("<#{}>", escape(id, 20)),
                _ => escape(target, 40),
            };
            format!("{who} {verdict}")
        })
        .collect();
    let command = e
        .command
        .map_or_else(|| "command ?".to_owned(), |c| format!("command {c}"));
    format!(
        "command permissions: the permissions of the bot's {command} changed in server {}: {} (Discord does not say who; the server's audit log does)",
        e.guild.map_or_else(|| "?".to_owned(), |g| g.to_string()),
        if shown.is_empty() {
            "no overwrites (the defaults apply)".to_owned()
        } else {
            shown.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Entry;

    fn record(event: Event, entry: Entry) -> Record {
        Record {
            seq: 3,
            time: "2026-12-03T08:00:00.000Z".into(),
            event,
            actor_id: "7".into(),
            actor_name: "admin".into(),
            entry,
            torn_sha256: None,
            torn_bytes: None,
            prev: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_grant_line_names_who_whom_the_role_and_the_reason_escaped() {
        let r = record(
            Event::RoleGranted,
            Entry {
                target: Some(9),
                role: Some(555),
                role_name: Some("on*call".into()),
                reason: Some("rota @everyone".into()),
                audit_log_entry: Some(42),
                via: Some("gateway".into()),
                ..Entry::default()
            },
        );
        assert_eq!(
            line(&r).unwrap(),
            "role change: <@7> gave <@9> the role <@&555> (\"on\\*call\") (reason: rota @\u{200b}everyone), audit log entry 42"
        );
    }

    #[test]
    fn a_backfilled_revoke_says_when_it_happened() {
        // 2026-01-01T00:00:00Z as a snowflake.
        let id = (1_767_225_600_000 - DISCORD_EPOCH_MS) << 22;
        let r = record(
            Event::RoleRevoked,
            Entry {
                target: Some(9),
                role: Some(555),
                audit_log_entry: Some(id),
                via: Some("backfill".into()),
                ..Entry::default()
            },
        );
        let l = line(&r).unwrap();
        assert!(
            l.starts_with("role change: <@7> took the role <@&555> from <@9>, read from the audit log at start (made <t:1767225600:f>"),
            "{l}"
        );
    }

    #[test]
    fn updates_and_deletes_name_the_keys_and_the_role() {
        let up = record(
            Event::RoleUpdated,
            Entry {
                role: Some(555),
                changed: Some(vec!["name".into(), "permissions".into()]),
                ..Entry::default()
            },
        );
        assert_eq!(
            line(&up).unwrap(),
            "role change: <@7> changed the role <@&555>: name, permissions"
        );
        let del = record(
            Event::RoleDeleted,
            Entry {
                role: Some(555),
                role_name: Some("oncall".into()),
                ..Entry::default()
            },
        );
        assert_eq!(
            line(&del).unwrap(),
            "role change: <@7> deleted the role <@&555> (\"oncall\")"
        );
    }

    #[test]
    fn a_command_permissions_line_lists_the_overwrites() {
        let mut r = record(
            Event::CommandPermissionsChanged,
            Entry {
                guild: Some(800),
                command: Some(910),
                permissions: Some(vec![
                    "role:@everyone=deny".into(),
                    "role:555=allow".into(),
                    "user:9=deny".into(),
                    "channel:all=allow".into(),
                ]),
                ..Entry::default()
            },
        );
        r.actor_id = "local".into();
        assert_eq!(
            line(&r).unwrap(),
            "command permissions: the permissions of the bot's command 910 changed in server 800: @\u{200b}everyone denied, <@&555> allowed, <@9> denied, every channel allowed (Discord does not say who; the server's audit log does)"
        );
    }
}
