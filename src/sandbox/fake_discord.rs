//! A fake Discord on loopback: a gateway (WebSocket, JSON text frames) and a REST API that the
//! real serenity client connects to. Tests fire slash commands as given members, close a member's
//! DMs, and read every REST call the bot made.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

use super::http::{serve, HttpRequest, Reply};

pub const APP_ID: u64 = 900000000000000001;
pub const TOKEN: &str = "fake-discord-bot-token.for.tests";

#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    pub body: Value,
    pub at: Instant,
    pub status: u16,
    /// What the fake answered.
    pub reply: Value,
}

#[derive(Default)]
struct State {
    calls: Vec<Call>,
    /// (method, path fragment, status, how many more times)
    failures: Vec<(String, String, u16, usize)>,
    dms_closed: HashSet<u64>,
    /// DM channel id → user id.
    dm_channels: Vec<(u64, u64)>,
    /// Woken at every recorded call, for `wait_for`.
    recorded: Arc<tokio::sync::Notify>,
    /// Message nonce → message id, as Discord deduplicates with `enforce_nonce`.
    nonces: std::collections::HashMap<String, u64>,
    /// The next calls matching (method, path fragment) are carried out, but their answer is
    /// lost (the connection is reset): Discord took the request and the bot never heard.
    lose_answers: Vec<(String, String, usize)>,
    /// User → roles, for member fetches.
    member_roles: std::collections::HashMap<u64, Vec<u64>>,
    /// User → the name their commands carried, so their presses carry it too.
    names: std::collections::HashMap<u64, String>,
}

#[derive(Clone)]
pub struct FakeDiscord {
    pub rest: SocketAddr,
    pub gateway: SocketAddr,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Value>,
    ids: Arc<AtomicU64>,
}

/// A grant's DM as the fake saw it.
#[derive(Debug, Clone, Copy)]
pub struct GrantDm {
    pub user: u64,
    pub channel: u64,
    pub message: u64,
    pub grant: u64,
}

/// One slash command as a member sends it.
pub struct Invocation<'a> {
    pub user: u64,
    pub name: &'a str,
    pub guild: Option<u64>,
    pub roles: Vec<u64>,
    pub command: &'a str,
    pub options: Vec<(&'a str, &'a str)>,
}

impl FakeDiscord {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let ids = Arc::new(AtomicU64::new(1_000_000_000_000_000_000));
        let (events, _) = broadcast::channel(4096);

        let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = ws.local_addr().unwrap();
        let ev = events.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = ws.accept().await {
                let rx = ev.subscribe();
                tokio::spawn(gateway_session(stream, gateway, rx));
            }
        });

        let (st, id_gen) = (Arc::clone(&state), Arc::clone(&ids));
        let rest = serve(move |req| {
            let st = Arc::clone(&st);
            let id_gen = Arc::clone(&id_gen);
            async move { rest(&st, &id_gen, gateway, req) }
        })
        .await;
        Self {
            rest,
            gateway,
            state,
            events,
            ids,
        }
    }

    pub fn config_lines(&self) -> String {
        format!(
            "api_base = \"http://{}\"\ngateway_url = \"ws://{}\"",
            self.rest, self.gateway
        )
    }

    pub fn close_dms(&self, user: u64) {
        self.state.lock().unwrap().dms_closed.insert(user);
    }

    /// The next `times` calls with this method whose path contains `fragment` fail with `status`.
    pub fn fail(&self, method: &str, fragment: &str, status: u16, times: usize) {
        self.state.lock().unwrap().failures.push((
            method.to_owned(),
            fragment.to_owned(),
            status,
            times,
        ));
    }

    /// The next `times` calls matching are carried out but answered with a connection reset.
    pub fn lose_answer(&self, method: &str, fragment: &str, times: usize) {
        self.state.lock().unwrap().lose_answers.push((
            method.to_owned(),
            fragment.to_owned(),
            times,
        ));
    }

    /// Counts matching calls without copying them (for polling loops under load).
    pub fn count(&self, f: impl Fn(&Call) -> bool) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| f(c))
            .count()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    /// Waits until some call matches, or panics after `timeout`.
    pub async fn wait_for(&self, timeout: Duration, what: &str, f: impl Fn(&Call) -> bool) -> Call {
        let deadline = tokio::time::Instant::now() + timeout;
        let recorded = Arc::clone(&self.state.lock().unwrap().recorded);
        loop {
            // Registered before looking, so a call recorded in between still wakes us.
            let next = recorded.notified();
            tokio::pin!(next);
            next.as_mut().enable();
            if let Some(c) = self.calls().into_iter().find(|c| f(c)) {
                return c;
            }
            if tokio::time::timeout_at(deadline, next).await.is_err() {
                panic!("timed out waiting for {what}; calls: {:#?}", self.calls());
            }
        }
    }

    /// Waits for `/vnc` to be registered, which the bot does on READY.
    pub async fn wait_ready(&self) {
        self.wait_for(Duration::from_secs(20), "command registration", |c| {
            c.method == "PUT" && c.path.contains("/commands")
        })
        .await;
    }

    /// Sends INTERACTION_CREATE; returns the interaction's token, which names its REST calls.
    pub fn invoke(&self, inv: Invocation<'_>) -> String {
        self.state
            .lock()
            .unwrap()
            .names
            .insert(inv.user, inv.name.to_owned());
        let id = self.ids.fetch_add(1, Ordering::SeqCst);
        let token = format!("itoken{id}");
        let user = json!({"id": inv.user.to_string(), "username": inv.name, "discriminator": "0",
            "global_name": null, "avatar": null});
        let options: Vec<Value> = inv
            .options
            .iter()
            .map(|(n, v)| json!({"name": n, "type": 3, "value": v}))
            .collect();
        let mut d = json!({
            "id": id.to_string(),
            "application_id": APP_ID.to_string(),
            "type": 2,
            "data": {"id": "910000000000000001", "name": inv.command, "type": 1, "options": options},
            "channel_id": "820000000000000001",
            "token": token,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {},
            "attachment_size_limit": 8388608,
            "app_permissions": "0",
        });
        match inv.guild {
            Some(g) => {
                d["guild_id"] = json!(g.to_string());
                d["member"] = json!({
                    "user": user,
                    "roles": inv.roles.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "deaf": false, "mute": false, "flags": 0,
                    "joined_at": "2024-01-01T00:00:00.000000+00:00",
                    "permissions": "0",
                });
            }
            None => d["user"] = user,
        }
        self.events
            .send(json!({"op": 0, "t": "INTERACTION_CREATE", "d": d}))
            .expect("the bot is connected to the gateway");
        token
    }

    /// Sends a button press from a DM (type 3: `user`, no `member`) on the DM message
    /// `message` in `channel`; returns the interaction's token.
    pub fn press(&self, user: u64, channel: u64, message: u64, custom_id: &str) -> String {
        let id = self.ids.fetch_add(1, Ordering::SeqCst);
        let token = format!("itoken{id}");
        let name = self
            .state
            .lock()
            .unwrap()
            .names
            .get(&user)
            .cloned()
            .unwrap_or_else(|| format!("user{user}"));
        let d = json!({
            "id": id.to_string(),
            "application_id": APP_ID.to_string(),
            "type": 3,
            "data": {"custom_id": custom_id, "component_type": 2},
            "channel_id": channel.to_string(),
            "user": {"id": user.to_string(), "username": name, "discriminator": "0",
                "global_name": null, "avatar": null},
            "message": message_json(message, channel, &json!({"content": "grant"})),
            "token": token,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {},
            "attachment_size_limit": 8388608,
            "app_permissions": "0",
            "context": 1,
        });
        self.events
            .send(json!({"op": 0, "t": "INTERACTION_CREATE", "d": d}))
            .expect("the bot is connected to the gateway");
        token
    }

    /// Sends an autocomplete interaction (type 4) for `/vnc`'s `instance` option as a member of
    /// the served guild types `typed`; returns its token. The answer is a type 8 callback.
    pub fn autocomplete(&self, user: u64, roles: Vec<u64>, typed: &str) -> String {
        let id = self.ids.fetch_add(1, Ordering::SeqCst);
        let token = format!("itoken{id}");
        let user_json = json!({"id": user.to_string(), "username": format!("user{user}"),
            "discriminator": "0", "global_name": null, "avatar": null});
        let d = json!({
            "id": id.to_string(),
            "application_id": APP_ID.to_string(),
            "type": 4,
            "data": {"id": "910000000000000001", "name": "vnc", "type": 1, "options": [
                {"name": "instance", "type": 3, "value": typed, "focused": true}]},
            "guild_id": super::GUILD.to_string(),
            "channel_id": "820000000000000001",
            "member": {
                "user": user_json,
                "roles": roles.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "deaf": false, "mute": false, "flags": 0,
                "joined_at": "2024-01-01T00:00:00.000000+00:00",
                "permissions": "0",
            },
            "token": token,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {},
            "attachment_size_limit": 8388608,
            "app_permissions": "0",
        });
        self.events
            .send(json!({"op": 0, "t": "INTERACTION_CREATE", "d": d}))
            .expect("the bot is connected to the gateway");
        token
    }

    /// The choices an autocomplete interaction was answered with (`(name, value)`).
    pub async fn choices(&self, token: &str) -> Vec<(String, String)> {
        let c = self
            .wait_for(Duration::from_secs(5), "the autocomplete answer", |c| {
                c.path.contains(token) && c.path.ends_with("/callback")
            })
            .await;
        assert_eq!(c.body["type"], 8, "{}", c.body);
        c.body["data"]["choices"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|ch| {
                        (
                            ch["name"].as_str().unwrap_or_default().to_owned(),
                            ch["value"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The roles `GET /guilds/{g}/members/{user}` answers with (members not set: 404).
    pub fn set_roles(&self, user: u64, roles: Vec<u64>) {
        self.state.lock().unwrap().member_roles.insert(user, roles);
    }

    /// The last grant DM sent to `user` (after `/vnc` answered), if any.
    pub fn grant_dm(&self, user: u64) -> Option<GrantDm> {
        let channels = self.dm_channels_of(user);
        self.calls().into_iter().rev().find_map(|c| {
            let channel: u64 = c
                .path
                .strip_prefix("/api/v10/channels/")?
                .strip_suffix("/messages")?
                .parse()
                .ok()?;
            let custom = c.body["components"][0]["components"][0]["custom_id"].as_str()?;
            if c.method != "POST" || c.status != 200 || !channels.contains(&channel) {
                return None;
            }
            Some(GrantDm {
                user,
                channel,
                message: c.reply["id"].as_str()?.parse().ok()?,
                grant: custom.strip_prefix("vnc:open:")?.parse().ok()?,
            })
        })
    }

    /// Presses Open console on a grant's DM (as its holder); returns the press's token.
    pub fn press_open(&self, g: &GrantDm) -> String {
        self.press(
            g.user,
            g.channel,
            g.message,
            &format!("vnc:open:{}", g.grant),
        )
    }

    /// What a press did: the DM edited (a link, or the grant ended) or an ephemeral follow-up.
    pub async fn press_result(&self, token: &str) -> Call {
        self.wait_for(Duration::from_secs(20), "the press's answer", |c| {
            c.path.contains(token) && !c.path.ends_with("/callback")
        })
        .await
    }

    /// Calls made for one interaction (its callback and its reply edits).
    pub fn calls_for(&self, token: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path.contains(token))
            .collect()
    }

    /// DMs created for a user: their channel ids.
    pub fn dm_channels_of(&self, user: u64) -> Vec<u64> {
        self.state
            .lock()
            .unwrap()
            .dm_channels
            .iter()
            .filter(|(_, u)| *u == user)
            .map(|(c, _)| *c)
            .collect()
    }
}

async fn gateway_session(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    mut events: broadcast::Receiver<Value>,
) {
    // Without this, Nagle's algorithm holds small event frames back for tens of milliseconds.
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let mut seq = 0u64;
    let hello = json!({"op": 10, "d": {"heartbeat_interval": 41250}});
    if ws.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else { return };
                let Ok(text) = msg.to_text() else { continue };
                let Ok(v) = serde_json::from_str::<Value>(text) else { continue };
                match v["op"].as_u64() {
                    Some(1) => {
                        let _ = ws.send(Message::text(json!({"op": 11}).to_string())).await;
                    }
                    Some(2) => {
                        seq += 1;
                        let ready = json!({"op": 0, "t": "READY", "s": seq, "d": {
                            "v": 10,
                            "user": {"id": APP_ID.to_string(), "username": "vncbot", "discriminator": "0",
                                "global_name": null, "avatar": null, "bot": true},
                            "guilds": [{"id": super::GUILD.to_string(), "unavailable": true}],
                            "session_id": "fake-session",
                            "resume_gateway_url": format!("ws://{addr}"),
                            "application": {"id": APP_ID.to_string(), "flags": 0},
                            "shard": [0, 1],
                        }});
                        let _ = ws.send(Message::text(ready.to_string())).await;
                    }
                    _ => {}
                }
            }
            ev = events.recv() => {
                let Ok(mut ev) = ev else { continue };
                seq += 1;
                ev["s"] = json!(seq);
                if ws.send(Message::text(ev.to_string())).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn message_json(id: u64, channel: u64, body: &Value) -> Value {
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

fn rest(
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
    let (status, reply) = if let Some(status) = injected {
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
            ("PUT", ["api", "v10", "applications", _, "guilds", _, "commands"]) => (200, json!([])),
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
                    if let Some(n) = nonce {
                        state.lock().unwrap().nonces.insert(n, id);
                    }
                    (200, message_json(id, channel, &body))
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
