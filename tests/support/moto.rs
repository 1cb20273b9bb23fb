//! moto's S3 server (`moto[server]` from PyPI, which `.ci/run` installs), started on a free
//! loopback port for one test, and a loopback relay that can play an outage.

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

pub const MOTO_ENV: &str = "VNCBOT_MOTO_SERVER";

pub struct Moto {
    pub endpoint: String,
    _child: Child,
}

/// moto's server, or `None` (with a message) when `VNCBOT_MOTO_SERVER` is unset outside CI.
/// Under CI (`CI` set) a missing server fails the test.
pub async fn start() -> Option<Moto> {
    let Ok(bin) = std::env::var(MOTO_ENV) else {
        if std::env::var_os("CI").is_some() {
            panic!("{MOTO_ENV} is not set: .ci/run installs moto[server] and sets it");
        }
        eprintln!("SKIPPED: set {MOTO_ENV}=/path/to/venv/bin/moto_server (pip install 'moto[server]') to run the object storage tests");
        return None;
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut child = Command::new(&bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    // Werkzeug says where it listens once it does.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains("Running on") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Some(Moto {
        endpoint: format!("http://127.0.0.1:{port}"),
        _child: child,
    })
}

impl Moto {
    /// A bucket with Object Lock and a default COMPLIANCE retention of one day (moto does not
    /// check signatures, so plain requests suffice).
    pub async fn locked_bucket(&self, name: &str) {
        let http = reqwest::Client::new();
        let r = http
            .put(format!("{}/{name}", self.endpoint))
            .header("x-amz-bucket-object-lock-enabled", "true")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
        let body = "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>COMPLIANCE</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>";
        use base64::Engine as _;
        use md5::Digest as _;
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body));
        let r = http
            .put(format!("{}/{name}?object-lock", self.endpoint))
            .header("content-md5", md5)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{:?}", r.text().await);
    }
}

/// A loopback relay to `upstream` that, while `down`, refuses connections and cuts open ones.
pub struct Relay {
    pub endpoint: String,
    down: tokio::sync::watch::Sender<bool>,
}

impl Relay {
    pub async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let (down, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if *watch.borrow() {
                    drop(client);
                    continue;
                }
                let mut watch = watch.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(upstream).await {
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = watch.wait_for(|d| *d) => {}
                        }
                    }
                });
            }
        });
        Self { endpoint, down }
    }

    pub fn set_down(&self, down: bool) {
        self.down.send_replace(down);
    }
}
