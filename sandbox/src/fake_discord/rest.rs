//! The REST half: the routes serenity calls, checked for the bot token, with the failures a
//! test scripts (a status, a lost answer) and every call recorded for the tests to read.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{Call, State, APP_ID, TOKEN};
use crate::http::{HttpRequest, Reply};

pub(super) fn message_json(id: u64, channel: u64, body: &Value) -> Value {
    json!({
        "id": id.to_string(), "channel_id": channel.to_string(),
        "author": {"id": APP_ID.to_string(), "username": "vncbot", "discriminator": "0", "global_name": null, "avatar": null, "bot": true},
        "content": body.get("content").cloned().unwrap_or(json!("")),
        "timestamp": "2026-01-01T00:00:00.000000+00:00", "edited_timestamp": null,
        "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
        "attachments": [], "embeds": [], "pinned": false, "type": 0, "flags": 0,
        "components": [],
    })
}

pub(super) fn answer(
    state: &Arc<Mutex<State>>,
    ids: &AtomicU64,
    gateway: SocketAddr,
    req: HttpRequest,
) -> Reply {
    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let path = req.path.split('?').next().unwrap_or_default().to_owned();
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let authorized = req.header("authorization") == Some(&format!("Bot {TOKEN}"));
    let new_id = || ids.fetch_add(1, Ordering::SeqCst);
    let injected = {
        let mut st = state.lock().unwrap();
        let hit = st.failures.iter_mut().find(|(m, frag, _, left)| {
            *m == req.method && path.contains(frag.as_str()) && *left > 0
        });
        hit.map(|f| {
            f.3 -= 1;
            f.2
        })
    };
    // A channel the bot may not see: reading it or posting in it is 403, as Discord answers.
    let forbidden = match (req.method.as_str(), &seg[..]) {
        ("GET", ["api", "v10", "channels", channel])
        | ("POST", ["api", "v10", "channels", channel, "messages"]) => channel
            .parse::<u64>()
            .is_ok_and(|c| state.lock().unwrap().unpostable.contains(&c)),
        _ => false,
    };
    let (status, reply) = if forbidden {
        (403, json!({"message": "Missing Access", "code": 50001}))
    } else if let Some(status) = injected {
        let body = match status {
            429 => {
                json!({"message": "You are being rate limited.", "retry_after": 1.0, "global": false})
            }
            404 => json!({"message": "Unknown Webhook", "code": 10015}),
            _ => json!({"message": "500: Internal Server Error", "code": 0}),
        };
        (status, body)
    } else if !authorized && !path.contains("/interactions/") && !path.contains("/webhooks/") {
        (401, json!({"message": "401: Unauthorized", "code": 0}))
    } else {
        match (req.method.as_str(), &seg[..]) {
            ("GET", ["api", "v10", "gateway"]) => (200, json!({"url": format!("ws://{gateway}")})),
            ("GET", ["api", "v10", "users", "@me"]) => (
                200,
                json!({"id": APP_ID.to_string(), "username": "vncbot", "discriminator": "0",
                    "global_name": null, "avatar": null, "bot": true}),
            ),
            ("GET", ["api", "v10", "channels", channel]) => {
                let id: u64 = channel.parse().unwrap_or(0);
                let owner = state
                    .lock()
                    .unwrap()
                    .dm_channels
                    .iter()
                    .find(|(c, _)| *c == id)
                    .map(|(_, u)| *u);
                match owner {
                    Some(user) => (
                        200,
                        json!({"id": channel, "type": 1, "last_message_id": null,
                            "recipients": [{"id": user.to_string(), "username": "member", "discriminator": "0", "global_name": null, "avatar": null}]}),
                    ),
                    // Any other channel is a text channel of the server (where @everyone may
                    // be denied Send Messages: `FakeDiscord::deny_send`).
                    None => {
                        let overwrites = if state.lock().unwrap().no_send.contains(&id) {
                            json!([{"id": crate::GUILD.to_string(), "type": 0, "allow": "0",
                                "deny": super::admin::SEND_MESSAGES.to_string()}])
                        } else {
                            json!([])
                        };
                        (
                            200,
                            json!({"id": channel, "type": 0, "guild_id": "800000000000000001",
                                "name": "ops", "position": 0, "permission_overwrites": overwrites, "nsfw": false}),
                        )
                    }
                }
            }
            ("GET", ["api", "v10", "channels", channel, "messages"]) => {
                let id: u64 = channel.parse().unwrap_or(0);
                let query = req.path.split_once('?').map_or("", |(_, q)| q);
                let param = |name: &str| {
                    query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                        .and_then(|v| v.parse::<u64>().ok())
                };
                let limit = param("limit").unwrap_or(50).clamp(1, 100) as usize;
                let before = param("before").unwrap_or(u64::MAX);
                let st = state.lock().unwrap();
                // Newest first, as Discord lists them.
                let page: Vec<Value> = st
                    .messages
                    .get(&id)
                    .map(|m| {
                        m.iter()
                            .rev()
                            .filter(|v| {
                                v["id"]
                                    .as_str()
                                    .and_then(|i| i.parse::<u64>().ok())
                                    .unwrap_or(0)
                                    < before
                            })
                            .take(limit)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                (200, Value::Array(page))
            }
            ("PUT", ["api", "v10", "applications", _, "guilds", _, "commands"]) => (200, json!([])),
            ("GET", ["api", "v10", "guilds", guild]) => (200, super::admin::guild_json(guild)),
            ("POST", ["api", "v10", "interactions", _, _, "callback"]) => (204, Value::Null),
            ("PATCH", ["api", "v10", "webhooks", _, _, "messages", "@original"]) => {
                (200, message_json(new_id(), 820000000000000001, &body))
            }
            ("POST", ["api", "v10", "webhooks", _, _]) => {
                (200, message_json(new_id(), 820000000000000001, &body))
            }
            ("GET", ["api", "v10", "guilds", guild, "members", user]) => {
                let u: u64 = user.parse().unwrap_or(0);
                let roles = state.lock().unwrap().member_roles.get(&u).cloned();
                match roles {
                    Some(roles) => (
                        200,
                        json!({
                            "user": {"id": user, "username": format!("user{user}"), "discriminator": "0",
                                "global_name": null, "avatar": null},
                            "nick": null, "avatar": null,
                            "roles": roles.iter().map(ToString::to_string).collect::<Vec<_>>(),
                            "joined_at": "2024-01-01T00:00:00.000000+00:00",
                            "premium_since": null, "deaf": false, "mute": false, "flags": 0,
                            "pending": false, "communication_disabled_until": null,
                            "guild_id": guild,
                        }),
                    ),
                    None => (404, json!({"message": "Unknown Member", "code": 10007})),
                }
            }
            ("POST", ["api", "v10", "users", "@me", "channels"]) => {
                let user: u64 = body["recipient_id"]
                    .as_str()
                    .map(|s| s.parse().unwrap_or(0))
                    .or_else(|| body["recipient_id"].as_u64())
                    .unwrap_or(0);
                let channel = new_id();
                state.lock().unwrap().dm_channels.push((channel, user));
                (
                    200,
                    json!({"id": channel.to_string(), "type": 1, "last_message_id": null,
                    "recipients": [{"id": user.to_string(), "username": "member", "discriminator": "0", "global_name": null, "avatar": null}]}),
                )
            }
            ("POST", ["api", "v10", "channels", channel, "messages"]) => {
                let channel: u64 = channel.parse().unwrap_or(0);
                let st = state.lock().unwrap();
                let owner = st
                    .dm_channels
                    .iter()
                    .find(|(c, _)| *c == channel)
                    .map(|(_, u)| *u);
                if owner.is_some_and(|u| st.dms_closed.contains(&u)) {
                    (
                        403,
                        json!({"message": "Cannot send messages to this user", "code": 50007}),
                    )
                } else {
                    drop(st);
                    let nonce = body["nonce"]
                        .as_str()
                        .filter(|_| body["enforce_nonce"] == true)
                        .map(str::to_owned);
                    let known = nonce
                        .as_ref()
                        .and_then(|n| state.lock().unwrap().nonces.get(n).copied());
                    let id = known.unwrap_or_else(new_id);
                    let msg = message_json(id, channel, &body);
                    let mut st = state.lock().unwrap();
                    if let Some(n) = nonce {
                        st.nonces.insert(n, id);
                    }
                    if known.is_none() {
                        st.messages.entry(channel).or_default().push(msg.clone());
                    }
                    (200, msg)
                }
            }
            ("PATCH", ["api", "v10", "channels", channel, "messages", mid]) => (
                200,
                message_json(
                    mid.parse().unwrap_or(1),
                    channel.parse().unwrap_or(1),
                    &body,
                ),
            ),
            ("GET", ["api", "v10", "guilds", guild, "audit-logs"]) => super::audit_log::page(
                state,
                guild,
                req.path.split_once('?').map_or("", |(_, q)| q),
            ),
            ("GET", ["api", "v10", "users", user]) => (
                200,
                json!({"id": user, "username": format!("user{user}"), "discriminator": "0",
                    "global_name": null, "avatar": null}),
            ),
            _ => (404, json!({"message": "404: Not Found", "code": 0})),
        }
    };
    let recorded = {
        let mut s = state.lock().unwrap();
        s.calls.push(Call {
            method: req.method.clone(),
            path: path.clone(),
            body,
            at: req.received_at,
            status,
            reply: reply.clone(),
        });
        Arc::clone(&s.recorded)
    };
    recorded.notify_waiters();
    let lost = {
        let mut st = state.lock().unwrap();
        st.lose_answers
            .iter_mut()
            .find(|(m, frag, left)| *m == req.method && path.contains(frag.as_str()) && *left > 0)
            .map(|l| l.2 -= 1)
            .is_some()
    };
    if lost {
        return Reply::Reset;
    }
    let hang = {
        let mut st = state.lock().unwrap();
        st.hangs
            .iter_mut()
            .find(|(m, frag, left)| *m == req.method && path.contains(frag.as_str()) && *left > 0)
            .map(|h| h.2 -= 1)
            .is_some()
    };
    let slow = {
        let mut st = state.lock().unwrap();
        st.slows
            .iter_mut()
            .find(|(m, frag, _, left)| {
                *m == req.method && path.contains(frag.as_str()) && *left > 0
            })
            .map(|h| {
                h.3 -= 1;
                h.2
            })
    };
    if let Some(ms) = slow {
        return Reply::Delay(
            std::time::Duration::from_millis(ms),
            Box::new(Reply::json(status, &reply)),
        );
    }
    if hang {
        return Reply::Delay(
            std::time::Duration::from_secs(60),
            Box::new(Reply::json(status, &reply)),
        );
    }
    if status == 204 {
        Reply::Respond {
            status,
            content_type: "application/json",
            body: Vec::new(),
        }
    } else {
        Reply::json(status, &reply)
    }
}
