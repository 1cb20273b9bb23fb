//! The config file as written, and its validation into [`Config`], section by section.
//!
//! serde rejects unknown keys (`deny_unknown_fields`); each section's `validate` then collects
//! every remaining problem into one [`Collector`], each with its key and the fix, instead of
//! stopping at the first. A section's defaults are its raw struct's `Default`.

mod allow;
mod approvals;
mod discord;
mod sections;
mod ship;
mod tencent;
mod urls;

use std::fmt;
use std::num::NonZeroU32;

use serde::Deserialize;

use self::allow::RawRule;
use self::approvals::RawApprovals;
use self::discord::RawDiscord;
use self::sections::{RawAdmin, RawAudit, RawCatalog, RawGrants, RawLimits, RawLog};
use self::tencent::RawTencent;
use super::{Config, ParseError, Problem};

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
    approvals: Option<RawApprovals>,
}

/// Parses and validates config text.
pub(super) fn parse(text: &str) -> Result<Config, ParseError> {
    let raw: RawConfig =
        toml::from_str(text).map_err(|e| ParseError::Syntax(describe_toml_error(text, &e)))?;
    let config = raw.validate().map_err(ParseError::Invalid)?;
    // It parsed as a RawConfig, so it parses as a table.
    let table: toml::Table =
        toml::from_str(text).map_err(|e| ParseError::Syntax(describe_toml_error(text, &e)))?;
    Ok(Config {
        source: super::Source::new(&table),
        ..config
    })
}

/// `line L, column C: what`, then the line itself with a caret under the spot, as compilers
/// show it; an unknown key gets the closest known one.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let mut msg = e.message().trim().to_owned();
    if let Some(unknown) = unknown_key(&msg) {
        msg.push_str(&crate::suggest::did_you_mean(unknown.0, unknown.1));
        msg.push_str(
            " (remove the key or fix its spelling; config/vncbot.example.toml lists every key)",
        );
    }
    let Some(span) = e.span() else {
        return msg;
    };
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line_no = text[..start].matches('\n').count() + 1;
    let source = text[line_start..line_end].trim_end_matches('\r');
    let column = text[line_start..start].chars().count() + 1;
    // Where the caret goes on the line as shown (a tab or control character shows escaped).
    let indent = crate::text::visible(&text[line_start..start])
        .chars()
        .count();
    let width = text[start..span.end.clamp(start, line_end)]
        .chars()
        .count()
        .max(1);
    let gutter = " ".repeat(line_no.to_string().len());
    format!(
        "line {line_no}, column {column}: {msg}\n{gutter} |\n{line_no} | {}\n{gutter} | {}{}",
        crate::text::visible(source),
        " ".repeat(indent),
        "^".repeat(width)
    )
}

/// serde's "unknown field `x`, expected one of `a`, `b`": the key and the known ones.
fn unknown_key(message: &str) -> Option<(&str, Vec<&str>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, expected) = rest.split_once('`')?;
    let known = expected.split('`').skip(1).step_by(2).collect::<Vec<_>>();
    Some((key, known))
}

/// Every problem found, in file order.
pub(super) struct Collector(Vec<Problem>);

impl Collector {
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// `v` if it is within `1..=max`; otherwise a problem, and `v` clamped into range (the
    /// clamped value is never used: any problem fails the whole config).
    pub(super) fn in_range(&mut self, key: &str, v: u32, max: u32, why: &str) -> NonZeroU32 {
        if v == 0 || v > max {
            self.push(key, format!("{v} is out of range: use 1 to {max} ({why})"));
        }
        NonZeroU32::new(v.clamp(1, max)).expect("clamped to at least 1")
    }

    /// A problem for each item that repeats an earlier one.
    pub(super) fn duplicates<T: PartialEq + fmt::Display>(&mut self, key: &str, items: &[T]) {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                self.push(
                    format!("{key}[{i}]"),
                    format!("{item} is listed twice: remove the duplicate"),
                );
            }
        }
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, Vec<Problem>> {
        let mut p = Collector(Vec::new());
        let discord = self.discord.validate(&mut p);
        let tencent = self.tencent.validate(&mut p);
        let catalog_enabled = self.catalog.enabled;
        let approvals = self.approvals.and_then(|a| a.validate(&mut p));
        let allow = allow::validate(
            &mut p,
            self.allow,
            &allow::Context {
                regions: &tencent.regions,
                products: &tencent.products,
                catalog_enabled,
                approvals_channel: approvals.is_some(),
            },
        );
        let grants = self.grants.validate(&mut p);
        let catalog = self.catalog.validate(&mut p);
        let limits = self.limits.validate(&mut p);
        let audit = self.audit.validate(&mut p);
        let admin = self.admin.and_then(|a| a.validate(&mut p));
        let log = self.log.validate();
        approvals::check_break_glass_answerers(&mut p, &allow, approvals.as_ref());
        if !p.0.is_empty() {
            return Err(p.0);
        }
        Ok(Config {
            source: super::Source::default(),
            discord,
            tencent,
            allow,
            grants,
            catalog,
            limits,
            audit,
            admin,
            log,
            approvals,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{CatalogConfig, GrantsConfig, Language};
    use crate::ids::{Product, Region};

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
    fn a_syntax_error_shows_its_line_and_column_with_a_caret_under_the_spot() {
        let text = "[discord]\nguild_ids = [1]\n\n[limits]\nper_user_per_minute = \"three\"\n";
        let Err(ParseError::Syntax(s)) = Config::parse(text) else {
            panic!("a type error")
        };
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[0].starts_with("line 5, column 23: "), "{s}");
        assert_eq!(lines[1], "  |", "{s}");
        assert_eq!(lines[2], "5 | per_user_per_minute = \"three\"", "{s}");
        assert_eq!(lines[3], "  |                       ^^^^^^^", "{s}");
        let Err(ParseError::Syntax(s)) = Config::parse("[discord\nguild_ids = [1]\n") else {
            panic!("a syntax error")
        };
        assert!(s.starts_with("line 1, column 9: "), "{s}");
        assert!(s.contains("\n1 | [discord\n"), "{s}");
    }

    #[test]
    fn a_role_given_by_name_says_how_to_copy_its_id() {
        let text = GOOD.replace("roles = [555000000000000001]", "roles = [\"oncall\"]");
        let Err(ParseError::Syntax(s)) = Config::parse(&text) else {
            panic!("a role name is refused")
        };
        assert!(s.contains("`oncall` is a name, not a Discord ID"), "{s}");
        assert!(s.contains("Developer Mode"), "{s}");
        assert!(s.contains("Copy ID"), "{s}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let text = GOOD.replace("[tencent]", "[tencent]\nregoins = []");
        match Config::parse(&text) {
            Err(ParseError::Syntax(s)) => {
                assert!(s.contains("regoins"), "{s}");
                assert!(s.contains("did you mean `regions`?"), "{s}");
            }
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
        let text = include_str!("../../../config/vncbot.example.toml");
        let c = Config::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.grants, GrantsConfig::default());
        assert_eq!(c.limits.refusals_per_user_per_minute.get(), 10);
        assert_eq!(c.audit.anchor_minutes, 60);
        assert!(
            c.audit.require_reason,
            "the example asks every request for a reason"
        );
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
            "# approval = \"required\"",
            "# approver_roles =",
            "# approvals_required =",
            "# request_ttl_minutes =",
            "# break_glass_roles =",
            "# warning =",
            "# [approvals]",
            "# channel_id =",
            "# break_glass_minutes =",
            "# break_glass_per_day =",
            "# ack_hours =",
            "# admin_roles =",
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

    /// A rule that needs approval, with `[approvals]`; `extra` is added to the rule.
    fn approval_rule(extra: &str, approvals: &str) -> String {
        format!(
            "{GOOD}approval = \"required\"\napprover_roles = [555000000000000009]\n{extra}\n[approvals]\n{approvals}\n"
        )
    }

    #[test]
    fn approval_keys_get_defaults_written_once() {
        let c = Config::parse(&approval_rule("", "channel_id = 810000000000000003")).unwrap();
        let g = &c.allow[0].gate;
        assert!(g.needs_approval());
        assert_eq!(
            g.approvals_required,
            crate::access::DEFAULT_APPROVALS_REQUIRED
        );
        assert_eq!(
            g.request_ttl,
            Duration::from_secs(u64::from(crate::access::DEFAULT_REQUEST_TTL_MINUTES) * 60)
        );
        let a = c.approvals.unwrap();
        assert_eq!(a.channel_id.get(), 810000000000000003);
        assert_eq!(
            (a.break_glass_minutes, a.break_glass_per_day, a.ack_hours),
            (30, 2, 24)
        );
        assert!(a.admin_roles.is_empty());
        // Without the keys, a rule is self-service as before.
        let plain = Config::parse(GOOD).unwrap();
        assert!(!plain.allow[0].gate.needs_approval());
        assert!(plain.approvals.is_none());
    }

    #[test]
    fn every_approval_key_is_read() {
        let c = Config::parse(&approval_rule(
            "approvals_required = 2\nrequest_ttl_minutes = 10\nbreak_glass_roles = [555000000000000008]\nwarning = \"production database\"",
            "channel_id = 810000000000000003\nbreak_glass_minutes = 15\nbreak_glass_per_day = 1\nack_hours = 4\nadmin_roles = [555000000000000007]",
        ))
        .unwrap();
        let g = &c.allow[0].gate;
        assert_eq!(g.approvals_required, 2);
        assert_eq!(g.request_ttl, Duration::from_secs(600));
        assert_eq!(g.break_glass_roles[0].get(), 555000000000000008);
        assert_eq!(g.warning.as_deref(), Some("production database"));
        let a = c.approvals.unwrap();
        assert_eq!(
            (a.break_glass_minutes, a.break_glass_per_day, a.ack_hours),
            (15, 1, 4)
        );
        assert_eq!(a.admin_roles[0].get(), 555000000000000007);
    }

    #[test]
    fn approval_keys_are_checked_with_the_fix() {
        let text = approval_rule(
            "approvals_required = 0\nrequest_ttl_minutes = 5000\nwarning = \"\"",
            "channel_id = 810000000000000003\nbreak_glass_minutes = 61\nbreak_glass_per_day = 0\nack_hours = 0\nadmin_roles = [1, 1]",
        );
        for key in [
            "allow[0].approvals_required",
            "allow[0].request_ttl_minutes",
            "allow[0].warning",
            "approvals.break_glass_minutes",
            "approvals.break_glass_per_day",
            "approvals.ack_hours",
            "approvals.admin_roles[1]",
        ] {
            assert_eq!(
                problems_for(&text, key).len(),
                1,
                "{key}: {:?}",
                problems(&text)
            );
        }
        assert!(problems_for(&text, "approvals.break_glass_minutes")[0].contains("1 to 60"));
        // Required without approvers, and without a channel to post in.
        let text = format!("{GOOD}approval = \"required\"\n");
        assert!(problems_for(&text, "allow[0].approver_roles")[0].contains("may approve"));
        assert!(problems_for(&text, "allow[0].approval")[0].contains("[approvals]"));
        // Break-glass needs the channel too; approver keys need approval = "required".
        let text = format!("{GOOD}break_glass_roles = [5]\napprovals_required = 2\n");
        assert!(problems_for(&text, "allow[0].break_glass_roles")[0].contains("channel_id"));
        assert!(problems_for(&text, "allow[0].approvals_required")[0].contains("required"));
        // The section without its channel.
        let text = approval_rule("", "ack_hours = 2");
        assert!(problems_for(&text, "approvals.channel_id")[0].contains("is missing"));
        // An unknown mode names the choices.
        match Config::parse(&format!("{GOOD}approval = \"maybe\"\n")) {
            Err(ParseError::Syntax(s)) => assert!(s.contains("required"), "{s}"),
            other => panic!("{other:?}"),
        }
    }
}
