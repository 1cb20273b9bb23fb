//! The process: start-up (fail fast with one clear line), the admin endpoint, housekeeping,
//! config reload on SIGHUP, and shutdown (finish what is in flight, then leave, even when the
//! gateway is down). The Discord adapter ([`crate::discord`]) is glue over this.

pub mod admin;
pub mod anchor;
pub mod approvals_channel;
mod reload;

use reload::reload_on_sighup;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::audit::{Actor, AuditError, Entry, Event, Journal, Repair};
use crate::clock::Clock;
use crate::config::{discord_token_from_env, Config, TencentCredentials};
use crate::core::{CatalogLink, Core, Policy, API_QUEUE_LIMIT};
use crate::discord::{self, Bot};
use crate::ids::Product;
use crate::limits::{ApiPacer, RequestLimits, StateError, StateFile};
use crate::metrics::Metrics;
use crate::tencent::Catalog;
use crate::tencent::TencentClient;

/// How long shutdown waits for requests in flight and the DM edits due.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long shutdown waits for the audit channel's queued lines and the last journal head.
const FEED_DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// How long shutdown waits for the gateway client to close once asked.
const CLIENT_CLOSE_LIMIT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last segment of the journal to be shipped.
const SHIP_LIMIT: Duration = Duration::from_secs(20);

/// Why the core could not be built at start-up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot set up the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    Limits(#[from] StateError),
}

/// Builds the core from a validated config: opens (and if need be repairs) the journal, and
/// builds the Tencent clients and the catalog.
pub fn build_core(
    config: &Config,
    creds: TencentCredentials,
    clock: Clock,
) -> Result<Core, StartError> {
    // Every record this process writes names the config it ran under (`config_digest`).
    let (journal, repair) =
        Journal::open_configured(&config.audit.path, clock.clone(), config.source.digest())?;
    let path = config.audit.path.display();
    match repair {
        Some(Repair::Sealed(s)) => tracing::warn!(seq = s.seq, %path,
            "the audit journal ended in a torn line (a crash mid-write); sealed it and continued the chain"),
        Some(Repair::Completed { seq }) => tracing::warn!(seq, %path,
            "the audit journal's last record lacked its line end (a crash mid-write); completed it"),
        None => {}
    }
    // One registry for everything this core counts: what `/metrics` serves.
    let metrics = Arc::new(Metrics::new());
    metrics.know_lists(
        config
            .tencent
            .regions
            .iter()
            .flat_map(|r| Product::ALL.map(|p| (p, r)))
            .filter(|(p, r)| config.tencent.serves_in(*p, r))
            .map(|(p, r)| (p, r.as_str())),
    );
    // Limits and Tencent's pace are shared by every process on this journal (the bot, each
    // `vncbot url`, the bot after a restart): they live in a file beside it.
    let shared = Arc::new(StateFile::open(&StateFile::path_for(&config.audit.path))?);
    let pacer = ApiPacer::new(config.limits.api_per_second, API_QUEUE_LIMIT)
        .shared(Arc::clone(&shared), "cvm");
    let catalog = if config.catalog.enabled {
        // Its own client: DescribeInstances has its own pace and never queues behind (or
        // ahead of) console calls.
        let idle = ApiPacer::new(config.limits.api_per_second, API_QUEUE_LIMIT);
        let source = TencentClient::new(&config.tencent, creds.clone(), idle, Default::default())?
            .with_metrics(Arc::clone(&metrics));
        Some(CatalogLink {
            catalog: Arc::new(
                Catalog::new(&config.tencent.regions).with_metrics(Arc::clone(&metrics)),
            ),
            source: Arc::new(source),
        })
    } else {
        None
    };
    let cvm = TencentClient::new(&config.tencent, creds, pacer, Default::default())?
        .with_metrics(Arc::clone(&metrics));
    let core = Core::new(
        Policy::from_config(config),
        RequestLimits::shared(&config.limits, shared),
        journal,
        cvm,
    )
    .with_clock(clock)
    .with_metrics(metrics);
    Ok(match catalog {
        Some(link) => core.with_catalog(link),
        None => core,
    })
}

/// What every part of the running bot shares.
pub struct App {
    /// The Discord adapter, which holds the core.
    pub bot: Arc<Bot>,
    /// The config in force (swapped by a reload).
    config: Mutex<Config>,
    /// Why the last reload failed, until one succeeds (shown in `/healthz`).
    reload_failed: Mutex<Option<String>>,
    /// The audit signing key and the journal's shipper (`[audit.ship]`).
    shipping: crate::ship::Shipping,
}

impl App {
    fn core(&self) -> &Core {
        &self.bot.core
    }

    /// Ready: connected to the gateway, with a journal that can be written.
    pub fn health(&self) -> Result<(), String> {
        if !self.bot.is_connected() {
            return Err("not connected to the Discord gateway".into());
        }
        // Never blocks on the writer: the journal keeps the last write's result aside.
        self.core()
            .journal()
            .health()
            .map_err(|e| format!("the audit journal cannot be written: {e}"))
    }

    /// What is degraded but does not make the bot unready: failing Discord REST calls, a stalled
    /// audit channel feed, and the catalog regions whose list is missing, failing or forbidden
    /// (requests by ID still work).
    pub fn health_detail(&self) -> Option<String> {
        let mut lines = self.bot.degraded();
        if let Some(why) = &*self.reload_failed.lock().unwrap_or_else(|e| e.into_inner()) {
            lines.push(format!(
                "config: the last reload failed, the previous config is still in force: {why}"
            ));
        }
        if let Some(link) = self.core().catalog_link() {
            lines.extend(
                link.catalog
                    .status()
                    .iter()
                    // A region still on its first listing is not degraded yet.
                    .filter(|r| r.failures > 0 || r.permission_missing)
                    .map(|r| format!("catalog: {r}")),
            );
        }
        lines.extend(self.shipping.health_detail());
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// The journal's head, to be witnessed outside the file: `journal head: seq N, sha256 …`.
    /// `vncbot audit verify --head N:HASH` then shows a journal truncated or replaced since.
    fn anchor_line(&self) -> String {
        let head = self.core().journal().head();
        discord::messages::anchor_line(&head, self.shipping.sign_head(&head).as_deref())
    }

    /// Records the refusals suppressed in the last minute, one count per member (the audit
    /// channel's line follows from the record).
    async fn flush_suppressed(&self) {
        if let Err(e) = self.core().flush_suppressed().await {
            tracing::error!(error = %e, "AUDIT WRITE FAILED for suppressed refusals")
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Env(#[from] crate::config::EnvError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot listen on admin.listen {addr}: {source}")]
    Admin {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Ship(String),
    #[error("Discord client error: {0}")]
    Discord(Box<serenity::Error>),
    #[error(transparent)]
    AnchorMismatch(#[from] anchor::AnchorMismatch),
    #[error(transparent)]
    ApprovalsChannel(#[from] approvals_channel::ApprovalsChannelError),
}

/// `vncbot run`: load everything (failing fast with one clear line), then serve until a signal.
pub fn run_from_path(path: &Path) -> Result<(), RunError> {
    let config = Config::load(path)?;
    crate::init_logging("info", config.log.format);
    let token = discord_token_from_env()?;
    let creds = TencentCredentials::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    runtime.block_on(run_with(
        config,
        Some(path.to_owned()),
        token.expose_secret(),
        creds,
        clock_from_env(),
    ))
}

/// The system clock; in a debug build, shifted forward by `VNCBOT_DEBUG_CLOCK_SKEW_SECS`, so a
/// process test can start the bot after a window "ran out" without waiting for it. Release
/// builds never read the variable.
fn clock_from_env() -> Clock {
    if !cfg!(debug_assertions) {
        return Clock::system();
    }
    let Some(skew) = std::env::var("VNCBOT_DEBUG_CLOCK_SKEW_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return Clock::system();
    };
    tracing::warn!(
        skew_secs = skew,
        "DEBUG BUILD: the clock runs ahead of the system's (VNCBOT_DEBUG_CLOCK_SKEW_SECS)"
    );
    let clock = Clock::adjustable();
    clock.advance(Duration::from_secs(skew));
    clock
}

/// Runs the bot until SIGINT or SIGTERM. With `config_path`, SIGHUP re-reads the config there.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    token: &str,
    creds: TencentCredentials,
) -> Result<(), RunError> {
    run_with(config, config_path, token, creds, Clock::system()).await
}

/// [`run`], on the given clock (tests move it forward instead of waiting out a window).
pub async fn run_with(
    config: Config,
    config_path: Option<PathBuf>,
    token: &str,
    creds: TencentCredentials,
    clock: Clock,
) -> Result<(), RunError> {
    let stop = stop_signals();
    run_until(config, config_path, token, creds, clock, stop).await
}

/// [`run_with`], stopping (with the same clean shutdown) when `stop` completes instead of at a
/// signal: `vncbot demo` ends its tour's bot this way and keeps the stand-ins running.
pub async fn run_until(
    config: Config,
    config_path: Option<PathBuf>,
    token: &str,
    creds: TencentCredentials,
    clock: Clock,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    for warning in config.warnings() {
        tracing::warn!(%warning, "config: {warning}");
    }
    let core = Arc::new(build_core(&config, creds, clock)?);
    let live = Arc::downgrade(&core);
    core.metrics().sample_grants_live(move || {
        live.upgrade()
            .map_or(0, |c| i64::try_from(c.live_grants()).unwrap_or(i64::MAX))
    });
    let pending = Arc::downgrade(&core);
    core.metrics().sample_approvals_pending(move || {
        pending.upgrade().map_or(0, |c| {
            i64::try_from(c.pending_approvals()).unwrap_or(i64::MAX)
        })
    });
    core.metrics().config_loaded(std::time::SystemTime::now());
    let shipping = crate::ship::Shipping::start(
        config.audit.ship.as_ref(),
        core.journal(),
        &config.audit.path,
        Arc::clone(core.metrics()),
    )
    .map_err(RunError::Ship)?;
    let app = Arc::new(App {
        bot: Bot::new(
            Arc::clone(&core),
            config.discord.audit_channel_id.map(|c| c.get()),
        ),
        config: Mutex::new(config.clone()),
        reload_failed: Mutex::new(None),
        shipping,
    });
    let mut client = discord::client(&config, token, Arc::clone(&app.bot))
        .await
        .map_err(|e| RunError::Discord(Box::new(e)))?;
    // Before anything is written or posted: the journal must still hold the head the bot last
    // witnessed in the audit channel.
    if let Some(channel) = config.discord.audit_channel_id {
        let checked = anchor::check_at_start(
            &client.http,
            channel.get(),
            core.journal(),
            config.audit.on_anchor_mismatch,
        )
        .await?;
        if let anchor::Checked::Unchecked(why) = checked {
            app.bot.audit_feed.post(format!(
                "WARNING: the journal was not checked against an earlier journal head at this start: {why}. Check it by hand with `vncbot audit verify --head` and the last head you trust."
            ));
        }
    }
    // Requests must reach an approver: refuse to start when some rule needs approvers and the
    // bot cannot post in their channel (src/app/approvals_channel.rs).
    if let Some(a) = &config.approvals {
        if let Err(e) = approvals_channel::check(&client.http, a.channel_id.get()).await {
            let needed = config
                .allow
                .iter()
                .any(|r| r.gate.needs_approval() || !r.gate.break_glass_roles.is_empty());
            if needed {
                return Err(e.into());
            }
            tracing::error!(error = %e, "STARTING ANYWAY: no rule needs approvers or break-glass, but the approvals channel cannot be posted in");
        }
    }
    discord::watch_gateway(Arc::clone(&app.bot), &client);
    core.run_timers();
    // The catalog: filled now in the background and refreshed every `refresh_secs`; requests by
    // ID never wait for it.
    if let Some(link) = core.catalog_link() {
        link.catalog
            .spawn_refresher(Arc::clone(&link.source), config.catalog.refresh);
    }
    if let Some(admin) = config.admin {
        let (ready, detail) = (Arc::clone(&app), Arc::clone(&app));
        let checks = admin::Checks {
            detail: Arc::new(move || detail.health_detail()),
            metrics: Arc::clone(core.metrics()),
            ..admin::Checks::ready_only(Arc::new(move || ready.health()))
        };
        admin::start_with(admin.listen, checks, admin::Limits::default())
            .await
            .map_err(|source| RunError::Admin {
                addr: admin.listen,
                source,
            })?;
    }
    // Grants survive a restart: their buttons keep working, and those whose window ran out
    // while the bot was down are ended (and their DMs edited once the gateway is up).
    match core.resume_grants(&config.audit.path).await {
        Ok((live, lapsed)) => {
            tracing::info!(live, lapsed, "grants rebuilt from the journal");
        }
        Err(e) => {
            tracing::error!(error = %e, "could not rebuild grants from the journal; their buttons will be refused")
        }
    }
    match core.resume_approvals(&config.audit.path).await {
        Ok((pending, lapsed)) => {
            tracing::info!(
                pending,
                lapsed,
                "requests for approval rebuilt from the journal"
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "could not rebuild requests from the journal; their buttons will be refused")
        }
    }
    // Role changes already recorded: each audit log entry is recorded once across restarts, and
    // the backfill at READY starts after the newest.
    if let Err(e) = core.resume_role_changes(&config.audit.path) {
        tracing::error!(error = %e, "could not read the role changes recorded in the journal; the backfill reads the whole audit log and may record some twice");
    }

    // Anchor the head at start (queued until the gateway is up) and then every anchor_minutes;
    // a no-op while no audit channel is configured (a reload may add one).
    let anchoring = Arc::clone(&app);
    let every = config.audit.anchor_interval();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            anchoring.bot.audit_feed.post(anchoring.anchor_line());
        }
    });
    let housekeeping = Arc::clone(&app);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            housekeeping.core().limits().shrink();
            housekeeping.core().shrink_grants();
            housekeeping.flush_suppressed().await;
        }
    });
    if let Some(path) = config_path {
        let reloader = Arc::clone(&app);
        tokio::spawn(async move { reload_on_sighup(&reloader, &path).await });
    }

    let shard_manager = Arc::clone(&client.shard_manager);
    let client_run = client.start();
    tokio::pin!(client_run);
    // Race the client against the signal: serenity's `shutdown_all` returns early when no shard
    // runner exists (the gateway is down), and then `start` would never return.
    let ended = tokio::select! {
        r = &mut client_run => Some(r),
        () = stop => None,
    };
    // Either way, what is in flight is finished and recorded before the process leaves.
    shutdown(&app).await;
    match ended {
        Some(r) => r.map_err(|e| RunError::Discord(Box::new(e)))?,
        None => {
            let close = async {
                shard_manager.shutdown_all().await;
                (&mut client_run).await
            };
            if tokio::time::timeout(CLIENT_CLOSE_LIMIT, close)
                .await
                .is_err()
            {
                tracing::info!("the gateway client did not close in time; leaving anyway");
            }
        }
    }
    app.bot.set_connected(false);
    tracing::info!("stopped");
    Ok(())
}

/// Stops taking requests, finishes those in flight and the DM edits due, and records what is
/// still pending.
async fn shutdown(app: &App) {
    tracing::info!(
        "shutting down: no new requests; finishing those in flight and the DM expiry edits due"
    );
    // A closed tracker refuses new commands (see the Discord handler) and waits for the rest.
    app.bot.tasks.close();
    if tokio::time::timeout(DRAIN_LIMIT, app.bot.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after 30 s; stopping anyway");
    }
    app.flush_suppressed().await;
    // The last anchor goes behind every line still queued, and shutdown waits for all of them.
    app.bot.audit_feed.post(app.anchor_line());
    if tokio::time::timeout(FEED_DRAIN_LIMIT, app.bot.audit_feed.drain())
        .await
        .is_err()
    {
        tracing::warn!("the audit channel did not take every line before shutdown (the journal has the records)");
    }
    app.shipping.finish(SHIP_LIMIT).await;
}

/// SIGTERM and SIGINT, caught from the moment this is called: a signal that comes while the
/// bot is still starting is waited for, not fatal.
fn stop_signals() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (term, int) => {
                tracing::error!(term = ?term.err(), int = ?int.err(), "cannot catch SIGTERM or SIGINT; stop the bot with SIGKILL");
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reload::{keep_running, restart_only_changes};
    use super::*;

    const BASE: &str = r#"
[discord]
guild_ids = [800000000000000001]

[tencent]
regions = ["ap-guangzhou"]
timeout_secs = 5

[[allow]]
roles = [555000000000000001]
instances = ["*"]
regions = ["*"]

[limits]
per_user_per_minute = 3
"#;

    fn config(text: &str) -> Config {
        Config::parse(text).unwrap()
    }

    #[test]
    fn restart_only_keys_compare_with_the_config_in_force() {
        let running = config(BASE);
        // A restart-only key changed: it warns, and the config in force keeps the running value.
        let edited = config(&BASE.replace("timeout_secs = 5", "timeout_secs = 9"));
        assert_eq!(
            restart_only_changes(&running, &edited),
            ["tencent.timeout_secs"]
        );
        let in_force = keep_running(&running, edited);
        assert_eq!(in_force.tencent.timeout, running.tencent.timeout);
        assert_eq!(in_force.source, running.source);
        // Left as it is in the file, it still differs from what runs: it keeps warning.
        let again = config(&BASE.replace("timeout_secs = 5", "timeout_secs = 9"));
        assert_eq!(
            restart_only_changes(&in_force, &again),
            ["tencent.timeout_secs"]
        );
        // Set back to its running value: no change, no warning.
        assert!(restart_only_changes(&in_force, &config(BASE)).is_empty());
    }

    #[test]
    fn a_reload_reports_the_keys_it_changed_and_not_those_left_for_a_restart() {
        let running = config(BASE);
        let text = BASE
            .replace("per_user_per_minute = 3", "per_user_per_minute = 5")
            .replace("timeout_secs = 5", "timeout_secs = 9")
            + "\n[grants]\nminutes = 20\n";
        let edited = config(&text);
        let in_force = keep_running(&running, edited);
        assert_eq!(
            running.source.changed(&in_force.source),
            ["grants.minutes", "limits.per_user_per_minute"]
        );
        assert_ne!(running.source.digest(), in_force.source.digest());
        assert_eq!(in_force.limits.per_user_per_minute.get(), 5);
    }
}
