//! The allowlist decision: pure, and fed only with validated IDs.
//!
//! A request is allowed when one rule matches all three of role, instance and region, and, for a
//! rule with `tags`, the instance carries every listed tag as the catalog last saw it. Roles are
//! Discord role IDs, never names: anyone who can create a role can copy a name.

use std::time::Duration;

use crate::ids::{InstanceId, Product, Region, Snowflake};

mod overlap;
pub use overlap::{overlaps, Overlap};

/// Approvals a rule needs by default: one person other than the requester.
pub const DEFAULT_APPROVALS_REQUIRED: u32 = 1;
/// More would rarely be reachable at 3 a.m.
pub const MAX_APPROVALS_REQUIRED: u32 = 5;
pub const DEFAULT_REQUEST_TTL_MINUTES: u32 = 30;
/// A day: a request nobody decided by then is stale.
pub const MAX_REQUEST_TTL_MINUTES: u32 = 1440;
/// The longest `warning` line shown with a request.
pub const MAX_WARNING_CHARS: usize = 200;

/// Whether a rule's grants wait for approvers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalMode {
    /// Self-service: the grant starts at `/vnc` (today's behaviour).
    #[default]
    None,
    /// `/vnc` posts a request; the grant starts when enough approvers approve it.
    Required,
}

/// What a rule asks of a request besides the roles: approvals, break-glass, a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub approval: ApprovalMode,
    /// Roles whose members may vote on this rule's requests.
    pub approver_roles: Vec<Snowflake>,
    /// Distinct approvers needed (the requester never counts).
    pub approvals_required: u32,
    /// How long a request waits for its decision.
    pub request_ttl: Duration,
    /// Roles whose members may skip approval in an emergency (loudly).
    pub break_glass_roles: Vec<Snowflake>,
    /// A line shown to the requester and the approvers, e.g. "production database".
    pub warning: Option<String>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            approval: ApprovalMode::None,
            approver_roles: Vec::new(),
            approvals_required: DEFAULT_APPROVALS_REQUIRED,
            request_ttl: Duration::from_secs(u64::from(DEFAULT_REQUEST_TTL_MINUTES) * 60),
            break_glass_roles: Vec::new(),
            warning: None,
        }
    }
}

impl Gate {
    pub fn needs_approval(&self) -> bool {
        self.approval == ApprovalMode::Required
    }

    /// Whether these roles include one of the approver roles.
    pub fn may_vote(&self, roles: &[Snowflake]) -> bool {
        self.approver_roles.iter().any(|r| roles.contains(r))
    }

    /// Whether these roles include one of the break-glass roles.
    pub fn may_break_glass(&self, roles: &[Snowflake]) -> bool {
        self.break_glass_roles.iter().any(|r| roles.contains(r))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub roles: Vec<Snowflake>,
    /// Instance IDs or glob patterns (`*` matches any run of characters).
    pub instances: Vec<String>,
    /// `None`: every configured region.
    pub regions: Option<Vec<Region>>,
    /// `(key, value)` tags the instance must all carry (from the catalog); empty: no condition.
    pub tags: Vec<(String, String)>,
    /// Approvals, break-glass and the warning; `Gate::default()` is self-service.
    pub gate: Gate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the rule at this index in the config.
    Allowed { rule: usize },
    /// No rule matched; these roles would have allowed this instance in this region.
    Denied {
        would_allow: Vec<Snowflake>,
        /// Rules (by index) that admit one of the member's roles for this instance and region
        /// but need tags, and the catalog had no record of the instance to vouch for them. Empty
        /// when the catalog knew the instance (or no tag rule was in play). A refusal can say
        /// "a rule for your roles needs tags …, and the catalog has no record of this instance".
        needs_catalog: Vec<usize>,
    },
}

/// How a rule's tag condition stands for one instance.
enum TagMatch {
    Yes,
    No,
    /// The rule needs tags and the catalog cannot vouch for the instance.
    Unknown,
}

impl Rule {
    fn covers(&self, instance: &InstanceId, region: &Region) -> bool {
        self.instances
            .iter()
            .any(|p| glob_match(p, instance.as_str()))
            && self.regions.as_ref().is_none_or(|rs| rs.contains(region))
    }

    fn tags_match(&self, tags: Option<&[(String, String)]>) -> TagMatch {
        if self.tags.is_empty() {
            return TagMatch::Yes;
        }
        let Some(have) = tags else {
            return TagMatch::Unknown;
        };
        if self
            .tags
            .iter()
            .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
        {
            TagMatch::Yes
        } else {
            TagMatch::No
        }
    }

    /// Whether this rule, for a member holding one of its roles, opens `instance` in `region`
    /// given the catalog's `tags` (`None`: the catalog cannot vouch, so a tag rule does not).
    pub fn opens(
        &self,
        instance: &InstanceId,
        region: &Region,
        tags: Option<&[(String, String)]>,
    ) -> bool {
        self.covers(instance, region) && matches!(self.tags_match(tags), TagMatch::Yes)
    }

    /// The rule's tags as written in the config: `env=staging, team=web`.
    pub fn tags_text(&self) -> String {
        self.tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The allowlist decision. `tags` are the instance's tags as the catalog last saw them, or `None`
/// when the catalog cannot vouch for the instance (unknown to it, disabled or failing): then a
/// rule with `tags` does not match (fail closed). A tag rule of one of `roles` that does not
/// match, for either reason, is named in `needs_catalog`.
pub fn authorize_with_tags(
    rules: &[Rule],
    roles: &[Snowflake],
    instance: &InstanceId,
    region: &Region,
    tags: Option<&[(String, String)]>,
) -> Decision {
    // What a refusal says must not depend on what the catalog knows: a member could otherwise
    // learn whether an ID exists, and its tags, from the wording. So `would_allow` names the
    // roles of the tag-less rules covering the ID and region, and a tag rule of the member's
    // that does not match says the same whether the instance carries other tags or is unknown.
    let mut would_allow = Vec::new();
    let mut needs_catalog = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if !rule.covers(instance, region) {
            continue;
        }
        let has_role = rule.roles.iter().any(|r| roles.contains(r));
        if has_role {
            match rule.tags_match(tags) {
                TagMatch::Yes => return Decision::Allowed { rule: i },
                TagMatch::No | TagMatch::Unknown => needs_catalog.push(i),
            }
            continue;
        }
        // Another role's tag rule is never named: whether it would match is the catalog's word.
        if !rule.tags.is_empty() {
            continue;
        }
        for r in &rule.roles {
            if !would_allow.contains(r) {
                would_allow.push(*r);
            }
        }
    }
    Decision::Denied {
        would_allow,
        needs_catalog,
    }
}

/// Most tags one rule may list (Tencent allows 50 per resource; a rule needs far fewer).
pub(crate) const MAX_RULE_TAGS: usize = 10;
/// Tencent's bounds: a tag key is 1 to 127 characters, a value up to 255.
pub const MAX_TAG_KEY_CHARS: usize = 127;
pub const MAX_TAG_VALUE_CHARS: usize = 255;

/// Why a `tags` entry in the config cannot be used; the text names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidTag {
    #[error("{0:?} is not a tag condition: write it as \"key=value\", e.g. \"env=staging\"")]
    NoEquals(String),
    #[error("{0:?} has an empty key: write it as \"key=value\", e.g. \"env=staging\"")]
    EmptyKey(String),
    #[error("{0:?} is too long: a tag key has at most {MAX_TAG_KEY_CHARS} characters and a value at most {MAX_TAG_VALUE_CHARS}")]
    TooLong(String),
    #[error("{0:?} has control or invisible characters, or surrounding spaces: write the tag exactly as Tencent Cloud shows it")]
    BadCharacters(String),
}

/// Parses a `tags` entry `key=value` (split at the first `=`; the value may be empty).
pub(crate) fn parse_tag(entry: &str) -> Result<(String, String), InvalidTag> {
    let shown: String = entry.chars().take(60).collect();
    let Some((k, v)) = entry.split_once('=') else {
        return Err(InvalidTag::NoEquals(shown));
    };
    if k.is_empty() {
        return Err(InvalidTag::EmptyKey(shown));
    }
    if k.chars().count() > MAX_TAG_KEY_CHARS || v.chars().count() > MAX_TAG_VALUE_CHARS {
        return Err(InvalidTag::TooLong(shown));
    }
    let bad = |s: &str| s.chars().any(crate::text::is_invisible) || s.trim() != s;
    if bad(k) || bad(v) {
        return Err(InvalidTag::BadCharacters(shown));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// Why an `instances` entry in the config cannot be used; the text names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidPattern {
    #[error("{0:?} is not an instance ID or pattern: use \"*\", an ID like \"ins-a1b2c3d4\" or \"lhins-a1b2c3d4\", or a pattern like \"ins-web*\" or \"lhins-*\"")]
    NotAnInstance(String),
    #[error(
        "{0:?} has characters an instance ID cannot have: after \"ins-\" or \"lhins-\" use only a-z, 0-9 and *"
    )]
    BadCharacters(String),
    #[error("{0:?} can never match: an instance ID has exactly 8 characters after \"ins-\" or \"lhins-\"")]
    NeverMatches(String),
}

/// Checks an `instances` entry: `*`, or `ins-` (CVM) or `lhins-` (Lighthouse) followed by
/// lower-case letters, digits and `*`, so that a typo cannot quietly match nothing (or
/// everything). The product the pattern is limited to, if any (`None` for `*`).
pub(crate) fn check_instance_pattern(pattern: &str) -> Result<Option<Product>, InvalidPattern> {
    if pattern == "*" {
        return Ok(None);
    }
    let Some((product, rest)) = Product::ALL
        .into_iter()
        .find_map(|p| pattern.strip_prefix(p.prefix()).map(|rest| (p, rest)))
    else {
        return Err(InvalidPattern::NotAnInstance(pattern.to_owned()));
    };
    if !rest
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'*')
    {
        return Err(InvalidPattern::BadCharacters(pattern.to_owned()));
    }
    let fixed = rest.bytes().filter(|b| *b != b'*').count();
    if fixed > 8 || (!rest.contains('*') && fixed != 8) {
        return Err(InvalidPattern::NeverMatches(pattern.to_owned()));
    }
    Ok(Some(product))
}

/// Glob match with `*` only, linear time, no allocation.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decision for an instance the catalog cannot vouch for.
    fn authorize(
        rules: &[Rule],
        roles: &[Snowflake],
        instance: &InstanceId,
        region: &Region,
    ) -> Decision {
        authorize_with_tags(rules, roles, instance, region, None)
    }

    fn id(s: &str) -> InstanceId {
        InstanceId::parse(s).unwrap()
    }
    fn region(s: &str) -> Region {
        Region::parse(s).unwrap()
    }
    fn sf(n: u64) -> Snowflake {
        Snowflake::new(n).unwrap()
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "ins-abc"));
        assert!(glob_match("ins-web*", "ins-web12345"));
        assert!(!glob_match("ins-web*", "ins-db123456"));
        assert!(glob_match("ins-*5", "ins-12345"));
        assert!(glob_match("ins-a*b*c", "ins-aXXbYYc"));
        assert!(!glob_match("ins-a*b*c", "ins-aXXbYY"));
        assert!(glob_match("ins-a1b2c3d4", "ins-a1b2c3d4"));
        assert!(!glob_match("ins-a1b2c3d4", "ins-a1b2c3d5"));
    }

    #[test]
    fn patterns_are_checked() {
        assert!(check_instance_pattern("*").is_ok());
        assert!(check_instance_pattern("ins-web*").is_ok());
        assert!(check_instance_pattern("ins-a1b2c3d4").is_ok());
        assert!(check_instance_pattern("ins-a1b2").is_err());
        assert!(check_instance_pattern("INS-A1B2C3D4").is_err());
        assert!(check_instance_pattern("web*").is_err());
        assert!(check_instance_pattern("ins-a1b2c3d4e*").is_err());
        assert_eq!(
            check_instance_pattern("web*"),
            Err(InvalidPattern::NotAnInstance("web*".into()))
        );
        assert_eq!(
            check_instance_pattern("INS-A1B2C3D4"),
            Err(InvalidPattern::NotAnInstance("INS-A1B2C3D4".into()))
        );
        assert_eq!(
            check_instance_pattern("ins-A1b2*"),
            Err(InvalidPattern::BadCharacters("ins-A1b2*".into()))
        );
        assert_eq!(
            check_instance_pattern("ins-a1b2"),
            Err(InvalidPattern::NeverMatches("ins-a1b2".into()))
        );
        assert!(check_instance_pattern("web*")
            .unwrap_err()
            .to_string()
            .contains("use \"*\""));
    }

    #[test]
    fn lighthouse_patterns() {
        assert_eq!(check_instance_pattern("*"), Ok(None));
        assert_eq!(check_instance_pattern("ins-web*"), Ok(Some(Product::Cvm)));
        assert_eq!(
            check_instance_pattern("lhins-*"),
            Ok(Some(Product::Lighthouse))
        );
        assert_eq!(
            check_instance_pattern("lhins-a1b2c3d4"),
            Ok(Some(Product::Lighthouse))
        );
        assert_eq!(
            check_instance_pattern("lhins-a1b2"),
            Err(InvalidPattern::NeverMatches("lhins-a1b2".into()))
        );
        assert_eq!(
            check_instance_pattern("LHINS-*"),
            Err(InvalidPattern::NotAnInstance("LHINS-*".into()))
        );
        assert_eq!(
            check_instance_pattern("lhins-Web*"),
            Err(InvalidPattern::BadCharacters("lhins-Web*".into()))
        );
        // `ins-*` is CVM only: it does not match a Lighthouse ID, and `lhins-*` no CVM one.
        let lh = id("lhins-web00001");
        let cvm = id("ins-web00001");
        assert!(!glob_match("ins-*", lh.as_str()));
        assert!(!glob_match("lhins-*", cvm.as_str()));
        let rules = vec![Rule {
            roles: vec![sf(1)],
            instances: vec!["lhins-web*".into()],
            regions: None,
            tags: vec![],
            gate: Default::default(),
        }];
        let gz = region("ap-guangzhou");
        assert_eq!(
            authorize(&rules, &[sf(1)], &lh, &gz),
            Decision::Allowed { rule: 0 }
        );
        assert!(matches!(
            authorize(&rules, &[sf(1)], &cvm, &gz),
            Decision::Denied { .. }
        ));
    }

    #[test]
    fn a_rule_must_match_role_instance_and_region() {
        let rules = vec![
            Rule {
                roles: vec![sf(1)],
                instances: vec!["ins-web*".into()],
                regions: Some(vec![region("ap-guangzhou")]),
                tags: vec![],
                gate: Default::default(),
            },
            Rule {
                roles: vec![sf(2)],
                instances: vec!["*".into()],
                regions: None,
                tags: vec![],
                gate: Default::default(),
            },
        ];
        let web = id("ins-web00001");
        let db = id("ins-db000001");
        let gz = region("ap-guangzhou");
        let sh = region("ap-shanghai");
        assert_eq!(
            authorize(&rules, &[sf(1)], &web, &gz),
            Decision::Allowed { rule: 0 }
        );
        assert_eq!(
            authorize(&rules, &[sf(1)], &web, &sh),
            Decision::Denied {
                would_allow: vec![sf(2)],
                needs_catalog: vec![]
            }
        );
        assert_eq!(
            authorize(&rules, &[sf(1)], &db, &gz),
            Decision::Denied {
                would_allow: vec![sf(2)],
                needs_catalog: vec![]
            }
        );
        assert_eq!(
            authorize(&rules, &[sf(9), sf(2)], &db, &sh),
            Decision::Allowed { rule: 1 }
        );
        assert_eq!(
            authorize(&rules, &[], &web, &gz),
            Decision::Denied {
                would_allow: vec![sf(1), sf(2)],
                needs_catalog: vec![]
            }
        );
    }

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_tag_rule_needs_every_tag_and_fails_closed_without_the_catalog() {
        let rules = vec![
            Rule {
                roles: vec![sf(1)],
                instances: vec!["*".into()],
                regions: None,
                tags: tags(&[("env", "staging"), ("team", "web")]),
                gate: Default::default(),
            },
            Rule {
                roles: vec![sf(2)],
                instances: vec!["ins-db*".into()],
                regions: None,
                tags: vec![],
                gate: Default::default(),
            },
        ];
        let web = id("ins-web00001");
        let gz = region("ap-guangzhou");
        let both = tags(&[("team", "web"), ("env", "staging"), ("x", "y")]);
        assert_eq!(
            authorize_with_tags(&rules, &[sf(1)], &web, &gz, Some(&both)),
            Decision::Allowed { rule: 0 }
        );
        // One tag missing, or a value that differs (tags are case-sensitive): no match, said
        // exactly as when the catalog cannot vouch (issue 17: no existence oracle).
        for have in [
            tags(&[("env", "staging")]),
            tags(&[("env", "Staging"), ("team", "web")]),
            vec![],
        ] {
            assert_eq!(
                authorize_with_tags(&rules, &[sf(1)], &web, &gz, Some(&have)),
                Decision::Denied {
                    would_allow: vec![],
                    needs_catalog: vec![0]
                },
                "{have:?}"
            );
        }
        // The catalog cannot vouch: fail closed, and say which rule needed it.
        assert_eq!(
            authorize_with_tags(&rules, &[sf(1)], &web, &gz, None),
            Decision::Denied {
                would_allow: vec![],
                needs_catalog: vec![0]
            }
        );
        assert_eq!(
            authorize(&rules, &[sf(1)], &web, &gz),
            authorize_with_tags(&rules, &[sf(1)], &web, &gz, None)
        );
        // A member without the rule's role is not told about it.
        assert_eq!(
            authorize_with_tags(&rules, &[sf(3)], &web, &gz, None),
            Decision::Denied {
                would_allow: vec![],
                needs_catalog: vec![]
            }
        );
        // Rules without tags work by ID whatever the catalog knows.
        let db = id("ins-db000001");
        assert_eq!(
            authorize_with_tags(&rules, &[sf(2)], &db, &gz, None),
            Decision::Allowed { rule: 1 }
        );
    }

    #[test]
    fn tag_entries_are_checked() {
        assert_eq!(
            parse_tag("env=staging"),
            Ok(("env".into(), "staging".into()))
        );
        assert_eq!(parse_tag("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_tag("empty="), Ok(("empty".into(), "".into())));
        assert!(matches!(parse_tag("env"), Err(InvalidTag::NoEquals(_))));
        assert!(matches!(parse_tag("=x"), Err(InvalidTag::EmptyKey(_))));
        assert!(matches!(
            parse_tag(&format!("{}=x", "k".repeat(128))),
            Err(InvalidTag::TooLong(_))
        ));
        assert!(matches!(
            parse_tag("env =x"),
            Err(InvalidTag::BadCharacters(_))
        ));
        assert!(matches!(
            parse_tag("env=a\nb"),
            Err(InvalidTag::BadCharacters(_))
        ));
    }

    /// A member whose rules could never cover an ID hears the same whether it exists (with
    /// whatever tags) or not.
    #[test]
    fn no_existence_oracle_in_a_refusal() {
        let rules = vec![
            Rule {
                roles: vec![sf(1)],
                instances: vec!["ins-web*".into()],
                regions: None,
                tags: tags(&[("env", "staging")]),
                gate: Default::default(),
            },
            Rule {
                roles: vec![sf(2)],
                instances: vec!["*".into()],
                regions: None,
                tags: tags(&[("env", "prod")]),
                gate: Default::default(),
            },
            Rule {
                roles: vec![sf(4)],
                instances: vec!["*".into()],
                regions: None,
                tags: vec![],
                gate: Default::default(),
            },
        ];
        let gz = region("ap-guangzhou");
        let prod = tags(&[("env", "prod")]);
        for (who, id_) in [
            (sf(1), "ins-web00001"),
            (sf(1), "ins-db000001"),
            (sf(3), "ins-db000001"),
        ] {
            let id_ = id(id_);
            let answers: Vec<Decision> = [None, Some(&prod[..]), Some(&[][..])]
                .into_iter()
                .map(|t| authorize_with_tags(&rules, &[who], &id_, &gz, t))
                .collect();
            assert!(
                answers.iter().all(|a| *a == answers[0]),
                "{who:?} {id_}: {answers:?}"
            );
            assert!(!matches!(answers[0], Decision::Allowed { .. }));
        }
    }
}
