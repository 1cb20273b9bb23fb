//! The decision on one request, as a pure function of the policy, the limits as they stand and
//! the request. No I/O: every branch is unit-tested below.

use crate::access::{self, Rule};
use crate::ids::{InstanceId, Quoted, Region};
use crate::limits::{Limited, LimitsGuard, Spend};
use crate::oncall::OnCall;
use crate::tencent::{Instance, Resolution, View};

use super::refusal::{Refusal, MAX_REASON_CHARS, MIN_REASON_CHARS};
use super::request::{Approved, Authority, Policy, Request};

/// The limits as the decision sees them: asking spends nothing.
pub trait LimitView {
    fn check(&self, actor: &str, instance: &InstanceId) -> Result<(), Limited>;
}

impl LimitView for LimitsGuard<'_> {
    fn check(&self, actor: &str, instance: &InstanceId) -> Result<(), Limited> {
        LimitsGuard::check(self, actor, instance)
    }
}

/// The limits as one kind of admission counts against them (see [`Spend`]).
pub struct Spending<'a, 'g>(pub &'a LimitsGuard<'g>, pub Spend);

impl LimitView for Spending<'_, '_> {
    fn check(&self, actor: &str, instance: &InstanceId) -> Result<(), Limited> {
        self.0.check_spend(actor, instance, self.1)
    }
}

/// A refusal, with the instance and region where they were valid (for the audit record).
#[derive(Debug)]
pub struct Rejection {
    pub refusal: Refusal,
    pub instance: Option<InstanceId>,
    pub region: Option<Region>,
}

#[derive(Debug)]
pub enum Decision {
    Approve(Box<Approved>),
    Refuse(Box<Rejection>),
}

/// Validates, authorizes and limits a request: guild, instance, region, reason, allowlist,
/// limits, in that order (the first failure is the one the member hears about).
pub fn decide(policy: &Policy, limits: &impl LimitView, req: &Request) -> Decision {
    decide_with(policy, limits, None, req)
}

/// [`decide`] with the catalog as it stands (names, regions and tags come from it).
pub fn decide_with(
    policy: &Policy,
    limits: &impl LimitView,
    catalog: Option<&View>,
    req: &Request,
) -> Decision {
    decide_on_call(policy, limits, catalog, &OnCall::NoSource, req)
}

/// [`decide_with`], with what the on-call cache says of the member now (`on_call` rules match
/// only while they are on call).
pub fn decide_on_call(
    policy: &Policy,
    limits: &impl LimitView,
    catalog: Option<&View>,
    on_call: &OnCall,
    req: &Request,
) -> Decision {
    match evaluate(policy, limits, catalog, on_call, req) {
        Ok(a) => Decision::Approve(Box::new(a)),
        Err(r) => Decision::Refuse(Box::new(r)),
    }
}

/// Whether the text is meant as an instance ID (`ins-…`, `lhins-…`, in any case) rather than a
/// name: a malformed ID is reported as such, not looked up as a name.
pub fn looks_like_id(raw: &str) -> bool {
    let lower = raw.trim().to_ascii_lowercase();
    lower.starts_with("ins-") || lower.starts_with("lhins-")
}

/// Whether `authority` may open `i` under `rules`, as the catalog knows it (tags included).
pub fn may_open(rules: &[Rule], authority: &Authority, i: &Instance) -> bool {
    match authority {
        Authority::LocalCredentials => true,
        Authority::Roles(roles) => rules.iter().any(|r| {
            r.roles.iter().any(|x| roles.contains(x)) && r.opens(&i.id, &i.region, Some(&i.tags))
        }),
    }
}

// The rejection is boxed by `decide_with`, the only caller.
#[allow(clippy::result_large_err)]
fn evaluate(
    policy: &Policy,
    limits: &impl LimitView,
    catalog: Option<&View>,
    on_call: &OnCall,
    req: &Request,
) -> Result<Approved, Rejection> {
    let refuse = |refusal, instance: Option<&InstanceId>, region: Option<&Region>| Rejection {
        refusal,
        instance: instance.cloned(),
        region: region.cloned(),
    };
    if let Authority::Roles(_) = req.authority {
        match req.guild {
            None => return Err(refuse(Refusal::NotInGuild, None, None)),
            Some(g) if !policy.guilds.contains(&g) => {
                return Err(refuse(Refusal::OtherGuild, None, None))
            }
            Some(_) => {}
        }
    }
    let served = || {
        policy
            .regions
            .iter()
            .map(Region::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let region_arg = match req
        .region
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        None => None,
        Some(raw) => {
            let id = InstanceId::parse(&req.instance).ok();
            match Region::parse(raw) {
                Ok(r) if policy.regions.contains(&r) => Some(r),
                Ok(r) => {
                    return Err(refuse(
                        Refusal::RegionNotServed(r, served()),
                        id.as_ref(),
                        None,
                    ))
                }
                Err(problem) => {
                    return Err(refuse(
                        Refusal::BadRegion {
                            problem,
                            configured: served(),
                        },
                        id.as_ref(),
                        None,
                    ))
                }
            }
        }
    };
    let (instance, region) = match catalog {
        Some(view) if !looks_like_id(&req.instance) => {
            // A name: exactly one instance the actor may open must carry it (in the region
            // asked for, if one was).
            let allowed = |i: &Instance| {
                region_arg.as_ref().is_none_or(|r| &i.region == r)
                    && policy.regions.contains(&i.region)
                    && may_open(&policy.rules, &req.authority, i)
            };
            match view.resolve_name(req.instance.trim(), allowed) {
                Resolution::Unique(i) => (i.id.clone(), i.region.clone()),
                Resolution::Ambiguous(found) => {
                    let choices = found
                        .iter()
                        .take(10)
                        .map(|i| format!("{} ({}, {})", i.id, i.region, i.state.as_str()))
                        .collect();
                    return Err(refuse(
                        Refusal::AmbiguousName {
                            name: Quoted::new(&req.instance).to_string(),
                            choices,
                        },
                        None,
                        None,
                    ));
                }
                Resolution::NotFound => {
                    let not_an_id = InstanceId::parse(&req.instance)
                        .err()
                        .map_or_else(String::new, |e| e.to_string());
                    return Err(refuse(
                        Refusal::UnknownName {
                            name: Quoted::new(&req.instance).to_string(),
                            not_an_id: not_an_id.trim_end_matches('.').to_owned(),
                        },
                        None,
                        None,
                    ));
                }
            }
        }
        _ => {
            let id = InstanceId::parse(&req.instance).map_err(|e| refuse(e.into(), None, None))?;
            // No region given: where the catalog saw it, else the first configured.
            // (Only for an instance the actor may open: a refusal must not tell where an
            // instance it may not open lives.)
            let region = region_arg
                .or_else(|| {
                    catalog
                        .and_then(|v| v.lookup(&id))
                        .filter(|i| may_open(&policy.rules, &req.authority, i))
                        .map(|i| i.region.clone())
                        .filter(|r| policy.regions.contains(r))
                })
                .unwrap_or_else(|| policy.regions[0].clone());
            (id, region)
        }
    };
    let fail = |r: Refusal| refuse(r, Some(&instance), Some(&region));
    if let Some(tencent) = &policy.tencent {
        tencent
            .check_serves(&instance, &region)
            .map_err(|e| fail(Refusal::NotServed(e)))?;
    }
    let reason = clean_reason(req.reason.as_deref());
    match &reason {
        Some(r) if r.chars().count() > MAX_REASON_CHARS => {
            return Err(fail(Refusal::ReasonTooLong))
        }
        // Counted as a reader sees it: zero-width or padding characters are not a reason.
        Some(r) if policy.require_reason && crate::text::readable_chars(r) < MIN_REASON_CHARS => {
            return Err(fail(Refusal::ReasonTooShort))
        }
        None if policy.require_reason => return Err(fail(Refusal::ReasonRequired)),
        _ => {}
    }
    let tags = catalog
        .and_then(|v| v.lookup(&instance))
        .map(|i| i.tags.as_slice());
    let rule = authorize_on_call(
        &policy.rules,
        &req.authority,
        &instance,
        &region,
        tags,
        on_call,
    )
    .map_err(fail)?;
    limits
        .check(&req.actor.key(), &instance)
        .map_err(|l| fail(Refusal::Limited(l)))?;
    Ok(Approved {
        actor: req.actor.clone(),
        authority: req.authority.clone(),
        guild: req.guild,
        channel: req.channel,
        instance,
        region,
        reason,
        rule,
        audit_seq: 0,
    })
}

/// The allowlist check alone, also used to re-check an approval against a reloaded policy right
/// before Tencent is called. `tags`: the instance's tags as the catalog saw them (`None`: it
/// cannot vouch, so no tag rule matches).
pub fn authorize(
    rules: &[Rule],
    authority: &Authority,
    instance: &InstanceId,
    region: &Region,
    tags: Option<&[(String, String)]>,
) -> Result<Option<usize>, Refusal> {
    authorize_on_call(rules, authority, instance, region, tags, &OnCall::NoSource)
}

/// [`authorize`], with what the on-call cache says of the member now.
pub fn authorize_on_call(
    rules: &[Rule],
    authority: &Authority,
    instance: &InstanceId,
    region: &Region,
    tags: Option<&[(String, String)]>,
    on_call: &OnCall,
) -> Result<Option<usize>, Refusal> {
    let is_on = matches!(on_call, OnCall::On(_));
    match authority {
        Authority::LocalCredentials => Ok(None),
        Authority::Roles(roles) => {
            match access::authorize_on_call(rules, roles, instance, region, tags, is_on) {
                access::Decision::Allowed { rule } => Ok(Some(rule)),
                access::Decision::NotOnCall { .. } => Err(Refusal::NotOnCall {
                    instance: instance.clone(),
                    region: region.clone(),
                    on_call: Box::new(on_call.clone()),
                }),
                access::Decision::Denied {
                    would_allow,
                    needs_catalog,
                } => Err(Refusal::Denied {
                    instance: instance.clone(),
                    region: region.clone(),
                    would_allow,
                    needs_tags: needs_catalog
                        .iter()
                        .filter_map(|i| rules.get(*i))
                        .map(Rule::tags_text)
                        .collect(),
                }),
            }
        }
    }
}

/// Trims a reason and turns control characters into spaces; an empty reason is no reason.
pub fn clean_reason(reason: Option<&str>) -> Option<String> {
    let r: String = reason?
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let r = r.trim();
    (!r.is_empty()).then(|| r.to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::Actor;
    use crate::ids::Snowflake;

    const ONCALL: u64 = 555000000000000001;
    const WEB: u64 = 555000000000000002;
    const GUILD: u64 = 800000000000000001;

    fn sf(n: u64) -> Snowflake {
        Snowflake::new(n).unwrap()
    }

    fn policy(require_reason: bool) -> Policy {
        Policy {
            rules: vec![
                Rule {
                    roles: vec![sf(ONCALL)],
                    instances: vec!["*".into()],
                    regions: None,
                    tags: vec![],
                    gate: Default::default(),
                },
                Rule {
                    roles: vec![sf(WEB)],
                    instances: vec!["ins-web*".into()],
                    regions: Some(vec![Region::parse("ap-guangzhou").unwrap()]),
                    tags: vec![],
                    gate: Default::default(),
                },
            ],
            regions: vec![
                Region::parse("ap-guangzhou").unwrap(),
                Region::parse("ap-shanghai-fsi").unwrap(),
            ],
            require_reason,
            guilds: vec![sf(GUILD)],
            grant_for: std::time::Duration::from_secs(600),
            links_per_grant: 3,
            tencent: None,
            approvals: None,
        }
    }

    /// Limits that allow everything, or refuse with the given answer.
    struct Limits(Option<Limited>);
    impl LimitView for Limits {
        fn check(&self, _: &str, _: &InstanceId) -> Result<(), Limited> {
            self.0.map_or(Ok(()), Err)
        }
    }
    const OPEN: Limits = Limits(None);

    fn member(roles: &[u64], instance: &str) -> Request {
        Request {
            actor: Actor::Discord {
                id: 42,
                name: "alice".into(),
            },
            authority: Authority::Roles(roles.iter().map(|r| sf(*r)).collect()),
            guild: Some(sf(GUILD)),
            channel: Some(sf(900)),
            instance: instance.into(),
            region: None,
            reason: None,
        }
    }

    fn refusal(d: Decision) -> Rejection {
        match d {
            Decision::Refuse(r) => *r,
            Decision::Approve(a) => panic!("approved: {a:?}"),
        }
    }

    fn approved(d: Decision) -> Approved {
        match d {
            Decision::Approve(a) => *a,
            Decision::Refuse(r) => panic!("refused: {}", r.refusal),
        }
    }

    #[test]
    fn a_member_with_a_matching_role_is_approved_by_that_rule() {
        let a = approved(decide(
            &policy(false),
            &OPEN,
            &member(&[WEB], "ins-web00001"),
        ));
        assert_eq!((a.rule, a.region.as_str()), (Some(1), "ap-guangzhou"));
        let a = approved(decide(
            &policy(false),
            &OPEN,
            &member(&[ONCALL], "ins-a1b2c3d4"),
        ));
        assert_eq!(a.rule, Some(0));
    }

    #[test]
    fn requests_from_outside_the_served_servers_are_refused_first() {
        let mut req = member(&[ONCALL], "not an id");
        req.guild = None;
        assert!(matches!(
            refusal(decide(&policy(false), &OPEN, &req)).refusal,
            Refusal::NotInGuild
        ));
        req.guild = Some(sf(GUILD + 98));
        assert!(matches!(
            refusal(decide(&policy(false), &OPEN, &req)).refusal,
            Refusal::OtherGuild
        ));
    }

    #[test]
    fn local_credentials_need_no_guild_and_no_rule_but_are_limited() {
        let mut req = member(&[], "ins-a1b2c3d4");
        req.authority = Authority::LocalCredentials;
        req.guild = None;
        assert_eq!(approved(decide(&policy(false), &OPEN, &req)).rule, None);
        let limited = Limits(Some(Limited::User {
            retry_after: Duration::from_secs(5),
        }));
        assert!(matches!(
            refusal(decide(&policy(false), &limited, &req)).refusal,
            Refusal::Limited(Limited::User { .. })
        ));
    }

    #[test]
    fn a_malformed_instance_is_refused_with_nothing_parsed() {
        let r = refusal(decide(&policy(false), &OPEN, &member(&[ONCALL], "ins-ABC")));
        assert!(matches!(r.refusal, Refusal::BadInstance(_)));
        assert_eq!((r.instance, r.region), (None, None));
    }

    #[test]
    fn regions_default_to_the_first_and_must_be_served() {
        let mut req = member(&[ONCALL], "ins-a1b2c3d4");
        req.region = Some("  ap-shanghai-fsi ".into());
        assert_eq!(
            approved(decide(&policy(false), &OPEN, &req))
                .region
                .as_str(),
            "ap-shanghai-fsi"
        );
        req.region = Some("eu-frankfurt".into());
        let r = refusal(decide(&policy(false), &OPEN, &req));
        assert!(
            matches!(r.refusal, Refusal::RegionNotServed(..)),
            "{}",
            r.refusal
        );
        assert!(crate::discord::refusals::say(&r.refusal).contains("ap-guangzhou, ap-shanghai-fsi"));
        assert_eq!(r.instance.unwrap().as_str(), "ins-a1b2c3d4");
        req.region = Some("../etc".into());
        assert!(matches!(
            refusal(decide(&policy(false), &OPEN, &req)).refusal,
            Refusal::BadRegion { .. }
        ));
    }

    #[test]
    fn reasons_are_cleaned_bounded_and_required_when_configured() {
        let mut req = member(&[ONCALL], "ins-a1b2c3d4");
        assert!(matches!(
            refusal(decide(&policy(true), &OPEN, &req)).refusal,
            Refusal::ReasonRequired
        ));
        req.reason = Some(" \n\t ".into());
        assert!(matches!(
            refusal(decide(&policy(true), &OPEN, &req)).refusal,
            Refusal::ReasonRequired
        ));
        req.reason = Some("deploy".into());
        assert!(matches!(
            refusal(decide(&policy(true), &OPEN, &req)).refusal,
            Refusal::ReasonTooShort
        ));
        // Short is fine when no reason is required.
        assert!(matches!(
            decide(&policy(false), &OPEN, &req),
            Decision::Approve(_)
        ));
        // Eight characters a reader cannot see, or two letters padded out, are not a reason.
        for hidden in ["\u{200b}".repeat(8), "a       b".to_owned()] {
            req.reason = Some(hidden);
            assert!(matches!(
                refusal(decide(&policy(true), &OPEN, &req)).refusal,
                Refusal::ReasonTooShort
            ));
        }
        req.reason = Some("x".repeat(MAX_REASON_CHARS + 1));
        let r = refusal(decide(&policy(false), &OPEN, &req));
        assert!(matches!(r.refusal, Refusal::ReasonTooLong));
        assert!(r.region.is_some());
        req.reason = Some("INC-42\ndisk full".into());
        assert_eq!(
            approved(decide(&policy(true), &OPEN, &req))
                .reason
                .as_deref(),
            Some("INC-42 disk full")
        );
    }

    #[test]
    fn denied_names_the_roles_that_would_allow() {
        let r = refusal(decide(
            &policy(false),
            &OPEN,
            &member(&[WEB], "ins-db000001"),
        ));
        match &r.refusal {
            Refusal::Denied { would_allow, .. } => assert_eq!(would_allow, &[sf(ONCALL)]),
            other => panic!("{other}"),
        }
        assert!(crate::discord::refusals::say(&r.refusal).contains(&format!("<@&{ONCALL}>")));
        let mut p = policy(false);
        p.rules.remove(0);
        let r = refusal(decide(&p, &OPEN, &member(&[], "ins-db000001")));
        assert!(crate::discord::refusals::say(&r.refusal).contains("no rule allows"));
    }

    #[test]
    fn limits_are_checked_only_after_authorization() {
        let limited = Limits(Some(Limited::Instance {
            retry_after: Duration::from_millis(1500),
        }));
        // A denied member hears "denied", not "limited".
        assert!(matches!(
            refusal(decide(
                &policy(false),
                &limited,
                &member(&[], "ins-a1b2c3d4")
            ))
            .refusal,
            Refusal::Denied { .. }
        ));
        let r = refusal(decide(
            &policy(false),
            &limited,
            &member(&[ONCALL], "ins-a1b2c3d4"),
        ));
        assert!(matches!(
            r.refusal,
            Refusal::Limited(Limited::Instance { .. })
        ));
        assert!(
            crate::discord::refusals::say(&r.refusal).contains("2 seconds"),
            "{}",
            r.refusal
        );
    }
}
