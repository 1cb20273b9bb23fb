//! vncbot: audited on-call access to Tencent Cloud CVM consoles from Discord.
//!
//! The flow of one request: [`config`] → the Discord adapter ([`discord`]) or the `url` command →
//! [`grant`] (the transport-free core) → [`access`], [`limits`], [`audit`], [`tencent`].

pub mod access;
pub mod audit;
pub mod config;
pub mod discord;
pub mod grant;
pub mod ids;
pub mod limits;
pub mod link;
pub mod tencent;
