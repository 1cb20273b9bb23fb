//! Test-only fixtures: configs, temp dirs, the bot as a process. The stand-ins for Discord and
//! Tencent Cloud, and the member's moves against them, live in the `vncbot-sandbox` crate, shared
//! with `vncbot demo`.
#![allow(dead_code, unused_imports)]

pub mod moto;
pub mod tencent;

pub use vncbot_sandbox::{fake_discord, http, mock_cvm};
pub use vncbot_sandbox::{GUILD, ONCALL_ROLE, OTHER_GUILD, WEB_ROLE};

use std::path::{Path, PathBuf};

/// A throwaway directory, removed on drop (`tempfile`), with a tag in its name.
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        Self(
            tempfile::Builder::new()
                .prefix(&format!("vncbot-{tag}-"))
                .tempdir()
                .unwrap(),
        )
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.0.path().join(p)
    }
}

/// A config pointing at the given Tencent endpoint (and Discord fakes, when given), with the
/// journal inside `dir`.
pub fn config_text(dir: &TempDir, cvm_endpoint: &str, extra: &str) -> String {
    format!(
        r#"
[discord]
guild_ids = [{GUILD}]
{extra_discord}

[tencent]
regions = ["ap-guangzhou", "ap-shanghai-fsi"]
endpoint = "{cvm_endpoint}"
timeout_secs = 2

[[allow]]
roles = [{ONCALL_ROLE}]
instances = ["*"]
regions = ["*"]

[[allow]]
roles = ["{WEB_ROLE}"]
instances = ["ins-web*"]
regions = ["ap-guangzhou"]

[limits]
per_user_per_minute = 3
per_instance_per_minute = 10
api_per_second = 10

[audit]
path = "{audit}"
"#,
        extra_discord = extra,
        audit = dir.join("audit/vncbot-audit.jsonl").display()
    )
}

pub fn write_config(dir: &TempDir, text: &str) -> PathBuf {
    let p = dir.join("vncbot.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// `vncbot run --config CFG` with the fakes' secrets in a clean environment; callers choose the
/// output handling and `RUST_LOG`.
pub fn bot_command(bin: &Path, cfg: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(bin);
    c.args(["run", "--config"])
        .arg(cfg)
        .env_clear()
        .env("DISCORD_TOKEN", fake_discord::TOKEN)
        .env("TENCENTCLOUD_SECRET_ID", mock_cvm::SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", mock_cvm::SECRET_KEY)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .kill_on_drop(true);
    c
}

/// The fake Discord, the mock Tencent endpoint, a temp dir, and a config text pointing at them.
pub struct Fakes {
    pub discord: fake_discord::FakeDiscord,
    pub cvm: mock_cvm::MockCvm,
    pub dir: TempDir,
    pub config: String,
    /// The clock an in-process bot runs on: tests move it instead of waiting out a window.
    pub clock: vncbot::clock::Clock,
}

impl Fakes {
    pub async fn start(tag: &str) -> Self {
        let discord = fake_discord::FakeDiscord::start().await;
        let cvm = mock_cvm::MockCvm::start().await;
        let dir = TempDir::new(tag);
        let config = config_text(&dir, &cvm.endpoint(), &discord.config_lines());
        Self {
            discord,
            cvm,
            dir,
            config,
            clock: vncbot::clock::Clock::adjustable(),
        }
    }

    pub fn write_config(&self, text: &str) -> PathBuf {
        write_config(&self.dir, text)
    }

    pub fn journal(&self) -> PathBuf {
        self.dir.join("audit/vncbot-audit.jsonl")
    }
}
