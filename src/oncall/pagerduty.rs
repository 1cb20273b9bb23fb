//! The PagerDuty REST API v2 client: the on-call entries of the configured escalation policies,
//! and the checks of the config at start.
//!
//! Every call sends `Authorization: Token token=<key>` and
//! `Accept: application/vnd.pagerduty+json;version=2`
//! (<https://developer.pagerduty.com/docs/authentication>). `GET /oncalls` pages with
//! `limit=100`/`offset` while `more` is true; PagerDuty stops at offset + limit = 10,000. A 429
//! says in `ratelimit-reset` how many seconds to wait (960 requests a minute per key).

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{OnCallConfig, Shift};

const ACCEPT_V2: &str = "application/vnd.pagerduty+json;version=2";
/// PagerDuty's largest page.
const PAGE: usize = 100;
/// PagerDuty refuses offset + limit past this.
const MAX_OFFSET: usize = 10_000;
/// Each call's bound: a hanging PagerDuty is a failed refresh, not a stuck one.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// When a 429 carries no usable `ratelimit-reset`.
const DEFAULT_RESET: Duration = Duration::from_secs(60);

/// Why PagerDuty gave no usable answer. The text is what an operator reads in the log and in
/// `/healthz`; it never contains the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagerDutyError {
    #[error("PagerDuty refused the API key (401): check PAGERDUTY_TOKEN; use a REST API key (read-only is enough) from Integrations > API Access Keys")]
    Unauthorized,
    #[error("PagerDuty says the API key may not read this (403): use an account-level REST API key, or a user key of someone who can see the escalation policies")]
    Forbidden,
    #[error("PagerDuty is rate limiting this key (429): waiting {} s as its ratelimit-reset says", .0.as_secs())]
    RateLimited(Duration),
    #[error("PagerDuty answered HTTP {0}")]
    Status(u16),
    #[error("PagerDuty did not answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("cannot reach PagerDuty: {0}")]
    Network(String),
    #[error("PagerDuty's answer could not be read: {0}")]
    Invalid(String),
}

/// A client for one account's API key.
#[derive(Clone)]
pub struct PagerDuty {
    http: reqwest::Client,
    base: Url,
    policies: Vec<String>,
    timeout: Duration,
}

impl std::fmt::Debug for PagerDuty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        write!(f, "PagerDuty({})", self.base)
    }
}

#[derive(Deserialize)]
struct Page {
    oncalls: Vec<RawOnCall>,
    #[serde(default)]
    more: bool,
}

#[derive(Deserialize)]
struct RawOnCall {
    escalation_policy: Reference,
    escalation_level: u32,
    user: Reference,
    start: Option<String>,
    end: Option<String>,
}

#[derive(Deserialize)]
struct Reference {
    id: String,
}

impl PagerDuty {
    pub fn new(config: &OnCallConfig, token: &SecretString) -> Result<Self, reqwest::Error> {
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(&format!("Token token={}", token.expose_secret()))
            .unwrap_or_else(|_| HeaderValue::from_static("Token token=invalid"));
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert(ACCEPT, HeaderValue::from_static(ACCEPT_V2));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            // Never follow a redirect: it would carry the key to whatever host Location names.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("vncbot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: config.api_base.clone(),
            policies: config.escalation_policy_ids.clone(),
            timeout: TIMEOUT,
        })
    }

    /// Each call's bound ([`TIMEOUT`] by default).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn url(&self, path: &str) -> Url {
        let mut u = self.base.clone();
        u.set_path(path);
        u
    }

    async fn get(&self, url: Url) -> Result<Vec<u8>, PagerDutyError> {
        let resp = self.http.get(url).timeout(self.timeout).send();
        let resp = resp.await.map_err(|e| {
            if e.is_timeout() {
                PagerDutyError::Timeout(self.timeout)
            } else {
                // Without the URL: it names nothing secret, but the error's chain is enough.
                PagerDutyError::Network(e.without_url().to_string())
            }
        })?;
        let status = resp.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let reset = resp
                .headers()
                .get("ratelimit-reset")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(DEFAULT_RESET, Duration::from_secs);
            return Err(PagerDutyError::RateLimited(reset));
        }
        match status.as_u16() {
            401 => return Err(PagerDutyError::Unauthorized),
            403 => return Err(PagerDutyError::Forbidden),
            s if !status.is_success() => return Err(PagerDutyError::Status(s)),
            _ => {}
        }
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| PagerDutyError::Network(e.without_url().to_string()))
    }

    /// Every on-call entry of the configured policies, all pages read.
    pub async fn oncalls(&self) -> Result<Vec<Shift>, PagerDutyError> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let mut url = self.url("/oncalls");
            {
                let mut q = url.query_pairs_mut();
                for p in &self.policies {
                    q.append_pair("escalation_policy_ids[]", p);
                }
                q.append_pair("include[]", "users")
                    .append_pair("limit", &PAGE.to_string())
                    .append_pair("offset", &offset.to_string());
            }
            let body = self.get(url).await?;
            let page: Page = serde_json::from_slice(&body)
                .map_err(|e| PagerDutyError::Invalid(e.to_string()))?;
            let n = page.oncalls.len();
            for e in page.oncalls {
                all.push(shift(e)?);
            }
            offset += n;
            // `more` with an empty page would loop for ever; PagerDuty stops at 10,000.
            if !page.more || n == 0 || offset + PAGE > MAX_OFFSET {
                if page.more && n > 0 {
                    tracing::warn!(
                        entries = all.len(),
                        "PagerDuty has more on-call entries than it pages (10,000); narrow escalation_policy_ids"
                    );
                }
                return Ok(all);
            }
        }
    }

    /// Whether PagerDuty knows this user (`GET /users/{id}`): `Ok(false)` on a 404.
    pub async fn user_exists(&self, id: &str) -> Result<bool, PagerDutyError> {
        self.exists(&format!("/users/{id}")).await
    }

    /// Whether PagerDuty knows this escalation policy (`GET /escalation_policies/{id}`).
    pub async fn policy_exists(&self, id: &str) -> Result<bool, PagerDutyError> {
        self.exists(&format!("/escalation_policies/{id}")).await
    }

    async fn exists(&self, path: &str) -> Result<bool, PagerDutyError> {
        match self.get(self.url(path)).await {
            Ok(_) => Ok(true),
            Err(PagerDutyError::Status(404)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

fn time(s: &str) -> Result<SystemTime, PagerDutyError> {
    super::parse_rfc3339(s)
        .ok_or_else(|| PagerDutyError::Invalid(format!("{s:?} is not an RFC 3339 time")))
}

fn shift(e: RawOnCall) -> Result<Shift, PagerDutyError> {
    Ok(Shift {
        policy: e.escalation_policy.id,
        level: e.escalation_level,
        user: e.user.id,
        // PagerDuty sends `null` for a permanent (non-scheduled) level: always on call.
        start: match e.start.as_deref() {
            Some(s) => time(s)?,
            None => SystemTime::UNIX_EPOCH,
        },
        end: e.end.as_deref().map(time).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_with_null_start_and_end() {
        let page: Page = serde_json::from_str(
            r#"{"oncalls":[{"escalation_policy":{"id":"P1"},"escalation_level":2,"user":{"id":"U1","name":"x"},"start":null,"end":null},
                {"escalation_policy":{"id":"P1"},"escalation_level":1,"user":{"id":"U2"},"start":"2026-01-01T00:00:00Z","end":"2026-01-01T08:00:00+08:00"}],"more":false}"#,
        )
        .unwrap();
        let shifts: Vec<Shift> = page
            .oncalls
            .into_iter()
            .map(|e| shift(e).unwrap())
            .collect();
        assert_eq!(shifts[0].start, SystemTime::UNIX_EPOCH);
        assert_eq!(shifts[0].end, None);
        assert_eq!((shifts[1].level, shifts[1].user.as_str()), (1, "U2"));
        assert_eq!(shifts[1].end, Some(shifts[1].start));
    }

    #[test]
    fn errors_never_show_the_key_and_say_what_to_do() {
        assert!(PagerDutyError::Unauthorized
            .to_string()
            .contains("PAGERDUTY_TOKEN"));
        assert!(PagerDutyError::RateLimited(Duration::from_secs(7))
            .to_string()
            .contains("waiting 7 s"));
    }
}
