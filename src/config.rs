//! The config file (TOML) and the secrets from the environment.
//!
//! Loading is strict: unknown keys are rejected by serde, and [`Config::validate`] collects every
//! remaining mistake, each naming its key and the fix, so an admin fixes the file in one pass.

use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;
use serde::Deserialize;

use crate::access::Rule;
use crate::ids::{Region, Snowflake};

pub const DEFAULT_PATH: &str = "config/vncbot.toml";

#[derive(Debug, Clone)]
pub struct Config {
    pub discord: DiscordConfig,
    pub tencent: TencentConfig,
    pub allow: Vec<Rule>,
    pub limits: LimitsConfig,
    pub audit: AuditConfig,
    pub admin: Option<AdminConfig>,
    pub log: LogConfig,
}

#[derive(Debug, Clone)]
pub struct DiscordConfig {
    pub guild_ids: Vec<Snowflake>,
    pub audit_channel_id: Option<Snowflake>,
    /// REST base URL; when set, serenity's own rate limiter is turned off (see DESIGN.md).
    pub api_base: Option<Url>,
    pub gateway_url: Option<Url>,
}

#[derive(Debug, Clone)]
pub struct TencentConfig {
    /// Configured regions; the first is the default.
    pub regions: Vec<Region>,
    pub endpoint: Option<Url>,
    pub language: Language,
    pub timeout: Duration,
}

impl TencentConfig {
    pub fn default_region(&self) -> &Region {
        &self.regions[0]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Language {
    #[serde(rename = "en-US")]
    EnUs,
    #[serde(rename = "zh-CN")]
    ZhCn,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::EnUs => "en-US",
            Language::ZhCn => "zh-CN",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    pub per_user_per_minute: NonZeroU32,
    pub per_instance_per_minute: NonZeroU32,
    pub refusals_per_user_per_minute: NonZeroU32,
    pub api_per_second: NonZeroU32,
}

#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub require_reason: bool,
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

/// Tencent allows at most 30 console reconnects a minute per instance.
pub const MAX_PER_INSTANCE_PER_MINUTE: u32 = 30;
/// Tencent's documented limit for DescribeInstanceVncUrl, per account.
pub const MAX_API_PER_SECOND: u32 = 10;
/// Longest Tencent timeout we accept: the console URL is only useful for 15 s after the call.
pub const MAX_TIMEOUT_SECS: u64 = 60;

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

// ---- the file as written --------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    discord: RawDiscord,
    tencent: RawTencent,
    #[serde(default)]
    allow: Vec<RawRule>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    audit: RawAudit,
    admin: Option<RawAdmin>,
    #[serde(default)]
    log: RawLog,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDiscord {
    guild_ids: Vec<Snowflake>,
    audit_channel_id: Option<Snowflake>,
    api_base: Option<String>,
    gateway_url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTencent {
    regions: Vec<String>,
    endpoint: Option<String>,
    language: Option<Language>,
    timeout_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    roles: Vec<Snowflake>,
    instances: Vec<String>,
    regions: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default = "default_per_user")]
    per_user_per_minute: u32,
    #[serde(default = "default_per_instance")]
    per_instance_per_minute: u32,
    #[serde(default = "default_api")]
    api_per_second: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            per_user_per_minute: default_per_user(),
            per_instance_per_minute: default_per_instance(),
            api_per_second: default_api(),
        }
    }
}

fn default_per_user() -> u32 {
    3
}
fn default_per_instance() -> u32 {
    10
}
fn default_api() -> u32 {
    MAX_API_PER_SECOND
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    #[serde(default = "default_audit_path")]
    path: PathBuf,
    #[serde(default)]
    require_reason: bool,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            path: default_audit_path(),
            require_reason: false,
        }
    }
}

fn default_audit_path() -> PathBuf {
    PathBuf::from("vncbot-audit.jsonl")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    format: LogFormat,
}

// ---- loading and validation -----------------------------------------------------------------

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
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ParseError::Syntax(describe_toml_error(&e)))?;
        validate(raw).map_err(ParseError::Invalid)
    }
}

#[derive(Debug)]
pub enum ParseError {
    Syntax(String),
    Invalid(Vec<Problem>),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Syntax(m) => f.write_str(m),
            ParseError::Invalid(ps) => {
                for p in ps {
                    writeln!(f, "{p}")?;
                }
                Ok(())
            }
        }
    }
}

fn describe_toml_error(e: &toml::de::Error) -> String {
    // toml's message already names the key and shows the line; fold it onto one line per part.
    let mut msg = e.to_string().trim().replace('\n', " | ");
    if msg.contains("unknown field") {
        msg.push_str(
            " (remove the key or fix its spelling; config/vncbot.example.toml lists every key)",
        );
    }
    msg
}

struct Collector(Vec<Problem>);

impl Collector {
    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

fn validate(raw: RawConfig) -> Result<Config, Vec<Problem>> {
    let mut p = Collector(Vec::new());

    // [discord]
    if raw.discord.guild_ids.is_empty() {
        p.push(
            "discord.guild_ids",
            "is empty: list the server (guild) IDs where /vnc may be used",
        );
    }
    check_duplicates(&mut p, "discord.guild_ids", &raw.discord.guild_ids);
    let api_base = raw
        .discord
        .api_base
        .as_deref()
        .and_then(|s| parse_base_url(&mut p, "discord.api_base", s));
    let gateway_url = raw
        .discord
        .gateway_url
        .as_deref()
        .and_then(|s| match Url::parse(s) {
            Ok(u) if matches!(u.scheme(), "ws" | "wss") && u.host_str().is_some() => Some(u),
            _ => {
                p.push(
                    "discord.gateway_url",
                    format!(
                        "{s:?} is not a ws:// or wss:// URL (for example wss://gateway.discord.gg)"
                    ),
                );
                None
            }
        });

    // [tencent]
    let mut regions = Vec::new();
    if raw.tencent.regions.is_empty() {
        p.push(
            "tencent.regions",
            "is empty: list at least one region, e.g. [\"ap-guangzhou\"]; the first is the default",
        );
    }
    for (i, r) in raw.tencent.regions.iter().enumerate() {
        match Region::parse(r) {
            Ok(region) if regions.contains(&region) => p.push(
                format!("tencent.regions[{i}]"),
                format!("{region} is listed twice: remove the duplicate"),
            ),
            Ok(region) => regions.push(region),
            Err(e) => p.push(format!("tencent.regions[{i}]"), e.to_string()),
        }
    }
    let endpoint = raw
        .tencent
        .endpoint
        .as_deref()
        .and_then(|s| parse_base_url(&mut p, "tencent.endpoint", s));
    let timeout_secs = raw.tencent.timeout_secs.unwrap_or(10);
    if !(1..=MAX_TIMEOUT_SECS).contains(&timeout_secs) {
        p.push(
            "tencent.timeout_secs",
            format!(
                "{timeout_secs} is out of range: use 1 to {MAX_TIMEOUT_SECS} seconds (default 10)"
            ),
        );
    }

    // [[allow]]
    if raw.allow.is_empty() {
        p.push(
            "allow",
            "no [[allow]] rules: add at least one with roles, instances and regions, or nobody can use /vnc",
        );
    }
    let mut rules = Vec::with_capacity(raw.allow.len());
    for (i, rule) in raw.allow.iter().enumerate() {
        let key = |field: &str| format!("allow[{i}].{field}");
        if rule.roles.is_empty() {
            p.push(
                key("roles"),
                "is empty: list the Discord role IDs this rule admits",
            );
        }
        check_duplicates(&mut p, &key("roles"), &rule.roles);
        if rule.instances.is_empty() {
            p.push(
                key("instances"),
                "is empty: list instance IDs or patterns such as \"ins-web*\", or \"*\" for all",
            );
        }
        for (j, pattern) in rule.instances.iter().enumerate() {
            if let Err(msg) = crate::access::check_instance_pattern(pattern) {
                p.push(format!("allow[{i}].instances[{j}]"), msg);
            }
        }
        check_duplicates(&mut p, &key("instances"), &rule.instances);
        if rule.regions.is_empty() {
            p.push(
                key("regions"),
                "is empty: list region names from tencent.regions, or \"*\" for all of them",
            );
        }
        let mut rule_regions = Vec::new();
        for (j, r) in rule.regions.iter().enumerate() {
            if r == "*" {
                continue;
            }
            match Region::parse(r) {
                Ok(region) if !regions.contains(&region) => p.push(
                    format!("allow[{i}].regions[{j}]"),
                    format!("{region} is not in tencent.regions: add it there or remove it here"),
                ),
                Ok(region) => rule_regions.push(region),
                Err(e) => p.push(format!("allow[{i}].regions[{j}]"), e.to_string()),
            }
        }
        check_duplicates(&mut p, &key("regions"), &rule.regions);
        rules.push(Rule {
            roles: rule.roles.clone(),
            instances: rule.instances.clone(),
            // `None` means every configured region.
            regions: if rule.regions.iter().any(|r| r == "*") {
                None
            } else {
                Some(rule_regions)
            },
        });
    }

    // [limits]
    let limit = |p: &mut Collector, key: &str, v: u32, max: u32, why: &str| {
        if v == 0 || v > max {
            p.push(key, format!("{v} is out of range: use 1 to {max} ({why})"));
        }
        NonZeroU32::new(v.clamp(1, max)).expect("clamped to at least 1")
    };
    let limits = LimitsConfig {
        per_user_per_minute: limit(
            &mut p,
            "limits.per_user_per_minute",
            raw.limits.per_user_per_minute,
            60,
            "requests a member may make per minute",
        ),
        per_instance_per_minute: limit(
            &mut p,
            "limits.per_instance_per_minute",
            raw.limits.per_instance_per_minute,
            MAX_PER_INSTANCE_PER_MINUTE,
            "Tencent allows at most 30 console reconnects a minute",
        ),
        refusals_per_user_per_minute: NonZeroU32::new(10).expect("nonzero"),
        api_per_second: limit(
            &mut p,
            "limits.api_per_second",
            raw.limits.api_per_second,
            MAX_API_PER_SECOND,
            "Tencent allows at most 10 DescribeInstanceVncUrl calls a second per account",
        ),
    };

    // [audit]
    if raw.audit.path.as_os_str().is_empty() {
        p.push(
            "audit.path",
            "is empty: give a file path such as \"vncbot-audit.jsonl\"",
        );
    }
    if raw.audit.path.is_dir() {
        p.push(
            "audit.path",
            format!(
                "{} is a directory: give a file path inside it",
                raw.audit.path.display()
            ),
        );
    }

    // [admin]
    let admin = raw
        .admin
        .and_then(|a| match a.listen.parse::<SocketAddr>() {
            Ok(listen) => Some(AdminConfig { listen }),
            Err(_) => {
                p.push(
                    "admin.listen",
                    format!(
                        "{:?} is not an IP:PORT address (for example \"127.0.0.1:9187\")",
                        a.listen
                    ),
                );
                None
            }
        });

    if !p.0.is_empty() {
        return Err(p.0);
    }
    Ok(Config {
        discord: DiscordConfig {
            guild_ids: raw.discord.guild_ids,
            audit_channel_id: raw.discord.audit_channel_id,
            api_base,
            gateway_url,
        },
        tencent: TencentConfig {
            regions,
            endpoint,
            language: raw.tencent.language.unwrap_or(Language::EnUs),
            timeout: Duration::from_secs(timeout_secs),
        },
        allow: rules,
        limits,
        audit: AuditConfig {
            path: raw.audit.path,
            require_reason: raw.audit.require_reason,
        },
        admin,
        log: LogConfig {
            format: raw.log.format,
        },
    })
}

/// `scheme://host[:port]` and nothing else: a path here would be silently dropped or mis-signed.
fn parse_base_url(p: &mut Collector, key: &str, s: &str) -> Option<Url> {
    let hint = "use a scheme, host and optional port only, like https://cvm.tencentcloudapi.com or http://127.0.0.1:8080";
    match Url::parse(s) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.path() == "/"
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty()
                && u.password().is_none() =>
        {
            Some(u)
        }
        Ok(_) => {
            p.push(
                key,
                format!("{s:?} has a path, query or credentials, or is not http(s): {hint}"),
            );
            None
        }
        Err(e) => {
            p.push(key, format!("{s:?} is not a URL ({e}): {hint}"));
            None
        }
    }
}

fn check_duplicates<T: PartialEq + fmt::Display>(p: &mut Collector, key: &str, items: &[T]) {
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            p.push(
                format!("{key}[{i}]"),
                format!("{item} is listed twice: remove the duplicate"),
            );
        }
    }
}

// ---- secrets ----------------------------------------------------------------------------------

/// Tencent Cloud API credentials, from the environment only (the names Tencent's SDKs use).
#[derive(Clone)]
pub struct TencentCredentials {
    pub secret_id: String,
    pub secret_key: SecretString,
    pub session_token: Option<SecretString>,
}

impl fmt::Debug for TencentCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TencentCredentials")
            .field("secret_id", &mask(&self.secret_id))
            .field("secret_key", &"[redacted]")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{0} is not set: export it before starting vncbot ({1})")]
    Missing(&'static str, &'static str),
    #[error("{0} is set but empty: give it a value ({1})")]
    Empty(&'static str, &'static str),
    #[error(
        "{0} has spaces or line breaks at its ends or inside: copy the value again without them"
    )]
    Whitespace(&'static str),
    #[error("{0} is not valid Unicode: copy the value again")]
    NotUnicode(&'static str),
}

pub const SECRET_ID: &str = "TENCENTCLOUD_SECRET_ID";
pub const SECRET_KEY: &str = "TENCENTCLOUD_SECRET_KEY";
pub const SESSION_TOKEN: &str = "TENCENTCLOUD_SESSION_TOKEN";
pub const DISCORD_TOKEN: &str = "DISCORD_TOKEN";

fn env_var(
    name: &'static str,
    what: &'static str,
    required: bool,
) -> Result<Option<String>, EnvError> {
    match std::env::var(name) {
        Ok(v) if v.is_empty() && required => Err(EnvError::Empty(name, what)),
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) if v.chars().any(char::is_whitespace) => Err(EnvError::Whitespace(name)),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) if required => Err(EnvError::Missing(name, what)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(EnvError::NotUnicode(name)),
    }
}

impl TencentCredentials {
    pub fn from_env() -> Result<Self, EnvError> {
        let secret_id = env_var(
            SECRET_ID,
            "the API key's SecretId, from the CAM console",
            true,
        )?
        .expect("required");
        let secret_key = env_var(
            SECRET_KEY,
            "the API key's SecretKey, from the CAM console",
            true,
        )?
        .expect("required");
        let session_token = env_var(SESSION_TOKEN, "only for temporary credentials", false)?;
        Ok(Self {
            secret_id,
            secret_key: secret_key.into(),
            session_token: session_token.map(Into::into),
        })
    }
}

/// The Discord bot token, from the environment only.
pub fn discord_token_from_env() -> Result<SecretString, EnvError> {
    let token = env_var(
        DISCORD_TOKEN,
        "the bot token from the Discord developer portal, Bot tab",
        true,
    )?
    .expect("required");
    Ok(token.into())
}

/// Shows enough of an identifier to tell keys apart, never enough to use one.
pub fn mask(s: &str) -> String {
    let visible: String = s.chars().take(4).collect();
    format!("{visible}…({} chars)", s.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[discord]
guild_ids = [800000000000000001, "800000000000000002"]

[tencent]
regions = ["ap-guangzhou", "ap-shanghai-fsi"]

[[allow]]
roles = [555000000000000001]
instances = ["*"]
regions = ["*"]
"#;

    fn problems(text: &str) -> Vec<Problem> {
        match Config::parse(text) {
            Err(ParseError::Invalid(p)) => p,
            Err(ParseError::Syntax(s)) => panic!("unexpected syntax error: {s}"),
            Ok(_) => panic!("config unexpectedly valid"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.discord.guild_ids.len(), 2);
        assert_eq!(c.tencent.default_region().as_str(), "ap-guangzhou");
        assert_eq!(c.tencent.language, Language::EnUs);
        assert_eq!(c.tencent.timeout, Duration::from_secs(10));
        assert_eq!(c.limits.api_per_second.get(), 10);
        assert_eq!(c.limits.per_user_per_minute.get(), 3);
        assert!(c.admin.is_none());
        assert!(c.allow[0].regions.is_none());
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let text = GOOD.replace("[tencent]", "[tencent]\nregoins = []");
        match Config::parse(&text) {
            Err(ParseError::Syntax(s)) => assert!(s.contains("regoins"), "{s}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_mistake_is_reported_with_its_key() {
        let text = r#"
[discord]
guild_ids = [1, 1]
api_base = "http://127.0.0.1:9/api"
gateway_url = "http://x"
[tencent]
regions = ["ap-guangzhou", "ap-guangzho"]
endpoint = "ftp://x"
timeout_secs = 0
[[allow]]
roles = []
instances = ["INS-ABC", "ins-web*"]
regions = ["ap-tokyo"]
[limits]
per_instance_per_minute = 31
api_per_second = 11
[admin]
listen = "localhost"
"#;
        let keys: Vec<String> = problems(text).into_iter().map(|p| p.key).collect();
        for key in [
            "discord.guild_ids[1]",
            "discord.api_base",
            "discord.gateway_url",
            "tencent.regions[1]",
            "tencent.endpoint",
            "tencent.timeout_secs",
            "allow[0].roles",
            "allow[0].instances[0]",
            "allow[0].regions[0]",
            "limits.per_instance_per_minute",
            "limits.api_per_second",
            "admin.listen",
        ] {
            assert!(keys.iter().any(|k| k == key), "missing {key} in {keys:?}");
        }
    }

    #[test]
    fn empty_allowlist_is_an_error() {
        let text = GOOD.split("[[allow]]").next().unwrap();
        assert!(problems(text).iter().any(|p| p.key == "allow"));
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = TencentCredentials {
            secret_id: "AKIDexampleexample".into(),
            secret_key: "topsecretvalue".to_string().into(),
            session_token: Some("tokenvalue".to_string().into()),
        };
        let d = format!("{c:?}");
        assert!(
            !d.contains("topsecretvalue")
                && !d.contains("tokenvalue")
                && !d.contains("AKIDexampleexample"),
            "{d}"
        );
    }
}
