//! Break-glass in Discord: `/vnc`'s `break_glass` option, the loud post in the approvals channel
//! with **Acknowledge** and **Flag**, the member's marked grant DM, and the presses. Renders and
//! forwards only: every decision is the core's (src/core/break_glass). A `custom_id` carries only
//! the use's id (`vnc:ack:<seq>`, `vnc:flag:<seq>`), in the approval buttons' scheme.

use std::sync::Arc;

use serenity::all::{
    ButtonStyle, ChannelId, CommandInteraction, CommandOptionType, ComponentInteraction, Context,
    CreateActionRow, CreateAllowedMentions, CreateButton, CreateCommandOption,
    CreateInteractionResponse, CreateInteractionResponseFollowup, CreateMessage, EditMessage, Http,
    MessageId, ResolvedValue, RoleId,
};

use super::{messages, no_mentions, reply, Bot};
use crate::audit::Actor;
use crate::core::{AckRefusal, AckStanding, Answer, BreakGlassEvent, BreakGlassUse, Request};

/// `/vnc`'s option.
pub const OPTION: &str = "break_glass";
const ACK: &str = "vnc:ack:";
const FLAG: &str = "vnc:flag:";

/// The `break_glass` option of `/vnc`.
pub fn option() -> CreateCommandOption {
    CreateCommandOption::new(
        CommandOptionType::Boolean,
        OPTION,
        "Emergency: open now without approval (break-glass role, 20+ character reason; approvers are told)",
    )
    .required(false)
}

/// Whether the member set `break_glass:True`.
pub fn asked(cmd: &CommandInteraction) -> bool {
    cmd.data
        .options()
        .iter()
        .any(|o| o.name == OPTION && matches!(o.value, ResolvedValue::Boolean(true)))
}

/// Reads a use button's `custom_id`; anything but our exact shape is `None`.
pub fn parse(custom_id: &str) -> Option<(u64, Answer)> {
    let id = |rest: &str| {
        (!rest.is_empty() && rest.len() <= 20 && rest.bytes().all(|b| b.is_ascii_digit()))
            .then(|| rest.parse().ok())
            .flatten()
    };
    if let Some(rest) = custom_id.strip_prefix(ACK) {
        id(rest).map(|i| (i, Answer::Acknowledge))
    } else if let Some(rest) = custom_id.strip_prefix(FLAG) {
        id(rest).map(|i| (i, Answer::Flag))
    } else {
        None
    }
}

/// Whether a `custom_id` is in a use button's namespace (even a forged one).
pub fn is_ours(custom_id: &str) -> bool {
    custom_id.starts_with(ACK) || custom_id.starts_with(FLAG)
}

fn roles_text(roles: &[crate::ids::Snowflake]) -> String {
    roles
        .iter()
        .map(|r| format!("<@&{r}>"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unix(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// The roles a post pings: the approvers, and the admins too once it is overdue.
fn pinged(u: &BreakGlassUse, overdue_post: bool) -> Vec<crate::ids::Snowflake> {
    let mut roles = u.approver_roles.clone();
    if overdue_post {
        for r in &u.admin_roles {
            if !roles.contains(r) {
                roles.push(*r);
            }
        }
    }
    roles
}

/// The use's text in the approvals channel, as it stands. Loud on purpose: it names the member,
/// what they opened and why, and who has to look.
pub fn use_text(u: &BreakGlassUse, name: Option<&str>, overdue_post: bool) -> String {
    let label = match name {
        Some(n) => format!("{} (`{}`)", messages::escape(n, 60), u.instance),
        None => format!("`{}`", u.instance),
    };
    let head = if overdue_post {
        "⏰ **BREAK-GLASS, NOT ACKNOWLEDGED IN TIME**"
    } else {
        "🚨 **BREAK-GLASS**"
    };
    let mut text = format!(
        "{head} {}: <@{}> opened console access to {label} in {} **without approval**, for {} min (until <t:{}:t>).\nReason: {}\nBreak-glass use {} (grant {}). An approver other than the member: **Acknowledge** if it was justified, **Flag** if not.",
        roles_text(&pinged(u, overdue_post)),
        u.user,
        u.region,
        u.window().as_secs() / 60,
        unix(u.until),
        messages::escape(&u.reason, 200),
        u.id,
        u.grant,
    );
    text.push_str(&match (&u.standing, u.overdue) {
        (AckStanding::Open, false) => format!("\nTo be answered by <t:{}:f>.", unix(u.ack_by)),
        (AckStanding::Open, true) => format!(
            "\n⚠ **Acknowledgement overdue** since <t:{}:R>.",
            unix(u.ack_by)
        ),
        (AckStanding::Acknowledged { by }, _) => format!("\n✅ **Acknowledged** by <@{by}>."),
        (AckStanding::Flagged { by }, _) => format!("\n🚩 **Flagged** by <@{by}>."),
    });
    text
}

/// Acknowledge and Flag, while nobody has answered.
fn answer_buttons(u: &BreakGlassUse) -> Vec<CreateActionRow> {
    if !u.is_open() {
        return vec![];
    }
    vec![CreateActionRow::Buttons(vec![
        CreateButton::new(format!("{ACK}{}", u.id))
            .label("Acknowledge")
            .style(ButtonStyle::Success),
        CreateButton::new(format!("{FLAG}{}", u.id))
            .label("Flag")
            .style(ButtonStyle::Danger),
    ])]
}

/// Only the roles that must look are pinged; never the member, never anyone else.
fn mentions(u: &BreakGlassUse, overdue_post: bool) -> CreateAllowedMentions {
    CreateAllowedMentions::new()
        .roles(pinged(u, overdue_post).iter().map(|r| RoleId::new(r.get())))
        .empty_users()
}

/// Posts a use in the approvals channel; records where.
async fn post(http: &Http, bot: &Bot, u: &BreakGlassUse, overdue_post: bool) -> bool {
    let Some(channel) = bot
        .core
        .policy()
        .approvals
        .as_ref()
        .map(|a| ChannelId::new(a.channel_id.get()))
    else {
        return false;
    };
    let name = bot.core.instance_name(&u.instance);
    let msg = CreateMessage::new()
        .content(use_text(u, name.as_deref(), overdue_post))
        .components(answer_buttons(u))
        .allowed_mentions(mentions(u, overdue_post));
    match bot.rest(
        "post a break-glass use in the approvals channel",
        channel.send_message(http, msg).await,
    ) {
        Some(m) => {
            bot.core
                .record_break_glass_post(u.id, (channel.get(), m.id.get()))
                .await;
            true
        }
        None => false,
    }
}

/// `/vnc … break_glass:True` (already deferred): the core decides; a use is posted for the
/// approvers, then the member gets the usual grant DM, marked as break-glass.
pub async fn run(ctx: &Context, bot: &Arc<Bot>, cmd: &CommandInteraction, req: Request) {
    let broke = match bot.core.break_glass(req).await {
        Ok(b) => b,
        Err(refusal) => {
            reply(ctx, bot, cmd, &super::refusals::say(&refusal)).await;
            return;
        }
    };
    let u = &broke.used;
    if !post(&ctx.http, bot, u, false).await {
        // Recorded and in the audit channel all the same; the overdue re-post tries again.
        tracing::error!(
            break_glass = u.id,
            "a break-glass use could not be posted in the approvals channel"
        );
    }
    let mark = format!(
        "**Break-glass** (use {}): recorded with your reason, and the approvers were told; one of them will acknowledge or flag it.",
        u.id
    );
    super::vnc::deliver_marked(ctx, bot, cmd, broke.grant, Some(&mark)).await;
}

/// Says something to the presser only.
async fn tell(ctx: &Context, bot: &Bot, comp: &ComponentInteraction, text: &str) {
    let msg = CreateInteractionResponseFollowup::new()
        .ephemeral(true)
        .content(text)
        .allowed_mentions(no_mentions());
    bot.rest(
        "answer a press on a break-glass use",
        comp.create_followup(&ctx.http, msg).await,
    );
}

/// A press on Acknowledge or Flag: a deferred update at once, the presser's roles fetched
/// afresh, then the core decides; the posts are edited from the core's events.
pub async fn press(ctx: &Context, bot: &Arc<Bot>, comp: &ComponentInteraction) {
    let acked = comp
        .create_response(&ctx.http, CreateInteractionResponse::Acknowledge)
        .await;
    if bot
        .rest("acknowledge a press on a break-glass use", acked)
        .is_none()
    {
        return;
    }
    let actor = Actor::Discord {
        id: comp.user.id.get(),
        name: comp.user.name.clone(),
    };
    let result = match parse(&comp.data.custom_id) {
        None => Err(bot.core.refuse_break_glass_button(&actor).await),
        Some((id, answer)) => {
            let roles = match bot.core.break_glass_use(id) {
                Some(u) => super::grant_buttons::member_roles(ctx, bot, u.guild, comp).await,
                None => None,
            };
            bot.core
                .answer_break_glass(id, &actor, roles, answer)
                .await
                .map(|_| ())
        }
    };
    if let Err(refusal) = result {
        tell(ctx, bot, comp, &say(&refusal)).await;
    }
}

/// The sentence for a refused press on a use's button, as the presser reads it.
pub fn say(r: &AckRefusal) -> String {
    match r {
        AckRefusal::Unknown => {
            "This button is not valid: it belongs to no break-glass use this bot knows of.".into()
        }
        AckRefusal::Answered(AckStanding::Acknowledged { by }) => {
            format!("This break-glass use was already acknowledged by <@{by}>.")
        }
        AckRefusal::Answered(AckStanding::Flagged { by }) => {
            format!("This break-glass use was already flagged by <@{by}>.")
        }
        AckRefusal::Answered(AckStanding::Open) => "This break-glass use is still open.".into(),
        AckRefusal::OwnUse => {
            "You cannot acknowledge or flag your own break-glass use: another approver must.".into()
        }
        AckRefusal::NotApprover => {
            "Only members with an approver role for this rule may acknowledge or flag a break-glass use.".into()
        }
        AckRefusal::RolesUnavailable => "Discord did not tell me your current roles, so nothing was recorded. Try again in a moment.".into(),
        AckRefusal::Audit(_) => "The bot cannot write its audit trail right now, so nothing was changed. Try again later.".into(),
    }
}

/// Subscribes to the core's break-glass events now and renders them once the gateway is up.
pub(super) fn spawn(bot: &Arc<Bot>) {
    bot.render_each(
        bot.core.break_glass_events(),
        "break-glass",
        |http, bot, event| async move { render(&http, &bot, event).await },
    );
}

async fn render(http: &Http, bot: &Bot, event: BreakGlassEvent) {
    match event {
        BreakGlassEvent::Answered(u) => edit_posts(http, bot, &u).await,
        BreakGlassEvent::Overdue(u) => {
            edit_posts(http, bot, &u).await;
            post(http, bot, &u, true).await;
        }
    }
}

async fn edit_posts(http: &Http, bot: &Bot, u: &BreakGlassUse) {
    let posts = bot
        .core
        .break_glass_use(u.id)
        .map(|u| u.posts)
        .unwrap_or_default();
    let name = bot.core.instance_name(&u.instance);
    for (i, (channel, message)) in posts.into_iter().enumerate() {
        let edit = EditMessage::new()
            .content(use_text(u, name.as_deref(), i > 0))
            .components(answer_buttons(u))
            .allowed_mentions(no_mentions());
        bot.rest(
            "edit a break-glass use's post",
            ChannelId::new(channel)
                .edit_message(http, MessageId::new(message), edit)
                .await,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::ids::{InstanceId, Region, Snowflake};

    fn a_use() -> BreakGlassUse {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        BreakGlassUse {
            id: 12,
            grant: 13,
            user: 7001,
            name: "alice".into(),
            guild: Snowflake::new(800000000000000001).unwrap(),
            instance: InstanceId::parse("ins-a1b2c3d4").unwrap(),
            region: Region::parse("ap-guangzhou").unwrap(),
            reason: "INC-9 **the** primary is down".into(),
            rule: Some(0),
            approver_roles: vec![Snowflake::new(9).unwrap()],
            admin_roles: vec![Snowflake::new(7).unwrap()],
            at,
            until: at + Duration::from_secs(1800),
            ack_by: at + Duration::from_secs(3600),
            standing: AckStanding::Open,
            overdue: false,
            posts: vec![],
        }
    }

    #[test]
    fn only_our_exact_custom_ids_parse() {
        assert_eq!(parse("vnc:ack:42"), Some((42, Answer::Acknowledge)));
        assert_eq!(parse("vnc:flag:7"), Some((7, Answer::Flag)));
        for bad in [
            "vnc:ack:",
            "vnc:ack:-1",
            "vnc:flag:1x",
            "vnc:ack:999999999999999999999",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
            assert!(is_ours(bad));
        }
        assert!(!is_ours("vnc:approve:1") && !is_ours("vnc:open:1"));
    }

    #[test]
    fn the_post_is_loud_and_says_who_answered() {
        let u = a_use();
        let t = use_text(&u, Some("db-01"), false);
        for want in [
            "BREAK-GLASS",
            "<@&9>",
            "<@7001>",
            "db-01 (`ins-a1b2c3d4`)",
            "ap-guangzhou",
            "without approval",
            "30 min",
            "INC-9 \\*\\*the\\*\\* primary",
            "Break-glass use 12 (grant 13)",
        ] {
            assert!(t.contains(want), "missing {want:?} in {t}");
        }
        assert!(!t.contains("<@&7>"), "the admins only once it is overdue");
        let late = BreakGlassUse {
            overdue: true,
            ..u.clone()
        };
        let t = use_text(&late, None, true);
        assert!(t.contains("<@&9> <@&7>") && t.contains("overdue"), "{t}");
        let acked = BreakGlassUse {
            standing: AckStanding::Acknowledged { by: 7003 },
            ..u.clone()
        };
        assert!(use_text(&acked, None, false).contains("**Acknowledged** by <@7003>"));
        assert!(answer_buttons(&acked).is_empty());
        assert!(
            say(&AckRefusal::Answered(AckStanding::Flagged { by: 4 })).contains("flagged by <@4>")
        );
    }
}
