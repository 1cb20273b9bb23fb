//! `[approvals]`: where requests and break-glass uses are posted, the break-glass bounds, and who
//! may use `/vncadmin`. Its defaults are [`ApprovalsConfig`]'s constants.

use serde::Deserialize;

use super::Collector;
use crate::config::{
    ApprovalsConfig, DEFAULT_ACK_HOURS, DEFAULT_BREAK_GLASS_MINUTES, DEFAULT_BREAK_GLASS_PER_DAY,
    MAX_ACK_HOURS, MAX_BREAK_GLASS_MINUTES, MAX_BREAK_GLASS_PER_DAY,
};
use crate::ids::Snowflake;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApprovals {
    channel_id: Option<Snowflake>,
    #[serde(default = "break_glass_minutes")]
    break_glass_minutes: u32,
    #[serde(default = "break_glass_per_day")]
    break_glass_per_day: u32,
    #[serde(default = "ack_hours")]
    ack_hours: u32,
    #[serde(default)]
    admin_roles: Vec<Snowflake>,
}

fn break_glass_minutes() -> u32 {
    DEFAULT_BREAK_GLASS_MINUTES
}
fn break_glass_per_day() -> u32 {
    DEFAULT_BREAK_GLASS_PER_DAY
}
fn ack_hours() -> u32 {
    DEFAULT_ACK_HOURS
}

impl RawApprovals {
    pub(super) fn validate(self, p: &mut Collector) -> Option<ApprovalsConfig> {
        if self.channel_id.is_none() {
            p.push(
                "approvals.channel_id",
                "is missing: give the ID of the channel where requests are posted (it may be the audit channel)",
            );
        }
        let break_glass_minutes = p
            .in_range(
                "approvals.break_glass_minutes",
                self.break_glass_minutes,
                MAX_BREAK_GLASS_MINUTES,
                "how long a break-glass grant lasts, in minutes",
            )
            .get();
        let break_glass_per_day = p
            .in_range(
                "approvals.break_glass_per_day",
                self.break_glass_per_day,
                MAX_BREAK_GLASS_PER_DAY,
                "break-glass uses one member may make in 24 hours",
            )
            .get();
        let ack_hours = p
            .in_range(
                "approvals.ack_hours",
                self.ack_hours,
                MAX_ACK_HOURS,
                "hours a break-glass use may wait for an approver's acknowledgement",
            )
            .get();
        p.duplicates("approvals.admin_roles", &self.admin_roles);
        Some(ApprovalsConfig {
            channel_id: self.channel_id?,
            break_glass_minutes,
            break_glass_per_day,
            ack_hours,
            admin_roles: self.admin_roles,
        })
    }
}
