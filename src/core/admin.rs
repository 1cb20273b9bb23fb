//! `/vncadmin`: who may use it (a role in `[approvals] admin_roles`, as Discord gives the
//! member's roles at each use), what it lists (live grants and pending requests), and revoking
//! grants. A revoked grant's `ended` record has the code `revoked` and the admin as its actor.
//! Every refused use is recorded.

use std::time::SystemTime;

use crate::audit::{Actor, Entry, Event};
use crate::core::grants::Extension;
use crate::core::{Core, EndWhy, Grant};
use crate::ids::Snowflake;
use crate::tencent::Console;

/// Why a use of `/vncadmin` was refused; each is recorded with its code. The sentences live
/// with the adapter (src/discord/admin.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminRefusal {
    /// The member holds none of `admin_roles` (or none are configured, or it came from a
    /// server this bot does not serve).
    NotAdmin,
    /// Discord could not give the member's roles now: never act on stale ones.
    RolesUnavailable,
    /// No grant has this id.
    UnknownGrant(u64),
    /// The grant has ended already.
    GrantEnded(u64),
    /// The member holds no live grant.
    NoGrants(u64),
    /// Neither a grant nor a member was given (or both).
    NoTarget,
    /// The journal could not be written.
    Audit(String),
}

impl AdminRefusal {
    /// The code of its journal record.
    pub fn code(&self) -> &'static str {
        match self {
            AdminRefusal::NotAdmin => "not_admin",
            AdminRefusal::RolesUnavailable => "roles_unavailable",
            AdminRefusal::UnknownGrant(_) => "unknown_grant",
            AdminRefusal::GrantEnded(_) => "grant_ended",
            AdminRefusal::NoGrants(_) => "no_live_grant",
            AdminRefusal::NoTarget => "no_target",
            AdminRefusal::Audit(_) => "audit_unavailable",
        }
    }

    fn event(&self) -> Event {
        match self {
            AdminRefusal::NotAdmin => Event::Denied,
            _ => Event::Invalid,
        }
    }
}

/// Whether roles (fetched afresh; `None`: Discord could not say) include an admin role. Pure.
pub fn check_admin(
    admin_roles: &[Snowflake],
    roles: Option<&[Snowflake]>,
) -> Result<(), AdminRefusal> {
    if admin_roles.is_empty() {
        return Err(AdminRefusal::NotAdmin);
    }
    let roles = roles.ok_or(AdminRefusal::RolesUnavailable)?;
    if roles.iter().any(|r| admin_roles.contains(r)) {
        Ok(())
    } else {
        Err(AdminRefusal::NotAdmin)
    }
}

/// What `revoke` ends: one grant, or every live grant of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Grant(u64),
    Member(u64),
}

/// A live grant as `/vncadmin grants` lists it.
#[derive(Debug, Clone)]
pub struct LiveGrant {
    pub grant: Grant,
    pub links: u32,
    pub break_glass: bool,
    pub extended: bool,
}

impl<C: Console> Core<C> {
    /// Admits a use of `/vncadmin` by `admin` in `guild`, holding `roles` as Discord gives them
    /// now. A refusal is recorded.
    pub async fn admit_admin(
        &self,
        admin: &Actor,
        guild: Option<Snowflake>,
        roles: Option<Vec<Snowflake>>,
    ) -> Result<(), AdminRefusal> {
        let policy = self.policy();
        let admin_roles = policy
            .approvals
            .as_ref()
            .map(|a| a.admin_roles.as_slice())
            .unwrap_or_default();
        let checked = match guild {
            Some(g) if policy.guilds.contains(&g) => check_admin(admin_roles, roles.as_deref()),
            _ => Err(AdminRefusal::NotAdmin),
        };
        match checked {
            Ok(()) => Ok(()),
            Err(r) => Err(self.refuse_admin(admin, guild, r).await),
        }
    }

    /// Records a refused use of `/vncadmin`, and returns the refusal.
    pub async fn refuse_admin(
        &self,
        admin: &Actor,
        guild: Option<Snowflake>,
        refusal: AdminRefusal,
    ) -> AdminRefusal {
        let refers_to = match refusal {
            AdminRefusal::GrantEnded(g) => Some(g),
            _ => None,
        };
        let entry = Entry {
            guild: guild.map(Snowflake::get),
            code: Some(refusal.code().to_owned()),
            refers_to,
            ..Entry::default()
        };
        match self.append(refusal.event(), admin, entry).await {
            Ok(_) => refusal,
            Err(e) => AdminRefusal::Audit(e.to_string()),
        }
    }

    /// Marks a grant as opened by break-glass: `/vncadmin grants` says so, and it has no
    /// Extend (an emergency window is not stretched; the member may ask again, counted, or
    /// through approvers). A rebuilt grant is marked from its `granted` record referring to a
    /// `break_glass` one.
    pub fn mark_break_glass(&self, id: u64) {
        if let Some(s) = self.grants.slots().get_mut(&id) {
            s.break_glass = true;
            s.extension = Extension::Used;
        }
    }

    /// Grants whose window is open now, soonest end first.
    pub fn live_grant_list(&self) -> Vec<LiveGrant> {
        let now: SystemTime = self.clock.now();
        let mut live: Vec<LiveGrant> = self
            .grants
            .slots()
            .values()
            .filter(|s| s.is_live(now))
            .map(|s| LiveGrant {
                grant: s.grant.clone(),
                links: s.links,
                break_glass: s.break_glass,
                extended: s.extension != Extension::Available,
            })
            .collect();
        live.sort_by_key(|g| (g.grant.until, g.grant.id));
        live
    }

    /// `revoke`: ends the grant, or every live grant of the member, as `admin` (who has been
    /// admitted). Each is recorded `ended` with the code `revoked` and the admin as actor; the
    /// holders' DMs are edited from the [`crate::core::GrantEvent::Ended`] events.
    pub async fn revoke(
        &self,
        admin: &Actor,
        guild: Option<Snowflake>,
        target: Target,
    ) -> Result<Vec<Grant>, AdminRefusal> {
        let Actor::Discord { id: by, .. } = admin else {
            return Err(AdminRefusal::NotAdmin);
        };
        let now = self.clock.now();
        let ids: Result<Vec<u64>, AdminRefusal> = {
            let slots = self.grants.slots();
            match target {
                Target::Grant(id) => match slots.get(&id) {
                    None => Err(AdminRefusal::UnknownGrant(id)),
                    Some(s) if !s.is_live(now) => Err(AdminRefusal::GrantEnded(id)),
                    Some(_) => Ok(vec![id]),
                },
                Target::Member(user) => {
                    let mut ids: Vec<u64> = slots
                        .values()
                        .filter(|s| s.grant.user == user && s.is_live(now))
                        .map(|s| s.grant.id)
                        .collect();
                    ids.sort_unstable();
                    if ids.is_empty() {
                        Err(AdminRefusal::NoGrants(user))
                    } else {
                        Ok(ids)
                    }
                }
            }
        };
        let ids = match ids {
            Ok(ids) => ids,
            Err(r) => return Err(self.refuse_admin(admin, guild, r).await),
        };
        let mut ended = Vec::new();
        for id in ids {
            match self.end_grant(id, admin, EndWhy::Revoked { by: *by }).await {
                Ok(Some(g)) => ended.push(g),
                // Ended meanwhile (Done, its window): nothing to revoke.
                Ok(None) => {}
                Err(e) => return Err(AdminRefusal::Audit(e.to_string())),
            }
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sf(n: u64) -> Snowflake {
        Snowflake::new(n).unwrap()
    }

    #[test]
    fn check_admin_branch_by_branch() {
        let admins = [sf(7)];
        assert_eq!(check_admin(&admins, Some(&[sf(3), sf(7)])), Ok(()));
        assert_eq!(
            check_admin(&admins, Some(&[sf(3)])),
            Err(AdminRefusal::NotAdmin)
        );
        assert_eq!(
            check_admin(&admins, None),
            Err(AdminRefusal::RolesUnavailable)
        );
        // No admin roles configured: nobody, whatever their roles.
        assert_eq!(
            check_admin(&[], Some(&[sf(7)])),
            Err(AdminRefusal::NotAdmin)
        );
        assert_eq!(check_admin(&[], None), Err(AdminRefusal::NotAdmin));
    }
}
