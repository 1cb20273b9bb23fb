//! `[approvals]`: where requests and break-glass uses are posted, the break-glass bounds, and who
//! may use `/vncadmin`. Its defaults are [`ApprovalsConfig`]'s constants.

use serde::Deserialize;

use super::Collector;
use crate::access::Rule;
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

/// A rule that offers break-glass needs someone to acknowledge its uses: its approver roles
/// (with `approval = "required"`), or else `[approvals] admin_roles`.
pub(super) fn check_break_glass_answerers(
    p: &mut Collector,
    allow: &[Rule],
    approvals: Option<&ApprovalsConfig>,
) {
    if approvals.is_none_or(|a| !a.admin_roles.is_empty()) {
        return;
    }
    for (i, rule) in allow.iter().enumerate() {
        if !rule.gate.break_glass_roles.is_empty() && rule.gate.approver_roles.is_empty() {
            p.push(
                format!("allow[{i}].break_glass_roles"),
                "nobody could acknowledge its break-glass uses: give this rule approver_roles (with approval = \"required\"), or set [approvals] admin_roles",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ParseError};

    const RULE: &str = r#"
[discord]
guild_ids = [800000000000000001]

[tencent]
regions = ["ap-guangzhou"]

[[allow]]
roles = [555000000000000001]
instances = ["*"]
regions = ["*"]
break_glass_roles = [555000000000000008]
"#;

    #[test]
    fn break_glass_needs_someone_to_acknowledge_it() {
        let text = format!("{RULE}\n[approvals]\nchannel_id = 810000000000000003\n");
        match Config::parse(&text) {
            Err(ParseError::Invalid(problems)) => {
                let p: Vec<_> = problems
                    .iter()
                    .filter(|p| p.key == "allow[0].break_glass_roles")
                    .collect();
                assert_eq!(p.len(), 1, "{problems:?}");
                assert!(p[0].message.contains("admin_roles"), "{}", p[0].message);
            }
            other => panic!("{other:?}"),
        }
        // The admins acknowledge a rule without approvers.
        let text = format!("{text}admin_roles = [555000000000000007]\n");
        assert!(Config::parse(&text).is_ok());
    }
}
