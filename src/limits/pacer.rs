//! The account-wide pace for Tencent calls, in one process or shared by every process on one
//! journal (see [`super::store`]).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::ops::{Add, Sub};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::store::{Call, StateError, StateFile, WallMs};

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
///
/// Tencent counts per account, not per process: a [`ApiPacer::shared`] pacer keeps its slots in
/// the limits file beside the journal, so the bot and every `vncbot url` run share one budget.
/// A slot is reserved and written under the file's lock, which is then released before the
/// caller sleeps until its slot.
pub struct ApiPacer {
    per_window: usize,
    max_wait: Duration,
    /// The slots of the last `per_window` calls, oldest first (some may lie ahead).
    slots: Mutex<VecDeque<Instant>>,
    /// Where the slots live instead, when shared: the file and this action's key in it.
    shared: Option<(Arc<StateFile>, String)>,
}

/// The queue ahead is longer than the caller may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Tencent call queue is full; a slot frees up in {retry_after:?}")]
pub struct QueueFull {
    pub retry_after: Duration,
}

/// Why a caller got no slot.
#[derive(Debug, thiserror::Error)]
pub enum PaceError {
    #[error(transparent)]
    Full(#[from] QueueFull),
    /// The shared pace cannot be read or kept: nothing is sent (fail closed).
    #[error("the shared Tencent call pace cannot be kept: {0}")]
    State(#[from] StateError),
}

/// The window [`ApiPacer`] counts calls in: a second, and 100 ms (the old spacing's 10 %) for
/// jitter between us and Tencent: a call held up 100 ms on its way still counts in the right
/// second at Tencent.
pub const PACER_WINDOW: Duration = Duration::from_millis(1100);

/// A point in time the pacer can count with: `Instant` in one process, [`WallMs`] across them.
trait Moment: Copy + Ord + Add<Duration, Output = Self> + Sub<Output = Duration> {}
impl Moment for Instant {}
impl Moment for WallMs {}

/// Reserves the next slot for a caller arriving `now`, no earlier than `floor`, or refuses at
/// once, spending nothing, when that slot is more than `max_wait` away.
fn reserve<T: Moment>(
    slots: &mut VecDeque<T>,
    now: T,
    floor: Option<T>,
    per_window: usize,
    max_wait: Duration,
) -> Result<T, QueueFull> {
    // No earlier than the last slot (first come, first served), and once the window holds
    // `per_window` slots, no earlier than the window after the oldest of those.
    let mut slot = slots.back().map_or(now, |last| (*last).max(now));
    slot = floor.map_or(slot, |f| f.max(slot));
    if slots.len() >= per_window {
        if let Some(oldest) = slots.get(slots.len() - per_window) {
            slot = slot.max(*oldest + PACER_WINDOW);
        }
    }
    let wait = slot - now;
    if wait > max_wait {
        return Err(QueueFull {
            retry_after: wait - max_wait,
        });
    }
    // A shared file may hold more (a process with a larger budget wrote it): keep the last ones.
    while slots.len() >= per_window {
        slots.pop_front();
    }
    slots.push_back(slot);
    Ok(slot)
}

impl ApiPacer {
    pub fn new(per_second: NonZeroU32, max_wait: Duration) -> Self {
        let per_window = usize::try_from(per_second.get()).unwrap_or(usize::MAX);
        Self {
            per_window,
            max_wait,
            slots: Mutex::new(VecDeque::with_capacity(per_window.min(64))),
            shared: None,
        }
    }

    /// This pacer, with its slots kept under `key` in `file` for every process that uses it.
    pub fn shared(mut self, file: Arc<StateFile>, key: &str) -> Self {
        self.shared = Some((file, key.to_owned()));
        self
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
    /// (Tencent counts each product's console action on its own), kept under `key` when shared.
    pub fn twin(&self, key: &str) -> Self {
        Self {
            per_window: self.per_window,
            max_wait: self.max_wait,
            slots: Mutex::new(VecDeque::with_capacity(self.per_window.min(64))),
            shared: self
                .shared
                .as_ref()
                .map(|(file, _)| (Arc::clone(file), key.to_owned())),
        }
    }

    /// Waits for this caller's slot. Hold the permit until the call is answered.
    pub async fn acquire(&self) -> Result<Permit<'_>, PaceError> {
        let now = Instant::now();
        let wait = match &self.shared {
            None => {
                // A poisoned lock only means another caller panicked mid-update of the deque;
                // every entry is still a valid slot.
                let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                reserve(&mut slots, now, None, self.per_window, self.max_wait)? - now
            }
            Some((file, key)) => return self.acquire_shared(file, key, now).await,
        };
        // The lock is released: the caller sleeps without holding anyone up.
        tokio::time::sleep_until(now + wait).await;
        Ok(Permit {
            waited: wait,
            call: None,
        })
    }
}

/// How long a call may stay in flight before the pacer stops waiting for its answer: past it,
/// its process is taken to have died mid-call (the HTTP timeout is far shorter).
const IN_FLIGHT_BOUND: Duration = Duration::from_secs(30);
/// How often a caller looks again while the window it waits on holds calls still in flight.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(10);

/// A slot, held while the call is made: dropping it (after the answer) records when the call
/// was answered, for the shared window.
#[must_use = "hold the permit until the call is answered"]
#[derive(Debug)]
pub struct Permit<'a> {
    waited: Duration,
    call: Option<(&'a StateFile, &'a str, WallMs)>,
}

impl Permit<'_> {
    /// How long the caller waited for its slot.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let Some((file, key, sent)) = self.call.take() else {
            return;
        };
        let answered = WallMs::now();
        let recorded = file.lock().and_then(|mut locked| {
            let pace = locked.doc_mut().pace.entry(key.to_owned()).or_default();
            if let Some(c) = pace
                .calls
                .iter_mut()
                .find(|c| c.sent == sent && c.answered.is_none())
            {
                c.answered = Some(answered);
            }
            locked.save()
        });
        if let Err(e) = recorded {
            // The call counts as in flight until `IN_FLIGHT_BOUND`: slower, never faster.
            tracing::warn!(error = %e, "could not record a Tencent call's answer in the shared pace");
        }
    }
}

/// When one more call may go out, given the calls that went out.
#[derive(Debug, PartialEq, Eq)]
enum Gate {
    Now,
    At(WallMs),
    /// Not before a call still in flight is answered.
    Answer,
}

/// At most `per_window - 1` calls may have reached Tencent within [`PACER_WINDOW`] before a new
/// call: those whose answer (or, in flight, whose possible arrival) lies in the window count.
fn gate(calls: &[Call], now: WallMs, per_window: usize) -> Gate {
    // The latest each call can have reached Tencent; `None` while in flight (unknown).
    let mut bounds: Vec<Option<WallMs>> = calls
        .iter()
        .map(|c| match c.answered {
            Some(a) => Some(a),
            None if now - c.sent > IN_FLIGHT_BOUND => Some(c.sent + IN_FLIGHT_BOUND),
            None => None,
        })
        .filter(|b| b.is_none_or(|b| b + PACER_WINDOW > now))
        .collect();
    if bounds.len() < per_window {
        return Gate::Now;
    }
    // The `per_window`-th latest must leave the window first (`None` sorts as the latest).
    bounds.sort_unstable_by(|a, b| match (a, b) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(a), Some(b)) => b.cmp(a),
    });
    match bounds[per_window - 1] {
        Some(b) => Gate::At(b + PACER_WINDOW),
        None => Gate::Answer,
    }
}

impl ApiPacer {
    /// [`ApiPacer::acquire`] on the shared file: reserve a slot (under the file's lock, then
    /// released) and sleep until it; then, just before the call goes out, check it against the
    /// calls every process made and stamp it. Only a caller whose window still holds calls in
    /// flight or answered late waits again.
    async fn acquire_shared<'a>(
        &self,
        file: &'a StateFile,
        key: &'a str,
        start: Instant,
    ) -> Result<Permit<'a>, PaceError> {
        let wall = WallMs::now();
        let wait = {
            let mut locked = file.lock().inspect_err(log)?;
            let pace = locked.doc_mut().pace.entry(key.to_owned()).or_default();
            let floor = match gate(&pace.calls, wall, self.per_window) {
                Gate::At(t) => Some(t),
                Gate::Now | Gate::Answer => None,
            };
            let slot = reserve(
                &mut pace.reserved,
                wall,
                floor,
                self.per_window,
                self.max_wait,
            )?;
            locked.save().inspect_err(log)?;
            slot - wall
        };
        tokio::time::sleep_until(start + wait).await;
        loop {
            let next = {
                let mut locked = file.lock().inspect_err(log)?;
                let now = WallMs::now();
                let pace = locked.doc_mut().pace.entry(key.to_owned()).or_default();
                match gate(&pace.calls, now, self.per_window) {
                    Gate::At(t) if t > now => t - now,
                    Gate::Answer => IN_FLIGHT_POLL,
                    Gate::Now | Gate::At(_) => {
                        // Calls that can no longer count in any window are forgotten.
                        pace.calls.retain(|c| match c.answered {
                            Some(a) => a + PACER_WINDOW > now,
                            None => now - c.sent <= IN_FLIGHT_BOUND,
                        });
                        pace.calls.push(Call {
                            sent: now,
                            answered: None,
                        });
                        locked.save().inspect_err(log)?;
                        return Ok(Permit {
                            waited: start.elapsed(),
                            call: Some((file, key, now)),
                        });
                    }
                }
            };
            if start.elapsed() > self.max_wait + PACER_WINDOW {
                return Err(QueueFull {
                    retry_after: PACER_WINDOW,
                }
                .into());
            }
            tokio::time::sleep(next).await;
        }
    }
}

fn log(e: &StateError) {
    tracing::error!(error = %e, "the shared Tencent pace cannot be kept; refusing the call");
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

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
            let r = pacer.acquire().await.map_err(|e| match e {
                PaceError::Full(q) => q,
                e => panic!("{e}"),
            });
            r.map(|permit| {
                let waited = permit.waited();
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
        assert_eq!(burst(&p.twin("twin"), 10).await, vec![Ok(0); 10]);
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
                let _answered = p.acquire().await.unwrap();
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
                let _answered = p.acquire().await.unwrap();
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

    /// Two processes' pacers on one journal: each opens the file on its own, as `vncbot url`
    /// runs and the bot do.
    fn shared_pair(per_second: u32, max_wait_ms: u64) -> (tempfile::TempDir, ApiPacer, ApiPacer) {
        let dir = tempfile::tempdir().unwrap();
        let path = StateFile::path_for(&dir.path().join("audit.jsonl"));
        let open = || Arc::new(StateFile::open(&path).unwrap());
        let a = pacer(per_second, max_wait_ms).shared(open(), "cvm");
        let b = pacer(per_second, max_wait_ms).shared(open(), "cvm");
        (dir, a, b)
    }

    /// How many of `n` callers at once got a slot (with no wait allowed, the rest are refused).
    async fn went(pacer: &ApiPacer, n: usize) -> usize {
        let calls = (0..n).map(|_| pacer.acquire());
        let got = futures_util::future::join_all(calls).await;
        got.iter()
            .filter(|r| match r {
                Ok(_) => true,
                Err(PaceError::Full(_)) => false,
                Err(e) => panic!("{e}"),
            })
            .count()
    }

    #[tokio::test]
    async fn pacers_on_one_journal_share_one_budget() {
        let (_dir, a, b) = shared_pair(10, 0);
        // Six each, at once: ten go, and the last two find the budget spent (no wait allowed).
        let (went_a, went_b) = tokio::join!(went(&a, 6), went(&b, 6));
        assert_eq!(went_a + went_b, 10);
        assert_eq!(went(&b, 1).await, 0);
        // Another product's budget is its own, and shared too.
        assert_eq!(went(&a.twin("lighthouse"), 10).await, 10);
        assert_eq!(went(&b.twin("lighthouse"), 1).await, 0);
    }

    #[tokio::test]
    async fn a_shared_caller_past_the_budget_goes_a_window_after_the_answer_it_waits_on() {
        let (_dir, a, b) = shared_pair(2, 5_000);
        let first = a.acquire().await.unwrap();
        let second = b.acquire().await.unwrap();
        drop((first, second));
        let (file, _) = a.shared.as_ref().unwrap();
        let calls = || file.lock().unwrap().doc().pace["cvm"].calls.clone();
        let before = calls();
        assert_eq!(before.len(), 2, "{before:?}");
        let first_answered = before.iter().filter_map(|c| c.answered).min().unwrap();
        drop(b.acquire().await.unwrap());
        // The calls as written to the file (computed, not measured): the two earlier ones have
        // left the window, and are forgotten.
        let after = calls();
        assert_eq!(after.len(), 1, "{after:?}");
        assert!(
            after[0].sent >= first_answered + PACER_WINDOW,
            "{before:?} {after:?}"
        );
    }

    #[test]
    fn a_window_full_of_calls_in_flight_waits_for_an_answer() {
        let call = |sent: u64, answered: Option<u64>| Call {
            sent: WallMs::at(UNIX_EPOCH + Duration::from_millis(sent)),
            answered: answered.map(|a| WallMs::at(UNIX_EPOCH + Duration::from_millis(a))),
        };
        let at = |ms: u64| WallMs::at(UNIX_EPOCH + Duration::from_millis(ms));
        let now = at(10_000);
        // Within the budget: at once, whatever is in flight.
        assert_eq!(gate(&[call(9_990, None)], now, 2), Gate::Now);
        // Two answered: the older leaves the window a window after its answer.
        let answered = [call(9_000, Some(9_300)), call(9_100, Some(9_200))];
        assert_eq!(gate(&answered, now, 2), Gate::At(at(9_200 + 1_100)));
        // Answers long gone count for nothing.
        assert_eq!(gate(&[call(1_000, Some(1_100)); 5], now, 2), Gate::Now);
        // One in flight and one answered: the answered one decides.
        assert_eq!(
            gate(&[call(9_900, None), call(9_000, Some(9_050))], now, 2),
            Gate::At(at(9_050 + 1_100))
        );
        // Both in flight: wait for an answer; a call in flight past the bound is given up on.
        assert_eq!(
            gate(&[call(9_900, None), call(9_950, None)], now, 2),
            Gate::Answer
        );
        let slow = [call(29_900, None), call(5_000, None)];
        assert_eq!(gate(&slow, at(30_000), 2), Gate::Answer, "25 s in flight");
        assert_eq!(gate(&slow, at(40_000), 2), Gate::Now, "35 s in flight");
    }

    #[tokio::test]
    async fn a_damaged_shared_pace_refuses_the_call() {
        let (dir, a, _b) = shared_pair(10, 0);
        std::fs::write(dir.path().join("audit.jsonl.limits"), b"not json").unwrap();
        let e = a.acquire().await.unwrap_err();
        assert!(
            matches!(e, PaceError::State(StateError::Damaged { .. })),
            "{e}"
        );
    }
}
