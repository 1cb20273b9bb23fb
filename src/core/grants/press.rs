//! A press on Open console: checked from memory first ([`super::check_press`]), then against the
//! member's roles as Discord gives them now, the limits, and Tencent.

use super::timers::Due;
use super::{check_press, EndWhy, Grant, Grants, HeadsUp, Minted, HEADS_UP_WINDOW};
use crate::audit::{Actor, Entry, Event};
use crate::core::decision::authorize;
use crate::core::{Approved, Authority, Core, Refusal, Request};
use crate::ids::Snowflake;
use crate::limits::Spend;
use crate::tencent::Console;

/// A press being served: the grant is marked busy until this is dropped, so two presses at once
/// never mint two links for one press.
pub struct Press<'a> {
    grants: &'a Grants,
    pub grant: Grant,
    presser: Actor,
    /// The DM message the press was made on (channel, message), as Discord says: where the link
    /// is shown and later scrubbed. Defaults to the grant's DM.
    pub dm: Option<(u64, u64)>,
}

impl Drop for Press<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.grants.slots().get_mut(&self.grant.id) {
            s.pressing = false;
        }
    }
}

impl<C: Console> Core<C> {
    /// Records a refused press (counted in the metrics there).
    pub(crate) async fn refuse_press(
        &self,
        presser: &Actor,
        grant: Option<&Grant>,
        refusal: Refusal,
    ) -> Refusal {
        // Refused presses count against the member's refusal budget, as refused requests do:
        // past it they are answered from memory and recorded as one count.
        let key = presser.key();
        let held_key = key.clone();
        let spent = self
            .limits()
            .with(move |g| {
                g.check_refusal(&held_key)?;
                g.take_refusal(&held_key);
                Ok(())
            })
            .await;
        match spent {
            Err(e) => return Refusal::AuditUnavailable(e.into()),
            Ok(Err(retry_after)) => {
                self.suppress(&key, presser, grant.map(|g| g.guild));
                return Refusal::TooManyRefusals { retry_after };
            }
            Ok(Ok(())) => {}
        }
        let entry = Entry {
            instance: grant.map(|g| g.instance.to_string()),
            region: grant.map(|g| g.region.to_string()),
            // A number from a forged button names nothing: only a real grant is referred to.
            refers_to: grant.map(|g| g.id),
            ..Entry::default()
        };
        match self.note(&refusal.outcome(), presser, entry).await {
            Ok(_) => refusal,
            Err(e) => Refusal::AuditUnavailable(e),
        }
    }

    /// A press on a button whose `custom_id` is not one of ours: recorded, never acted on.
    pub async fn refuse_button(&self, presser: &Actor) -> Refusal {
        self.refuse_press(presser, None, Refusal::UnknownGrant)
            .await
    }

    /// First half of a press on Open console: [`super::check_press`] from memory. Needs no
    /// Discord call, so a forged or foreign press costs nothing more.
    pub async fn begin_press(&self, id: u64, presser: &Actor) -> Result<Press<'_>, Refusal> {
        let now = self.clock.now();
        let policy = self.policy();
        let checked = {
            let mut slots = self.grants.slots();
            match slots.get_mut(&id) {
                None => Err((None, Refusal::UnknownGrant)),
                Some(s) => match check_press(s, presser, now, &policy) {
                    Ok(()) => {
                        s.pressing = true;
                        Ok(s.grant.clone())
                    }
                    Err(refusal) => Err((Some(s.grant.clone()), refusal)),
                },
            }
        };
        match checked {
            Ok(grant) => Ok(Press {
                grants: &self.grants,
                dm: grant.dm,
                grant,
                presser: presser.clone(),
            }),
            Err((grant, refusal)) => Err(self.refuse_press(presser, grant.as_ref(), refusal).await),
        }
    }

    /// Second half of a press: the member's roles as Discord gives them now (`None` when
    /// Discord could not be asked: never mint on stale roles), re-authorized against the live
    /// policy; the limits; then `requested`, Tencent, `issued`. The link's expiry is scheduled:
    /// a [`super::GrantEvent::LinkExpired`] follows in 15 seconds.
    pub async fn finish_press(
        &self,
        press: Press<'_>,
        roles: Option<Vec<Snowflake>>,
    ) -> Result<Minted, Refusal> {
        let g = &press.grant;
        let presser = &press.presser;
        let Some(roles) = roles else {
            return Err(self
                .refuse_press(presser, Some(g), Refusal::RolesUnavailable)
                .await);
        };
        let authority = Authority::Roles(roles);
        let policy = self.policy();
        if !policy.regions.contains(&g.region) {
            // A reload stopped serving the grant's region: the grant ends, for that reason.
            let refusal = self
                .refuse_press(presser, Some(g), Refusal::GrantEnded)
                .await;
            self.end_grant(g.id, presser, EndWhy::RegionDropped).await?;
            return Err(refusal);
        }
        let tags = self
            .catalog_view()
            .and_then(|v| v.lookup(&g.instance).map(|i| i.tags.clone()));
        let rule = match authorize(
            &policy.rules,
            &authority,
            &g.instance,
            &g.region,
            tags.as_deref(),
        ) {
            Ok(rule) => rule,
            // Only the catalog's word is missing (a tag rule it cannot vouch for right now):
            // a passing problem, not a lost role; the grant stays.
            Err(denied @ Refusal::Denied { .. }) if denied.needs_tags() => {
                return Err(self.refuse_press(presser, Some(g), denied).await);
            }
            Err(_) => return Err(self.role_removed(presser, g).await),
        };
        // A press spends the instance's budget and the member's own budget for presses (at the
        // member's rate, apart from their `/vnc` budget): one member pressing over and over
        // cannot use up an instance's budget and lock everyone else out of it.
        let (key, instance) = (format!("press:{}", presser.key()), g.instance.clone());
        let limited = self
            .limits()
            .with(move |guard| {
                let checked = guard.check_spend(&key, &instance, Spend::MemberAndInstance);
                if checked.is_ok() {
                    guard.take_spend(&key, &instance, Spend::MemberAndInstance);
                }
                checked.err()
            })
            .await
            .map_err(|e| Refusal::AuditUnavailable(e.into()))?;
        if let Some(l) = limited {
            self.count_limited(&l);
            return Err(self
                .refuse_press(presser, Some(g), Refusal::Limited(l))
                .await);
        }
        let live = || self.grant_is_live(g.id);
        if !live() {
            return Err(self
                .refuse_press(presser, Some(g), Refusal::GrantEnded)
                .await);
        }
        let req = Request {
            actor: presser.clone(),
            authority: authority.clone(),
            guild: Some(g.guild),
            channel: None,
            instance: g.instance.to_string(),
            region: Some(g.region.to_string()),
            reason: g.reason.clone(),
        };
        let seq = self
            .record(
                Event::Requested,
                &req,
                Some(&g.instance),
                Some(&g.region),
                Entry {
                    rule,
                    refers_to: Some(g.id),
                    ..Entry::default()
                },
            )
            .await
            .map_err(Refusal::AuditUnavailable)?;
        let approved = Approved {
            actor: presser.clone(),
            authority,
            guild: Some(g.guild),
            channel: None,
            instance: g.instance.clone(),
            region: g.region.clone(),
            reason: g.reason.clone(),
            rule,
            audit_seq: seq,
        };
        let issued = self.mint_while(&approved, &live).await?;
        let now = self.clock.now();
        if let Some(s) = self.grants.slots().get_mut(&g.id) {
            s.links += 1;
            if let Some(dm) = press.dm {
                s.grant.dm.get_or_insert(dm);
            }
        }
        if let Some(dm) = press.dm {
            self.timers
                .schedule(issued.expires_at, Due::LinkExpires { grant: g.id, dm });
        }
        let heads_up = {
            let mut recent = self.grants.recent.lock().unwrap_or_else(|e| e.into_inner());
            let before = recent.insert(g.instance.clone(), (g.user, now));
            before.and_then(|(user, at)| {
                let ago = now.duration_since(at).unwrap_or_default();
                (user != g.user && ago < HEADS_UP_WINDOW).then_some(HeadsUp { user, ago })
            })
        };
        Ok(Minted {
            issued,
            grant: g.clone(),
            heads_up,
        })
    }

    /// After Tencent answered and before the link is shown: the member's roles as Discord gives
    /// them now. A link whose holder lost the role while it was being made is discarded
    /// (recorded, with its RequestId) and the grant ends; a link whose holder's roles Discord
    /// cannot give now is discarded too (never shown on stale roles), and the grant stays.
    pub async fn confirm_link(
        &self,
        minted: Minted,
        roles: Option<Vec<Snowflake>>,
    ) -> Result<Minted, Refusal> {
        let g = &minted.grant;
        let refusal = match roles {
            None => Refusal::RolesUnavailable,
            Some(roles) => {
                let tags = self
                    .catalog_view()
                    .and_then(|v| v.lookup(&g.instance).map(|i| i.tags.clone()));
                match authorize(
                    &self.policy().rules,
                    &Authority::Roles(roles),
                    &g.instance,
                    &g.region,
                    tags.as_deref(),
                ) {
                    Ok(_) => return Ok(minted),
                    Err(denied) if denied.needs_tags() => denied,
                    Err(_) => Refusal::RoleRemoved {
                        instance: g.instance.clone(),
                        region: g.region.clone(),
                    },
                }
            }
        };
        let holder = g.holder();
        tracing::warn!(grant = g.id, request_id = %minted.issued.request_id, code = refusal.outcome().code(),
            "a link was made but not shown: the member's roles changed (or could not be read) meanwhile");
        // Recorded whatever the refusal budget says: a link was issued, and its fate is due.
        let entry = Entry {
            instance: Some(g.instance.to_string()),
            region: Some(g.region.to_string()),
            request_id: Some(minted.issued.request_id.clone()),
            refers_to: Some(g.id),
            ..Entry::default()
        };
        self.note(&refusal.outcome(), &holder, entry)
            .await
            .map_err(Refusal::AuditUnavailable)?;
        if let Refusal::RoleRemoved { .. } = refusal {
            self.end_grant(g.id, &holder, EndWhy::RoleRemoved).await?;
        }
        Err(refusal)
    }

    /// The member's roles no longer allow the grant's instance: the press is refused and the
    /// grant ends.
    pub(super) async fn role_removed(&self, presser: &Actor, g: &Grant) -> Refusal {
        let refusal = Refusal::RoleRemoved {
            instance: g.instance.clone(),
            region: g.region.clone(),
        };
        let refusal = self.refuse_press(presser, Some(g), refusal).await;
        match self.end_grant(g.id, presser, EndWhy::RoleRemoved).await {
            Ok(_) => refusal,
            Err(e) => e,
        }
    }
}
