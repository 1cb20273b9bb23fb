//! Limits across processes: every `vncbot url` run builds a fresh core, yet the member's limit
//! and Tencent's 10 calls a second hold across them, because the counters live beside the
//! journal (`<journal>.limits`). Real processes, the real binary, the mock Tencent.

mod support;

use std::path::Path;
use std::process::{Output, Stdio};

use support::fake_discord::vnc;
use support::mock_cvm::{self, MockCvm};
use support::{config_text, write_config, Fakes, TempDir, ONCALL_ROLE};
use tokio::process::{Child, Command};

fn url(cfg: &std::path::Path, instance: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vncbot"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("USER", "tester")
        .env("RUST_LOG", "vncbot=warn")
        .env("TENCENTCLOUD_SECRET_ID", mock_cvm::SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", mock_cvm::SECRET_KEY)
        .args(["url", instance, "--reason", "INC-1234 limits", "--config"])
        .arg(cfg);
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn sequential_runs_share_the_members_limit() {
    let mock = MockCvm::start().await;
    let dir = TempDir::new("limits-seq");
    // per_user_per_minute = 3 (and 10 per instance): the fourth run within the minute is refused.
    let cfg = write_config(&dir, &config_text(&dir, &mock.endpoint(), ""));
    let mut exits = Vec::new();
    for run in 0..15 {
        let out = url(&cfg, "ins-running1").output().await.unwrap();
        let said = stderr(&out);
        exits.push(out.status.code());
        if run >= 3 {
            assert!(
                said.contains("too often") || said.contains("Too many of your requests"),
                "run {run}: {said}"
            );
        }
    }
    let mut expected = vec![Some(0); 3];
    expected.extend([Some(4); 12]);
    assert_eq!(exits, expected, "three links, then limited refusals");
    assert_eq!(mock.issued().len(), 3, "Tencent was asked three times");
    let limits = dir.join("audit/vncbot-audit.jsonl.limits");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&limits).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn concurrent_runs_keep_tencents_pace_together() {
    let mock = MockCvm::start().await;
    let dir = TempDir::new("limits-pace");
    let text = config_text(&dir, &mock.endpoint(), "")
        .replace("per_user_per_minute = 3", "per_user_per_minute = 60")
        .replace(
            "per_instance_per_minute = 10",
            "per_instance_per_minute = 30",
        );
    let cfg = write_config(&dir, &text);
    let instances = MockCvm::many("ap-guangzhou", 24);
    for i in &instances {
        mock.put_instance(i.clone());
    }
    let runs: Vec<_> = instances
        .iter()
        .map(|i| {
            let mut c = url(&cfg, &i.id);
            tokio::spawn(async move { c.output().await.unwrap() })
        })
        .collect();
    let mut links = 0;
    for r in runs {
        let out = r.await.unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        links += 1;
    }
    assert_eq!(links, 24);
    eprintln!(
        "{}",
        std::fs::read_to_string(dir.join("audit/vncbot-audit.jsonl.limits")).unwrap()
    );
    let limited = mock
        .seen()
        .iter()
        .filter(|s| s.verdict == "RequestLimitExceeded")
        .count();
    assert_eq!(limited, 0, "Tencent said RequestLimitExceeded");
    assert!(mock.max_per_second() <= 10, "{}", mock.max_per_second());
    assert_eq!(mock.issued().len(), 24);
}

fn spawn_bot(cfg: &Path) -> Child {
    support::bot_command(Path::new(env!("CARGO_BIN_EXE_vncbot")), cfg)
        .env("RUST_LOG", "vncbot=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn stop(mut bot: Child) {
    let pid = bot.id().expect("still running") as libc::pid_t;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    assert_eq!(bot.wait().await.unwrap().code(), Some(0));
}

/// Issue 17's admin-port flood restarted the pod, and a restart wiped the limits: a member who
/// had used up their budget got a fresh one. The budget lives beside the journal now.
#[tokio::test]
async fn a_restart_keeps_a_members_spent_budget() {
    let f = Fakes::start("limits-restart").await;
    let discord = &f.discord;
    let cfg = f.write_config(&f.config);
    let bot = spawn_bot(&cfg);
    discord.wait_ready().await;
    // per_user_per_minute = 3: three grants use it up.
    for i in 0..3 {
        let id = format!("ins-load{i:04}");
        discord
            .grant(vnc(601, vec![ONCALL_ROLE], vec![("instance", &id)]))
            .await;
    }
    stop(bot).await;
    let _bot = spawn_bot(&cfg);
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while discord.calls().iter().filter(|c| c.method == "PUT").count() < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the bot restarts and registers /vnc again");
    let fourth = discord.invoke(vnc(
        601,
        vec![ONCALL_ROLE],
        vec![("instance", "ins-load0003")],
    ));
    let text = discord.reply(&fourth).await.content();
    assert!(
        text.contains("too often") && text.contains("Try again in"),
        "{text}"
    );
    // Another member's budget is untouched.
    discord
        .grant(vnc(
            602,
            vec![ONCALL_ROLE],
            vec![("instance", "ins-load0003")],
        ))
        .await;
}
