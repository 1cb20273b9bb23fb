//! The allowlist decision: pure, and fed only with validated IDs.
//!
//! A request is allowed when one rule matches all three of role, instance and region. Roles are
//! Discord role IDs, never names: anyone who can create a role can copy a name.

use crate::ids::{InstanceId, Region, Snowflake};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub roles: Vec<Snowflake>,
    /// Instance IDs or glob patterns (`*` matches any run of characters).
    pub instances: Vec<String>,
    /// `None`: every configured region.
    pub regions: Option<Vec<Region>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the rule at this index in the config.
    Allowed { rule: usize },
    /// No rule matched; these roles would have allowed this instance in this region.
    Denied { would_allow: Vec<Snowflake> },
}

impl Rule {
    fn covers(&self, instance: &InstanceId, region: &Region) -> bool {
        self.instances
            .iter()
            .any(|p| glob_match(p, instance.as_str()))
            && self.regions.as_ref().is_none_or(|rs| rs.contains(region))
    }
}

pub fn authorize(
    rules: &[Rule],
    roles: &[Snowflake],
    instance: &InstanceId,
    region: &Region,
) -> Decision {
    let mut would_allow = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        if !rule.covers(instance, region) {
            continue;
        }
        if rule.roles.iter().any(|r| roles.contains(r)) {
            return Decision::Allowed { rule: i };
        }
        for r in &rule.roles {
            if !would_allow.contains(r) {
                would_allow.push(*r);
            }
        }
    }
    Decision::Denied { would_allow }
}

/// Why an `instances` entry in the config cannot be used; the text names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPattern {
    #[error("{0:?} is not an instance ID or pattern: use \"*\", an ID like \"ins-a1b2c3d4\", or a pattern like \"ins-web*\"")]
    NotAnInstance(String),
    #[error(
        "{0:?} has characters an instance ID cannot have: after \"ins-\" use only a-z, 0-9 and *"
    )]
    BadCharacters(String),
    #[error("{0:?} can never match: an instance ID has exactly 8 characters after \"ins-\"")]
    NeverMatches(String),
}

/// Checks an `instances` entry: `*`, or `ins-` followed by lower-case letters, digits and `*`,
/// so that a typo cannot quietly match nothing (or everything).
pub fn check_instance_pattern(pattern: &str) -> Result<(), InvalidPattern> {
    if pattern == "*" {
        return Ok(());
    }
    let Some(rest) = pattern.strip_prefix("ins-") else {
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
    Ok(())
}

/// Glob match with `*` only, linear time, no allocation.
pub fn glob_match(pattern: &str, text: &str) -> bool {
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
    fn a_rule_must_match_role_instance_and_region() {
        let rules = vec![
            Rule {
                roles: vec![sf(1)],
                instances: vec!["ins-web*".into()],
                regions: Some(vec![region("ap-guangzhou")]),
            },
            Rule {
                roles: vec![sf(2)],
                instances: vec!["*".into()],
                regions: None,
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
                would_allow: vec![sf(2)]
            }
        );
        assert_eq!(
            authorize(&rules, &[sf(1)], &db, &gz),
            Decision::Denied {
                would_allow: vec![sf(2)]
            }
        );
        assert_eq!(
            authorize(&rules, &[sf(9), sf(2)], &db, &sh),
            Decision::Allowed { rule: 1 }
        );
        assert_eq!(
            authorize(&rules, &[], &web, &gz),
            Decision::Denied {
                would_allow: vec![sf(1), sf(2)]
            }
        );
    }
}
