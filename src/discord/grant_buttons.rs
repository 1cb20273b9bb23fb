//! The grant's buttons in the DM: **Open console** mints a fresh link into the DM, **Done** ends
//! the grant. A `custom_id` carries only the grant's id (`vnc:open:<seq>`), never a secret.

use std::sync::Arc;

use serenity::all::{
    ButtonStyle, ComponentInteraction, Context, CreateActionRow, CreateButton, CreateEmbed,
    CreateInteractionResponse, CreateInteractionResponseFollowup, EditInteractionResponse, GuildId,
};

use super::messages::{self, BUTTON_URL_MAX, EMBED_DESCRIPTION_MAX, MESSAGE_MAX};
use super::no_mentions;
use super::Bot as App;
use crate::audit::Actor;
use crate::core::{EndWhy, Grant, Minted, Outcome, Refusal};
use crate::ids::Snowflake;

/// A link with less than this left of its 15 s is not shown: the member could not use it.
const SHOW_MARGIN: std::time::Duration = std::time::Duration::from_secs(3);

const OPEN: &str = "vnc:open:";
const DONE: &str = "vnc:done:";
const EXTEND: &str = "vnc:extend:";

/// What a button asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    Open(u64),
    Done(u64),
    /// The grant's one extension (src/discord/extend.rs).
    Extend(u64),
}

/// Reads a `custom_id`; anything but our exact shape is `None`.
pub fn parse(custom_id: &str) -> Option<Press> {
    let id = |rest: &str| {
        (!rest.is_empty() && rest.len() <= 20 && rest.bytes().all(|b| b.is_ascii_digit()))
            .then(|| rest.parse().ok())
            .flatten()
    };
    if let Some(rest) = custom_id.strip_prefix(OPEN) {
        id(rest).map(Press::Open)
    } else if let Some(rest) = custom_id.strip_prefix(DONE) {
        id(rest).map(Press::Done)
    } else if let Some(rest) = custom_id.strip_prefix(EXTEND) {
        id(rest).map(Press::Extend)
    } else {
        None
    }
}

fn done_button(grant: u64) -> CreateButton {
    CreateButton::new(format!("{DONE}{grant}"))
        .label("Done")
        .style(ButtonStyle::Secondary)
}

/// Open console, Done and Extend (a new grant's extension is still to be had).
pub fn grant_buttons(grant: u64) -> Vec<CreateActionRow> {
    grant_buttons_for(grant, true)
}

/// Open console and Done, and Extend while the grant's one extension is still to be had.
pub fn grant_buttons_for(grant: u64, extend: bool) -> Vec<CreateActionRow> {
    let mut buttons = vec![
        CreateButton::new(format!("{OPEN}{grant}"))
            .label("Open console")
            .style(ButtonStyle::Primary),
        done_button(grant),
    ];
    if extend {
        buttons.push(
            CreateButton::new(format!("{EXTEND}{grant}"))
                .label("Extend")
                .style(ButtonStyle::Secondary),
        );
    }
    vec![CreateActionRow::Buttons(buttons)]
}

/// The DM with a fresh link: a **Connect** link button when the link fits one (512
/// characters), else a Markdown link in the text while it fits a message (2,000), else the link
/// in an embed (4,096). `None` when it fits nowhere.
fn link_view(m: &Minted, name: Option<&str>) -> Option<EditInteractionResponse> {
    let link = m.issued.url.expose_link();
    let view = EditInteractionResponse::new().allowed_mentions(no_mentions());
    if link.len() <= BUTTON_URL_MAX {
        return Some(
            view.content(messages::link_dm(
                &m.issued, &m.grant, name, m.heads_up, None,
            ))
            .components(vec![CreateActionRow::Buttons(vec![
                CreateButton::new_link(link).label("Connect"),
                done_button(m.grant.id),
            ])])
            .embeds(vec![]),
        );
    }
    let done = vec![CreateActionRow::Buttons(vec![done_button(m.grant.id)])];
    let inline = messages::link_dm(&m.issued, &m.grant, name, m.heads_up, Some(link));
    if inline.chars().count() <= MESSAGE_MAX {
        return Some(view.content(inline).components(done).embeds(vec![]));
    }
    let description = messages::dm_embed_link(link);
    (description.chars().count() <= EMBED_DESCRIPTION_MAX).then(|| {
        view.content(messages::link_dm(
            &m.issued, &m.grant, name, m.heads_up, None,
        ))
        .components(done)
        .embeds(vec![CreateEmbed::new().description(description)])
    })
}

/// Says something to the presser only (an ephemeral follow-up).
pub(super) async fn tell(ctx: &Context, app: &App, comp: &ComponentInteraction, text: &str) {
    let msg = CreateInteractionResponseFollowup::new()
        .ephemeral(true)
        .content(text)
        .allowed_mentions(no_mentions());
    app.rest(
        "answer a button press",
        comp.create_followup(&ctx.http, msg).await,
    );
}

/// Shows the grant as ended in the DM the button sits on.
pub(super) async fn show_ended(
    ctx: &Context,
    app: &App,
    comp: &ComponentInteraction,
    grant: &Grant,
    why: EndWhy,
) {
    let name = app.core.instance_name(&grant.instance);
    let edit = EditInteractionResponse::new()
        .content(messages::grant_ended_dm(
            grant,
            name.as_deref(),
            why,
            app.core.clock().now(),
        ))
        .components(vec![])
        .embeds(vec![])
        .allowed_mentions(no_mentions());
    app.rest(
        "mark a grant's DM as ended",
        comp.edit_response(&ctx.http, edit).await,
    );
}

/// A button press in a DM.
pub async fn run(ctx: &Context, app: &Arc<App>, comp: &ComponentInteraction) {
    let actor = Actor::Discord {
        id: comp.user.id.get(),
        name: comp.user.name.clone(),
    };
    let press = parse(&comp.data.custom_id);
    if let Some(Press::Open(id)) = press {
        return open(ctx, app, comp, &actor, id).await;
    }
    if let Some(Press::Extend(id)) = press {
        return super::extend::run(ctx, app, comp, &actor, id).await;
    }
    if !acknowledge(ctx, app, comp).await {
        return;
    }
    match press {
        None => {
            let refusal = app.core.refuse_button(&actor).await;
            tell(ctx, app, comp, &super::refusals::say(&refusal)).await;
        }
        Some(Press::Done(id)) => match app.core.end_grant(id, &actor, EndWhy::Done).await {
            Ok(Some(grant)) => show_ended(ctx, app, comp, &grant, EndWhy::Done).await,
            Ok(None) => {
                // It had ended already (expired, or Done pressed twice): say so, plainly.
                if let Some(grant) = app.core.grant_by_id(id) {
                    show_ended(ctx, app, comp, &grant, EndWhy::Expired).await;
                }
            }
            Err(refusal) => tell(ctx, app, comp, &super::refusals::say(&refusal)).await,
        },
        Some(Press::Open(_) | Press::Extend(_)) => {}
    }
}

/// Answers within Discord's 3 s with a deferred update; the DM is edited once there is
/// something to show. False when Discord did not take it (nothing more can be said then).
pub(super) async fn acknowledge(ctx: &Context, app: &App, comp: &ComponentInteraction) -> bool {
    let acked = comp
        .create_response(&ctx.http, CreateInteractionResponse::Acknowledge)
        .await;
    app.rest("acknowledge a button press", acked).is_some()
}

async fn open(ctx: &Context, app: &Arc<App>, comp: &ComponentInteraction, actor: &Actor, id: u64) {
    // The acknowledgement goes out at once; meanwhile the grant is checked and, when it may be
    // pressed, the member's roles are fetched (a button in a DM carries no member). Neither
    // delays the acknowledgement, and together they save a round trip per press.
    let prepare = async {
        let mut press = app.core.begin_press(id, actor).await?;
        // A press in a DM by the grant's holder: Discord says this channel is their DM.
        if comp.guild_id.is_none() {
            app.dm_is(comp.channel_id.get(), comp.user.id.get());
        }
        // Where the link will be shown and later scrubbed: the DM Discord says was pressed.
        press.dm = Some((comp.channel_id.get(), comp.message.id.get()));
        let roles = member_roles(ctx, app, press.grant.guild, comp).await;
        Ok::<_, Refusal>((press, roles))
    };
    let (acked, prepared) = tokio::join!(acknowledge(ctx, app, comp), prepare);
    if !acked {
        // Dropping the press frees the grant; nothing was minted.
        return;
    }
    let (press, roles) = match prepared {
        Ok(p) => p,
        Err(refusal) => {
            if let (Refusal::GrantEnded, Some(grant)) = (&refusal, app.core.grant_by_id(id)) {
                show_ended(ctx, app, comp, &grant, EndWhy::Expired).await;
            }
            tell(ctx, app, comp, &super::refusals::say(&refusal)).await;
            return;
        }
    };
    let grant = press.grant.clone();
    let minted = match app.core.finish_press(press, roles).await {
        // The role may have gone while Tencent was asked: the roles are read once more before
        // the link is shown.
        Ok(minted) => {
            let roles = member_roles(ctx, app, grant.guild, comp).await;
            app.core.confirm_link(minted, roles).await
        }
        Err(refusal) => Err(refusal),
    };
    match minted {
        Ok(minted) => show_link(ctx, app, comp, actor, minted).await,
        Err(refusal) => {
            if let Refusal::RoleRemoved { .. } = refusal {
                show_ended(ctx, app, comp, &grant, EndWhy::RoleRemoved).await;
            }
            tell(ctx, app, comp, &super::refusals::say(&refusal)).await;
        }
    }
}

/// The presser's roles as Discord gives them now (a button in a DM carries no member); `None`
/// when Discord could not be asked.
pub(super) async fn member_roles(
    ctx: &Context,
    app: &App,
    guild: Snowflake,
    comp: &ComponentInteraction,
) -> Option<Vec<Snowflake>> {
    let member = ctx
        .http
        .get_member(GuildId::new(guild.get()), comp.user.id)
        .await;
    let member = app.rest("read a member's roles", member)?;
    Some(
        member
            .roles
            .iter()
            .filter_map(|r| Snowflake::new(r.get()))
            .collect(),
    )
}

async fn show_link(
    ctx: &Context,
    app: &Arc<App>,
    comp: &ComponentInteraction,
    actor: &Actor,
    minted: Minted,
) {
    let name = app.core.instance_name(&minted.grant.instance);
    // Done or the window's end may have come while the link was made, or most of its 15 s gone
    // (a slow roles read): then it is not shown.
    let live = app.core.grant_is_live(minted.grant.id);
    let fresh = app.core.clock().now() + SHOW_MARGIN < minted.issued.expires_at;
    let dm = (comp.channel_id.get(), comp.message.id.get());
    let shown = match link_view(&minted, name.as_deref()).filter(|_| live && fresh) {
        Some(view) => {
            // Shutdown waits for this DM's scrub (rendered from the core's LinkExpired), even
            // when the edit fails, in case Discord took it.
            app.link_shown(dm);
            let edited = comp.edit_response(&ctx.http, view).await.map_err(Some);
            // The edit took so long that the link's scrub may have come first: scrub again.
            if app.core.clock().now() >= minted.issued.expires_at {
                super::render::scrub(&ctx.http, app, dm, &minted.grant).await;
            }
            edited
        }
        None => Err(None),
    };
    let outcome = if shown.is_ok() {
        Outcome::Delivered
    } else {
        Outcome::DmFailed
    };
    if let Err(e) = app
        .core
        .record_delivery(actor, &minted.issued, &outcome)
        .await
    {
        tracing::error!(error = %e, audit_seq = minted.issued.audit_seq, "AUDIT WRITE FAILED after showing a link");
    }
    if let Err(e) = &shown {
        app.core.metrics().dm_failures.inc();
        let error = e.as_ref().map_or_else(
            || "link too long for any DM".to_owned(),
            ToString::to_string,
        );
        tracing::warn!(user = %comp.user.id, request_id = %minted.issued.request_id, error,
            "could not show the console link in the DM; it was discarded");
        tell(ctx, app, comp, messages::PRESS_NOT_SHOWN).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_exact_custom_ids_parse() {
        assert_eq!(parse("vnc:open:42"), Some(Press::Open(42)));
        assert_eq!(parse("vnc:done:7"), Some(Press::Done(7)));
        for bad in [
            "",
            "vnc:open:",
            "vnc:open:-1",
            "vnc:open:42x",
            "vnc:open:1e3",
            "vnc:open:999999999999999999999",
            "vnc:close:1",
            "VNC:OPEN:1",
            &"9".repeat(100),
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
