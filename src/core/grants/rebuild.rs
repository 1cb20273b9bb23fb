//! Grants survive a restart: rebuilt from the journal, so the buttons in DMs keep working.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::lifecycle::{bot, parse_rfc3339, rfc3339};
use super::timers::Due;
use super::{EndWhy, Extension, Grant, GrantEvent, GrantState, REMEMBER_ENDED};
use crate::audit::{read_records, Actor, Entry, Event};
use crate::core::approvals::EXTEND_CODE;
use crate::core::Core;
use crate::ids::{InstanceId, Region, Snowflake};
use crate::tencent::Console;

/// The longest window any config allows (`[grants] minutes` is at most 60).
const MAX_GRANT: Duration = Duration::from_secs(60 * 60);

impl<C: Console> Core<C> {
    /// Rebuilds grants from the journal: every `granted` record of the last day, with its DM,
    /// the links it minted and whether it ended. Returns the grants still live and those whose
    /// window ran out while the bot was down. [`Core::resume_grants`] also acts on them.
    pub fn rebuild_grants(&self, journal: &Path) -> std::io::Result<(Vec<Grant>, Vec<Grant>)> {
        let now = self.clock.now();
        let window = self.policy().grant_for;
        let mut slots: HashMap<u64, GrantState> = HashMap::new();
        // `requested` seq → its grant, to count `issued` records per grant.
        let mut requested: HashMap<u64, u64> = HashMap::new();
        // An extension's request → its grant.
        let mut extensions: HashMap<u64, u64> = HashMap::new();
        // `break_glass` records: a `granted` referring to one was opened by break-glass.
        let mut broke_glass: std::collections::HashSet<u64> = std::collections::HashSet::new();
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
                    // The chain is unkeyed, so a record may be forged or its time rewritten:
                    // never honour a window longer than any config allows from when it was
                    // written, nor longer than the window in force from now.
                    let written = parse_rfc3339(&r.time).unwrap_or(now);
                    let until = until.min(written + MAX_GRANT).min(now + window);
                    if until + REMEMBER_ENDED < now {
                        continue;
                    }
                    let mut state = GrantState::new(Grant {
                        id: r.seq,
                        user,
                        name,
                        guild,
                        instance,
                        region,
                        reason: e.reason.clone(),
                        until,
                        dm: None,
                    });
                    if e.refers_to.is_some_and(|u| broke_glass.contains(&u)) {
                        state.break_glass = true;
                        state.extension = Extension::Used;
                    }
                    slots.insert(r.seq, state);
                }
                Event::BreakGlass => {
                    broke_glass.insert(r.seq);
                }
                Event::Extended => {
                    let Some(s) = e.refers_to.and_then(|g| slots.get_mut(&g)) else {
                        continue;
                    };
                    s.extension = Extension::Used;
                    // Capped as a grant is: never past two windows from when it was written.
                    let written = parse_rfc3339(&r.time).unwrap_or(now);
                    if let Some(until) = e.until.as_deref().and_then(parse_rfc3339) {
                        let cap = (written + 2 * MAX_GRANT).min(written + 2 * window);
                        s.grant.until = s.grant.until.max(until.min(cap));
                    }
                }
                Event::ApprovalRequested if e.code.as_deref() == Some(EXTEND_CODE) => {
                    if let Some(s) = e.refers_to.and_then(|g| slots.get_mut(&g)) {
                        s.extension = Extension::Asked { request: r.seq };
                        extensions.insert(r.seq, s.grant.id);
                    }
                }
                // An extension's request closed undecided or denied: the extension was had.
                Event::RequestDenied | Event::Expired | Event::Cancelled => {
                    if let Some(s) = e
                        .refers_to
                        .and_then(|q| extensions.get(&q))
                        .and_then(|g| slots.get_mut(g))
                    {
                        s.extension = Extension::Used;
                    }
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
                        s.end_why = match e.code.as_deref() {
                            Some("revoked") => match r.actor() {
                                Actor::Discord { id, .. } => Some(EndWhy::Revoked { by: id }),
                                Actor::Local { .. } => Some(EndWhy::Revoked { by: 0 }),
                            },
                            Some("done") => Some(EndWhy::Done),
                            Some("role_removed") => Some(EndWhy::RoleRemoved),
                            _ => Some(EndWhy::Expired),
                        };
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

    /// At start: rebuilds the grants, ends those whose window ran out while the bot was down and
    /// those with no DM on record, schedules the end of the others and announces them
    /// ([`GrantEvent::Resumed`]), so their DMs can be put back as they stand. Returns how many
    /// are live and how many were ended.
    pub async fn resume_grants(&self, journal: &Path) -> std::io::Result<(usize, usize)> {
        let (live, lapsed) = self.rebuild_grants(journal)?;
        for g in &lapsed {
            if let Err(e) = self.expire_grant(g.id).await {
                tracing::error!(grant = g.id, error = %e, "could not record the end of a grant that lapsed while the bot was down");
            }
        }
        let mut resumed = 0;
        let mut ended = lapsed.len();
        for g in &live {
            // No DM on record: its `delivered` could not be written (the grant was ended in
            // memory then), or the bot stopped before the DM went out. Fail closed: it ends now.
            if g.dm.is_none() {
                if let Err(e) = self.end_grant(g.id, &bot(), EndWhy::DmFailed).await {
                    tracing::error!(grant = g.id, error = %e, "could not record the end of a rebuilt grant with no DM");
                }
                ended += 1;
                continue;
            }
            // Recorded (and so posted in the audit channel) before it is honoured: an auditor
            // sees every grant a restart brought back, and until when.
            let written = self
                .append(
                    Event::Resumed,
                    &bot(),
                    Entry {
                        instance: Some(g.instance.to_string()),
                        region: Some(g.region.to_string()),
                        refers_to: Some(g.id),
                        until: Some(rfc3339(g.until)),
                        ..Entry::default()
                    },
                )
                .await;
            if let Err(e) = written {
                tracing::error!(grant = g.id, error = %e, "AUDIT WRITE FAILED: a rebuilt grant is not resumed");
                if let Some(s) = self.grants.slots().get_mut(&g.id) {
                    s.ended = true;
                }
                continue;
            }
            resumed += 1;
            self.timers.schedule(g.until, Due::GrantEnds(g.id));
            self.grants.emit(GrantEvent::Resumed { grant: g.clone() });
        }
        Ok((resumed, ended))
    }
}
