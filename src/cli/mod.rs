//! One file per command, and what they share: exit codes and logging.

pub mod audit_verify;
pub mod check_config;
pub mod run;
pub mod url;

/// Exit codes, documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// Tencent refused (not found, instance state, busy), or the audit chain is damaged.
    Refused = 1,
    /// Bad input: usage, instance ID, region, reason (clap also uses 2).
    BadInput = 2,
    /// The config, the environment or the credentials are wrong: an admin must act.
    Config = 3,
    /// Denied or rate limited by our own policy.
    Denied = 4,
    /// A temporary failure (network, Tencent busy): try again.
    Temporary = 5,
    /// The audit journal cannot be written: fail closed.
    Audit = 6,
}

pub use vncbot::init_logging;
