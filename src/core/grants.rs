//! Grants: `/vnc` opens a window, and each press on **Open console** mints a fresh link, so the
//! link's 15 seconds start when the member is there to use it.
//!
//! A grant is identified by the `seq` of its `granted` record; that number is all a button's
//! `custom_id` carries. Every press, refused or not, is recorded and refers to its grant. Grants
//! are rebuilt from the journal at start, so buttons keep working across a restart.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::decision::authorize;
use super::{Approved, Authority, Core, Outcome, Refusal, Request};
use crate::audit::{read_records, Actor, Entry, Event};
use crate::ids::{InstanceId, Region, Snowflake};
use crate::limits::{Limited, Spend};
use crate::metrics::METRICS;
use crate::tencent::Console;

/// How long after another member's link a press is told about it.
pub const HEADS_UP_WINDOW: Duration = Duration::from_secs(120);
/// The longest window any config allows (`[grants] minutes` is at most 60).
const MAX_GRANT: Duration = Duration::from_secs(60 * 60);
/// How long ended grants are remembered (so a late press hears "ended", not "not valid").
const REMEMBER_ENDED: Duration = Duration::from_secs(24 * 3600);

/// A window of console access for one member and one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The `seq` of the `granted` record.
    pub id: u64,
    /// The holder: only they may press its buttons.
    pub user: u64,
    pub name: String,
    pub guild: Snowflake,
    pub instance: InstanceId,
    pub region: Region,
    pub reason: Option<String>,
    pub until: SystemTime,
    /// The DM (channel, message) that carries the buttons, once sent.
    pub dm: Option<(u64, u64)>,
}

impl Grant {
    pub fn holder(&self) -> Actor {
        Actor::Discord {
            id: self.user,
            name: self.name.clone(),
        }
    }

    pub fn is_over(&self, now: SystemTime) -> bool {
        now >= self.until
    }
}

/// Why a grant ended; the code of its `ended` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndWhy {
    /// The member pressed Done.
    Done,
    /// The window ran out.
    Expired,
    /// A press found the member's roles no longer allow the instance.
    RoleRemoved,
    /// The DM with the buttons could not be sent.
    DmFailed,
    /// A config reload stopped serving the grant's region.
    RegionDropped,
}

impl EndWhy {
    pub fn code(self) -> &'static str {
        match self {
            EndWhy::Done => "done",
            EndWhy::Expired => "expired",
            EndWhy::RoleRemoved => "role_removed",
            EndWhy::DmFailed => "dm_failed",
            EndWhy::RegionDropped => "region_not_served",
        }
    }
}

/// Another member minted a link for the same instance a moment ago.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadsUp {
    pub user: u64,
    pub ago: Duration,
}

/// A link minted by a press.
#[derive(Debug)]
pub struct Minted {
    pub issued: super::Issued,
    pub grant: Grant,
    pub heads_up: Option<HeadsUp>,
}

struct Slot {
    grant: Grant,
    links: u32,
    pressing: bool,
    ended: bool,
}

#[derive(Default)]
pub(crate) struct Grants {
    slots: Mutex<HashMap<u64, Slot>>,
    /// Instance → who minted its last link, and when.
    recent: Mutex<HashMap<InstanceId, (u64, SystemTime)>>,
}

impl Grants {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A press being served: the grant is marked busy until this is dropped, so two presses at once
/// never mint two links for one press.
pub struct Press<'a> {
    grants: &'a Grants,
    pub grant: Grant,
    presser: Actor,
}

impl Drop for Press<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.grants.slots().get_mut(&self.grant.id) {
            s.pressing = false;
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

impl<C: Console> Core<C> {
    /// `/vnc`: decides as for a link (the member's limit counts it), then records a `granted`
    /// record with `until`. No Tencent call.
    pub async fn grant(&self, req: Request) -> Result<Grant, Refusal> {
        let Actor::Discord { id: user, name } = req.actor.clone() else {
            // Grants are for Discord members; `vncbot url` mints at once.
            return Err(Refusal::NotInGuild);
        };
        let a = self.admit(&req, Spend::Member).await?;
        let guild = a.guild.ok_or(Refusal::NotInGuild)?;
        let until = SystemTime::now() + self.policy().grant_for;
        let id = self
            .record(
                Event::Granted,
                &req,
                Some(&a.instance),
                Some(&a.region),
                Entry {
                    rule: a.rule,
                    until: Some(rfc3339(until)),
                    ..Entry::default()
                },
            )
            .await
            .map_err(Refusal::AuditUnavailable)?;
        let grant = Grant {
            id,
            user,
            name,
            guild,
            instance: a.instance,
            region: a.region,
            reason: a.reason,
            // Whole seconds, as the journal keeps it, so a rebuilt grant is the same grant.
            until: parse_rfc3339(&rfc3339(until)).unwrap_or(until),
            dm: None,
        };
        self.grants.slots().insert(
            id,
            Slot {
                grant: grant.clone(),
                links: 0,
                pressing: false,
                ended: false,
            },
        );
        METRICS.command(Outcome::Granted.code());
        Ok(grant)
    }

    /// Records the DM that carries a grant's buttons, or that it could not be sent (which ends
    /// the grant: nobody could press its buttons).
    pub async fn record_grant_dm(
        &self,
        grant: &Grant,
        dm: Result<(u64, u64), Outcome>,
    ) -> Result<(), Refusal> {
        let (event, code, channel, message) = match &dm {
            Ok((c, m)) => (Event::Delivered, None, Some(*c), Some(*m)),
            Err(o) => (Event::DmFailed, Some(o.code().to_owned()), None, None),
        };
        if let Ok(pair) = dm {
            if let Some(s) = self.grants.slots().get_mut(&grant.id) {
                s.grant.dm = Some(pair);
            }
        }
        self.journal
            .append(
                event,
                &grant.holder(),
                Entry {
                    channel,
                    message,
                    code,
                    instance: Some(grant.instance.to_string()),
                    region: Some(grant.region.to_string()),
                    refers_to: Some(grant.id),
                    ..Entry::default()
                },
            )
            .await
            .map_err(Refusal::AuditUnavailable)?;
        if dm.is_err() {
            self.end_grant(grant.id, &grant.holder(), EndWhy::DmFailed)
                .await?;
        }
        Ok(())
    }

    /// Records a refused press (and counts it in the metrics).
    async fn refuse_press(
        &self,
        presser: &Actor,
        grant: Option<&Grant>,
        refers_to: Option<u64>,
        refusal: Refusal,
    ) -> Refusal {
        // Refused presses count against the member's refusal budget, as refused requests do:
        // past it they are answered from memory and recorded as one count.
        let key = presser.key();
        {
            let limits = self.limits();
            let mut g = limits.lock();
            if let Err(retry_after) = g.check_refusal(&key) {
                drop(g);
                self.suppress(&key, presser, grant.map(|g| g.guild));
                return Refusal::TooManyRefusals { retry_after };
            }
            g.take_refusal(&key);
        }
        let outcome = refusal.outcome();
        METRICS.command(outcome.code());
        let entry = Entry {
            code: Some(outcome.code().to_owned()),
            instance: grant.map(|g| g.instance.to_string()),
            region: grant.map(|g| g.region.to_string()),
            refers_to,
            ..Entry::default()
        };
        match self.journal.append(outcome.event(), presser, entry).await {
            Ok(_) => refusal,
            Err(e) => Refusal::AuditUnavailable(e),
        }
    }

    /// A press on a button whose `custom_id` is not one of ours: recorded, never acted on.
    pub async fn refuse_button(&self, presser: &Actor) -> Refusal {
        self.refuse_press(presser, None, None, Refusal::UnknownGrant)
            .await
    }

    /// First half of a press on Open console: the grant exists, is live, the presser holds it,
    /// it has links left and no other press of it is minting. Needs no Discord call, so a
    /// forged or foreign press costs nothing more.
    pub async fn begin_press(&self, id: u64, presser: &Actor) -> Result<Press<'_>, Refusal> {
        let now = SystemTime::now();
        let links_per_grant = self.policy().links_per_grant;
        let checked = {
            let mut slots = self.grants.slots();
            match slots.get_mut(&id) {
                None => Err((None, Refusal::UnknownGrant)),
                Some(s) if s.ended || s.grant.is_over(now) => {
                    Err((Some(s.grant.clone()), Refusal::GrantEnded))
                }
                Some(s) if !matches!(presser, Actor::Discord { id, .. } if *id == s.grant.user) => {
                    Err((Some(s.grant.clone()), Refusal::NotHolder))
                }
                Some(s) if s.links >= links_per_grant => {
                    Err((Some(s.grant.clone()), Refusal::LinksUsed(links_per_grant)))
                }
                Some(s) if s.pressing => Err((Some(s.grant.clone()), Refusal::PressInProgress)),
                Some(s) => {
                    s.pressing = true;
                    Ok(s.grant.clone())
                }
            }
        };
        match checked {
            Ok(grant) => Ok(Press {
                grants: &self.grants,
                grant,
                presser: presser.clone(),
            }),
            Err((grant, refusal)) => {
                // A number from a forged button names nothing: only a real grant is referred to.
                let refers_to = grant.as_ref().map(|g| g.id);
                Err(self
                    .refuse_press(presser, grant.as_ref(), refers_to, refusal)
                    .await)
            }
        }
    }

    /// Second half of a press: the member's roles as Discord gives them now (`None` when
    /// Discord could not be asked: never mint on stale roles), re-authorized against the live
    /// policy; the instance's limit; then `requested`, Tencent, `issued`.
    pub async fn finish_press(
        &self,
        press: Press<'_>,
        roles: Option<Vec<Snowflake>>,
    ) -> Result<Minted, Refusal> {
        let g = &press.grant;
        let Some(roles) = roles else {
            return Err(self
                .refuse_press(
                    &press.presser,
                    Some(g),
                    Some(g.id),
                    Refusal::RolesUnavailable,
                )
                .await);
        };
        let authority = Authority::Roles(roles);
        let policy = self.policy();
        let tags = self
            .catalog_view()
            .and_then(|v| v.lookup(&g.instance).map(|i| i.tags.clone()));
        let decision = if policy.regions.contains(&g.region) {
            authorize(
                &policy.rules,
                &authority,
                &g.instance,
                &g.region,
                tags.as_deref(),
            )
        } else {
            // A reload stopped serving the grant's region: the grant ends, for that reason.
            let refusal = self
                .refuse_press(&press.presser, Some(g), Some(g.id), Refusal::GrantEnded)
                .await;
            self.end_grant(g.id, &press.presser, EndWhy::RegionDropped)
                .await?;
            return Err(refusal);
        };
        let rule = match decision {
            Ok(rule) => rule,
            // Only the catalog's word is missing (a tag rule it cannot vouch for right now):
            // a passing problem, not a lost role; the grant stays.
            Err(denied @ Refusal::Denied { .. }) if matches!(&denied, Refusal::Denied { needs_tags, .. } if !needs_tags.is_empty()) =>
            {
                return Err(self
                    .refuse_press(&press.presser, Some(g), Some(g.id), denied)
                    .await);
            }
            Err(_) => {
                let refusal = Refusal::RoleRemoved {
                    instance: g.instance.clone(),
                    region: g.region.clone(),
                };
                let refusal = self
                    .refuse_press(&press.presser, Some(g), Some(g.id), refusal)
                    .await;
                self.end_grant(g.id, &press.presser, EndWhy::RoleRemoved)
                    .await?;
                return Err(refusal);
            }
        };
        let limited = {
            let limits = self.limits();
            let mut guard = limits.lock();
            let key = press.presser.key();
            match guard.check_spend(&key, &g.instance, Spend::Instance) {
                Ok(()) => {
                    guard.take_spend(&key, &g.instance, Spend::Instance);
                    None
                }
                Err(l) => Some(l),
            }
        };
        if let Some(l) = limited {
            METRICS.limited(match l {
                Limited::User { .. } => "user",
                Limited::Instance { .. } => "instance",
            });
            return Err(self
                .refuse_press(&press.presser, Some(g), Some(g.id), Refusal::Limited(l))
                .await);
        }
        let req = Request {
            actor: press.presser.clone(),
            authority: authority.clone(),
            guild: Some(g.guild),
            channel: None,
            instance: g.instance.to_string(),
            region: Some(g.region.to_string()),
            reason: g.reason.clone(),
        };
        let live = || self.grant_is_live(g.id);
        if !live() {
            return Err(self
                .refuse_press(&press.presser, Some(g), Some(g.id), Refusal::GrantEnded)
                .await);
        }
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
            actor: press.presser.clone(),
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
        let now = SystemTime::now();
        if let Some(s) = self.grants.slots().get_mut(&g.id) {
            s.links += 1;
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

    /// Ends a grant: `Done` only by its holder. `Ok(None)` when it had already ended.
    pub async fn end_grant(
        &self,
        id: u64,
        by: &Actor,
        why: EndWhy,
    ) -> Result<Option<Grant>, Refusal> {
        let ended = {
            let mut slots = self.grants.slots();
            match slots.get_mut(&id) {
                None => Err(None),
                Some(s) if s.ended => Ok(None),
                Some(s)
                    if why == EndWhy::Done
                        && !matches!(by, Actor::Discord { id, .. } if *id == s.grant.user) =>
                {
                    Err(Some(s.grant.clone()))
                }
                Some(s) => {
                    s.ended = true;
                    Ok(Some(s.grant.clone()))
                }
            }
        };
        let grant = match ended {
            Ok(Some(g)) => g,
            Ok(None) => return Ok(None),
            Err(None) => return Err(self.refuse_button(by).await),
            Err(Some(g)) => {
                return Err(self
                    .refuse_press(by, Some(&g), Some(g.id), Refusal::NotHolder)
                    .await)
            }
        };
        let recorded = self
            .journal
            .append(
                Event::Ended,
                by,
                Entry {
                    code: Some(why.code().to_owned()),
                    instance: Some(grant.instance.to_string()),
                    region: Some(grant.region.to_string()),
                    refers_to: Some(grant.id),
                    ..Entry::default()
                },
            )
            .await;
        if let Err(e) = recorded {
            // Memory follows the journal: not ended until `ended` is on disk (a restart would
            // otherwise bring the grant back). Presses fail closed meanwhile anyway.
            if let Some(s) = self.grants.slots().get_mut(&grant.id) {
                s.ended = false;
            }
            return Err(Refusal::AuditUnavailable(e));
        }
        Ok(Some(grant))
    }

    /// Ends a grant whose window has run out (a no-op if it ended otherwise).
    pub async fn expire_grant(&self, id: u64) -> Result<Option<Grant>, Refusal> {
        let bot = Actor::Local {
            user: "vncbot".into(),
        };
        self.end_grant(id, &bot, EndWhy::Expired).await
    }

    /// The grant with this id, live or ended.
    pub fn grant_by_id(&self, id: u64) -> Option<Grant> {
        self.grants.slots().get(&id).map(|s| s.grant.clone())
    }

    /// Whether a grant is live (not ended and within its window).
    pub fn grant_is_live(&self, id: u64) -> bool {
        self.grants
            .slots()
            .get(&id)
            .is_some_and(|s| !s.ended && !s.grant.is_over(SystemTime::now()))
    }

    /// Forgets grants that ended long ago.
    pub fn shrink_grants(&self) {
        let now = SystemTime::now();
        self.grants
            .slots()
            .retain(|_, s| s.grant.until + REMEMBER_ENDED > now);
        let mut recent = self.grants.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|_, (_, at)| now.duration_since(*at).unwrap_or_default() < HEADS_UP_WINDOW);
    }

    /// Rebuilds grants from the journal at start: every `granted` record of the last day, with
    /// its DM, the links it minted and whether it ended. Returns the grants still live and those
    /// whose window ran out while the bot was down (the caller ends them and edits their DMs).
    pub fn rebuild_grants(&self, journal: &Path) -> std::io::Result<(Vec<Grant>, Vec<Grant>)> {
        let now = SystemTime::now();
        let mut slots: HashMap<u64, Slot> = HashMap::new();
        // `requested` seq → its grant, to count `issued` records per grant.
        let mut requested: HashMap<u64, u64> = HashMap::new();
        for record in read_records(journal)? {
            let r = record?;
            let e = &r.entry;
            match r.event {
                Event::Granted => {
                    let Actor::Discord { id: user, name } = r.actor() else {
                        continue;
                    };
                    let parsed = (
                        e.until.as_deref().and_then(parse_rfc3339),
                        e.guild.and_then(Snowflake::new),
                        e.instance
                            .as_deref()
                            .and_then(|i| InstanceId::parse(i).ok()),
                        e.region.as_deref().and_then(|i| Region::parse(i).ok()),
                    );
                    let (Some(until), Some(guild), Some(instance), Some(region)) = parsed else {
                        tracing::warn!(
                            seq = r.seq,
                            "a granted record could not be read back; skipped"
                        );
                        continue;
                    };
                    // The chain is unkeyed: never trust a window longer than any config allows.
                    let written = parse_rfc3339(&r.time).unwrap_or(now);
                    let until = until.min(written + MAX_GRANT);
                    if until + REMEMBER_ENDED < now {
                        continue;
                    }
                    slots.insert(
                        r.seq,
                        Slot {
                            grant: Grant {
                                id: r.seq,
                                user,
                                name,
                                guild,
                                instance,
                                region,
                                reason: e.reason.clone(),
                                until,
                                dm: None,
                            },
                            links: 0,
                            pressing: false,
                            ended: false,
                        },
                    );
                }
                Event::Delivered => {
                    if let (Some(s), Some(c), Some(m)) = (
                        e.refers_to.and_then(|g| slots.get_mut(&g)),
                        e.channel.filter(|c| *c != 0),
                        e.message.filter(|m| *m != 0),
                    ) {
                        s.grant.dm = Some((c, m));
                    }
                }
                Event::Requested => {
                    if let Some(g) = e.refers_to.filter(|g| slots.contains_key(g)) {
                        requested.insert(r.seq, g);
                    }
                }
                Event::Issued => {
                    if let Some(s) = e
                        .refers_to
                        .and_then(|q| requested.get(&q))
                        .and_then(|g| slots.get_mut(g))
                    {
                        s.links += 1;
                    }
                }
                Event::Ended => {
                    if let Some(s) = e.refers_to.and_then(|g| slots.get_mut(&g)) {
                        s.ended = true;
                    }
                }
                _ => {}
            }
        }
        let (mut live, mut lapsed) = (Vec::new(), Vec::new());
        for s in slots.values() {
            if s.ended {
                continue;
            }
            if s.grant.is_over(now) {
                lapsed.push(s.grant.clone());
            } else {
                live.push(s.grant.clone());
            }
        }
        *self.grants.slots() = slots;
        Ok((live, lapsed))
    }
}
