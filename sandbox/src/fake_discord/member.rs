//! A member's moves and what they see, shared by `vncbot demo` and the tests: `/vnc` as a member
//! sends it, the reply it gets, its grant's DM, and the buttons on that DM.

use std::time::Duration;

use serde_json::{json, Value};

use super::{Call, FakeDiscord, Invocation};
use crate::GUILD;

/// `/vnc` with `options` as a member of the served guild with `roles`, named "member" (set
/// [`Invocation::name`] for another).
pub fn vnc<'a>(user: u64, roles: Vec<u64>, options: Vec<(&'a str, &'a str)>) -> Invocation<'a> {
    Invocation {
        user,
        name: "member",
        guild: Some(GUILD),
        roles,
        command: "vnc",
        options,
    }
}

impl Call {
    /// The message a reply call carries: the body of an edit or follow-up, or the `data` of an
    /// interaction callback.
    pub fn message(&self) -> &Value {
        if self.path.ends_with("/callback") {
            &self.body["data"]
        } else {
            &self.body
        }
    }

    /// The text of [`Call::message`].
    pub fn content(&self) -> String {
        self.message()["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// A grant's DM as the fake saw it.
#[derive(Debug, Clone, Copy)]
pub struct GrantDm {
    pub user: u64,
    pub channel: u64,
    pub message: u64,
    pub grant: u64,
}

impl FakeDiscord {
    /// The member's final answer to a command: the edit of the deferred reply, or an immediate
    /// message (type 4, as the bot answers while shutting down).
    pub async fn reply(&self, token: &str) -> Call {
        self.wait_for(Duration::from_secs(15), "the reply", |c| {
            c.path.contains(token)
                && ((c.method == "PATCH" && c.path.ends_with("@original"))
                    || (c.path.ends_with("/callback") && c.body["type"] == 4))
        })
        .await
    }

    /// `inv` (a `/vnc` that must be granted) up to its grant's DM. The member's roles are also
    /// what a member fetch answers.
    pub async fn grant(&self, inv: Invocation<'_>) -> GrantDm {
        let user = inv.user;
        self.set_roles(user, inv.roles.clone());
        let token = self.invoke(inv);
        let reply = self.reply(&token).await;
        // The bot never lets its text ping anyone.
        assert_eq!(
            reply.message()["allowed_mentions"]["parse"],
            json!([]),
            "{reply:?}"
        );
        assert!(reply.content().contains("in your DMs"), "{reply:?}");
        self.grant_dm(user).expect("the grant's DM was sent")
    }

    /// The choices an autocomplete interaction was answered with (`(name, value)`).
    pub async fn choices(&self, token: &str) -> Vec<(String, String)> {
        let c = self
            .wait_for(Duration::from_secs(5), "the autocomplete answer", |c| {
                c.path.contains(token) && c.path.ends_with("/callback")
            })
            .await;
        assert_eq!(c.body["type"], 8, "{}", c.body);
        c.body["data"]["choices"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|ch| {
                        (
                            ch["name"].as_str().unwrap_or_default().to_owned(),
                            ch["value"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The last grant DM sent to `user` (after `/vnc` answered), if any.
    pub fn grant_dm(&self, user: u64) -> Option<GrantDm> {
        let channels = self.dm_channels_of(user);
        self.calls().into_iter().rev().find_map(|c| {
            let channel: u64 = c
                .path
                .strip_prefix("/api/v10/channels/")?
                .strip_suffix("/messages")?
                .parse()
                .ok()?;
            let custom = c.body["components"][0]["components"][0]["custom_id"].as_str()?;
            if c.method != "POST" || c.status != 200 || !channels.contains(&channel) {
                return None;
            }
            Some(GrantDm {
                user,
                channel,
                message: c.reply["id"].as_str()?.parse().ok()?,
                grant: custom.strip_prefix("vnc:open:")?.parse().ok()?,
            })
        })
    }

    /// Presses a button of a grant's DM (as its holder): `open` (Open console) or `done`;
    /// returns the press's token.
    pub fn press_button(&self, g: &GrantDm, which: &str) -> String {
        self.press(
            g.user,
            g.channel,
            g.message,
            &format!("vnc:{which}:{}", g.grant),
        )
    }

    /// Presses Open console on a grant's DM (as its holder); returns the press's token.
    pub fn press_open(&self, g: &GrantDm) -> String {
        self.press_button(g, "open")
    }

    /// What a press did: the DM edited (a link, or the grant ended) or an ephemeral follow-up.
    pub async fn press_result(&self, token: &str) -> Call {
        self.wait_for(Duration::from_secs(20), "the press's answer", |c| {
            c.path.contains(token) && !c.path.ends_with("/callback")
        })
        .await
    }

    /// The name `user` goes by in their interactions (by default their commands' name, or
    /// `user<ID>`): for a member who presses without having run a command first.
    pub fn set_name(&self, user: u64, name: &str) {
        self.state
            .lock()
            .unwrap()
            .names
            .insert(user, name.to_owned());
    }
}
