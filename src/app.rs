//! The process: start-up (fail fast with one clear line), the admin endpoint, housekeeping,
//! config reload on SIGHUP, and shutdown (finish what is in flight, then leave, even when the
//! gateway is down). The Discord adapter ([`crate::discord`]) is glue over this.

pub mod admin;
pub mod anchor;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::audit::{AuditError, Journal, Repair};
use crate::clock::Clock;
use crate::config::{discord_token_from_env, Config, TencentCredentials};
use crate::core::{CatalogLink, Core, Policy, API_QUEUE_LIMIT};
use crate::discord::{self, Bot};
use crate::limits::{ApiPacer, RequestLimits};
use crate::tencent::Catalog;
use crate::tencent::TencentClient;

/// How long shutdown waits for requests in flight and the DM edits due.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// How long shutdown waits for the audit channel's queued lines and the last journal head.
const FEED_DRAIN_LIMIT: Duration = Duration::from_secs(15);
/// How long shutdown waits for the gateway client to close once asked.
const CLIENT_CLOSE_LIMIT: Duration = Duration::from_secs(5);

/// Why the core could not be built at start-up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error("cannot set up the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Builds the core from a validated config: opens (and if need be repairs) the journal, and
/// builds the Tencent clients and the catalog.
pub fn build_core(
    config: &Config,
    creds: TencentCredentials,
    clock: Clock,
) -> Result<Core, StartError> {
    let (journal, repair) = Journal::open_clocked(&config.audit.path, clock.clone())?;
    let path = config.audit.path.display();
    match repair {
        Some(Repair::Sealed(s)) => tracing::warn!(seq = s.seq, %path,
            "the audit journal ended in a torn line (a crash mid-write); sealed it and continued the chain"),
        Some(Repair::Completed { seq }) => tracing::warn!(seq, %path,
            "the audit journal's last record lacked its line end (a crash mid-write); completed it"),
        None => {}
    }
    let pacer = ApiPacer::new(config.limits.api_per_second, API_QUEUE_LIMIT);
    let catalog = if config.catalog.enabled {
        // Its own client: DescribeInstances has its own pace and never queues behind (or
        // ahead of) console calls.
        let idle = ApiPacer::new(config.limits.api_per_second, API_QUEUE_LIMIT);
        let source = TencentClient::new(&config.tencent, creds.clone(), idle, Default::default())?;
        Some(CatalogLink {
            catalog: Arc::new(Catalog::new(&config.tencent.regions)),
            source: Arc::new(source),
        })
    } else {
        None
    };
    let cvm = TencentClient::new(&config.tencent, creds, pacer, Default::default())?;
    let core = Core::new(
        Policy::from_config(config),
        RequestLimits::new(&config.limits),
        journal,
        cvm,
    )
    .with_clock(clock);
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
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// The journal's head, to be witnessed outside the file: `journal head: seq N, sha256 …`.
    /// `vncbot audit verify --head N:HASH` then shows a journal truncated or replaced since.
    fn anchor_line(&self) -> String {
        discord::messages::anchor_line(&self.core().journal().head())
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
    #[error("Discord client error: {0}")]
    Discord(Box<serenity::Error>),
    #[error(transparent)]
    AnchorMismatch(#[from] anchor::AnchorMismatch),
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
    let core = Arc::new(build_core(&config, creds, clock)?);
    let app = Arc::new(App {
        bot: Bot::new(
            Arc::clone(&core),
            config.discord.audit_channel_id.map(|c| c.get()),
        ),
        config: Mutex::new(config.clone()),
    });
    let mut client = discord::client(&config, token, Arc::clone(&app.bot))
        .await
        .map_err(|e| RunError::Discord(Box::new(e)))?;
    // Before anything is written or posted: the journal must still hold the head the bot last
    // witnessed in the audit channel.
    if let Some(channel) = config.discord.audit_channel_id {
        anchor::check_at_start(
            &client.http,
            channel.get(),
            core.journal(),
            config.audit.on_anchor_mismatch,
        )
        .await?;
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
}

async fn reload_on_sighup(app: &App, path: &Path) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; config reload is off");
        return;
    };
    while hup.recv().await.is_some() {
        match Config::load(path) {
            Ok(new) => apply(app, new).await,
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; keeping the config in force")
            }
        }
    }
}

/// The keys a reload cannot change in a running process.
fn restart_only_changes(old: &Config, new: &Config) -> Vec<&'static str> {
    let checks = [
        (
            "discord.guild_ids",
            old.discord.guild_ids != new.discord.guild_ids,
        ),
        (
            "discord.api_base",
            old.discord.api_base != new.discord.api_base,
        ),
        (
            "discord.gateway_url",
            old.discord.gateway_url != new.discord.gateway_url,
        ),
        (
            "tencent.endpoint",
            old.tencent.endpoint != new.tencent.endpoint,
        ),
        // The client routes by product and region as it started.
        (
            "tencent.products",
            old.tencent.products != new.tencent.products,
        ),
        (
            "tencent.lighthouse_regions",
            old.tencent.lighthouse_regions != new.tencent.lighthouse_regions,
        ),
        (
            "tencent.language",
            old.tencent.language != new.tencent.language,
        ),
        (
            "tencent.timeout_secs",
            old.tencent.timeout != new.tencent.timeout,
        ),
        (
            "limits.api_per_second",
            old.limits.api_per_second != new.limits.api_per_second,
        ),
        ("audit.path", old.audit.path != new.audit.path),
        (
            "admin.listen",
            old.admin.map(|a| a.listen) != new.admin.map(|a| a.listen),
        ),
        ("log.format", old.log.format != new.log.format),
    ];
    checks
        .into_iter()
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
}

/// Swaps the allowlist, limits and audit channel at once; says which changes need a restart.
async fn apply(app: &App, mut new: Config) {
    let (commands_changed, limits_changed) = {
        let mut old = app.config.lock().unwrap_or_else(|e| e.into_inner());
        for key in restart_only_changes(&old, &new) {
            tracing::warn!(
                key,
                "changed in the config file; takes effect only after a restart"
            );
        }
        // The served servers are where /vnc is registered: that happens at start only. The
        // products and Lighthouse regions are how the Tencent client routes, also fixed at start.
        new.discord.guild_ids.clone_from(&old.discord.guild_ids);
        new.tencent.products.clone_from(&old.tencent.products);
        new.tencent
            .lighthouse_regions
            .clone_from(&old.tencent.lighthouse_regions);
        let commands_changed = old.tencent.regions != new.tencent.regions
            || old.audit.require_reason != new.audit.require_reason;
        let limits_changed = old.limits != new.limits;
        app.core().reconfigure(
            Policy::from_config(&new),
            limits_changed.then(|| RequestLimits::new(&new.limits)),
        );
        app.bot
            .audit_feed
            .set_channel(new.discord.audit_channel_id.map(|c| c.get()));
        *old = new;
        (commands_changed, limits_changed)
    };
    tracing::info!(
        limits_changed,
        commands_changed,
        "config reloaded: allowlist, limits and audit channel swapped"
    );
    if commands_changed {
        if let Some(http) = app.bot.http() {
            discord::register_commands(&http, &app.bot).await;
        }
    }
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
