//! The stand-ins for Discord and Tencent Cloud that `vncbot demo` and the integration tests
//! share. They listen on loopback only and check what the real services check: the mock Tencent
//! endpoint recomputes each TC3 signature from the headers it received (and rejects a skewed
//! timestamp, a wrong Host, a changed body, an unknown key, a wrong service), and the fake
//! Discord speaks the gateway and REST protocols the real serenity client uses, so neither the
//! demo nor a test can pass with a broken client. Test-only helpers stay in `tests/support`.

pub mod fake_discord;
pub mod http;
pub mod mock_cvm;

/// The stand-ins' server, roles and channels (Discord snowflakes).
pub const GUILD: u64 = 800000000000000001;
pub const OTHER_GUILD: u64 = 800000000000000099;
pub const ONCALL_ROLE: u64 = 555000000000000001;
pub const WEB_ROLE: u64 = 555000000000000002;
