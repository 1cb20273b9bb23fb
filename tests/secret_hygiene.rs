//! With every log line at TRACE captured, run the flows that touch secrets (a delivered link, a
//! closed DM, a Tencent credentials failure, temporary credentials) and check that no log line and
//! no journal record holds the Tencent secret key, the session token, the Discord token or any
//! console URL the mock issued.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::fake_discord::{vnc, TOKEN};
use support::mock_cvm::{self, Scripted};
use support::{Fakes, ONCALL_ROLE};
use vncbot::config::{Config, TencentCredentials};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_console_url_in_logs_or_journal() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let f = Fakes::start("hygiene").await;
    let (discord, cvm) = (&f.discord, &f.cvm);
    let config = Config::parse(&f.config).unwrap();
    let creds = TencentCredentials {
        secret_id: mock_cvm::TEMP_SECRET_ID.into(),
        secret_key: mock_cvm::TEMP_SECRET_KEY.to_string().into(),
        session_token: Some(mock_cvm::SESSION_TOKEN.to_string().into()),
    };
    tokio::spawn(vncbot::app::run(config, None, TOKEN, creds));
    discord.wait_ready().await;

    let invoke = |user: u64| {
        discord.invoke(vnc(
            user,
            vec![ONCALL_ROLE],
            vec![
                ("instance", "ins-running1"),
                ("reason", "incident 1234 hygiene"),
            ],
        ))
    };
    // `/vnc`, then Open console on the grant's DM when there is one.
    let open = |user: u64| {
        let d = discord.clone();
        let t = invoke(user);
        async move {
            d.wait_for(Duration::from_secs(15), "reply", |c| {
                c.path.contains(&t) && c.method == "PATCH"
            })
            .await;
            if let Some(g) = d.grant_dm(user) {
                d.press_result(&d.press_open(&g)).await;
            }
        }
    };
    for user in 1..=5 {
        discord.set_roles(user, vec![ONCALL_ROLE]);
    }
    open(1).await;
    discord.close_dms(2);
    open(2).await;
    cvm.script([Scripted::Error("AuthFailure.SignatureFailure")]);
    open(3).await;
    cvm.script([Scripted::Status(502)]);
    open(4).await;
    cvm.set_token_len(600);
    open(5).await;

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let journal = std::fs::read_to_string(f.journal()).unwrap();
    assert!(logs.lines().count() > 50, "TRACE logging was captured");
    assert!(
        logs.contains("console URL issued"),
        "the bot's own logs were captured"
    );
    let issued = cvm.issued();
    assert_eq!(issued.len(), 3);
    let mut secrets = vec![
        mock_cvm::TEMP_SECRET_KEY.to_owned(),
        mock_cvm::SESSION_TOKEN.to_owned(),
        TOKEN.to_owned(),
        "bjvnc.qcloud.com".to_owned(),
    ];
    secrets.extend(issued);
    for s in &secrets {
        assert!(!logs.contains(s.as_str()), "a log line contains {s:?}");
        assert!(!journal.contains(s.as_str()), "the journal contains {s:?}");
    }
}

/// Every form a console link could take in a log line: as sent, percent-decoded, JSON-escaped,
/// and as the decimal byte array a `Debug` of a request body prints.
fn link_forms(link: &str) -> Vec<String> {
    let decoded = percent_encoding::percent_decode_str(link)
        .decode_utf8_lossy()
        .into_owned();
    let json = serde_json::to_string(link).unwrap();
    // A window of the secret part's bytes is enough to find it inside a longer array.
    let secret = &link[link.len() - 24..];
    let bytes = secret
        .bytes()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        link.to_owned(),
        secret.to_owned(),
        decoded,
        json[1..json.len() - 1].to_owned(),
        bytes,
    ]
}

/// The process as operators run it, at `RUST_LOG=trace`: serenity's own debug output (request
/// bodies, routes with interaction tokens, gateway payloads) must not reach the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_trace_leaks_no_link_and_no_interaction_token() {
    let f = Fakes::start("hygiene-process").await;
    let (discord, cvm) = (&f.discord, &f.cvm);
    let cfg = f.write_config(&f.config);
    let log = f.dir.join("stderr.log");
    let mut bot = support::bot_command(std::path::Path::new(env!("CARGO_BIN_EXE_vncbot")), &cfg)
        .env("RUST_LOG", "trace")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    discord.wait_ready().await;
    let invoke = |user: u64| {
        discord.invoke(vnc(
            user,
            vec![ONCALL_ROLE],
            vec![("instance", "ins-running1")],
        ))
    };
    // `/vnc`, then Open console on the grant's DM when there is one: both tokens.
    let open = |user: u64| {
        let d = discord.clone();
        d.set_roles(user, vec![ONCALL_ROLE]);
        let t = invoke(user);
        async move {
            d.wait_for(Duration::from_secs(15), "reply", |c| {
                c.path.contains(&t) && c.method == "PATCH"
            })
            .await;
            let mut tokens = vec![t];
            if let Some(g) = d.grant_dm(user) {
                let p = d.press_open(&g);
                d.press_result(&p).await;
                tokens.push(p);
            }
            tokens
        }
    };
    let mut tokens = open(1).await;
    cvm.set_token_len(600); // too long for a button: the link goes in the message text
    tokens.extend(open(2).await);
    discord.close_dms(3);
    tokens.extend(open(3).await);
    cvm.set_token_len(2500); // too long for the text: the link goes in an embed
    tokens.extend(open(4).await);
    // SIGTERM: shutdown waits for the DM edits, then the log is complete.
    let pid = bot.id().unwrap() as libc::pid_t;
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(40), bot.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("console URL issued"),
        "vncbot's own trace was captured: {logs}"
    );
    let issued = cvm.issued();
    assert_eq!(issued.len(), 3);
    for value in &issued {
        let link = format!("{}{value}", vncbot::link::CONSOLE_PAGE);
        for form in link_forms(&link) {
            assert!(
                !logs.contains(&form),
                "a log line contains the link as {form:?}"
            );
        }
    }
    for t in &tokens {
        assert!(
            !logs.contains(t.as_str()),
            "a log line contains interaction token {t}"
        );
    }
    assert!(
        !logs.contains(TOKEN),
        "a log line contains the Discord token"
    );
}
