//! The fakes' HTTP/1.1 server, on hyper: each request is handed over whole (headers as received,
//! the body read to its end), and the answer can be one of the failure modes tests need: a
//! delayed answer, a redirect, or a reset connection instead of an answer.

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, LOCATION};
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    /// The request target as sent: path and query.
    pub path: String,
    /// Names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When the request's head had arrived.
    pub received_at: Instant,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub enum Reply {
    Respond {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// A redirect with an empty body.
    Redirect { status: u16, location: String },
    /// Close with a TCP reset, without answering.
    Reset,
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
    /// This answer, with these extra headers (a 429's `ratelimit-reset`).
    WithHeaders(Vec<(&'static str, String)>, Box<Reply>),
}

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Reply::Respond {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(value).unwrap(),
        }
    }
}

/// Binds 127.0.0.1 on a free port and serves `handler` until the runtime ends.
pub async fn serve<F, Fut>(handler: F) -> SocketAddr
where
    F: Fn(HttpRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(connection(stream, Arc::clone(&handler)));
        }
    });
    addr
}

type Body = Full<Bytes>;

async fn connection<F, Fut>(stream: TcpStream, handler: Arc<F>)
where
    F: Fn(HttpRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    let _ = stream.set_nodelay(true);
    // hyper owns the stream; a second descriptor on the same socket lets a `Reply::Reset` make
    // its close a reset.
    let Ok(twin) = stream.as_fd().try_clone_to_owned() else {
        return;
    };
    let reset = Arc::new(Notify::new());
    let wants_reset = Arc::clone(&reset);
    let service = hyper::service::service_fn(move |req| {
        let (handler, reset) = (Arc::clone(&handler), Arc::clone(&wants_reset));
        async move {
            let req = read(req).await?;
            Ok::<_, hyper::Error>(answer(handler(req).await, &reset).await)
        }
    });
    let served = hyper::server::conn::http1::Builder::new()
        // Idle keep-alive connections stay open as long as the client wants, as before.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = served => {}
        () = reset.notified() => {
            // Linger zero makes the close a reset (when `served` and `twin` drop); it does not
            // block.
            let _ = socket2::SockRef::from(&twin).set_linger(Some(Duration::ZERO));
        }
    }
}

async fn read(req: hyper::Request<Incoming>) -> Result<HttpRequest, hyper::Error> {
    let received_at = Instant::now();
    let (head, body) = req.into_parts();
    let body = body.collect().await?.to_bytes().to_vec();
    Ok(HttpRequest {
        method: head.method.as_str().to_owned(),
        path: head
            .uri
            .path_and_query()
            .map_or_else(|| head.uri.to_string(), |p| p.as_str().to_owned()),
        headers: head
            .headers
            .iter()
            .map(|(n, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_owned(), v)
            })
            .collect(),
        body,
        received_at,
    })
}

async fn answer(mut reply: Reply, reset: &Notify) -> Response<Body> {
    let mut extra: Vec<(&'static str, String)> = Vec::new();
    loop {
        match reply {
            Reply::WithHeaders(headers, next) => {
                extra.extend(headers);
                reply = *next;
            }
            Reply::Delay(d, next) => {
                tokio::time::sleep(d).await;
                reply = *next;
            }
            Reply::Reset => {
                reset.notify_one();
                // Never answered: the connection task drops this with the connection.
                return std::future::pending().await;
            }
            Reply::Respond {
                status,
                content_type,
                body,
            } => {
                let mut response = Response::builder()
                    .status(status_code(status))
                    .header(CONTENT_TYPE, content_type);
                for (name, value) in &extra {
                    response = response.header(*name, value.as_str());
                }
                return response.body(Body::new(body.into())).unwrap();
            }
            Reply::Redirect { status, location } => {
                return Response::builder()
                    .status(status_code(status))
                    .header(LOCATION, location)
                    .body(Body::default())
                    .unwrap();
            }
        }
    }
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).expect("the fakes answer with real status codes")
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Sends `raw` on a fresh connection and reads until the server closes or `until` is seen.
    async fn exchange(addr: SocketAddr, raw: &str, until: &str) -> std::io::Result<String> {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(raw.as_bytes()).await?;
        let mut got = Vec::new();
        let mut buf = [0; 4096];
        while !String::from_utf8_lossy(&got).contains(until) {
            match s.read(&mut buf).await? {
                0 => break,
                n => got.extend_from_slice(&buf[..n]),
            }
        }
        Ok(String::from_utf8_lossy(&got).into_owned())
    }

    #[tokio::test]
    async fn hands_over_the_request_whole_and_keeps_the_connection() {
        let addr = serve(|req: HttpRequest| async move {
            let echo = format!(
                "{} {} host={} body={}",
                req.method,
                req.path,
                req.header("host").unwrap_or("-"),
                String::from_utf8_lossy(&req.body)
            );
            Reply::Respond {
                status: 200,
                content_type: "text/plain",
                body: echo.into_bytes(),
            }
        })
        .await;
        let one = "POST /a?b=1 HTTP/1.1\r\nHost: elsewhere.example\r\nContent-Length: 2\r\n\r\n{}";
        let two = "GET /second HTTP/1.1\r\nHost: x\r\n\r\n";
        let got = exchange(addr, &format!("{one}{two}"), "GET /second")
            .await
            .unwrap();
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains("content-type: text/plain"), "{got}");
        assert!(
            got.contains("POST /a?b=1 host=elsewhere.example body={}"),
            "{got}"
        );
        assert!(got.contains("GET /second host=x body="), "{got}");
    }

    #[tokio::test]
    async fn a_reset_is_a_reset_and_a_redirect_has_no_body() {
        let addr = serve(|req: HttpRequest| async move {
            match req.path.as_str() {
                "/reset" => Reply::Reset,
                _ => Reply::Delay(
                    Duration::from_millis(50),
                    Box::new(Reply::Redirect {
                        status: 302,
                        location: "http://127.0.0.1:9/".into(),
                    }),
                ),
            }
        })
        .await;
        let err = exchange(addr, "GET /reset HTTP/1.1\r\nHost: x\r\n\r\n", "\r\n\r\n")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        let started = Instant::now();
        let got = exchange(addr, "GET /go HTTP/1.1\r\nHost: x\r\n\r\n", "\r\n\r\n")
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(got.starts_with("HTTP/1.1 302 Found\r\n"), "{got}");
        assert!(got.contains("location: http://127.0.0.1:9/"), "{got}");
        assert!(got.contains("content-length: 0"), "{got}");
    }
}
