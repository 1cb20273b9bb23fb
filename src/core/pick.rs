//! A name that several instances the member may open carry: instead of a list of IDs to retype,
//! the member is offered those candidates to pick from (a select menu in Discord). The offer is
//! held here, in memory: its number is all the menu's `custom_id` carries, and a pick is honoured
//! only from the member it was offered to, for an instance it offered, within
//! [`OFFER_LIFETIME`]. The pick then goes through `/vnc` as if the ID had been typed, with the
//! same reason: every check and record happens again there.
//!
//! Offers do not survive a restart (the menu then says to run `/vnc` again): they hold no access,
//! only a question.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::decision::may_open;
use super::{Authority, Core, Request};
use crate::audit::{Actor, Entry, Event};
use crate::ids::{InstanceId, Region, Snowflake};
use crate::tencent::Console;

/// How long a menu may be answered: Discord's interaction token lasts 15 minutes.
pub const OFFER_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Offers kept at most; past this the oldest go (their menus say to run `/vnc` again).
const MAX_OFFERS: usize = 10_000;

/// One instance a name may mean.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: InstanceId,
    pub region: Region,
    /// As the catalog has it (untrusted text from the cloud account).
    pub name: String,
    pub state: String,
}

/// What a member was offered to pick from, and what the `/vnc` that asked carried.
#[derive(Debug, Clone)]
pub struct Offer {
    pub user: u64,
    pub guild: Option<Snowflake>,
    pub channel: Option<Snowflake>,
    pub reason: Option<String>,
    pub candidates: Vec<Candidate>,
    pub at: SystemTime,
}

/// Why a pick was refused; each is recorded with its code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickRefusal {
    /// The menu's number names no offer (forged, or from before a restart, or too old).
    Unknown,
    /// Picked by someone other than the member it was offered to.
    NotYours,
    /// A value the offer did not contain (a forged pick).
    NotOffered,
    Audit(String),
}

impl PickRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            PickRefusal::Unknown => "bad_menu",
            PickRefusal::NotYours => "not_your_menu",
            PickRefusal::NotOffered => "bad_menu",
            PickRefusal::Audit(_) => "audit_unavailable",
        }
    }
}

/// Whether `picker` may pick `value` from `offer` now; the candidate picked. Pure.
pub fn check_pick<'a>(
    offer: Option<&'a Offer>,
    picker: u64,
    value: &str,
    now: SystemTime,
) -> Result<&'a Candidate, PickRefusal> {
    let offer = offer
        .filter(|o| now.duration_since(o.at).unwrap_or_default() < OFFER_LIFETIME)
        .ok_or(PickRefusal::Unknown)?;
    if offer.user != picker {
        return Err(PickRefusal::NotYours);
    }
    offer
        .candidates
        .iter()
        .find(|c| c.id.as_str() == value)
        .ok_or(PickRefusal::NotOffered)
}

/// The offers made and not yet taken.
#[derive(Default)]
pub(crate) struct Picks {
    next: AtomicU64,
    offers: Mutex<HashMap<u64, Offer>>,
}

impl Picks {
    fn offers(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Offer>> {
        self.offers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<C: Console> Core<C> {
    /// The instances `req`'s name may mean for its member (as `/vnc` resolves names: in the
    /// region asked for, if any, served, and openable with the member's roles), ordered by
    /// region and ID.
    pub fn name_candidates(&self, req: &Request) -> Vec<Candidate> {
        let policy = self.policy();
        let Some(view) = self.catalog_view() else {
            return Vec::new();
        };
        let region = req
            .region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .and_then(|r| Region::parse(r).ok());
        let allowed = |i: &crate::tencent::Instance| {
            region.as_ref().is_none_or(|r| &i.region == r)
                && policy.regions.contains(&i.region)
                && may_open(&policy.rules, &req.authority, i)
        };
        match view.resolve_name(req.instance.trim(), allowed) {
            crate::tencent::Resolution::Ambiguous(found) => found
                .into_iter()
                .map(|i| Candidate {
                    id: i.id.clone(),
                    region: i.region.clone(),
                    name: i.name.clone(),
                    state: i.state.as_str().to_owned(),
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Holds an offer of `candidates` to `req`'s member; its number goes in the menu.
    pub fn offer_pick(&self, req: &Request, candidates: Vec<Candidate>) -> u64 {
        let Actor::Discord { id: user, .. } = req.actor else {
            return 0;
        };
        let now = self.clock.now();
        let n = self.picks.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut offers = self.picks.offers();
        offers.retain(|_, o| now.duration_since(o.at).unwrap_or_default() < OFFER_LIFETIME);
        if offers.len() >= MAX_OFFERS {
            if let Some(oldest) = offers.keys().min().copied() {
                offers.remove(&oldest);
            }
        }
        offers.insert(
            n,
            Offer {
                user,
                guild: req.guild,
                channel: req.channel,
                reason: req.reason.clone(),
                candidates,
                at: now,
            },
        );
        n
    }

    /// A pick from offer `n` by `picker`, in `guild`, whose roles Discord gave with the pick:
    /// the `/vnc` request it stands for, as if the ID had been typed, with the offer's reason.
    /// The offer is taken. A refused pick is recorded.
    pub async fn take_pick(
        &self,
        n: u64,
        picker: &Actor,
        guild: Option<Snowflake>,
        roles: Vec<Snowflake>,
        value: &str,
    ) -> Result<Request, PickRefusal> {
        let Actor::Discord { id: user, .. } = picker else {
            return Err(PickRefusal::NotYours);
        };
        let now = self.clock.now();
        let checked = {
            let mut offers = self.picks.offers();
            let picked = check_pick(offers.get(&n), *user, value, now)
                .map(|c| (offers.get(&n).cloned(), c.clone()));
            if picked.is_ok() {
                offers.remove(&n);
            }
            picked
        };
        match checked {
            Ok((Some(offer), c)) => Ok(Request {
                actor: picker.clone(),
                authority: Authority::Roles(roles),
                // Where the roles came from; the core checks it is served, as for `/vnc`.
                guild: guild.filter(|g| offer.guild == Some(*g)),
                channel: offer.channel,
                instance: c.id.to_string(),
                region: Some(c.region.to_string()),
                reason: offer.reason,
            }),
            Ok((None, _)) => Err(PickRefusal::Unknown),
            Err(refusal) => {
                let event = match refusal {
                    PickRefusal::NotYours => Event::Denied,
                    _ => Event::Invalid,
                };
                let entry = Entry {
                    code: Some(refusal.code().to_owned()),
                    ..Entry::default()
                };
                match self.append(event, picker, entry).await {
                    Ok(_) => Err(refusal),
                    Err(e) => Err(PickRefusal::Audit(e.to_string())),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(at: SystemTime) -> Offer {
        Offer {
            user: 1,
            guild: None,
            channel: None,
            reason: Some("INC-1".into()),
            candidates: vec![Candidate {
                id: InstanceId::parse("ins-a1b2c3d4").unwrap(),
                region: Region::parse("ap-guangzhou").unwrap(),
                name: "web".into(),
                state: "RUNNING".into(),
            }],
            at,
        }
    }

    #[test]
    fn check_pick_branch_by_branch() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let o = offer(now);
        assert_eq!(
            check_pick(Some(&o), 1, "ins-a1b2c3d4", now).map(|c| c.id.as_str()),
            Ok("ins-a1b2c3d4")
        );
        assert_eq!(
            check_pick(Some(&o), 2, "ins-a1b2c3d4", now),
            Err(PickRefusal::NotYours)
        );
        assert_eq!(
            check_pick(Some(&o), 1, "ins-other001", now),
            Err(PickRefusal::NotOffered)
        );
        assert_eq!(
            check_pick(None, 1, "ins-a1b2c3d4", now),
            Err(PickRefusal::Unknown)
        );
        assert_eq!(
            check_pick(Some(&o), 1, "ins-a1b2c3d4", now + OFFER_LIFETIME),
            Err(PickRefusal::Unknown)
        );
    }
}
