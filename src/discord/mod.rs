//! The Discord adapter: serenity gateway client, `/vnc` registration and dispatch, shutdown.
//! It turns interactions into [`crate::grant::Request`]s and outcomes into messages; all policy
//! lives in the core.

pub mod audit_feed;
pub mod messages;
pub mod vnc;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use serenity::all::{
    Context, CreateInteractionResponse, CreateInteractionResponseMessage, EventHandler,
    GatewayIntents, GuildId, Interaction, Ready,
};
use serenity::async_trait;
use serenity::http::HttpBuilder;
use tokio::sync::Notify;

use crate::config::{discord_token_from_env, Config, TencentCredentials};
use crate::grant::Core;

/// What every handler task shares.
pub struct Shared {
    pub core: Core,
    pub audit_feed: audit_feed::AuditFeed,
    pub guilds: Vec<u64>,
    require_reason: bool,
    regions: Vec<crate::ids::Region>,
    in_flight: AtomicUsize,
    shutting_down: AtomicBool,
    idle: Notify,
}

struct Handler {
    shared: Arc<Shared>,
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        tracing::info!(user = %ready.user.name, guilds = self.shared.guilds.len(), "connected to the Discord gateway");
        self.shared.audit_feed.start(Arc::clone(&ctx.http));
        let command = vnc::register(&self.shared.regions, self.shared.require_reason);
        // Guild commands appear at once and never in DMs; a global command would do neither.
        for g in &self.shared.guilds {
            match GuildId::new(*g)
                .set_commands(&ctx.http, vec![command.clone()])
                .await
            {
                Ok(_) => tracing::info!(guild = g, "registered /vnc"),
                Err(e) => tracing::error!(guild = g, error = %e, "could not register /vnc"),
            }
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
        self.shared.in_flight.fetch_add(1, Ordering::SeqCst);
        vnc::handle(&ctx, &self.shared, cmd).await;
        if self.shared.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.idle.notify_waiters();
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
    Start(#[from] crate::grant::StartError),
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
    runtime.block_on(run(config, token.expose_secret(), creds))
}

pub async fn run(config: Config, token: &str, creds: TencentCredentials) -> Result<(), RunError> {
    let core = Core::from_config(&config, creds)?;
    let shared = Arc::new(Shared {
        core,
        audit_feed: audit_feed::AuditFeed::new(config.discord.audit_channel_id.map(|c| c.get())),
        guilds: config.discord.guild_ids.iter().map(|g| g.get()).collect(),
        require_reason: config.audit.require_reason,
        regions: config.tencent.regions.clone(),
        in_flight: AtomicUsize::new(0),
        shutting_down: AtomicBool::new(false),
        idle: Notify::new(),
    });
    let mut http = HttpBuilder::new(token);
    if let Some(base) = &config.discord.api_base {
        // Without disabling serenity's rate limiter, it would send every call to discord.com.
        http = http
            .proxy(base.as_str().trim_end_matches('/'))
            .ratelimiter_disabled(true);
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
    let shard_manager = Arc::clone(&client.shard_manager);
    let limits_shared = Arc::clone(&shared);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limits_shared.core.limits().shrink();
        }
    });
    let stopper = Arc::clone(&shared);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new requests; finishing those in flight");
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
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
