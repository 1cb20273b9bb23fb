//! The `vncbot` binary: `url`, `check-config` and `audit verify`, run as a user would.

mod support;

use std::process::Output;

use support::mock_cvm::{self, MockCvm, Scripted};
use support::{config_text, write_config, TempDir};
use tokio::process::Command;
use vncbot::link::CONSOLE_PAGE;

fn vncbot() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vncbot"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("USER", "tester")
        .env("RUST_LOG", "vncbot=debug");
    c
}

fn with_secrets(mut c: Command) -> Command {
    c.env("TENCENTCLOUD_SECRET_ID", mock_cvm::SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", mock_cvm::SECRET_KEY)
        .env("DISCORD_TOKEN", "discord-token-for-tests");
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn url(cfg: &std::path::Path, args: &[&str]) -> Output {
    with_secrets(vncbot())
        .arg("url")
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn url_prints_the_link_alone_and_audits_it() {
    let mock = MockCvm::start().await;
    let dir = TempDir::new("cli");
    let cfg = write_config(&dir, &config_text(&dir, &mock.endpoint(), ""));
    let out = url(&cfg, &["ins-running1", "--reason", "INC-1234 disk full"]).await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let issued = mock.issued();
    assert_eq!(stdout, format!("{CONSOLE_PAGE}{}\n", issued[0]));
    assert!(
        stderr.contains("works once, until") && stderr.contains("UTC"),
        "{stderr}"
    );
    assert!(stderr.contains(&mock.seen()[0].request_id), "{stderr}");
    assert!(
        !stderr.contains("bjvnc"),
        "the link never reaches stderr: {stderr}"
    );

    let journal = std::fs::read_to_string(dir.join("audit/vncbot-audit.jsonl")).unwrap();
    let events: Vec<String> = journal
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(events, ["requested", "issued", "delivered"]);
    assert!(journal.contains("INC-1234 disk full") && journal.contains("tester"));
    assert!(journal.contains(&mock.seen()[0].request_id));
    assert!(!journal.contains(&issued[0]) && !journal.contains("bjvnc"));

    let verify = vncbot()
        .args(["audit", "verify", "--config"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify.stderr));
    assert!(text(&verify.stdout).contains("intact, 3 records"));
}

#[tokio::test]
async fn bad_input_gets_one_clear_line_and_no_request() {
    let mock = MockCvm::start().await;
    let dir = TempDir::new("cli-bad");
    let cfg = write_config(&dir, &config_text(&dir, &mock.endpoint(), ""));
    let huge = "i".repeat(10_000);
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("short", vec!["ins-1122"], "12, like ins-a1b2c3d4"),
        (
            "upper",
            vec!["INS-RUNNING1"],
            "lower case, try ins-running1",
        ),
        ("space", vec!["ins-run ing1"], "cannot be in an instance ID"),
        ("huge", vec![&huge], "10000 characters long"),
        (
            "unicode",
            vec!["ins-rünning1"],
            "cannot be in an instance ID",
        ),
        ("prefix", vec!["vm-running12"], "does not start with `ins-`"),
        (
            "region",
            vec!["ins-running1", "--region", "ap-mars"],
            "not a Tencent Cloud region this bot knows",
        ),
        (
            "served",
            vec!["ins-running1", "--region", "ap-tokyo"],
            "not one of this bot's regions",
        ),
        (
            "reason",
            vec!["ins-running1", "--reason", &huge],
            "reason is too long",
        ),
    ];
    for (name, args, expect) in cases {
        let out = url(&cfg, &args).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(expect), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}");
        assert!(stderr.len() < 2000, "{name}: the error stays short");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
    assert!(mock.seen().is_empty(), "no request reached Tencent");
    // Invalid requests are audited too.
    let journal = std::fs::read_to_string(dir.join("audit/vncbot-audit.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), 9);
    assert!(journal.lines().all(|l| l.contains(r#""event":"invalid""#)));
}

#[tokio::test]
async fn tencent_refusals_map_to_messages_and_exit_codes() {
    let mock = MockCvm::start().await;
    let dir = TempDir::new("cli-tc");
    let cfg = write_config(&dir, &config_text(&dir, &mock.endpoint(), ""));
    let out = url(&cfg, &["ins-nothere1"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("There is no instance ins-nothere1 in ap-guangzhou"));
    let out = url(&cfg, &["ins-stopped1"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("does not allow a console"));
    mock.script([Scripted::Status(503); 3]);
    let out = url(&cfg, &["ins-running1"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("could not be reached"));

    let bad_key = vncbot()
        .env("TENCENTCLOUD_SECRET_ID", mock_cvm::SECRET_ID)
        .env(
            "TENCENTCLOUD_SECRET_KEY",
            "wrongwrongwrongwrongwrongwrong00",
        )
        .args(["url", "ins-running1", "--config"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    let stderr = text(&bad_key.stderr);
    assert_eq!(bad_key.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("misconfigured"), "{stderr}");
    assert!(!stderr.contains("wrongwrongwrong"), "{stderr}");
}

#[tokio::test]
async fn missing_secrets_and_bad_configs_are_named() {
    let mock = MockCvm::start().await;
    let dir = TempDir::new("cli-env");
    let cfg = write_config(&dir, &config_text(&dir, &mock.endpoint(), ""));
    let out = vncbot()
        .args(["url", "ins-running1", "--config"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("TENCENTCLOUD_SECRET_ID is not set"));
    let out = vncbot()
        .env("TENCENTCLOUD_SECRET_ID", mock_cvm::SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", "")
        .args(["url", "ins-running1", "--config"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("TENCENTCLOUD_SECRET_KEY is set but empty"));

    let missing = url(&dir.join("nope.toml"), &["ins-running1"]).await;
    assert_eq!(missing.status.code(), Some(3));
    assert!(text(&missing.stderr).contains("cannot read the config file"));
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, "[discord\nguild_ids = [").unwrap();
    let out = url(&broken, &["ins-running1"]).await;
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("is not valid"));
    assert!(mock.seen().is_empty());
}

#[tokio::test]
async fn a_refused_endpoint_is_a_temporary_failure() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let dir = TempDir::new("cli-refused");
    let cfg = write_config(&dir, &config_text(&dir, &format!("http://{addr}"), ""));
    let out = url(&cfg, &["ins-running1"]).await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("could not be reached"), "{stderr}");
    assert!(!stderr.contains("panicked"));
}

#[tokio::test]
async fn check_config_prints_the_policy_and_fails_on_problems() {
    let mock = MockCvm::start().await;
    let dir = TempDir::new("cli-check");
    let cfg = write_config(&dir, &config_text(&dir, &mock.endpoint(), ""));
    let out = with_secrets(vncbot())
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for expect in [
        "region ap-guangzhou (default)",
        "region ap-shanghai-fsi",
        "[1] roles 555000000000000002 may open ins-web* in ap-guangzhou",
        "3 per member per minute",
        "Tencent calls at most 10 in any 1100 ms",
        "will be created on first start",
        "OK:",
    ] {
        assert!(stdout.contains(expect), "missing {expect:?} in\n{stdout}");
    }
    assert!(!stdout.contains(mock_cvm::SECRET_KEY) && !stdout.contains("discord-token-for-tests"));
    assert!(!dir.join("audit").exists(), "check-config creates nothing");

    let out = vncbot()
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("TENCENTCLOUD_SECRET_ID is not set"));
    assert!(text(&out.stderr).contains("DISCORD_TOKEN is not set"));

    let bad = write_config(
        &dir,
        &config_text(&dir, &mock.endpoint(), "")
            .replace("\"ins-web*\"", "\"web*\"")
            .replace("per_user_per_minute = 3", "per_user_per_minute = 0"),
    );
    let out = with_secrets(vncbot())
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr.contains("allow[1].instances[0]") && stderr.contains("limits.per_user_per_minute"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_shipped_example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/vncbot.example.toml");
    let out = with_secrets(vncbot())
        .args(["check-config", "--config", path])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[tokio::test]
async fn audit_verify_names_the_first_bad_record() {
    let mock = MockCvm::start().await;
    let dir = TempDir::new("cli-verify");
    let cfg = write_config(&dir, &config_text(&dir, &mock.endpoint(), ""));
    assert_eq!(url(&cfg, &["ins-running1"]).await.status.code(), Some(0));
    let path = dir.join("audit/vncbot-audit.jsonl");
    let journal = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, journal.replacen("ins-running1", "ins-running2", 2)).unwrap();
    let out = vncbot()
        .args(["audit", "verify"])
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("line 1: record seq 1 was edited"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn audit_verify_checks_an_anchored_head() {
    let mock = MockCvm::start().await;
    let dir = TempDir::new("cli-head");
    let cfg = write_config(&dir, &config_text(&dir, &mock.endpoint(), ""));
    assert_eq!(url(&cfg, &["ins-running1"]).await.status.code(), Some(0));
    let path = dir.join("audit/vncbot-audit.jsonl");
    let verify = |args: Vec<String>| {
        let mut c = vncbot();
        c.args(["audit", "verify"]).args(args).arg(&path);
        async move { c.output().await.unwrap() }
    };
    let out = verify(vec![]).await;
    let stdout = text(&out.stdout);
    let hash = stdout
        .rsplit("head hash ")
        .next()
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(hash.len(), 64, "{stdout}");
    let head = format!("3:{hash}");

    let out = verify(vec!["--head".into(), head.clone()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("holds the anchored head seq 3"),
        "{}",
        text(&out.stdout)
    );

    // The last record cut off: the chain alone is intact, the anchor shows the loss.
    let journal = std::fs::read_to_string(&path).unwrap();
    let kept: String = journal.split_inclusive('\n').take(2).collect();
    std::fs::write(&path, &kept).unwrap();
    assert_eq!(verify(vec![]).await.status.code(), Some(0));
    let out = verify(vec!["--head".into(), head]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(
            "DAMAGED at line 3: the journal ends at seq 2, before the anchored head seq 3"
        ),
        "{}",
        text(&out.stderr)
    );

    // The same seq with another hash: rewritten.
    let out = verify(vec!["--head".into(), format!("2:{hash}")]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("line 2: record seq 2 is not the anchored head"),
        "{}",
        text(&out.stderr)
    );

    // A malformed head is a usage error that says what is expected.
    for bad in ["3", "x:abc", &format!("3:{}", &hash[..10])] {
        let out = verify(vec!["--head".into(), bad.into()]).await;
        assert_eq!(out.status.code(), Some(2), "{bad}");
        assert!(
            text(&out.stderr).contains("expected SEQ:HASH"),
            "{}",
            text(&out.stderr)
        );
    }

    // A whole last record missing only its newline is named as such.
    std::fs::write(&path, kept.trim_end_matches('\n')).unwrap();
    let out = verify(vec![]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("line 2: the last line, record seq 2, is complete but has no line end"),
        "{}",
        text(&out.stderr)
    );
}

/// A stdout that cannot be written (a pipe that went away): no panic, exit 5, and the journal
/// says the link was not delivered after all.
#[tokio::test]
async fn url_with_a_closed_stdout_records_the_link_as_not_printed() {
    let mock = MockCvm::start().await;
    let dir = TempDir::new("cli-stdout");
    let cfg = write_config(&dir, &config_text(&dir, &mock.endpoint(), ""));
    // A pipe whose reading end is already closed: every write fails with EPIPE.
    let mut fds = [0; 2];
    // SAFETY: `pipe` fills both descriptors, which are then owned below.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (read_end, write_end) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read_end);
    let read_only = std::process::Stdio::from(write_end);
    let out = with_secrets(vncbot())
        .args(["url", "ins-running1", "--config"])
        .arg(&cfg)
        .stdout(read_only)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .await
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("could not print the link"), "{stderr}");
    assert!(
        !stderr.contains(&mock.issued()[0]),
        "the link is not on stderr"
    );
    let journal = std::fs::read_to_string(dir.join("audit/vncbot-audit.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(journal.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["event"].as_str(), last["code"].as_str()),
        (Some("dm_failed"), Some("not_printed"))
    );
}

/// `vncbot url NAME`: the catalog resolves an exact name to its one instance (and region).
#[tokio::test]
async fn url_resolves_a_name_through_the_catalog() {
    use support::mock_cvm::MockInstance;
    let mock = MockCvm::start().await;
    mock.set_instances(
        "ap-guangzhou",
        [
            MockInstance::new("ins-running1", "web-01", 5),
            MockInstance::new("ins-dup00001", "twin", 6),
            MockInstance::new("ins-dup00002", "twin", 7),
        ],
    );
    let dir = TempDir::new("cli-name");
    let cfg = write_config(&dir, &config_text(&dir, &mock.endpoint(), ""));
    let out = url(&cfg, &["web-01"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        format!("{CONSOLE_PAGE}{}\n", mock.issued()[0])
    );
    let out = url(&cfg, &["twin"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("ins-dup00001") && stderr.contains("ins-dup00002"),
        "{stderr}"
    );
    let out = url(&cfg, &["nothing-here"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("No instance you may open is named"));
    assert_eq!(
        mock.seen().len(),
        1,
        "only the resolved name reached the console action"
    );
}

/// The terminal's own words: a missing reason names `--reason`, an unserved region `--region`
/// (not Discord's options or buttons).
#[tokio::test]
async fn url_refusals_name_the_terminals_flags() {
    let mock = MockCvm::start().await;
    let dir = TempDir::new("cli-words");
    let cfg = write_config(
        &dir,
        &config_text(&dir, &mock.endpoint(), "")
            .replace("[audit]", "[audit]\nrequire_reason = true"),
    );
    let out = url(&cfg, &["ins-running1"]).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--reason"), "{stderr}");
    let out = url(
        &cfg,
        &[
            "ins-running1",
            "--reason",
            "INC-1 disk full",
            "--region",
            "ap-tokyo",
        ],
    )
    .await;
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--region") && !stderr.contains("option"),
        "{stderr}"
    );
    assert!(mock.seen().is_empty());
}
