//! `[discord]`: where the bot answers and posts, and (tests, a proxy) where it connects.

use serde::Deserialize;

use super::urls::{parse_base_url, parse_gateway_url};
use super::Collector;
use crate::config::DiscordConfig;
use crate::ids::Snowflake;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscord {
    guild_ids: Vec<Snowflake>,
    audit_channel_id: Option<Snowflake>,
    api_base: Option<String>,
    gateway_url: Option<String>,
}

impl RawDiscord {
    pub(super) fn validate(self, p: &mut Collector) -> DiscordConfig {
        if self.guild_ids.is_empty() {
            p.push(
                "discord.guild_ids",
                "is empty: list the server (guild) IDs where /vnc may be used",
            );
        }
        p.duplicates("discord.guild_ids", &self.guild_ids);
        let api_base = self
            .api_base
            .as_deref()
            .and_then(|s| parse_base_url(p, "discord.api_base", s, "https://discord.com"));
        let gateway_url = self
            .gateway_url
            .as_deref()
            .and_then(|s| parse_gateway_url(p, "discord.gateway_url", s));
        DiscordConfig {
            guild_ids: self.guild_ids,
            audit_channel_id: self.audit_channel_id,
            api_base,
            gateway_url,
        }
    }
}
