//! The grant's buttons in the DM: **Open console** mints a fresh link into the DM, **Done** ends
//! the grant. A `custom_id` carries only the grant's id (`vnc:open:<seq>`), never a secret.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serenity::all::{
    ButtonStyle, ChannelId, ComponentInteraction, Context, CreateActionRow, CreateButton,
    CreateEmbed, CreateInteractionResponse, CreateInteractionResponseFollowup,
    EditInteractionResponse, EditMessage, GuildId, Http, MessageId,
};

use super::messages::{self, BUTTON_URL_MAX, EMBED_DESCRIPTION_MAX, MESSAGE_MAX};
use super::no_mentions;
use crate::app::App;
use crate::audit::Actor;
use crate::core::{EndWhy, Grant, Minted, Outcome, Refusal};
use crate::ids::Snowflake;
use crate::metrics::METRICS;

const OPEN: &str = "vnc:open:";
const DONE: &str = "vnc:done:";

/// What a button asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    Open(u64),
    Done(u64),
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
    } else {
        None
    }
}

fn done_button(grant: u64) -> CreateButton {
    CreateButton::new(format!("{DONE}{grant}"))
        .label("Done")
        .style(ButtonStyle::Secondary)
}

/// Open console and Done.
pub fn grant_buttons(grant: u64) -> Vec<CreateActionRow> {
    vec![CreateActionRow::Buttons(vec![
        CreateButton::new(format!("{OPEN}{grant}"))
            .label("Open console")
            .style(ButtonStyle::Primary),
        done_button(grant),
    ])]
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

/// The DM waiting for a press, or ended, as the grant stands now.
fn grant_view(app: &App, grant: &Grant) -> EditMessage {
    let edit = EditMessage::new()
        .embeds(vec![])
        .allowed_mentions(no_mentions());
    let name = app.core.instance_name(&grant.instance);
    if app.core.grant_is_live(grant.id) {
        edit.content(messages::grant_dm(grant, name.as_deref()))
            .components(grant_buttons(grant.id))
    } else {
        edit.content(messages::grant_ended_dm(
            grant,
            name.as_deref(),
            EndWhy::Expired,
            SystemTime::now(),
        ))
        .components(vec![])
    }
}

/// Says something to the presser only (an ephemeral follow-up).
async fn tell(ctx: &Context, comp: &ComponentInteraction, text: &str) {
    let msg = CreateInteractionResponseFollowup::new()
        .ephemeral(true)
        .content(text)
        .allowed_mentions(no_mentions());
    if let Err(e) = comp.create_followup(&ctx.http, msg).await {
        tracing::warn!(interaction = %comp.id, error = %e, "could not answer a button press");
    }
}

/// Shows the grant as ended in the DM the button sits on.
async fn show_ended(
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
            SystemTime::now(),
        ))
        .components(vec![])
        .embeds(vec![])
        .allowed_mentions(no_mentions());
    if let Err(e) = comp.edit_response(&ctx.http, edit).await {
        tracing::warn!(grant = grant.id, error = %e, "could not mark the DM as ended");
    }
}

fn post_line(app: &App, user: u64, grant: &Grant, outcome: &Outcome, request_id: Option<&str>) {
    if !outcome.posts_to_channel() {
        return;
    }
    let text = format!("{} (grant {})", outcome.channel_text(), grant.id);
    let line = messages::audit_line(
        user,
        grant.instance.as_str(),
        Some(grant.region.as_str()),
        None,
        &text,
        request_id,
    );
    if outcome.is_link_line() {
        app.audit_feed.post(line);
    } else {
        app.audit_feed.post_refusal(user, line);
    }
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
    if !acknowledge(ctx, comp).await {
        return;
    }
    match press {
        None => {
            let refusal = app.core.refuse_button(&actor).await;
            tell(ctx, comp, &refusal.to_string()).await;
        }
        Some(Press::Done(id)) => match app.core.end_grant(id, &actor, EndWhy::Done).await {
            Ok(Some(grant)) => {
                show_ended(ctx, app, comp, &grant, EndWhy::Done).await;
                app.audit_feed.post(messages::audit_line(
                    actor_id(&actor),
                    grant.instance.as_str(),
                    Some(grant.region.as_str()),
                    None,
                    &format!("ended by the member (grant {})", grant.id),
                    None,
                ));
            }
            Ok(None) => {
                // It had ended already (expired, or Done pressed twice): say so, plainly.
                if let Some(grant) = app.core.grant_by_id(id) {
                    show_ended(ctx, app, comp, &grant, EndWhy::Expired).await;
                }
            }
            Err(refusal) => tell(ctx, comp, &refusal.to_string()).await,
        },
        Some(Press::Open(_)) => {}
    }
}

/// Answers within Discord's 3 s with a deferred update; the DM is edited once there is
/// something to show. False when Discord did not take it (nothing more can be said then).
async fn acknowledge(ctx: &Context, comp: &ComponentInteraction) -> bool {
    match comp
        .create_response(&ctx.http, CreateInteractionResponse::Acknowledge)
        .await
    {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(interaction = %comp.id, error = %e, "could not acknowledge a button press");
            false
        }
    }
}

fn actor_id(actor: &Actor) -> u64 {
    match actor {
        Actor::Discord { id, .. } => *id,
        Actor::Local { .. } => 0,
    }
}

async fn open(ctx: &Context, app: &Arc<App>, comp: &ComponentInteraction, actor: &Actor, id: u64) {
    // The acknowledgement goes out at once; meanwhile the grant is checked and, when it may be
    // pressed, the member's roles are fetched (a button in a DM carries no member). Neither
    // delays the acknowledgement, and together they save a round trip per press.
    let prepare = async {
        let press = app.core.begin_press(id, actor).await?;
        let guild = GuildId::new(press.grant.guild.get());
        let roles = match ctx.http.get_member(guild, comp.user.id).await {
            Ok(m) => Some(
                m.roles
                    .iter()
                    .filter_map(|r| Snowflake::new(r.get()))
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(user = %comp.user.id, error = %e, "could not read the member's roles");
                None
            }
        };
        Ok::<_, Refusal>((press, roles))
    };
    let (acked, prepared) = tokio::join!(acknowledge(ctx, comp), prepare);
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
            tell(ctx, comp, &refusal.to_string()).await;
            return;
        }
    };
    let grant = press.grant.clone();
    match app.core.finish_press(press, roles).await {
        Ok(minted) => show_link(ctx, app, comp, actor, minted).await,
        Err(refusal) => {
            let outcome = refusal.outcome();
            // The core counts the refusals it records for a press; Tencent's are counted here.
            if matches!(refusal, Refusal::Tencent { .. }) {
                METRICS.command(outcome.code());
            }
            post_line(app, actor_id(actor), &grant, &outcome, refusal.request_id());
            if let Refusal::RoleRemoved { .. } = refusal {
                show_ended(ctx, app, comp, &grant, EndWhy::RoleRemoved).await;
            }
            tell(ctx, comp, &refusal.to_string()).await;
        }
    }
}

async fn show_link(
    ctx: &Context,
    app: &Arc<App>,
    comp: &ComponentInteraction,
    actor: &Actor,
    minted: Minted,
) {
    let name = app.core.instance_name(&minted.grant.instance);
    // Done or the window's end may have come while the link was made: then it is not shown.
    let live = app.core.grant_is_live(minted.grant.id);
    let shown = match link_view(&minted, name.as_deref()).filter(|_| live) {
        Some(view) => comp.edit_response(&ctx.http, view).await.map_err(Some),
        None => Err(None),
    };
    let outcome = if shown.is_ok() {
        Outcome::Delivered
    } else {
        Outcome::DmFailed
    };
    METRICS.command(outcome.code());
    if let Err(e) = app
        .core
        .record_delivery(actor, &minted.issued, &outcome)
        .await
    {
        tracing::error!(error = %e, audit_seq = minted.issued.audit_seq, "AUDIT WRITE FAILED after showing a link");
    }
    post_line(
        app,
        actor_id(actor),
        &minted.grant,
        &outcome,
        Some(&minted.issued.request_id),
    );
    if let Err(e) = &shown {
        METRICS.dm_failures.inc();
        let error = e.as_ref().map_or_else(
            || "link too long for any DM".to_owned(),
            ToString::to_string,
        );
        tracing::warn!(user = %comp.user.id, request_id = %minted.issued.request_id, error,
            "could not show the console link in the DM; it was discarded");
        tell(ctx, comp, messages::PRESS_NOT_SHOWN).await;
    }
    // Scrub the link once it is dead (and on a failed edit too, in case Discord took it),
    // putting Open console back while the grant lasts.
    let wait = minted
        .issued
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    let (channel, message) = (comp.channel_id, comp.message.id);
    let (app2, http) = (Arc::clone(app), Arc::clone(&ctx.http));
    app.tasks.spawn(async move {
        tokio::time::sleep(wait).await;
        restore(&http, &app2, channel, message, &minted.grant).await;
    });
}

async fn restore(http: &Http, app: &App, channel: ChannelId, message: MessageId, grant: &Grant) {
    if let Err(e) = channel
        .edit_message(http, message, grant_view(app, grant))
        .await
    {
        tracing::warn!(grant = grant.id, error = %e, "could not scrub the expired link from the DM");
    }
}

/// Ends `grant` when its window runs out and says so in its DM. Not counted by shutdown (a
/// grant lasts up to an hour): a restart rebuilds it from the journal instead.
pub fn schedule_end(app: &Arc<App>, grant: Grant) {
    let app = Arc::clone(app);
    tokio::spawn(async move {
        let wait = grant
            .until
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        match app.core.expire_grant(grant.id).await {
            Ok(Some(g)) => {
                app.audit_feed.post(messages::audit_line(
                    g.user,
                    g.instance.as_str(),
                    Some(g.region.as_str()),
                    None,
                    &format!("access ended: window over (grant {})", g.id),
                    None,
                ));
                if let Some((c, m)) = g.dm {
                    let http = app.wait_for_http().await;
                    restore(&http, &app, ChannelId::new(c), MessageId::new(m), &g).await;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(grant = grant.id, error = %e, "could not end a grant"),
        }
    });
}

/// A grant rebuilt at start: its DM is put back as the grant stands (a link that was on screen
/// when the bot stopped is dead by now, and Open console returns), and its end is scheduled.
pub fn resume(app: &Arc<App>, grant: Grant) {
    if let Some((c, m)) = grant.dm {
        let (app, grant) = (Arc::clone(app), grant.clone());
        tokio::spawn(async move {
            let http = app.wait_for_http().await;
            restore(&http, &app, ChannelId::new(c), MessageId::new(m), &grant).await;
        });
    }
    schedule_end(app, grant);
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
