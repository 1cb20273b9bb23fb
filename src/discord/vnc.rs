//! `/vnc`: registration, and the handler that turns the interaction into a core request and the
//! outcome back into a DM and an ephemeral reply.

use std::time::{Duration, SystemTime};

use serenity::all::{
    ChannelId, CommandInteraction, CommandOptionType, Context, CreateActionRow, CreateButton,
    CreateCommand, CreateCommandOption, CreateEmbed, CreateMessage, EditMessage, MessageId,
    ResolvedValue,
};

use super::messages::{self, BUTTON_URL_MAX, EMBED_DESCRIPTION_MAX, MESSAGE_MAX};
use super::{no_mentions, reply};
use crate::app::App;
use crate::audit::Actor;
use crate::core::{Authority, Issued, Outcome, Refusal, Request, MAX_REASON_CHARS};
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

/// The interaction as a core request.
fn request(cmd: &CommandInteraction) -> Request {
    let (mut instance, mut region, mut reason) = (String::new(), None, None);
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
    let roles = cmd.member.as_ref().map_or_else(Vec::new, |m| {
        m.roles
            .iter()
            .filter_map(|r| Snowflake::new(r.get()))
            .collect()
    });
    Request {
        actor: Actor::Discord {
            id: cmd.user.id.get(),
            name: cmd.user.name.clone(),
        },
        authority: Authority::Roles(roles),
        // A command from a DM has neither guild nor member; the core refuses it.
        guild: cmd
            .guild_id
            .filter(|_| cmd.member.is_some())
            .and_then(|g| Snowflake::new(g.get())),
        channel: Snowflake::new(cmd.channel_id.get()),
        instance,
        region,
        reason,
    }
}

/// Runs `/vnc` on an interaction that has already been deferred.
pub async fn run(ctx: &Context, app: &App, cmd: &CommandInteraction) {
    let req = request(cmd);
    let (instance, region, reason) = (req.instance.clone(), req.region.clone(), req.reason.clone());
    let note = |outcome: &Outcome, region: Option<&str>, request_id: Option<&str>| {
        METRICS.command(outcome.code());
        if outcome.posts_to_channel() {
            let line = messages::audit_line(
                cmd.user.id.get(),
                &instance,
                region,
                reason.as_deref(),
                &outcome.channel_text(),
                request_id,
            );
            if outcome.is_link_line() {
                app.audit_feed.post(line);
            } else {
                app.audit_feed.post_refusal(cmd.user.id.get(), line);
            }
        }
    };
    match app.core.handle(req).await {
        Ok(issued) => {
            let region = issued.region.to_string();
            let request_id = issued.request_id.clone();
            let outcome = deliver(ctx, app, cmd, issued).await;
            note(&outcome, Some(&region), Some(&request_id));
        }
        Err(refusal) => {
            if let Refusal::AuditUnavailable(e) = &refusal {
                tracing::error!(error = %e, "refused /vnc: the audit journal cannot be written");
            }
            let outcome = refusal.outcome();
            // A member past the refusal budget is answered, not announced again.
            if outcome != Outcome::TooManyRefusals {
                note(&outcome, region.as_deref(), refusal.request_id());
            } else {
                METRICS.command(outcome.code());
            }
            reply(ctx, cmd, &refusal.to_string()).await;
        }
    }
}

/// The DM for a link: a link button when the link fits one (512 characters), else a Markdown
/// link in the text while the text fits a message (2,000), else the link in an embed (whose
/// description holds 4,096). `None` when it fits nowhere.
fn link_message(issued: &Issued) -> Option<CreateMessage> {
    let link = issued.url.expose_link();
    let message = if link.len() <= BUTTON_URL_MAX {
        CreateMessage::new()
            .content(messages::dm_text(issued, None))
            .components(vec![CreateActionRow::Buttons(vec![
                CreateButton::new_link(link).label("Open console"),
            ])])
    } else {
        let inline = messages::dm_text(issued, Some(link));
        if inline.chars().count() <= MESSAGE_MAX {
            CreateMessage::new().content(inline)
        } else {
            let description = messages::dm_embed_link(link);
            if description.chars().count() > EMBED_DESCRIPTION_MAX {
                return None;
            }
            CreateMessage::new()
                .content(messages::dm_text(issued, None))
                .embed(CreateEmbed::new().description(description))
        }
    };
    Some(message.allowed_mentions(no_mentions()))
}

/// DMs the link; returns the outcome. A DM whose fate is unknown (Discord's answer was lost) is
/// sent once more with the same nonce, which Discord deduplicates, so that we learn its ID and
/// can scrub it later.
async fn deliver(ctx: &Context, app: &App, cmd: &CommandInteraction, issued: Issued) -> Outcome {
    let actor = Actor::Discord {
        id: cmd.user.id.get(),
        name: cmd.user.name.clone(),
    };
    let sent = match link_message(&issued) {
        None => Err(None),
        Some(message) => {
            let nonce = serenity::all::Nonce::String(format!("vnc-{}", issued.audit_seq));
            let message = message.nonce(nonce).enforce_nonce(true);
            match cmd.user.id.create_dm_channel(&ctx.http).await {
                Ok(channel) => {
                    let mut sent = channel.send_message(&ctx.http, message.clone()).await;
                    if sent.as_ref().is_err_and(answer_lost) {
                        sent = channel.send_message(&ctx.http, message).await;
                    }
                    sent.map(|m| (channel.id, m.id)).map_err(Some)
                }
                Err(e) => Err(Some(e)),
            }
        }
    };
    let outcome = match &sent {
        Ok(_) => Outcome::Delivered,
        Err(Some(serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(r))))
            if r.error.code == CANNOT_DM =>
        {
            Outcome::DmsClosed
        }
        Err(_) => Outcome::DmFailed,
    };
    if let Err(e) = app.core.record_delivery(&actor, &issued, &outcome).await {
        tracing::error!(error = %e, audit_seq = issued.audit_seq, "AUDIT WRITE FAILED after delivering a link");
    }
    match sent {
        Ok((channel, message_id)) => {
            reply(ctx, cmd, &messages::reply_sent(&issued)).await;
            schedule_expiry(ctx.clone(), app, channel, message_id, issued);
        }
        Err(e) => {
            METRICS.dm_failures.inc();
            let error = e.map_or_else(|| "link too long for any DM".to_owned(), |e| e.to_string());
            tracing::warn!(user = %cmd.user.id, request_id = %issued.request_id, code = outcome.code(), error,
                "could not DM the console link; it was discarded");
            let text = if outcome == Outcome::DmsClosed {
                messages::REPLY_DMS_CLOSED
            } else {
                messages::REPLY_DM_FAILED
            };
            reply(ctx, cmd, text).await;
        }
    }
    outcome
}

/// Discord may have taken the message although we did not hear so: a timeout, a dropped
/// connection, or a proxy's 502/504. (A 500 from Discord itself means it was not taken.)
fn answer_lost(e: &serenity::Error) -> bool {
    match e {
        serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(r)) => {
            matches!(r.status_code.as_u16(), 502 | 504)
        }
        serenity::Error::Http(serenity::http::HttpError::Request(_)) => true,
        _ => false,
    }
}

/// Replaces the dead link in the DM once it has expired, so nobody clicks a dead link later.
/// Shutdown waits for these (they are at most 15 s away).
fn schedule_expiry(
    ctx: Context,
    app: &App,
    channel: ChannelId,
    message: MessageId,
    issued: Issued,
) {
    let wait = issued
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    app.tasks.spawn(async move {
        tokio::time::sleep(wait).await;
        let edit = EditMessage::new()
            .content(messages::dm_expired(&issued))
            .components(vec![])
            .embeds(vec![])
            .allowed_mentions(no_mentions());
        if let Err(e) = channel.edit_message(&ctx.http, message, edit).await {
            tracing::warn!(error = %e, "could not mark the DM link as expired");
        }
    });
}
