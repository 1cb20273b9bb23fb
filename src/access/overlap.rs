//! Duplicate and overlapping `[[allow]]` rules: warnings, never errors. A config with them works;
//! it just does not do what its author probably meant.
//!
//! Rule A *admits everything* rule B admits when every request B would allow, A allows too:
//! - every role of B is a role of A;
//! - every instance pattern of B is covered by a pattern of A: A's pattern matches B's with B's
//!   `*` standing for any text (`*` covers `ins-web*`; `ins-web*` covers `ins-web0*` and
//!   `ins-web00001`);
//! - every region of B is a region of A (`"*"` is every region in `tencent.regions`);
//! - every tag A requires, B requires too (fewer tags admit more).
//!
//! A rule's *terms* are what it asks besides: approval, approvers, quorum, TTL, break-glass roles,
//! the warning line. Lists are compared as sets. Anything else a rule may hold must be equal, or
//! no overlap is claimed: a warning is given only when it is certain.
//!
//! The first rule that admits a request decides it ([`super::authorize_with_tags`]), so of two
//! rules I < J (config order):
//! - alike in all four and on the same terms: J is a **duplicate** of I;
//! - I admits everything J admits: J is **shadowed**, it never decides a request. On other terms
//!   this is worse: J's approval (say) never applies, since I admits first on its own terms;
//! - J admits everything I admits, on the same terms: I is **redundant**, J would decide the same.
//!   On other terms it is a deliberate exception (a narrow rule that asks for approval before a
//!   broad self-service one) and nothing is said.

use std::fmt;

use super::{glob_match, Gate, Rule};
use crate::ids::Region;

/// One warning about two rules, by their index in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlap {
    /// `second` repeats `first`.
    Duplicate { first: usize, second: usize },
    /// `first` comes before `second` and admits every request `second` would; `terms_differ`:
    /// `second` asks other terms, which therefore never apply.
    Shadowed {
        first: usize,
        second: usize,
        terms_differ: bool,
    },
    /// `second` admits every request `first` does, on the same terms.
    Redundant { first: usize, second: usize },
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Overlap::Duplicate { first, second } => write!(
                f,
                "allow[{second}] repeats allow[{first}] (same roles, instances, regions, tags and terms): remove one of them"
            ),
            Overlap::Shadowed {
                first,
                second,
                terms_differ: false,
            } => write!(
                f,
                "allow[{second}] never applies: allow[{first}] comes first and admits every request it would, on the same terms: remove allow[{second}]"
            ),
            Overlap::Shadowed {
                first,
                second,
                terms_differ: true,
            } => write!(
                f,
                "allow[{second}] never applies: allow[{first}] comes first and admits every request it would, on its own terms, so allow[{second}]'s approval, break-glass and warning settings never take effect: move allow[{second}] above allow[{first}], or remove it"
            ),
            Overlap::Redundant { first, second } => write!(
                f,
                "allow[{first}] adds nothing: allow[{second}] admits every request it does, on the same terms: remove allow[{first}]"
            ),
        }
    }
}

/// Every duplicate, shadowed or redundant rule among `rules`, in config order; `regions` are
/// `tencent.regions` (what `"*"` means). At most one warning per pair.
pub fn overlaps(rules: &[Rule], regions: &[Region]) -> Vec<Overlap> {
    let mut found = Vec::new();
    for (i, a) in rules.iter().enumerate() {
        for (j, b) in rules.iter().enumerate().skip(i + 1) {
            if !comparable(a, b) {
                continue;
            }
            let same_terms = same_terms(&a.gate, &b.gate);
            let (a_all, b_all) = (
                admits_all(a, b, regions), // a ⊇ b
                admits_all(b, a, regions), // b ⊇ a
            );
            let overlap = if a_all && b_all && same_terms {
                Overlap::Duplicate {
                    first: i,
                    second: j,
                }
            } else if a_all {
                Overlap::Shadowed {
                    first: i,
                    second: j,
                    terms_differ: !same_terms,
                }
            } else if b_all && same_terms {
                Overlap::Redundant {
                    first: i,
                    second: j,
                }
            } else {
                continue;
            };
            found.push(overlap);
        }
    }
    found
}

/// Whether `a` admits every request `b` admits (roles, instances, regions, tags).
fn admits_all(a: &Rule, b: &Rule, all: &[Region]) -> bool {
    let regions = |r: &Rule| r.regions.as_deref().unwrap_or(all).to_vec();
    let a_regions = regions(a);
    subset(&b.roles, &a.roles)
        && b.instances
            .iter()
            .all(|q| a.instances.iter().any(|p| glob_match(p, q)))
        && regions(b).iter().all(|r| a_regions.contains(r))
        && subset(&a.tags, &b.tags)
}

fn subset<T: PartialEq>(small: &[T], big: &[T]) -> bool {
    small.iter().all(|x| big.contains(x))
}

fn same_set<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    subset(a, b) && subset(b, a)
}

fn same_terms(a: &Gate, b: &Gate) -> bool {
    a.approval == b.approval
        && same_set(&a.approver_roles, &b.approver_roles)
        && a.approvals_required == b.approvals_required
        && a.request_ttl == b.request_ttl
        && same_set(&a.break_glass_roles, &b.break_glass_roles)
        && a.warning == b.warning
}

/// Whether the two rules differ only in what this module understands: `b` with `a`'s roles,
/// instances, regions, tags and terms must be `a`. A condition added to rules later (and not
/// taught here) then keeps this quiet instead of claiming an overlap it cannot judge.
fn comparable(a: &Rule, b: &Rule) -> bool {
    // The updates name every field today; `..b` is what carries a field added later.
    #[allow(clippy::needless_update)]
    let b_as_a = Rule {
        roles: a.roles.clone(),
        instances: a.instances.clone(),
        regions: a.regions.clone(),
        tags: a.tags.clone(),
        gate: Gate {
            approval: a.gate.approval,
            approver_roles: a.gate.approver_roles.clone(),
            approvals_required: a.gate.approvals_required,
            request_ttl: a.gate.request_ttl,
            break_glass_roles: a.gate.break_glass_roles.clone(),
            warning: a.gate.warning.clone(),
            ..b.gate.clone()
        },
        ..b.clone()
    };
    b_as_a == *a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::ApprovalMode;
    use crate::ids::Snowflake;

    fn sf(n: u64) -> Snowflake {
        Snowflake::new(n).unwrap()
    }

    fn region(s: &str) -> Region {
        Region::parse(s).unwrap()
    }

    fn regions() -> Vec<Region> {
        vec![region("ap-guangzhou"), region("ap-shanghai")]
    }

    /// A self-service rule: roles, instance patterns, regions (`None`: "*"), tags.
    fn rule(roles: &[u64], instances: &[&str], regs: Option<&[&str]>, tags: &[&str]) -> Rule {
        Rule {
            roles: roles.iter().map(|r| sf(*r)).collect(),
            instances: instances.iter().map(|s| (*s).to_owned()).collect(),
            regions: regs.map(|rs| rs.iter().map(|r| region(r)).collect()),
            tags: tags
                .iter()
                .map(|t| {
                    let (k, v) = t.split_once('=').unwrap();
                    (k.to_owned(), v.to_owned())
                })
                .collect(),
            gate: Gate::default(),
        }
    }

    fn approval(mut r: Rule) -> Rule {
        r.gate.approval = ApprovalMode::Required;
        r.gate.approver_roles = vec![sf(9)];
        r
    }

    #[test]
    fn identical_rules_are_duplicates_whatever_the_order_of_their_lists() {
        let a = rule(&[1, 2], &["ins-web*", "ins-db*"], None, &["env=prod"]);
        let b = rule(&[2, 1], &["ins-db*", "ins-web*"], None, &["env=prod"]);
        assert_eq!(
            overlaps(&[a, b], &regions()),
            [Overlap::Duplicate {
                first: 0,
                second: 1
            }]
        );
        // "*" and every configured region listed are the same regions.
        let a = rule(&[1], &["*"], None, &[]);
        let b = rule(&[1], &["*"], Some(&["ap-shanghai", "ap-guangzhou"]), &[]);
        assert_eq!(
            overlaps(&[a, b], &regions()),
            [Overlap::Duplicate {
                first: 0,
                second: 1
            }]
        );
    }

    #[test]
    fn a_later_rule_an_earlier_one_covers_is_shadowed() {
        let broad = rule(&[1, 2], &["*"], None, &[]);
        for narrow in [
            rule(&[1], &["*"], None, &[]),
            rule(&[1, 2], &["ins-web*"], None, &[]),
            rule(&[1, 2], &["ins-web00001", "lhins-*"], None, &[]),
            rule(&[1, 2], &["*"], Some(&["ap-shanghai"]), &[]),
            rule(&[1, 2], &["*"], None, &["env=prod"]),
        ] {
            assert_eq!(
                overlaps(&[broad.clone(), narrow.clone()], &regions()),
                [Overlap::Shadowed {
                    first: 0,
                    second: 1,
                    terms_differ: false
                }],
                "{narrow:?}"
            );
        }
        // A pattern covers a narrower pattern.
        let a = rule(&[1], &["ins-web*"], None, &[]);
        let b = rule(&[1], &["ins-web0*", "ins-web1*"], None, &[]);
        assert_eq!(overlaps(&[a, b], &regions()).len(), 1);
        // Worse on other terms: the later rule's approval never applies.
        let w = overlaps(
            &[broad.clone(), approval(rule(&[1], &["ins-db*"], None, &[]))],
            &regions(),
        );
        assert_eq!(
            w,
            [Overlap::Shadowed {
                first: 0,
                second: 1,
                terms_differ: true
            }]
        );
        assert!(w[0].to_string().contains("move allow[1] above allow[0]"));
    }

    #[test]
    fn an_earlier_rule_a_later_one_covers_is_redundant_only_on_the_same_terms() {
        let narrow = rule(&[1], &["ins-db*"], None, &[]);
        let broad = rule(&[1, 2], &["*"], None, &[]);
        let w = overlaps(&[narrow.clone(), broad.clone()], &regions());
        assert_eq!(
            w,
            [Overlap::Redundant {
                first: 0,
                second: 1
            }]
        );
        assert_eq!(
            w[0].to_string(),
            "allow[0] adds nothing: allow[1] admits every request it does, on the same terms: remove allow[0]"
        );
        // A narrow rule that asks for approval before a broad self-service one is the usual
        // way to guard production: no warning.
        assert!(overlaps(&[approval(narrow), broad], &regions()).is_empty());
    }

    #[test]
    fn rules_that_only_partly_overlap_or_differ_in_what_is_not_compared_are_not_warned_about() {
        for (a, b) in [
            // Other roles.
            (rule(&[1], &["*"], None, &[]), rule(&[2], &["*"], None, &[])),
            // Roles overlap, neither holds the other's.
            (
                rule(&[1, 2], &["*"], None, &[]),
                rule(&[2, 3], &["ins-web*"], None, &[]),
            ),
            // Other instances, other regions, other tags.
            (
                rule(&[1], &["ins-web*"], None, &[]),
                rule(&[1], &["ins-db*"], None, &[]),
            ),
            (
                rule(&[1], &["*"], Some(&["ap-guangzhou"]), &[]),
                rule(&[1], &["*"], Some(&["ap-shanghai"]), &[]),
            ),
            (
                rule(&[1], &["*"], None, &["env=prod"]),
                rule(&[1], &["*"], None, &["env=staging"]),
            ),
            // A pattern that only looks wider: "ins-*1" does not cover "ins-web*".
            (
                rule(&[1], &["ins-*1"], None, &[]),
                rule(&[1], &["ins-web*"], None, &[]),
            ),
        ] {
            assert!(
                overlaps(&[a.clone(), b.clone()], &regions()).is_empty(),
                "{a:?} {b:?}"
            );
            assert!(overlaps(&[b, a], &regions()).is_empty());
        }
    }

    #[test]
    fn one_warning_per_pair_in_config_order() {
        let a = rule(&[1], &["*"], None, &[]);
        let w = overlaps(&[a.clone(), a.clone(), a], &regions());
        assert_eq!(
            w.iter()
                .map(|o| match o {
                    Overlap::Duplicate { first, second } => (*first, *second),
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>(),
            [(0, 1), (0, 2), (1, 2)]
        );
    }
}
