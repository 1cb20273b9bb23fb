//! Request limits: per member and per instance (refuse, saying when to retry), and the
//! account-wide Tencent API pace (wait your turn, up to a bound).
//!
//! Both hold in one process ([`RequestLimits::new`], [`ApiPacer::new`]) or across every process
//! that uses one journal ([`RequestLimits::shared`], [`ApiPacer::shared`]): the bot, each
//! `vncbot url` run, and the bot after a restart then see one set of counters, kept in the
//! limits file beside the journal ([`store`]).

mod pacer;
pub mod store;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::ops::{Add, Sub};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::ids::InstanceId;

pub use pacer::{ApiPacer, PaceError, Permit, QueueFull, PACER_WINDOW};
pub use store::{StateError, StateFile};
use store::{Tats, WallMs};

/// The `[limits]` settings, as the config ([`crate::config`]) validated them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitsConfig {
    pub per_user_per_minute: NonZeroU32,
    /// Refused requests a member may make per minute: looser than `per_user_per_minute`, so a
    /// typo does not cost a real attempt, yet bounded, so refusals cannot flood the journal.
    pub refusals_per_user_per_minute: NonZeroU32,
    pub per_instance_per_minute: NonZeroU32,
    pub api_per_second: NonZeroU32,
}

/// Which limits one admission counts against. `vncbot url` mints at once (both); `/vnc`
/// grants a window (the member's limit); each press on Open console mints (the instance's
/// limit: Tencent allows 30 reconnects a minute per instance).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    MemberAndInstance,
    Member,
    Instance,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    User { retry_after: Duration },
    Instance { retry_after: Duration },
}

/// A point in time the limits can count with: `Instant` in one process, a wall-clock time
/// ([`WallMs`]) shared across processes and restarts.
trait Moment: Copy + Ord + Add<Duration, Output = Self> + Sub<Output = Duration> {}
impl Moment for Instant {}
impl Moment for WallMs {}

/// One keyed limit over a sliding minute, as GCRA: a key may burst up to the limit and then gets
/// one more request every `60 / limit` seconds. Unlike a plain rate limiter it can be asked
/// without spending anything, so a request refused by one limit costs nothing under another.
/// The state is each key's theoretical arrival time (TAT), kept apart (in [`Tats`]).
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// Time between two requests at the steady rate.
    interval: Duration,
    /// How far ahead of now a key's theoretical arrival time may run (the burst).
    tolerance: Duration,
}

impl Rate {
    fn per_minute(n: NonZeroU32) -> Self {
        let interval = Duration::from_secs(60) / n.get();
        Self {
            interval,
            tolerance: interval * (n.get() - 1),
        }
    }

    /// A key's TAT as of `now`. A TAT further ahead than a full burst can put it (a shared file
    /// written under a smaller limit, or a wall clock set back) counts as a full burst: such a
    /// key waits at most one interval, never for however far the clock jumped.
    fn tat<T: Moment>(&self, tats: &HashMap<String, T>, key: &str, now: T) -> T {
        let tat = tats.get(key).map_or(now, |t| (*t).max(now));
        tat.min(now + self.tolerance + self.interval)
    }

    /// `Err(retry_after)` when one more request now would exceed the limit.
    fn peek<T: Moment>(
        &self,
        tats: &HashMap<String, T>,
        key: &str,
        now: T,
    ) -> Result<(), Duration> {
        let ahead = self.tat(tats, key, now) - now;
        if ahead > self.tolerance {
            Err(ahead - self.tolerance)
        } else {
            Ok(())
        }
    }

    fn take<T: Moment>(&self, tats: &mut HashMap<String, T>, key: &str, now: T) {
        let tat = self.tat(tats, key, now);
        tats.insert(key.to_owned(), tat + self.interval);
    }
}

/// The three rates, from the config.
#[derive(Debug, Clone, Copy)]
struct Rates {
    per_user: Rate,
    per_instance: Rate,
    refusals: Rate,
}

impl Rates {
    fn check<T: Moment>(
        &self,
        tats: &Tats<T>,
        now: T,
        actor: &str,
        instance: &InstanceId,
        spend: Spend,
    ) -> Result<(), Limited> {
        if spend != Spend::Member {
            self.per_instance
                .peek(&tats.instance, &instance.to_string(), now)
                .map_err(|retry_after| Limited::Instance { retry_after })?;
        }
        if spend != Spend::Instance {
            self.per_user
                .peek(&tats.user, actor, now)
                .map_err(|retry_after| Limited::User { retry_after })?;
        }
        Ok(())
    }

    fn take<T: Moment>(
        &self,
        tats: &mut Tats<T>,
        now: T,
        actor: &str,
        instance: &InstanceId,
        spend: Spend,
    ) {
        if spend != Spend::Member {
            self.per_instance
                .take(&mut tats.instance, &instance.to_string(), now);
        }
        if spend != Spend::Instance {
            self.per_user.take(&mut tats.user, actor, now);
        }
    }
}

/// Forgets keys that have fully recovered, so memory (and the shared file) follow active
/// members only.
fn shrink<T: Moment>(tats: &mut Tats<T>, now: T) {
    for map in [&mut tats.user, &mut tats.instance, &mut tats.refusals] {
        map.retain(|_, t| *t > now);
        map.shrink_to_fit();
    }
}

/// Per-member and per-instance limits, and a looser per-member budget for refused requests (so
/// that nobody can flood the journal and the audit channel with requests that are refused anyway,
/// while a typo does not cost a real attempt).
pub struct RequestLimits {
    rates: Rates,
    /// The counters, in this process ([`RequestLimits::new`]).
    state: Mutex<Tats<Instant>>,
    /// The counters, in the file every process on the journal shares, when set.
    shared: Option<Arc<StateFile>>,
    /// The thread that runs decisions on shared limits (see [`RequestLimits::with`]).
    worker: Option<mpsc::Sender<Job>>,
}

/// One decision for the limits thread.
type Job = Box<dyn FnOnce() + Send>;

/// A thread that runs decisions one after another, as the file lock would order them anyway.
/// It ends when its limits are dropped (a reload builds new ones).
fn start_worker() -> Option<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("limits".into())
        .spawn(move || {
            for job in rx {
                // A panicking decision (a bug) fails its own request, not every later one.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        })
        .inspect_err(|e| tracing::warn!(error = %e, "cannot start the limits thread; deciding on the runtime's threads"))
        .ok()?;
    Some(tx)
}

/// The limits, held for one decision: what is checked and what is then taken cannot be changed
/// by a concurrent request in between, in this process or (when shared) in another. Dropping it
/// writes what was taken back to the shared file.
pub struct LimitsGuard<'a> {
    rates: Rates,
    held: Held<'a>,
}

enum Held<'a> {
    Memory {
        tats: MutexGuard<'a, Tats<Instant>>,
        now: Instant,
    },
    Shared {
        file: store::Locked<'a>,
        now: WallMs,
        dirty: bool,
    },
}

impl RequestLimits {
    /// Limits for this process alone (tests, and anything without a journal).
    pub fn new(cfg: &LimitsConfig) -> Self {
        Self {
            rates: Rates {
                per_user: Rate::per_minute(cfg.per_user_per_minute),
                per_instance: Rate::per_minute(cfg.per_instance_per_minute),
                refusals: Rate::per_minute(cfg.refusals_per_user_per_minute),
            },
            state: Mutex::new(Tats::default()),
            shared: None,
            worker: None,
        }
    }

    /// Limits whose counters live in `file`, shared by every process that opens it.
    pub fn shared(cfg: &LimitsConfig, file: Arc<StateFile>) -> Self {
        Self {
            shared: Some(file),
            worker: start_worker(),
            ..Self::new(cfg)
        }
    }

    /// New limits from `cfg` (a config reload) on the same counters' home: shared ones keep
    /// their counters (the file is the truth), in-process ones start afresh.
    pub fn reconfigured(&self, cfg: &LimitsConfig) -> Self {
        match &self.shared {
            Some(file) => Self::shared(cfg, Arc::clone(file)),
            None => Self::new(cfg),
        }
    }

    /// Takes the limits for one decision. Shared limits lock and read the file (this blocks the
    /// thread for a read and a write, or up to half a second when another process holds the
    /// file); a file that cannot be read fails the request (and is logged).
    pub fn lock(&self) -> Result<LimitsGuard<'_>, StateError> {
        let held = match &self.shared {
            None => Held::Memory {
                // Every update leaves the maps consistent, so a poisoned lock is still usable.
                tats: self.state.lock().unwrap_or_else(|e| e.into_inner()),
                now: Instant::now(),
            },
            Some(file) => Held::Shared {
                file: file.lock().inspect_err(|e| {
                    tracing::error!(error = %e, "the shared limits cannot be read; refusing the request")
                })?,
                now: WallMs::now(),
                dirty: false,
            },
        };
        Ok(LimitsGuard {
            rates: self.rates,
            held,
        })
    }

    /// Runs `f` with the limits held for one decision. In-process limits are a mutex held for
    /// microseconds, so `f` runs here; shared ones lock, read and rewrite a file (and may wait
    /// up to half a second for another process), so `f` runs on the limits thread, and the
    /// runtime's worker threads stay free to acknowledge the next interaction meanwhile. One
    /// thread, not the blocking pool: a burst of 300 would start a thread for each decision,
    /// only for them to queue on the file lock one by one.
    pub async fn with<T, F>(self: &Arc<Self>, f: F) -> Result<T, StateError>
    where
        F: FnOnce(&mut LimitsGuard<'_>) -> T + Send + 'static,
        T: Send + 'static,
    {
        let Some(worker) = self.worker.as_ref() else {
            return self.lock().map(|mut g| f(&mut g));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let this = Arc::clone(self);
        let job: Job = Box::new(move || {
            let _ = tx.send(this.lock().map(|mut g| f(&mut g)));
        });
        if let Err(mpsc::SendError(job)) = worker.send(job) {
            // The thread is gone: decide here, as without it.
            job();
        }
        rx.await
            .unwrap_or_else(|_| panic!("a limits decision panicked on the limits thread"))
    }

    /// Forgets keys whose limits have fully recovered, so memory follows active members only
    /// (the shared file is pruned at each write).
    pub fn shrink(&self) {
        let mut tats = self.state.lock().unwrap_or_else(|e| e.into_inner());
        shrink(&mut tats, Instant::now());
    }
}

impl LimitsGuard<'_> {
    /// Whether one more request by `actor` for `instance` fits both limits; spends nothing.
    pub fn check(&self, actor: &str, instance: &InstanceId) -> Result<(), Limited> {
        self.check_spend(actor, instance, Spend::MemberAndInstance)
    }

    pub fn take(&mut self, actor: &str, instance: &InstanceId) {
        self.take_spend(actor, instance, Spend::MemberAndInstance)
    }

    /// Whether one more request fits the limits `spend` names; spends nothing.
    pub fn check_spend(
        &self,
        actor: &str,
        instance: &InstanceId,
        spend: Spend,
    ) -> Result<(), Limited> {
        match &self.held {
            Held::Memory { tats, now } => self.rates.check(tats, *now, actor, instance, spend),
            Held::Shared { file, now, .. } => {
                self.rates
                    .check(&file.doc().limits, *now, actor, instance, spend)
            }
        }
    }

    pub fn take_spend(&mut self, actor: &str, instance: &InstanceId, spend: Spend) {
        match &mut self.held {
            Held::Memory { tats, now } => self.rates.take(tats, *now, actor, instance, spend),
            Held::Shared { file, now, dirty } => {
                self.rates
                    .take(&mut file.doc_mut().limits, *now, actor, instance, spend);
                *dirty = true;
            }
        }
    }

    /// Whether `actor` may still be refused with a full answer and record; `Err(retry_after)`
    /// once they have been refused too often.
    pub fn check_refusal(&self, actor: &str) -> Result<(), Duration> {
        let r = self.rates.refusals;
        match &self.held {
            Held::Memory { tats, now } => r.peek(&tats.refusals, actor, *now),
            Held::Shared { file, now, .. } => r.peek(&file.doc().limits.refusals, actor, *now),
        }
    }

    pub fn take_refusal(&mut self, actor: &str) {
        let r = self.rates.refusals;
        match &mut self.held {
            Held::Memory { tats, now } => r.take(&mut tats.refusals, actor, *now),
            Held::Shared { file, now, dirty } => {
                r.take(&mut file.doc_mut().limits.refusals, actor, *now);
                *dirty = true;
            }
        }
    }
}

impl Drop for LimitsGuard<'_> {
    fn drop(&mut self) {
        if let Held::Shared {
            file,
            now,
            dirty: true,
        } = &mut self.held
        {
            shrink(&mut file.doc_mut().limits, *now);
            if let Err(e) = file.save() {
                // The spend holds in this process; other processes will find the file unreadable
                // or stale, and the next decision here reads it afresh (and fails closed).
                tracing::error!(error = %e, "the shared limits could not be written");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks both limits and, only when both allow it, counts the request under both: a
    /// request one limit refuses spends nothing under the other.
    fn admit(limits: &RequestLimits, actor: &str, instance: &InstanceId) -> Result<(), Limited> {
        let mut g = limits.lock().unwrap();
        g.check(actor, instance)?;
        g.take(actor, instance);
        Ok(())
    }

    fn cfg(user: u32, instance: u32) -> LimitsConfig {
        LimitsConfig {
            per_user_per_minute: NonZeroU32::new(user).unwrap(),
            refusals_per_user_per_minute: NonZeroU32::new(10).unwrap(),
            per_instance_per_minute: NonZeroU32::new(instance).unwrap(),
            api_per_second: NonZeroU32::new(10).unwrap(),
        }
    }

    #[test]
    fn per_user_limit_says_when_to_retry() {
        let limits = RequestLimits::new(&cfg(3, 30));
        let i = InstanceId::parse("ins-a1b2c3d4").unwrap();
        for _ in 0..3 {
            admit(&limits, "alice", &i).unwrap();
        }
        match admit(&limits, "alice", &i) {
            Err(Limited::User { retry_after }) => {
                assert!(
                    retry_after > Duration::from_secs(15) && retry_after <= Duration::from_secs(20)
                )
            }
            other => panic!("{other:?}"),
        }
        admit(&limits, "bob", &i).unwrap();
    }

    #[test]
    fn per_instance_limit_spares_the_members_allowance() {
        let limits = RequestLimits::new(&cfg(2, 1));
        let i = InstanceId::parse("ins-a1b2c3d4").unwrap();
        let j = InstanceId::parse("ins-zzzzzzzz").unwrap();
        admit(&limits, "alice", &i).unwrap();
        assert!(matches!(
            admit(&limits, "alice", &i),
            Err(Limited::Instance { .. })
        ));
        admit(&limits, "alice", &j).unwrap();
    }

    #[test]
    fn a_member_over_their_limit_cannot_use_up_the_instance() {
        let limits = RequestLimits::new(&cfg(1, 3));
        let i = InstanceId::parse("ins-a1b2c3d4").unwrap();
        admit(&limits, "alice", &i).unwrap();
        for _ in 0..5 {
            assert!(matches!(
                admit(&limits, "alice", &i),
                Err(Limited::User { .. })
            ));
        }
        // Alice's refused tries took nothing: two more members still fit the instance's three.
        admit(&limits, "bob", &i).unwrap();
        admit(&limits, "carol", &i).unwrap();
        assert!(matches!(
            admit(&limits, "dave", &i),
            Err(Limited::Instance { .. })
        ));
    }

    #[test]
    fn refusals_have_their_own_budget() {
        let limits = RequestLimits::new(&cfg(1, 3));
        let mut g = limits.lock().unwrap();
        for _ in 0..10 {
            g.check_refusal("mallory").unwrap();
            g.take_refusal("mallory");
        }
        let wait = g.check_refusal("mallory").unwrap_err();
        assert!(wait > Duration::from_secs(5) && wait <= Duration::from_secs(6));
        g.check_refusal("alice").unwrap();
        // Refusals do not spend the member's real allowance.
        let i = InstanceId::parse("ins-a1b2c3d4").unwrap();
        g.check("mallory", &i).unwrap();
    }

    /// Limits as a second process (or the bot after a restart) sees them: its own open of the
    /// one file beside the journal.
    fn shared(dir: &tempfile::TempDir, c: LimitsConfig) -> RequestLimits {
        let path = StateFile::path_for(&dir.path().join("audit.jsonl"));
        RequestLimits::shared(&c, Arc::new(StateFile::open(&path).unwrap()))
    }

    #[test]
    fn processes_on_one_journal_share_the_limits_and_a_restart_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let i = InstanceId::parse("ins-a1b2c3d4").unwrap();
        let j = InstanceId::parse("ins-zzzzzzzz").unwrap();
        let (a, b) = (shared(&dir, cfg(3, 3)), shared(&dir, cfg(3, 3)));
        admit(&a, "alice", &i).unwrap();
        admit(&b, "alice", &i).unwrap();
        admit(&a, "alice", &j).unwrap();
        assert!(matches!(admit(&b, "alice", &j), Err(Limited::User { .. })));
        admit(&b, "bob", &i).unwrap();
        assert!(matches!(
            admit(&a, "carol", &i),
            Err(Limited::Instance { .. })
        ));
        {
            let mut g = b.lock().unwrap();
            g.take_refusal("mallory");
        }
        drop((a, b));
        // A restart: a fresh open of the file still knows what was spent.
        let again = shared(&dir, cfg(3, 3));
        assert!(matches!(
            admit(&again, "alice", &j),
            Err(Limited::User { .. })
        ));
        assert!(matches!(
            admit(&again, "dave", &i),
            Err(Limited::Instance { .. })
        ));
        admit(&again, "dave", &j).unwrap();
        // A reload keeps the shared counters (the file is the truth).
        let reloaded = again.reconfigured(&cfg(3, 3));
        assert!(matches!(
            admit(&reloaded, "alice", &j),
            Err(Limited::User { .. })
        ));
        let file = reloaded.shared.as_ref().unwrap().lock().unwrap();
        assert!(file.doc().limits.refusals.contains_key("mallory"));
    }

    #[test]
    fn a_damaged_shared_file_refuses_until_it_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let limits = shared(&dir, cfg(3, 4));
        let path = dir.path().join("audit.jsonl.limits");
        std::fs::write(&path, b"\0\0garbage").unwrap();
        let e = limits.lock().err().expect("a damaged file was used");
        assert!(matches!(e, StateError::Damaged { .. }), "{e}");
        std::fs::remove_file(&path).unwrap();
        let fresh = shared(&dir, cfg(3, 4));
        admit(&fresh, "alice", &InstanceId::parse("ins-a1b2c3d4").unwrap()).unwrap();
    }

    #[test]
    fn a_time_far_ahead_in_the_file_costs_one_interval_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let limits = shared(&dir, cfg(3, 30));
        let i = InstanceId::parse("ins-a1b2c3d4").unwrap();
        {
            let mut g = limits.lock().unwrap();
            g.take("alice", &i);
            // As if the wall clock had been set back a day since.
            let Held::Shared { file, .. } = &mut g.held else {
                unreachable!()
            };
            let tat = file.doc_mut().limits.user.get_mut("alice").unwrap();
            *tat = *tat + Duration::from_secs(86_400);
        }
        match admit(&limits, "alice", &i) {
            Err(Limited::User { retry_after }) => {
                assert!(retry_after <= Duration::from_secs(20), "{retry_after:?}")
            }
            other => panic!("{other:?}"),
        }
    }
}
