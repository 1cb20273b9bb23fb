//! What the core takes and gives: requests as raw as they arrived, and what an approval or a
//! minted link carries.

use std::time::SystemTime;

use crate::access::Rule;
use crate::audit::Actor;
use crate::config::Config;
use crate::ids::{InstanceId, Region, Snowflake};
use crate::link::ConsoleUrl;

/// What grants the right to ask.
#[derive(Debug, Clone)]
pub enum Authority {
    /// A Discord member's role IDs, from the interaction payload.
    Roles(Vec<Snowflake>),
    /// Someone at a terminal holding the Tencent credentials (`vncbot url`): the credentials
    /// already allow the call, so the allowlist does not apply; limits and audit do.
    LocalCredentials,
}

/// One request, as raw as it arrived: the core does all the validation.
#[derive(Debug, Clone)]
pub struct Request {
    pub actor: Actor,
    pub authority: Authority,
    /// The server the request came from (`None` from a DM, and for `vncbot url`).
    pub guild: Option<Snowflake>,
    pub channel: Option<Snowflake>,
    pub instance: String,
    pub region: Option<String>,
    pub reason: Option<String>,
}

/// The policy that config reloads swap as a whole.
#[derive(Debug, Clone)]
pub struct Policy {
    pub rules: Vec<Rule>,
    pub regions: Vec<Region>,
    pub require_reason: bool,
    /// Servers whose members may ask.
    pub guilds: Vec<Snowflake>,
    /// How long a grant lasts.
    pub grant_for: std::time::Duration,
    /// Links one grant may mint.
    pub links_per_grant: u32,
    /// Which products, in which regions, this bot serves (checked before any call).
    pub tencent: Option<crate::config::TencentConfig>,
    /// `[approvals]`, when configured (rules that need approvers need it).
    pub approvals: Option<crate::config::ApprovalsConfig>,
}

impl Policy {
    pub fn from_config(c: &Config) -> Self {
        Self {
            rules: c.allow.clone(),
            regions: c.tencent.regions.clone(),
            require_reason: c.audit.require_reason,
            guilds: c.discord.guild_ids.clone(),
            grant_for: c.grants.duration(),
            links_per_grant: c.grants.links_per_grant,
            tencent: Some(c.tencent.clone()),
            approvals: c.approvals.clone(),
        }
    }
}

/// An allowed request, ready to mint.
#[derive(Debug, Clone)]
pub struct Approved {
    pub actor: Actor,
    pub authority: Authority,
    pub guild: Option<Snowflake>,
    pub channel: Option<Snowflake>,
    pub instance: InstanceId,
    pub region: Region,
    pub reason: Option<String>,
    /// The allowlist rule that allowed it (none for local credentials).
    pub rule: Option<usize>,
    /// `seq` of the `requested` record (0 until it is written).
    pub audit_seq: u64,
}

/// A minted URL.
#[derive(Debug)]
pub struct Issued {
    pub url: ConsoleUrl,
    pub instance: InstanceId,
    pub region: Region,
    pub request_id: String,
    pub expires_at: SystemTime,
    /// `seq` of the `issued` record.
    pub audit_seq: u64,
}
