//! Approvals in Discord: the request's post in the approvals channel with **Approve** and
//! **Deny**, the requester's DM with **Cancel**, and the presses on them. Renders and forwards
//! only: every decision is the core's (src/core/approvals). A `custom_id` carries only the
//! request's id (`vnc:approve:<seq>`).

use std::sync::Arc;

use serenity::all::{
    ButtonStyle, ChannelId, ComponentInteraction, Context, CreateActionRow, CreateAllowedMentions,
    CreateButton, CreateInteractionResponse, CreateInteractionResponseFollowup, CreateMessage,
    EditMessage, Http, MessageId, RoleId, UserId,
};

use super::grant_buttons::grant_buttons;
use super::{messages, no_mentions, reply, Bot};
use crate::audit::Actor;
use crate::core::{ApprovalEvent, ApprovalRequest, Choice, Grant, Outcome, Standing, VoteRefusal};

const APPROVE: &str = "vnc:approve:";
const DENY: &str = "vnc:deny:";
const CANCEL: &str = "vnc:cancel:";

/// What a request's button asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Press {
    Vote(u64, Choice),
    Cancel(u64),
}

/// Reads a request button's `custom_id`; anything but our exact shape is `None`.
pub fn parse(custom_id: &str) -> Option<Press> {
    let id = |rest: &str| {
        (!rest.is_empty() && rest.len() <= 20 && rest.bytes().all(|b| b.is_ascii_digit()))
            .then(|| rest.parse().ok())
            .flatten()
    };
    if let Some(rest) = custom_id.strip_prefix(APPROVE) {
        id(rest).map(|i| Press::Vote(i, Choice::Approve))
    } else if let Some(rest) = custom_id.strip_prefix(DENY) {
        id(rest).map(|i| Press::Vote(i, Choice::Deny))
    } else if let Some(rest) = custom_id.strip_prefix(CANCEL) {
        id(rest).map(Press::Cancel)
    } else {
        None
    }
}

/// Whether a `custom_id` is in a request button's namespace (even a forged one).
pub fn is_ours(custom_id: &str) -> bool {
    [APPROVE, DENY, CANCEL]
        .iter()
        .any(|p| custom_id.starts_with(p))
}

/// The request's text in the approvals channel, as it stands.
pub fn request_text(r: &ApprovalRequest, name: Option<&str>) -> String {
    let roles: Vec<String> = r
        .gate
        .approver_roles
        .iter()
        .map(|r| format!("<@&{r}>"))
        .collect();
    let label = match name {
        Some(n) => format!("{} (`{}`)", messages::escape(n, 60), r.instance),
        None => format!("`{}`", r.instance),
    };
    let minutes = r.window.as_secs() / 60;
    let mut text = format!(
        "{}: <@{}> asks for console access to {label} in {} for {minutes} min.\nReason: {}\nRequest {}",
        roles.join(" "),
        r.user,
        r.region,
        messages::escape(r.reason.as_deref().unwrap_or("-"), 200),
        r.id,
    );
    if let Some(w) = &r.gate.warning {
        text.push_str(&format!("\n⚠ {}", messages::escape(w, 200)));
    }
    let approvers: Vec<String> = r
        .votes
        .iter()
        .filter(|v| v.choice == Choice::Approve)
        .map(|v| format!("<@{}>", v.voter))
        .collect();
    text.push_str(&format!(
        "\n{} of {} approvals{}",
        approvers.len(),
        r.gate.approvals_required,
        if approvers.is_empty() {
            String::new()
        } else {
            format!(" ({})", approvers.join(", "))
        }
    ));
    let expires = unix(r.expires);
    text.push_str(&match &r.standing {
        Standing::Pending => format!("\nexpires <t:{expires}:R>"),
        Standing::Approved { grant } => format!("\n**Approved**: grant {grant} started."),
        Standing::Denied { by } => format!("\n**Denied** by <@{by}>."),
        Standing::Expired => "\n**Expired** undecided.".into(),
        Standing::Cancelled => "\n**Cancelled** by the member.".into(),
    });
    text
}

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Approve and Deny, while the request is pending.
fn vote_buttons(r: &ApprovalRequest) -> Vec<CreateActionRow> {
    if !r.is_pending() {
        return vec![];
    }
    vec![CreateActionRow::Buttons(vec![
        CreateButton::new(format!("{APPROVE}{}", r.id))
            .label("Approve")
            .style(ButtonStyle::Success),
        CreateButton::new(format!("{DENY}{}", r.id))
            .label("Deny")
            .style(ButtonStyle::Danger),
    ])]
}

/// Only the approver roles are ever pinged.
fn approver_mentions(r: &ApprovalRequest) -> CreateAllowedMentions {
    CreateAllowedMentions::new()
        .roles(r.gate.approver_roles.iter().map(|r| RoleId::new(r.get())))
        .empty_users()
}

fn approvals_channel(bot: &Bot) -> Option<ChannelId> {
    let a = bot.core.policy().approvals.clone()?;
    Some(ChannelId::new(a.channel_id.get()))
}

/// The approver roles of a request, as mentions.
pub(super) fn approver_roles(r: &ApprovalRequest) -> String {
    r.gate
        .approver_roles
        .iter()
        .map(|r| format!("<@&{r}>"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The request's text, saying which grant it extends when it is an extension.
fn post_text(bot: &Bot, r: &ApprovalRequest) -> String {
    let name = bot.core.instance_name(&r.instance);
    let text = request_text(r, name.as_deref());
    match extends(bot, r) {
        Some(grant) => format!("**Extension** of grant {grant}, by the window above. {text}"),
        None => text,
    }
}

/// The grant a request asks to extend, if it is an extension.
fn extends(bot: &Bot, r: &ApprovalRequest) -> Option<u64> {
    match r.standing {
        Standing::Approved { grant } if bot.core.extension_target(r.id).is_none() => {
            // Approved: the link is gone from the grant; only an extension names an older one.
            (grant != 0 && grant < r.id).then_some(grant)
        }
        _ => bot.core.extension_target(r.id),
    }
}

/// Posts a request in the approvals channel; records where.
pub(super) async fn post(http: &Http, bot: &Bot, r: &ApprovalRequest) -> bool {
    let Some(channel) = approvals_channel(bot) else {
        return false;
    };
    let msg = CreateMessage::new()
        .content(post_text(bot, r))
        .components(vote_buttons(r))
        .allowed_mentions(approver_mentions(r));
    match bot.rest(
        "post a request in the approvals channel",
        channel.send_message(http, msg).await,
    ) {
        Some(m) => {
            bot.core
                .record_request_post(r.id, (channel.get(), m.id.get()))
                .await;
            true
        }
        None => false,
    }
}

/// `/vnc` opened a request: post it, answer the requester, DM them a Cancel button.
pub async fn requested(
    ctx: &Context,
    bot: &Arc<Bot>,
    cmd: &impl super::answer::Answer,
    r: ApprovalRequest,
) {
    if !post(&ctx.http, bot, &r).await {
        let _ = bot.core.cancel_request(r.id, &r.requester()).await;
        reply(ctx, bot, cmd, messages::REQUEST_NOT_POSTED).await;
        return;
    }
    let roles: Vec<String> = r
        .gate
        .approver_roles
        .iter()
        .map(|r| format!("<@&{r}>"))
        .collect();
    reply(
        ctx,
        bot,
        cmd,
        &format!(
            "Asked {} (request {}, {} approval(s) needed); you will get a DM when it is decided.",
            roles.join(" "),
            r.id,
            r.gate.approvals_required
        ),
    )
    .await;
    let dm = CreateMessage::new()
        .content(format!(
            "Your request {} for console access to `{}` is waiting for approval (expires <t:{}:R>).",
            r.id,
            r.instance,
            unix(r.expires)
        ))
        .components(vec![CreateActionRow::Buttons(vec![CreateButton::new(
            format!("{CANCEL}{}", r.id),
        )
        .label("Cancel")
        .style(ButtonStyle::Secondary)])])
        .allowed_mentions(no_mentions());
    send_dm(&ctx.http, bot, r.user, dm).await;
}

async fn send_dm(http: &Http, bot: &Bot, user: u64, msg: CreateMessage) -> Option<(u64, u64)> {
    let channel = bot.rest("open a DM", UserId::new(user).create_dm_channel(http).await)?;
    bot.dm_is(channel.id.get(), user);
    let m = bot.rest("send a DM", channel.send_message(http, msg).await)?;
    Some((channel.id.get(), m.id.get()))
}

/// Says something to the presser only.
async fn tell(ctx: &Context, bot: &Bot, comp: &ComponentInteraction, text: &str) {
    let msg = CreateInteractionResponseFollowup::new()
        .ephemeral(true)
        .content(text)
        .allowed_mentions(no_mentions());
    bot.rest(
        "answer a press on a request",
        comp.create_followup(&ctx.http, msg).await,
    );
}

/// A press on Approve, Deny or Cancel: a deferred update at once, the presser's roles fetched
/// afresh, then the core decides; the post is edited from the core's events.
pub async fn run(ctx: &Context, bot: &Arc<Bot>, comp: &ComponentInteraction) {
    let acked = comp
        .create_response(&ctx.http, CreateInteractionResponse::Acknowledge)
        .await;
    if bot
        .rest("acknowledge a press on a request", acked)
        .is_none()
    {
        return;
    }
    let actor = Actor::Discord {
        id: comp.user.id.get(),
        name: comp.user.name.clone(),
    };
    let pressed = parse(&comp.data.custom_id);
    let result = match pressed {
        None => Err(bot.core.refuse_request_button(&actor).await),
        Some(Press::Cancel(id)) => bot.core.cancel_request(id, &actor).await.map(|_| ()),
        Some(Press::Vote(id, choice)) => {
            let roles = match bot.core.approval_request(id) {
                Some(r) => super::grant_buttons::member_roles(ctx, bot, r.guild, comp).await,
                None => None,
            };
            bot.core.vote(id, &actor, roles, choice).await.map(|_| ())
        }
    };
    if let Err(refusal) = result {
        let mut text = say(&refusal);
        // A late press is told who decided: the approvers are on the request's votes.
        if let (VoteRefusal::Closed(Standing::Approved { .. }), Some(Press::Vote(id, _))) =
            (&refusal, pressed)
        {
            if let Some(r) = bot.core.approval_request(id) {
                text = approved_by(&r);
            }
        }
        tell(ctx, bot, comp, &text).await;
    }
}

/// "This request was already approved by @a, @b." (the approvers, mentioned without a ping).
fn approved_by(r: &ApprovalRequest) -> String {
    let by: Vec<String> = r
        .votes
        .iter()
        .filter(|v| v.choice == Choice::Approve)
        .map(|v| format!("<@{}>", v.voter))
        .collect();
    if by.is_empty() {
        return "This request was already approved.".into();
    }
    format!("This request was already approved by {}.", by.join(", "))
}

/// The sentence for a refused press on a request's button, as the presser reads it.
pub fn say(r: &VoteRefusal) -> String {
    match r {
        VoteRefusal::Unknown => {
            "This button is not valid: it belongs to no request this bot knows of.".into()
        }
        VoteRefusal::Closed(Standing::Pending) => "This request is still open.".into(),
        VoteRefusal::Closed(Standing::Approved { .. }) => {
            "This request was already approved.".into()
        }
        VoteRefusal::Closed(Standing::Denied { by }) => {
            format!("This request was already denied by <@{by}>.")
        }
        VoteRefusal::Closed(Standing::Expired) | VoteRefusal::Expired => {
            "This request has expired.".into()
        }
        VoteRefusal::Closed(Standing::Cancelled) => {
            "This request was cancelled by the member who asked.".into()
        }
        VoteRefusal::NotApprover => {
            "Only members with an approver role for this rule may vote on it.".into()
        }
        VoteRefusal::OwnRequest => "You cannot vote on your own request.".into(),
        VoteRefusal::AlreadyVoted => "You have already voted on this request.".into(),
        VoteRefusal::NotRequester => "Only the member who asked may cancel this request.".into(),
        VoteRefusal::RolesUnavailable => "Discord did not tell me your current roles, so your vote was not counted. Try again in a moment.".into(),
        VoteRefusal::Audit(_) => "The bot cannot write its audit trail right now, so nothing was changed. Try again later.".into(),
    }
}

/// Subscribes to the core's approval events now and renders them once the gateway is up.
pub(super) fn spawn(bot: &Arc<Bot>) {
    bot.render_each(
        bot.core.approval_events(),
        "approval",
        |http, bot, event| async move { render(&http, &bot, event).await },
    );
}

async fn render(http: &Http, bot: &Bot, event: ApprovalEvent) {
    match event {
        ApprovalEvent::Voted(r) => edit_post(http, bot, &r).await,
        ApprovalEvent::Reminder(r) => {
            post(http, bot, &r).await;
        }
        ApprovalEvent::Closed { request, grant } => {
            // The requester first: the grant's DM is what they wait for.
            match grant {
                Some(g) => deliver_grant(http, bot, &request, g).await,
                None => {
                    let text = match &request.standing {
                        Standing::Denied { by } => format!(
                            "Your request {} for `{}` was denied by <@{by}>.",
                            request.id, request.instance
                        ),
                        Standing::Expired => format!(
                            "Your request {} for `{}` expired without a decision. Run /vnc again if you still need it.",
                            request.id, request.instance
                        ),
                        // Only an extension is approved without a new grant: its DM shows the new end.
                        Standing::Approved { grant } => format!(
                            "Your request {} to extend grant {grant} for `{}` was approved by {}: the grant's DM shows its new end.",
                            request.id,
                            request.instance,
                            approvers(&request)
                        ),
                        _ => format!("Your request {} for `{}` was cancelled.", request.id, request.instance),
                    };
                    let msg = CreateMessage::new()
                        .content(text)
                        .allowed_mentions(no_mentions());
                    send_dm(http, bot, request.user, msg).await;
                }
            }
            edit_post(http, bot, &request).await;
        }
    }
}

/// The approved grant's DM with Open console, as `/vnc` sends it without approval.
async fn deliver_grant(http: &Http, bot: &Bot, r: &ApprovalRequest, grant: Grant) {
    let name = bot.core.instance_name(&grant.instance);
    let approvers: Vec<String> = r
        .votes
        .iter()
        .filter(|v| v.choice == Choice::Approve)
        .map(|v| format!("<@{}>", v.voter))
        .collect();
    let msg = CreateMessage::new()
        .content(format!(
            "Approved by {}. {}",
            approvers.join(", "),
            messages::grant_dm(&grant, name.as_deref())
        ))
        .components(grant_buttons(grant.id))
        .allowed_mentions(no_mentions());
    let dm = send_dm(http, bot, grant.user, msg)
        .await
        .ok_or(Outcome::DmFailed);
    if let Err(e) = bot.core.record_grant_dm(&grant, dm).await {
        tracing::warn!(grant = grant.id, refusal = %e, "an approved grant's DM was not recorded");
    }
}

fn approvers(r: &ApprovalRequest) -> String {
    r.votes
        .iter()
        .filter(|v| v.choice == Choice::Approve)
        .map(|v| format!("<@{}>", v.voter))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn edit_post(http: &Http, bot: &Bot, r: &ApprovalRequest) {
    let posts = bot
        .core
        .approval_request(r.id)
        .map(|r| r.posts)
        .unwrap_or_default();
    for (channel, message) in posts {
        let edit = EditMessage::new()
            .content(post_text(bot, r))
            .components(vote_buttons(r))
            .allowed_mentions(no_mentions());
        bot.rest(
            "edit a request's post",
            ChannelId::new(channel)
                .edit_message(http, MessageId::new(message), edit)
                .await,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_exact_custom_ids_parse() {
        assert_eq!(
            parse("vnc:approve:42"),
            Some(Press::Vote(42, Choice::Approve))
        );
        assert_eq!(parse("vnc:deny:7"), Some(Press::Vote(7, Choice::Deny)));
        assert_eq!(parse("vnc:cancel:7"), Some(Press::Cancel(7)));
        for bad in [
            "vnc:approve:",
            "vnc:approve:-1",
            "vnc:deny:1x",
            "vnc:approve:999999999999999999999",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
            assert!(is_ours(bad));
        }
        assert!(!is_ours("vnc:open:1"));
        // A late press names who decided.
        assert!(say(&VoteRefusal::Closed(Standing::Denied { by: 4 })).contains("<@4>"));
    }
}
