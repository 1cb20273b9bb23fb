//! The stand-ins for Discord and Tencent Cloud that `vncbot demo` and the integration tests
//! share. They listen on loopback only and check what the real services check: the mock Tencent
//! endpoint recomputes each TC3 signature from the headers it received (and rejects a skewed
//! timestamp, a wrong Host, a changed body, an unknown key, a wrong service), and the fake
//! Discord speaks the gateway and REST protocols the real serenity client uses, so neither the
//! demo nor a test can pass with a broken client.
//!
//! A crate of its own so that deploy builds (`vncbot --no-default-features`) carry none of this
//! code: vncbot depends on it for its tests and examples, and for `vncbot demo` behind the
//! default `demo` feature. It depends on nothing of vncbot's, so it checks the wire as written
//! from the services' documentation, not as vncbot's code sees it. What a member does and sees
//! (a `/vnc`, its reply, its grant's DM, a press) is here too, in `fake_discord`, so the demo and
//! the tests script members the same way; test-only fixtures (configs, the bot as a process)
//! stay in vncbot's `tests/support`.

pub mod fake_discord;
pub mod http;
pub mod mock_cvm;
pub mod pagerduty;

/// The stand-ins' server, roles and channels (Discord snowflakes).
pub const GUILD: u64 = 800000000000000001;
pub const OTHER_GUILD: u64 = 800000000000000099;
pub const ONCALL_ROLE: u64 = 555000000000000001;
pub const WEB_ROLE: u64 = 555000000000000002;
