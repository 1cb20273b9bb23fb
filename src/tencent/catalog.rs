//! The catalog: every configured region's instances as `DescribeInstances` last listed them, for
//! each product the config serves there (CVM and Lighthouse, each listed by its own API and kept
//! as its own list, so one product's failure or missing permission leaves the other's intact).
//!
//! It answers from memory ([`View`]: search for autocomplete, exact names, lookups by ID, tags for
//! the allowlist) and is refreshed in the background on its own pace. A failed refresh keeps the
//! last good list and says how old it is; a missing `cvm:DescribeInstances` permission is
//! reported once, and everything that works by ID keeps working.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use super::client::TencentClient;
use super::error::TencentError;
use super::instance::Instance;
use super::query::{InstancesPage, InstancesQuery, MAX_PAGE};
use super::view::{RegionList, View};
use crate::ids::{InstanceId, Product, Region};
use crate::metrics::Metrics;

/// A region with more is not plausible for one account: stop paging rather than loop.
const MAX_INSTANCES_PER_REGION: u64 = 100_000;

/// Lists instances: [`TencentClient`] in production, anything in tests. A source that knows only
/// CVM implements `describe_instances`; one that serves Lighthouse too overrides `serves` and
/// `describe_product_instances`.
pub trait InstanceSource: Send + Sync {
    /// CVM's `DescribeInstances`.
    fn describe_instances(
        &self,
        region: &Region,
        query: &InstancesQuery,
    ) -> impl Future<Output = Result<InstancesPage, TencentError>> + Send;

    /// Whether `product`'s instances in `region` are listed at all.
    fn serves(&self, product: Product, _region: &Region) -> bool {
        product == Product::Cvm
    }

    /// `product`'s `DescribeInstances`.
    fn describe_product_instances(
        &self,
        product: Product,
        region: &Region,
        query: &InstancesQuery,
    ) -> impl Future<Output = Result<InstancesPage, TencentError>> + Send {
        async move {
            match product {
                Product::Cvm => self.describe_instances(region, query).await,
                other => Err(TencentError::Signing(format!(
                    "this instance source cannot list {} instances",
                    other.title()
                ))),
            }
        }
    }
}

impl InstanceSource for TencentClient {
    fn describe_instances(
        &self,
        region: &Region,
        query: &InstancesQuery,
    ) -> impl Future<Output = Result<InstancesPage, TencentError>> + Send {
        TencentClient::describe_instances(self, region, query)
    }

    fn serves(&self, product: Product, region: &Region) -> bool {
        TencentClient::serves(self, product, region)
    }

    fn describe_product_instances(
        &self,
        product: Product,
        region: &Region,
        query: &InstancesQuery,
    ) -> impl Future<Output = Result<InstancesPage, TencentError>> + Send {
        TencentClient::describe_instances_of(self, product, region, query)
    }
}

/// How one region's refreshes are going.
#[derive(Debug, Clone, Default)]
struct Health {
    /// Failed refreshes since the last success.
    failures: u32,
    /// The last failure's code and RequestId (never Tencent's message: it may be in Chinese, or
    /// describe the account).
    last_error: Option<String>,
    permission_missing: bool,
    permission_logged: bool,
}

struct Slot {
    product: Product,
    /// Whether the source lists this product in this region (CVM until a refresh says
    /// otherwise; Lighthouse once one says so). Unserved slots are left out of views and status.
    served: AtomicBool,
    list: RwLock<Arc<RegionList>>,
    health: Mutex<Health>,
    /// One refresh of a region at a time.
    refreshing: tokio::sync::Mutex<()>,
}

/// Every configured region's last good list of each product, with how fresh it is.
pub struct Catalog {
    /// Region-major: each region's CVM slot, then its Lighthouse slot.
    slots: Vec<(Region, Slot)>,
    /// Counts finished [`Catalog::refresh_all`] rounds, for whoever waits on one.
    rounds: tokio::sync::watch::Sender<u64>,
    /// Where list sizes, ages and failures are counted.
    metrics: Arc<Metrics>,
}

/// One region's (and product's) state for `/healthz` detail and `vncbot instances`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionStatus {
    pub region: Region,
    pub product: Product,
    pub instances: usize,
    /// Age of the last good list; `None` when no refresh has succeeded yet.
    pub age: Option<Duration>,
    /// Failed refreshes since the last success.
    pub failures: u32,
    /// The last failure's code (and RequestId), while failing.
    pub last_error: Option<String>,
    /// Tencent said `UnauthorizedOperation`: the CAM policy lacks `cvm:DescribeInstances` (or
    /// `lighthouse:DescribeInstances`).
    pub permission_missing: bool,
}

impl fmt::Display for RegionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // CVM's line reads as it did before Lighthouse; Lighthouse's names the product.
        match self.product {
            Product::Cvm => write!(f, "{}: {} instances", self.region, self.instances)?,
            p => write!(
                f,
                "{} {}: {} instances",
                self.region,
                p.title(),
                self.instances
            )?,
        }
        match self.age {
            Some(a) => write!(f, ", listed {}s ago", a.as_secs())?,
            None => write!(f, ", never listed")?,
        }
        if self.permission_missing {
            write!(
                f,
                ", permission missing: the CAM policy needs {}:DescribeInstances (IDs still work)",
                self.product
            )?;
        } else if let Some(e) = &self.last_error {
            write!(f, ", {} failed refresh(es), last: {e}", self.failures)?;
        }
        Ok(())
    }
}

impl RegionStatus {
    /// The list is current: the last refresh succeeded.
    pub fn is_healthy(&self) -> bool {
        self.age.is_some() && self.failures == 0
    }
}

fn is_permission_error(e: &TencentError) -> bool {
    matches!(e, TencentError::Api { code, .. }
        if code.starts_with("UnauthorizedOperation") || code.starts_with("AuthFailure.UnauthorizedOperation"))
}

impl Catalog {
    /// A catalog of `regions`; which products it lists in each is the source's to say
    /// ([`InstanceSource::serves`]), at each refresh.
    pub fn new(regions: &[Region]) -> Self {
        Self {
            slots: regions
                .iter()
                .flat_map(|r| Product::ALL.map(|p| (r.clone(), p)))
                .map(|(r, product)| {
                    let slot = Slot {
                        product,
                        served: AtomicBool::new(product == Product::Cvm),
                        list: RwLock::new(Arc::new(RegionList::empty(r.clone(), product))),
                        health: Mutex::new(Health::default()),
                        refreshing: tokio::sync::Mutex::new(()),
                    };
                    (r, slot)
                })
                .collect(),
            rounds: tokio::sync::watch::Sender::new(0),
            metrics: Arc::default(),
        }
    }

    /// Counts this catalog's lists into `metrics` (a registry of its own otherwise).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The registry this catalog counts into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Counts finished refresh rounds (every region tried once), so a caller can wait for the
    /// first one, or the next, without polling.
    pub fn rounds(&self) -> tokio::sync::watch::Receiver<u64> {
        self.rounds.subscribe()
    }

    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        // Every region has a CVM slot, so this names each region once.
        self.slots
            .iter()
            .filter(|(_, s)| s.product == Product::Cvm)
            .map(|(r, _)| r)
    }

    fn slot(&self, region: &Region, product: Product) -> Option<&Slot> {
        self.slots
            .iter()
            .find(|(r, s)| r == region && s.product == product)
            .map(|(_, s)| s)
    }

    /// A snapshot of every served region's and product's last good list.
    pub fn view(&self) -> View {
        View {
            lists: self
                .slots
                .iter()
                .filter(|(_, s)| s.served.load(Ordering::Relaxed))
                .map(|(_, s)| Arc::clone(&s.list.read().unwrap_or_else(|e| e.into_inner())))
                .collect(),
        }
    }

    /// The instance with this ID, as last seen, in any region.
    pub fn lookup(&self, id: &InstanceId) -> Option<Instance> {
        self.view().lookup(id).cloned()
    }

    /// Refreshes every region, one after the other; the first error, if any, is in `status()`.
    pub async fn refresh_all<S: InstanceSource>(&self, source: &S) {
        for region in self.regions() {
            let _ = self.refresh_region(source, region).await;
        }
        self.rounds.send_modify(|n| *n += 1);
    }

    /// Lists `region` for every product the source serves there, each in pages of 100 until
    /// `TotalCount` is reached, then swaps each new list in. On failure that product's last
    /// good list stays, and the failure is logged once per streak. The instances listed, or
    /// the first product's error.
    pub async fn refresh_region<S: InstanceSource>(
        &self,
        source: &S,
        region: &Region,
    ) -> Result<usize, TencentError> {
        let mut total = 0;
        let mut first_error = None;
        for product in Product::ALL {
            match self.refresh_product(source, region, product).await {
                Ok(n) => total += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            None => Ok(total),
            Some(e) => Err(e),
        }
    }

    async fn refresh_product<S: InstanceSource>(
        &self,
        source: &S,
        region: &Region,
        product: Product,
    ) -> Result<usize, TencentError> {
        let Some(slot) = self.slot(region, product) else {
            return Ok(0);
        };
        if !source.serves(product, region) {
            slot.served.store(false, Ordering::Relaxed);
            return Ok(0);
        }
        slot.served.store(true, Ordering::Relaxed);
        let _one_at_a_time = slot.refreshing.lock().await;
        let result = list_region(source, region, product).await;
        let mut health = slot.health.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok((instances, pages)) => {
                let n = instances.len();
                *slot.list.write().unwrap_or_else(|e| e.into_inner()) =
                    Arc::new(RegionList::new(region.clone(), product, instances));
                if health.failures > 0 {
                    tracing::info!(
                        %region, %product, instances = n, pages, failures = health.failures,
                        "catalog refreshed again after failures"
                    );
                } else {
                    tracing::debug!(%region, %product, instances = n, pages, "catalog refreshed");
                }
                *health = Health {
                    permission_logged: health.permission_logged,
                    ..Health::default()
                };
                self.metrics
                    .catalog_instances(product, region.as_str(), n as i64);
                self.metrics.catalog_age(product, region.as_str(), 0);
                Ok(n)
            }
            Err(e) => {
                health.failures += 1;
                let reference = e
                    .request_id()
                    .map(|r| format!(" (RequestId {r})"))
                    .unwrap_or_default();
                health.last_error = Some(format!("{}{reference}", e.code()));
                self.metrics
                    .catalog_refresh_failure(product, region.as_str());
                let age = slot
                    .list
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .age()
                    .map(|a| a.as_secs());
                if is_permission_error(&e) {
                    health.permission_missing = true;
                    if !health.permission_logged {
                        health.permission_logged = true;
                        tracing::error!(
                            %region, %product, code = %e.code(), request_id = e.request_id().unwrap_or("-"),
                            "the catalog cannot list instances: the CAM policy lacks {product}:DescribeInstances; \
                             names, autocomplete and tag rules are unavailable for them, instance IDs still work"
                        );
                    }
                } else if health.failures == 1 {
                    tracing::warn!(
                        %region, %product, code = %e.code(), request_id = e.request_id().unwrap_or("-"),
                        age_secs = age, error = %e,
                        "catalog refresh failed; keeping the last good list"
                    );
                }
                if let Some(a) = age {
                    self.metrics.catalog_age(product, region.as_str(), a as i64);
                }
                Err(e)
            }
        }
    }

    /// Re-reads one instance (`InstanceIds`), updates it in the catalog and returns it; `None`
    /// when Tencent no longer lists it in `region` (it is then removed from the catalog).
    pub async fn refresh_one<S: InstanceSource>(
        &self,
        source: &S,
        region: &Region,
        id: &InstanceId,
    ) -> Result<Option<Instance>, TencentError> {
        let product = id.product();
        let page = source
            .describe_product_instances(product, region, &InstancesQuery::Ids(vec![id.clone()]))
            .await?;
        let fresh = page.instances.into_iter().find(|i| i.id == *id);
        if let Some(slot) = self.slot(region, product) {
            let mut guard = slot.list.write().unwrap_or_else(|e| e.into_inner());
            let old = &**guard;
            let known = old.get(id).is_some();
            if known || fresh.is_some() {
                let mut list: Vec<Instance> = old
                    .instances
                    .iter()
                    .filter(|i| i.id != *id)
                    .cloned()
                    .collect();
                if let Some(f) = &fresh {
                    list.push(f.clone());
                }
                let mut next = RegionList::new(region.clone(), product, list);
                // A one-instance read does not make the rest of the list any younger.
                next.fetched_at = old.fetched_at;
                next.fetched = old.fetched;
                *guard = Arc::new(next);
            }
        }
        Ok(fresh)
    }

    /// Every region's state, for `/healthz` detail; also brings the age gauges up to date.
    pub fn status(&self) -> Vec<RegionStatus> {
        self.slots
            .iter()
            .filter(|(_, slot)| slot.served.load(Ordering::Relaxed))
            .map(|(region, slot)| {
                let list = Arc::clone(&slot.list.read().unwrap_or_else(|e| e.into_inner()));
                let h = slot
                    .health
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let age = list.age();
                if let Some(a) = age {
                    self.metrics
                        .catalog_age(slot.product, region.as_str(), a.as_secs() as i64);
                }
                RegionStatus {
                    region: region.clone(),
                    product: slot.product,
                    instances: list.instances.len(),
                    age,
                    failures: h.failures,
                    last_error: h.last_error,
                    permission_missing: h.permission_missing,
                }
            })
            .collect()
    }

    /// Refreshes every region now and then every `every`, until the returned handle is aborted
    /// or the runtime ends. Refreshes never overlap: a slow one delays the next.
    pub fn spawn_refresher<S: InstanceSource + 'static>(
        self: &Arc<Self>,
        source: Arc<S>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let catalog = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                catalog.refresh_all(&*source).await;
                let _ = catalog.status();
            }
        })
    }
}

/// Pages through `product`'s instances in `region`; the instances (deduplicated by ID) and the
/// number of pages.
async fn list_region<S: InstanceSource>(
    source: &S,
    region: &Region,
    product: Product,
) -> Result<(Vec<Instance>, u32), TencentError> {
    let mut out: Vec<Instance> = Vec::new();
    let mut seen: HashMap<InstanceId, ()> = HashMap::new();
    let mut offset: u32 = 0;
    let mut pages = 0;
    loop {
        let page = source
            .describe_product_instances(
                product,
                region,
                &InstancesQuery::Page {
                    offset,
                    limit: MAX_PAGE,
                },
            )
            .await?;
        pages += 1;
        let got = page.instances.len() + page.skipped;
        for i in page.instances {
            // Instances created or deleted while paging shift the pages: keep the first copy.
            if seen.insert(i.id.clone(), ()).is_none() {
                out.push(i);
            }
        }
        offset = offset.saturating_add(got as u32);
        let total = page.total.min(MAX_INSTANCES_PER_REGION);
        if got == 0 || u64::from(offset) >= total {
            break;
        }
    }
    out.shrink_to_fit();
    Ok((out, pages))
}
