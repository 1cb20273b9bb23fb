//! The gateway half: a WebSocket session per connection (HELLO, READY, heartbeats acknowledged)
//! and the interactions a test or the demo fires at the bot through it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

use super::{rest::message_json, FakeDiscord, State, APP_ID};

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
        let options: Vec<Value> = inv.options.iter().map(|(n, v)| option_json(n, v)).collect();
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

    /// Sends a button press in a guild channel (type 3 with `guild_id` and a `member` holding
    /// `roles`) on the message `message` in `channel`; returns the interaction's token.
    pub fn press_in_guild(
        &self,
        user: u64,
        roles: Vec<u64>,
        channel: u64,
        message: u64,
        custom_id: &str,
    ) -> String {
        let id = self.ids.fetch_add(1, Ordering::SeqCst);
        let token = format!("itoken{id}");
        // The name the member's commands carried (or [`FakeDiscord::set_name`]), as for a DM press.
        let name = self
            .state
            .lock()
            .unwrap()
            .names
            .get(&user)
            .cloned()
            .unwrap_or_else(|| format!("user{user}"));
        let user_json = json!({"id": user.to_string(), "username": name,
            "discriminator": "0", "global_name": null, "avatar": null});
        let d = json!({
            "id": id.to_string(),
            "application_id": APP_ID.to_string(),
            "type": 3,
            "data": {"custom_id": custom_id, "component_type": 2},
            "guild_id": crate::GUILD.to_string(),
            "channel_id": channel.to_string(),
            "member": {
                "user": user_json,
                "roles": roles.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "deaf": false, "mute": false, "flags": 0,
                "joined_at": "2024-01-01T00:00:00.000000+00:00",
                "permissions": "0",
            },
            "message": message_json(message, channel, &json!({"content": "request"})),
            "token": token,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {},
            "attachment_size_limit": 8388608,
            "app_permissions": "0",
            "context": 0,
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
            "guild_id": crate::GUILD.to_string(),
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
}

/// Options Discord sends as booleans (type 5, `"true"` is true); every other is a string.
const BOOLEAN_OPTIONS: [&str; 1] = ["break_glass"];

fn option_json(name: &str, value: &str) -> Value {
    if BOOLEAN_OPTIONS.contains(&name) {
        json!({"name": name, "type": 5, "value": value == "true"})
    } else {
        json!({"name": name, "type": 3, "value": value})
    }
}

pub(super) async fn session(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    mut events: broadcast::Receiver<Value>,
    state: Arc<Mutex<State>>,
) {
    // Without this, Nagle's algorithm holds small event frames back for tens of milliseconds.
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let mut seq = 0u64;
    // What the bot asked for at IDENTIFY: events of other intents are not sent, as by Discord.
    let mut intents = 0u64;
    // Discord asks for a heartbeat every 41.25 s; the stand-in asks every 5 s, so a lost gateway
    // shows within seconds in tests and the demo.
    let hello = json!({"op": 10, "d": {"heartbeat_interval": 5000}});
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
                        intents = v["d"]["intents"].as_u64().unwrap_or(0);
                        state.lock().unwrap().intents.push(intents);
                        seq += 1;
                        let ready = json!({"op": 0, "t": "READY", "s": seq, "d": {
                            "v": 10,
                            "user": {"id": APP_ID.to_string(), "username": "vncbot", "discriminator": "0",
                                "global_name": null, "avatar": null, "bot": true},
                            "guilds": [{"id": crate::GUILD.to_string(), "unavailable": true}],
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
                if ev["fake"] == "close" {
                    let _ = ws.close(None).await;
                    return;
                }
                if !super::audit_log::delivered(&ev, intents, &state) {
                    continue;
                }
                seq += 1;
                ev["s"] = json!(seq);
                if ws.send(Message::text(ev.to_string())).await.is_err() {
                    return;
                }
            }
        }
    }
}
