//! A PagerDuty REST API v2 stand-in: the few endpoints vncbot reads to know who is on call.
//!
//! It checks what PagerDuty checks: `Authorization: Token token=<key>` (401 without the right
//! key) and `Accept: application/vnd.pagerduty+json;version=2` (406 otherwise). `GET /oncalls`
//! filters by `escalation_policy_ids[]`, honours `include[]=users` (a full user object instead
//! of a reference) and pages with `limit`/`offset` and `more`, as PagerDuty does; the page size
//! can be capped ([`MockPagerDuty::set_page_size`]) so a test sees several pages with a handful
//! of entries. `GET /users/{id}` and `GET /escalation_policies/{id}` answer 404 for an ID it
//! does not know. Faults are scripted: the next calls ([`MockPagerDuty::fail_next`]) or every
//! call until told otherwise ([`MockPagerDuty::set_down`]) answer 429 with `ratelimit-reset`,
//! 500, or hang.
//!
//! Entries are served as set, whatever the time: the bot decides on its own clock whether a
//! shift has started or ended (a test moves that clock, not this stand-in's).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::http::{serve, HttpRequest, Reply};

/// The read-only REST API key the stand-in accepts.
pub const TOKEN: &str = "pd-mock-readonly-key-0123456789";
/// The `Accept` header PagerDuty's v2 API asks for.
pub const ACCEPT: &str = "application/vnd.pagerduty+json;version=2";
/// PagerDuty's own largest page.
pub const MAX_LIMIT: usize = 100;

/// A failure to answer with, instead of the real answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 429 with `ratelimit-reset: secs`.
    RateLimited { reset_secs: u64 },
    /// This HTTP status with PagerDuty's error body (500, 503, ...).
    Status(u16),
    /// No answer for an hour: the client's timeout must fire.
    Hang,
}

/// One on-call entry: a user at a level of an escalation policy, from `start` to `end`
/// (`None`: indefinitely, as PagerDuty sends `null`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnCall {
    pub policy: String,
    pub level: u32,
    pub user: String,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
}

#[derive(Default)]
struct State {
    policies: Vec<String>,
    /// User ID → name.
    users: HashMap<String, String>,
    oncalls: Vec<OnCall>,
    page_size: Option<usize>,
    script: VecDeque<Fault>,
    down: Option<Fault>,
    seen: Vec<HttpRequest>,
}

/// The stand-in, on loopback; clones share its state.
#[derive(Clone)]
pub struct MockPagerDuty {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    seen: Arc<tokio::sync::Notify>,
}

impl MockPagerDuty {
    /// Serves no policy, user or entry yet: add them with [`Self::add_policy`],
    /// [`Self::add_user`] and [`Self::set_oncalls`].
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let seen = Arc::new(tokio::sync::Notify::new());
        let (s, n) = (Arc::clone(&state), Arc::clone(&seen));
        let addr = serve(move |req| {
            let (s, n) = (Arc::clone(&s), Arc::clone(&n));
            async move {
                let reply = handle(&s, &req);
                lock(&s).seen.push(req);
                n.notify_waiters();
                reply
            }
        })
        .await;
        Self { addr, state, seen }
    }

    /// A stand-in with one escalation policy and these users on call on it from an hour ago,
    /// indefinitely: `(user ID, name, escalation level)`. What `vncbot demo` needs to show an
    /// on-call member let through.
    pub async fn start_with_rota(policy: &str, on_call: &[(&str, &str, u32)]) -> Self {
        let pd = Self::start().await;
        pd.add_policy(policy);
        let start = SystemTime::now() - Duration::from_secs(3600);
        let mut entries = Vec::new();
        for (user, name, level) in on_call {
            pd.add_user(user, name);
            entries.push(OnCall {
                policy: policy.to_owned(),
                level: *level,
                user: (*user).to_owned(),
                start,
                end: None,
            });
        }
        pd.set_oncalls(entries);
        pd
    }

    /// `http://127.0.0.1:PORT`, for `[oncall] api_base`.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add_policy(&self, id: &str) {
        lock(&self.state).policies.push(id.to_owned());
    }

    pub fn add_user(&self, id: &str, name: &str) {
        lock(&self.state)
            .users
            .insert(id.to_owned(), name.to_owned());
    }

    /// Replaces every on-call entry (a schedule change, an override, a hand-off).
    pub fn set_oncalls(&self, entries: Vec<OnCall>) {
        lock(&self.state).oncalls = entries;
    }

    /// Caps each `/oncalls` page at `n` entries whatever `limit` asks (PagerDuty's is 100).
    pub fn set_page_size(&self, n: usize) {
        lock(&self.state).page_size = Some(n.max(1));
    }

    /// The next call answers with `fault` (queued behind faults already scripted).
    pub fn fail_next(&self, fault: Fault) {
        lock(&self.state).script.push_back(fault);
    }

    /// Every call answers with `fault` until `set_down(None)`.
    pub fn set_down(&self, fault: Option<Fault>) {
        lock(&self.state).down = fault;
    }

    /// Every request received so far, in order.
    pub fn seen(&self) -> Vec<HttpRequest> {
        lock(&self.state).seen.clone()
    }

    /// Requests received so far whose path starts with `prefix` (e.g. `/oncalls`).
    pub fn seen_at(&self, prefix: &str) -> Vec<HttpRequest> {
        lock(&self.state)
            .seen
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Waits until at least `n` requests under `prefix` have been received (or `limit` passes).
    pub async fn wait_for(&self, prefix: &str, n: usize, limit: Duration) -> Vec<HttpRequest> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.seen.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.seen_at(prefix);
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "PagerDuty stand-in: waited {limit:?} for {n} request(s) to {prefix}, got {}",
                    got.len()
                );
            }
        }
    }
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn error(status: u16, code: u32, message: &str) -> Reply {
    Reply::json(
        status,
        &json!({ "error": { "message": message, "code": code } }),
    )
}

fn fault_reply(f: Fault) -> Reply {
    match f {
        Fault::RateLimited { reset_secs } => Reply::WithHeaders(
            vec![
                ("ratelimit-limit", "960".into()),
                ("ratelimit-remaining", "0".into()),
                ("ratelimit-reset", reset_secs.to_string()),
            ],
            Box::new(error(429, 2020, "Rate Limit Exceeded")),
        ),
        Fault::Status(s) => error(s, 2001, "Internal Server Error"),
        Fault::Hang => Reply::Delay(
            Duration::from_secs(3600),
            Box::new(error(500, 2001, "Internal Server Error")),
        ),
    }
}

fn handle(state: &Mutex<State>, req: &HttpRequest) -> Reply {
    let mut s = lock(state);
    if let Some(f) = s.script.pop_front().or(s.down) {
        return fault_reply(f);
    }
    if req.header("authorization") != Some(&format!("Token token={TOKEN}")) {
        return error(401, 2006, "Unauthorized");
    }
    if req.header("accept") != Some(ACCEPT) {
        return error(
            406,
            2001,
            "Not Acceptable: send Accept: application/vnd.pagerduty+json;version=2",
        );
    }
    if req.method != "GET" {
        return error(405, 2001, "Method Not Allowed");
    }
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let params = parse_query(query);
    if path == "/oncalls" {
        return oncalls(&s, &params);
    }
    if let Some(id) = path.strip_prefix("/users/") {
        return match s.users.get(id) {
            Some(name) => Reply::json(200, &json!({ "user": user(id, name) })),
            None => error(404, 2100, "Not Found"),
        };
    }
    if let Some(id) = path.strip_prefix("/escalation_policies/") {
        return if s.policies.iter().any(|p| p == id) {
            Reply::json(
                200,
                &json!({ "escalation_policy": { "id": id, "type": "escalation_policy", "name": format!("Policy {id}") } }),
            )
        } else {
            error(404, 2100, "Not Found")
        };
    }
    drop(s);
    error(404, 2100, "Not Found")
}

fn user(id: &str, name: &str) -> Value {
    json!({
        "id": id,
        "type": "user",
        "name": name,
        "email": format!("{}@example.com", id.to_ascii_lowercase()),
        "summary": name,
    })
}

fn oncalls(s: &State, params: &[(String, String)]) -> Reply {
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let parse = |k: &str, default: usize| match get(k) {
        None => Ok(default),
        Some(v) => v.parse::<usize>().map_err(|_| ()),
    };
    let (Ok(limit), Ok(offset)) = (parse("limit", 25), parse("offset", 0)) else {
        return error(
            400,
            2001,
            "Invalid Input Provided: limit and offset are numbers",
        );
    };
    if limit == 0 || limit > MAX_LIMIT || offset + limit > 10_000 {
        return error(
            400,
            2001,
            "Invalid Input Provided: limit is 1 to 100, offset + limit at most 10000",
        );
    }
    let policies: Vec<&str> = params
        .iter()
        .filter(|(n, _)| n == "escalation_policy_ids[]")
        .map(|(_, v)| v.as_str())
        .collect();
    let users = params.iter().any(|(n, v)| n == "include[]" && v == "users");
    let all: Vec<&OnCall> = s
        .oncalls
        .iter()
        .filter(|e| policies.is_empty() || policies.contains(&e.policy.as_str()))
        .collect();
    let page = limit.min(s.page_size.unwrap_or(MAX_LIMIT));
    let entries: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(page)
        .map(|e| {
            let name = s.users.get(&e.user).cloned().unwrap_or_default();
            json!({
                "escalation_policy": { "id": e.policy, "type": "escalation_policy_reference" },
                "escalation_level": e.level,
                "schedule": null,
                "user": if users { user(&e.user, &name) } else { json!({ "id": e.user, "type": "user_reference" }) },
                "start": rfc3339(e.start),
                "end": e.end.map(rfc3339),
            })
        })
        .collect();
    let more = offset + entries.len() < all.len();
    Reply::json(
        200,
        &json!({ "oncalls": entries, "limit": page, "offset": offset, "more": more, "total": null }),
    )
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// `a=1&b%5B%5D=x` → `[("a","1"), ("b[]","x")]`.
fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rota_is_served_only_with_both_headers() {
        let pd = MockPagerDuty::start_with_rota("PDEMO01", &[("PUSER01", "Ana", 1)]).await;
        let ok = HttpRequest {
            method: "GET".into(),
            path: "/oncalls?escalation_policy_ids%5B%5D=PDEMO01&include%5B%5D=users&limit=100&offset=0".into(),
            headers: vec![
                ("authorization".into(), format!("Token token={TOKEN}")),
                ("accept".into(), ACCEPT.into()),
            ],
            body: vec![],
            received_at: std::time::Instant::now(),
        };
        let status = |r: Reply| match r {
            Reply::Respond { status, body, .. } => (status, String::from_utf8(body).unwrap()),
            other => panic!("{other:?}"),
        };
        let (code, body) = status(handle(&pd.state, &ok));
        assert_eq!(code, 200);
        assert!(
            body.contains("\"PUSER01\"") && body.contains("\"type\":\"user\""),
            "{body}"
        );
        assert!(
            body.contains("\"more\":false") && body.contains("\"end\":null"),
            "{body}"
        );
        let mut no_key = ok.clone();
        no_key.headers.remove(0);
        assert_eq!(status(handle(&pd.state, &no_key)).0, 401);
        let mut no_accept = ok.clone();
        no_accept.headers.remove(1);
        assert_eq!(status(handle(&pd.state, &no_accept)).0, 406);
        pd.fail_next(Fault::Status(500));
        assert_eq!(status(handle(&pd.state, &ok)).0, 500);
        pd.fail_next(Fault::RateLimited { reset_secs: 3 });
        match handle(&pd.state, &ok) {
            Reply::WithHeaders(h, _) => {
                assert!(h.contains(&("ratelimit-reset", "3".to_owned())), "{h:?}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn queries_are_decoded() {
        assert_eq!(
            parse_query("escalation_policy_ids%5B%5D=P1&include[]=users&limit=2"),
            vec![
                ("escalation_policy_ids[]".to_owned(), "P1".to_owned()),
                ("include[]".to_owned(), "users".to_owned()),
                ("limit".to_owned(), "2".to_owned())
            ]
        );
        assert_eq!(decode("a%2"), "a%2");
    }
}
