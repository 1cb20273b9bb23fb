//! The core flow of one request, free of any transport: validate, authorize, limit, audit the
//! intent, mint the URL, audit the outcome. The Discord adapter and `vncbot url` both call it.
//!
//! "Decide" ([`Core::decide`]) and "mint" ([`Core::mint`]) are separate so that a later
//! mint-on-click flow can decide once and mint on each press.

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use crate::access::{self, Decision, Rule};
use crate::audit::{Actor, AuditError, Entry, Event, Journal};
use crate::config::Config;
use crate::ids::{InstanceId, InvalidInstanceId, InvalidRegion, Quoted, Region, Snowflake};
use crate::limits::{Limited, RequestLimits};
use crate::link::{ConsoleUrl, VALID_FOR_SECS};
use crate::tencent::{CvmClient, TencentError};

/// Longest reason we accept (and the Discord option's `max_length`).
pub const MAX_REASON_CHARS: usize = 200;
/// Shortest reason when `audit.require_reason` is on: "deploy" is not an explanation.
pub const MIN_REASON_CHARS: usize = 8;

/// What grants the right to ask.
#[derive(Debug, Clone)]
pub enum Authority {
    /// A Discord member's role IDs, from the interaction payload.
    Roles(Vec<Snowflake>),
    /// Someone at a terminal holding the Tencent credentials (`vncbot url`): the credentials
    /// already allow the call, so the allowlist does not apply; limits and audit do.
    LocalCredentials,
}

/// One request, as raw as it arrived: the core does all the validation.
#[derive(Debug, Clone)]
pub struct Request {
    pub actor: Actor,
    pub authority: Authority,
    pub guild: Option<Snowflake>,
    pub channel: Option<Snowflake>,
    pub instance: String,
    pub region: Option<String>,
    pub reason: Option<String>,
}

/// The policy that config reloads swap as a whole.
#[derive(Debug, Clone)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub regions: Vec<Region>,
    pub require_reason: bool,
}

impl Policy {
    pub fn from_config(c: &Config) -> Self {
        Self {
            rules: c.allow.clone(),
            regions: c.tencent.regions.clone(),
            require_reason: c.audit.require_reason,
        }
    }
}

/// An allowed, audited request, ready to mint.
#[derive(Debug, Clone)]
pub struct Approved {
    pub actor: Actor,
    pub guild: Option<Snowflake>,
    pub channel: Option<Snowflake>,
    pub instance: InstanceId,
    pub region: Region,
    pub reason: Option<String>,
    pub rule: Option<usize>,
    /// `seq` of the `requested` record.
    pub audit_seq: u64,
}

/// A minted URL.
#[derive(Debug)]
pub struct Issued {
    pub url: ConsoleUrl,
    pub instance: InstanceId,
    pub region: Region,
    pub request_id: String,
    pub expires_at: SystemTime,
    /// `seq` of the `issued` record.
    pub audit_seq: u64,
}

/// Why no link: each carries what the user is told.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    BadInstance(#[from] InvalidInstanceId),
    #[error("{problem} This bot serves: {configured}.")]
    BadRegion {
        problem: InvalidRegion,
        configured: String,
    },
    #[error("{0} is not one of this bot's regions. It serves: {1}.")]
    RegionNotServed(Region, String),
    #[error("A reason is required: say why you need the console, in at least {MIN_REASON_CHARS} characters (for example the incident or ticket).")]
    ReasonRequired,
    #[error("The reason is too short: give at least {MIN_REASON_CHARS} characters (for example the incident or ticket).")]
    ReasonTooShort,
    #[error("The reason is too long: keep it under {MAX_REASON_CHARS} characters.")]
    ReasonTooLong,
    #[error("{}", denied_message(instance, region, would_allow))]
    Denied {
        instance: InstanceId,
        region: Region,
        would_allow: Vec<Snowflake>,
    },
    #[error("{}", limited_message(*.0))]
    Limited(Limited),
    /// Fail closed: nothing happens that cannot be recorded.
    #[error("The bot cannot write its audit trail right now, so it cannot open consoles. The admins have been alerted; try again later.")]
    AuditUnavailable(#[source] AuditError),
    #[error("{message}")]
    Tencent {
        error: Box<TencentError>,
        message: String,
    },
}

fn denied_message(instance: &InstanceId, region: &Region, would_allow: &[Snowflake]) -> String {
    if would_allow.is_empty() {
        format!("None of your roles may open {instance} in {region}, and no rule allows that instance there. Ask an admin if you need it.")
    } else {
        let roles: Vec<String> = would_allow.iter().map(|r| format!("<@&{r}>")).collect();
        format!(
            "None of your roles may open {instance} in {region}. These roles may: {}. Ask an admin if you need one.",
            roles.join(", ")
        )
    }
}

fn limited_message(l: Limited) -> String {
    let secs = |d: Duration| d.as_secs() + u64::from(d.subsec_nanos() > 0);
    match l {
        Limited::User { retry_after } => format!(
            "You have asked for consoles too often. Try again in {} seconds.",
            secs(retry_after)
        ),
        Limited::Instance { retry_after } => format!(
            "That instance's console was opened too often in the last minute (Tencent allows 30 reconnects a minute). Try again in {} seconds.",
            secs(retry_after)
        ),
    }
}

impl Refusal {
    /// The code recorded in the audit journal and metrics.
    pub fn code(&self) -> String {
        match self {
            Refusal::BadInstance(_) => "bad_instance".into(),
            Refusal::BadRegion { .. } | Refusal::RegionNotServed(..) => "bad_region".into(),
            Refusal::ReasonRequired | Refusal::ReasonTooShort | Refusal::ReasonTooLong => {
                "bad_reason".into()
            }
            Refusal::Denied { .. } => "denied".into(),
            Refusal::Limited(Limited::User { .. }) => "limited_user".into(),
            Refusal::Limited(Limited::Instance { .. }) => "limited_instance".into(),
            Refusal::AuditUnavailable(_) => "audit_unavailable".into(),
            Refusal::Tencent { error, .. } => error.code(),
        }
    }
}

/// A refusal, with the instance and region where they were valid (for the audit record).
type Rejected = Box<(Refusal, Option<InstanceId>, Option<Region>)>;

/// What a config reload swaps, as one unit: a request sees the old policy and limits or the new
/// ones, never a mix.
struct Live {
    policy: Arc<Policy>,
    limits: Arc<RequestLimits>,
}

/// The core: policy, limits, journal and Tencent client.
pub struct Core {
    live: RwLock<Live>,
    journal: Journal,
    cvm: CvmClient,
}

impl Core {
    pub fn new(policy: Policy, limits: RequestLimits, journal: Journal, cvm: CvmClient) -> Self {
        Self {
            live: RwLock::new(Live {
                policy: Arc::new(policy),
                limits: Arc::new(limits),
            }),
            journal,
            cvm,
        }
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

    /// Validates, authorizes and limits a request, and records the decision. Only an approved
    /// request, whose `requested` record is on disk, may reach Tencent.
    pub async fn decide(&self, req: Request) -> Result<Approved, Refusal> {
        let (policy, limits) = self.live();
        match self.evaluate(&policy, &limits, &req) {
            Ok(approved) => {
                let appended = self
                    .record(
                        Event::Requested,
                        &req,
                        Some(&approved.instance),
                        Some(&approved.region),
                        approved.rule,
                        None,
                    )
                    .await
                    .map_err(Refusal::AuditUnavailable)?;
                Ok(Approved {
                    audit_seq: appended,
                    ..approved
                })
            }
            Err(rejected) => {
                let (refusal, instance, region) = *rejected;
                let event = match refusal {
                    Refusal::Denied { .. } => Event::Denied,
                    Refusal::Limited(_) => Event::Limited,
                    _ => Event::Invalid,
                };
                let code = refusal.code();
                // A refusal stays a refusal even when it cannot be recorded; the failure to
                // record it is what the user needs to hear about, and admins see it logged.
                match self
                    .record(
                        event,
                        &req,
                        instance.as_ref(),
                        region.as_ref(),
                        None,
                        Some(&code),
                    )
                    .await
                {
                    Ok(_) => Err(refusal),
                    Err(e) => Err(Refusal::AuditUnavailable(e)),
                }
            }
        }
    }

    /// The pure part of `decide`: on refusal, also the instance and region if they parsed.
    fn evaluate(
        &self,
        policy: &Policy,
        limits: &RequestLimits,
        req: &Request,
    ) -> Result<Approved, Rejected> {
        let served = || {
            policy
                .regions
                .iter()
                .map(Region::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let instance =
            InstanceId::parse(&req.instance).map_err(|e| Box::new((e.into(), None, None)))?;
        let region = match req
            .region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            None => policy.regions[0].clone(),
            Some(raw) => match Region::parse(raw) {
                Ok(r) if policy.regions.contains(&r) => r,
                Ok(r) => {
                    return Err(Box::new((
                        Refusal::RegionNotServed(r, served()),
                        Some(instance),
                        None,
                    )))
                }
                Err(problem) => {
                    return Err(Box::new((
                        Refusal::BadRegion {
                            problem,
                            configured: served(),
                        },
                        Some(instance),
                        None,
                    )))
                }
            },
        };
        let fail = |r: Refusal| Box::new((r, Some(instance.clone()), Some(region.clone())));
        let reason = clean_reason(req.reason.as_deref());
        match &reason {
            Some(r) if r.chars().count() > MAX_REASON_CHARS => {
                return Err(fail(Refusal::ReasonTooLong))
            }
            Some(r) if policy.require_reason && r.chars().count() < MIN_REASON_CHARS => {
                return Err(fail(Refusal::ReasonTooShort))
            }
            None if policy.require_reason => return Err(fail(Refusal::ReasonRequired)),
            _ => {}
        }
        let rule = match &req.authority {
            Authority::LocalCredentials => None,
            Authority::Roles(roles) => {
                match access::authorize(&policy.rules, roles, &instance, &region) {
                    Decision::Allowed { rule } => Some(rule),
                    Decision::Denied { would_allow } => {
                        return Err(fail(Refusal::Denied {
                            instance: instance.clone(),
                            region: region.clone(),
                            would_allow,
                        }))
                    }
                }
            }
        };
        limits.check(&req.actor.key(), &instance).map_err(|l| {
            let which = match l {
                Limited::User { .. } => "user",
                Limited::Instance { .. } => "instance",
            };
            crate::metrics::METRICS
                .limited
                .get_or_create(&crate::metrics::Outcome {
                    outcome: which.into(),
                })
                .inc();
            fail(Refusal::Limited(l))
        })?;
        Ok(Approved {
            actor: req.actor.clone(),
            guild: req.guild,
            channel: req.channel,
            instance,
            region,
            reason,
            rule,
            audit_seq: 0,
        })
    }

    /// Calls Tencent for an approved request and records the outcome. A URL whose `issued` record
    /// cannot be written is dropped unseen.
    pub async fn mint(&self, a: &Approved) -> Result<Issued, Refusal> {
        let entry = || Entry {
            guild: a.guild.map(Snowflake::get),
            channel: a.channel.map(Snowflake::get),
            instance: Some(a.instance.as_str().to_owned()),
            region: Some(a.region.as_str().to_owned()),
            reason: a.reason.clone(),
            rule: a.rule,
            refers_to: Some(a.audit_seq),
            ..Entry::default()
        };
        match self
            .cvm
            .describe_instance_vnc_url(&a.region, &a.instance)
            .await
        {
            Ok(vnc) => {
                let appended = self
                    .journal
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
                Ok(Issued {
                    expires_at: vnc.issued_at + Duration::from_secs(VALID_FOR_SECS),
                    url: vnc.url,
                    instance: a.instance.clone(),
                    region: a.region.clone(),
                    request_id: vnc.request_id,
                    audit_seq: appended.seq,
                })
            }
            Err(error) => {
                let code = error.code();
                let log = |msg: &str| {
                    if error.needs_admin() {
                        tracing::error!(instance = %a.instance, region = %a.region, code = %code,
                            request_id = error.request_id().unwrap_or("-"), error = %error, "{msg}");
                    } else {
                        tracing::warn!(instance = %a.instance, region = %a.region, code = %code,
                            request_id = error.request_id().unwrap_or("-"), error = %error, "{msg}");
                    }
                };
                log("Tencent call failed");
                let recorded = self
                    .journal
                    .append(
                        Event::Failed,
                        &a.actor,
                        Entry {
                            code: Some(code.to_string()),
                            request_id: error.request_id().map(str::to_owned),
                            ..entry()
                        },
                    )
                    .await;
                if let Err(e) = recorded {
                    return Err(Refusal::AuditUnavailable(e));
                }
                let message = error.user_message(&a.instance, &a.region);
                Err(Refusal::Tencent {
                    error: Box::new(error),
                    message,
                })
            }
        }
    }

    /// Records what became of an issued link: `delivered`, or `dm_failed` with a code.
    pub async fn record_delivery(
        &self,
        actor: &Actor,
        issued: &Issued,
        failure: Option<&str>,
    ) -> Result<(), AuditError> {
        let (event, code) = match failure {
            None => (Event::Delivered, None),
            Some(code) => (Event::DmFailed, Some(code)),
        };
        self.journal
            .append(
                event,
                actor,
                Entry {
                    instance: Some(issued.instance.as_str().to_owned()),
                    region: Some(issued.region.as_str().to_owned()),
                    code: code.map(str::to_owned),
                    request_id: Some(issued.request_id.clone()),
                    refers_to: Some(issued.audit_seq),
                    ..Entry::default()
                },
            )
            .await
            .map(|_| ())
    }

    async fn record(
        &self,
        event: Event,
        req: &Request,
        instance: Option<&InstanceId>,
        region: Option<&Region>,
        rule: Option<usize>,
        code: Option<&str>,
    ) -> Result<u64, AuditError> {
        // What the user typed is recorded only once it is known to be well-formed; a malformed ID
        // is recorded as a bounded, escaped quote.
        let raw_instance = instance
            .is_none()
            .then(|| Quoted::new(&req.instance).to_string());
        let reason = clean_reason(req.reason.as_deref()).map(|r| truncate(&r, MAX_REASON_CHARS));
        let result = self
            .journal
            .append(
                event,
                &req.actor,
                Entry {
                    guild: req.guild.map(Snowflake::get),
                    channel: req.channel.map(Snowflake::get),
                    instance: instance.map(|i| i.as_str().to_owned()).or(raw_instance),
                    region: region.map(|r| r.as_str().to_owned()),
                    reason,
                    rule,
                    code: code.map(str::to_owned),
                    ..Entry::default()
                },
            )
            .await;
        match result {
            Ok(a) => Ok(a.seq),
            Err(e) => {
                tracing::error!(error = %e, ?event, "AUDIT WRITE FAILED: refusing requests until the journal is writable");
                Err(e)
            }
        }
    }
}

/// Trims a reason and turns control characters into spaces; an empty reason is no reason.
fn clean_reason(reason: Option<&str>) -> Option<String> {
    let r: String = reason?
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let r = r.trim();
    (!r.is_empty()).then(|| r.to_owned())
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// Why the core could not be built at start-up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot set up the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// How long a caller may queue for a Tencent slot before being told to retry: enough for a burst
/// of several hundred requests at 10 a second, well inside Discord's 15-minute interaction token.
pub const API_QUEUE_LIMIT: Duration = Duration::from_secs(60);

impl Core {
    /// Builds the core from a validated config: opens (and if torn, seals) the journal.
    pub fn from_config(
        config: &Config,
        creds: crate::config::TencentCredentials,
    ) -> Result<Self, StartError> {
        let (journal, repaired) = Journal::open(&config.audit.path)?;
        if let Some(repair) = repaired {
            tracing::warn!(?repair, path = %config.audit.path.display(),
                "the audit journal ended in a torn line (a crash mid-write); mended it and continued the chain");
        }
        let pacer = crate::limits::ApiPacer::new(config.limits.api_per_second, API_QUEUE_LIMIT);
        let cvm = CvmClient::new(&config.tencent, creds, pacer, Default::default())?;
        Ok(Self::new(
            Policy::from_config(config),
            RequestLimits::new(&config.limits),
            journal,
            cvm,
        ))
    }
}
