//! What admins and pickers do: `/vncadmin` with its subcommand and options (a user option comes
//! with its `resolved` user, as Discord sends it), a pick on a select menu, and a channel the
//! bot may not see.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::{rest::message_json, FakeDiscord, APP_ID};

/// An option of `/vncadmin`'s subcommand.
#[derive(Debug, Clone, Copy)]
pub enum AdminOption<'a> {
    /// An integer option (`grant`).
    Integer(&'a str, i64),
    /// A user option (`member`).
    User(&'a str, u64),
}

fn user_json(user: u64) -> Value {
    json!({"id": user.to_string(), "username": format!("user{user}"), "discriminator": "0",
        "global_name": null, "avatar": null})
}

fn member_json(user: u64, roles: &[u64]) -> Value {
    json!({
        "user": user_json(user),
        "roles": roles.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "deaf": false, "mute": false, "flags": 0,
        "joined_at": "2024-01-01T00:00:00.000000+00:00",
        "permissions": "0",
    })
}

/// Discord's permission bits that the fake's server gives @everyone.
pub(super) const VIEW_CHANNEL: u64 = 1 << 10;
pub(super) const SEND_MESSAGES: u64 = 1 << 11;

/// The served server as `GET /guilds/{id}` gives it: @everyone may view channels and post.
pub(super) fn guild_json(guild: &str) -> Value {
    json!({
        "id": guild, "name": "ops", "icon": null, "icon_hash": null, "splash": null,
        "discovery_splash": null, "owner_id": "700000000000000099",
        "afk_channel_id": null, "afk_timeout": 300,
        "widget_enabled": false, "widget_channel_id": null,
        "verification_level": 0, "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "roles": [{"id": guild, "name": "@everyone", "color": 0, "hoist": false, "icon": null,
            "colors": {"primary_color": 0, "secondary_color": null, "tertiary_color": null},
            "unicode_emoji": null, "position": 0,
            "permissions": (VIEW_CHANNEL | SEND_MESSAGES).to_string(),
            "managed": false, "mentionable": false, "flags": 0}],
        "emojis": [], "features": [], "mfa_level": 0, "application_id": null,
        "system_channel_id": null, "system_channel_flags": 0, "rules_channel_id": null,
        "max_presences": null, "max_members": 500000, "vanity_url_code": null,
        "description": null, "banner": null, "premium_tier": 0,
        "premium_subscription_count": 0, "preferred_locale": "en-US",
        "public_updates_channel_id": null, "max_video_channel_users": 25,
        "max_stage_video_channel_users": 50, "nsfw_level": 0, "stickers": [],
        "premium_progress_bar_enabled": false, "safety_alerts_channel_id": null,
    })
}

impl FakeDiscord {
    /// The channel's overwrites deny Send Messages to @everyone: the bot may read it but not
    /// post (set the bot's own roles with `set_roles(APP_ID, …)` for its member to be read).
    pub fn deny_send(&self, channel: u64) {
        self.state.lock().unwrap().no_send.insert(channel);
    }

    /// The bot may neither read nor post in `channel` (403 Missing Access), as when its role
    /// lacks View Channel there.
    pub fn unpostable(&self, channel: u64) {
        self.state.lock().unwrap().unpostable.insert(channel);
    }

    /// `/vncadmin <sub>` with `options`, by `user` holding `roles` in the served guild; returns
    /// the interaction's token.
    pub fn vncadmin(
        &self,
        user: u64,
        roles: Vec<u64>,
        sub: &str,
        options: Vec<AdminOption<'_>>,
    ) -> String {
        let id = self.ids.fetch_add(1, Ordering::SeqCst);
        let token = format!("itoken{id}");
        let mut users = serde_json::Map::new();
        let opts: Vec<Value> = options
            .iter()
            .map(|o| match *o {
                AdminOption::Integer(name, v) => json!({"name": name, "type": 4, "value": v}),
                AdminOption::User(name, u) => {
                    users.insert(u.to_string(), user_json(u));
                    json!({"name": name, "type": 6, "value": u.to_string()})
                }
            })
            .collect();
        let d = json!({
            "id": id.to_string(),
            "application_id": APP_ID.to_string(),
            "type": 2,
            "data": {"id": "910000000000000002", "name": "vncadmin", "type": 1,
                "options": [{"name": sub, "type": 1, "options": opts}],
                "resolved": {"users": users}},
            "guild_id": crate::GUILD.to_string(),
            "channel_id": "820000000000000001",
            "member": member_json(user, &roles),
            "token": token,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {},
            "attachment_size_limit": 8388608,
            "app_permissions": "0",
        });
        self.events
            .send(json!({"op": 0, "t": "INTERACTION_CREATE", "d": d}))
            .expect("the bot is connected to the gateway");
        token
    }

    /// Picks `values` on the string select menu `custom_id` of the (ephemeral) message
    /// `message` in `channel`, as `user` holding `roles` in the served guild; returns the
    /// pick's token.
    pub fn select_in_guild(
        &self,
        user: u64,
        roles: Vec<u64>,
        channel: u64,
        message: u64,
        custom_id: &str,
        values: Vec<&str>,
    ) -> String {
        let id = self.ids.fetch_add(1, Ordering::SeqCst);
        let token = format!("itoken{id}");
        let mut msg = message_json(message, channel, &json!({"content": "menu"}));
        msg["flags"] = json!(64);
        let d = json!({
            "id": id.to_string(),
            "application_id": APP_ID.to_string(),
            "type": 3,
            "data": {"custom_id": custom_id, "component_type": 3, "values": values},
            "guild_id": crate::GUILD.to_string(),
            "channel_id": channel.to_string(),
            "member": member_json(user, &roles),
            "message": msg,
            "token": token,
            "version": 1,
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {},
            "attachment_size_limit": 8388608,
            "app_permissions": "0",
            "context": 0,
        });
        self.events
            .send(json!({"op": 0, "t": "INTERACTION_CREATE", "d": d}))
            .expect("the bot is connected to the gateway");
        token
    }
}
