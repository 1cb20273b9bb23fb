//! The Tencent Cloud API client for CVM and Lighthouse: `DescribeInstanceVncUrl` (console URLs)
//! and `DescribeInstances` (the catalog). Each product's action keeps its own pace: Tencent's
//! limits are per action and per product, so a catalog refresh never delays a console call, and
//! a burst of CVM consoles never delays a Lighthouse one (or the other way round).
//!
//! The product comes from the instance ID (`ins-` or `lhins-`): it picks the host, the version
//! and the TC3 service in the credential scope.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::credentials::TencentCredentials;
use super::endpoint::{self, Endpoint};
use super::error::TencentError;
use super::query::{InstancesPage, InstancesPayload, InstancesQuery};
use super::retry::{retry, RetryPolicy};
use super::settings::{NotServed, TencentConfig};
use super::transport::Transport;
use crate::ids::{InstanceId, Product, Region};
use crate::limits::ApiPacer;
use crate::link::ConsoleUrl;
use crate::metrics::Metrics;

const ACTION: &str = "DescribeInstanceVncUrl";
const DESCRIBE_INSTANCES: &str = "DescribeInstances";

/// Bigger answers are not Tencent's: refuse rather than buffer them.
const MAX_BODY: usize = 256 * 1024;
/// A page of 100 instances with every field Tencent returns is a few hundred KB.
const MAX_INSTANCES_BODY: usize = 8 * 1024 * 1024;
/// DescribeInstances is documented at 40 requests a second; 36 plus the pacer's 10 % spacing
/// margin keeps any one-second window well under it.
pub const CATALOG_PER_SECOND: u32 = 36;
/// A catalog page may wait this long for its slot; refreshes are background work.
const CATALOG_MAX_WAIT: Duration = Duration::from_secs(30);

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

/// The Tencent Cloud API client: console URLs and instance lists, for CVM and Lighthouse alike.
pub struct TencentClient {
    transport: Transport,
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
    /// Where each attempt is counted.
    metrics: Arc<Metrics>,
}

#[derive(Deserialize)]
struct VncPayload {
    #[serde(rename = "InstanceVncUrl")]
    instance_vnc_url: Option<String>,
}

impl TencentClient {
    pub fn new(
        cfg: &TencentConfig,
        creds: TencentCredentials,
        pacer: ApiPacer,
        retry: RetryPolicy,
    ) -> Result<Self, reqwest::Error> {
        let catalog_pacer = || {
            ApiPacer::new(
                std::num::NonZeroU32::new(CATALOG_PER_SECOND).expect("not zero"),
                CATALOG_MAX_WAIT,
            )
        };
        Ok(Self {
            transport: Transport::new(cfg, creds)?,
            tencent: cfg.clone(),
            lighthouse_pacer: pacer.twin("lighthouse"),
            pacer,
            catalog_pacer: catalog_pacer(),
            lighthouse_catalog_pacer: catalog_pacer(),
            retry,
            metrics: Arc::default(),
        })
    }

    /// Counts this client's calls into `metrics` (a registry of its own otherwise).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The registry this client counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn endpoint_for(&self, product: Product, region: &Region) -> Endpoint {
        endpoint::resolve_for(product, region, self.tencent.endpoint.as_ref())
    }

    /// Whether the config serves `product` in `region` (see [`TencentConfig::serves_in`]).
    pub(super) fn serves(&self, product: Product, region: &Region) -> bool {
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
    pub(super) async fn describe_instance_vnc_url_while(
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
        let ((url, request_id), attempts) = retry(
            &self.retry,
            || self.attempt(product, &endpoint, region, &body, still_allowed),
            |e, attempt, delay| {
                tracing::warn!(
                    %instance, %region, %product, attempt, code = %e.code(),
                    request_id = e.request_id().unwrap_or("-"),
                    delay_ms = delay.as_millis() as u64,
                    error = %e, "Tencent call failed, retrying"
                )
            },
        )
        .await?;
        Ok(VncUrl {
            url,
            request_id,
            issued_at: SystemTime::now(),
            attempts,
        })
    }

    /// One console attempt: a wait for the product's pace, the caller's last word, then the
    /// call, counted in the metrics.
    async fn attempt(
        &self,
        product: Product,
        endpoint: &Endpoint,
        region: &Region,
        body: &[u8],
        still_allowed: &(dyn Fn() -> bool + Sync),
    ) -> Result<(ConsoleUrl, String), TencentError> {
        // Held until the answer: the shared pace counts the call until then.
        let permit = self
            .console_pacer(product)
            .acquire()
            .await
            .map_err(TencentError::from)?;
        self.metrics
            .limiter_wait
            .observe(permit.waited().as_secs_f64());
        if !still_allowed() {
            return Err(TencentError::Withdrawn);
        }
        let started = std::time::Instant::now();
        let result = self.mint(product, endpoint, region, body).await;
        self.metrics
            .tencent_latency
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            self.metrics.tencent_error(&e.code());
        }
        self.metrics.tencent_call(
            product,
            ACTION,
            result.as_ref().map(|_| ()).map_err(TencentError::code),
        );
        result
    }

    /// One signed `DescribeInstanceVncUrl`, and the link composed from its answer.
    async fn mint(
        &self,
        product: Product,
        endpoint: &Endpoint,
        region: &Region,
        body: &[u8],
    ) -> Result<(ConsoleUrl, String), TencentError> {
        let (payload, request_id) = self
            .transport
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
            return Err(TencentError::NotServed(NotServed::Region {
                product,
                region: region.clone(),
                served: self.tencent.regions_for(product),
            }));
        }
        let body = query.body(product)?;
        let endpoint = self.endpoint_for(product, region);
        let (page, _) = retry(
            &self.retry,
            || self.list_once(product, &endpoint, region, &body),
            |e, attempt, delay| {
                tracing::debug!(
                    %region, %product, attempt, code = %e.code(),
                    request_id = e.request_id().unwrap_or("-"),
                    delay_ms = delay.as_millis() as u64,
                    "DescribeInstances failed, retrying"
                )
            },
        )
        .await?;
        Ok(page)
    }

    /// One DescribeInstances attempt, after a wait for the product's catalog pace.
    async fn list_once(
        &self,
        product: Product,
        endpoint: &Endpoint,
        region: &Region,
        body: &[u8],
    ) -> Result<InstancesPage, TencentError> {
        let result = match self.instances_pacer(product).acquire().await {
            Ok(_permit) => {
                self.transport
                    .call::<InstancesPayload>(
                        product,
                        endpoint,
                        region,
                        DESCRIBE_INSTANCES,
                        body,
                        MAX_INSTANCES_BODY,
                    )
                    .await
            }
            Err(e) => Err(e.into()),
        };
        self.metrics.tencent_call(
            product,
            DESCRIBE_INSTANCES,
            result.as_ref().map(|_| ()).map_err(TencentError::code),
        );
        let (payload, request_id) = result?;
        payload.into_page(region, product, request_id)
    }
}
