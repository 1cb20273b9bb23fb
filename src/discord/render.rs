//! Renders what the core says became of grants ([`GrantEvent`]) in their DMs: a window's end, a
//! link's expiry, a grant resumed at start. Decides nothing: the state is the core's.

use std::sync::Arc;

use serenity::all::{ChannelId, EditMessage, Http, MessageId};

use super::grant_buttons::grant_buttons_for;
use super::{messages, no_mentions, Bot};
use crate::core::{EndWhy, Grant, GrantEvent};

/// Subscribes to the core's grant events now and renders them once the gateway is up.
pub(super) fn spawn(bot: &Arc<Bot>) {
    bot.render_each(
        bot.core.grant_events(),
        "grant",
        |http, bot, event| async move { render(&http, &bot, event).await },
    );
}

async fn render(http: &Http, bot: &Bot, event: GrantEvent) {
    match event {
        // A press that ended its grant shows the end on its own interaction.
        GrantEvent::Ended { grant, why } if !why.answered_by_press() => {
            if let Some(dm) = grant.dm {
                edit(http, bot, dm, ended_view(bot, &grant, why), &grant).await;
            }
        }
        GrantEvent::Ended { .. } => {}
        GrantEvent::LinkExpired { grant, dm, .. } => scrub(http, bot, dm, &grant).await,
        GrantEvent::Resumed { grant } => {
            if let Some(dm) = grant.dm {
                edit(http, bot, dm, waiting_view(bot, &grant), &grant).await;
            }
        }
        // The new end, and no Extend button (it is had once).
        GrantEvent::Extended { grant } => {
            if let Some(dm) = grant.dm {
                edit(http, bot, dm, waiting_view(bot, &grant), &grant).await;
            }
        }
    }
}

/// Scrubs a dead link from a DM: Open console comes back while the grant lasts, else its end.
pub(super) async fn scrub(http: &Http, bot: &Bot, dm: (u64, u64), grant: &Grant) {
    let view = if bot.core.grant_is_live(grant.id) {
        waiting_view(bot, grant)
    } else {
        // Said as its end was (revoked by whom, Done), not as a plain expiry.
        let why = bot.core.grant_end_why(grant.id).unwrap_or(EndWhy::Expired);
        ended_view(bot, grant, why)
    };
    edit(http, bot, dm, view, grant).await;
    bot.link_scrubbed(dm);
}

/// The DM waiting for a press: its text and Open console and Done.
fn waiting_view(bot: &Bot, grant: &Grant) -> EditMessage {
    let name = bot.core.instance_name(&grant.instance);
    EditMessage::new()
        .embeds(vec![])
        .allowed_mentions(no_mentions())
        .content(messages::grant_dm(grant, name.as_deref()))
        .components(grant_buttons_for(grant.id, bot.core.may_extend(grant.id)))
}

/// The DM of an ended grant: why and when, and no buttons.
fn ended_view(bot: &Bot, grant: &Grant, why: EndWhy) -> EditMessage {
    let name = bot.core.instance_name(&grant.instance);
    EditMessage::new()
        .embeds(vec![])
        .allowed_mentions(no_mentions())
        .content(messages::grant_ended_dm(
            grant,
            name.as_deref(),
            why,
            bot.core.clock().now(),
        ))
        .components(vec![])
}

/// Edits a grant's DM, once Discord confirms the target is the holder's DM.
async fn edit(http: &Http, bot: &Bot, dm: (u64, u64), view: EditMessage, grant: &Grant) {
    let (channel, message) = dm;
    if !bot.may_edit_dm_of(http, channel, grant.user).await {
        return;
    }
    let grant = grant.id;
    if let Err(e) = ChannelId::new(channel)
        .edit_message(http, MessageId::new(message), view)
        .await
    {
        tracing::warn!(grant, error = %e, "could not edit a grant's DM");
    }
}
