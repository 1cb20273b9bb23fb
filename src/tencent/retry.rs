//! The one retry rule for Tencent calls (`backon`): transient failures only, a bounded number of
//! attempts, jittered exponential backoff, and at least a second after `RequestLimitExceeded`.
//!
//! The first success is returned at once: each console URL is single-use, and dropping one for a
//! stale error (as the official Python SDK's retryer does) loses it. Every attempt runs the whole
//! operation again, so each is signed afresh.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use super::error::{ApiErrorKind, TencentError};

/// How many times, and how patiently, transient failures are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Backoff before retry `n` is a random duration in `[base·2ⁿ/2, base·2ⁿ]`.
    pub base: Duration,
    /// Tencent's rate limit counts per second, so after `RequestLimitExceeded` wait at least this.
    pub rate_limited_floor: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            base: Duration::from_millis(200),
            rate_limited_floor: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The wait after `e`, given the backoff's own choice `delay`.
    fn floor(&self, e: &TencentError, delay: Duration) -> Duration {
        match e {
            TencentError::Api {
                kind: ApiErrorKind::RateLimited,
                ..
            } => delay.max(self.rate_limited_floor),
            _ => delay,
        }
    }
}

/// Runs `op` until it succeeds, fails for good, or the policy's attempts are spent; the value and
/// the attempts it took (1 when the first succeeded). `before_retry` is told each transient
/// failure, the attempt that failed (from 1) and the wait before the next.
pub(super) async fn retry<T, Fut>(
    policy: &RetryPolicy,
    mut op: impl FnMut() -> Fut,
    mut before_retry: impl FnMut(&TencentError, u32, Duration),
) -> Result<(T, u32), TencentError>
where
    Fut: Future<Output = Result<T, TencentError>>,
{
    // backon's jitter adds up to one more delay: from base/2 it spans [base/2, base), doubling.
    let backoff = ExponentialBuilder::new()
        .with_min_delay(policy.base / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_delay()
        .with_max_times(policy.attempts.saturating_sub(1) as usize);
    let attempts = AtomicU32::new(0);
    let value = (|| {
        attempts.fetch_add(1, Ordering::Relaxed);
        op()
    })
    .retry(backoff)
    .when(TencentError::is_transient)
    .adjust(|e, delay| delay.map(|d| policy.floor(e, d)))
    .notify(|e, delay| before_retry(e, attempts.load(Ordering::Relaxed), delay))
    .await?;
    Ok((value, attempts.load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            base: Duration::from_millis(200),
            rate_limited_floor: Duration::from_secs(1),
        }
    }

    fn rate_limited() -> TencentError {
        TencentError::Api {
            kind: ApiErrorKind::RateLimited,
            code: "RequestLimitExceeded".into(),
            message: String::new(),
            request_id: "r".into(),
        }
    }

    /// The first success ends the loop, even when an earlier attempt failed; each wait lies in
    /// the documented band, and a rate limit waits at least the floor.
    #[tokio::test(start_paused = true)]
    async fn the_first_success_is_returned_after_bounded_waits() {
        let calls = AtomicU32::new(0);
        let mut waits = Vec::new();
        let (v, attempts) = retry(
            &policy(3),
            || {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                async move {
                    match n {
                        0 => Err(TencentError::Timeout(Duration::from_secs(1))),
                        1 => Err(rate_limited()),
                        _ => Ok(n),
                    }
                }
            },
            |_, attempt, wait| waits.push((attempt, wait)),
        )
        .await
        .unwrap();
        assert_eq!((v, attempts), (2, 3));
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert_eq!(waits.len(), 2);
        assert_eq!(waits[0].0, 1);
        assert!(
            (Duration::from_millis(100)..=Duration::from_millis(200)).contains(&waits[0].1),
            "{waits:?}"
        );
        assert_eq!(waits[1], (2, Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn lasting_failures_are_not_retried_and_attempts_are_bounded() {
        let calls = AtomicU32::new(0);
        let err = retry(
            &policy(3),
            || {
                calls.fetch_add(1, Ordering::Relaxed);
                async { Err::<(), _>(TencentError::Withdrawn) }
            },
            |_, _, _| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, TencentError::Withdrawn));
        assert_eq!(calls.load(Ordering::Relaxed), 1);

        let calls = AtomicU32::new(0);
        let err = retry(
            &policy(2),
            || {
                calls.fetch_add(1, Ordering::Relaxed);
                async { Err::<(), _>(TencentError::Connect("refused".into())) }
            },
            |_, _, _| {},
        )
        .await
        .unwrap_err();
        assert!(matches!(err, TencentError::Connect(_)));
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }
}
