//! The core, free of any transport: requests in, outcomes out. The Discord adapter and
//! `vncbot url` both call it; it knows nothing of serenity.
//!
//! [`decision::decide`] is pure; [`Core`] ties it to the live policy and limits, the audit
//! journal (every decision is recorded before it takes effect) and Tencent (behind the
//! [`Console`] trait, so the core is tested without HTTP).

pub mod admin;
pub mod approvals;
pub mod break_glass;
pub mod decision;
pub mod grants;
pub mod outcome;
pub mod pick;
mod record;
pub mod refusal;
pub mod request;
pub mod role_changes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::audit::{Actor, AuditError, Entry, Event, Journal};
use crate::clock::Clock;
use crate::ids::{InstanceId, Quoted, Region, Snowflake};
use crate::limits::{RequestLimits, Spend};
use crate::link::VALID_FOR_SECS;
use crate::metrics::Metrics;
use crate::tencent::{self, Catalog, View};
use crate::tencent::{Console, TencentClient};

pub use approvals::{ApprovalEvent, ApprovalRequest, Choice, Opened, Standing, VoteRefusal, Voted};
pub use break_glass::{
    AckRefusal, AckStanding, Answer, BreakGlassEvent, BreakGlassUse, BrokeGlass,
};
pub use decision::{decide, Decision, Rejection};
pub use grants::{
    EndWhy, ExtendRefusal, Extended, Extending, Grant, GrantEvent, HeadsUp, Minted, Press,
};
pub use outcome::{Exit, FailureKind, Outcome};
pub use refusal::{Refusal, MAX_REASON_CHARS, MIN_BREAK_GLASS_REASON_CHARS, MIN_REASON_CHARS};
pub use request::{Approved, Authority, Issued, Policy, Request};

/// How long a caller may queue for a Tencent slot before being told to retry: enough for a burst
/// of several hundred requests at 10 a second, well inside Discord's 15-minute interaction token.
pub const API_QUEUE_LIMIT: Duration = Duration::from_secs(60);

/// What a config reload swaps, as one unit: a request sees the old policy and limits or the new
/// ones, never a mix.
struct Live {
    policy: Arc<Policy>,
    limits: Arc<RequestLimits>,
}

/// Refusals past a member's refusal budget: answered at once, recorded later as one count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suppressed {
    pub actor: Actor,
    pub guild: Option<Snowflake>,
    pub count: u64,
}

/// The core: policy, limits, journal and Tencent.
pub struct Core<C = TencentClient> {
    live: RwLock<Live>,
    journal: Journal,
    console: C,
    /// Actor key → suppressed refusals since the last flush.
    suppressed: Mutex<HashMap<String, Suppressed>>,
    grants: grants::Grants,
    approvals: approvals::Approvals,
    break_glass: break_glass::BreakGlasses,
    timers: grants::timers::Timers,
    catalog: Option<CatalogLink>,
    clock: Clock,
    /// Where outcomes are counted (see [`Core::note`]); the journal counts into it too.
    metrics: Arc<Metrics>,
    /// Which role changes are recorded already (see [`role_changes`]).
    role_changes: role_changes::Ledger,
    /// Candidates offered for ambiguous names ([`pick`]).
    picks: pick::Picks,
}

impl<C> Core<C> {
    /// Lists every region now (for `vncbot url NAME`, which has no background refresher).
    pub async fn refresh_catalog(&self) {
        if let Some(link) = &self.catalog {
            link.catalog.refresh_all(&*link.source).await;
        }
    }

    /// The catalog and the client that refreshes it, when `[catalog] enabled`.
    pub fn catalog_link(&self) -> Option<&CatalogLink> {
        self.catalog.as_ref()
    }

    /// Resolves names, vouches for tags and re-reads stopped instances through this catalog.
    pub fn with_catalog(mut self, link: CatalogLink) -> Self {
        self.catalog = Some(link);
        self
    }
}

/// The instance catalog and its own Tencent client.
pub struct CatalogLink {
    pub catalog: Arc<Catalog>,
    pub source: Arc<TencentClient>,
}

impl<C: Console> Core<C> {
    pub fn new(policy: Policy, limits: RequestLimits, journal: Journal, console: C) -> Self {
        // One registry per core: the journal's, until `with_metrics` gives both another.
        let journal_metrics = journal.metrics();
        Self {
            live: RwLock::new(Live {
                policy: Arc::new(policy),
                limits: Arc::new(limits),
            }),
            journal,
            console,
            suppressed: Mutex::new(HashMap::new()),
            grants: grants::Grants::default(),
            approvals: approvals::Approvals::default(),
            break_glass: break_glass::BreakGlasses::default(),
            timers: grants::timers::Timers::default(),
            catalog: None,
            clock: Clock::system(),
            metrics: journal_metrics,
            role_changes: role_changes::Ledger::default(),
            picks: pick::Picks::default(),
        }
    }

    /// Counts this core's outcomes, and its journal's writes, into `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.journal.count_into(&metrics);
        // Every outcome of ours is exported at 0 from the start (Tencent's codes as they come).
        let ours: Vec<Outcome> = Outcome::ours().collect();
        metrics.know_outcomes(ours.iter().map(Outcome::code));
        self.metrics = metrics;
        self
    }

    /// The registry this core counts into: what the admin endpoint's `/metrics` serves.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The clock every deadline and record time of this core is read from.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// What becomes of grants: ends, expired links, grants resumed at start. Adapters render
    /// these; they decide nothing.
    pub fn grant_events(&self) -> tokio::sync::broadcast::Receiver<GrantEvent> {
        self.grants.subscribe()
    }

    /// The catalog as it stands (a cheap snapshot), when there is one.
    pub fn catalog_view(&self) -> Option<View> {
        self.catalog.as_ref().map(|c| c.catalog.view())
    }

    /// The instance's name, where the catalog knows it.
    pub fn instance_name(&self, id: &InstanceId) -> Option<String> {
        let view = self.catalog_view()?;
        view.lookup(id)
            .map(|i| i.name.clone())
            .filter(|n| !n.is_empty())
    }

    /// Autocomplete for `/vnc instance:`: up to 25 instances these roles may open under the live
    /// policy whose ID, name, IPs or tag values match `typed`, as `(label, ID)`. From memory
    /// only: never a Tencent call.
    pub fn autocomplete(
        &self,
        guild: Option<Snowflake>,
        roles: &[Snowflake],
        typed: &str,
    ) -> Vec<(String, String)> {
        let policy = self.policy();
        let (Some(view), Some(guild)) = (self.catalog_view(), guild) else {
            return Vec::new();
        };
        if !policy.guilds.contains(&guild) || roles.is_empty() {
            return Vec::new();
        }
        let authority = Authority::Roles(roles.to_vec());
        view.search(typed, tencent::MAX_CHOICES, |i| {
            policy.regions.contains(&i.region) && decision::may_open(&policy.rules, &authority, i)
        })
        .into_iter()
        .map(|i| (tencent::choice_label(i), i.id.to_string()))
        .collect()
    }

    /// The catalog's tags for an instance (`None`: it cannot vouch).
    fn tags_of(&self, view: Option<&View>, id: &InstanceId) -> Option<Vec<(String, String)>> {
        view?.lookup(id).map(|i| i.tags.clone())
    }

    /// The catalog says the instance cannot serve a console: re-read that one instance and, if it
    /// is still so, the refusal to give before Tencent is asked. An instance the catalog does not
    /// know never blocks a request.
    async fn not_ready(&self, id: &InstanceId, region: &Region) -> Option<Refusal> {
        let link = self.catalog.as_ref()?;
        let seen = link.catalog.lookup(id)?;
        if seen.state.can_serve_console() {
            return None;
        }
        // Only a fresh read refuses: gone, or unreadable now, and Tencent decides.
        let now = match link.catalog.refresh_one(&*link.source, region, id).await {
            Ok(Some(now)) => now,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(instance = %id, state = seen.state.as_str(), error = %e,
                    "could not re-read a stopped instance; asking Tencent anyway");
                return None;
            }
        };
        (!now.state.can_serve_console()).then(|| Refusal::NotReady {
            // The name is the cloud account's text: quoted, so no Markdown in it renders.
            label: if now.name.is_empty() {
                now.id.to_string()
            } else {
                format!("{} ({})", Quoted::new(&now.name), now.id)
            },
            state: now.state.as_str().to_owned(),
        })
    }

    fn live(&self) -> (Arc<Policy>, Arc<RequestLimits>) {
        let live = self.live.read().unwrap_or_else(|e| e.into_inner());
        (Arc::clone(&live.policy), Arc::clone(&live.limits))
    }

    pub fn policy(&self) -> Arc<Policy> {
        self.live().0
    }

    pub fn limits(&self) -> Arc<RequestLimits> {
        self.live().1
    }

    /// Swaps the policy, and the limits when given (their counters then start afresh), in one
    /// step (config reload).
    pub fn reconfigure(&self, policy: Policy, limits: Option<RequestLimits>) {
        let mut live = self.live.write().unwrap_or_else(|e| e.into_inner());
        live.policy = Arc::new(policy);
        if let Some(l) = limits {
            live.limits = Arc::new(l);
        }
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Decide and mint.
    pub async fn handle(&self, req: Request) -> Result<Issued, Refusal> {
        let approved = self.decide(req).await?;
        self.mint(&approved).await
    }

    /// Decides on a request and records the decision. Only an approved request, whose
    /// `requested` record is on disk, may go on to Tencent. Every request counts: an approved one
    /// against the member's limit, a refused one against their (looser) refusal budget, and past
    /// that budget the member is answered at once and the attempts are recorded as one count.
    pub async fn decide(&self, req: Request) -> Result<Approved, Refusal> {
        let approved = self.admit(&req, Spend::MemberAndInstance).await?;
        let seq = self
            .record(
                Event::Requested,
                &req,
                Some(&approved.instance),
                Some(&approved.region),
                Entry {
                    rule: approved.rule,
                    ..Entry::default()
                },
            )
            .await
            .map_err(Refusal::AuditUnavailable)?;
        Ok(Approved {
            audit_seq: seq,
            ..approved
        })
    }

    /// The decision and its limits: an approval (not yet recorded; the caller records what it
    /// means) or a refusal (recorded here).
    async fn admit(&self, req: &Request, spend: Spend) -> Result<Approved, Refusal> {
        let (policy, limits) = self.live();
        let key = req.actor.key();
        let view = self.catalog_view();
        let (owned, held_key) = (req.clone(), key.clone());
        let decided = limits
            .with(move |g| {
                g.check_refusal(&held_key)?;
                let d = decision::decide_with(
                    &policy,
                    &decision::Spending(g, spend),
                    view.as_ref(),
                    &owned,
                );
                match &d {
                    Decision::Approve(a) => g.take_spend(&held_key, &a.instance, spend),
                    Decision::Refuse(_) => g.take_refusal(&held_key),
                }
                Ok(d)
            })
            .await
            .map_err(|e| Refusal::AuditUnavailable(e.into()))?;
        let decision = match decided {
            Ok(d) => d,
            Err(retry_after) => {
                self.suppress(&key, &req.actor, req.guild);
                return Err(Refusal::TooManyRefusals { retry_after });
            }
        };
        match decision {
            Decision::Approve(approved) => Ok(*approved),
            Decision::Refuse(rejected) => {
                let Rejection {
                    refusal,
                    instance,
                    region,
                } = *rejected;
                let outcome = refusal.outcome();
                if let Refusal::Limited(l) = &refusal {
                    self.count_limited(l);
                }
                // A refusal stays a refusal even when it cannot be recorded; the failure to
                // record it is what the user needs to hear about, and admins see it logged.
                match self
                    .record(
                        outcome.event(),
                        req,
                        instance.as_ref(),
                        region.as_ref(),
                        Entry {
                            code: Some(outcome.code().to_owned()),
                            ..Entry::default()
                        },
                    )
                    .await
                {
                    Ok(_) => {
                        self.count(&outcome);
                        Err(refusal)
                    }
                    Err(e) => Err(Refusal::AuditUnavailable(e)),
                }
            }
        }
    }

    fn suppress(&self, key: &str, actor: &Actor, guild: Option<Snowflake>) {
        self.metrics.limited("refusals");
        let mut s = self.suppressed.lock().unwrap_or_else(|e| e.into_inner());
        s.entry(key.to_owned())
            .or_insert_with(|| Suppressed {
                actor: actor.clone(),
                guild,
                count: 0,
            })
            .count += 1;
    }

    /// Records the refusals suppressed since the last call, one `limited` record per member with
    /// the count, and returns them (for the audit channel). Called every minute and at shutdown.
    pub async fn flush_suppressed(&self) -> Result<Vec<Suppressed>, AuditError> {
        let batch: Vec<Suppressed> = {
            let mut s = self.suppressed.lock().unwrap_or_else(|e| e.into_inner());
            s.drain().map(|(_, v)| v).collect()
        };
        for (i, s) in batch.iter().enumerate() {
            let entry = Entry {
                guild: s.guild.map(Snowflake::get),
                code: Some(Outcome::TooManyRefusals.code().to_owned()),
                count: Some(s.count),
                ..Entry::default()
            };
            let written = self.append(Event::Limited, &s.actor, entry).await;
            if written.is_ok() {
                self.metrics
                    .command_n(Outcome::TooManyRefusals.code(), s.count);
            }
            if let Err(e) = written {
                // Keep the counts not yet written for the next flush.
                let mut map = self.suppressed.lock().unwrap_or_else(|e| e.into_inner());
                for s in &batch[i..] {
                    map.entry(s.actor.key())
                        .and_modify(|m| m.count += s.count)
                        .or_insert_with(|| s.clone());
                }
                return Err(e);
            }
        }
        Ok(batch)
    }

    /// Calls Tencent for an approved request and records the outcome. The approval is checked
    /// once more against the live policy first (a reload may have removed the rule while it
    /// waited). A URL whose `issued` record cannot be written is dropped unseen.
    pub async fn mint(&self, a: &Approved) -> Result<Issued, Refusal> {
        self.mint_while(a, &|| true).await
    }

    /// [`Core::mint`], with `still_live` asked with the policy right before each attempt is sent
    /// (a grant that ended while its press waited mints nothing).
    pub async fn mint_while(
        &self,
        a: &Approved,
        still_live: &(dyn Fn() -> bool + Sync),
    ) -> Result<Issued, Refusal> {
        let entry = || Entry {
            guild: a.guild.map(Snowflake::get),
            channel: a.channel.map(Snowflake::get),
            instance: Some(a.instance.to_string()),
            region: Some(a.region.to_string()),
            reason: a.reason.clone(),
            rule: a.rule,
            refers_to: Some(a.audit_seq),
            ..Entry::default()
        };
        // Checked now and again right before each attempt is sent (after the queue wait): a
        // reload that removed the rule stops requests already waiting.
        let tags = self.tags_of(self.catalog_view().as_ref(), &a.instance);
        let denied_now = || {
            decision::authorize(
                &self.policy().rules,
                &a.authority,
                &a.instance,
                &a.region,
                tags.as_deref(),
            )
            .err()
        };
        // The state check costs a Tencent read: only for a request still allowed and live.
        if denied_now().is_none() && still_live() {
            if let Some(refusal) = self.not_ready(&a.instance, &a.region).await {
                self.note(&refusal.outcome(), &a.actor, entry())
                    .await
                    .map_err(Refusal::AuditUnavailable)?;
                return Err(refusal);
            }
        }
        let result = match denied_now() {
            Some(_) => Err(crate::tencent::TencentError::Withdrawn),
            None if !still_live() => Err(crate::tencent::TencentError::Withdrawn),
            None => {
                let still_allowed = || still_live() && denied_now().is_none();
                self.console
                    .describe_instance_vnc_url(&a.region, &a.instance, &still_allowed)
                    .await
            }
        };
        if let Err(crate::tencent::TencentError::Withdrawn) = result {
            let refusal = match denied_now() {
                Some(denied) => denied,
                None if !still_live() => Refusal::GrantEnded,
                None => Refusal::Denied {
                    instance: a.instance.clone(),
                    region: a.region.clone(),
                    would_allow: Vec::new(),
                    needs_tags: Vec::new(),
                },
            };
            tracing::warn!(instance = %a.instance, audit_seq = a.audit_seq,
                "an approved request lost its rule (or its grant) before Tencent was called");
            self.note(
                &refusal.outcome(),
                &a.actor,
                Entry {
                    rule: None,
                    ..entry()
                },
            )
            .await
            .map_err(Refusal::AuditUnavailable)?;
            return Err(refusal);
        }
        match result {
            Ok(vnc) => {
                let appended = self
                    .append(
                        Event::Issued,
                        &a.actor,
                        Entry {
                            request_id: Some(vnc.request_id.clone()),
                            ..entry()
                        },
                    )
                    .await
                    .map_err(Refusal::AuditUnavailable)?;
                tracing::info!(
                    instance = %a.instance, region = %a.region, request_id = %vnc.request_id,
                    attempts = vnc.attempts, audit_seq = appended.seq, "console URL issued"
                );
                // The link's 15 s run from Tencent's answer, read on this core's clock.
                let age = std::time::SystemTime::now()
                    .duration_since(vnc.issued_at)
                    .unwrap_or_default();
                Ok(Issued {
                    expires_at: self.clock.now() - age + Duration::from_secs(VALID_FOR_SECS),
                    url: vnc.url,
                    instance: a.instance.clone(),
                    region: a.region.clone(),
                    request_id: vnc.request_id,
                    audit_seq: appended.seq,
                })
            }
            Err(error) => {
                let code = error.code();
                let request_id = error.request_id().unwrap_or("-");
                if error.needs_admin() {
                    tracing::error!(instance = %a.instance, region = %a.region, code = %code,
                        request_id, error = %error, "Tencent call failed");
                } else {
                    tracing::warn!(instance = %a.instance, region = %a.region, code = %code,
                        request_id, error = %error, "Tencent call failed");
                }
                let _ = code;
                self.note(
                    &Outcome::tencent(&error),
                    &a.actor,
                    Entry {
                        request_id: error.request_id().map(str::to_owned),
                        ..entry()
                    },
                )
                .await
                .map_err(Refusal::AuditUnavailable)?;
                let message = error.user_message(&a.instance, &a.region);
                Err(Refusal::Tencent {
                    error: Box::new(error),
                    message,
                })
            }
        }
    }

    /// Records what became of an issued link: `delivered`, or `dm_failed` with its code.
    pub async fn record_delivery(
        &self,
        actor: &Actor,
        issued: &Issued,
        outcome: &Outcome,
    ) -> Result<(), AuditError> {
        self.note(
            outcome,
            actor,
            Entry {
                instance: Some(issued.instance.to_string()),
                region: Some(issued.region.to_string()),
                request_id: Some(issued.request_id.clone()),
                refers_to: Some(issued.audit_seq),
                ..Entry::default()
            },
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    //! The core with a fake Tencent behind [`Console`]: no HTTP, the real journal in a temp dir.

    use std::num::NonZeroU32;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::access::Rule;
    use crate::audit::verify_file;
    use crate::config::LimitsConfig;
    use crate::link::ConsoleUrl;
    use crate::tencent::{ApiErrorKind, TencentError, VncUrl};

    const ONCALL: u64 = 555000000000000001;
    const GUILD: u64 = 800000000000000001;

    /// Answers every call the same way; `gate` holds calls until the test lets them through.
    struct FakeTencent {
        calls: AtomicUsize,
        fail_with: Option<&'static str>,
        gate: Option<Arc<tokio::sync::Semaphore>>,
    }

    impl Console for FakeTencent {
        async fn describe_instance_vnc_url(
            &self,
            _region: &Region,
            _instance: &InstanceId,
            still_allowed: &(dyn Fn() -> bool + Sync),
        ) -> Result<VncUrl, TencentError> {
            if let Some(g) = &self.gate {
                g.acquire().await.unwrap().forget();
            }
            if !still_allowed() {
                return Err(TencentError::Withdrawn);
            }
            self.calls.fetch_add(1, Ordering::SeqCst);
            match self.fail_with {
                Some(code) => Err(TencentError::Api {
                    kind: ApiErrorKind::classify(code),
                    code: code.into(),
                    message: "m".into(),
                    request_id: "rid-failed".into(),
                }),
                None => Ok(VncUrl {
                    url: ConsoleUrl::compose("wss%3A%2F%2Fsecret-token").unwrap(),
                    request_id: "rid-ok".into(),
                    issued_at: SystemTime::now(),
                    attempts: 1,
                }),
            }
        }
    }

    fn sf(n: u64) -> Snowflake {
        Snowflake::new(n).unwrap()
    }

    fn policy() -> Policy {
        Policy {
            rules: vec![Rule {
                roles: vec![sf(ONCALL)],
                instances: vec!["*".into()],
                regions: None,
                tags: vec![],
                gate: Default::default(),
            }],
            regions: vec![Region::parse("ap-guangzhou").unwrap()],
            require_reason: false,
            guilds: vec![sf(GUILD)],
            grant_for: std::time::Duration::from_secs(600),
            links_per_grant: 3,
            tencent: None,
            approvals: None,
        }
    }

    fn limits(refusals: u32) -> RequestLimits {
        let n = |v| NonZeroU32::new(v).unwrap();
        RequestLimits::new(&LimitsConfig {
            per_user_per_minute: n(5),
            per_instance_per_minute: n(10),
            refusals_per_user_per_minute: n(refusals),
            api_per_second: n(10),
        })
    }

    /// (event, code, refers_to, count) of one record.
    type Row = (String, Option<String>, Option<u64>, Option<u64>);

    struct Fixture {
        dir: tempfile::TempDir,
        core: Core<FakeTencent>,
    }

    impl Fixture {
        fn new(fail_with: Option<&'static str>, gate: Option<Arc<tokio::sync::Semaphore>>) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let (journal, _) = Journal::open(&dir.path().join("audit.jsonl")).unwrap();
            let tencent = FakeTencent {
                calls: AtomicUsize::new(0),
                fail_with,
                gate,
            };
            Self {
                core: Core::new(policy(), limits(3), journal, tencent),
                dir,
            }
        }

        fn calls(&self) -> usize {
            self.core.console.calls.load(Ordering::SeqCst)
        }

        /// (event, code, refers_to, count) of every record, after checking the chain.
        fn records(&self) -> Vec<Row> {
            let path = self.dir.path().join("audit.jsonl");
            verify_file(&path).unwrap().unwrap();
            std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    (
                        v["event"].as_str().unwrap().to_owned(),
                        v["code"].as_str().map(str::to_owned),
                        v["refers_to"].as_u64(),
                        v["count"].as_u64(),
                    )
                })
                .collect()
        }
    }

    fn member(id: u64, roles: &[u64], instance: &str) -> Request {
        Request {
            actor: Actor::Discord {
                id,
                name: format!("m{id}"),
            },
            authority: Authority::Roles(roles.iter().map(|r| sf(*r)).collect()),
            guild: Some(sf(GUILD)),
            channel: None,
            instance: instance.into(),
            region: None,
            reason: None,
        }
    }

    fn events(f: &Fixture) -> Vec<String> {
        f.records().into_iter().map(|r| r.0).collect()
    }

    #[tokio::test]
    async fn an_approved_request_is_recorded_before_and_after_tencent() {
        let f = Fixture::new(None, None);
        let issued = f
            .core
            .handle(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        assert_eq!(issued.request_id, "rid-ok");
        assert_eq!(f.calls(), 1);
        f.core
            .record_delivery(
                &Actor::Local { user: "t".into() },
                &issued,
                &Outcome::Delivered,
            )
            .await
            .unwrap();
        let r = f.records();
        assert_eq!(events(&f), ["requested", "issued", "delivered"]);
        assert_eq!(r[1].2, Some(1), "issued refers to its request");
        assert_eq!(r[2].2, Some(issued.audit_seq));
        let journal = std::fs::read_to_string(f.dir.path().join("audit.jsonl")).unwrap();
        assert!(!journal.contains("secret-token"));
    }

    #[tokio::test]
    async fn refusals_are_recorded_and_never_reach_tencent() {
        let f = Fixture::new(None, None);
        let cases = [
            (member(1, &[], "ins-a1b2c3d4"), "denied", "denied"),
            (member(2, &[ONCALL], "ins-BAD"), "invalid", "bad_instance"),
            (
                Request {
                    guild: Some(sf(GUILD + 1)),
                    ..member(3, &[ONCALL], "ins-a1b2c3d4")
                },
                "invalid",
                "other_guild",
            ),
            (
                Request {
                    guild: None,
                    ..member(4, &[ONCALL], "ins-a1b2c3d4")
                },
                "invalid",
                "not_in_guild",
            ),
        ];
        for (req, event, code) in cases {
            let refusal = f.core.handle(req).await.unwrap_err();
            assert_eq!(refusal.outcome().code(), code);
            let last = f.records().pop().unwrap();
            assert_eq!((last.0.as_str(), last.1.as_deref()), (event, Some(code)));
        }
        assert_eq!(f.calls(), 0);
    }

    #[tokio::test]
    async fn a_tencent_failure_is_recorded_with_its_code() {
        let f = Fixture::new(Some("UnsupportedOperation.InstanceStateStopped"), None);
        let refusal = f
            .core
            .handle(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap_err();
        assert_eq!(refusal.outcome().exit(), Exit::Refused);
        assert_eq!(refusal.request_id(), Some("rid-failed"));
        let r = f.records();
        assert_eq!(
            (r[1].0.as_str(), r[1].1.as_deref(), r[1].2),
            (
                "failed",
                Some("UnsupportedOperation.InstanceStateStopped"),
                Some(1)
            )
        );
    }

    /// A grant whose DM and end could not be recorded is ended in memory, and the journal holds
    /// only its `granted` record: the next start ends it (no DM on record) instead of bringing
    /// it back live, since the member was told no access was granted.
    #[tokio::test]
    async fn a_grant_ended_for_an_unwritable_journal_stays_ended_across_a_restart() {
        let f = Fixture::new(None, None);
        let path = f.dir.path().join("audit.jsonl");
        let grant = f
            .core
            .grant(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        // The journal cannot be written while the DM is recorded (here: replaced under the bot).
        let kept = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let recorded = f.core.record_grant_dm(&grant, Ok((77, 88))).await;
        assert!(matches!(recorded, Err(Refusal::AuditUnavailable(_))));
        assert!(!f.core.grant_is_live(grant.id), "ended in memory");
        // The volume comes back; the bot restarts and rebuilds from the journal.
        std::fs::remove_dir(&path).unwrap();
        std::fs::write(&path, kept).unwrap();
        f.core.resume_grants(&path).await.unwrap();
        assert!(
            !f.core.grant_is_live(grant.id),
            "a grant ended for an unwritable journal is live again after a restart"
        );
    }

    /// the timer task awaits each deadline's journal write in turn: while another process
    /// holds the journal's lock, one grant's end holds every later deadline, so a link shown in
    /// another member's DM is scrubbed only once the lock wait (10 s) has run out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_locked_journal_does_not_delay_link_scrubs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let clock = crate::clock::Clock::adjustable();
        let (journal, _) = Journal::open_clocked(&path, clock.clone()).unwrap();
        let tencent = FakeTencent {
            calls: AtomicUsize::new(0),
            fail_with: None,
            gate: None,
        };
        let core =
            Arc::new(Core::new(policy(), limits(3), journal, tencent).with_clock(clock.clone()));
        core.run_timers();
        let mut events = core.grant_events();
        let a = core
            .grant(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        // Five seconds before A's window ends, member 2 presses on their grant B.
        clock.advance(Duration::from_secs(595));
        let b = core
            .grant(member(2, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        let b_actor = Actor::Discord {
            id: 2,
            name: "m2".into(),
        };
        let mut press = core.begin_press(b.id, &b_actor).await.unwrap();
        press.dm = Some((5, 6));
        core.finish_press(press, Some(vec![sf(ONCALL)]))
            .await
            .unwrap();
        // Another process takes the journal's lock (a `vncbot url` stopped mid-write).
        let other = std::fs::File::open(&path).unwrap();
        rustix::fs::flock(&other, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
        // A's end (due first) and B's link expiry are both due now.
        clock.advance(Duration::from_secs(20));
        let started = std::time::Instant::now();
        let scrubbed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Ok(GrantEvent::LinkExpired { grant, .. }) = events.recv().await {
                    if grant.id == b.id {
                        return;
                    }
                }
            }
        })
        .await;
        assert!(scrubbed.is_ok());
        let _ = a;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the link in B's DM was scrubbed {:?} late, behind A's end waiting on the journal",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn nothing_reaches_tencent_when_the_journal_cannot_be_written() {
        let f = Fixture::new(None, None);
        let path = f.dir.path().join("audit.jsonl");
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let refusal = f
            .core
            .handle(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap_err();
        assert!(matches!(refusal, Refusal::AuditUnavailable(_)));
        assert_eq!(f.calls(), 0);
    }

    /// A reload that removes the member's rule while the approved request waits for Tencent:
    /// the live policy is checked again, so no link is minted.
    #[tokio::test]
    async fn a_reload_between_approval_and_tencent_stops_the_call() {
        let f = Fixture::new(None, None);
        let approved = f
            .core
            .decide(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        f.core.reconfigure(
            Policy {
                rules: vec![],
                ..policy()
            },
            None,
        );
        let refusal = f.core.mint(&approved).await.unwrap_err();
        assert!(matches!(refusal, Refusal::Denied { .. }), "{refusal}");
        assert_eq!(f.calls(), 0);
        let r = f.records();
        assert_eq!(
            (r[1].0.as_str(), r[1].2),
            ("denied", Some(approved.audit_seq))
        );
    }

    /// The same reload while the request waits for its Tencent slot (inside the call).
    #[tokio::test]
    async fn a_reload_while_queued_for_tencent_stops_the_call() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let f = Arc::new(Fixture::new(None, Some(Arc::clone(&gate))));
        let approved = f
            .core
            .decide(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        let minting = {
            let f = Arc::clone(&f);
            tokio::spawn(async move { f.core.mint(&approved).await })
        };
        tokio::task::yield_now().await;
        f.core.reconfigure(
            Policy {
                rules: vec![],
                ..policy()
            },
            None,
        );
        gate.add_permits(1);
        let refusal = minting.await.unwrap().unwrap_err();
        assert!(matches!(refusal, Refusal::Denied { .. }), "{refusal}");
        assert_eq!(f.calls(), 0, "nothing was sent");
        assert_eq!(events(&f), ["requested", "denied"]);
    }

    /// Past the refusal budget a member is answered at once; the journal gets one count.
    #[tokio::test]
    async fn a_flood_of_refused_requests_is_recorded_as_one_count() {
        let f = Fixture::new(None, None);
        for _ in 0..3 {
            assert!(matches!(
                f.core.handle(member(7, &[], "ins-a1b2c3d4")).await,
                Err(Refusal::Denied { .. })
            ));
        }
        for _ in 0..40 {
            assert!(matches!(
                f.core.handle(member(7, &[], "ins-a1b2c3d4")).await,
                Err(Refusal::TooManyRefusals { .. })
            ));
        }
        // Even an allowed request from that member waits out the budget.
        assert!(matches!(
            f.core.handle(member(7, &[ONCALL], "ins-a1b2c3d4")).await,
            Err(Refusal::TooManyRefusals { .. })
        ));
        // Another member is not affected.
        f.core
            .handle(member(8, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        assert_eq!(
            events(&f),
            ["denied", "denied", "denied", "requested", "issued"]
        );
        let flushed = f.core.flush_suppressed().await.unwrap();
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].count, 41);
        let last = f.records().pop().unwrap();
        assert_eq!(
            (last.0.as_str(), last.1.as_deref(), last.3),
            ("limited", Some("too_many_refusals"), Some(41))
        );
        assert!(f.core.flush_suppressed().await.unwrap().is_empty());
    }

    /// Two members' approvals racing for the last instance slot: exactly the limit gets through.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn limits_hold_under_concurrency() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let f = Arc::new(Fixture::new(None, Some(Arc::clone(&gate))));
        let tasks: Vec<_> = (0..30)
            .map(|i| {
                let f = Arc::clone(&f);
                tokio::spawn(async move {
                    f.core
                        .decide(member(100 + i, &[ONCALL], "ins-a1b2c3d4"))
                        .await
                })
            })
            .collect();
        let mut approved = 0;
        for t in tasks {
            approved += usize::from(t.await.unwrap().is_ok());
        }
        gate.add_permits(100);
        assert_eq!(approved, 10, "per_instance_per_minute is 10");
    }

    // ---- grants ----------------------------------------------------------------------------

    fn roles(r: &[u64]) -> Option<Vec<Snowflake>> {
        Some(r.iter().map(|r| sf(*r)).collect())
    }

    fn discord(id: u64) -> Actor {
        Actor::Discord {
            id,
            name: format!("m{id}"),
        }
    }

    #[tokio::test]
    async fn a_grant_mints_nothing_until_pressed_and_each_press_mints_one_link() {
        let f = Fixture::new(None, None);
        let g = f
            .core
            .grant(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        assert_eq!(f.calls(), 0, "no Tencent call at grant time");
        assert!(g.until > SystemTime::now() + Duration::from_secs(590));
        for _ in 0..3 {
            let press = f.core.begin_press(g.id, &discord(1)).await.unwrap();
            let m = f.core.finish_press(press, roles(&[ONCALL])).await.unwrap();
            assert_eq!(m.grant.id, g.id);
        }
        assert_eq!(f.calls(), 3);
        // links_per_grant is 3 in this policy.
        assert!(matches!(
            f.core.begin_press(g.id, &discord(1)).await,
            Err(Refusal::LinksUsed(3))
        ));
        let r = f.records();
        assert_eq!(r[0].0, "granted");
        assert_eq!((r[1].0.as_str(), r[1].2), ("requested", Some(g.id)));
        assert_eq!(
            (r[2].0.as_str(), r[2].2),
            ("issued", Some(r[1].2.unwrap() + 1))
        );
        let last = r.last().unwrap();
        assert_eq!(
            (last.0.as_str(), last.1.as_deref(), last.2),
            ("limited", Some("links_used"), Some(g.id))
        );
    }

    #[tokio::test]
    async fn presses_by_others_after_done_or_on_forged_ids_are_refused_and_recorded() {
        let f = Fixture::new(None, None);
        let g = f
            .core
            .grant(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        assert!(matches!(
            f.core.begin_press(g.id, &discord(2)).await,
            Err(Refusal::NotHolder)
        ));
        assert!(matches!(
            f.core.begin_press(g.id + 1000, &discord(1)).await,
            Err(Refusal::UnknownGrant)
        ));
        // Done by someone else is refused; by the holder it ends the grant.
        assert!(f
            .core
            .end_grant(g.id, &discord(2), EndWhy::Done)
            .await
            .is_err());
        assert!(f
            .core
            .end_grant(g.id, &discord(1), EndWhy::Done)
            .await
            .unwrap()
            .is_some());
        assert!(f
            .core
            .end_grant(g.id, &discord(1), EndWhy::Done)
            .await
            .unwrap()
            .is_none());
        assert!(matches!(
            f.core.begin_press(g.id, &discord(1)).await,
            Err(Refusal::GrantEnded)
        ));
        assert_eq!(f.calls(), 0);
        let codes: Vec<_> = f.records().into_iter().map(|r| (r.0, r.1)).collect();
        let c = |e: &str, c: &str| (e.to_owned(), Some(c.to_owned()));
        assert_eq!(
            codes[1..],
            [
                c("denied", "not_holder"),
                c("invalid", "bad_button"),
                c("denied", "not_holder"),
                c("ended", "done"),
                c("invalid", "grant_ended"),
            ]
        );
    }

    #[tokio::test]
    async fn a_removed_role_ends_the_grant_and_unknown_roles_never_mint() {
        let f = Fixture::new(None, None);
        let g = f
            .core
            .grant(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        let press = f.core.begin_press(g.id, &discord(1)).await.unwrap();
        assert!(matches!(
            f.core.finish_press(press, None).await,
            Err(Refusal::RolesUnavailable)
        ));
        assert!(
            f.core.grant_is_live(g.id),
            "a failed member fetch does not end the grant"
        );
        let press = f.core.begin_press(g.id, &discord(1)).await.unwrap();
        assert!(matches!(
            f.core.finish_press(press, roles(&[])).await,
            Err(Refusal::RoleRemoved { .. })
        ));
        assert!(!f.core.grant_is_live(g.id));
        assert_eq!(f.calls(), 0);
        let last = f.records().pop().unwrap();
        assert_eq!(
            (last.0.as_str(), last.1.as_deref()),
            ("ended", Some("role_removed"))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_presses_at_once_never_mint_two_links_for_one_press() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let f = Arc::new(Fixture::new(None, Some(Arc::clone(&gate))));
        let g = f
            .core
            .grant(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        let first = {
            let f = Arc::clone(&f);
            tokio::spawn(async move {
                let press = f.core.begin_press(g.id, &discord(1)).await.unwrap();
                f.core
                    .finish_press(press, roles(&[ONCALL]))
                    .await
                    .map(|_| ())
            })
        };
        // The first press is minting (held at the gate): a second one is refused.
        while f.records().len() < 2 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            f.core.begin_press(g.id, &discord(1)).await,
            Err(Refusal::PressInProgress)
        ));
        gate.add_permits(1);
        first.await.unwrap().unwrap();
        assert_eq!(f.calls(), 1);
        // And once it is done, the next press goes through.
        gate.add_permits(1);
        let press = f.core.begin_press(g.id, &discord(1)).await.unwrap();
        f.core.finish_press(press, roles(&[ONCALL])).await.unwrap();
    }

    #[tokio::test]
    async fn another_members_recent_link_is_a_heads_up() {
        let f = Fixture::new(None, None);
        let a = f
            .core
            .grant(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        let b = f
            .core
            .grant(member(2, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        let press = f.core.begin_press(a.id, &discord(1)).await.unwrap();
        assert!(f
            .core
            .finish_press(press, roles(&[ONCALL]))
            .await
            .unwrap()
            .heads_up
            .is_none());
        let press = f.core.begin_press(b.id, &discord(2)).await.unwrap();
        let m = f.core.finish_press(press, roles(&[ONCALL])).await.unwrap();
        assert_eq!(m.heads_up.map(|h| h.user), Some(1));
        // One's own earlier link is no news.
        let press = f.core.begin_press(b.id, &discord(2)).await.unwrap();
        let m = f.core.finish_press(press, roles(&[ONCALL])).await.unwrap();
        assert!(m.heads_up.is_none());
    }

    /// A restart: a new core over the same journal knows the live grant, its DM and its links,
    /// and which grant ran out while it was down.
    #[tokio::test]
    async fn grants_are_rebuilt_from_the_journal() {
        let f = Fixture::new(None, None);
        let live = f
            .core
            .grant(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        f.core.record_grant_dm(&live, Ok((77, 88))).await.unwrap();
        let press = f.core.begin_press(live.id, &discord(1)).await.unwrap();
        f.core.finish_press(press, roles(&[ONCALL])).await.unwrap();
        let done = f
            .core
            .grant(member(2, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        f.core
            .end_grant(done.id, &discord(2), EndWhy::Done)
            .await
            .unwrap();
        let short = Policy {
            grant_for: Duration::from_secs(0),
            ..policy()
        };
        f.core.reconfigure(short, None);
        let lapsed = f
            .core
            .grant(member(3, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();

        let path = f.dir.path().join("audit.jsonl");
        let (journal, _) = Journal::open(&path).unwrap();
        let tencent = FakeTencent {
            calls: AtomicUsize::new(0),
            fail_with: None,
            gate: None,
        };
        let again = Core::new(policy(), limits(3), journal, tencent);
        let (live_now, lapsed_now) = again.rebuild_grants(&path).unwrap();
        assert_eq!(live_now.len(), 1);
        assert_eq!(live_now[0].id, live.id);
        assert_eq!(live_now[0].dm, Some((77, 88)));
        assert_eq!(live_now[0].until, live.until);
        assert_eq!(
            lapsed_now.iter().map(|g| g.id).collect::<Vec<_>>(),
            [lapsed.id]
        );
        // Two more links fit (3 per grant, one used before the restart).
        for _ in 0..2 {
            let press = again.begin_press(live.id, &discord(1)).await.unwrap();
            again.finish_press(press, roles(&[ONCALL])).await.unwrap();
        }
        assert!(matches!(
            again.begin_press(live.id, &discord(1)).await,
            Err(Refusal::LinksUsed(3))
        ));
        assert!(matches!(
            again.begin_press(done.id, &discord(2)).await,
            Err(Refusal::GrantEnded)
        ));
        assert!(again.expire_grant(lapsed.id).await.unwrap().is_some());
    }

    /// Done pressed (or the window over) while a press waits for the member's roles: the press
    /// mints nothing, and says the access has ended.
    #[tokio::test]
    async fn a_grant_that_ends_during_a_press_mints_nothing() {
        let f = Fixture::new(None, None);
        let g = f
            .core
            .grant(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        let press = f.core.begin_press(g.id, &discord(1)).await.unwrap();
        f.core
            .end_grant(g.id, &discord(1), EndWhy::Done)
            .await
            .unwrap();
        assert!(matches!(
            f.core.finish_press(press, roles(&[ONCALL])).await,
            Err(Refusal::GrantEnded)
        ));
        assert_eq!(f.calls(), 0);
        assert!(!events(&f).contains(&"requested".to_owned()));
    }

    /// Refused presses count against the refusal budget (3 here): past it they are answered
    /// from memory, and recorded once as a count.
    #[tokio::test]
    async fn hammering_a_dead_button_is_not_recorded_press_by_press() {
        let f = Fixture::new(None, None);
        let g = f
            .core
            .grant(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        f.core
            .end_grant(g.id, &discord(1), EndWhy::Done)
            .await
            .unwrap();
        for i in 0..20 {
            let r = f.core.begin_press(g.id, &discord(1)).await;
            let r = r.err().unwrap();
            if i < 3 {
                assert!(matches!(r, Refusal::GrantEnded), "{r}");
            } else {
                assert!(matches!(r, Refusal::TooManyRefusals { .. }), "{r}");
            }
        }
        assert_eq!(
            f.records().len(),
            2 + 3,
            "granted, ended and three refusals"
        );
        let flushed = f.core.flush_suppressed().await.unwrap();
        assert_eq!(flushed[0].count, 17);
    }

    /// Presses count against the instance's limit across every grant (Tencent allows 30
    /// reconnects a minute per instance); the member's own limit counts `/vnc` only.
    #[tokio::test]
    async fn the_instance_limit_holds_across_grants() {
        let f = Fixture::new(None, None);
        let mut minted = 0;
        for user in 1..=12 {
            let g = f
                .core
                .grant(member(user, &[ONCALL], "ins-a1b2c3d4"))
                .await
                .unwrap();
            let press = f.core.begin_press(g.id, &discord(user)).await.unwrap();
            match f.core.finish_press(press, roles(&[ONCALL])).await {
                Ok(_) => minted += 1,
                Err(Refusal::Limited(crate::limits::Limited::Instance { .. })) => {}
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(minted, 10, "per_instance_per_minute is 10");
        assert_eq!(f.calls(), 10);
    }

    /// Presses spend the member's own budget (at their rate, apart from `/vnc`): one member
    /// pressing over and over cannot use up an instance and lock the others out of it.
    #[tokio::test]
    async fn presses_spend_the_members_budget_too() {
        let f = Fixture::new(None, None);
        let mut minted = 0;
        // Member 1: two grants of 3 links each; their press budget is 5 a minute.
        for _ in 0..2 {
            let g = f
                .core
                .grant(member(1, &[ONCALL], "ins-a1b2c3d4"))
                .await
                .unwrap();
            for _ in 0..3 {
                let press = f.core.begin_press(g.id, &discord(1)).await.unwrap();
                match f.core.finish_press(press, roles(&[ONCALL])).await {
                    Ok(_) => minted += 1,
                    Err(Refusal::Limited(crate::limits::Limited::User { .. })) => {}
                    Err(other) => panic!("{other}"),
                }
            }
        }
        assert_eq!(minted, 5, "per_user_per_minute is 5");
        // Someone else still gets the instance.
        let g = f
            .core
            .grant(member(2, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        let press = f.core.begin_press(g.id, &discord(2)).await.unwrap();
        f.core
            .finish_press(press, roles(&[ONCALL]))
            .await
            .expect("another member is not locked out");
    }

    /// The role is removed while Tencent makes the link: the link is discarded (recorded with
    /// its RequestId), the grant ends, and nothing is shown.
    #[tokio::test]
    async fn a_link_made_after_the_role_went_is_discarded_and_the_grant_ends() {
        let f = Fixture::new(None, None);
        let g = f
            .core
            .grant(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        let press = f.core.begin_press(g.id, &discord(1)).await.unwrap();
        let minted = f.core.finish_press(press, roles(&[ONCALL])).await.unwrap();
        let refusal = f.core.confirm_link(minted, roles(&[])).await.unwrap_err();
        assert!(matches!(refusal, Refusal::RoleRemoved { .. }), "{refusal}");
        assert!(!f.core.grant_is_live(g.id));
        let text = std::fs::read_to_string(f.dir.path().join("audit.jsonl")).unwrap();
        let denied = text
            .lines()
            .find(|l| l.contains(r#""event":"denied""#))
            .expect("the discarded link is recorded");
        assert!(denied.contains(r#""code":"role_removed""#) && denied.contains("rid-ok"));
        // Roles Discord cannot give now: discarded too, and the grant stays for a retry.
        let g = f
            .core
            .grant(member(2, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        let press = f.core.begin_press(g.id, &discord(2)).await.unwrap();
        let minted = f.core.finish_press(press, roles(&[ONCALL])).await.unwrap();
        assert!(matches!(
            f.core.confirm_link(minted, None).await,
            Err(Refusal::RolesUnavailable)
        ));
        assert!(f.core.grant_is_live(g.id));
    }

    /// A grant whose DM could not be recorded is ended, and stays ended once the journal can
    /// be written again.
    #[tokio::test]
    async fn a_grant_whose_dm_was_not_recorded_stays_ended() {
        let f = Fixture::new(None, None);
        let g = f
            .core
            .grant(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        let path = f.dir.path().join("audit.jsonl");
        let kept = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(
            f.core.record_grant_dm(&g, Ok((77, 88))).await,
            Err(Refusal::AuditUnavailable(_))
        ));
        std::fs::remove_dir(&path).unwrap();
        std::fs::write(&path, kept).unwrap();
        assert!(!f.core.grant_is_live(g.id));
        assert!(matches!(
            f.core.begin_press(g.id, &discord(1)).await,
            Err(Refusal::GrantEnded | Refusal::AuditUnavailable(_))
        ));
    }

    /// A `granted` record that claims more than the window in force (appended correctly
    /// chained, or written with a time far in the future) is honoured only for the window in
    /// force from now, and its resumption is recorded.
    #[tokio::test]
    async fn a_forged_grant_is_capped_at_the_window_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let now = SystemTime::now();
        let forge = |clock: Clock, until: SystemTime| {
            let (journal, _) = Journal::open_clocked(&path, clock).unwrap();
            let seq = journal
                .append_blocking(
                    Event::Granted,
                    &discord(1),
                    Entry {
                        guild: Some(GUILD),
                        instance: Some("ins-a1b2c3d4".into()),
                        region: Some("ap-guangzhou".into()),
                        until: Some(grants::rfc3339_for_tests(until)),
                        ..Entry::default()
                    },
                )
                .unwrap()
                .seq;
            // With its DM on record, as a real grant has.
            journal
                .append_blocking(
                    Event::Delivered,
                    &discord(1),
                    Entry {
                        channel: Some(77),
                        message: Some(88),
                        refers_to: Some(seq),
                        ..Entry::default()
                    },
                )
                .unwrap();
            seq
        };
        let long = forge(Clock::system(), now + Duration::from_secs(59 * 60));
        let future = Clock::adjustable();
        future.advance(Duration::from_secs(72 * 365 * 24 * 3600));
        let far = forge(future.clone(), future.now() + Duration::from_secs(3000));
        let (journal, _) = Journal::open(&path).unwrap();
        let tencent = FakeTencent {
            calls: AtomicUsize::new(0),
            fail_with: None,
            gate: None,
        };
        let core = Core::new(policy(), limits(3), journal, tencent);
        let (live, lapsed) = core.resume_grants(&path).await.unwrap();
        assert_eq!((live, lapsed), (2, 0));
        for id in [long, far] {
            let g = core.grant_by_id(id).unwrap();
            assert!(
                g.until <= SystemTime::now() + Duration::from_secs(600),
                "grant {id} capped at the 10-minute window from now: {:?}",
                g.until.duration_since(now)
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches(r#""event":"resumed""#).count(), 2);
    }

    /// A decision names the roles of the rule that matched, which do not shift on reload as the
    /// rule's index does.
    #[tokio::test]
    async fn a_grant_records_the_roles_of_its_rule() {
        let f = Fixture::new(None, None);
        f.core
            .grant(member(1, &[ONCALL], "ins-a1b2c3d4"))
            .await
            .unwrap();
        let text = std::fs::read_to_string(f.dir.path().join("audit.jsonl")).unwrap();
        let granted = text
            .lines()
            .find(|l| l.contains(r#""event":"granted""#))
            .unwrap();
        assert!(
            granted.contains(&format!(r#""rule_roles":["{ONCALL}"]"#)),
            "{granted}"
        );
    }
}
