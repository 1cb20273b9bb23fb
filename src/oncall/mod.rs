//! Who is on call, from a schedule source (PagerDuty): a cache the core asks "is member M on
//! call now at level ≤ L, and until when?".
//!
//! [`pagerduty`] is the REST client (`GET /oncalls`, paged; `GET /users/{id}` and
//! `GET /escalation_policies/{id}` to check the config at start). [`cache`] holds the last good
//! answer per escalation policy and refreshes it in the background on the injected clock. While
//! PagerDuty fails, the cache serves what it had for `stale_grace_secs` at most; past that,
//! nobody is on call (fail closed), and `/healthz`, a metric and the refused member say why.
//!
//! A bot cannot read members' emails, so `[oncall.users]` maps Discord user IDs to PagerDuty
//! user IDs; a member missing from it is simply not on call, and is told so.

pub mod cache;
pub mod pagerduty;
pub mod startup;

use std::time::{Duration, SystemTime};

use reqwest::Url;
use serde::Deserialize;

use crate::ids::Snowflake;

pub use crate::audit::OnCallEvidence as Evidence;
pub use cache::OnCallCache;
pub use pagerduty::{PagerDuty, PagerDutyError};

/// The environment variable that holds the PagerDuty REST API key.
pub const PAGERDUTY_TOKEN: &str = "PAGERDUTY_TOKEN";
pub const DEFAULT_API_BASE: &str = "https://api.pagerduty.com";
pub const DEFAULT_MAX_ESCALATION_LEVEL: u32 = 1;
/// PagerDuty allows 20 levels per escalation policy.
pub const MAX_ESCALATION_LEVEL: u32 = 20;
pub const DEFAULT_REFRESH_SECS: u64 = 60;
/// More often spends PagerDuty's 960 requests a minute per key for little.
pub const MIN_REFRESH_SECS: u64 = 5;
/// An hour: a rota older than that misses hand-offs.
pub const MAX_REFRESH_SECS: u64 = 3600;
pub const DEFAULT_STALE_GRACE_SECS: u64 = 300;
/// A day: past that, a cached rota says little about who is on call.
pub const MAX_STALE_GRACE_SECS: u64 = 86_400;

/// `[oncall] provider`: only PagerDuty (Opsgenie's API ends 2027-04-05).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Pagerduty,
}

/// `[oncall]` and `[oncall.users]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnCallConfig {
    pub provider: Provider,
    /// `https://`, or `http://` only to a loopback address (tests, the demo's stand-in).
    pub api_base: Url,
    pub escalation_policy_ids: Vec<String>,
    /// An entry counts only at this escalation level or a lower one (1 is the first responder).
    pub max_escalation_level: u32,
    /// How often the on-call entries are fetched again.
    pub refresh: Duration,
    /// How long the last good entries are served while PagerDuty fails.
    pub stale_grace: Duration,
    /// Discord user ID → PagerDuty user ID.
    pub users: Vec<(Snowflake, String)>,
}

impl OnCallConfig {
    /// The PagerDuty user a Discord member is mapped to.
    pub fn pagerduty_user(&self, discord: u64) -> Option<&str> {
        self.users
            .iter()
            .find(|(d, _)| d.get() == discord)
            .map(|(_, p)| p.as_str())
    }
}

/// What the core asks of a schedule source: "is member M on call now, and until when?" (the
/// level bound is the source's own config). [`OnCallCache`] is the one in use; tests may give
/// the core another.
pub trait OnCallSource: Send + Sync {
    /// What is known of this Discord member now.
    fn lookup(&self, discord_user: u64) -> OnCall;
    /// What `/healthz` should say while the source is failing; `None` while it answers.
    fn health_detail(&self) -> Option<String>;
}

impl OnCallSource for OnCallCache {
    fn lookup(&self, discord_user: u64) -> OnCall {
        OnCallCache::lookup(self, discord_user)
    }

    fn health_detail(&self) -> Option<String> {
        OnCallCache::health_detail(self)
    }
}

/// A time as PagerDuty and the journal write it (RFC 3339, UTC). The schedule source sits
/// below the core, so it formats times itself.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// An RFC 3339 time, with any offset PagerDuty sends.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// Whether a PagerDuty ID looks like one (`PABC123`): letters and digits, 2 to 20 of them.
pub fn is_pagerduty_id(s: &str) -> bool {
    (2..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// One on-call entry as cached: a PagerDuty user at a level of a policy, from `start` to `end`
/// (`None`: indefinitely).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shift {
    pub policy: String,
    pub level: u32,
    pub user: String,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
}

/// What the cache says about one member now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnCall {
    /// No `[oncall]`: on-call rules cannot exist (the config refuses them).
    NoSource,
    /// On call: the shift that counts (the lowest level, then the latest end).
    On(Shift),
    /// Mapped, but on call in none of the policies at `max_level` or below.
    Off { max_level: u32 },
    /// Not in `[oncall.users]`: never on call.
    NotMapped,
    /// PagerDuty has failed for longer than the grace period (or never answered): nobody is on
    /// call until it answers again.
    Unavailable {
        /// The last good answer, if there ever was one.
        last_ok: Option<SystemTime>,
    },
}

impl OnCall {
    pub fn shift(&self) -> Option<&Shift> {
        match self {
            OnCall::On(s) => Some(s),
            _ => None,
        }
    }

    /// The evidence to journal with a decision made on this answer.
    pub fn evidence(&self) -> Option<Evidence> {
        let status = match self {
            OnCall::NoSource => return None,
            OnCall::On(_) => "on_call",
            OnCall::Off { .. } => "not_on_call",
            OnCall::NotMapped => "not_mapped",
            OnCall::Unavailable { .. } => "unavailable",
        };
        let shift = self.shift();
        Some(Evidence {
            status: status.to_owned(),
            policy: shift.map(|s| s.policy.clone()),
            level: shift.map(|s| s.level),
            pagerduty_user: shift.map(|s| s.user.clone()),
            shift_end: shift.and_then(|s| s.end).map(rfc3339),
        })
    }
}
