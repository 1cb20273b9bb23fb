//! The on-call cache: the last good entries per escalation policy, refreshed in the background
//! on the injected clock, and the one answer the core asks for.
//!
//! Fail closed: the entries are served for `refresh + stale_grace` after the last good answer
//! (the next refresh is due after `refresh`; from then on PagerDuty is failing, and the grace
//! runs). Past that, or before the first answer, nobody is on call.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use super::{OnCall, OnCallConfig, PagerDuty, PagerDutyError, Shift};
use crate::clock::Clock;
use crate::metrics::Metrics;

#[derive(Default)]
struct State {
    /// Escalation policy → its entries.
    by_policy: HashMap<String, Vec<Shift>>,
    last_ok: Option<SystemTime>,
    /// Failed refreshes in a row, and the last one's error.
    failures: u64,
    last_error: Option<PagerDutyError>,
}

pub struct OnCallCache {
    config: OnCallConfig,
    clock: Clock,
    state: RwLock<State>,
    metrics: Option<Arc<Metrics>>,
    /// Counts refresh attempts, for whoever waits for the next one (tests, the demo).
    attempts: watch::Sender<u64>,
}

impl OnCallCache {
    pub fn new(config: OnCallConfig, clock: Clock) -> Self {
        Self {
            config,
            clock,
            state: RwLock::default(),
            metrics: None,
            attempts: watch::channel(0).0,
        }
    }

    /// Counts refresh failures and exports staleness into `metrics` (both at 0 from now on).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        metrics.oncall_refresh_failures.inc_by(0);
        // Nothing fetched yet: nobody is on call until the first answer.
        metrics.oncall_stale.set(1);
        self.metrics = Some(metrics);
        self
    }

    pub fn config(&self) -> &OnCallConfig {
        &self.config
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// When the entries stop being served if no refresh succeeds first.
    fn serve_until(&self, last_ok: SystemTime) -> SystemTime {
        last_ok + self.config.refresh + self.config.stale_grace
    }

    fn fresh(&self, s: &State, now: SystemTime) -> bool {
        s.last_ok.is_some_and(|t| now <= self.serve_until(t))
    }

    /// Whether the cache serves nothing now (PagerDuty failing past the grace, or never
    /// answered): nobody is on call.
    pub fn is_stale(&self) -> bool {
        !self.fresh(&self.read(), self.clock.now())
    }

    /// Is this Discord member on call now, at `max_escalation_level` or below, and until when?
    pub fn lookup(&self, discord_user: u64) -> OnCall {
        let Some(pd_user) = self.config.pagerduty_user(discord_user) else {
            return OnCall::NotMapped;
        };
        let now = self.clock.now();
        let s = self.read();
        if !self.fresh(&s, now) {
            return OnCall::Unavailable { last_ok: s.last_ok };
        }
        let max_level = self.config.max_escalation_level;
        // The policies in config order, so the same rota gives the same evidence.
        let best = self
            .config
            .escalation_policy_ids
            .iter()
            .filter_map(|p| s.by_policy.get(p))
            .flatten()
            .filter(|e| {
                e.user == pd_user
                    && e.level <= max_level
                    && e.start <= now
                    && e.end.is_none_or(|end| now < end)
            })
            // The lowest level; then the shift that lasts longest (open-ended first).
            .min_by_key(|e| {
                (
                    e.level,
                    std::cmp::Reverse(e.end.map_or(u64::MAX, |t| {
                        t.duration_since(SystemTime::UNIX_EPOCH)
                            .unwrap_or_default()
                            .as_secs()
                    })),
                )
            });
        match best {
            Some(e) => OnCall::On(e.clone()),
            None => OnCall::Off { max_level },
        }
    }

    /// Keeps a fresh answer.
    pub fn store(&self, shifts: Vec<Shift>) {
        let now = self.clock.now();
        let mut by_policy: HashMap<String, Vec<Shift>> = HashMap::new();
        for s in shifts {
            by_policy.entry(s.policy.clone()).or_default().push(s);
        }
        {
            let mut s = self.write();
            if s.failures > 0 {
                tracing::info!(
                    failures = s.failures,
                    "PagerDuty answers again; on-call entries are fresh"
                );
            }
            *s = State {
                by_policy,
                last_ok: Some(now),
                failures: 0,
                last_error: None,
            };
        }
        if let Some(m) = &self.metrics {
            m.oncall_stale.set(0);
        }
        self.attempts.send_modify(|n| *n += 1);
    }

    /// Notes a failed refresh: the last good entries are served until the grace runs out.
    pub fn fail(&self, e: PagerDutyError) {
        let now = self.clock.now();
        let stale = {
            let mut s = self.write();
            s.failures += 1;
            s.last_error = Some(e.clone());
            !self.fresh(&s, now)
        };
        match &e {
            PagerDutyError::Unauthorized | PagerDutyError::Forbidden => {
                tracing::error!(error = %e, stale, "PagerDuty refused the on-call refresh")
            }
            _ => tracing::warn!(error = %e, stale, "PagerDuty on-call refresh failed"),
        }
        if let Some(m) = &self.metrics {
            m.oncall_refresh_failures.inc();
            m.oncall_stale.set(i64::from(stale));
        }
        self.attempts.send_modify(|n| *n += 1);
    }

    /// Refresh attempts so far (each [`Self::store`] or [`Self::fail`]); `changed()` wakes at
    /// the next.
    pub fn attempts(&self) -> watch::Receiver<u64> {
        self.attempts.subscribe()
    }

    /// One refresh; returns how long to wait before the next (`ratelimit-reset` after a 429).
    pub async fn refresh_once(&self, client: &PagerDuty) -> Duration {
        let next = self.attempt(client).await;
        self.clock.until(next)
    }

    /// One refresh; returns when the next is due: `refresh` after this one started (so the pace
    /// does not drift with PagerDuty's latency), or `ratelimit-reset` after a 429's answer. The
    /// deadline rests only on times read before the attempt is announced, so whoever sees the
    /// request or the announcement and then moves the clock moves it past a deadline already
    /// fixed.
    async fn attempt(&self, client: &PagerDuty) -> SystemTime {
        let started = self.clock.now();
        let result = client.oncalls().await;
        let next = match &result {
            Err(PagerDutyError::RateLimited(reset)) => {
                self.clock.now() + (*reset).max(Duration::from_secs(1))
            }
            _ => started + self.config.refresh,
        };
        match result {
            Ok(shifts) => self.store(shifts),
            Err(e) => self.fail(e),
        }
        next
    }

    /// Refreshes every `refresh` (sooner or later as a 429 says), forever, starting after
    /// `first_wait`.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        client: PagerDuty,
        first_wait: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            let mut next = cache.clock.now() + first_wait;
            loop {
                cache.clock.sleep_until(next).await;
                next = cache.attempt(&client).await;
            }
        })
    }

    /// What `/healthz` says while PagerDuty fails; `None` while it answers.
    pub fn health_detail(&self) -> Option<String> {
        let now = self.clock.now();
        let s = self.read();
        let why = s
            .last_error
            .as_ref()
            .map_or_else(|| "no answer yet".to_owned(), ToString::to_string);
        match s.last_ok {
            None => Some(format!(
                "oncall: PagerDuty could not be reached yet ({why}): nobody counts as on call (fail closed)"
            )),
            Some(_) if s.failures == 0 && self.fresh(&s, now) => None,
            Some(t) if self.fresh(&s, now) => Some(format!(
                "oncall: PagerDuty failing ({why}, {} time(s) in a row); serving the on-call entries from {} for {} s more (stale_grace_secs)",
                s.failures,
                super::rfc3339(t),
                self.serve_until(t).duration_since(now).unwrap_or_default().as_secs()
            )),
            Some(t) => Some(format!(
                "oncall: STALE: PagerDuty has failed past the grace period ({why}); the last good answer is from {}: nobody counts as on call (fail closed)",
                super::rfc3339(t)
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Snowflake;
    use crate::oncall::Provider;

    const ALICE: u64 = 700000000000000001;
    const BOB: u64 = 700000000000000002;

    fn config() -> OnCallConfig {
        OnCallConfig {
            provider: Provider::Pagerduty,
            api_base: "https://api.pagerduty.com".parse().unwrap(),
            escalation_policy_ids: vec!["P1".into(), "P2".into()],
            max_escalation_level: 1,
            refresh: Duration::from_secs(60),
            stale_grace: Duration::from_secs(300),
            users: vec![
                (Snowflake::new(ALICE).unwrap(), "UA".into()),
                (Snowflake::new(BOB).unwrap(), "UB".into()),
            ],
        }
    }

    fn shift(policy: &str, level: u32, user: &str, from: SystemTime, secs: Option<u64>) -> Shift {
        Shift {
            policy: policy.into(),
            level,
            user: user.into(),
            start: from,
            end: secs.map(|s| from + Duration::from_secs(s)),
        }
    }

    #[test]
    fn a_member_is_on_call_only_at_the_level_and_within_the_shift() {
        let clock = Clock::adjustable();
        let cache = OnCallCache::new(config(), clock.clone());
        assert!(matches!(
            cache.lookup(ALICE),
            OnCall::Unavailable { last_ok: None }
        ));
        let now = clock.now();
        let before = now - Duration::from_secs(60);
        let rota = vec![
            shift("P1", 2, "UB", before, None),
            shift("P9", 1, "UB", before, None),
            shift("P2", 1, "UA", before, Some(3600)),
            shift("P1", 1, "UA", before, Some(600)),
        ];
        cache.store(rota.clone());
        match cache.lookup(ALICE) {
            OnCall::On(s) => {
                assert_eq!((s.policy.as_str(), s.level), ("P2", 1), "the longest shift");
                assert_eq!(s.end, Some(before + Duration::from_secs(3600)));
            }
            other => panic!("{other:?}"),
        }
        // Level 2 is past max_escalation_level; P9 is not a configured policy.
        assert_eq!(cache.lookup(BOB), OnCall::Off { max_level: 1 });
        assert_eq!(cache.lookup(42), OnCall::NotMapped);
        // The same rota an hour later: both of Alice's shifts have ended.
        clock.advance(Duration::from_secs(3600));
        cache.store(rota);
        assert_eq!(cache.lookup(ALICE), OnCall::Off { max_level: 1 });
    }

    #[test]
    fn failures_serve_the_cache_for_the_grace_then_nobody() {
        let clock = Clock::adjustable();
        let metrics = Arc::new(Metrics::new());
        let cache = OnCallCache::new(config(), clock.clone()).with_metrics(Arc::clone(&metrics));
        assert!(metrics.render().contains("vncbot_oncall_stale 1"));
        cache.store(vec![shift("P1", 1, "UA", clock.now(), None)]);
        assert!(cache.health_detail().is_none());
        assert!(metrics.render().contains("vncbot_oncall_stale 0"));
        clock.advance(Duration::from_secs(60));
        cache.fail(PagerDutyError::Status(500));
        assert!(matches!(cache.lookup(ALICE), OnCall::On(_)));
        let detail = cache.health_detail().unwrap();
        assert!(detail.contains("serving the on-call entries"), "{detail}");
        clock.advance(Duration::from_secs(301));
        cache.fail(PagerDutyError::Timeout(Duration::from_secs(10)));
        assert!(matches!(
            cache.lookup(ALICE),
            OnCall::Unavailable { last_ok: Some(_) }
        ));
        assert!(cache.health_detail().unwrap().contains("STALE"));
        let text = metrics.render();
        assert!(text.contains("vncbot_oncall_stale 1"), "{text}");
        assert!(
            text.contains("vncbot_oncall_refresh_failures_total 2"),
            "{text}"
        );
    }
}
