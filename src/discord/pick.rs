//! A name that several instances the member may open carry: the ephemeral answer to `/vnc` is a
//! string select menu of those candidates (`name · ID · region`), and picking one proceeds
//! exactly as `/vnc instance:<ID>` with the same reason. The menu's `custom_id` carries only
//! the offer's number (`vnc:pick:<n>`); the core honours a pick only from the member it was
//! offered to, for an instance it offered (src/core/pick.rs).

use std::sync::Arc;

use serenity::all::{
    ComponentInteraction, ComponentInteractionDataKind, Context, CreateActionRow,
    CreateInteractionResponse, CreateSelectMenu, CreateSelectMenuKind, CreateSelectMenuOption,
    EditInteractionResponse,
};

use super::answer::Answer;
use super::{no_mentions, reply, Bot};
use crate::audit::Actor;
use crate::core::pick::{Candidate, PickRefusal};
use crate::core::Request;
use crate::ids::{Quoted, Snowflake};
use crate::text::is_format_char;

const PICK: &str = "vnc:pick:";
/// Discord's limit of options in one select menu.
pub const MAX_OPTIONS: usize = 25;
/// Discord's limit for an option's label.
const LABEL_MAX: usize = 100;

/// Whether a `custom_id` is in the menu's namespace (even a forged one).
pub fn is_ours(custom_id: &str) -> bool {
    custom_id.starts_with(PICK)
}

/// The offer's number in a menu's `custom_id`; anything but our exact shape is `None`.
pub fn parse(custom_id: &str) -> Option<u64> {
    let rest = custom_id.strip_prefix(PICK)?;
    (!rest.is_empty() && rest.len() <= 20 && rest.bytes().all(|b| b.is_ascii_digit()))
        .then(|| rest.parse().ok())
        .flatten()
}

/// `name · ID · region`, the name (untrusted text from the cloud account) cleaned and bounded.
pub fn label(c: &Candidate) -> String {
    let tail = format!(" · {} · {}", c.id, c.region);
    let name: String = c
        .name
        .chars()
        .filter(|ch| !ch.is_control() && !is_format_char(*ch))
        .collect();
    let budget = LABEL_MAX.saturating_sub(tail.chars().count());
    let name: String = name.trim().chars().take(budget).collect();
    format!("{name}{tail}")
}

/// Offers the instances `req`'s name may mean as a menu, in the ephemeral answer. False when
/// there is nothing to offer (the refusal's text is the answer then).
pub(super) async fn offer(ctx: &Context, bot: &Arc<Bot>, to: &impl Answer, req: &Request) -> bool {
    let candidates = bot.core.name_candidates(req);
    let name = Quoted::new(&req.instance).to_string();
    if candidates.len() < 2 {
        return false;
    }
    if candidates.len() > MAX_OPTIONS {
        let ids: Vec<String> = candidates
            .iter()
            .take(10)
            .map(|c| format!("{} ({})", c.id, c.region))
            .collect();
        let text = format!(
            "{} instances you may open are named {name}, more than a menu can hold ({MAX_OPTIONS}). Run /vnc again with the instance's ID (ins-…), for example one of: {}.",
            candidates.len(),
            ids.join("; ")
        );
        reply(ctx, bot, to, &text).await;
        return true;
    }
    let options: Vec<CreateSelectMenuOption> = candidates
        .iter()
        .map(|c| CreateSelectMenuOption::new(label(c), c.id.as_str()).description(c.state.clone()))
        .collect();
    let n = bot.core.offer_pick(req, candidates.clone());
    let menu = CreateSelectMenu::new(
        format!("{PICK}{n}"),
        CreateSelectMenuKind::String { options },
    )
    .placeholder("Pick the instance")
    .min_values(1)
    .max_values(1);
    let listed: Vec<String> = candidates
        .iter()
        .map(|c| format!("{} ({}, {})", c.id, c.region, c.state))
        .collect();
    let text = format!(
        "Several instances you may open are named {name}: {}. Pick one below{}.",
        listed.join("; "),
        if req.reason.is_some() {
            " (your reason goes with it)"
        } else {
            ""
        }
    );
    let edit = EditInteractionResponse::new()
        .content(text)
        .components(vec![CreateActionRow::SelectMenu(menu)])
        .allowed_mentions(no_mentions());
    bot.rest("offer a menu of instances", to.edit(&ctx.http, edit).await);
    true
}

/// A pick on the menu: a deferred update at once, then the core checks the pick and `/vnc`
/// proceeds with it; the menu's message becomes the answer.
pub async fn run(ctx: &Context, bot: &Arc<Bot>, comp: &ComponentInteraction) {
    let acked = comp
        .create_response(&ctx.http, CreateInteractionResponse::Acknowledge)
        .await;
    if bot.rest("acknowledge a pick", acked).is_none() {
        return;
    }
    let actor = Actor::Discord {
        id: comp.user.id.get(),
        name: comp.user.name.clone(),
    };
    let value = match &comp.data.kind {
        ComponentInteractionDataKind::StringSelect { values } => {
            values.first().cloned().unwrap_or_default()
        }
        _ => String::new(),
    };
    // The roles Discord sent with the pick, as `/vnc` takes them from its own interaction.
    let roles: Vec<Snowflake> = comp.member.as_ref().map_or_else(Vec::new, |m| {
        m.roles
            .iter()
            .filter_map(|r| Snowflake::new(r.get()))
            .collect()
    });
    let guild = comp
        .guild_id
        .filter(|_| comp.member.is_some())
        .and_then(|g| Snowflake::new(g.get()));
    // A number that is not ours names no offer (0 is never one).
    let n = parse(&comp.data.custom_id).unwrap_or(0);
    match bot.core.take_pick(n, &actor, guild, roles, &value).await {
        Ok(req) => super::vnc::proceed(ctx, bot, comp, req).await,
        Err(refusal) => super::grant_buttons::tell(ctx, bot, comp, &say(&refusal)).await,
    }
}

/// The sentence for a refused pick.
pub fn say(r: &PickRefusal) -> String {
    match r {
        PickRefusal::Unknown => "This menu is no longer valid (it is too old, or the bot restarted since). Run /vnc again.".into(),
        PickRefusal::NotYours => "This menu was offered to someone else. Run /vnc to ask for your own.".into(),
        PickRefusal::NotOffered => "That is not one of the instances this menu offered. Run /vnc again.".into(),
        PickRefusal::Audit(_) => "The bot cannot write its audit trail right now, so nothing was done. Try again later.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{InstanceId, Region};

    #[test]
    fn only_our_exact_custom_ids_parse() {
        assert_eq!(parse("vnc:pick:42"), Some(42));
        for bad in [
            "vnc:pick:",
            "vnc:pick:-1",
            "vnc:pick:4x",
            "vnc:pick:999999999999999999999",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
            assert!(is_ours(bad));
        }
        assert!(!is_ours("vnc:open:1"));
    }

    #[test]
    fn labels_are_clean_and_bounded() {
        let c = Candidate {
            id: InstanceId::parse("ins-a1b2c3d4").unwrap(),
            region: Region::parse("ap-guangzhou").unwrap(),
            name: format!("web\u{202E}-01{}", "x".repeat(200)),
            state: "RUNNING".into(),
        };
        let l = label(&c);
        assert!(l.chars().count() <= LABEL_MAX, "{l}");
        assert!(l.starts_with("web-01"), "{l}");
        assert!(l.ends_with(" · ins-a1b2c3d4 · ap-guangzhou"), "{l}");
    }
}
