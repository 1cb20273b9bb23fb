//! The Discord adapter: serenity glue only. It sets up the client, dispatches each interaction
//! by kind and name to its own file, and turns outcomes into messages ([`messages`]). It never
//! touches the journal, the policy or Tencent: that is the core's work ([`crate::core`]).
//!
//! Adding a command: a file with `register()` and `run()`, one line in [`commands`], one arm in
//! [`Handler::interaction_create`].

pub mod audit_feed;
pub mod audit_lines;
pub mod autocomplete;
pub mod grant_buttons;
pub mod messages;
mod render;
pub mod vnc;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serenity::all::{
    Client, CommandInteraction, ConnectionStage, Context, CreateAllowedMentions, CreateCommand,
    CreateInteractionResponse, CreateInteractionResponseMessage, EditInteractionResponse,
    EventHandler, GatewayIntents, GuildId, Http, Interaction, Ready, ShardStageUpdateEvent,
};
use serenity::async_trait;
use serenity::http::HttpBuilder;
use tokio_util::task::{task_tracker::TaskTrackerToken, TaskTracker};

use crate::config::Config;
use crate::core::Core;
use crate::metrics::METRICS;
use audit_feed::AuditFeed;

/// The longest any Discord REST call may take, whole (Discord's own answers take well under a
/// second; an interaction token allows 15 minutes, a press's guard should not).
pub const REST_TIMEOUT: Duration = Duration::from_secs(10);
const REST_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the Discord adapter holds: the core it calls, the audit channel feed, the work in
/// flight (shutdown waits for it) and the gateway's state. The process ([`crate::app`]) builds it;
/// the adapter never reaches back up.
pub struct Bot {
    pub core: Arc<Core>,
    pub audit_feed: Arc<AuditFeed>,
    /// Commands being handled and DM edits still due: shutdown waits for them, and once it is
    /// closed no new command is taken.
    pub tasks: TaskTracker,
    /// Set once the gateway is up.
    http: OnceLock<Arc<Http>>,
    http_ready: tokio::sync::Notify,
    connected: AtomicBool,
    /// DMs showing a live link, each holding shutdown until its scrub is rendered.
    links_shown: Mutex<HashMap<(u64, u64), TaskTrackerToken>>,
}

impl Bot {
    pub fn new(core: Arc<Core>, audit_channel: Option<u64>) -> Arc<Self> {
        let audit_feed = Arc::new(AuditFeed::new(audit_channel));
        // From the head on: what was recorded before this start was posted by the process
        // that was running then.
        let journal = core.journal();
        audit_feed.project(journal.follow(journal.head().seq));
        let bot = Arc::new(Self {
            core,
            audit_feed,
            tasks: TaskTracker::new(),
            http: OnceLock::new(),
            http_ready: tokio::sync::Notify::new(),
            connected: AtomicBool::new(false),
            links_shown: Mutex::default(),
        });
        // Subscribed now, before grants are resumed: no event is missed while the gateway
        // comes up (they wait in the channel until the REST client exists).
        render::spawn(&bot);
        bot
    }

    /// The REST client, once the gateway has come up.
    pub fn http(&self) -> Option<Arc<Http>> {
        self.http.get().cloned()
    }

    fn set_http(&self, http: Arc<Http>) {
        let _ = self.http.set(http);
        self.http_ready.notify_waiters();
    }

    /// Waits for the REST client.
    pub async fn wait_for_http(&self) -> Arc<Http> {
        loop {
            let ready = self.http_ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if let Some(h) = self.http.get() {
                return Arc::clone(h);
            }
            ready.await;
        }
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::SeqCst);
        METRICS.gateway_connected.set(i64::from(up));
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// A link is on screen in this DM: shutdown waits until its scrub has been rendered.
    fn link_shown(&self, dm: (u64, u64)) {
        let token = self.tasks.token();
        lock(&self.links_shown).insert(dm, token);
    }

    /// The link in this DM was scrubbed (or never will be): shutdown need not wait for it.
    fn link_scrubbed(&self, dm: (u64, u64)) {
        lock(&self.links_shown).remove(&dm);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The client, pointed at `discord.api_base` and `discord.gateway_url` when set.
pub async fn client(config: &Config, token: &str, app: Arc<Bot>) -> serenity::Result<Client> {
    // serenity's own client has no timeout: a Discord that hangs would hold a press (and its
    // guard) or the audit feed forever. Every REST call is bounded here, once.
    let rest = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(REST_TIMEOUT)
        .connect_timeout(REST_CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut http = HttpBuilder::new(token).client(rest);
    if let Some(base) = &config.discord.api_base {
        // Without disabling serenity's rate limiter, it would send every call to discord.com.
        http = http
            .proxy(base.as_str().trim_end_matches('/'))
            .ratelimiter_disabled(true);
    }
    let client = serenity::all::ClientBuilder::new_with_http(http.build(), GatewayIntents::GUILDS)
        .event_handler(Handler { app })
        .await?;
    if let Some(gw) = &config.discord.gateway_url {
        *client.ws_url.lock().await = gw.as_str().trim_end_matches('/').to_owned();
    }
    Ok(client)
}

/// Every command the bot registers.
fn commands(app: &Bot) -> Vec<CreateCommand> {
    let policy = app.core.policy();
    vec![vnc::register(&policy.regions, policy.require_reason)]
}

/// Registers the commands in each served server: guild commands appear at once and never in
/// DMs; a global command would do neither.
pub async fn register_commands(http: &Http, app: &Bot) {
    let commands = commands(app);
    for g in &app.core.policy().guilds {
        match GuildId::new(g.get())
            .set_commands(http, commands.clone())
            .await
        {
            Ok(_) => tracing::info!(guild = %g, "registered /vnc"),
            Err(e) => tracing::error!(guild = %g, error = %e, "could not register /vnc"),
        }
    }
}

/// No mentions, ever: nothing the bot says may ping anyone.
pub fn no_mentions() -> CreateAllowedMentions {
    CreateAllowedMentions::new()
        .everyone(false)
        .all_users(false)
        .all_roles(false)
        .replied_user(false)
}

/// Edits a command's deferred ephemeral reply; failures are logged, never fatal.
pub async fn reply(ctx: &Context, cmd: &CommandInteraction, text: &str) {
    let edit = EditInteractionResponse::new()
        .content(text)
        .allowed_mentions(no_mentions());
    if let Err(e) = cmd.edit_response(&ctx.http, edit).await {
        tracing::warn!(interaction = %cmd.id, error = %e, "could not edit the ephemeral reply");
    }
}

struct Handler {
    app: Arc<Bot>,
}

#[async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        let guilds = self.app.core.policy().guilds.len();
        tracing::info!(user = %ready.user.name, guilds, "connected to the Discord gateway");
        self.app.set_connected(true);
        self.app.set_http(Arc::clone(&ctx.http));
        self.app.audit_feed.start(Arc::clone(&ctx.http));
        register_commands(&ctx.http, &self.app).await;
    }

    async fn shard_stage_update(&self, _ctx: Context, event: ShardStageUpdateEvent) {
        let up = event.new == ConnectionStage::Connected;
        self.app.set_connected(up);
        if !up {
            tracing::warn!(stage = %event.new, "gateway connection is not up");
        }
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        let cmd = match interaction {
            Interaction::Command(cmd) => cmd,
            // From memory, no journal record, no limit: typing is not asking.
            Interaction::Autocomplete(ac) => {
                autocomplete::run(&ctx, &self.app, &ac).await;
                return;
            }
            Interaction::Component(comp) => {
                // Counted like commands, so shutdown finishes a press in flight.
                let work = self.app.tasks.token();
                if self.app.tasks.is_closed() {
                    let msg = CreateInteractionResponseMessage::new()
                        .ephemeral(true)
                        .content(messages::REPLY_SHUTTING_DOWN);
                    let _ = comp
                        .create_response(&ctx.http, CreateInteractionResponse::Message(msg))
                        .await;
                    return;
                }
                grant_buttons::run(&ctx, &self.app, &comp).await;
                drop(work);
                return;
            }
            _ => return,
        };
        // Counted until handled, so shutdown waits for it; refused once shutdown has begun.
        // The token is taken before the check: a command counted before shutdown closes the
        // tracker is waited for; one that sees it closed is refused.
        let work = self.app.tasks.token();
        let Some(_work) = (!self.app.tasks.is_closed()).then_some(work) else {
            let msg = CreateInteractionResponseMessage::new()
                .ephemeral(true)
                .content(messages::REPLY_SHUTTING_DOWN);
            let _ = cmd
                .create_response(&ctx.http, CreateInteractionResponse::Message(msg))
                .await;
            return;
        };
        // Defer first: Discord wants an answer within 3 s, and nothing below may delay it.
        let defer = CreateInteractionResponse::Defer(
            CreateInteractionResponseMessage::new().ephemeral(true),
        );
        if let Err(e) = cmd.create_response(&ctx.http, defer).await {
            tracing::warn!(interaction = %cmd.id, error = %e, "could not defer the interaction");
            return;
        }
        match cmd.data.name.as_str() {
            vnc::NAME => vnc::run(&ctx, &self.app, &cmd).await,
            _ => reply(&ctx, &cmd, messages::REPLY_UNKNOWN_COMMAND).await,
        }
    }
}
