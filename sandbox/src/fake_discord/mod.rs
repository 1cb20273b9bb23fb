//! A fake Discord on loopback: a gateway (WebSocket, JSON text frames) and a REST API that the
//! real serenity client connects to. Tests fire slash commands as given members, close a member's
//! DMs, and read every REST call the bot made.
//!
//! `gateway.rs` sends the interactions, `rest.rs` answers the bot's calls and records them, and
//! `member.rs` plays a member's moves (a `/vnc`, its reply, its grant's DM, a press) for the demo
//! and the tests alike.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::http::serve;

mod admin;
mod audit_log;
mod gateway;
mod member;
mod rest;

pub use admin::AdminOption;
pub use audit_log::{AuditEntry, GUILD_MODERATION};
pub use gateway::Invocation;
pub use member::{vnc, GrantDm};

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
    nonces: HashMap<String, u64>,
    /// The next calls matching (method, path fragment) are carried out, but their answer is
    /// lost (the connection is reset): Discord took the request and the bot never heard.
    lose_answers: Vec<(String, String, usize)>,
    /// User → roles, for member fetches.
    member_roles: HashMap<u64, Vec<u64>>,
    /// User → the name their commands carried, so their presses carry it too.
    names: HashMap<u64, String>,
    /// Messages in each channel, oldest first (what `GET /channels/{id}/messages` reads).
    messages: HashMap<u64, Vec<Value>>,
    /// (method, path fragment, how many more times): answered only after a minute, as a
    /// Discord that hangs.
    hangs: Vec<(String, String, usize)>,
    /// (method, path fragment, delay in ms, how many more times): answered late, but answered.
    slows: Vec<(String, String, u64, usize)>,
    /// The servers' audit logs: (guild, entry as Discord sends it), oldest first.
    audit_log: Vec<(u64, Value)>,
    /// The newest audit log entry ID handed out.
    last_audit_entry: u64,
    /// `GET /guilds/{id}/audit-logs` answers 403 and no entry is dispatched.
    audit_log_forbidden: bool,
    /// The intents of each IDENTIFY, in order.
    intents: Vec<u64>,
    /// The query of each `GET /guilds/{id}/audit-logs`, in order.
    audit_log_queries: Vec<String>,
    /// Channels the bot may not see or post in (403 Missing Access).
    unpostable: HashSet<u64>,
    /// Channels whose overwrites deny Send Messages to @everyone (the bot may read them).
    no_send: HashSet<u64>,
}

#[derive(Clone)]
pub struct FakeDiscord {
    pub rest: SocketAddr,
    pub gateway: SocketAddr,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Value>,
    ids: Arc<AtomicU64>,
    /// The gateway is down: sessions closed, new connections dropped.
    down: Arc<AtomicBool>,
}

impl FakeDiscord {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let ids = Arc::new(AtomicU64::new(1_000_000_000_000_000_000));
        let (events, _) = broadcast::channel(4096);

        let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = ws.local_addr().unwrap();
        let ev = events.clone();
        let down = Arc::new(AtomicBool::new(false));
        let refuse = Arc::clone(&down);
        let seen = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((stream, _)) = ws.accept().await {
                // A gateway that is down: the connection is dropped at once.
                if refuse.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                let rx = ev.subscribe();
                tokio::spawn(gateway::session(stream, gateway, rx, Arc::clone(&seen)));
            }
        });

        let (st, id_gen) = (Arc::clone(&state), Arc::clone(&ids));
        let rest = serve(move |req| {
            let st = Arc::clone(&st);
            let id_gen = Arc::clone(&id_gen);
            async move { rest::answer(&st, &id_gen, gateway, req) }
        })
        .await;
        Self {
            rest,
            gateway,
            state,
            events,
            ids,
            down,
        }
    }

    /// The gateway goes away: every session's socket is closed, and new connections are dropped
    /// until [`FakeDiscord::restore_gateway`].
    pub fn drop_gateway(&self) {
        self.down.store(true, Ordering::SeqCst);
        let _ = self.events.send(serde_json::json!({ "fake": "close" }));
    }

    /// The gateway takes connections again.
    pub fn restore_gateway(&self) {
        self.down.store(false, Ordering::SeqCst);
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

    /// The next `times` calls with this method whose path contains `fragment` hang: they are
    /// answered only after a minute (a Discord that stalls).
    pub fn hang(&self, method: &str, fragment: &str, times: usize) {
        self.state
            .lock()
            .unwrap()
            .hangs
            .push((method.to_owned(), fragment.to_owned(), times));
    }

    /// The next `times` calls with this method whose path contains `fragment` are answered
    /// after `delay` (a slow Discord that still answers within the client's bound).
    pub fn slow(&self, method: &str, fragment: &str, delay: std::time::Duration, times: usize) {
        self.state.lock().unwrap().slows.push((
            method.to_owned(),
            fragment.to_owned(),
            delay.as_millis() as u64,
            times,
        ));
    }

    /// A message in `channel` by someone other than the bot (`author`), as if posted there.
    pub fn post_as(&self, channel: u64, author: u64, content: &str) -> u64 {
        let id = self.ids.fetch_add(1, Ordering::SeqCst);
        let mut msg = rest::message_json(id, channel, &serde_json::json!({ "content": content }));
        msg["author"] = serde_json::json!({"id": author.to_string(), "username": format!("user{author}"),
            "discriminator": "0", "global_name": null, "avatar": null});
        self.state
            .lock()
            .unwrap()
            .messages
            .entry(channel)
            .or_default()
            .push(msg);
        id
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
        // Calls are only ever appended: each wake looks at (and copies) only the new ones, so
        // many waiters in a burst cost the fake little (the load benchmark shares two cores with
        // the bot it measures).
        let mut looked = 0;
        loop {
            // Registered before looking, so a call recorded in between still wakes us.
            let next = recorded.notified();
            tokio::pin!(next);
            next.as_mut().enable();
            let new = {
                let s = self.state.lock().unwrap();
                let new = s.calls[looked..].to_vec();
                looked = s.calls.len();
                new
            };
            if let Some(c) = new.into_iter().find(|c| f(c)) {
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

    /// The roles `GET /guilds/{g}/members/{user}` answers with (members not set: 404).
    pub fn set_roles(&self, user: u64, roles: Vec<u64>) {
        self.state.lock().unwrap().member_roles.insert(user, roles);
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
