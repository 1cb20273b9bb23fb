//! The config file as written, and its validation into [`Config`].
//!
//! serde rejects unknown keys (`deny_unknown_fields`); [`validate`] then collects every remaining
//! problem, each with its key and the fix, instead of stopping at the first.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::{
    AdminConfig, AuditConfig, CatalogConfig, Config, DiscordConfig, GrantsConfig, Language,
    LimitsConfig, LogConfig, LogFormat, ParseError, Problem, TencentConfig, DEFAULT_ANCHOR_MINUTES,
    DEFAULT_GRANT_MINUTES, DEFAULT_LINKS_PER_GRANT, DEFAULT_REFUSALS_PER_USER_PER_MINUTE,
    MAX_ANCHOR_MINUTES, MAX_API_PER_SECOND, MAX_GRANT_MINUTES, MAX_LINKS_PER_GRANT,
    MAX_PER_INSTANCE_PER_MINUTE, MAX_REFUSALS_PER_USER_PER_MINUTE,
};
use super::{DEFAULT_CATALOG_REFRESH_SECS, MAX_CATALOG_REFRESH_SECS, MIN_CATALOG_REFRESH_SECS};
use crate::access::{check_instance_pattern, parse_tag, Rule, MAX_RULE_TAGS};
use crate::ids::{Product, Region, Snowflake};
use crate::tencent::MAX_TIMEOUT_SECS;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    discord: RawDiscord,
    tencent: RawTencent,
    #[serde(default)]
    allow: Vec<RawRule>,
    #[serde(default)]
    grants: RawGrants,
    #[serde(default)]
    catalog: RawCatalog,
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
    products: Option<Vec<String>>,
    lighthouse_regions: Option<Vec<String>>,
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
    #[serde(default)]
    tags: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCatalog {
    enabled: bool,
    refresh_secs: u64,
}

impl Default for RawCatalog {
    fn default() -> Self {
        Self {
            enabled: true,
            refresh_secs: DEFAULT_CATALOG_REFRESH_SECS,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGrants {
    minutes: u32,
    links_per_grant: u32,
}

impl Default for RawGrants {
    fn default() -> Self {
        Self {
            minutes: DEFAULT_GRANT_MINUTES,
            links_per_grant: DEFAULT_LINKS_PER_GRANT,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    per_user_per_minute: u32,
    refusals_per_user_per_minute: u32,
    per_instance_per_minute: u32,
    api_per_second: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            per_user_per_minute: 3,
            refusals_per_user_per_minute: DEFAULT_REFUSALS_PER_USER_PER_MINUTE,
            per_instance_per_minute: 10,
            api_per_second: MAX_API_PER_SECOND,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAudit {
    path: PathBuf,
    require_reason: bool,
    anchor_minutes: u32,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            path: PathBuf::from("vncbot-audit.jsonl"),
            require_reason: false,
            anchor_minutes: DEFAULT_ANCHOR_MINUTES,
        }
    }
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

/// Parses and validates config text.
pub(super) fn parse(text: &str) -> Result<Config, ParseError> {
    let raw: RawConfig =
        toml::from_str(text).map_err(|e| ParseError::Syntax(describe_toml_error(&e)))?;
    validate(raw).map_err(ParseError::Invalid)
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

    /// `v` if it is within `1..=max`; otherwise a problem, and `v` clamped into range (the
    /// clamped value is never used: any problem fails the whole config).
    fn in_range(&mut self, key: &str, v: u32, max: u32, why: &str) -> NonZeroU32 {
        if v == 0 || v > max {
            self.push(key, format!("{v} is out of range: use 1 to {max} ({why})"));
        }
        NonZeroU32::new(v.clamp(1, max)).expect("clamped to at least 1")
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
        .and_then(|s| parse_base_url(&mut p, "discord.api_base", s, "https://discord.com"));
    let gateway_url = raw
        .discord
        .gateway_url
        .as_deref()
        .and_then(|s| parse_gateway_url(&mut p, "discord.gateway_url", s));

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
    let endpoint = raw.tencent.endpoint.as_deref().and_then(|s| {
        parse_base_url(
            &mut p,
            "tencent.endpoint",
            s,
            "https://cvm.tencentcloudapi.com",
        )
    });
    let mut products = Vec::new();
    match &raw.tencent.products {
        None => products.push(Product::Cvm),
        Some(list) if list.is_empty() => p.push(
            "tencent.products",
            "is empty: list the products whose instances the bot opens, e.g. [\"cvm\", \"lighthouse\"] (default [\"cvm\"])",
        ),
        Some(list) => {
            for (i, name) in list.iter().enumerate() {
                match Product::parse(name) {
                    Some(product) if products.contains(&product) => p.push(
                        format!("tencent.products[{i}]"),
                        format!("{name:?} is listed twice: remove the duplicate"),
                    ),
                    Some(product) => products.push(product),
                    None => p.push(
                        format!("tencent.products[{i}]"),
                        format!("{name:?} is not a product vncbot serves: use \"cvm\" or \"lighthouse\""),
                    ),
                }
            }
        }
    }
    let lighthouse = products.contains(&Product::Lighthouse);
    let mut lighthouse_regions = Vec::new();
    match &raw.tencent.lighthouse_regions {
        Some(_) if !lighthouse => p.push(
            "tencent.lighthouse_regions",
            "is set, but tencent.products does not include \"lighthouse\": add it there or remove this key",
        ),
        Some(list) if list.is_empty() => p.push(
            "tencent.lighthouse_regions",
            "is empty: list the regions where Lighthouse instances run, or remove the key to use every region in tencent.regions",
        ),
        Some(list) => {
            for (i, r) in list.iter().enumerate() {
                let key = format!("tencent.lighthouse_regions[{i}]");
                match Region::parse(r) {
                    Ok(region) if lighthouse_regions.contains(&region) => {
                        p.push(key, format!("{region} is listed twice: remove the duplicate"))
                    }
                    Ok(region) if !regions.contains(&region) => p.push(
                        key,
                        format!("{region} is not in tencent.regions: add it there too, or remove it here"),
                    ),
                    Ok(region) if region.is_finance() => p.push(
                        key,
                        format!("{region} is a finance-cloud region: vncbot knows no Lighthouse endpoint for it (only lighthouse.tencentcloudapi.com); remove it"),
                    ),
                    Ok(region) => lighthouse_regions.push(region),
                    Err(e) => p.push(key, e.to_string()),
                }
            }
        }
        None if lighthouse => {
            lighthouse_regions = regions.iter().filter(|r| !r.is_finance()).cloned().collect();
            if lighthouse_regions.is_empty() && !regions.is_empty() {
                p.push(
                    "tencent.products",
                    "includes \"lighthouse\", but every region in tencent.regions is a finance-cloud one, where vncbot knows no Lighthouse endpoint: add an ordinary region",
                );
            }
        }
        None => {}
    }
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
            match check_instance_pattern(pattern) {
                Ok(Some(product)) if !products.contains(&product) => p.push(
                    format!("allow[{i}].instances[{j}]"),
                    format!(
                        "{pattern:?} names {} instances, but tencent.products does not include {:?}: add it there, or remove this entry",
                        product.title(),
                        product.as_str()
                    ),
                ),
                Ok(_) => {}
                Err(e) => p.push(format!("allow[{i}].instances[{j}]"), e.to_string()),
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
        if rule.tags.len() > MAX_RULE_TAGS {
            p.push(
                key("tags"),
                format!(
                    "lists {} tags: use at most {MAX_RULE_TAGS} (an instance must carry all of them)",
                    rule.tags.len()
                ),
            );
        }
        let mut rule_tags: Vec<(String, String)> = Vec::new();
        for (j, entry) in rule.tags.iter().enumerate() {
            match parse_tag(entry) {
                Ok(tag) if rule_tags.iter().any(|(k, _)| *k == tag.0) => p.push(
                    format!("allow[{i}].tags[{j}]"),
                    format!(
                        "the key {:?} is listed twice: an instance carries one value per key, so the rule could never match",
                        tag.0
                    ),
                ),
                Ok(tag) => rule_tags.push(tag),
                Err(e) => p.push(format!("allow[{i}].tags[{j}]"), e.to_string()),
            }
        }
        if !rule.tags.is_empty() && !raw.catalog.enabled {
            p.push(
                key("tags"),
                "needs the catalog, but catalog.enabled = false: a tag rule would never match; enable the catalog or remove the tags",
            );
        }
        rules.push(Rule {
            roles: rule.roles.clone(),
            instances: rule.instances.clone(),
            // `None` means every configured region.
            regions: if rule.regions.iter().any(|r| r == "*") {
                None
            } else {
                Some(rule_regions)
            },
            tags: rule_tags,
        });
    }

    // [grants]
    let grants = GrantsConfig {
        minutes: p
            .in_range(
                "grants.minutes",
                raw.grants.minutes,
                MAX_GRANT_MINUTES,
                "how long an Open console button keeps working, in minutes",
            )
            .get(),
        links_per_grant: p
            .in_range(
                "grants.links_per_grant",
                raw.grants.links_per_grant,
                MAX_LINKS_PER_GRANT,
                "fresh links one grant may mint; each costs one of Tencent's 30 reconnects a minute",
            )
            .get(),
    };

    // [catalog]
    if !(MIN_CATALOG_REFRESH_SECS..=MAX_CATALOG_REFRESH_SECS).contains(&raw.catalog.refresh_secs) {
        p.push(
            "catalog.refresh_secs",
            format!(
                "{} is out of range: use {MIN_CATALOG_REFRESH_SECS} to {MAX_CATALOG_REFRESH_SECS} seconds (default {DEFAULT_CATALOG_REFRESH_SECS})",
                raw.catalog.refresh_secs
            ),
        );
    }
    let catalog = CatalogConfig {
        enabled: raw.catalog.enabled,
        refresh: Duration::from_secs(raw.catalog.refresh_secs),
    };

    // [limits]
    let limits = LimitsConfig {
        per_user_per_minute: p.in_range(
            "limits.per_user_per_minute",
            raw.limits.per_user_per_minute,
            60,
            "requests a member may make per minute",
        ),
        refusals_per_user_per_minute: p.in_range(
            "limits.refusals_per_user_per_minute",
            raw.limits.refusals_per_user_per_minute,
            MAX_REFUSALS_PER_USER_PER_MINUTE,
            "refused requests a member may make per minute",
        ),
        per_instance_per_minute: p.in_range(
            "limits.per_instance_per_minute",
            raw.limits.per_instance_per_minute,
            MAX_PER_INSTANCE_PER_MINUTE,
            "Tencent allows at most 30 console reconnects a minute",
        ),
        api_per_second: p.in_range(
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
    let anchor_minutes = p
        .in_range(
            "audit.anchor_minutes",
            raw.audit.anchor_minutes,
            MAX_ANCHOR_MINUTES,
            "minutes between posts of the journal head to the audit channel",
        )
        .get();

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
            products,
            lighthouse_regions,
            endpoint,
            language: raw.tencent.language.unwrap_or(Language::EnUs),
            timeout: Duration::from_secs(timeout_secs),
        },
        allow: rules,
        grants,
        catalog,
        limits,
        audit: AuditConfig {
            path: raw.audit.path,
            require_reason: raw.audit.require_reason,
            anchor_minutes,
        },
        admin,
        log: LogConfig {
            format: raw.log.format,
        },
    })
}

/// 127.0.0.0/8, ::1 and `localhost`: the only hosts a plain-text scheme may reach. Anything else
/// would carry the signed request, the session token or the bot token over the network in clear.
fn is_loopback(u: &Url) -> bool {
    match u.host_str() {
        Some("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// `scheme://host[:port]` and nothing else: a path here would be silently dropped or mis-signed.
/// `https`, or `http` to a loopback address (tests, a local fake).
fn parse_base_url(p: &mut Collector, key: &str, s: &str, example: &str) -> Option<Url> {
    let hint = format!(
        "use a scheme, host and optional port only, like {example} or http://127.0.0.1:8080"
    );
    match Url::parse(s) {
        Ok(u) if u.scheme() == "http" && u.host_str().is_some() && !is_loopback(&u) => {
            p.push(
                key,
                format!(
                    "{s:?} uses http:// to a host that is not loopback: use https:// \
                     (http:// is accepted only for 127.0.0.1, ::1 or localhost)"
                ),
            );
            None
        }
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

/// `wss://`, or `ws://` to a loopback address.
fn parse_gateway_url(p: &mut Collector, key: &str, s: &str) -> Option<Url> {
    match Url::parse(s) {
        Ok(u) if u.scheme() == "ws" && u.host_str().is_some() && !is_loopback(&u) => {
            p.push(
                key,
                format!(
                    "{s:?} uses ws:// to a host that is not loopback: use wss:// \
                     (ws:// is accepted only for 127.0.0.1, ::1 or localhost)"
                ),
            );
            None
        }
        Ok(u) if matches!(u.scheme(), "ws" | "wss") && u.host_str().is_some() => Some(u),
        _ => {
            p.push(
                key,
                format!(
                    "{s:?} is not a ws:// or wss:// URL (for example wss://gateway.discord.gg)"
                ),
            );
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

    /// `GOOD` with `lines` added under `[section]` (created when GOOD has none).
    fn with(section: &str, lines: &str) -> String {
        let header = format!("[{section}]");
        if GOOD.contains(&header) {
            GOOD.replace(&header, &format!("{header}\n{lines}"))
        } else {
            format!("{GOOD}\n{header}\n{lines}\n")
        }
    }

    /// The problems reported for exactly `key`.
    fn problems_for(text: &str, key: &str) -> Vec<String> {
        problems(text)
            .into_iter()
            .filter(|p| p.key == key)
            .map(|p| p.message)
            .collect()
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
        assert_eq!(c.limits.refusals_per_user_per_minute.get(), 10);
        assert_eq!(
            c.grants,
            GrantsConfig {
                minutes: 10,
                links_per_grant: 10
            }
        );
        assert_eq!(c.grants.duration(), Duration::from_secs(600));
        assert_eq!(c.audit.anchor_minutes, 60);
        assert_eq!(c.audit.anchor_interval(), Duration::from_secs(3600));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let text = GOOD.replace("[tencent]", "[tencent]\nregoins = []");
        match Config::parse(&text) {
            Err(ParseError::Syntax(s)) => assert!(s.contains("regoins"), "{s}"),
            other => panic!("{other:?}"),
        }
        for (section, key) in [
            ("grants", "minuts = 5"),
            ("limits", "refusals_per_minute = 5"),
            ("audit", "anchor = 5"),
        ] {
            match Config::parse(&with(section, key)) {
                Err(ParseError::Syntax(s)) => {
                    let name = key.split(' ').next().unwrap();
                    assert!(s.contains(name), "{s}")
                }
                other => panic!("{section}: {other:?}"),
            }
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
    fn parse_error_display_lists_each_problem() {
        let err = Config::parse(&with("grants", "minutes = 0\nlinks_per_grant = 0")).unwrap_err();
        let text = err.to_string();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("grants.minutes: 0 is out of range"), "{text}");
        assert!(text.contains("grants.links_per_grant: 0"), "{text}");
    }

    /// Each new numeric key: its bounds accepted, one past them refused with the key and range.
    #[test]
    fn new_numeric_keys_are_bounded() {
        for (section, name, max) in [
            ("grants", "minutes", 60),
            ("grants", "links_per_grant", 30),
            ("limits", "refusals_per_user_per_minute", 600),
            ("audit", "anchor_minutes", 1440),
        ] {
            let key = format!("{section}.{name}");
            for ok in [1, max] {
                let c = Config::parse(&with(section, &format!("{name} = {ok}")))
                    .unwrap_or_else(|e| panic!("{key} = {ok}: {e}"));
                let got = match name {
                    "minutes" => c.grants.minutes,
                    "links_per_grant" => c.grants.links_per_grant,
                    "refusals_per_user_per_minute" => c.limits.refusals_per_user_per_minute.get(),
                    _ => c.audit.anchor_minutes,
                };
                assert_eq!(got, ok, "{key}");
            }
            for bad in [0, max + 1] {
                let msgs = problems_for(&with(section, &format!("{name} = {bad}")), &key);
                assert_eq!(msgs.len(), 1, "{key} = {bad}: {msgs:?}");
                assert!(msgs[0].contains(&format!("use 1 to {max}")), "{msgs:?}");
            }
        }
    }

    #[test]
    fn plain_http_only_to_loopback() {
        for (section, name, ok) in [
            ("discord", "api_base", "http://127.0.0.1:8080"),
            ("discord", "api_base", "http://127.9.9.9"),
            ("discord", "api_base", "http://[::1]:8080"),
            ("discord", "api_base", "http://localhost:8080"),
            ("discord", "api_base", "https://proxy.example"),
            ("tencent", "endpoint", "http://127.0.0.1:8080"),
            ("tencent", "endpoint", "http://LOCALHOST"),
            ("tencent", "endpoint", "https://cvm.internal.example:8443"),
            ("discord", "gateway_url", "ws://127.0.0.1:9000"),
            ("discord", "gateway_url", "ws://[::1]:9000/gw"),
            ("discord", "gateway_url", "wss://gateway.discord.gg"),
        ] {
            let text = with(section, &format!("{name} = {ok:?}"));
            assert!(Config::parse(&text).is_ok(), "{section}.{name} = {ok}");
        }
        for (section, name, bad, fix) in [
            (
                "discord",
                "api_base",
                "http://discord.example",
                "use https://",
            ),
            (
                "discord",
                "api_base",
                "http://10.0.0.1:8080",
                "use https://",
            ),
            ("discord", "api_base", "http://[::2]", "use https://"),
            (
                "discord",
                "api_base",
                "http://localhost.evil.example",
                "use https://",
            ),
            (
                "tencent",
                "endpoint",
                "http://cvm.tencentcloudapi.com",
                "use https://",
            ),
            ("tencent", "endpoint", "http://192.168.1.10", "use https://"),
            (
                "discord",
                "gateway_url",
                "ws://gateway.discord.gg",
                "use wss://",
            ),
            ("discord", "gateway_url", "ws://10.1.1.1:9000", "use wss://"),
        ] {
            let key = format!("{section}.{name}");
            let msgs = problems_for(&with(section, &format!("{name} = {bad:?}")), &key);
            assert_eq!(msgs.len(), 1, "{key} = {bad}: {msgs:?}");
            assert!(
                msgs[0].contains(fix) && msgs[0].contains("loopback"),
                "{key} = {bad}: {msgs:?}"
            );
        }
    }

    #[test]
    fn the_shipped_example_parses_and_lists_the_new_keys() {
        let text = include_str!("../../config/vncbot.example.toml");
        let c = Config::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.grants, GrantsConfig::default());
        assert_eq!(c.limits.refusals_per_user_per_minute.get(), 10);
        assert_eq!(c.audit.anchor_minutes, 60);
        for key in [
            "[grants]",
            "minutes =",
            "links_per_grant =",
            "refusals_per_user_per_minute =",
            "anchor_minutes =",
            "[catalog]",
            "refresh_secs =",
            "# tags = [",
            "# products = [\"cvm\", \"lighthouse\"]",
            "# lighthouse_regions = [",
            "\"lhins-*\"",
        ] {
            assert!(text.contains(key), "the example lacks {key}");
        }
    }

    #[test]
    fn products_default_to_cvm_and_lighthouse_is_opt_in() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.tencent.products, vec![Product::Cvm]);
        assert!(c.tencent.lighthouse_regions.is_empty());
        let gz = Region::parse("ap-guangzhou").unwrap();
        let fsi = Region::parse("ap-shanghai-fsi").unwrap();
        let lh = crate::ids::InstanceId::parse("lhins-a1b2c3d4").unwrap();
        let cvm = crate::ids::InstanceId::parse("ins-a1b2c3d4").unwrap();
        assert!(c.tencent.check_serves(&cvm, &gz).is_ok());
        let err = c.tencent.check_serves(&lh, &gz).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not serve Lighthouse instances (tencent.products)"),
            "{err}"
        );

        let both = with("tencent", "products = [\"cvm\", \"lighthouse\"]");
        let c = Config::parse(&both).unwrap();
        assert_eq!(c.tencent.products, vec![Product::Cvm, Product::Lighthouse]);
        // Default: every configured region but the finance-cloud ones.
        assert_eq!(c.tencent.lighthouse_regions, vec![gz.clone()]);
        assert!(c.tencent.check_serves(&lh, &gz).is_ok());
        assert!(c.tencent.check_serves(&cvm, &fsi).is_ok());
        let err = c.tencent.check_serves(&lh, &fsi).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not serve Lighthouse instances in ap-shanghai-fsi; it serves them in: ap-guangzhou"),
            "{err}"
        );
        assert!(
            err.to_string().contains("tencent.lighthouse_regions"),
            "{err}"
        );

        let lh_only = with(
            "tencent",
            "products = [\"lighthouse\"]\nlighthouse_regions = [\"ap-guangzhou\"]",
        );
        let c = Config::parse(&lh_only).unwrap();
        assert!(c.tencent.check_serves(&cvm, &gz).is_err());
        assert_eq!(c.tencent.regions_for(Product::Cvm), vec![]);
        assert_eq!(c.tencent.regions_for(Product::Lighthouse), vec![gz]);
    }

    #[test]
    fn product_mistakes_are_reported_with_their_key() {
        for (lines, key, fix) in [
            ("products = []", "tencent.products", "is empty"),
            (
                "products = [\"cvm\", \"lightouse\"]",
                "tencent.products[1]",
                "use \"cvm\" or \"lighthouse\"",
            ),
            (
                "products = [\"cvm\", \"cvm\"]",
                "tencent.products[1]",
                "listed twice",
            ),
            (
                "lighthouse_regions = [\"ap-guangzhou\"]",
                "tencent.lighthouse_regions",
                "does not include \"lighthouse\"",
            ),
            (
                "products = [\"lighthouse\"]\nlighthouse_regions = [\"ap-tokyo\"]",
                "tencent.lighthouse_regions[0]",
                "not in tencent.regions",
            ),
            (
                "products = [\"lighthouse\"]\nlighthouse_regions = [\"ap-shanghai-fsi\"]",
                "tencent.lighthouse_regions[0]",
                "finance-cloud",
            ),
            (
                "products = [\"lighthouse\"]\nlighthouse_regions = [\"ap-guangzho\"]",
                "tencent.lighthouse_regions[0]",
                "not a Tencent Cloud region",
            ),
        ] {
            let msgs = problems_for(&with("tencent", lines), key);
            assert_eq!(msgs.len(), 1, "{lines}: {msgs:?}");
            assert!(msgs[0].contains(fix), "{lines}: {msgs:?}");
        }
        // A Lighthouse pattern in a CVM-only config can never be used: say so at start.
        let text = GOOD.replace("instances = [\"*\"]", "instances = [\"*\", \"lhins-web*\"]");
        let msgs = problems_for(&text, "allow[0].instances[1]");
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(
            msgs[0].contains(
                "names Lighthouse instances, but tencent.products does not include \"lighthouse\""
            ),
            "{msgs:?}"
        );
        let ok = text.replace(
            "[tencent]",
            "[tencent]\nproducts = [\"cvm\", \"lighthouse\"]",
        );
        assert!(Config::parse(&ok).is_ok());
    }

    #[test]
    fn catalog_defaults_bounds_and_switch() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(
            c.catalog,
            CatalogConfig {
                enabled: true,
                refresh: Duration::from_secs(60)
            }
        );
        let c = Config::parse(&with("catalog", "enabled = false\nrefresh_secs = 3600")).unwrap();
        assert!(!c.catalog.enabled);
        assert_eq!(c.catalog.refresh, Duration::from_secs(3600));
        assert!(Config::parse(&with("catalog", "refresh_secs = 10")).is_ok());
        for bad in [9, 3601, 0] {
            let msgs = problems_for(
                &with("catalog", &format!("refresh_secs = {bad}")),
                "catalog.refresh_secs",
            );
            assert_eq!(msgs.len(), 1, "{bad}: {msgs:?}");
            assert!(msgs[0].contains("use 10 to 3600"), "{msgs:?}");
        }
        match Config::parse(&with("catalog", "refresh = 5")) {
            Err(ParseError::Syntax(s)) => assert!(s.contains("refresh"), "{s}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tag_rules_are_parsed_and_checked() {
        let text = GOOD.replace(
            "regions = [\"*\"]\n",
            "regions = [\"*\"]\ntags = [\"env=staging\", \"team=web\"]\n",
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(
            c.allow[0].tags,
            vec![
                ("env".to_string(), "staging".to_string()),
                ("team".to_string(), "web".to_string())
            ]
        );
        assert!(Config::parse(GOOD).unwrap().allow[0].tags.is_empty());
        let bad = GOOD.replace(
            "regions = [\"*\"]\n",
            "regions = [\"*\"]\ntags = [\"env\", \"=x\", \"a=1\", \"a=2\"]\n",
        );
        let keys: Vec<String> = problems(&bad).into_iter().map(|p| p.key).collect();
        for key in ["allow[0].tags[0]", "allow[0].tags[1]", "allow[0].tags[3]"] {
            assert!(keys.iter().any(|k| k == key), "missing {key} in {keys:?}");
        }
        assert!(!keys.iter().any(|k| k == "allow[0].tags[2]"), "{keys:?}");
        let many: Vec<String> = (0..11).map(|i| format!("\"k{i}=v\"")).collect();
        let too_many = GOOD.replace(
            "regions = [\"*\"]\n",
            &format!("regions = [\"*\"]\ntags = [{}]\n", many.join(", ")),
        );
        assert_eq!(problems_for(&too_many, "allow[0].tags").len(), 1);
        let off = format!("{text}\n[catalog]\nenabled = false\n");
        let msgs = problems_for(&off, "allow[0].tags");
        assert!(msgs[0].contains("catalog.enabled = false"), "{msgs:?}");
    }
}
