//! The small sections: `[grants]`, `[catalog]`, `[limits]`, `[audit]`, `[admin]`, `[log]`. Each
//! default is its `Default` impl here, built from the constants in [`crate::config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Collector;
use crate::config::{
    AdminConfig, AuditConfig, CatalogConfig, GrantsConfig, LimitsConfig, LogConfig, LogFormat,
    OnAnchorMismatch, DEFAULT_ANCHOR_MINUTES, DEFAULT_AUDIT_PATH, DEFAULT_CATALOG_REFRESH_SECS,
    DEFAULT_PER_INSTANCE_PER_MINUTE, DEFAULT_PER_USER_PER_MINUTE,
    DEFAULT_REFUSALS_PER_USER_PER_MINUTE, MAX_ANCHOR_MINUTES, MAX_API_PER_SECOND,
    MAX_CATALOG_REFRESH_SECS, MAX_GRANT_MINUTES, MAX_LINKS_PER_GRANT, MAX_PER_INSTANCE_PER_MINUTE,
    MAX_PER_USER_PER_MINUTE, MAX_REFUSALS_PER_USER_PER_MINUTE, MIN_CATALOG_REFRESH_SECS,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawGrants {
    minutes: u32,
    links_per_grant: u32,
}

impl Default for RawGrants {
    fn default() -> Self {
        let d = GrantsConfig::default();
        Self {
            minutes: d.minutes,
            links_per_grant: d.links_per_grant,
        }
    }
}

impl RawGrants {
    pub(super) fn validate(self, p: &mut Collector) -> GrantsConfig {
        GrantsConfig {
            minutes: p
                .in_range(
                    "grants.minutes",
                    self.minutes,
                    MAX_GRANT_MINUTES,
                    "how long an Open console button keeps working, in minutes",
                )
                .get(),
            links_per_grant: p
                .in_range(
                    "grants.links_per_grant",
                    self.links_per_grant,
                    MAX_LINKS_PER_GRANT,
                    "fresh links one grant may mint; each costs one of Tencent's 30 reconnects a minute",
                )
                .get(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawCatalog {
    pub(super) enabled: bool,
    refresh_secs: u64,
}

impl Default for RawCatalog {
    fn default() -> Self {
        let d = CatalogConfig::default();
        Self {
            enabled: d.enabled,
            refresh_secs: d.refresh.as_secs(),
        }
    }
}

impl RawCatalog {
    pub(super) fn validate(self, p: &mut Collector) -> CatalogConfig {
        if !(MIN_CATALOG_REFRESH_SECS..=MAX_CATALOG_REFRESH_SECS).contains(&self.refresh_secs) {
            p.push(
                "catalog.refresh_secs",
                format!(
                    "{} is out of range: use {MIN_CATALOG_REFRESH_SECS} to {MAX_CATALOG_REFRESH_SECS} seconds (default {DEFAULT_CATALOG_REFRESH_SECS})",
                    self.refresh_secs
                ),
            );
        }
        CatalogConfig {
            enabled: self.enabled,
            refresh: Duration::from_secs(self.refresh_secs),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLimits {
    per_user_per_minute: u32,
    refusals_per_user_per_minute: u32,
    per_instance_per_minute: u32,
    api_per_second: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            per_user_per_minute: DEFAULT_PER_USER_PER_MINUTE,
            refusals_per_user_per_minute: DEFAULT_REFUSALS_PER_USER_PER_MINUTE,
            per_instance_per_minute: DEFAULT_PER_INSTANCE_PER_MINUTE,
            // As many as Tencent allows: the pacer keeps every one-second window under it.
            api_per_second: MAX_API_PER_SECOND,
        }
    }
}

impl RawLimits {
    pub(super) fn validate(self, p: &mut Collector) -> LimitsConfig {
        LimitsConfig {
            per_user_per_minute: p.in_range(
                "limits.per_user_per_minute",
                self.per_user_per_minute,
                MAX_PER_USER_PER_MINUTE,
                "requests a member may make per minute",
            ),
            refusals_per_user_per_minute: p.in_range(
                "limits.refusals_per_user_per_minute",
                self.refusals_per_user_per_minute,
                MAX_REFUSALS_PER_USER_PER_MINUTE,
                "refused requests a member may make per minute",
            ),
            per_instance_per_minute: p.in_range(
                "limits.per_instance_per_minute",
                self.per_instance_per_minute,
                MAX_PER_INSTANCE_PER_MINUTE,
                "Tencent allows at most 30 console reconnects a minute",
            ),
            api_per_second: p.in_range(
                "limits.api_per_second",
                self.api_per_second,
                MAX_API_PER_SECOND,
                "Tencent allows at most 10 DescribeInstanceVncUrl calls a second per account",
            ),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAudit {
    path: PathBuf,
    require_reason: bool,
    anchor_minutes: u32,
    on_anchor_mismatch: OnAnchorMismatch,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            path: PathBuf::from(DEFAULT_AUDIT_PATH),
            require_reason: false,
            anchor_minutes: DEFAULT_ANCHOR_MINUTES,
            on_anchor_mismatch: OnAnchorMismatch::default(),
        }
    }
}

impl RawAudit {
    pub(super) fn validate(self, p: &mut Collector) -> AuditConfig {
        if self.path.as_os_str().is_empty() {
            p.push(
                "audit.path",
                format!("is empty: give a file path such as {DEFAULT_AUDIT_PATH:?}"),
            );
        }
        if self.path.is_dir() {
            p.push(
                "audit.path",
                format!(
                    "{} is a directory: give a file path inside it",
                    self.path.display()
                ),
            );
        }
        let anchor_minutes = p
            .in_range(
                "audit.anchor_minutes",
                self.anchor_minutes,
                MAX_ANCHOR_MINUTES,
                "minutes between posts of the journal head to the audit channel",
            )
            .get();
        AuditConfig {
            path: self.path,
            require_reason: self.require_reason,
            anchor_minutes,
            on_anchor_mismatch: self.on_anchor_mismatch,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: String,
}

impl RawAdmin {
    pub(super) fn validate(self, p: &mut Collector) -> Option<AdminConfig> {
        match self.listen.parse::<SocketAddr>() {
            Ok(listen) => Some(AdminConfig { listen }),
            Err(_) => {
                p.push(
                    "admin.listen",
                    format!(
                        "{:?} is not an IP:PORT address (for example \"127.0.0.1:9187\")",
                        self.listen
                    ),
                );
                None
            }
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    format: LogFormat,
}

impl RawLog {
    pub(super) fn validate(self) -> LogConfig {
        LogConfig {
            format: self.format,
        }
    }
}
