//! Request limits: per member and per instance (refuse, saying when to retry), and the
//! account-wide Tencent API pace (wait your turn, up to a bound).

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::ids::InstanceId;

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

/// One keyed limit over a sliding minute, as GCRA: a key may burst up to the limit and then gets
/// one more request every `60 / limit` seconds. Unlike a plain rate limiter it can be asked
/// without spending anything, so a request refused by one limit costs nothing under another.
struct Keyed<K> {
    /// Time between two requests at the steady rate.
    interval: Duration,
    /// How far ahead of now a key's theoretical arrival time may run (the burst).
    tolerance: Duration,
    /// Theoretical arrival time of each key's next request.
    tat: HashMap<K, Instant>,
}

impl<K: Hash + Eq + Clone> Keyed<K> {
    fn per_minute(n: NonZeroU32) -> Self {
        let interval = Duration::from_secs(60) / n.get();
        Self {
            interval,
            tolerance: interval * (n.get() - 1),
            tat: HashMap::new(),
        }
    }

    /// `Err(retry_after)` when one more request now would exceed the limit.
    fn peek(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let tat = self.tat.get(key).map_or(now, |t| (*t).max(now));
        let ahead = tat - now;
        if ahead > self.tolerance {
            Err(ahead - self.tolerance)
        } else {
            Ok(())
        }
    }

    fn take(&mut self, key: &K, now: Instant) {
        let tat = self.tat.get(key).map_or(now, |t| (*t).max(now));
        self.tat.insert(key.clone(), tat + self.interval);
    }

    /// Forgets keys that have fully recovered.
    fn shrink(&mut self, now: Instant) {
        self.tat.retain(|_, t| *t > now);
        self.tat.shrink_to_fit();
    }
}

/// Per-member and per-instance limits, and a looser per-member budget for refused requests (so
/// that nobody can flood the journal and the audit channel with requests that are refused anyway,
/// while a typo does not cost a real attempt).
pub struct RequestLimits {
    state: Mutex<State>,
}

struct State {
    per_user: Keyed<String>,
    per_instance: Keyed<InstanceId>,
    refusals: Keyed<String>,
}

/// The limits, held for one decision: what is checked and what is then taken cannot be changed
/// by a concurrent request in between.
pub struct LimitsGuard<'a> {
    state: MutexGuard<'a, State>,
    now: Instant,
}

impl RequestLimits {
    pub fn new(cfg: &LimitsConfig) -> Self {
        Self {
            state: Mutex::new(State {
                per_user: Keyed::per_minute(cfg.per_user_per_minute),
                per_instance: Keyed::per_minute(cfg.per_instance_per_minute),
                refusals: Keyed::per_minute(cfg.refusals_per_user_per_minute),
            }),
        }
    }

    pub fn lock(&self) -> LimitsGuard<'_> {
        LimitsGuard {
            // Every update leaves the maps consistent, so a poisoned lock is still usable.
            state: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            now: Instant::now(),
        }
    }

    /// Checks both limits and, only when both allow it, counts the request under both: a request
    /// one limit refuses spends nothing under the other.
    pub fn admit(&self, actor: &str, instance: &InstanceId) -> Result<(), Limited> {
        let mut g = self.lock();
        g.check(actor, instance)?;
        g.take(actor, instance);
        Ok(())
    }

    /// Forgets keys whose limits have fully recovered, so memory follows active members only.
    pub fn shrink(&self) {
        let mut g = self.lock();
        let now = g.now;
        g.state.per_user.shrink(now);
        g.state.per_instance.shrink(now);
        g.state.refusals.shrink(now);
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
        let s = &self.state;
        if spend != Spend::Member {
            s.per_instance
                .peek(instance, self.now)
                .map_err(|retry_after| Limited::Instance { retry_after })?;
        }
        if spend != Spend::Instance {
            s.per_user
                .peek(&actor.to_owned(), self.now)
                .map_err(|retry_after| Limited::User { retry_after })?;
        }
        Ok(())
    }

    pub fn take_spend(&mut self, actor: &str, instance: &InstanceId, spend: Spend) {
        let now = self.now;
        if spend != Spend::Member {
            self.state.per_instance.take(instance, now);
        }
        if spend != Spend::Instance {
            self.state.per_user.take(&actor.to_owned(), now);
        }
    }

    /// Whether `actor` may still be refused with a full answer and record; `Err(retry_after)`
    /// once they have been refused too often.
    pub fn check_refusal(&self, actor: &str) -> Result<(), Duration> {
        self.state.refusals.peek(&actor.to_owned(), self.now)
    }

    pub fn take_refusal(&mut self, actor: &str) {
        let now = self.now;
        self.state.refusals.take(&actor.to_owned(), now);
    }
}

/// The account-wide pace for Tencent calls.
///
/// Tencent allows 10 DescribeInstanceVncUrl calls a second and, we assume, counts them in any
/// sliding one-second window. A token bucket with a burst of 10 breaks that (10 at the end of one
/// second, 10 at the start of the next). Instead every call gets its own slot, evenly spaced a
/// little over `1 / per_second` apart, so no one-second window ever holds more than `per_second`
/// arrivals even with some network jitter. Slots are handed out first come, first served, which
/// a polling rate limiter does not promise.
pub struct ApiPacer {
    spacing: Duration,
    max_wait: Duration,
    next_free: Mutex<Instant>,
}

/// The queue ahead is longer than the caller may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Tencent call queue is full; a slot frees up in {retry_after:?}")]
pub struct QueueFull {
    pub retry_after: Duration,
}

/// Ten percent over the exact spacing leaves room for jitter between us and Tencent.
const SPACING_MARGIN_PERCENT: u32 = 10;

impl ApiPacer {
    pub fn new(per_second: NonZeroU32, max_wait: Duration) -> Self {
        let spacing =
            Duration::from_secs(1) / per_second.get() * (100 + SPACING_MARGIN_PERCENT) / 100;
        Self {
            spacing,
            max_wait,
            next_free: Mutex::new(Instant::now()),
        }
    }

    pub fn spacing(&self) -> Duration {
        self.spacing
    }

    /// A fresh pacer with the same spacing and queue limit: a second budget of the same size
    /// (Tencent counts each product's console action on its own).
    pub fn twin(&self) -> Self {
        Self {
            spacing: self.spacing,
            max_wait: self.max_wait,
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Waits for this caller's slot; returns how long it waited.
    pub async fn acquire(&self) -> Result<Duration, QueueFull> {
        let now = Instant::now();
        let slot = {
            // A poisoned lock only means another caller panicked mid-update of an `Instant`;
            // the value is still a valid slot.
            let mut next = self.next_free.lock().unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(now);
            let wait = slot - now;
            if wait > self.max_wait {
                return Err(QueueFull {
                    retry_after: wait - self.max_wait,
                });
            }
            *next = slot + self.spacing;
            slot
        };
        tokio::time::sleep_until(slot).await;
        Ok(slot - now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            limits.admit("alice", &i).unwrap();
        }
        match limits.admit("alice", &i) {
            Err(Limited::User { retry_after }) => {
                assert!(
                    retry_after > Duration::from_secs(15) && retry_after <= Duration::from_secs(20)
                )
            }
            other => panic!("{other:?}"),
        }
        limits.admit("bob", &i).unwrap();
    }

    #[test]
    fn per_instance_limit_spares_the_members_allowance() {
        let limits = RequestLimits::new(&cfg(2, 1));
        let i = InstanceId::parse("ins-a1b2c3d4").unwrap();
        let j = InstanceId::parse("ins-zzzzzzzz").unwrap();
        limits.admit("alice", &i).unwrap();
        assert!(matches!(
            limits.admit("alice", &i),
            Err(Limited::Instance { .. })
        ));
        limits.admit("alice", &j).unwrap();
    }

    #[test]
    fn a_member_over_their_limit_cannot_use_up_the_instance() {
        let limits = RequestLimits::new(&cfg(1, 3));
        let i = InstanceId::parse("ins-a1b2c3d4").unwrap();
        limits.admit("alice", &i).unwrap();
        for _ in 0..5 {
            assert!(matches!(
                limits.admit("alice", &i),
                Err(Limited::User { .. })
            ));
        }
        // Alice's refused tries took nothing: two more members still fit the instance's three.
        limits.admit("bob", &i).unwrap();
        limits.admit("carol", &i).unwrap();
        assert!(matches!(
            limits.admit("dave", &i),
            Err(Limited::Instance { .. })
        ));
    }

    #[test]
    fn refusals_have_their_own_budget() {
        let limits = RequestLimits::new(&cfg(1, 3));
        let mut g = limits.lock();
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

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_calls_first_come_first_served_and_bounds_the_wait() {
        let pacer = ApiPacer::new(NonZeroU32::new(10).unwrap(), Duration::from_millis(500));
        assert_eq!(pacer.spacing(), Duration::from_millis(110));
        let start = Instant::now();
        let calls = (0..7).map(|_| async {
            let r = pacer.acquire().await;
            (r, Instant::now() - start)
        });
        let results = futures_util::future::join_all(calls).await;
        let ms: Vec<_> = results
            .iter()
            .map(|(r, at)| r.map(|_| at.as_millis()))
            .collect();
        assert_eq!(
            ms,
            vec![
                Ok(0),
                Ok(110),
                Ok(220),
                Ok(330),
                Ok(440),
                Err(QueueFull {
                    retry_after: Duration::from_millis(50)
                }),
                Err(QueueFull {
                    retry_after: Duration::from_millis(50)
                }),
            ]
        );
    }
}
