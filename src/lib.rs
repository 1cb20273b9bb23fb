//! vncbot: audited on-call access to Tencent Cloud CVM consoles from Discord.
//!
//! The flow of one request: [`config`] → the Discord adapter ([`discord`]) or the `url` command →
//! [`grant`] (the transport-free core) → [`access`], [`limits`], [`audit`], [`tencent`].

pub mod access;
pub mod admin;
pub mod audit;
pub mod config;
pub mod discord;
pub mod grant;
pub mod ids;
pub mod limits;
pub mod link;
pub mod metrics;
pub mod tencent;

/// Logs go to stderr; stdout is reserved for the link (`url`) and reports. `RUST_LOG` overrides
/// `default_level`.
pub fn init_logging(default_level: &str, format: config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        config::LogFormat::Pretty => builder.try_init(),
        config::LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
