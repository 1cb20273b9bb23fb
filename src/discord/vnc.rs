//! `/vnc`: registration, and the handler that turns the interaction into a core request and the
//! outcome back into a DM and an ephemeral reply.

use std::sync::Arc;

use serenity::all::{
    CommandInteraction, CommandOptionType, Context, CreateCommand, CreateCommandOption,
    CreateMessage, ResolvedValue,
};

use super::answer::Answer;
use super::messages;
use super::Bot as App;
use super::{grant_buttons, no_mentions, reply};
use crate::audit::Actor;
use crate::core::{Authority, Grant, Opened, Outcome, Refusal, Request, MAX_REASON_CHARS};
use crate::ids::{Region, Snowflake};

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
        .description("Open a CVM instance's console: access by DM, a fresh link on each press")
        .dm_permission(false)
        .add_option(
            CreateCommandOption::new(
                CommandOptionType::String,
                "instance",
                "Instance ID (ins-a1b2c3d4) or name; type to search by name, ID, IP or tag",
            )
            .required(true)
            .set_autocomplete(true)
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
        .add_option(super::break_glass::option())
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

/// Runs `/vnc` on an interaction that has already been deferred: a grant, whose DM carries the
/// Open console and Done buttons. No link and no Tencent call yet.
pub async fn run(ctx: &Context, app: &Arc<App>, cmd: &CommandInteraction) {
    if super::break_glass::asked(cmd) {
        return super::break_glass::run(ctx, app, cmd, request(cmd)).await;
    }
    proceed(ctx, app, cmd, request(cmd)).await;
}

/// `/vnc` as asked (typed, or picked from a menu of the instances a name may mean).
pub(super) async fn proceed(ctx: &Context, app: &Arc<App>, to: &impl Answer, req: Request) {
    match app.core.open(req.clone()).await {
        Ok(Opened::Granted(grant)) => deliver(ctx, app, to, grant).await,
        Ok(Opened::Requested(r)) => super::approvals::requested(ctx, app, to, r).await,
        // Several instances carry the name: a menu of them, instead of IDs to retype.
        Err(refusal @ Refusal::AmbiguousName { .. }) => {
            if !super::pick::offer(ctx, app, to, &req).await {
                reply(ctx, app, to, &super::refusals::say(&refusal)).await;
            }
        }
        Err(refusal) => reply(ctx, app, to, &super::refusals::say(&refusal)).await,
    }
}

/// DMs the grant with its buttons; returns the outcome. A DM whose fate is unknown (Discord's
/// answer was lost) is sent once more with the same nonce, which Discord deduplicates, so that
/// its ID is known and the buttons' DM can be edited later.
async fn deliver(ctx: &Context, app: &Arc<App>, cmd: &impl Answer, grant: Grant) {
    deliver_marked(ctx, app, cmd, grant, None).await;
}

/// [`deliver`], with `mark` (break-glass says so) before the DM's text and the reply's.
pub(super) async fn deliver_marked(
    ctx: &Context,
    app: &Arc<App>,
    cmd: &impl Answer,
    grant: Grant,
    mark: Option<&str>,
) {
    let marked = |text: String| match mark {
        Some(m) => format!("{m}\n{text}"),
        None => text,
    };
    let name = app.core.instance_name(&grant.instance);
    let message = CreateMessage::new()
        .content(marked(messages::grant_dm(&grant, name.as_deref())))
        .components(grant_buttons::grant_buttons_for(
            grant.id,
            app.core.may_extend(grant.id),
        ))
        .allowed_mentions(no_mentions())
        .nonce(serenity::all::Nonce::String(format!("grant-{}", grant.id)))
        .enforce_nonce(true);
    let sent = match cmd.asker().create_dm_channel(&ctx.http).await {
        Ok(channel) => {
            app.dm_is(channel.id.get(), cmd.asker().get());
            let mut sent = channel.send_message(&ctx.http, message.clone()).await;
            if sent.as_ref().is_err_and(answer_lost) {
                sent = channel.send_message(&ctx.http, message).await;
            }
            sent.map(|m| (channel.id.get(), m.id.get()))
        }
        Err(e) => Err(e),
    };
    let (outcome, dm) = match sent {
        Ok(pair) => (Outcome::Granted, Ok(pair)),
        Err(e) => {
            let closed = matches!(&e,
                serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(r))
                    if r.error.code == CANNOT_DM);
            let outcome = if closed {
                Outcome::DmsClosed
            } else {
                Outcome::DmFailed
            };
            app.core.metrics().dm_failures.inc();
            tracing::warn!(user = %cmd.asker(), grant = grant.id, code = outcome.code(), error = %e,
                "could not DM the grant; it was ended");
            (outcome.clone(), Err(outcome))
        }
    };
    let sent = dm.is_ok();
    match app.core.record_grant_dm(&grant, dm).await {
        Ok(()) if sent => {
            reply(
                ctx,
                app,
                cmd,
                &marked(messages::grant_reply(&grant, name.as_deref())),
            )
            .await;
        }
        Ok(()) => {
            let text = if outcome == Outcome::DmsClosed {
                messages::REPLY_DMS_CLOSED
            } else {
                messages::REPLY_DM_FAILED
            };
            reply(ctx, app, cmd, text).await;
        }
        // Fail closed: the core has ended a grant whose DM it could not record.
        Err(refusal) => reply(ctx, app, cmd, &super::refusals::say(&refusal)).await,
    }
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
