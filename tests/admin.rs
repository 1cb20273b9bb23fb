//! The admin endpoint over real TCP: the probes and the metrics answer, and clients that connect
//! and then send nothing, half a request line or a byte at a time cannot hold it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vncbot::app::admin::{self, Checks, HealthCheck, Limits};

/// Long enough for any answer on a loaded 2-core machine; a failing test fails, never hangs.
const PATIENCE: Duration = Duration::from_secs(20);

struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// One raw HTTP/1.1 request; reads until the server closes (it serves one request per connection).
async fn request(addr: SocketAddr, method: &str, path: &str) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut raw))
        .await
        .expect("the server answers and closes")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response head");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

fn switchable() -> (Arc<Mutex<Result<(), String>>>, HealthCheck) {
    let state = Arc::new(Mutex::new(Ok(())));
    let s = Arc::clone(&state);
    (state, Arc::new(move || s.lock().unwrap().clone()))
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[tokio::test]
async fn healthz_is_readiness_livez_is_liveness_and_metrics_answer() {
    let (ready, check) = switchable();
    let addr = admin::start(localhost(), check).await.unwrap();

    let a = request(addr, "GET", "/healthz").await;
    assert_eq!((a.status, a.body.as_str()), (200, "ok\n"));
    let a = request(addr, "GET", "/livez").await;
    assert_eq!((a.status, a.body.as_str()), (200, "ok\n"));

    // A gateway outage makes the bot unready, not dead: no restart loop.
    *ready.lock().unwrap() = Err("not connected to the Discord gateway".into());
    let a = request(addr, "GET", "/healthz").await;
    assert_eq!(a.status, 503);
    assert!(
        a.body.contains("not connected to the Discord gateway"),
        "{}",
        a.body
    );
    let a = request(addr, "GET", "/livez").await;
    assert_eq!((a.status, a.body.as_str()), (200, "ok\n"));

    let a = request(addr, "GET", "/metrics").await;
    assert_eq!(a.status, 200);
    assert!(
        a.head
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{}",
        a.head
    );
    assert!(a.body.contains("vncbot_"), "{}", a.body);
    assert!(a.body.trim_end().ends_with("# EOF"), "{}", a.body);

    assert_eq!(request(addr, "GET", "/nope").await.status, 404);
    assert_eq!(request(addr, "POST", "/healthz").await.status, 405);
}

#[tokio::test]
async fn a_failing_liveness_check_fails_livez_only() {
    let (live, live_check) = switchable();
    let checks = Checks {
        ready: Arc::new(|| Ok(())),
        live: live_check,
        detail: Arc::new(|| None),
        metrics: Arc::default(),
    };
    let addr = admin::start_with(localhost(), checks, Limits::default())
        .await
        .unwrap();
    *live.lock().unwrap() = Err("wedged".into());
    let a = request(addr, "GET", "/livez").await;
    assert_eq!(a.status, 503);
    assert!(a.body.contains("wedged"), "{}", a.body);
    assert_eq!(request(addr, "GET", "/healthz").await.status, 200);
}

/// Waits until the server closes `s` (EOF or reset), at most `PATIENCE`; returns when.
async fn closed_by_server(mut s: impl AsyncRead + Unpin) -> Instant {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                // A 408 or 400 before the close is fine.
                Ok(_) => continue,
            }
        }
    })
    .await
    .expect("the server closes a slow connection")
}

#[tokio::test]
async fn slow_clients_cannot_hold_the_endpoint() {
    let limits = Limits {
        max_connections: 4,
        header_read_timeout: Duration::from_millis(500),
        // Far beyond the two rounds of header timeouts (1 s), so that closing within it shows
        // the header timeout at work.
        connection_timeout: Duration::from_secs(6),
        // One peer may hold every slot: this test is about the global cap.
        max_per_peer: 4,
    };
    let addr = admin::start_with(localhost(), Checks::ready_only(Arc::new(|| Ok(()))), limits)
        .await
        .unwrap();
    let t0 = Instant::now();

    // Twice the cap of slow clients: silent ones, ones stuck mid request line, and tricklers that
    // send a header byte every 50 ms and never finish the head.
    let (mut slow, mut tricklers) = (Vec::new(), Vec::new());
    for i in 0..2 * limits.max_connections {
        let mut s = TcpStream::connect(addr).await.unwrap();
        match i % 3 {
            0 => slow.push(tokio::spawn(closed_by_server(s))),
            1 => {
                s.write_all(b"GET /heal").await.unwrap();
                slow.push(tokio::spawn(closed_by_server(s)));
            }
            _ => {
                let (r, mut w) = s.into_split();
                tricklers.push(tokio::spawn(async move {
                    w.write_all(b"GET /healthz HTTP/1.1\r\nx-slow: ").await?;
                    // Bounded: 400 bytes is 20 s, past PATIENCE.
                    for _ in 0..400 {
                        w.write_all(b"a").await?;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    std::io::Result::Ok(())
                }));
                slow.push(tokio::spawn(closed_by_server(r)));
            }
        }
    }

    // A normal client behind all of them is answered once the slow ones time out.
    let a = request(addr, "GET", "/healthz").await;
    let answered = t0.elapsed();
    assert_eq!((a.status, a.body.as_str()), (200, "ok\n"));
    // It waited: the cap held it in the backlog until a slot was freed by a timeout...
    assert!(
        answered >= limits.header_read_timeout,
        "answered after {answered:?}: the connection cap did not hold"
    );
    // ...and no longer than two rounds of header timeouts (plus slack for a loaded machine).
    assert!(
        answered < 2 * limits.header_read_timeout + Duration::from_secs(5),
        "answered only after {answered:?}"
    );

    // Every slow connection was closed by the server, by the header timeout: well before the
    // whole-connection timeout.
    for (i, s) in slow.into_iter().enumerate() {
        let closed = s.await.unwrap() - t0;
        assert!(
            closed >= limits.header_read_timeout,
            "slow client {i} closed after only {closed:?}"
        );
        assert!(
            closed < limits.connection_timeout,
            "slow client {i} held its slot for {closed:?}: the header timeout did not fire"
        );
    }
    for t in tricklers {
        t.abort();
    }
}

#[tokio::test]
async fn no_connection_outlives_the_connection_timeout() {
    // The header timeout out of the way: the whole-connection timeout alone frees the slot.
    let limits = Limits {
        max_connections: 1,
        header_read_timeout: Duration::from_secs(600),
        connection_timeout: Duration::from_millis(500),
        max_per_peer: 1,
    };
    let addr = admin::start_with(localhost(), Checks::ready_only(Arc::new(|| Ok(()))), limits)
        .await
        .unwrap();
    let t0 = Instant::now();
    let silent = TcpStream::connect(addr).await.unwrap();
    let a = request(addr, "GET", "/livez").await;
    assert_eq!(a.status, 200);
    let closed = closed_by_server(silent).await - t0;
    assert!(closed >= limits.connection_timeout, "{closed:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

/// As the issue reproduced it: 400 idle connections from loopback, then 10 liveness probes from
/// the same address. Each connection past the peer's cap closes the peer's oldest idle one, so
/// the probes find room at once instead of waiting behind rounds of header timeouts.
#[tokio::test]
async fn probes_are_answered_under_a_flood_of_idle_connections() {
    let addr = admin::start(localhost(), Arc::new(|| Ok(())))
        .await
        .unwrap();
    let mut flood = Vec::new();
    for _ in 0..400 {
        flood.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut answered = 0;
    for _ in 0..10 {
        // A kubelet gives up after 1 s by default; 3 s leaves room for a loaded machine and is
        // still below one round of the header timeout the probes used to wait behind.
        let probe = tokio::time::timeout(Duration::from_secs(3), request(addr, "GET", "/livez"));
        if let Ok(a) = probe.await {
            assert_eq!((a.status, a.body.as_str()), (200, "ok\n"));
            answered += 1;
        }
    }
    assert_eq!(answered, 10, "probes answered under the flood");
    // The flood's oldest connections were closed by the server, not left to hold a slot.
    closed_by_server(flood.remove(0)).await;
}

#[tokio::test]
async fn a_degraded_part_shows_under_a_passing_healthz() {
    let checks = Checks {
        detail: Arc::new(|| Some("catalog: ap-guangzhou: refresh failing".into())),
        ..Checks::ready_only(Arc::new(|| Ok(())))
    };
    let addr = admin::start_with(localhost(), checks, Limits::default())
        .await
        .unwrap();
    let a = request(addr, "GET", "/healthz").await;
    assert_eq!(a.status, 200);
    assert!(
        a.body.starts_with("ok\ncatalog: ap-guangzhou"),
        "{}",
        a.body
    );
}
