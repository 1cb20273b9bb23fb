//! "Now", injected: the system clock in production, a clock that tests move forward.
//!
//! Every deadline the bot keeps (a grant's window, a link's 15 seconds, a request's TTL) is a
//! wall-clock time, because the journal records wall-clock times and a restart rebuilds from
//! them. Waits for such a deadline go through [`Clock::sleep_until`], so a test that calls
//! [`Clock::advance`] sees a 10-minute window end at once, over real sockets, without pausing
//! tokio's own timers (which the HTTP clients' timeouts need).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

/// The source of "now". Cheap to clone; clones share one offset.
#[derive(Clone, Default)]
pub struct Clock {
    shift: Option<Arc<Shift>>,
}

/// A test clock: the system clock plus an offset that only grows.
struct Shift {
    offset: Mutex<Duration>,
    moved: watch::Sender<()>,
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shift {
            None => f.write_str("Clock::system"),
            Some(s) => write!(f, "Clock::adjustable(+{:?})", lock(&s.offset)),
        }
    }
}

fn lock(m: &Mutex<Duration>) -> std::sync::MutexGuard<'_, Duration> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self { shift: None }
    }

    /// A clock that follows the system clock and can be moved forward with [`Clock::advance`]
    /// (tests, and the demo's tour).
    pub fn adjustable() -> Self {
        let (moved, _) = watch::channel(());
        Self {
            shift: Some(Arc::new(Shift {
                offset: Mutex::new(Duration::ZERO),
                moved,
            })),
        }
    }

    pub fn now(&self) -> SystemTime {
        let now = SystemTime::now();
        match &self.shift {
            None => now,
            Some(s) => now + *lock(&s.offset),
        }
    }

    /// Moves an adjustable clock forward and wakes every wait whose deadline has come. A no-op
    /// on the system clock.
    pub fn advance(&self, by: Duration) {
        if let Some(s) = &self.shift {
            *lock(&s.offset) += by;
            s.moved.send_replace(());
        }
    }

    /// How long from now until `t` (zero when it has passed).
    pub fn until(&self, t: SystemTime) -> Duration {
        t.duration_since(self.now()).unwrap_or(Duration::ZERO)
    }

    /// Waits until this clock reads `t` or later.
    pub async fn sleep_until(&self, t: SystemTime) {
        let mut moved = self.shift.as_ref().map(|s| s.moved.subscribe());
        loop {
            let left = self.until(t);
            if left.is_zero() {
                return;
            }
            match &mut moved {
                None => tokio::time::sleep(left).await,
                Some(rx) => {
                    tokio::select! {
                        () = tokio::time::sleep(left) => {}
                        _ = rx.changed() => {}
                    }
                }
            }
        }
    }

    /// Waits for `d` on this clock.
    pub async fn sleep(&self, d: Duration) {
        self.sleep_until(self.now() + d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn advancing_wakes_a_wait_at_once() {
        let clock = Clock::adjustable();
        let deadline = clock.now() + Duration::from_secs(600);
        let waiting = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep_until(deadline).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        clock.advance(Duration::from_secs(300));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "half-way is not the deadline");
        clock.advance(Duration::from_secs(300));
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the wait ends once the clock passes the deadline")
            .unwrap();
        assert!(clock.now() >= deadline);
    }

    #[tokio::test]
    async fn the_system_clock_does_not_move_on_request() {
        let clock = Clock::system();
        let before = clock.now();
        clock.advance(Duration::from_secs(3600));
        assert!(clock.now() < before + Duration::from_secs(60));
        clock.sleep(Duration::from_millis(1)).await;
    }
}
