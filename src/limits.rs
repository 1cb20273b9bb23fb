//! Request limits: per member and per instance (refuse, saying when to retry), and the
//! account-wide Tencent API pace (wait your turn, up to a bound).

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::time::Instant;

use crate::config::LimitsConfig;
use crate::ids::InstanceId;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    User { retry_after: Duration },
    Instance { retry_after: Duration },
}

/// Per-member and per-instance limits over a sliding minute (GCRA, so a member may burst up to the
/// limit and then gets one more request every `60 / limit` seconds).
pub struct RequestLimits {
    per_user: DefaultKeyedRateLimiter<String>,
    per_instance: DefaultKeyedRateLimiter<InstanceId>,
    clock: DefaultClock,
}

impl RequestLimits {
    pub fn new(cfg: &LimitsConfig) -> Self {
        Self {
            per_user: DefaultKeyedRateLimiter::keyed(Quota::per_minute(cfg.per_user_per_minute)),
            per_instance: DefaultKeyedRateLimiter::keyed(Quota::per_minute(
                cfg.per_instance_per_minute,
            )),
            clock: DefaultClock::default(),
        }
    }

    /// Counts one request by `actor` for `instance`, or says which limit refused it and when to
    /// retry. The instance is checked first so that a busy instance does not also use up the
    /// member's own allowance.
    pub fn check(&self, actor: &str, instance: &InstanceId) -> Result<(), Limited> {
        if let Err(not_until) = self.per_instance.check_key(instance) {
            return Err(Limited::Instance {
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        if let Err(not_until) = self.per_user.check_key(&actor.to_owned()) {
            return Err(Limited::User {
                retry_after: not_until.wait_time_from(self.clock.now()),
            });
        }
        Ok(())
    }

    /// Forgets keys whose limits have fully recovered, so memory follows active members only.
    pub fn shrink(&self) {
        self.per_user.retain_recent();
        self.per_instance.retain_recent();
        self.per_user.shrink_to_fit();
        self.per_instance.shrink_to_fit();
    }
}

/// The account-wide pace for Tencent calls.
///
/// Tencent allows 10 DescribeInstanceVncUrl calls a second and, we assume, counts them in any
/// sliding one-second window. A token bucket with a burst of 10 breaks that (10 at the end of one
/// second, 10 at the start of the next). Instead every call gets its own slot, evenly spaced a
/// little over `1 / per_second` apart, so no one-second window ever holds more than `per_second`
/// arrivals even with some network jitter. Slots are handed out first come, first served, which
/// `governor`'s polling `until_ready` does not promise.
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
            limits.check("alice", &i).unwrap();
        }
        match limits.check("alice", &i) {
            Err(Limited::User { retry_after }) => {
                assert!(
                    retry_after > Duration::from_secs(15) && retry_after <= Duration::from_secs(20)
                )
            }
            other => panic!("{other:?}"),
        }
        limits.check("bob", &i).unwrap();
    }

    #[test]
    fn per_instance_limit_spares_the_members_allowance() {
        let limits = RequestLimits::new(&cfg(2, 1));
        let i = InstanceId::parse("ins-a1b2c3d4").unwrap();
        let j = InstanceId::parse("ins-zzzzzzzz").unwrap();
        limits.check("alice", &i).unwrap();
        assert!(matches!(
            limits.check("alice", &i),
            Err(Limited::Instance { .. })
        ));
        limits.check("alice", &j).unwrap();
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
