//! The audit journal: one JSON object a line, hash-chained, fsynced before the bot acts.
//!
//! Each record carries `prev` (the previous record's hash) and `hash` (SHA-256 of the record's own
//! line without its `hash` field), so editing, deleting, inserting or reordering lines breaks the
//! chain at the first changed record. Appends are serialised within a process by one writer and
//! across processes on one host by an advisory lock on the file, and each writer continues from
//! the record actually at the end of the file, so concurrent requests can neither interleave bytes
//! nor fork the chain. The console link is never a field.
//!
//! [`record`] is what a line holds, [`writer`] queues appends for one committer thread, [`append`]
//! writes a batch under the [`lock`], [`status`] is what health checks read, [`follow`] hands out
//! every record as it joins the chain, [`verify`] walks the chain.

mod append;
mod follow;
mod lock;
mod record;
mod status;
mod verify;
mod writer;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use append::Repair;
pub use follow::{Follower, Missed};
pub use record::{format_time, read_records, Entry, Record};
pub use verify::{verify_bytes, verify_file, verify_file_anchored, Problem, Summary, VerifyError};
pub use writer::Journal;

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Event {
    /// Allowed and about to call Tencent (written before the call).
    Requested,
    /// Refused by the allowlist.
    Denied,
    /// Refused as malformed (bad ID, region, reason, guild).
    Invalid,
    /// Refused by a per-member or per-instance limit.
    Limited,
    /// A member may open the console until `until` (written before they are told).
    Granted,
    /// Tencent returned a URL (the URL itself is never recorded).
    Issued,
    /// Tencent or the network failed.
    Failed,
    /// The link reached the member's DMs.
    Delivered,
    /// The DM could not be sent; the link was discarded.
    DmFailed,
    /// A grant ended: its holder was done, or its window closed.
    Ended,
    /// A torn last line (a crash mid-write) was found and sealed.
    Sealed,
    /// A live grant was rebuilt from the journal at start, and is honoured until `until`
    /// (capped by the window in force).
    Resumed,
    /// A reload (SIGHUP) put a new config in force: its `config_digest` and the keys `changed`.
    ConfigReloaded,
    /// A request for access waits for approvers (`until`: when it expires; `count`: the
    /// approvals it needs).
    ApprovalRequested,
    /// An approver voted on a request (`code`: approve or deny).
    ApprovalVote,
    /// A request got its approvals (`code`: the approvers' IDs); its `granted` follows.
    Approved,
    /// An approver denied a request.
    RequestDenied,
    /// A request expired undecided.
    Expired,
    /// The requester cancelled their request.
    Cancelled,
    /// A member used break-glass: access at once, without approval, for a short window
    /// (`until`; `count`: their uses in the last 24 hours, this one included); its `granted`
    /// follows, referring to it.
    BreakGlass,
    /// An approver acknowledged a break-glass use (`refers_to` it).
    Acknowledged,
    /// An approver flagged a break-glass use as not justified (`refers_to` it).
    Flagged,
    /// A break-glass use went `ack_hours` without an acknowledgement or a flag; re-posted.
    AckOverdue,
    /// Someone gave a member a role the config names (from the server's audit log, action 25):
    /// `actor` who, `target` whom, `role`, `reason`, `audit_log_entry`.
    RoleGranted,
    /// Someone took a role the config names from a member (action 25, `$remove`).
    RoleRevoked,
    /// A role the config names was changed (action 31): `changed` holds the keys (`name`,
    /// `permissions`, …).
    RoleUpdated,
    /// A role the config names was deleted (action 32).
    RoleDeleted,
    /// The permissions of one of the bot's commands changed in a server (`command`, and the
    /// overwrites now in force in `permissions`). Discord does not say who.
    CommandPermissionsChanged,
    /// A grant's window was extended (`refers_to`: the grant; `until`: the new end;
    /// `previous_until`: the end it replaced). Once per grant.
    Extended,
}

/// Who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Discord { id: u64, name: String },
    Local { user: String },
}

impl Actor {
    /// The key for per-member limits.
    pub fn key(&self) -> String {
        match self {
            Actor::Discord { id, .. } => format!("discord:{id}"),
            Actor::Local { user } => format!("local:{user}"),
        }
    }

    /// The person running this process, for `vncbot url`: the real uid, and the kernel's login
    /// uid, which survives `su` and `sudo` and which the user cannot set. `SUDO_USER` and `USER`
    /// are recorded as what they claim, since anyone can set them.
    pub fn local() -> Self {
        let loginuid = std::fs::read_to_string("/proc/self/loginuid")
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let env = |name| std::env::var(name).ok();
        Actor::Local {
            user: local_name(
                rustix::process::getuid().as_raw(),
                loginuid,
                env("SUDO_USER").as_deref(),
                env("USER").or_else(|| env("LOGNAME")).as_deref(),
            ),
        }
    }
}

/// `uid 0 (loginuid 1000, sudo by alice, USER=root)`. A login uid of `u32::MAX` means unset (a
/// process not started from a login, such as a service).
fn local_name(
    uid: u32,
    loginuid: Option<u32>,
    sudo_user: Option<&str>,
    user: Option<&str>,
) -> String {
    // Environment text is the user's to choose: bounded, and no control characters in the journal.
    let clean = |s: &str| -> String {
        s.chars()
            .take(64)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect()
    };
    let mut notes = Vec::new();
    if let Some(l) = loginuid.filter(|&l| l != u32::MAX) {
        notes.push(format!("loginuid {l}"));
    }
    if let Some(s) = sudo_user.filter(|s| !s.is_empty()) {
        notes.push(format!("sudo by {}", clean(s)));
    }
    if let Some(u) = user.filter(|u| !u.is_empty()) {
        notes.push(format!("USER={}", clean(u)));
    }
    if notes.is_empty() {
        format!("uid {uid}")
    } else {
        format!("uid {uid} ({})", notes.join(", "))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit journal {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    /// Opening follows no link: a link planted at the path could point the bot's writes (and its
    /// chmod to 0600) at any file it can reach.
    #[error("the audit journal {path} is a symbolic link, and the bot opens only a regular file there (it changed nothing the link points to). Set `[audit] path` to the file itself, or replace the link with the file")]
    Symlink { path: PathBuf },
    #[error("cannot read the audit journal {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("the audit journal {path} is damaged: {problem}. Run `vncbot audit verify` and move the file aside once it has been examined")]
    Damaged { path: PathBuf, problem: VerifyError },
    #[error("the audit journal {path} shrank from {expected} to {found} bytes while the bot was running: records were removed")]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("cannot write to the audit journal {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("the audit journal {path} was moved, deleted or replaced while the bot was running")]
    Replaced { path: PathBuf },
    /// Another process kept the journal locked past the bound (a stopped `vncbot url`, or
    /// `flock` run by hand): nothing was written, and the next batch tries again.
    #[error("the audit journal {path} stayed locked by another process for {} s; nothing was written", waited.as_secs())]
    Locked { path: PathBuf, waited: Duration },
    #[error(
        "an earlier write to the audit journal failed and could not be undone; restart the bot"
    )]
    Poisoned,
    /// The limits file beside the journal (shared by every process on it) cannot be used: the
    /// request is refused, as one that cannot be recorded is.
    #[error(transparent)]
    Limits(std::sync::Arc<crate::limits::StateError>),
}

impl From<crate::limits::StateError> for AuditError {
    fn from(e: crate::limits::StateError) -> Self {
        Self::Limits(std::sync::Arc::new(e))
    }
}

impl AuditError {
    /// `io::Error` is not `Clone`; each caller of a failed batch gets an equivalent error.
    fn clone_for_batch(&self, message: &str) -> Self {
        let io = |source: &io::Error| io::Error::new(source.kind(), message.to_owned());
        match self {
            AuditError::Open { path, source } => AuditError::Open {
                path: path.clone(),
                source: io(source),
            },
            AuditError::Read { path, source } => AuditError::Read {
                path: path.clone(),
                source: io(source),
            },
            AuditError::Write { path, source } => AuditError::Write {
                path: path.clone(),
                source: io(source),
            },
            AuditError::Damaged { path, problem } => AuditError::Damaged {
                path: path.clone(),
                problem: problem.clone(),
            },
            AuditError::Truncated {
                path,
                expected,
                found,
            } => AuditError::Truncated {
                path: path.clone(),
                expected: *expected,
                found: *found,
            },
            AuditError::Replaced { path } => AuditError::Replaced { path: path.clone() },
            AuditError::Symlink { path } => AuditError::Symlink { path: path.clone() },
            AuditError::Locked { path, waited } => AuditError::Locked {
                path: path.clone(),
                waited: *waited,
            },
            AuditError::Poisoned => AuditError::Poisoned,
            AuditError::Limits(e) => AuditError::Limits(std::sync::Arc::clone(e)),
        }
    }
}

/// Where a record landed in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn alice() -> Actor {
        Actor::Discord {
            id: 42,
            name: "alice".into(),
        }
    }

    /// A journal of `n` records in a fresh directory, and its bytes.
    pub(crate) fn journal_with(n: usize) -> (tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (j, repair) = Journal::open(&path).unwrap();
        assert!(repair.is_none());
        for i in 0..n {
            j.append_blocking(
                Event::Requested,
                &alice(),
                Entry {
                    instance: Some("ins-a1b2c3d4".into()),
                    region: Some("ap-guangzhou".into()),
                    reason: Some(
                        if i % 2 == 0 {
                            "incident \"42\"\n"
                        } else {
                            "deploy"
                        }
                        .into(),
                    ),
                    ..Entry::default()
                },
            )
            .unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        (dir, bytes)
    }

    #[test]
    fn the_local_actor_names_the_real_uid_the_login_uid_and_what_the_environment_claims() {
        assert_eq!(
            local_name(0, Some(1000), Some("alice"), Some("root")),
            "uid 0 (loginuid 1000, sudo by alice, USER=root)"
        );
        assert_eq!(
            local_name(1000, Some(1000), None, Some("alice")),
            "uid 1000 (loginuid 1000, USER=alice)"
        );
        // No login session (a service), nothing claimed.
        assert_eq!(local_name(65532, Some(u32::MAX), None, None), "uid 65532");
        assert_eq!(local_name(7, None, Some(""), Some("")), "uid 7");
        // Claims are bounded and kept on one line.
        let long = "x".repeat(100);
        let name = local_name(7, None, None, Some(&format!("eve\n{long}")));
        assert_eq!(name, format!("uid 7 (USER=eve?{})", "x".repeat(60)));
        // The real process: at least its uid.
        let Actor::Local { user } = Actor::local() else {
            unreachable!()
        };
        assert!(
            user.starts_with(&format!("uid {}", rustix::process::getuid().as_raw())),
            "{user}"
        );
    }
}
