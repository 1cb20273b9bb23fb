//! vncbot: audited on-call access to Tencent Cloud CVM consoles from Discord.
//!
//! The flow of one request: [`config`] → [`app`] (the process) → the Discord adapter
//! ([`discord`]) or the `url` command → [`core`] (transport-free) → [`access`], [`limits`],
//! [`audit`], [`tencent`]. Settings go the other way: each lower module defines its own
//! (`limits::LimitsConfig`, `tencent::TencentConfig`), and [`config`] fills them from the file.
//! At the bottom, [`ids`] and [`text`] (untrusted text made safe to show).

pub mod access;
pub mod app;
pub mod audit;
pub mod clock;
pub mod config;
pub mod core;
pub mod discord;
mod flock;
pub mod ids;
pub mod limits;
pub mod link;
pub mod metrics;
pub mod oncall;
pub mod ship;
pub mod suggest;
pub mod tencent;
pub mod text;

/// Where dependencies' logs stop, whatever `RUST_LOG` says. Below INFO, serenity records each
/// HTTP request's Debug form (the DM body with a console link, as a byte array) and routes with
/// interaction tokens, and the gateway's payloads carry interaction tokens; the HTTP stacks can
/// dump headers. A user's filter can raise or lower vncbot's own level, never these.
pub const DEPENDENCY_LOG_CAP: tracing::Level = tracing::Level::INFO;

/// The filter every log line passes: `RUST_LOG` (or `default_level`), capped for dependencies.
pub fn log_filter(
    default_level: &str,
) -> impl tracing_subscriber::layer::Filter<tracing_subscriber::Registry> + Send + Sync {
    use tracing_subscriber::filter::{FilterExt, LevelFilter, Targets};
    let env = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let cap = Targets::new()
        .with_default(DEPENDENCY_LOG_CAP)
        // serenity warns with routes that hold interaction tokens ("Mismatched successful
        // response status from {route}") and with whole gateway payloads it cannot parse.
        .with_target("serenity", tracing::Level::ERROR)
        .with_target(env!("CARGO_CRATE_NAME"), LevelFilter::TRACE);
    env.and(cap)
}

/// Logs go to stderr; stdout is reserved for the link (`url`) and reports. `RUST_LOG` overrides
/// `default_level` for vncbot's own logs (see [`DEPENDENCY_LOG_CAP`] for the others).
pub fn init_logging(default_level: &str, format: config::LogFormat) {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let ansi = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let layer = match format {
        config::LogFormat::Pretty => layer.boxed(),
        config::LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(log_filter(default_level)))
        .try_init();
}

/// Colour only for a person at a terminal: never in a file, a pipe or journald (which would
/// store the escape codes), and never when `NO_COLOR` is set to anything (<https://no-color.org>).
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(super::colour(true, None));
        assert!(super::colour(true, Some(OsStr::new(""))));
        assert!(!super::colour(true, Some(OsStr::new("1"))));
        assert!(!super::colour(false, None));
        assert!(!super::colour(false, Some(OsStr::new("1"))));
    }
}
