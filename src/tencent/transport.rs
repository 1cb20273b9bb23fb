//! One signed call to Tencent's API: the TC3 headers, signed just before sending; the answer,
//! read within a bound; Tencent's envelope and error codes turned into [`TencentError`]. No
//! retries and no pacing here: the client ([`super::client`]) decides those.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::credentials::TencentCredentials;
use super::endpoint::Endpoint;
use super::error::{ApiErrorKind, TencentError};
use super::settings::{Language, TencentConfig};
use super::sign::{sign, SignInput};
use crate::ids::{Product, Region};

/// The API version of each product's actions.
pub fn api_version(product: Product) -> &'static str {
    match product {
        Product::Cvm => "2017-03-12",
        Product::Lighthouse => "2020-03-24",
    }
}
/// Signs and sends requests, and reads Tencent's answers.
pub(super) struct Transport {
    http: reqwest::Client,
    creds: TencentCredentials,
    language: Language,
    timeout: Duration,
}

#[derive(Deserialize)]
struct Envelope<T> {
    #[serde(rename = "Response")]
    response: Body<T>,
}

#[derive(Deserialize)]
struct Body<T> {
    #[serde(rename = "Error")]
    error: Option<ApiError>,
    #[serde(rename = "RequestId")]
    request_id: Option<String>,
    #[serde(flatten)]
    payload: T,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(rename = "Code")]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

impl Transport {
    pub(super) fn new(
        cfg: &TencentConfig,
        creds: TencentCredentials,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            // Config validation allows http:// only to loopback (tests, a local fake).
            .https_only(false)
            // Never follow a redirect: reqwest would carry X-TC-Token (and the signed body) to
            // whatever host the Location names. Tencent's API does not redirect; a 3xx comes from
            // a gateway or proxy in the way and is reported as such, not retried.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(50))
            .user_agent(concat!("vncbot/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            creds,
            language: cfg.language,
            timeout: cfg.timeout,
        })
    }

    /// One signed call of `action`; the payload of a success and its RequestId.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        product: Product,
        endpoint: &Endpoint,
        region: &Region,
        action: &'static str,
        body: &[u8],
        max_body: usize,
    ) -> Result<(T, String), TencentError> {
        // Signed after the pacer's wait, just before sending: Tencent rejects timestamps more
        // than five minutes off, and a queued request must not carry a stale one.
        let headers = self.signed_headers(product, endpoint, region, action, body)?;
        let response = self
            .http
            .post(endpoint.url.clone())
            .headers(headers)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if status.is_redirection() {
            return Err(TencentError::Redirected {
                status: status.as_u16(),
                location_host: response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .and_then(|l| endpoint.url.join(l).ok())
                    .and_then(|u| u.host_str().map(str::to_owned)),
            });
        }
        let bytes = read_bounded(response, max_body)
            .await
            .map_err(|e| self.transport_error(e))?;
        // Parse whatever the Content-Type says: gateways mislabel JSON.
        let parsed: Option<Envelope<T>> = serde_json::from_slice(&bytes).ok();
        let request_id = parsed.as_ref().and_then(|p| p.response.request_id.clone());
        if status != reqwest::StatusCode::OK {
            return Err(TencentError::Status {
                status: status.as_u16(),
                request_id,
            });
        }
        let Some(Envelope { response }) = parsed else {
            return Err(TencentError::InvalidResponse {
                detail: format!(
                    "HTTP 200 but the body is not Tencent's JSON ({} bytes)",
                    bytes.len()
                ),
                request_id: None,
            });
        };
        let request_id = response.request_id.unwrap_or_default();
        if let Some(err) = response.error {
            return Err(TencentError::Api {
                kind: ApiErrorKind::classify(&err.code),
                code: err.code,
                message: err.message,
                request_id,
            });
        }
        Ok((response.payload, request_id))
    }

    fn signed_headers(
        &self,
        product: Product,
        endpoint: &Endpoint,
        region: &Region,
        action: &'static str,
        body: &[u8],
    ) -> Result<HeaderMap, TencentError> {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| TencentError::Signing("the system clock is before 1970".into()))?
            .as_secs() as i64;
        let content_type = "application/json";
        let signed = sign(&SignInput {
            secret_id: &self.creds.secret_id,
            secret_key: self.creds.secret_key.expose_secret(),
            // The service is part of the signing key: `cvm` or `lighthouse`.
            service: product.as_str(),
            timestamp,
            headers: &[("content-type", content_type), ("host", &endpoint.host)],
            payload: body,
        })
        .map_err(|e| TencentError::Signing(e.to_string()))?;

        let mut h = HeaderMap::with_capacity(10);
        let value = |s: &str| {
            HeaderValue::from_str(s)
                .map_err(|_| TencentError::Signing("a header value has invalid characters".into()))
        };
        h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(HOST, value(&endpoint.host)?);
        h.insert(
            HeaderName::from_static("x-tc-action"),
            HeaderValue::from_static(action),
        );
        h.insert(
            HeaderName::from_static("x-tc-version"),
            HeaderValue::from_static(api_version(product)),
        );
        h.insert(
            HeaderName::from_static("x-tc-region"),
            value(region.as_str())?,
        );
        h.insert(
            HeaderName::from_static("x-tc-timestamp"),
            value(&timestamp.to_string())?,
        );
        h.insert(
            HeaderName::from_static("x-tc-language"),
            HeaderValue::from_static(self.language.as_str()),
        );
        if let Some(token) = &self.creds.session_token {
            let mut v = value(token.expose_secret())?;
            v.set_sensitive(true);
            h.insert(HeaderName::from_static("x-tc-token"), v);
        }
        let mut auth = value(&signed.authorization)?;
        auth.set_sensitive(true);
        h.insert(AUTHORIZATION, auth);
        Ok(h)
    }

    fn transport_error(&self, e: reqwest::Error) -> TencentError {
        let e = e.without_url();
        if e.is_timeout() {
            TencentError::Timeout(self.timeout)
        } else if e.is_connect() {
            TencentError::Connect(error_chain(&e))
        } else {
            TencentError::Transport(error_chain(&e))
        }
    }
}

async fn read_bounded(
    mut response: reqwest::Response,
    max_body: usize,
) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::with_capacity(512);
    while let Some(chunk) = response.chunk().await? {
        if out.len() + chunk.len() > max_body {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// reqwest's top-level message is vague ("error sending request"); the cause is in the chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
