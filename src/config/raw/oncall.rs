//! `[oncall]` and `[oncall.users]`: where the on-call rota comes from (PagerDuty), how often it
//! is read, how long it may be served while PagerDuty fails, and who is who.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::Collector;
use crate::ids::Snowflake;
use crate::oncall::{
    is_pagerduty_id, OnCallConfig, Provider, DEFAULT_API_BASE, DEFAULT_MAX_ESCALATION_LEVEL,
    DEFAULT_REFRESH_SECS, DEFAULT_STALE_GRACE_SECS, MAX_ESCALATION_LEVEL, MAX_REFRESH_SECS,
    MAX_STALE_GRACE_SECS, MIN_REFRESH_SECS,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOnCall {
    provider: Option<Provider>,
    api_base: Option<String>,
    #[serde(default)]
    escalation_policy_ids: Vec<String>,
    #[serde(default = "max_escalation_level")]
    max_escalation_level: u32,
    #[serde(default = "refresh_secs")]
    refresh_secs: u64,
    #[serde(default = "stale_grace_secs")]
    stale_grace_secs: u64,
    /// Discord user ID (a string key: TOML keys are strings) → PagerDuty user ID.
    #[serde(default)]
    users: BTreeMap<String, String>,
}

fn max_escalation_level() -> u32 {
    DEFAULT_MAX_ESCALATION_LEVEL
}
fn refresh_secs() -> u64 {
    DEFAULT_REFRESH_SECS
}
fn stale_grace_secs() -> u64 {
    DEFAULT_STALE_GRACE_SECS
}

const ID_FIX: &str = "PagerDuty IDs are letters and digits, like \"PABC123\": copy it from the object's URL in PagerDuty";

impl RawOnCall {
    pub(super) fn validate(self, p: &mut Collector) -> Option<OnCallConfig> {
        if self.provider.is_none() {
            p.push(
                "oncall.provider",
                "is missing: set provider = \"pagerduty\" (the only one supported)",
            );
        }
        let api_base = match &self.api_base {
            Some(s) => super::urls::parse_base_url(p, "oncall.api_base", s, DEFAULT_API_BASE),
            None => Some(DEFAULT_API_BASE.parse().expect("the default is a URL")),
        };
        if self.escalation_policy_ids.is_empty() {
            p.push(
                "oncall.escalation_policy_ids",
                "is empty: list the escalation policy IDs whose on-call members count (e.g. [\"PABC123\"])",
            );
        }
        for (i, id) in self.escalation_policy_ids.iter().enumerate() {
            if !is_pagerduty_id(id) {
                p.push(
                    format!("oncall.escalation_policy_ids[{i}]"),
                    format!(
                        "{:?} is not a PagerDuty ID: {ID_FIX}",
                        crate::text::visible(id)
                    ),
                );
            }
        }
        p.duplicates("oncall.escalation_policy_ids", &self.escalation_policy_ids);
        let max_escalation_level = p
            .in_range(
                "oncall.max_escalation_level",
                self.max_escalation_level,
                MAX_ESCALATION_LEVEL,
                "the deepest escalation level that counts as on call; 1 is the first responder",
            )
            .get();
        if !(MIN_REFRESH_SECS..=MAX_REFRESH_SECS).contains(&self.refresh_secs) {
            p.push(
                "oncall.refresh_secs",
                format!(
                    "{} is out of range: use {MIN_REFRESH_SECS} to {MAX_REFRESH_SECS} (how often PagerDuty is asked who is on call)",
                    self.refresh_secs
                ),
            );
        }
        if self.stale_grace_secs > MAX_STALE_GRACE_SECS {
            p.push(
                "oncall.stale_grace_secs",
                format!(
                    "{} is out of range: use 0 to {MAX_STALE_GRACE_SECS} (how long the last answer is served while PagerDuty fails)",
                    self.stale_grace_secs
                ),
            );
        }
        let mut users = Vec::new();
        for (discord, pd) in &self.users {
            let key = format!("oncall.users.{discord:?}");
            let id = match discord.trim().parse::<u64>().ok().and_then(Snowflake::new) {
                Some(id) => Some(id),
                None => {
                    p.push(
                        key.clone(),
                        "is not a Discord user ID: the key is the member's ID (Developer Mode, then right-click the member > Copy User ID), in quotes",
                    );
                    None
                }
            };
            if !is_pagerduty_id(pd) {
                p.push(
                    key.clone(),
                    format!(
                        "{:?} is not a PagerDuty user ID: {ID_FIX}",
                        crate::text::visible(pd)
                    ),
                );
            } else if let Some((other, _)) =
                users.iter().find(|(_, p2): &&(Snowflake, String)| p2 == pd)
            {
                p.push(
                    key.clone(),
                    format!("{pd} is already the PagerDuty user of {other}: one PagerDuty user maps to one Discord member"),
                );
            }
            if let Some(id) = id {
                users.push((id, pd.clone()));
            }
        }
        Some(OnCallConfig {
            provider: self.provider?,
            api_base: api_base?,
            escalation_policy_ids: self.escalation_policy_ids,
            max_escalation_level,
            refresh: Duration::from_secs(self.refresh_secs),
            stale_grace: Duration::from_secs(self.stale_grace_secs),
            users,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{Config, ParseError};

    const GOOD: &str = r#"
[discord]
guild_ids = [800000000000000001]

[tencent]
regions = ["ap-guangzhou"]

[[allow]]
roles = [555000000000000001]
instances = ["*"]
regions = ["*"]
"#;

    const ONCALL: &str = r#"
[oncall]
provider = "pagerduty"
escalation_policy_ids = ["PABC123"]
[oncall.users]
"700000000000000001" = "PUSER01"
"#;

    fn problems(text: &str) -> Vec<(String, String)> {
        match Config::parse(text) {
            Err(ParseError::Invalid(p)) => p.into_iter().map(|p| (p.key, p.message)).collect(),
            Err(ParseError::Syntax(s)) => panic!("unexpected syntax error: {s}"),
            Ok(_) => panic!("config unexpectedly valid"),
        }
    }

    fn has(text: &str, key: &str, says: &str) {
        let p = problems(text);
        assert!(
            p.iter().any(|(k, m)| k == key && m.contains(says)),
            "{key}: {says:?} not in {p:?}"
        );
    }

    #[test]
    fn defaults_and_every_key() {
        let c = Config::parse(&format!("{GOOD}{ONCALL}")).unwrap();
        let o = c.oncall.unwrap();
        assert_eq!(o.api_base.as_str(), "https://api.pagerduty.com/");
        assert_eq!(o.max_escalation_level, 1);
        assert_eq!(o.refresh, Duration::from_secs(60));
        assert_eq!(o.stale_grace, Duration::from_secs(300));
        assert_eq!(o.pagerduty_user(700000000000000001), Some("PUSER01"));
        assert!(Config::parse(GOOD).unwrap().oncall.is_none());
        let text = ONCALL.replace(
            "provider = \"pagerduty\"",
            "provider = \"pagerduty\"\napi_base = \"http://127.0.0.1:9\"\nmax_escalation_level = 2\nrefresh_secs = 5\nstale_grace_secs = 0",
        );
        let o = Config::parse(&format!("{GOOD}{text}"))
            .unwrap()
            .oncall
            .unwrap();
        assert_eq!(o.api_base.as_str(), "http://127.0.0.1:9/");
        assert_eq!(
            (
                o.max_escalation_level,
                o.refresh.as_secs(),
                o.stale_grace.as_secs()
            ),
            (2, 5, 0)
        );
    }

    #[test]
    fn mistakes_name_the_key_and_the_fix() {
        let with = |from: &str, to: &str| format!("{GOOD}{}", ONCALL.replace(from, to));
        has(
            &with("provider = \"pagerduty\"\n", ""),
            "oncall.provider",
            "provider = \"pagerduty\"",
        );
        has(
            &with(
                "provider = \"pagerduty\"",
                "provider = \"pagerduty\"\napi_base = \"http://pd.example\"",
            ),
            "oncall.api_base",
            "loopback",
        );
        has(
            &with("[\"PABC123\"]", "[]"),
            "oncall.escalation_policy_ids",
            "is empty",
        );
        has(
            &with("[\"PABC123\"]", "[\"PABC123\", \"PABC123\", \"bad id\"]"),
            "oncall.escalation_policy_ids[1]",
            "listed twice",
        );
        has(
            &with("[\"PABC123\"]", "[\"bad id\"]"),
            "oncall.escalation_policy_ids[0]",
            "not a PagerDuty ID",
        );
        has(
            &with(
                "provider = \"pagerduty\"",
                "provider = \"pagerduty\"\nrefresh_secs = 4",
            ),
            "oncall.refresh_secs",
            "use 5 to 3600",
        );
        has(
            &with(
                "provider = \"pagerduty\"",
                "provider = \"pagerduty\"\nmax_escalation_level = 0",
            ),
            "oncall.max_escalation_level",
            "use 1 to 20",
        );
        has(
            &with(
                "provider = \"pagerduty\"",
                "provider = \"pagerduty\"\nstale_grace_secs = 86401",
            ),
            "oncall.stale_grace_secs",
            "use 0 to 86400",
        );
        has(
            &with(
                "\"700000000000000001\" = \"PUSER01\"",
                "\"alice\" = \"PUSER01\"",
            ),
            "oncall.users.\"alice\"",
            "Copy User ID",
        );
        has(
            &with(
                "\"700000000000000001\" = \"PUSER01\"",
                "\"700000000000000001\" = \"PUSER01\"\n\"700000000000000002\" = \"PUSER01\"",
            ),
            "oncall.users.\"700000000000000002\"",
            "already the PagerDuty user of 700000000000000001",
        );
        // Unknown keys and providers are named, with the closest known key.
        match Config::parse(&with(
            "provider = \"pagerduty\"",
            "provider = \"pagerduty\"\nrefresh_sec = 5",
        )) {
            Err(ParseError::Syntax(s)) => {
                assert!(s.contains("did you mean `refresh_secs`?"), "{s}")
            }
            other => panic!("{other:?}"),
        }
        match Config::parse(&with("\"pagerduty\"", "\"opsgenie\"")) {
            Err(ParseError::Syntax(s)) => assert!(s.contains("pagerduty"), "{s}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn on_call_rules_need_the_section_and_skipping_needs_approval() {
        let rule = |extra: &str| format!("{GOOD}{extra}\n");
        has(
            &rule("on_call = true"),
            "allow[0].on_call",
            "needs an [oncall] section",
        );
        let c = Config::parse(&format!("{}{ONCALL}", rule("on_call = true"))).unwrap();
        assert!(c.allow[0].gate.on_call);
        has(
            &format!("{}{ONCALL}", rule("on_call_skips_approval = true")),
            "allow[0].on_call_skips_approval",
            "only applies with approval = \"required\"",
        );
        let text = format!(
            "{}{ONCALL}\n[approvals]\nchannel_id = 810000000000000003\n",
            rule("approval = \"required\"\napprover_roles = [555000000000000009]\non_call_skips_approval = true")
        );
        let c = Config::parse(&text).unwrap();
        assert!(c.allow[0].gate.on_call_skips_approval && !c.allow[0].gate.on_call);
        has(
            &text.replace(ONCALL, ""),
            "allow[0].on_call_skips_approval",
            "needs an [oncall] section",
        );
    }

    #[test]
    fn the_example_shows_every_on_call_key_and_parses_uncommented() {
        let text = include_str!("../../../config/vncbot.example.toml");
        for key in [
            "# on_call = true",
            "# on_call_skips_approval = true",
            "# [oncall]",
            "# provider = \"pagerduty\"",
            "# api_base =",
            "# escalation_policy_ids =",
            "# max_escalation_level =",
            "# refresh_secs = 60",
            "# stale_grace_secs =",
            "# [oncall.users]",
            "PAGERDUTY_TOKEN",
        ] {
            assert!(text.contains(key), "the example lacks {key}");
        }
        // The block, uncommented, is a valid section.
        let block: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [oncall]"))
            .take_while(|l| l.starts_with('#') || l.starts_with(' '))
            .filter_map(|l| l.strip_prefix("# "))
            .map(|l| format!("{l}\n"))
            .collect();
        let o = Config::parse(&format!("{GOOD}{block}"))
            .unwrap()
            .oncall
            .unwrap();
        assert_eq!(o.escalation_policy_ids, ["PABC123"]);
        assert_eq!(o.users.len(), 1);
    }
}
