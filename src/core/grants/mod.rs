//! Grants: `/vnc` opens a window, and each press on **Open console** mints a fresh link, so the
//! link's 15 seconds start when the member is there to use it.
//!
//! A grant is identified by the `seq` of its `granted` record; that number is all a button's
//! `custom_id` carries. Every press, refused or not, is recorded and refers to its grant. Grants
//! are rebuilt from the journal at start, so buttons keep working across a restart.
//!
//! The core owns every state change of a grant and every timer ([`timers`]): the window's end and
//! a link's expiry are [`GrantEvent`]s, which adapters subscribe to and only render.

mod extend;
mod lifecycle;
mod press;
mod rebuild;
pub(crate) mod timers;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::broadcast;

use super::{Policy, Refusal};
use crate::audit::Actor;
use crate::ids::{InstanceId, Region, Snowflake};

pub use extend::{ExtendRefusal, Extended, Extending};
pub(crate) use lifecycle::{bot, parse_rfc3339, rfc3339};
pub use press::Press;

/// How a grant's `until` is written in the journal.
#[cfg(test)]
pub(crate) fn rfc3339_for_tests(t: SystemTime) -> String {
    lifecycle::rfc3339(t)
}

/// How long after another member's link a press is told about it.
pub const HEADS_UP_WINDOW: Duration = Duration::from_secs(120);
/// How long ended grants are remembered (so a late press hears "ended", not "not valid").
const REMEMBER_ENDED: Duration = Duration::from_secs(24 * 3600);
/// Grant events an adapter may fall behind by before it misses some (it then re-reads state).
const EVENTS: usize = 1024;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum EndWhy {
    /// The member pressed Done.
    Done,
    /// The window ran out.
    Expired,
    /// A press found the member's roles no longer allow the instance.
    RoleRemoved,
    /// The DM with the buttons could not be sent, or its record could not be written.
    DmFailed,
    /// A config reload stopped serving the grant's region.
    #[strum(serialize = "region_not_served")]
    RegionDropped,
    /// An admin revoked it (`/vncadmin revoke`); `by` is their Discord user ID, also the
    /// `ended` record's actor.
    Revoked { by: u64 },
}

impl EndWhy {
    pub fn code(self) -> &'static str {
        self.into()
    }

    /// Ended by a press, which answers on its own interaction (the DM it was pressed in).
    pub fn answered_by_press(self) -> bool {
        matches!(self, EndWhy::Done | EndWhy::RoleRemoved)
    }
}

/// What became of a grant, for the adapters to render. Never a decision: by the time an event is
/// sent, the core has changed the state and written the record (or failed closed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantEvent {
    /// The grant ended. Its DM should say so, with no buttons.
    Ended { grant: Grant, why: EndWhy },
    /// A link shown in `dm` has expired: put back the grant's buttons (or its end).
    LinkExpired {
        grant: Grant,
        dm: (u64, u64),
        live: bool,
    },
    /// A live grant was rebuilt at start: its DM shows it as it stands (a link that was on
    /// screen when the bot stopped is dead by now).
    Resumed { grant: Grant },
    /// The grant's window was extended (its `until` is the new end): its DM shows the new end
    /// and no Extend button.
    Extended { grant: Grant },
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

/// A grant as the core holds it.
#[derive(Debug, Clone)]
pub(crate) struct GrantState {
    pub grant: Grant,
    /// Links minted so far.
    pub links: u32,
    /// A press is minting right now.
    pub pressing: bool,
    /// Ended in memory; stays so even if its `ended` record could not be written.
    pub ended: bool,
    /// Why it ended, once it has (so a later scrub of its DM says the same).
    pub end_why: Option<EndWhy>,
    /// Whether its one extension is still to be had.
    pub extension: Extension,
    /// Opened by break-glass (the grant's record says so): marked in `/vncadmin grants`.
    pub break_glass: bool,
}

/// A grant's one extension (the Extend button).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Extension {
    /// Not used yet: the DM shows Extend.
    #[default]
    Available,
    /// Its rule needs approval: this request (its `approval_requested` seq) asks for it.
    Asked { request: u64 },
    /// Extended (or asked for and closed): never again.
    Used,
}

impl GrantState {
    fn new(grant: Grant) -> Self {
        Self {
            grant,
            links: 0,
            pressing: false,
            ended: false,
            end_why: None,
            extension: Extension::Available,
            break_glass: false,
        }
    }

    pub(crate) fn is_live(&self, now: SystemTime) -> bool {
        !self.ended && !self.grant.is_over(now)
    }
}

/// Whether `presser` may press Open console on this grant now: it is live, they hold it, it has
/// links left and no other press of it is minting. Pure: the first check of every press.
pub(crate) fn check_press(
    state: &GrantState,
    presser: &Actor,
    now: SystemTime,
    policy: &Policy,
) -> Result<(), Refusal> {
    if !state.is_live(now) {
        return Err(Refusal::GrantEnded);
    }
    if !is_holder(&state.grant, presser) {
        return Err(Refusal::NotHolder);
    }
    if state.links >= policy.links_per_grant {
        return Err(Refusal::LinksUsed(policy.links_per_grant));
    }
    if state.pressing {
        return Err(Refusal::PressInProgress);
    }
    Ok(())
}

fn is_holder(grant: &Grant, who: &Actor) -> bool {
    matches!(who, Actor::Discord { id, .. } if *id == grant.user)
}

/// Every grant the core knows, live or recently ended, and the events about them.
pub(crate) struct Grants {
    slots: Mutex<HashMap<u64, GrantState>>,
    /// Instance → who minted its last link, and when.
    recent: Mutex<HashMap<InstanceId, (u64, SystemTime)>>,
    events: broadcast::Sender<GrantEvent>,
}

impl Default for Grants {
    fn default() -> Self {
        Self {
            slots: Mutex::default(),
            recent: Mutex::default(),
            events: broadcast::channel(EVENTS).0,
        }
    }
}

impl Grants {
    pub(crate) fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<u64, GrantState>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, event: GrantEvent) {
        // Nobody listening (`vncbot url`, unit tests) is not an error.
        let _ = self.events.send(event);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<GrantEvent> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Rule;

    fn grant(until: SystemTime) -> GrantState {
        GrantState::new(Grant {
            id: 7,
            user: 1,
            name: "alice".into(),
            guild: Snowflake::new(800000000000000001).unwrap(),
            instance: InstanceId::parse("ins-running1").unwrap(),
            region: Region::parse("ap-guangzhou").unwrap(),
            reason: None,
            until,
            dm: None,
        })
    }

    fn policy(links: u32) -> Policy {
        Policy {
            rules: Vec::<Rule>::new(),
            regions: vec![],
            require_reason: false,
            guilds: vec![],
            grant_for: Duration::from_secs(600),
            links_per_grant: links,
            tencent: None,
            approvals: None,
        }
    }

    fn member(id: u64) -> Actor {
        Actor::Discord {
            id,
            name: "m".into(),
        }
    }

    #[test]
    fn check_press_branch_by_branch() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let later = now + Duration::from_secs(60);
        let p = policy(2);
        let live = grant(later);
        assert!(check_press(&live, &member(1), now, &p).is_ok());

        let over = grant(now);
        assert!(matches!(
            check_press(&over, &member(1), now, &p),
            Err(Refusal::GrantEnded)
        ));
        let mut ended = grant(later);
        ended.ended = true;
        assert!(matches!(
            check_press(&ended, &member(1), now, &p),
            Err(Refusal::GrantEnded)
        ));
        assert!(matches!(
            check_press(&live, &member(2), now, &p),
            Err(Refusal::NotHolder)
        ));
        let local = Actor::Local { user: "x".into() };
        assert!(matches!(
            check_press(&live, &local, now, &p),
            Err(Refusal::NotHolder)
        ));
        let mut used = grant(later);
        used.links = 2;
        assert!(matches!(
            check_press(&used, &member(1), now, &p),
            Err(Refusal::LinksUsed(2))
        ));
        let mut busy = grant(later);
        busy.pressing = true;
        assert!(matches!(
            check_press(&busy, &member(1), now, &p),
            Err(Refusal::PressInProgress)
        ));
        // An ended grant says so before anything else, even to someone else.
        assert!(matches!(
            check_press(&ended, &member(2), now, &p),
            Err(Refusal::GrantEnded)
        ));
    }

    #[test]
    fn end_codes_are_the_journal_interface() {
        let codes: Vec<&str> = [
            EndWhy::Done,
            EndWhy::Expired,
            EndWhy::RoleRemoved,
            EndWhy::DmFailed,
            EndWhy::RegionDropped,
        ]
        .into_iter()
        .map(EndWhy::code)
        .collect();
        assert_eq!(
            codes,
            [
                "done",
                "expired",
                "role_removed",
                "dm_failed",
                "region_not_served"
            ]
        );
        // Who revoked it is the record's actor, not part of its code.
        assert_eq!(EndWhy::Revoked { by: 9 }.code(), "revoked");
    }
}
