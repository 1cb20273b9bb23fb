//! `/vnc`: registration and the handler.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serenity::all::{
    ChannelId, CommandInteraction, CommandOptionType, Context, CreateActionRow,
    CreateAllowedMentions, CreateButton, CreateCommand, CreateCommandOption,
    CreateInteractionResponse, CreateInteractionResponseMessage, CreateMessage,
    EditInteractionResponse, EditMessage, MessageId, ResolvedValue,
};

use super::messages::{self, BUTTON_URL_MAX};
use super::Shared;
use crate::audit::{Actor, Entry, Event};
use crate::grant::{Authority, Issued, Refusal, Request, MAX_REASON_CHARS};
use crate::ids::{Region, Snowflake};
use crate::metrics::METRICS;

pub const NAME: &str = "vnc";
/// Longest `instance` option Discord will send: room for an ID and stray spaces, no more.
pub const INSTANCE_MAX_LEN: u16 = 64;

/// Discord's JSON error code for "Cannot send messages to this user".
const CANNOT_DM: isize = 50007;

pub fn register(regions: &[Region], require_reason: bool) -> CreateCommand {
    let mut region = CreateCommandOption::new(
        CommandOptionType::String,
        "region",
        "Region of the instance (default: the first configured)",
    )
    .required(false);
    for r in regions.iter().take(25) {
        region = region.add_string_choice(r.as_str(), r.as_str());
    }
    CreateCommand::new(NAME)
        .description("Get a one-time console link for a CVM instance, by DM")
        .dm_permission(false)
        .add_option(
            CreateCommandOption::new(
                CommandOptionType::String,
                "instance",
                "Instance ID, like ins-a1b2c3d4",
            )
            .required(true)
            .max_length(INSTANCE_MAX_LEN),
        )
        .add_option(region)
        .add_option(
            CreateCommandOption::new(
                CommandOptionType::String,
                "reason",
                "Why you need the console (audited)",
            )
            .required(require_reason)
            .max_length(MAX_REASON_CHARS as u16),
        )
}

fn no_mentions() -> CreateAllowedMentions {
    CreateAllowedMentions::new()
        .everyone(false)
        .all_users(false)
        .all_roles(false)
        .replied_user(false)
}

/// Edits the deferred ephemeral reply; failures are logged, never fatal.
async fn reply(ctx: &Context, cmd: &CommandInteraction, text: &str) {
    let edit = EditInteractionResponse::new()
        .content(text)
        .allowed_mentions(no_mentions());
    if let Err(e) = cmd.edit_response(&ctx.http, edit).await {
        tracing::warn!(interaction = %cmd.id, error = %e, "could not edit the ephemeral reply");
    }
}

pub async fn handle(ctx: &Context, shared: &Arc<Shared>, cmd: CommandInteraction) {
    // Defer first: Discord wants an answer within 3 s, and nothing below may delay it.
    let defer =
        CreateInteractionResponse::Defer(CreateInteractionResponseMessage::new().ephemeral(true));
    if let Err(e) = cmd.create_response(&ctx.http, defer).await {
        tracing::warn!(interaction = %cmd.id, error = %e, "could not defer the interaction");
        return;
    }
    if cmd.data.name != NAME {
        reply(ctx, &cmd, messages::REPLY_UNKNOWN_COMMAND).await;
        return;
    }
    let actor = Actor::Discord {
        id: cmd.user.id.get(),
        name: cmd.user.name.clone(),
    };
    let (Some(guild), Some(member)) = (cmd.guild_id, cmd.member.as_ref()) else {
        METRICS.command("not_in_guild");
        record_refused_interaction(shared, &actor, None, "not_in_guild").await;
        reply(ctx, &cmd, messages::REPLY_NOT_IN_GUILD).await;
        return;
    };
    if !shared.guilds.contains(&guild.get()) {
        // The audit channel belongs to the configured server; this goes to the journal only.
        METRICS.command("other_guild");
        record_refused_interaction(shared, &actor, Some(guild.get()), "other_guild").await;
        reply(ctx, &cmd, messages::REPLY_OTHER_GUILD).await;
        return;
    }
    let mut instance = String::new();
    let mut region = None;
    let mut reason = None;
    for opt in cmd.data.options() {
        if let ResolvedValue::String(v) = opt.value {
            match opt.name {
                "instance" => instance = v.to_owned(),
                "region" => region = Some(v.to_owned()),
                "reason" => reason = Some(v.to_owned()),
                _ => {}
            }
        }
    }
    let note = |outcome: &str, region: Option<&str>, request_id: Option<&str>| {
        METRICS.command(outcome);
        shared.audit_feed.post(messages::audit_line(
            cmd.user.id.get(),
            &instance,
            region,
            reason.as_deref(),
            messages::outcome_text(outcome),
            request_id,
        ));
    };
    let request = Request {
        actor: actor.clone(),
        authority: Authority::Roles(
            member
                .roles
                .iter()
                .filter_map(|r| Snowflake::new(r.get()))
                .collect(),
        ),
        guild: Snowflake::new(guild.get()),
        channel: Snowflake::new(cmd.channel_id.get()),
        instance: instance.clone(),
        region: region.clone(),
        reason: reason.clone(),
    };
    match shared.core.handle(request).await {
        Ok(issued) => {
            let region = issued.region.to_string();
            let request_id = issued.request_id.clone();
            let outcome = deliver(ctx, shared, &cmd, &actor, issued).await;
            note(outcome, Some(&region), Some(&request_id));
        }
        Err(refusal) => {
            if let Refusal::AuditUnavailable(e) = &refusal {
                tracing::error!(error = %e, "refused /vnc: the audit journal cannot be written");
            }
            let request_id = match &refusal {
                Refusal::Tencent { error, .. } => error.request_id().map(str::to_owned),
                _ => None,
            };
            note(&refusal.code(), region.as_deref(), request_id.as_deref());
            reply(ctx, &cmd, &refusal.to_string()).await;
        }
    }
}

async fn record_refused_interaction(
    shared: &Shared,
    actor: &Actor,
    guild: Option<u64>,
    code: &str,
) {
    let entry = Entry {
        guild,
        code: Some(code.to_owned()),
        ..Entry::default()
    };
    if let Err(e) = shared
        .core
        .journal()
        .append(Event::Invalid, actor, entry)
        .await
    {
        tracing::error!(error = %e, "AUDIT WRITE FAILED for a refused interaction");
    }
}

/// The member's DM channel. Discord returns the same channel every time, so it is cached: one
/// REST call fewer on every request after a member's first, while the 15-second clock runs.
async fn dm_channel(
    ctx: &Context,
    shared: &Shared,
    user: serenity::all::UserId,
) -> serenity::Result<ChannelId> {
    if let Some(c) = shared.dm_channels.get(&user.get()) {
        return Ok(*c);
    }
    let channel = user.create_dm_channel(&ctx.http).await?.id;
    if shared.dm_channels.len() >= super::DM_CHANNEL_CACHE_MAX {
        shared.dm_channels.clear();
    }
    shared.dm_channels.insert(user.get(), channel);
    Ok(channel)
}

/// DMs the link; returns the outcome for the audit channel.
async fn deliver(
    ctx: &Context,
    shared: &Arc<Shared>,
    cmd: &CommandInteraction,
    actor: &Actor,
    issued: Issued,
) -> &'static str {
    let link = issued.url.expose_link();
    let message = if link.len() <= BUTTON_URL_MAX {
        CreateMessage::new()
            .content(messages::dm_text(&issued, None))
            .components(vec![CreateActionRow::Buttons(vec![
                CreateButton::new_link(link).label("Open console"),
            ])])
    } else {
        CreateMessage::new().content(messages::dm_text(&issued, Some(link)))
    }
    .allowed_mentions(no_mentions());

    let sent = match dm_channel(ctx, shared, cmd.user.id).await {
        Ok(channel) => {
            let sent = channel.send_message(&ctx.http, message).await;
            if sent.is_err() {
                // Whatever went wrong, ask Discord afresh next time.
                shared.dm_channels.remove(&cmd.user.id.get());
            }
            sent.map(|m| (channel, m.id))
        }
        Err(e) => Err(e),
    };
    match sent {
        Ok((channel, message_id)) => {
            if let Err(e) = shared.core.record_delivery(actor, &issued, None).await {
                tracing::error!(error = %e, audit_seq = issued.audit_seq, "AUDIT WRITE FAILED after delivering a link");
            }
            reply(ctx, cmd, &messages::reply_sent(&issued)).await;
            schedule_expiry(ctx.clone(), shared, channel, message_id, issued);
            "delivered"
        }
        Err(e) => {
            let closed = matches!(
                &e,
                serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(r))
                    if r.error.code == CANNOT_DM
            );
            let code = if closed { "dms_closed" } else { "dm_error" };
            METRICS.dm_failures.inc();
            tracing::warn!(user = %cmd.user.id, request_id = %issued.request_id, code, error = %e,
                "could not DM the console link; it was discarded");
            if let Err(e) = shared
                .core
                .record_delivery(actor, &issued, Some(code))
                .await
            {
                tracing::error!(error = %e, "AUDIT WRITE FAILED for a dm_failed record");
            }
            let text = if closed {
                messages::REPLY_DMS_CLOSED
            } else {
                messages::REPLY_DM_FAILED
            };
            reply(ctx, cmd, text).await;
            if closed {
                "dms_closed"
            } else {
                "dm_failed"
            }
        }
    }
}

/// Replaces the dead link in the DM once it has expired, so nobody clicks a dead link later.
/// Shutdown waits for these (they are at most 15 s away).
fn schedule_expiry(
    ctx: Context,
    shared: &Arc<Shared>,
    channel: ChannelId,
    message: MessageId,
    issued: Issued,
) {
    let wait = issued
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let work = shared.begin();
    tokio::spawn(async move {
        let _work = work;
        tokio::time::sleep(wait).await;
        let edit = EditMessage::new()
            .content(messages::dm_expired(&issued))
            .components(vec![])
            .allowed_mentions(no_mentions());
        if let Err(e) = channel.edit_message(&ctx.http, message, edit).await {
            tracing::warn!(error = %e, "could not mark the DM link as expired");
        }
    });
}
