//! A minimal HTTP/1.1 server for the fakes: keep-alive, Content-Length bodies, and the failure
//! modes tests need (a delayed answer, a reset connection).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    /// Names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
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
            let handler = Arc::clone(&handler);
            tokio::spawn(async move {
                let _ = connection(stream, handler).await;
            });
        }
    });
    addr
}

async fn connection<F, Fut>(stream: TcpStream, handler: Arc<F>) -> std::io::Result<()>
where
    F: Fn(HttpRequest) -> Fut,
    Fut: Future<Output = Reply>,
{
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_owned();
        let path = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let received_at = Instant::now();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).await?;
        let mut reply = handler(HttpRequest {
            method,
            path,
            headers,
            body,
            received_at,
        })
        .await;
        loop {
            match reply {
                Reply::Delay(d, next) => {
                    tokio::time::sleep(d).await;
                    reply = *next;
                }
                Reply::Reset => {
                    let stream = reader.into_inner();
                    // Linger zero makes the close a reset; it does not block.
                    #[allow(deprecated)]
                    stream.set_linger(Some(Duration::ZERO))?;
                    drop(stream);
                    return Ok(());
                }
                Reply::Respond {
                    status,
                    content_type,
                    body,
                } => {
                    let head = format!(
                        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
                        reason(status),
                        body.len()
                    );
                    let stream = reader.get_mut();
                    stream.write_all(head.as_bytes()).await?;
                    stream.write_all(&body).await?;
                    stream.flush().await?;
                    break;
                }
                Reply::Redirect { status, location } => {
                    let head = format!(
                        "HTTP/1.1 {status} {}\r\nlocation: {location}\r\ncontent-length: 0\r\n\r\n",
                        reason(status),
                    );
                    let stream = reader.get_mut();
                    stream.write_all(head.as_bytes()).await?;
                    stream.flush().await?;
                    break;
                }
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
