//! `/vncadmin`: `grants` lists live grants and pending requests; `revoke` ends a grant (by its
//! id) or every live grant of a member. Registered beside `/vnc`; Discord's own permission
//! setting is left to the server, and the bot checks `[approvals] admin_roles` at every use
//! against the member's roles as Discord gives them now. Everything is answered ephemerally.

use std::sync::Arc;

use serenity::all::{
    CommandDataOptionValue, CommandInteraction, CommandOptionType, Context, CreateCommand,
    CreateCommandOption, GuildId,
};

use super::{messages, reply, Bot};
use crate::audit::Actor;
use crate::core::admin::{AdminRefusal, LiveGrant, Target};
use crate::core::{ApprovalRequest, Grant};
use crate::ids::{InstanceId, Snowflake};

pub const NAME: &str = "vncadmin";

pub fn register() -> CreateCommand {
    CreateCommand::new(NAME)
        .description("Admins: list live console grants, or revoke one")
        .dm_permission(false)
        .add_option(CreateCommandOption::new(
            CommandOptionType::SubCommand,
            "grants",
            "List live grants and pending approval requests",
        ))
        .add_option(
            CreateCommandOption::new(
                CommandOptionType::SubCommand,
                "revoke",
                "End a grant (by its id) or every live grant of a member",
            )
            .add_sub_option(
                CreateCommandOption::new(CommandOptionType::Integer, "grant", "The grant's id")
                    .min_int_value(1)
                    .required(false),
            )
            .add_sub_option(
                CreateCommandOption::new(
                    CommandOptionType::User,
                    "member",
                    "End every live grant of this member",
                )
                .required(false),
            ),
        )
}

/// What was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Grants,
    Revoke {
        grant: Option<u64>,
        member: Option<u64>,
    },
}

fn asked(cmd: &CommandInteraction) -> Option<Asked> {
    let sub = cmd.data.options.first()?;
    let CommandDataOptionValue::SubCommand(opts) = &sub.value else {
        return None;
    };
    match sub.name.as_str() {
        "grants" => Some(Asked::Grants),
        "revoke" => {
            let (mut grant, mut member) = (None, None);
            for o in opts {
                match (o.name.as_str(), &o.value) {
                    ("grant", CommandDataOptionValue::Integer(n)) => {
                        grant = u64::try_from(*n).ok();
                    }
                    ("member", CommandDataOptionValue::User(u)) => member = Some(u.get()),
                    _ => {}
                }
            }
            Some(Asked::Revoke { grant, member })
        }
        _ => None,
    }
}

/// Runs `/vncadmin` on an interaction that has already been deferred (ephemeral).
pub async fn run(ctx: &Context, bot: &Arc<Bot>, cmd: &CommandInteraction) {
    let admin = Actor::Discord {
        id: cmd.user.id.get(),
        name: cmd.user.name.clone(),
    };
    let guild = cmd.guild_id.and_then(|g| Snowflake::new(g.get()));
    // Fetched afresh, as a vote's are: the interaction's copy may be stale.
    let roles = match cmd.guild_id {
        Some(g) => roles_of(ctx, bot, g, cmd).await,
        None => None,
    };
    if let Err(refusal) = bot.core.admit_admin(&admin, guild, roles).await {
        return reply(ctx, bot, cmd, &say(&refusal)).await;
    }
    let text = match asked(cmd) {
        Some(Asked::Grants) => {
            let grants = bot.core.live_grant_list();
            let requests = bot.core.pending_requests();
            listing(&grants, &requests, |i| bot.core.instance_name(i))
        }
        Some(Asked::Revoke { grant, member }) => {
            let target = match (grant, member) {
                (Some(g), None) => Ok(Target::Grant(g)),
                (None, Some(m)) => Ok(Target::Member(m)),
                _ => Err(bot
                    .core
                    .refuse_admin(&admin, guild, AdminRefusal::NoTarget)
                    .await),
            };
            let revoked = match target {
                Ok(t) => bot.core.revoke(&admin, guild, t).await,
                Err(r) => Err(r),
            };
            match revoked {
                Ok(grants) => revoked_text(&grants, |i| bot.core.instance_name(i)),
                Err(r) => say(&r),
            }
        }
        None => messages::REPLY_UNKNOWN_COMMAND.to_owned(),
    };
    reply(ctx, bot, cmd, &text).await;
}

async fn roles_of(
    ctx: &Context,
    bot: &Bot,
    guild: GuildId,
    cmd: &CommandInteraction,
) -> Option<Vec<Snowflake>> {
    let member = ctx.http.get_member(guild, cmd.user.id).await;
    let member = bot.rest("read an admin's roles", member)?;
    Some(
        member
            .roles
            .iter()
            .filter_map(|r| Snowflake::new(r.get()))
            .collect(),
    )
}

/// The sentence for a refused use of `/vncadmin`.
pub fn say(r: &AdminRefusal) -> String {
    match r {
        AdminRefusal::NotAdmin => "Only members with an admin role (`[approvals] admin_roles`) may use /vncadmin. This attempt was recorded.".into(),
        AdminRefusal::RolesUnavailable => "Discord did not tell me your current roles, so nothing was done. Try again in a moment.".into(),
        AdminRefusal::UnknownGrant(g) => format!("No grant has the id {g}. `/vncadmin grants` lists the live ones."),
        AdminRefusal::GrantEnded(g) => format!("Grant {g} has already ended; nothing to revoke."),
        AdminRefusal::NoGrants(u) => format!("<@{u}> holds no live grant; nothing to revoke."),
        AdminRefusal::NoTarget => "Give either `grant` (a grant's id) or `member`, not both and not neither.".into(),
        AdminRefusal::Audit(_) => "The bot cannot write its audit trail right now, so nothing was done. Try again later.".into(),
    }
}

fn label(i: &InstanceId, region: &crate::ids::Region, name: Option<String>) -> String {
    match name.filter(|n| !n.trim().is_empty()) {
        Some(n) => format!("**{}** ({i}, {region})", messages::escape(&n, 40)),
        None => format!("**{i}** ({region})"),
    }
}

fn revoked_text(grants: &[Grant], name: impl Fn(&InstanceId) -> Option<String>) -> String {
    let lines: Vec<String> = grants
        .iter()
        .map(|g| {
            format!(
                "Revoked grant {}: <@{}>'s access to {}. Their DM says you ended it.",
                g.id,
                g.user,
                label(&g.instance, &g.region, name(&g.instance))
            )
        })
        .collect();
    bounded(lines, "grant(s)")
}

/// `/vncadmin grants`: every live grant and pending request, one line each, within one message.
pub fn listing(
    grants: &[LiveGrant],
    requests: &[ApprovalRequest],
    name: impl Fn(&InstanceId) -> Option<String>,
) -> String {
    let mut lines = vec![format!("**Live grants**: {}", grants.len())];
    for g in grants {
        let t = &g.grant;
        let u = messages::unix(t.until);
        let mut line = format!(
            "• grant {}: <@{}>, {} until <t:{u}:t> (<t:{u}:R>), {} link(s) used",
            t.id,
            t.user,
            label(&t.instance, &t.region, name(&t.instance)),
            g.links
        );
        if g.extended {
            line.push_str(", extended");
        }
        if g.break_glass {
            line.push_str(", ⚠ **break-glass**");
        }
        lines.push(line);
    }
    lines.push(format!("**Pending requests**: {}", requests.len()));
    for r in requests {
        lines.push(format!(
            "• request {}: <@{}>, {}, {} of {} approval(s), expires <t:{}:R>",
            r.id,
            r.user,
            label(&r.instance, &r.region, name(&r.instance)),
            r.approvals(),
            r.gate.approvals_required,
            messages::unix(r.expires)
        ));
    }
    bounded(lines, "line(s)")
}

/// The lines that fit one message, then "and N more".
fn bounded(lines: Vec<String>, what: &str) -> String {
    // Room for the "and N more" line.
    const BUDGET: usize = messages::MESSAGE_MAX - 40;
    let mut out = String::new();
    let total = lines.len();
    for (i, line) in lines.into_iter().enumerate() {
        if out.chars().count() + line.chars().count() + 1 > BUDGET {
            out.push_str(&format!("… and {} more {what}.", total - i));
            return out;
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    use crate::ids::Region;

    fn live(id: u64) -> LiveGrant {
        LiveGrant {
            grant: Grant {
                id,
                user: 7001,
                name: "m".into(),
                guild: Snowflake::new(800000000000000001).unwrap(),
                instance: InstanceId::parse("ins-a1b2c3d4").unwrap(),
                region: Region::parse("ap-guangzhou").unwrap(),
                reason: None,
                until: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                dm: None,
            },
            links: 2,
            break_glass: id == 2,
            extended: id == 1,
        }
    }

    #[test]
    fn listing_marks_and_stays_within_one_message() {
        let text = listing(&[live(1), live(2)], &[], |_| Some("db-01".into()));
        assert!(text.contains("**Live grants**: 2"), "{text}");
        assert!(
            text.contains(
                "• grant 1: <@7001>, **db-01** (ins-a1b2c3d4, ap-guangzhou) until <t:1700000000:t>"
            ),
            "{text}"
        );
        assert!(text.contains("2 link(s) used, extended"), "{text}");
        assert!(
            text.contains("grant 2") && text.contains("⚠ **break-glass**"),
            "{text}"
        );
        assert!(text.contains("**Pending requests**: 0"), "{text}");
        let many: Vec<LiveGrant> = (1..=100).map(live).collect();
        let text = listing(&many, &[], |_| None);
        assert!(
            text.chars().count() <= messages::MESSAGE_MAX,
            "{}",
            text.len()
        );
        assert!(text.contains("more line(s)."), "{text}");
    }
}
