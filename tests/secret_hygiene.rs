//! With every log line at TRACE captured, run the flows that touch secrets (a delivered link, a
//! closed DM, a Tencent credentials failure, temporary credentials) and check that no log line and
//! no journal record holds the Tencent secret key, the session token, the Discord token or any
//! console URL the mock issued.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::fake_discord::{Invocation, TOKEN};
use support::mock_cvm::{self, Scripted};
use support::{Fakes, GUILD, ONCALL_ROLE};
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
        discord.invoke(Invocation {
            user,
            name: "member",
            guild: Some(GUILD),
            roles: vec![ONCALL_ROLE],
            command: "vnc",
            options: vec![
                ("instance", "ins-running1"),
                ("reason", "incident 1234 hygiene"),
            ],
        })
    };
    let done = |token: String| {
        let d = discord.clone();
        async move {
            d.wait_for(Duration::from_secs(15), "reply", |c| {
                c.path.contains(&token) && c.method == "PATCH"
            })
            .await
        }
    };
    done(invoke(1)).await;
    discord.close_dms(2);
    done(invoke(2)).await;
    cvm.script([Scripted::Error("AuthFailure.SignatureFailure")]);
    done(invoke(3)).await;
    cvm.script([Scripted::Status(502)]);
    done(invoke(4)).await;

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
