//! Request limits: per member and per instance (refuse, saying when to retry), and the
//! account-wide Tencent API pace (wait your turn, up to a bound).

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::LimitsConfig;
use crate::ids::InstanceId;

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

/// The account-wide pace for Tencent calls: at most `per_second` calls in any window of
/// [`PACER_WINDOW`] (a second and a margin).
///
/// Tencent allows 10 DescribeInstanceVncUrl calls a second and, we assume, counts them in any
/// sliding one-second window. A token bucket with a burst of 10 breaks that (10 at the end of one
/// second, 10 at the start of the next); fixed spacing keeps it but makes a burst within the
/// budget wait (the fifth of five presses waited 440 ms). So each call gets a slot no earlier
/// than the window after the call `per_second` places before it: a burst within the budget goes
/// out at once, and the next call waits for the first to leave the window. The margin over one
/// second leaves room for jitter between us and Tencent. Slots are handed out first come, first
/// served (which a polling rate limiter does not promise), and a caller whose slot is further
/// away than the queue limit is refused at once.
pub struct ApiPacer {
    per_window: usize,
    max_wait: Duration,
    /// The slots of the last `per_window` calls, oldest first (some may lie ahead).
    slots: Mutex<VecDeque<Instant>>,
}

/// The queue ahead is longer than the caller may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Tencent call queue is full; a slot frees up in {retry_after:?}")]
pub struct QueueFull {
    pub retry_after: Duration,
}

/// The window [`ApiPacer`] counts calls in: a second, and 100 ms (the old spacing's 10 %) for
/// jitter between us and Tencent: a call held up 100 ms on its way still counts in the right
/// second at Tencent.
pub const PACER_WINDOW: Duration = Duration::from_millis(1100);

impl ApiPacer {
    pub fn new(per_second: NonZeroU32, max_wait: Duration) -> Self {
        let per_window = usize::try_from(per_second.get()).unwrap_or(usize::MAX);
        Self {
            per_window,
            max_wait,
            slots: Mutex::new(VecDeque::with_capacity(per_window.min(64))),
        }
    }

    /// The average time between calls at the full rate: the window over the calls it holds.
    pub fn spacing(&self) -> Duration {
        PACER_WINDOW / u32::try_from(self.per_window).unwrap_or(u32::MAX)
    }

    /// How many calls any window of [`PACER_WINDOW`] may hold.
    pub fn per_window(&self) -> usize {
        self.per_window
    }

    /// A fresh pacer with the same budget and queue limit: a second budget of the same size
    /// (Tencent counts each product's console action on its own).
    pub fn twin(&self) -> Self {
        Self {
            per_window: self.per_window,
            max_wait: self.max_wait,
            slots: Mutex::new(VecDeque::with_capacity(self.per_window.min(64))),
        }
    }

    /// Waits for this caller's slot; returns how long it waited.
    pub async fn acquire(&self) -> Result<Duration, QueueFull> {
        let now = Instant::now();
        let slot = {
            // A poisoned lock only means another caller panicked mid-update of the deque; every
            // entry is still a valid slot.
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            // No earlier than the last slot (first come, first served), and once the window
            // holds `per_window` slots, no earlier than the window after the oldest of them.
            let mut slot = slots.back().map_or(now, |last| (*last).max(now));
            if slots.len() >= self.per_window {
                if let Some(oldest) = slots.front() {
                    slot = slot.max(*oldest + PACER_WINDOW);
                }
            }
            let wait = slot - now;
            if wait > self.max_wait {
                return Err(QueueFull {
                    retry_after: wait - self.max_wait,
                });
            }
            if slots.len() >= self.per_window {
                slots.pop_front();
            }
            slots.push_back(slot);
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

    fn pacer(per_second: u32, max_wait_ms: u64) -> ApiPacer {
        ApiPacer::new(
            NonZeroU32::new(per_second).unwrap(),
            Duration::from_millis(max_wait_ms),
        )
    }

    /// When each of `n` callers, all arriving now, gets its slot (ms from now), or its refusal.
    async fn burst(pacer: &ApiPacer, n: usize) -> Vec<Result<u128, QueueFull>> {
        let start = Instant::now();
        let calls = (0..n).map(|_| async {
            let r = pacer.acquire().await;
            r.map(|waited| {
                assert_eq!(waited, Instant::now() - start, "acquire reports its wait");
                waited.as_millis()
            })
        });
        futures_util::future::join_all(calls).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_within_the_budget_goes_at_once_and_the_next_waits_for_the_window() {
        let p = pacer(10, 5_000);
        assert_eq!(p.per_window(), 10);
        assert_eq!(p.spacing(), Duration::from_millis(110));
        let at = burst(&p, 11).await;
        assert_eq!(at[..10], [Ok(0); 10], "ten at once");
        // The eleventh waits until the first has left the window: a second and the margin.
        assert_eq!(at[10], Ok(1100));
        // Later, the window has emptied: a burst goes at once again.
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(burst(&p, 10).await, vec![Ok(0); 10]);
        // A twin has a budget of its own.
        assert_eq!(burst(&p.twin(), 10).await, vec![Ok(0); 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn no_window_of_a_second_ever_holds_more_than_the_budget() {
        let p = std::sync::Arc::new(pacer(10, 60_000));
        let start = Instant::now();
        let mut tasks = Vec::new();
        // Irregular arrivals: bursts, trickles and pauses (a fixed pseudo-random sequence).
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..300 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let gap = match x % 10 {
                0..=4 => 0,
                5..=7 => x % 90,
                8 => 400,
                _ => 1_300,
            };
            tokio::time::sleep(Duration::from_millis(gap)).await;
            let p = std::sync::Arc::clone(&p);
            tasks.push(tokio::spawn(async move {
                p.acquire().await.unwrap();
                Instant::now() - start
            }));
        }
        let mut sent = Vec::new();
        for t in tasks {
            sent.push(t.await.unwrap());
        }
        sent.sort_unstable();
        for (i, w) in sent.windows(11).enumerate() {
            assert!(
                w[10] - w[0] >= Duration::from_secs(1),
                "calls {i} to {} within {:?}",
                i + 10,
                w[10] - w[0]
            );
        }
        // Bursts did go out together: the pacer does not space calls it need not.
        let together = sent.windows(2).filter(|w| w[0] == w[1]).count();
        assert!(together > 100, "{together}");
    }

    #[tokio::test(start_paused = true)]
    async fn callers_queue_up_to_the_limit_and_are_refused_past_it() {
        let p = pacer(10, 500);
        let at = burst(&p, 12).await;
        assert_eq!(at[..10], [Ok(0); 10]);
        // The 11th's slot is 1100 ms away, past the 500 ms limit: refused at once, nothing spent.
        let full = Err(QueueFull {
            retry_after: Duration::from_millis(600),
        });
        assert_eq!(at[10..], [full, full]);
        // 700 ms on, the slot is 400 ms away: within the limit, it queues.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(burst(&p, 1).await, vec![Ok(400)]);
    }

    #[tokio::test(start_paused = true)]
    async fn queued_callers_go_first_come_first_served() {
        let p = std::sync::Arc::new(pacer(10, 10_000));
        let start = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..30 {
            let (p, tx) = (std::sync::Arc::clone(&p), tx.clone());
            tokio::spawn(async move {
                p.acquire().await.unwrap();
                tx.send((i, (Instant::now() - start).as_millis())).unwrap();
            });
            // Each asks before the next is spawned.
            tokio::task::yield_now().await;
        }
        drop(tx);
        let mut order = Vec::new();
        while let Some(sent) = rx.recv().await {
            order.push(sent);
        }
        let slots: Vec<_> = (0..30).map(|i| (i, [0, 1100, 2200][i / 10])).collect();
        let mut by_caller = order.clone();
        by_caller.sort_unstable();
        assert_eq!(
            by_caller, slots,
            "each ten share a window, in the order they asked"
        );
        // Nobody who asked later went out earlier.
        assert!(order.windows(2).all(|w| w[0].1 <= w[1].1), "{order:?}");
    }
}
