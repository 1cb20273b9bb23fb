//! `[[allow]]`: who may open which instances, in which regions, with which tags.

use std::time::Duration;

use serde::Deserialize;

use super::Collector;
use crate::access::{
    check_instance_pattern, parse_tag, ApprovalMode, Gate, Rule, MAX_APPROVALS_REQUIRED,
    MAX_REQUEST_TTL_MINUTES, MAX_RULE_TAGS, MAX_WARNING_CHARS,
};
use crate::ids::{Product, Region, Snowflake};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    roles: Vec<Snowflake>,
    instances: Vec<String>,
    regions: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    approval: ApprovalMode,
    approver_roles: Option<Vec<Snowflake>>,
    approvals_required: Option<u32>,
    request_ttl_minutes: Option<u32>,
    #[serde(default)]
    break_glass_roles: Vec<Snowflake>,
    warning: Option<String>,
    #[serde(default)]
    on_call: bool,
    #[serde(default)]
    on_call_skips_approval: bool,
}

/// What a rule is checked against: the regions and products `[tencent]` serves, and whether
/// the catalog (which tag rules need) is on.
pub(super) struct Context<'a> {
    pub regions: &'a [Region],
    pub products: &'a [Product],
    pub catalog_enabled: bool,
    /// Whether `[approvals]` (with its channel) is configured.
    pub approvals_channel: bool,
    /// Whether `[oncall]` is written (on-call keys need it).
    pub oncall: bool,
}

/// The rules, each checked on its own; none at all is a problem too.
pub(super) fn validate(p: &mut Collector, rules: Vec<RawRule>, cx: &Context<'_>) -> Vec<Rule> {
    if rules.is_empty() {
        p.push(
            "allow",
            "no [[allow]] rules: add at least one with roles, instances and regions, or nobody can use /vnc",
        );
    }
    rules
        .into_iter()
        .enumerate()
        .map(|(i, rule)| rule.validate(p, i, cx))
        .collect()
}

impl RawRule {
    /// `allow[i]`.
    fn validate(self, p: &mut Collector, i: usize, cx: &Context<'_>) -> Rule {
        let Context {
            regions,
            products,
            catalog_enabled,
            approvals_channel,
            oncall,
        } = *cx;
        let key = |field: &str| format!("allow[{i}].{field}");
        if self.roles.is_empty() {
            p.push(
                key("roles"),
                "is empty: list the Discord role IDs this rule admits",
            );
        }
        p.duplicates(&key("roles"), &self.roles);
        if self.instances.is_empty() {
            p.push(
                key("instances"),
                "is empty: list instance IDs or patterns such as \"ins-web*\", or \"*\" for all",
            );
        }
        for (j, pattern) in self.instances.iter().enumerate() {
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
        p.duplicates(&key("instances"), &self.instances);
        if self.regions.is_empty() {
            p.push(
                key("regions"),
                "is empty: list region names from tencent.regions, or \"*\" for all of them",
            );
        }
        let mut rule_regions = Vec::new();
        for (j, r) in self.regions.iter().enumerate() {
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
        p.duplicates(&key("regions"), &self.regions);
        if self.tags.len() > MAX_RULE_TAGS {
            p.push(
                key("tags"),
                format!(
                    "lists {} tags: use at most {MAX_RULE_TAGS} (an instance must carry all of them)",
                    self.tags.len()
                ),
            );
        }
        let mut rule_tags: Vec<(String, String)> = Vec::new();
        for (j, entry) in self.tags.iter().enumerate() {
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
        if !self.tags.is_empty() && !catalog_enabled {
            p.push(
                key("tags"),
                "needs the catalog, but catalog.enabled = false: a tag rule would never match; enable the catalog or remove the tags",
            );
        }
        let gate = gate(
            p,
            i,
            approvals_channel,
            GateKeys {
                approval: self.approval,
                approver_roles: self.approver_roles,
                approvals_required: self.approvals_required,
                request_ttl_minutes: self.request_ttl_minutes,
                break_glass_roles: self.break_glass_roles,
                warning: self.warning,
                on_call: self.on_call,
                on_call_skips_approval: self.on_call_skips_approval,
            },
        );
        for (field, set) in [
            ("on_call", gate.on_call),
            ("on_call_skips_approval", gate.on_call_skips_approval),
        ] {
            if set && !oncall {
                p.push(
                    key(field),
                    "needs an [oncall] section (provider = \"pagerduty\", escalation_policy_ids and [oncall.users]): without it nobody is ever on call",
                );
            }
        }
        Rule {
            gate,
            roles: self.roles,
            instances: self.instances,
            // `None` means every configured region.
            regions: if self.regions.iter().any(|r| r == "*") {
                None
            } else {
                Some(rule_regions)
            },
            tags: rule_tags,
        }
    }
}

/// A rule's approval keys as written.
struct GateKeys {
    approval: ApprovalMode,
    approver_roles: Option<Vec<Snowflake>>,
    approvals_required: Option<u32>,
    request_ttl_minutes: Option<u32>,
    break_glass_roles: Vec<Snowflake>,
    warning: Option<String>,
    on_call: bool,
    on_call_skips_approval: bool,
}

/// `allow[i]`'s approval keys: approver keys only with `approval = "required"`, approvers
/// and break-glass only with an `[approvals]` channel to post in.
fn gate(p: &mut Collector, i: usize, approvals_channel: bool, k: GateKeys) -> Gate {
    let key = |field: &str| format!("allow[{i}].{field}");
    let d = Gate::default();
    let required = k.approval == ApprovalMode::Required;
    if !required {
        for (field, set) in [
            ("approver_roles", k.approver_roles.is_some()),
            ("approvals_required", k.approvals_required.is_some()),
            ("request_ttl_minutes", k.request_ttl_minutes.is_some()),
            ("on_call_skips_approval", k.on_call_skips_approval),
        ] {
            if set {
                p.push(
                    key(field),
                    "only applies with approval = \"required\": set that, or remove this key",
                );
            }
        }
    }
    let approver_roles = k.approver_roles.unwrap_or_default();
    if required && approver_roles.is_empty() {
        p.push(
            key("approver_roles"),
            "is empty but approval = \"required\": list the Discord role IDs whose members may approve",
        );
    }
    p.duplicates(&key("approver_roles"), &approver_roles);
    p.duplicates(&key("break_glass_roles"), &k.break_glass_roles);
    let approvals_required = match k.approvals_required {
        Some(n) => p
            .in_range(
                &key("approvals_required"),
                n,
                MAX_APPROVALS_REQUIRED,
                "distinct approvers a request needs; the requester never counts",
            )
            .get(),
        None => d.approvals_required,
    };
    let request_ttl = match k.request_ttl_minutes {
        Some(m) => Duration::from_secs(
            u64::from(
                p.in_range(
                    &key("request_ttl_minutes"),
                    m,
                    MAX_REQUEST_TTL_MINUTES,
                    "minutes a request waits for its decision before it expires",
                )
                .get(),
            ) * 60,
        ),
        None => d.request_ttl,
    };
    if (required || !k.break_glass_roles.is_empty()) && !approvals_channel {
        p.push(
            key(if required { "approval" } else { "break_glass_roles" }),
            "needs an [approvals] section with channel_id: requests and break-glass uses are posted there",
        );
    }
    if let Some(w) = &k.warning {
        if w.trim().is_empty()
            || w.chars().count() > MAX_WARNING_CHARS
            || w.chars()
                .any(|c| c.is_control() || crate::text::is_invisible(c))
        {
            p.push(
                key("warning"),
                format!("must be one line of 1 to {MAX_WARNING_CHARS} visible characters, e.g. \"production database\""),
            );
        }
    }
    Gate {
        approval: k.approval,
        approver_roles,
        approvals_required,
        request_ttl,
        break_glass_roles: k.break_glass_roles,
        warning: k.warning.map(|w| w.trim().to_owned()),
        on_call: k.on_call,
        on_call_skips_approval: k.on_call_skips_approval,
    }
}
