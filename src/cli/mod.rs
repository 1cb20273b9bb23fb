//! One file per command, and what they share: exit codes and logging.

pub mod audit_query;
pub mod audit_report;
pub mod audit_verify;
pub mod check_config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod instances;
mod refusals;
pub mod run;
pub mod url;

/// Exit codes, documented in the README (derived from outcomes in the core).
pub use vncbot::core::Exit;
pub use vncbot::init_logging;
