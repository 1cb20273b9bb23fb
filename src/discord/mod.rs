//! The Discord adapter: serenity glue only. It sets up the client, dispatches each interaction
//! by kind and name to its own file, and turns outcomes into messages ([`messages`]). It never
//! touches the journal, the policy or Tencent: that is the core's work ([`crate::core`]).
//!
//! Adding a command: a file with `register()` and `run()`, one line in [`commands`], one arm in
//! [`Handler::interaction_create`].

pub mod admin;
pub mod answer;
pub mod approvals;
pub mod audit_feed;
pub mod audit_lines;
pub mod autocomplete;
pub mod break_glass;
pub mod extend;
pub mod grant_buttons;
pub mod messages;
pub mod pick;
pub mod refusals;
mod render;
pub mod role_changes;
pub mod vnc;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serenity::all::{
    Channel, ChannelId, Client, ConnectionStage, Context, CreateAllowedMentions, CreateCommand,
    CreateInteractionResponse, CreateInteractionResponseMessage, EditInteractionResponse,
    EventHandler, GatewayIntents, GuildId, Http, Interaction, Ready, ShardStageUpdateEvent,
};
use serenity::async_trait;
use serenity::http::HttpBuilder;
use tokio_util::task::{task_tracker::TaskTrackerToken, TaskTracker};

use crate::config::Config;
use crate::core::Core;
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
    /// DM channels known to be a member's: opened by the bot, pressed in by the member, or
    /// confirmed by Discord. channel → user.
    dms: Mutex<HashMap<u64, u64>>,
    /// Recent failed REST calls, for `/healthz`.
    rest_failures: Mutex<VecDeque<(std::time::Instant, &'static str, String)>>,
    /// Commands past their acknowledgement that may work at once (see [`FOLLOW_UPS`]).
    follow_ups: tokio::sync::Semaphore,
}

/// How many deferred commands do their work (journal, DM) at once. In a burst the rest wait,
/// taking no CPU, so the acknowledgements of later commands, each due within 3 s, are not
/// queued behind the follow-up work of earlier ones on the runtime's threads.
const FOLLOW_UPS: usize = 16;

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
            dms: Mutex::default(),
            rest_failures: Mutex::default(),
            follow_ups: tokio::sync::Semaphore::new(FOLLOW_UPS),
        });
        // Subscribed now, before grants are resumed: no event is missed while the gateway
        // comes up (they wait in the channel until the REST client exists).
        render::spawn(&bot);
        approvals::spawn(&bot);
        break_glass::spawn(&bot);
        bot
    }

    /// Renders each event of `events` on a task of its own (one slow edit never holds up the
    /// others), once the gateway is up. The caller subscribes before the core starts emitting,
    /// so nothing is missed while the gateway comes up: events wait in the channel.
    fn render_each<T, F, Fut>(
        self: &Arc<Self>,
        mut events: tokio::sync::broadcast::Receiver<T>,
        what: &'static str,
        render: F,
    ) where
        T: Clone + Send + 'static,
        F: Fn(Arc<Http>, Arc<Self>, T) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        use tokio::sync::broadcast::error::RecvError;
        let bot = Arc::clone(self);
        tokio::spawn(async move {
            let http = bot.wait_for_http().await;
            loop {
                match events.recv().await {
                    Ok(event) => {
                        tokio::spawn(render(Arc::clone(&http), Arc::clone(&bot), event));
                    }
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(
                            missed = n,
                            "fell behind on {what} events; those were not shown in Discord"
                        );
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        });
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
        self.core.metrics().gateway_connected.set(i64::from(up));
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// How a Discord REST call went: a failure is logged with what was tried and remembered
    /// for `/healthz`. The value on success.
    pub fn rest<T>(&self, what: &'static str, result: serenity::Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "Discord REST call failed: could not {what}");
                let mut failures = lock(&self.rest_failures);
                if failures.len() >= REST_FAILURES_KEPT {
                    failures.pop_front();
                }
                failures.push_back((std::time::Instant::now(), what, e.to_string()));
                None
            }
        }
    }

    /// What is degraded in the adapter: failing REST calls in the last minute, a stalled
    /// audit channel feed.
    pub fn degraded(&self) -> Vec<String> {
        let mut lines = Vec::new();
        {
            let mut failures = lock(&self.rest_failures);
            failures.retain(|(at, ..)| at.elapsed() < REST_FAILURE_WINDOW);
            if let Some((_, what, error)) = failures.back() {
                lines.push(format!(
                    "discord: {} REST call(s) failed in the last {} s (last: could not {what}: {error})",
                    failures.len(),
                    REST_FAILURE_WINDOW.as_secs()
                ));
            }
        }
        lines.extend(self.audit_feed.stalled());
        lines
    }

    /// Discord says this channel is `user`'s DM (it opened it for the bot, or the member
    /// pressed a button there).
    fn dm_is(&self, channel: u64, user: u64) {
        let mut dms = lock(&self.dms);
        if dms.len() >= MAX_KNOWN_DMS {
            dms.clear();
        }
        dms.insert(channel, user);
    }

    /// Whether a DM target may be edited for `user`: it is not the audit channel, and Discord
    /// confirms it is a DM whose recipient is `user`. A target read back from the journal is
    /// only a claim (the chain is unkeyed): anyone who can append to the file could point it
    /// at the audit channel's anchor.
    async fn may_edit_dm_of(&self, http: &Http, channel: u64, user: u64) -> bool {
        if Some(channel) == self.audit_feed.channel() {
            tracing::warn!(channel, "refused to edit a message in the audit channel");
            return false;
        }
        if lock(&self.dms).get(&channel) == Some(&user) {
            return true;
        }
        match ChannelId::new(channel).to_channel(http).await {
            Ok(Channel::Private(dm)) if dm.recipient.id.get() == user => {
                self.dm_is(channel, user);
                true
            }
            Ok(_) => {
                tracing::warn!(channel, user, "a grant's DM target is not the holder's DM; it was not edited (the journal may have been tampered with)");
                false
            }
            Err(e) => {
                tracing::warn!(channel, user, error = %e, "could not confirm a grant's DM target; it was not edited");
                false
            }
        }
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

/// Failed REST calls remembered for `/healthz`, and for how long.
const REST_FAILURES_KEPT: usize = 64;
const REST_FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// DM channels remembered as confirmed; past this the memory starts afresh (they are asked
/// again).
const MAX_KNOWN_DMS: usize = 100_000;

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
    // GUILD_MODERATION (not privileged) brings the server's audit log entries as they are
    // made: who gave or took a role the config names (see `role_changes`).
    let intents = GatewayIntents::GUILDS | GatewayIntents::GUILD_MODERATION;
    let client = serenity::all::ClientBuilder::new_with_http(http.build(), intents)
        .event_handler(Handler { app })
        .await?;
    if let Some(gw) = &config.discord.gateway_url {
        *client.ws_url.lock().await = gw.as_str().trim_end_matches('/').to_owned();
    }
    Ok(client)
}

/// How often the gateway's state is read; readiness follows it within this (plus a tick).
const GATEWAY_CHECK: Duration = Duration::from_secs(5);
/// How often a gateway that stays down is reported again.
const GATEWAY_DOWN_REPORT: Duration = Duration::from_secs(30);

/// Follows the gateway's real state: serenity sends no stage event when a closed socket makes
/// it restart its shard (the runner is simply gone while it reconnects), so readiness would
/// stay up. The shard manager's runners are read instead: ready only with a connected shard.
pub fn watch_gateway(bot: Arc<Bot>, client: &Client) {
    let runners = Arc::clone(&client.shard_manager.runners);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(GATEWAY_CHECK);
        let mut down_since: Option<tokio::time::Instant> = None;
        let mut reported: Option<tokio::time::Instant> = None;
        let mut ever_up = false;
        loop {
            tick.tick().await;
            let stages: Vec<ConnectionStage> =
                runners.lock().await.values().map(|r| r.stage).collect();
            let up = stages.contains(&ConnectionStage::Connected);
            if up {
                if down_since.take().is_some() && ever_up {
                    tracing::info!("the Discord gateway is back");
                }
                ever_up = true;
                reported = None;
                if !bot.is_connected() {
                    bot.set_connected(true);
                }
                continue;
            }
            if bot.is_connected() {
                bot.set_connected(false);
            }
            let since = *down_since.get_or_insert_with(tokio::time::Instant::now);
            if reported.is_none_or(|r| r.elapsed() >= GATEWAY_DOWN_REPORT)
                && (ever_up || since.elapsed() >= GATEWAY_DOWN_REPORT)
            {
                reported = Some(tokio::time::Instant::now());
                let stage = stages
                    .first()
                    .map_or_else(|| "reconnecting".to_owned(), ToString::to_string);
                tracing::warn!(down_secs = since.elapsed().as_secs(), stage,
                    "not connected to the Discord gateway; serenity keeps reconnecting (presses and /vnc wait for it)");
            }
        }
    });
}

/// Every command the bot registers.
fn commands(app: &Bot) -> Vec<CreateCommand> {
    let policy = app.core.policy();
    vec![
        vnc::register(&policy.regions, policy.require_reason),
        admin::register(),
    ]
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
            Ok(_) => tracing::info!(guild = %g, "registered /vnc and /vncadmin"),
            Err(e) => {
                tracing::error!(guild = %g, error = %e, "could not register /vnc and /vncadmin")
            }
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

/// Edits a command's deferred ephemeral reply (or a menu's message); failures are logged, never
/// fatal.
pub async fn reply(ctx: &Context, bot: &Bot, cmd: &impl answer::Answer, text: &str) {
    let edit = EditInteractionResponse::new()
        .content(text)
        .components(vec![])
        .allowed_mentions(no_mentions());
    bot.rest("edit an ephemeral reply", cmd.edit(&ctx.http, edit).await);
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
        role_changes::spawn_backfill(Arc::clone(&self.app), Arc::clone(&ctx.http));
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
                if approvals::is_ours(&comp.data.custom_id) {
                    approvals::run(&ctx, &self.app, &comp).await;
                } else if break_glass::is_ours(&comp.data.custom_id) {
                    break_glass::press(&ctx, &self.app, &comp).await;
                } else if pick::is_ours(&comp.data.custom_id) {
                    pick::run(&ctx, &self.app, &comp).await;
                } else {
                    grant_buttons::run(&ctx, &self.app, &comp).await;
                }
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
        let deferred = cmd.create_response(&ctx.http, defer).await;
        if self.app.rest("defer a command", deferred).is_none() {
            return;
        }
        // Never closed, so a permit always comes.
        let _turn = self.app.follow_ups.acquire().await;
        match cmd.data.name.as_str() {
            vnc::NAME => vnc::run(&ctx, &self.app, &cmd).await,
            admin::NAME => admin::run(&ctx, &self.app, &cmd).await,
            _ => reply(&ctx, &self.app, &cmd, messages::REPLY_UNKNOWN_COMMAND).await,
        }
    }

    async fn guild_audit_log_entry_create(
        &self,
        ctx: Context,
        entry: serenity::model::guild::audit_log::AuditLogEntry,
        guild_id: GuildId,
    ) {
        role_changes::on_entry(&ctx, &self.app, &entry, guild_id).await;
    }

    async fn command_permissions_update(
        &self,
        ctx: Context,
        permission: serenity::all::CommandPermissions,
    ) {
        role_changes::on_command_permissions(&ctx, &self.app, &permission).await;
    }
}
