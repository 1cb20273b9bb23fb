//! The config file (TOML) and the secrets from the environment.
//!
//! Loading is strict: unknown keys are rejected by serde, and validation (`raw`) collects every
//! remaining mistake, each naming its key and the fix, so an admin fixes the file in one pass.
//! This module holds what the rest of the crate sees: validated values only.

mod raw;
mod secrets;
mod source;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::access::Rule;
use crate::ids::Snowflake;

pub use secrets::{
    discord_token_from_env, EnvError, DISCORD_TOKEN, SECRET_ID, SECRET_KEY, SESSION_TOKEN,
};
pub use source::Source;
// The sections whose types the modules they configure define; named here too, so callers see
// one config.
pub use crate::access::{
    ApprovalMode, Gate, DEFAULT_APPROVALS_REQUIRED, DEFAULT_REQUEST_TTL_MINUTES,
    MAX_APPROVALS_REQUIRED, MAX_REQUEST_TTL_MINUTES,
};
pub use crate::limits::LimitsConfig;
pub use crate::tencent::{Language, NotServed, TencentConfig, TencentCredentials};

pub const DEFAULT_PATH: &str = "config/vncbot.toml";

#[derive(Debug, Clone)]
pub struct Config {
    /// The file's keys as written: what a reload diffs and the journal's digest covers.
    pub source: Source,
    pub discord: DiscordConfig,
    pub tencent: TencentConfig,
    pub allow: Vec<Rule>,
    pub grants: GrantsConfig,
    pub catalog: CatalogConfig,
    pub limits: LimitsConfig,
    pub audit: AuditConfig,
    pub admin: Option<AdminConfig>,
    pub log: LogConfig,
    /// `[approvals]`: needed by rules with approvers or break-glass roles.
    pub approvals: Option<ApprovalsConfig>,
}

/// `[approvals]`: where requests are posted, break-glass bounds, `/vncadmin`'s roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalsConfig {
    pub channel_id: Snowflake,
    /// 1 to [`MAX_BREAK_GLASS_MINUTES`].
    pub break_glass_minutes: u32,
    /// Per member, in any 24 hours.
    pub break_glass_per_day: u32,
    /// Hours a break-glass use waits for an acknowledgement before `ack_overdue`.
    pub ack_hours: u32,
    /// Roles whose members may use `/vncadmin`.
    pub admin_roles: Vec<Snowflake>,
}

impl ApprovalsConfig {
    pub fn break_glass_for(&self) -> Duration {
        Duration::from_secs(u64::from(self.break_glass_minutes) * 60)
    }

    pub fn ack_within(&self) -> Duration {
        Duration::from_secs(u64::from(self.ack_hours) * 3600)
    }
}

#[derive(Debug, Clone)]
pub struct DiscordConfig {
    pub guild_ids: Vec<Snowflake>,
    pub audit_channel_id: Option<Snowflake>,
    /// REST base URL. When set, serenity's own rate limiter must be turned off: with it on,
    /// serenity sends every REST call to discord.com whatever the proxy says.
    /// `http://` only to a loopback address.
    pub api_base: Option<Url>,
    /// `ws://` only to a loopback address.
    pub gateway_url: Option<Url>,
}

/// How long a grant lasts and how many console links it may mint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantsConfig {
    /// 1 to [`MAX_GRANT_MINUTES`].
    pub minutes: u32,
    /// 1 to [`MAX_LINKS_PER_GRANT`].
    pub links_per_grant: u32,
}

impl GrantsConfig {
    pub fn duration(&self) -> Duration {
        Duration::from_secs(u64::from(self.minutes) * 60)
    }
}

impl Default for GrantsConfig {
    fn default() -> Self {
        Self {
            minutes: DEFAULT_GRANT_MINUTES,
            links_per_grant: DEFAULT_LINKS_PER_GRANT,
        }
    }
}

/// The catalog of instances (`DescribeInstances`): names, autocomplete, state, tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogConfig {
    pub enabled: bool,
    /// How often every region's list is fetched again
    /// ([`MIN_CATALOG_REFRESH_SECS`] to [`MAX_CATALOG_REFRESH_SECS`] seconds).
    pub refresh: Duration,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            refresh: Duration::from_secs(DEFAULT_CATALOG_REFRESH_SECS),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub require_reason: bool,
    /// How often the journal head is posted to the audit channel (1 to [`MAX_ANCHOR_MINUTES`]);
    /// without `discord.audit_channel_id` nothing is posted.
    pub anchor_minutes: u32,
    /// `[audit.ship]`: where the journal is shipped, if anywhere.
    pub ship: Option<crate::ship::ShipConfig>,
    /// What start-up does when the journal no longer holds the head last anchored in the audit
    /// channel.
    pub on_anchor_mismatch: OnAnchorMismatch,
}

/// `[audit] on_anchor_mismatch`: refuse to start (the default), or start with a loud warning
/// (an operator who restored a journal on purpose).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnAnchorMismatch {
    #[default]
    Refuse,
    Warn,
}

impl AuditConfig {
    pub fn anchor_interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.anchor_minutes) * 60)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LogConfig {
    pub format: LogFormat,
}

pub const DEFAULT_CATALOG_REFRESH_SECS: u64 = 60;
/// More often would spend Tencent calls for little: a full list of 10,000 instances is 100 pages.
pub const MIN_CATALOG_REFRESH_SECS: u64 = 10;
/// An hour: older than that, states and tags are too stale to act on.
pub const MAX_CATALOG_REFRESH_SECS: u64 = 3600;
pub const DEFAULT_PER_USER_PER_MINUTE: u32 = 3;
pub const MAX_PER_USER_PER_MINUTE: u32 = 60;
pub const DEFAULT_PER_INSTANCE_PER_MINUTE: u32 = 10;
/// Tencent allows at most 30 console reconnects a minute per instance.
pub const MAX_PER_INSTANCE_PER_MINUTE: u32 = 30;
/// Tencent's documented limit for DescribeInstanceVncUrl, per account; also the default.
pub const MAX_API_PER_SECOND: u32 = 10;
pub const DEFAULT_GRANT_MINUTES: u32 = 10;
/// A grant is for an incident's first response, not a standing permission.
pub const MAX_GRANT_MINUTES: u32 = 60;
pub const DEFAULT_LINKS_PER_GRANT: u32 = 10;
/// Each link costs one of Tencent's 30 reconnects a minute for the instance.
pub const MAX_LINKS_PER_GRANT: u32 = 30;
pub const DEFAULT_REFUSALS_PER_USER_PER_MINUTE: u32 = 10;
pub const MAX_REFUSALS_PER_USER_PER_MINUTE: u32 = 600;
pub const DEFAULT_BREAK_GLASS_MINUTES: u32 = 30;
/// Break-glass is for an emergency's first hour; longer needs an approval.
pub const MAX_BREAK_GLASS_MINUTES: u32 = 60;
pub const DEFAULT_BREAK_GLASS_PER_DAY: u32 = 2;
pub const MAX_BREAK_GLASS_PER_DAY: u32 = 10;
pub const DEFAULT_ACK_HOURS: u32 = 24;
/// A week: an unacknowledged emergency older than that is not being looked at.
pub const MAX_ACK_HOURS: u32 = 168;
pub const DEFAULT_AUDIT_PATH: &str = "vncbot-audit.jsonl";
pub const DEFAULT_ANCHOR_MINUTES: u32 = 60;
/// One day: an anchor older than that leaves too long a stretch of the journal unwitnessed.
pub const MAX_ANCHOR_MINUTES: u32 = 1440;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read the config file {path}: {source}; pass --config PATH or set VNCBOT_CONFIG"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path} has {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// Why config text was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not TOML, or a key serde does not know (the message names it).
    #[error("{0}")]
    Syntax(String),
    /// Well-formed, but these values cannot be used.
    #[error("{}", problems_lines(.0))]
    Invalid(Vec<Problem>),
}

fn problems_lines(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("{p}\n")).collect()
}

/// One mistake in the config: the key and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Config {
    /// Reads and validates a config file. Relative audit paths are kept as written (relative to
    /// the working directory), which is what systemd's `WorkingDirectory` and containers expect.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ParseError::Syntax(message) => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            ParseError::Invalid(problems) => ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            },
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        raw::parse(text)
    }
}

impl Config {
    /// What is valid but probably not what was meant: duplicate or overlapping `[[allow]]` rules
    /// (see `access::overlaps` for the exact definition). Never an error: `check-config` prints
    /// these, and the bot logs them at start and at each reload.
    pub fn warnings(&self) -> Vec<String> {
        crate::access::overlaps(&self.allow, &self.tencent.regions)
            .iter()
            .map(ToString::to_string)
            .collect()
    }
}
