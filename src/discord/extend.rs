//! The **Extend** button on a grant's DM (`vnc:extend:<seq>`): acknowledged at once, checked
//! from memory by the core, then against the member's roles as Discord gives them now. The grant's
//! window grows once (the DM shows the new end and no Extend button), or, when its rule needs
//! approval, a request goes to the approvers and their approval extends it.

use std::sync::Arc;

use serenity::all::{ComponentInteraction, Context, EditInteractionResponse};

use super::grant_buttons::{acknowledge, grant_buttons_for, member_roles, show_ended, tell};
use super::{messages, no_mentions, Bot};
use crate::audit::Actor;
use crate::core::{EndWhy, ExtendRefusal, Extending, Grant, Refusal};

/// A press on Extend by `actor` on grant `id`.
pub async fn run(
    ctx: &Context,
    bot: &Arc<Bot>,
    comp: &ComponentInteraction,
    actor: &Actor,
    id: u64,
) {
    let (acked, begun) = tokio::join!(
        acknowledge(ctx, bot, comp),
        bot.core.begin_extend(id, actor)
    );
    if !acked {
        if begun.is_ok() {
            bot.core.release_extension(id);
        }
        return;
    }
    let grant = match begun {
        Ok(g) => g,
        Err(refusal) => return refused(ctx, bot, comp, id, &refusal).await,
    };
    let roles = member_roles(ctx, bot, grant.guild, comp).await;
    match bot.core.finish_extend(grant.clone(), actor, roles).await {
        Ok(Extending::Extended(e)) => {
            show_waiting(ctx, bot, comp, &e.grant).await;
            let u = messages::unix(e.grant.until);
            tell(
                ctx,
                bot,
                comp,
                &format!("Extended: this access now lasts until <t:{u}:t> (<t:{u}:R>). It can be extended only once."),
            )
            .await;
        }
        Ok(Extending::Requested(r)) => {
            if !super::approvals::post(&ctx.http, bot, &r).await {
                let _ = bot.core.cancel_request(r.id, &r.requester()).await;
                tell(ctx, bot, comp, messages::REQUEST_NOT_POSTED).await;
                return;
            }
            show_waiting(ctx, bot, comp, &grant).await;
            tell(
                ctx,
                bot,
                comp,
                &format!(
                    "This instance needs an approver's OK to extend: asked {} (request {}, {} approval(s) needed). You will get a DM when it is decided; until then your access lasts as before.",
                    super::approvals::approver_roles(&r),
                    r.id,
                    r.gate.approvals_required
                ),
            )
            .await;
        }
        Err(refusal) => refused(ctx, bot, comp, id, &refusal).await,
    }
}

/// The DM the button sits on, waiting for a press, without Extend.
async fn show_waiting(ctx: &Context, bot: &Bot, comp: &ComponentInteraction, grant: &Grant) {
    let name = bot.core.instance_name(&grant.instance);
    let edit = EditInteractionResponse::new()
        .content(messages::grant_dm(grant, name.as_deref()))
        .components(grant_buttons_for(grant.id, bot.core.may_extend(grant.id)))
        .embeds(vec![])
        .allowed_mentions(no_mentions());
    bot.rest(
        "show a grant's DM after Extend",
        comp.edit_response(&ctx.http, edit).await,
    );
}

async fn refused(
    ctx: &Context,
    bot: &Bot,
    comp: &ComponentInteraction,
    id: u64,
    refusal: &ExtendRefusal,
) {
    if let ExtendRefusal::Press(Refusal::GrantEnded | Refusal::RoleRemoved { .. }) = refusal {
        if let Some(grant) = bot.core.grant_by_id(id) {
            let why = bot.core.grant_end_why(id).unwrap_or(EndWhy::Expired);
            show_ended(ctx, bot, comp, &grant, why).await;
        }
    }
    tell(ctx, bot, comp, &say(refusal)).await;
}

/// The sentence for a refused press on Extend.
pub fn say(r: &ExtendRefusal) -> String {
    match r {
        ExtendRefusal::Press(r) => super::refusals::say(r),
        ExtendRefusal::AlreadyExtended => {
            "This access was already extended once (or its extension was asked for). Run /vnc again when it ends.".into()
        }
        ExtendRefusal::AlreadyAsked { request } => format!(
            "An extension of this access was already asked for (request {request}); you will get a DM when it is decided."
        ),
        ExtendRefusal::Audit(_) => "The bot cannot write its audit trail right now, so nothing was extended. Try again later.".into(),
    }
}
