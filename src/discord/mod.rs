//! The Discord adapter: serenity gateway client, `/vnc` registration and dispatch, the admin
//! endpoint, config reload on SIGHUP, and shutdown. It turns interactions into
//! [`crate::grant::Request`]s and outcomes into messages; all policy lives in the core.

pub mod audit_feed;
pub mod messages;
pub mod vnc;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use secrecy::ExposeSecret;
use serenity::all::{
    ConnectionStage, Context, CreateInteractionResponse, CreateInteractionResponseMessage,
    EventHandler, GatewayIntents, GuildId, Http, Interaction, Ready, ShardStageUpdateEvent,
};
use serenity::async_trait;
use serenity::http::HttpBuilder;
use tokio::sync::Notify;

use crate::config::{discord_token_from_env, Config, TencentCredentials};
use crate::grant::{Core, Policy};
use crate::limits::RequestLimits;
use crate::metrics::METRICS;

/// More members than one team has; past it the DM channel cache starts over.
const DM_CHANNEL_CACHE_MAX: usize = 10_000;

/// What every handler task shares.
pub struct Shared {
    pub core: Core,
    pub audit_feed: audit_feed::AuditFeed,
    pub guilds: Vec<u64>,
    /// The config in force (swapped by a reload), for what the adapter reads of it.
    config: Mutex<Config>,
    http: OnceLock<Arc<Http>>,
    /// User ID → DM channel (see `vnc::dm_channel`).
    dm_channels: dashmap::DashMap<u64, serenity::all::ChannelId>,
    connected: AtomicBool,
    /// Commands being handled plus DM expiry edits still due: shutdown waits for both.
    in_flight: AtomicUsize,
    shutting_down: AtomicBool,
    idle: Notify,
}

/// Counts one piece of work in flight until dropped.
pub struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Shared {
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    /// Healthy: connected to the gateway, with a journal that can be written.
    pub fn health(&self) -> Result<(), String> {
        if !self.connected.load(Ordering::SeqCst) {
            return Err("not connected to the Discord gateway".into());
        }
        if !self.core.journal().is_healthy() {
            return Err("the audit journal cannot be written".into());
        }
        Ok(())
    }

    async fn register_commands(&self, http: &Http) {
        let command = {
            let c = self.config.lock().unwrap_or_else(|e| e.into_inner());
            vnc::register(&c.tencent.regions, c.audit.require_reason)
        };
        // Guild commands appear at once and never in DMs; a global command would do neither.
        for g in &self.guilds {
            match GuildId::new(*g)
                .set_commands(http, vec![command.clone()])
                .await
            {
                Ok(_) => tracing::info!(guild = g, "registered /vnc"),
                Err(e) => tracing::error!(guild = g, error = %e, "could not register /vnc"),
            }
        }
    }
}

struct Handler {
    shared: Arc<Shared>,
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        tracing::info!(user = %ready.user.name, guilds = self.shared.guilds.len(), "connected to the Discord gateway");
        self.shared.connected.store(true, Ordering::SeqCst);
        METRICS.gateway_connected.set(1);
        let _ = self.shared.http.set(Arc::clone(&ctx.http));
        self.shared.audit_feed.start(Arc::clone(&ctx.http));
        self.shared.register_commands(&ctx.http).await;
    }

    async fn shard_stage_update(&self, _ctx: Context, event: ShardStageUpdateEvent) {
        let up = event.new == ConnectionStage::Connected;
        self.shared.connected.store(up, Ordering::SeqCst);
        METRICS.gateway_connected.set(i64::from(up));
        if !up {
            tracing::warn!(stage = %event.new, "gateway connection is not up");
        }
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        let Interaction::Command(cmd) = interaction else {
            return;
        };
        if self.shared.shutting_down.load(Ordering::SeqCst) {
            let msg = CreateInteractionResponseMessage::new()
                .ephemeral(true)
                .content(messages::REPLY_SHUTTING_DOWN);
            let _ = cmd
                .create_response(&ctx.http, CreateInteractionResponse::Message(msg))
                .await;
            return;
        }
        let _work = self.shared.begin();
        vnc::handle(&ctx, &self.shared, cmd).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Env(#[from] crate::config::EnvError),
    #[error(transparent)]
    Start(#[from] crate::grant::StartError),
    #[error("cannot listen on admin.listen {addr}: {source}")]
    Admin {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("Discord client error: {0}")]
    Discord(Box<serenity::Error>),
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
    runtime.block_on(run(
        config,
        Some(path.to_owned()),
        token.expose_secret(),
        creds,
    ))
}

/// Runs the bot. With `config_path`, SIGHUP re-reads the config from there.
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    token: &str,
    creds: TencentCredentials,
) -> Result<(), RunError> {
    let core = Core::from_config(&config, creds)?;
    let mut http = HttpBuilder::new(token);
    if let Some(base) = &config.discord.api_base {
        // Without disabling serenity's rate limiter, it would send every call to discord.com.
        http = http
            .proxy(base.as_str().trim_end_matches('/'))
            .ratelimiter_disabled(true);
    }
    let shared = Arc::new(Shared {
        core,
        audit_feed: audit_feed::AuditFeed::new(config.discord.audit_channel_id.map(|c| c.get())),
        guilds: config.discord.guild_ids.iter().map(|g| g.get()).collect(),
        config: Mutex::new(config.clone()),
        http: OnceLock::new(),
        dm_channels: dashmap::DashMap::new(),
        connected: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        shutting_down: AtomicBool::new(false),
        idle: Notify::new(),
    });
    if let Some(admin) = config.admin {
        let s = Arc::clone(&shared);
        crate::admin::start(admin.listen, Arc::new(move || s.health()))
            .await
            .map_err(|source| RunError::Admin {
                addr: admin.listen,
                source,
            })?;
    }
    let mut client =
        serenity::all::ClientBuilder::new_with_http(http.build(), GatewayIntents::GUILDS)
            .event_handler(Handler {
                shared: Arc::clone(&shared),
            })
            .await
            .map_err(|e| RunError::Discord(Box::new(e)))?;
    if let Some(gw) = &config.discord.gateway_url {
        *client.ws_url.lock().await = gw.as_str().trim_end_matches('/').to_owned();
    }

    let housekeeping = Arc::clone(&shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            housekeeping.core.limits().shrink();
        }
    });
    if let Some(path) = config_path {
        let reloader = Arc::clone(&shared);
        tokio::spawn(async move { reload_on_sighup(&reloader, &path).await });
    }
    let shard_manager = Arc::clone(&client.shard_manager);
    let stopper = Arc::clone(&shared);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!(
            "shutting down: no new requests; finishing those in flight and the DM expiry edits due"
        );
        stopper.shutting_down.store(true, Ordering::SeqCst);
        let drained = async {
            while stopper.in_flight.load(Ordering::SeqCst) > 0 {
                let idle = stopper.idle.notified();
                if stopper.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), drained)
            .await
            .is_err()
        {
            tracing::warn!("requests still in flight after 30 s; stopping anyway");
        }
        shard_manager.shutdown_all().await;
    });
    client
        .start()
        .await
        .map_err(|e| RunError::Discord(Box::new(e)))?;
    shared.connected.store(false, Ordering::SeqCst);
    METRICS.gateway_connected.set(0);
    tracing::info!("stopped");
    Ok(())
}

async fn reload_on_sighup(shared: &Shared, path: &Path) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler; config reload is off");
        return;
    };
    while hup.recv().await.is_some() {
        match Config::load(path) {
            Ok(new) => apply(shared, new).await,
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; keeping the config in force")
            }
        }
    }
}

/// Swaps the allowlist, limits and audit channel at once; says which changes need a restart.
async fn apply(shared: &Shared, new: Config) {
    let (commands_changed, limits_changed) = {
        let mut old = shared.config.lock().unwrap_or_else(|e| e.into_inner());
        let restart_only = [
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
        for (key, changed) in restart_only {
            if changed {
                tracing::warn!(
                    key,
                    "changed in the config file; takes effect only after a restart"
                );
            }
        }
        let commands_changed = old.tencent.regions != new.tencent.regions
            || old.audit.require_reason != new.audit.require_reason;
        let limits_changed = old.limits.per_user_per_minute != new.limits.per_user_per_minute
            || old.limits.per_instance_per_minute != new.limits.per_instance_per_minute;
        shared.core.reconfigure(
            Policy::from_config(&new),
            limits_changed.then(|| RequestLimits::new(&new.limits)),
        );
        shared
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
        if let Some(http) = shared.http.get() {
            shared.register_commands(http).await;
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
