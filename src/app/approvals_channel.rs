//! At start, with `[approvals]`: the bot must be able to post in `approvals.channel_id`, or no
//! request would reach an approver (each `/vnc` on an approval rule would be cancelled at run
//! time). The channel is read (`GET /channels/{id}`): a 403 or 404, or a channel that is not a
//! server's text channel, is an error naming the channel and what to do; so are the bot's
//! permissions there, computed from the server's roles and the channel's overwrites, when they
//! lack View Channel or Send Messages.
//!
//! When some rule needs approvers or has break-glass roles, start-up refuses (exit 3), as the
//! anchor check refuses a journal it cannot hold; with `[approvals]` only for `/vncadmin`, it
//! starts and says so loudly. When Discord cannot be asked at all (a network failure, a 5xx),
//! the check is skipped with a warning: the bot starts, and a request that cannot be posted
//! is still cancelled and its member told.
//!
//! `vncbot check-config` makes no network call, so it does not do this check; it says that
//! start-up does.

use serenity::all::{Channel, ChannelId, ChannelType, Http, Permissions};

/// The approvals channel cannot be posted in.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalsChannelError {
    #[error("approvals.channel_id {channel}: Discord answered {status} ({message}) when the bot read the channel, so it cannot post requests there. Check the ID (Developer Mode → right-click the channel → Copy ID) and give the bot View Channel and Send Messages in it (the channel's settings → Permissions)")]
    Unreadable {
        channel: u64,
        status: u16,
        message: String,
    },
    #[error("approvals.channel_id {channel} is {kind}, not a server's text channel: give the ID of a text channel the bot may post in")]
    NotText { channel: u64, kind: String },
    #[error("approvals.channel_id {channel}: the bot lacks {missing} there, so it cannot post requests. Give the bot's role View Channel and Send Messages in that channel (its settings → Permissions)")]
    Missing { channel: u64, missing: String },
}

/// Checks the channel; `Ok` also when Discord could not be asked (logged).
pub async fn check(http: &Http, channel: u64) -> Result<(), ApprovalsChannelError> {
    let read = http.get_channel(ChannelId::new(channel)).await;
    let gc = match read {
        Ok(Channel::Guild(gc)) => gc,
        Ok(other) => {
            return Err(ApprovalsChannelError::NotText {
                channel,
                kind: match other {
                    Channel::Private(_) => "a DM".to_owned(),
                    _ => "not a server channel".to_owned(),
                },
            })
        }
        Err(serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(r)))
            if matches!(r.status_code.as_u16(), 403 | 404) =>
        {
            return Err(ApprovalsChannelError::Unreadable {
                channel,
                status: r.status_code.as_u16(),
                message: r.error.message.chars().take(100).collect(),
            })
        }
        Err(e) => {
            tracing::warn!(channel, error = %e, "could not read the approvals channel at start; whether the bot may post there was NOT checked");
            return Ok(());
        }
    };
    if !matches!(
        gc.kind,
        ChannelType::Text
            | ChannelType::News
            | ChannelType::PublicThread
            | ChannelType::PrivateThread
    ) {
        return Err(ApprovalsChannelError::NotText {
            channel,
            kind: format!("a {:?} channel", gc.kind).to_lowercase(),
        });
    }
    // A thread takes its permissions from its parent: reading it was the check.
    if matches!(
        gc.kind,
        ChannelType::PublicThread | ChannelType::PrivateThread
    ) {
        return Ok(());
    }
    // The bot's permissions there: its roles in the server and the channel's overwrites.
    let computed: serenity::Result<Permissions> = async {
        let guild = http.get_guild(gc.guild_id).await?;
        let me = http.get_current_user().await?;
        let member = http.get_member(gc.guild_id, me.id).await?;
        Ok(guild.user_permissions_in(&gc, &member))
    }
    .await;
    let permissions = match computed {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(channel, error = %e, "could not read the bot's roles to check its permissions in the approvals channel; not checked");
            return Ok(());
        }
    };
    let missing = missing(permissions);
    if missing.is_empty() {
        tracing::info!(channel, "the bot may post in the approvals channel");
        Ok(())
    } else {
        Err(ApprovalsChannelError::Missing {
            channel,
            missing: missing.join(" and "),
        })
    }
}

/// The permissions a poster needs that `p` lacks, by their names in Discord's settings.
fn missing(p: Permissions) -> Vec<&'static str> {
    if p.administrator() {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !p.view_channel() {
        missing.push("View Channel");
    }
    if !p.send_messages() {
        missing.push("Send Messages");
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        assert_eq!(
            missing(Permissions::VIEW_CHANNEL | Permissions::SEND_MESSAGES),
            Vec::<&str>::new()
        );
        assert_eq!(missing(Permissions::VIEW_CHANNEL), vec!["Send Messages"]);
        assert_eq!(
            missing(Permissions::empty()),
            vec!["View Channel", "Send Messages"]
        );
        assert!(missing(Permissions::ADMINISTRATOR).is_empty());
    }
}
