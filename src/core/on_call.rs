//! The core's side of on-call rules: what the cache says of a member, which grants rest on it,
//! the evidence journaled with them, and how a shift's end bounds a grant.

use std::sync::Arc;
use std::time::SystemTime;

use super::{Core, Refusal};
use crate::access::Gate;
use crate::audit::{Actor, OnCallEvidence};
use crate::oncall::{OnCall, OnCallSource, Shift};
use crate::tencent::Console;

impl<C: Console> Core<C> {
    /// Asks `source` who is on call: `on_call` rules match only while the member is.
    pub fn with_oncall(mut self, source: Arc<dyn OnCallSource>) -> Self {
        self.oncall = Some(source);
        self
    }

    /// The on-call source, when `[oncall]` is configured.
    pub fn oncall(&self) -> Option<&Arc<dyn OnCallSource>> {
        self.oncall.as_ref()
    }

    /// What the cache says of this actor now (`NoSource` without `[oncall]`, and for the local
    /// user, whom no rule applies to).
    pub(crate) fn on_call_of(&self, actor: &Actor) -> OnCall {
        match (&self.oncall, actor) {
            (Some(cache), Actor::Discord { id, .. }) => cache.lookup(*id),
            _ => OnCall::NoSource,
        }
    }
}

/// The shift a grant under `gate` rests on, given what the cache said: an `on_call` rule's
/// always (it matched, so the member is on call), an `on_call_skips_approval` rule's when the
/// member is on call. `None`: the grant does not depend on who is on call.
pub(crate) fn basis<'a>(gate: &Gate, on_call: &'a OnCall) -> Option<&'a Shift> {
    (gate.on_call || gate.on_call_skips_approval)
        .then(|| on_call.shift())
        .flatten()
}

/// The evidence of an answer, as journaled.
pub(crate) fn evidence(on_call: &OnCall) -> Option<OnCallEvidence> {
    on_call.evidence()
}

/// A grant's end: the window's, or the shift's if that comes first.
pub(crate) fn capped(until: SystemTime, shift: Option<&Shift>) -> SystemTime {
    match shift.and_then(|s| s.end) {
        Some(end) => until.min(end),
        None => until,
    }
}

/// The press refusal for a grant whose member is no longer on call.
pub(crate) fn shift_ended(g: &super::Grant, on_call: OnCall) -> Refusal {
    Refusal::ShiftEnded {
        instance: g.instance.clone(),
        region: g.region.clone(),
        on_call: Box::new(on_call),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn shift(end: Option<SystemTime>) -> OnCall {
        OnCall::On(Shift {
            policy: "P1".into(),
            level: 1,
            user: "U1".into(),
            start: SystemTime::UNIX_EPOCH,
            end,
        })
    }

    #[test]
    fn which_grants_rest_on_a_shift_and_how_it_bounds_them() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let soon = now + Duration::from_secs(60);
        let later = now + Duration::from_secs(600);
        let on = shift(Some(soon));
        let plain = Gate::default();
        assert!(basis(&plain, &on).is_none());
        let rule = Gate {
            on_call: true,
            ..Gate::default()
        };
        assert_eq!(capped(later, basis(&rule, &on)), soon);
        assert_eq!(capped(later, basis(&rule, &shift(None))), later);
        let skip = Gate {
            on_call_skips_approval: true,
            ..Gate::default()
        };
        assert!(basis(&skip, &on).is_some());
        assert!(basis(&skip, &OnCall::Off { max_level: 1 }).is_none());
        assert_eq!(evidence(&on).unwrap().status, "on_call");
        assert!(evidence(&OnCall::NoSource).is_none());
    }

    #[test]
    fn an_on_call_rule_matches_only_while_on_call_and_another_rule_still_can() {
        use crate::access::Rule;
        use crate::core::decision::authorize_on_call;
        use crate::core::Authority;
        use crate::ids::{InstanceId, Region, Snowflake};

        let sf = |n| Snowflake::new(n).unwrap();
        let rule = |role, on_call| Rule {
            roles: vec![sf(role)],
            instances: vec!["*".into()],
            regions: None,
            tags: vec![],
            gate: Gate {
                on_call,
                ..Gate::default()
            },
        };
        let (id, gz) = (
            InstanceId::parse("ins-a1b2c3d4").unwrap(),
            Region::parse("ap-guangzhou").unwrap(),
        );
        let rules = vec![rule(1, true), rule(2, false)];
        let ask = |roles: &[u64], oc: &OnCall| {
            authorize_on_call(
                &rules,
                &Authority::Roles(roles.iter().map(|r| sf(*r)).collect()),
                &id,
                &gz,
                None,
                oc,
            )
        };
        let on = shift(None);
        assert_eq!(ask(&[1], &on).unwrap(), Some(0));
        for off in [
            OnCall::Off { max_level: 1 },
            OnCall::NotMapped,
            OnCall::Unavailable { last_ok: None },
            OnCall::NoSource,
        ] {
            match ask(&[1], &off) {
                Err(Refusal::NotOnCall { on_call, .. }) => assert_eq!(*on_call, off),
                other => panic!("{other:?}"),
            }
            // A plain rule for another of the member's roles still opens it.
            assert_eq!(ask(&[1, 2], &off).unwrap(), Some(1));
        }
        // Without the role, on call or not, it is a plain denial.
        assert!(matches!(ask(&[3], &on), Err(Refusal::Denied { .. })));
    }
}
