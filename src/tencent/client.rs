//! The Tencent Cloud API client for CVM and Lighthouse: `DescribeInstanceVncUrl` (console URLs)
//! and `DescribeInstances` (the catalog). Each product's action keeps its own pace: Tencent's
//! limits are per action and per product, so a catalog refresh never delays a console call, and
//! a burst of CVM consoles never delays a Lighthouse one (or the other way round).
//!
//! The product comes from the instance ID (`ins-` or `lhins-`): it picks the host, the version
//! and the TC3 service in the credential scope.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use reqwest::Url;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::catalog::{Instance, RawInstance};
use super::endpoint::{self, Endpoint};
use super::error::{ApiErrorKind, TencentError};
use super::sign::{sign, SignInput};
use crate::config::{Language, TencentConfig, TencentCredentials};
use crate::ids::{InstanceId, Product, Region};
use crate::limits::ApiPacer;
use crate::link::ConsoleUrl;
use crate::metrics::METRICS;

const ACTION: &str = "DescribeInstanceVncUrl";
const DESCRIBE_INSTANCES: &str = "DescribeInstances";

/// The API version of each product's actions.
pub fn api_version(product: Product) -> &'static str {
    match product {
        Product::Cvm => "2017-03-12",
        Product::Lighthouse => "2020-03-24",
    }
}
/// Bigger answers are not Tencent's: refuse rather than buffer them.
const MAX_BODY: usize = 256 * 1024;
/// A page of 100 instances with every field Tencent returns is a few hundred KB.
const MAX_INSTANCES_BODY: usize = 8 * 1024 * 1024;
/// Tencent's page size limit for DescribeInstances (default 20).
pub const MAX_PAGE: u32 = 100;
/// DescribeInstances is documented at 40 requests a second; 36 plus the pacer's 10 % spacing
/// margin keeps any one-second window well under it.
pub const CATALOG_PER_SECOND: u32 = 36;
/// A catalog page may wait this long for its slot; refreshes are background work.
const CATALOG_MAX_WAIT: Duration = Duration::from_secs(30);

/// What one DescribeInstances call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstancesQuery {
    /// `{"Offset":…,"Limit":…}`; `limit` is clamped to 1..=[`MAX_PAGE`].
    Page { offset: u32, limit: u32 },
    /// `{"InstanceIds":[…]}`: chosen instances, at most [`MAX_PAGE`] (more are an error).
    Ids(Vec<InstanceId>),
    /// `{"Filters":[{"Name":…,"Values":[…]}],"Offset":…,"Limit":…}`: e.g. `instance-name`,
    /// `instance-state`, `private-ip-address`, `tag:KEY`. Tencent allows at most 10 filters of
    /// 5 values each (more are an error).
    Filtered {
        filters: Vec<(String, Vec<String>)>,
        offset: u32,
        limit: u32,
    },
}

/// Tencent's bounds on `Filters`.
pub const MAX_FILTERS: usize = 10;
pub const MAX_FILTER_VALUES: usize = 5;

/// One DescribeInstances answer.
#[derive(Debug, Clone)]
pub struct InstancesPage {
    /// `TotalCount`: how many instances match in the region, over all pages.
    pub total: u64,
    /// Entries that parsed; bounded and cleaned (see [`Instance`]).
    pub instances: Vec<Instance>,
    /// Entries dropped because their `InstanceId` is not an ID of the product asked.
    pub skipped: usize,
    pub request_id: String,
}

/// How many times, and how patiently, transient failures are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub attempts: u32,
    /// Backoff before retry `n` is a random duration in `[base·2ⁿ/2, base·2ⁿ]`.
    pub base: Duration,
    /// Tencent's rate limit counts per second, so after `RequestLimitExceeded` wait at least this.
    pub rate_limited_floor: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            base: Duration::from_millis(200),
            rate_limited_floor: Duration::from_secs(1),
        }
    }
}

/// A freshly minted console URL.
#[derive(Debug)]
pub struct VncUrl {
    pub url: ConsoleUrl,
    pub request_id: String,
    /// When the API answered; the URL works until 15 s after this.
    pub issued_at: SystemTime,
    /// Attempts it took (1 when the first succeeded).
    pub attempts: u32,
}

/// The client for both products (the name is historical).
pub struct CvmClient {
    http: reqwest::Client,
    creds: TencentCredentials,
    endpoint_override: Option<Url>,
    language: Language,
    timeout: Duration,
    /// What the config serves: products, and the regions of each.
    tencent: TencentConfig,
    /// CVM's console action.
    pacer: ApiPacer,
    /// Lighthouse's console action: a budget of its own, the same size as `pacer`.
    lighthouse_pacer: ApiPacer,
    /// DescribeInstances' own pace, separate from the console action's, one per product.
    catalog_pacer: ApiPacer,
    lighthouse_catalog_pacer: ApiPacer,
    retry: RetryPolicy,
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
struct VncPayload {
    #[serde(rename = "InstanceVncUrl")]
    instance_vnc_url: Option<String>,
}

#[derive(Deserialize)]
struct InstancesPayload {
    #[serde(rename = "TotalCount")]
    total_count: Option<u64>,
    #[serde(rename = "InstanceSet")]
    instance_set: Option<Vec<RawInstance>>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(rename = "Code")]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

impl CvmClient {
    pub fn new(
        cfg: &TencentConfig,
        creds: TencentCredentials,
        pacer: ApiPacer,
        retry: RetryPolicy,
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
        let catalog_pacer = || {
            ApiPacer::new(
                std::num::NonZeroU32::new(CATALOG_PER_SECOND).expect("not zero"),
                CATALOG_MAX_WAIT,
            )
        };
        Ok(Self {
            http,
            creds,
            endpoint_override: cfg.endpoint.clone(),
            language: cfg.language,
            timeout: cfg.timeout,
            tencent: cfg.clone(),
            lighthouse_pacer: pacer.twin(),
            pacer,
            catalog_pacer: catalog_pacer(),
            lighthouse_catalog_pacer: catalog_pacer(),
            retry,
        })
    }

    /// CVM's endpoint for `region`.
    pub fn endpoint(&self, region: &Region) -> Endpoint {
        self.endpoint_for(Product::Cvm, region)
    }

    pub fn endpoint_for(&self, product: Product, region: &Region) -> Endpoint {
        endpoint::resolve_for(product, region, self.endpoint_override.as_ref())
    }

    /// Whether the config serves `product` in `region` (see [`TencentConfig::serves_in`]).
    pub fn serves(&self, product: Product, region: &Region) -> bool {
        self.tencent.serves_in(product, region)
    }

    fn console_pacer(&self, product: Product) -> &ApiPacer {
        match product {
            Product::Cvm => &self.pacer,
            Product::Lighthouse => &self.lighthouse_pacer,
        }
    }

    fn instances_pacer(&self, product: Product) -> &ApiPacer {
        match product {
            Product::Cvm => &self.catalog_pacer,
            Product::Lighthouse => &self.lighthouse_catalog_pacer,
        }
    }

    /// Mints a console URL, retrying transient failures with jittered backoff. The first success
    /// is returned at once: each success is a single-use URL, and dropping one for a stale error
    /// (as the Python SDK's retryer does) loses it.
    pub async fn describe_instance_vnc_url(
        &self,
        region: &Region,
        instance: &InstanceId,
    ) -> Result<VncUrl, TencentError> {
        self.describe_instance_vnc_url_while(region, instance, &|| true)
            .await
    }

    /// As [`Self::describe_instance_vnc_url`], asking `still_allowed` right before each attempt
    /// is sent: a request that waited in the queue is checked against the policy of the moment.
    /// The instance's product (from its ID) picks the host, version, signature and pace; a
    /// product or region the config does not serve is refused before anything is sent.
    pub async fn describe_instance_vnc_url_while(
        &self,
        region: &Region,
        instance: &InstanceId,
        still_allowed: &(dyn Fn() -> bool + Sync),
    ) -> Result<VncUrl, TencentError> {
        self.tencent
            .check_serves(instance, region)
            .map_err(TencentError::NotServed)?;
        let product = instance.product();
        let endpoint = self.endpoint_for(product, region);
        // Serialised once; every attempt signs and sends these exact bytes.
        let body = serde_json::to_vec(&serde_json::json!({ "InstanceId": instance.as_str() }))
            .expect("a JSON object of one string serialises");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .attempt(product, &endpoint, region, &body, still_allowed)
                .await;
            match result {
                Ok((url, request_id)) => {
                    return Ok(VncUrl {
                        url,
                        request_id,
                        issued_at: SystemTime::now(),
                        attempts: attempt,
                    })
                }
                Err(e) if e.is_transient() && attempt < self.retry.attempts => {
                    let delay = self.backoff(attempt, &e);
                    tracing::warn!(
                        %instance, %region, %product, attempt, code = %e.code(),
                        request_id = e.request_id().unwrap_or("-"),
                        delay_ms = delay.as_millis() as u64,
                        error = %e, "Tencent call failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn backoff(&self, attempt: u32, e: &TencentError) -> Duration {
        let ceiling = self.retry.base * 2u32.saturating_pow(attempt - 1);
        let jittered = ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0);
        match e {
            TencentError::Api {
                kind: ApiErrorKind::RateLimited,
                ..
            } => jittered.max(self.retry.rate_limited_floor),
            _ => jittered,
        }
    }

    async fn attempt(
        &self,
        product: Product,
        endpoint: &Endpoint,
        region: &Region,
        body: &[u8],
        still_allowed: &(dyn Fn() -> bool + Sync),
    ) -> Result<(ConsoleUrl, String), TencentError> {
        let waited =
            self.console_pacer(product)
                .acquire()
                .await
                .map_err(|q| TencentError::QueueFull {
                    retry_after: q.retry_after,
                })?;
        METRICS.limiter_wait.observe(waited.as_secs_f64());
        if !still_allowed() {
            return Err(TencentError::Withdrawn);
        }
        let started = std::time::Instant::now();
        let result = self.send(product, endpoint, region, body).await;
        METRICS
            .tencent_latency
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            METRICS.tencent_error(&e.code());
        }
        METRICS.tencent_call(
            product,
            ACTION,
            result.as_ref().map(|_| ()).map_err(TencentError::code),
        );
        result
    }

    async fn send(
        &self,
        product: Product,
        endpoint: &Endpoint,
        region: &Region,
        body: &[u8],
    ) -> Result<(ConsoleUrl, String), TencentError> {
        let (payload, request_id) = self
            .call::<VncPayload>(product, endpoint, region, ACTION, body, MAX_BODY)
            .await?;
        let Some(raw) = payload.instance_vnc_url else {
            return Err(TencentError::InvalidResponse {
                detail: "success without InstanceVncUrl".into(),
                request_id: Some(request_id),
            });
        };
        let url = ConsoleUrl::compose(&raw).map_err(|e| TencentError::InvalidResponse {
            detail: e.to_string(),
            request_id: Some(request_id.clone()),
        })?;
        Ok((url, request_id))
    }

    /// Lists CVM instances in `region` (a page, or chosen IDs), on the catalog's own pace,
    /// retrying transient failures as the console call does.
    pub async fn describe_instances(
        &self,
        region: &Region,
        query: &InstancesQuery,
    ) -> Result<InstancesPage, TencentError> {
        self.describe_instances_of(Product::Cvm, region, query)
            .await
    }

    /// Lists `product`'s instances in `region` (each product's `DescribeInstances`, on its own
    /// pace). Entries whose ID is not `product`'s are skipped. IDs of another product in an
    /// `Ids` query are an error, as is a product or region the config does not serve: nothing
    /// is sent then.
    pub async fn describe_instances_of(
        &self,
        product: Product,
        region: &Region,
        query: &InstancesQuery,
    ) -> Result<InstancesPage, TencentError> {
        if !self.serves(product, region) {
            return Err(TencentError::NotServed(crate::config::NotServed::Region {
                product,
                region: region.clone(),
                served: self.tencent.regions_for(product),
            }));
        }
        let value = match query {
            InstancesQuery::Page { offset, limit } => {
                serde_json::json!({ "Offset": offset, "Limit": (*limit).clamp(1, MAX_PAGE) })
            }
            InstancesQuery::Ids(ids) => {
                if ids.is_empty() || ids.len() > MAX_PAGE as usize {
                    return Err(TencentError::Signing(format!(
                        "DescribeInstances takes 1 to {MAX_PAGE} InstanceIds, not {}",
                        ids.len()
                    )));
                }
                if let Some(other) = ids.iter().find(|i| i.product() != product) {
                    return Err(TencentError::Signing(format!(
                        "{other} is not a {} instance: list it with its own product",
                        product.title()
                    )));
                }
                let ids: Vec<&str> = ids.iter().map(InstanceId::as_str).collect();
                serde_json::json!({ "InstanceIds": ids })
            }
            InstancesQuery::Filtered {
                filters,
                offset,
                limit,
            } => {
                if filters.len() > MAX_FILTERS
                    || filters
                        .iter()
                        .any(|(_, v)| v.is_empty() || v.len() > MAX_FILTER_VALUES)
                {
                    return Err(TencentError::Signing(format!(
                        "DescribeInstances takes at most {MAX_FILTERS} filters of 1 to {MAX_FILTER_VALUES} values"
                    )));
                }
                let filters: Vec<serde_json::Value> = filters
                    .iter()
                    .map(|(name, values)| serde_json::json!({ "Name": name, "Values": values }))
                    .collect();
                serde_json::json!({
                    "Filters": filters,
                    "Offset": offset,
                    "Limit": (*limit).clamp(1, MAX_PAGE),
                })
            }
        };
        let body = serde_json::to_vec(&value).expect("a JSON object serialises");
        let endpoint = self.endpoint_for(product, region);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match self.instances_pacer(product).acquire().await {
                Ok(_) => {
                    self.call::<InstancesPayload>(
                        product,
                        &endpoint,
                        region,
                        DESCRIBE_INSTANCES,
                        &body,
                        MAX_INSTANCES_BODY,
                    )
                    .await
                }
                Err(q) => Err(TencentError::QueueFull {
                    retry_after: q.retry_after,
                }),
            };
            METRICS.tencent_call(
                product,
                DESCRIBE_INSTANCES,
                result.as_ref().map(|_| ()).map_err(TencentError::code),
            );
            match result {
                Ok((payload, request_id)) => {
                    let raw = payload.instance_set.unwrap_or_default();
                    let count = raw.len();
                    let instances: Vec<Instance> = raw
                        .into_iter()
                        .filter_map(|r| r.into_instance(region, product))
                        .collect();
                    let Some(total) = payload.total_count else {
                        return Err(TencentError::InvalidResponse {
                            detail: "DescribeInstances success without TotalCount".into(),
                            request_id: Some(request_id),
                        });
                    };
                    return Ok(InstancesPage {
                        total,
                        skipped: count - instances.len(),
                        instances,
                        request_id,
                    });
                }
                Err(e) if e.is_transient() && attempt < self.retry.attempts => {
                    let delay = self.backoff(attempt, &e);
                    tracing::debug!(
                        %region, %product, attempt, code = %e.code(),
                        request_id = e.request_id().unwrap_or("-"),
                        delay_ms = delay.as_millis() as u64,
                        "DescribeInstances failed, retrying"
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One signed call of `action`; the payload of a success and its RequestId.
    async fn call<T: DeserializeOwned>(
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
