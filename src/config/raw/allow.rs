//! `[[allow]]`: who may open which instances, in which regions, with which tags.

use serde::Deserialize;

use super::Collector;
use crate::access::{check_instance_pattern, parse_tag, Rule, MAX_RULE_TAGS};
use crate::ids::{Product, Region, Snowflake};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    roles: Vec<Snowflake>,
    instances: Vec<String>,
    regions: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
}

/// What a rule is checked against: the regions and products `[tencent]` serves, and whether
/// the catalog (which tag rules need) is on.
pub(super) struct Context<'a> {
    pub regions: &'a [Region],
    pub products: &'a [Product],
    pub catalog_enabled: bool,
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
        Rule {
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
