//! The server's audit log: entries a test or the demo adds, kept for
//! `GET /guilds/{id}/audit-logs` (filtered by `action_type`, `user_id`, `before`, `after` and
//! `limit` as Discord does) and dispatched as `GUILD_AUDIT_LOG_ENTRY_CREATE` to the sessions that
//! identified with the `GUILD_MODERATION` intent; and `APPLICATION_COMMAND_PERMISSIONS_UPDATE`,
//! which needs no intent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::{Call, FakeDiscord, State, APP_ID};

/// The gateway intent that brings audit log entries (1 << 2, not privileged).
pub const GUILD_MODERATION: u64 = 1 << 2;
/// Discord's audit log actions the fake's helpers write.
pub const MEMBER_ROLE_UPDATE: u8 = 25;
pub const ROLE_UPDATE: u8 = 31;
pub const ROLE_DELETE: u8 = 32;
/// Discord's snowflake epoch (2015-01-01), in Unix milliseconds.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// One audit log entry, before it gets its ID.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub action: u8,
    /// Who acted.
    pub user: u64,
    /// Whom (a member) or what (a role) it acted on.
    pub target: u64,
    pub reason: Option<String>,
    /// Discord's `changes`: `[{key, old_value?, new_value?}]`.
    pub changes: Value,
}

impl AuditEntry {
    /// `by` gave `member` the role (action 25, `$add`).
    pub fn role_given(by: u64, member: u64, role: u64, name: &str, reason: Option<&str>) -> Self {
        Self::member_roles(by, member, "$add", role, name, reason)
    }

    /// `by` took the role from `member` (action 25, `$remove`).
    pub fn role_taken(by: u64, member: u64, role: u64, name: &str, reason: Option<&str>) -> Self {
        Self::member_roles(by, member, "$remove", role, name, reason)
    }

    fn member_roles(
        by: u64,
        member: u64,
        key: &str,
        role: u64,
        name: &str,
        reason: Option<&str>,
    ) -> Self {
        Self {
            action: MEMBER_ROLE_UPDATE,
            user: by,
            target: member,
            reason: reason.map(str::to_owned),
            changes: json!([{"key": key, "new_value": [{"id": role.to_string(), "name": name}]}]),
        }
    }

    /// `by` renamed the role and changed its permissions (action 31).
    pub fn role_updated(by: u64, role: u64, old_name: &str, new_name: &str) -> Self {
        Self {
            action: ROLE_UPDATE,
            user: by,
            target: role,
            reason: None,
            changes: json!([
                {"key": "name", "old_value": old_name, "new_value": new_name},
                {"key": "permissions", "old_value": "0", "new_value": "8"},
            ]),
        }
    }

    /// `by` deleted the role (action 32): Discord lists what it was.
    pub fn role_deleted(by: u64, role: u64, name: &str) -> Self {
        Self {
            action: ROLE_DELETE,
            user: by,
            target: role,
            reason: None,
            changes: json!([
                {"key": "name", "old_value": name},
                {"key": "permissions", "old_value": "0"},
                {"key": "color", "old_value": 0},
                {"key": "hoist", "old_value": false},
                {"key": "mentionable", "old_value": false},
            ]),
        }
    }
}

impl FakeDiscord {
    /// Adds an entry to `guild`'s audit log (its ID a snowflake of now, above every earlier
    /// one); returns the ID. Nothing is dispatched: as if the bot was down.
    pub fn add_audit_entry(&self, guild: u64, entry: &AuditEntry) -> u64 {
        let mut st = self.state.lock().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let id = ((now - DISCORD_EPOCH_MS) << 22).max(st.last_audit_entry + 1);
        st.last_audit_entry = id;
        let mut v = json!({
            "id": id.to_string(),
            "user_id": entry.user.to_string(),
            "target_id": entry.target.to_string(),
            "action_type": entry.action,
            "changes": entry.changes,
        });
        if let Some(r) = &entry.reason {
            v["reason"] = json!(r);
        }
        st.audit_log.push((guild, v));
        id
    }

    /// Adds an entry made by Discord itself: `user_id` is null, as Discord leaves it for some
    /// of its own actions.
    pub fn add_audit_entry_by_discord(&self, guild: u64, entry: &AuditEntry) -> u64 {
        let id = self.add_audit_entry(guild, entry);
        let mut st = self.state.lock().unwrap();
        if let Some((_, v)) = st.audit_log.last_mut() {
            v["user_id"] = Value::Null;
        }
        id
    }

    /// [`FakeDiscord::add_audit_entry`], then dispatched as it happens.
    pub fn audit(&self, guild: u64, entry: &AuditEntry) -> u64 {
        let id = self.add_audit_entry(guild, entry);
        self.dispatch_audit_entry(id);
        id
    }

    /// Sends `GUILD_AUDIT_LOG_ENTRY_CREATE` for a stored entry (again, if a test wants a
    /// duplicate). Only sessions that asked for `GUILD_MODERATION` get it, and none while the
    /// audit log is forbidden (Discord sends it only with `VIEW_AUDIT_LOG`).
    pub fn dispatch_audit_entry(&self, id: u64) {
        let found = {
            let st = self.state.lock().unwrap();
            st.audit_log
                .iter()
                .find(|(_, v)| v["id"].as_str().and_then(|s| s.parse().ok()) == Some(id))
                .cloned()
        };
        let (guild, mut d) = found.expect("an entry added with add_audit_entry");
        d["guild_id"] = json!(guild.to_string());
        let _ = self
            .events
            .send(json!({"op": 0, "t": "GUILD_AUDIT_LOG_ENTRY_CREATE", "d": d}));
    }

    /// From now on `GET /guilds/{id}/audit-logs` answers 403 (code 50013, Missing Permissions)
    /// and no entry is dispatched: the bot was invited without `VIEW_AUDIT_LOG`.
    pub fn forbid_audit_log(&self) {
        self.state.lock().unwrap().audit_log_forbidden = true;
    }

    /// The query of every `GET /guilds/{id}/audit-logs` so far (`action_type=25&after=…`).
    pub fn audit_log_queries(&self) -> Vec<String> {
        self.state.lock().unwrap().audit_log_queries.clone()
    }

    /// Waits until `n` calls match, or panics after `timeout`.
    pub async fn wait_for_count(
        &self,
        timeout: Duration,
        what: &str,
        n: usize,
        f: impl Fn(&Call) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + timeout;
        let recorded = Arc::clone(&self.state.lock().unwrap().recorded);
        loop {
            // Registered before counting, so a call recorded in between still wakes us.
            let next = recorded.notified();
            tokio::pin!(next);
            next.as_mut().enable();
            if self.count(&f) >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, next).await.is_err() {
                panic!(
                    "timed out waiting for {n} × {what}; calls: {:#?}",
                    self.calls()
                );
            }
        }
    }

    /// The intents of every IDENTIFY the gateway received, in order.
    pub fn identified_intents(&self) -> Vec<u64> {
        self.state.lock().unwrap().intents.clone()
    }

    /// Sends `APPLICATION_COMMAND_PERMISSIONS_UPDATE` for `command` (the application's ID means
    /// all its commands) in `guild`; `permissions` are `(id, type, allowed)` with type 1 role,
    /// 2 user, 3 channel.
    pub fn update_command_permissions(
        &self,
        guild: u64,
        command: u64,
        permissions: &[(u64, u8, bool)],
    ) {
        let perms: Vec<Value> = permissions
            .iter()
            .map(|(id, kind, allowed)| {
                json!({"id": id.to_string(), "type": kind, "permission": allowed})
            })
            .collect();
        let d = json!({
            "id": command.to_string(),
            "application_id": APP_ID.to_string(),
            "guild_id": guild.to_string(),
            "permissions": perms,
        });
        let _ = self
            .events
            .send(json!({"op": 0, "t": "APPLICATION_COMMAND_PERMISSIONS_UPDATE", "d": d}));
    }
}

/// Whether a session that identified with `intents` gets `event` (what Discord checks).
pub(super) fn delivered(event: &Value, intents: u64, state: &Arc<Mutex<State>>) -> bool {
    event["t"] != "GUILD_AUDIT_LOG_ENTRY_CREATE"
        || (intents & GUILD_MODERATION != 0 && !state.lock().unwrap().audit_log_forbidden)
}

/// `GET /guilds/{guild}/audit-logs?…`: entries newest first. With `after` (and no `before`)
/// Discord answers the `limit` entries just after it; otherwise the newest below `before`.
pub(super) fn page(state: &Arc<Mutex<State>>, guild: &str, query: &str) -> (u16, Value) {
    let mut st = state.lock().unwrap();
    // serenity starts its query with `&`.
    st.audit_log_queries
        .push(query.trim_start_matches('&').to_owned());
    if st.audit_log_forbidden {
        return (
            403,
            json!({"message": "Missing Permissions", "code": 50013}),
        );
    }
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let guild: u64 = guild.parse().unwrap_or(0);
    let limit = param("limit").unwrap_or(50).clamp(1, 100) as usize;
    let (after, before) = (param("after"), param("before"));
    let id_of = |v: &Value| {
        v["id"]
            .as_str()
            .and_then(|i| i.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let mut entries: Vec<&Value> = st
        .audit_log
        .iter()
        .filter(|(g, v)| {
            *g == guild
                && param("action_type").is_none_or(|a| v["action_type"] == a)
                && param("user_id")
                    .is_none_or(|u| v["user_id"].as_str().and_then(|s| s.parse().ok()) == Some(u))
                && after.is_none_or(|a| id_of(v) > a)
                && before.is_none_or(|b| id_of(v) < b)
        })
        .map(|(_, v)| v)
        .collect();
    entries.sort_by_key(|v| id_of(v));
    let mut page: Vec<Value> = if after.is_some() && before.is_none() {
        entries.into_iter().take(limit).cloned().collect()
    } else {
        entries.into_iter().rev().take(limit).cloned().collect()
    };
    page.sort_by_key(|v| std::cmp::Reverse(id_of(v)));
    let mut users: Vec<String> = page
        .iter()
        .filter_map(|v| v["user_id"].as_str().map(str::to_owned))
        .collect();
    users.sort();
    users.dedup();
    let users: Vec<Value> = users
        .iter()
        .map(|u| {
            json!({"id": u, "username": format!("user{u}"), "discriminator": "0",
                "global_name": null, "avatar": null})
        })
        .collect();
    (
        200,
        json!({
            "audit_log_entries": page,
            "users": users,
            "integrations": [],
            "webhooks": [],
            "guild_scheduled_events": [],
            "threads": [],
            "application_commands": [],
            "auto_moderation_rules": [],
        }),
    )
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    use super::*;
    use crate::GUILD;

    type Ws = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    async fn next_dispatch(ws: &mut Ws) -> Value {
        loop {
            let msg = ws.next().await.unwrap().unwrap();
            let Ok(text) = msg.to_text() else { continue };
            let v: Value = serde_json::from_str(text).unwrap();
            if v["op"] == 0 {
                return v;
            }
        }
    }

    async fn identify(f: &FakeDiscord, intents: u64) -> Ws {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}", f.gateway))
            .await
            .unwrap();
        let identify = json!({"op": 2, "d": {"token": "t", "intents": intents}});
        ws.send(Message::text(identify.to_string())).await.unwrap();
        assert_eq!(next_dispatch(&mut ws).await["t"], "READY");
        ws
    }

    #[tokio::test]
    async fn audit_log_entries_reach_only_sessions_that_asked_for_guild_moderation() {
        let f = FakeDiscord::start().await;
        let mut without = identify(&f, 1).await;
        let mut with = identify(&f, 1 | GUILD_MODERATION).await;
        assert_eq!(f.identified_intents(), [1, 1 | GUILD_MODERATION]);
        let id = f.audit(
            GUILD,
            &AuditEntry::role_given(1, 2, 3, "oncall", Some("why")),
        );
        f.update_command_permissions(GUILD, 9, &[(3, 1, true)]);
        let got = next_dispatch(&mut with).await;
        assert_eq!(got["t"], "GUILD_AUDIT_LOG_ENTRY_CREATE");
        assert_eq!(got["d"]["id"], id.to_string());
        assert_eq!(got["d"]["guild_id"], GUILD.to_string());
        assert_eq!(got["d"]["reason"], "why");
        let got = next_dispatch(&mut without).await;
        assert_eq!(got["t"], "APPLICATION_COMMAND_PERMISSIONS_UPDATE");
        assert_eq!(got["d"]["permissions"][0]["permission"], true);
    }

    #[tokio::test]
    async fn the_endpoint_filters_and_pages_as_discord_does() {
        let f = FakeDiscord::start().await;
        let ids: Vec<u64> = (0..5)
            .map(|i| {
                let e = if i == 2 {
                    AuditEntry::role_deleted(1, 3, "oncall")
                } else {
                    AuditEntry::role_given(1, 2, 3, "oncall", None)
                };
                f.add_audit_entry(GUILD, &e)
            })
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        let listed = |query: &str| -> Vec<u64> {
            let (status, v) = page(&f.state, &GUILD.to_string(), query);
            assert_eq!(status, 200);
            v["audit_log_entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().parse().unwrap())
                .collect()
        };
        // Newest first; `after` gives the entries just after it, `before` those just before.
        assert_eq!(listed(""), [ids[4], ids[3], ids[2], ids[1], ids[0]]);
        assert_eq!(listed("action_type=25"), [ids[4], ids[3], ids[1], ids[0]]);
        assert_eq!(
            listed(&format!("action_type=25&after={}&limit=2", ids[0])),
            [ids[3], ids[1]]
        );
        assert_eq!(
            listed(&format!("before={}&limit=2", ids[3])),
            [ids[2], ids[1]]
        );
        assert_eq!(listed("action_type=32&after=0"), [ids[2]]);
        assert!(page(&f.state, "1", "").1["audit_log_entries"]
            .as_array()
            .unwrap()
            .is_empty());
        f.forbid_audit_log();
        let (status, v) = page(&f.state, &GUILD.to_string(), "");
        assert_eq!((status, &v["code"]), (403, &json!(50013)));
    }
}
