//! The catalog: every configured region's instances as `DescribeInstances` last listed them, for
//! each product the config serves there (CVM and Lighthouse, each listed by its own API and kept
//! as its own list, so one product's failure or missing permission leaves the other's intact).
//!
//! It answers from memory (search for autocomplete, exact names, lookups by ID, tags for the
//! allowlist) and is refreshed in the background on its own pace. A failed refresh keeps the last
//! good list and says how old it is; a missing `cvm:DescribeInstances` permission is reported
//! once, and everything that works by ID keeps working.
//!
//! Names, tags, zones and OS names are untrusted text from the cloud account: they are bounded
//! and stripped of control and format characters (bidi overrides, zero-width joiners) when the
//! answer is parsed, before anything else sees them.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use super::client::{CvmClient, InstancesPage, InstancesQuery, MAX_PAGE};
use super::error::TencentError;
use crate::ids::{InstanceId, Product, Region};
use crate::metrics::METRICS;

/// Longest instance name kept (Tencent allows 128 characters; a longer one is cut).
pub const MAX_NAME_CHARS: usize = 128;
/// Most tags kept per instance (Tencent allows 50 per resource).
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_KEY_CHARS: usize = 127;
pub const MAX_TAG_VALUE_CHARS: usize = 255;
/// Most addresses of each kind kept per instance.
pub const MAX_IPS: usize = 16;
const MAX_ZONE_CHARS: usize = 64;
const MAX_OS_CHARS: usize = 128;
const MAX_STATE_CHARS: usize = 32;
/// Discord's limit on an autocomplete choice's name.
pub const MAX_LABEL_CHARS: usize = 100;
/// Discord's limit on autocomplete choices.
pub const MAX_CHOICES: usize = 25;
/// A region with more is not plausible for one account: stop paging rather than loop.
const MAX_INSTANCES_PER_REGION: u64 = 100_000;

/// An instance's state (`InstanceState`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    LaunchFailed,
    Running,
    Stopped,
    Starting,
    Stopping,
    Rebooting,
    Shutdown,
    Terminating,
    /// A state this version does not know (bounded, letters, digits and `_` only).
    Other(String),
}

impl State {
    pub fn parse(s: &str) -> Self {
        match s {
            "PENDING" => Self::Pending,
            "LAUNCH_FAILED" => Self::LaunchFailed,
            "RUNNING" => Self::Running,
            "STOPPED" => Self::Stopped,
            "STARTING" => Self::Starting,
            "STOPPING" => Self::Stopping,
            "REBOOTING" => Self::Rebooting,
            "SHUTDOWN" => Self::Shutdown,
            "TERMINATING" => Self::Terminating,
            other => Self::Other(
                other
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .take(MAX_STATE_CHARS)
                    .collect(),
            ),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "PENDING",
            Self::LaunchFailed => "LAUNCH_FAILED",
            Self::Running => "RUNNING",
            Self::Stopped => "STOPPED",
            Self::Starting => "STARTING",
            Self::Stopping => "STOPPING",
            Self::Rebooting => "REBOOTING",
            Self::Shutdown => "SHUTDOWN",
            Self::Terminating => "TERMINATING",
            Self::Other(s) if s.is_empty() => "UNKNOWN",
            Self::Other(s) => s,
        }
    }

    /// False for the states that certainly have no console (stopped, being created, failed,
    /// shutting down, starting): refuse before calling Tencent. `REBOOTING` and states this
    /// version does not know are left for Tencent to decide.
    pub fn can_serve_console(&self) -> bool {
        !matches!(
            self,
            Self::Pending
                | Self::LaunchFailed
                | Self::Stopped
                | Self::Starting
                | Self::Stopping
                | Self::Shutdown
                | Self::Terminating
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One instance as the catalog saw it. Every text field is bounded and free of control and
/// format characters; IPs are parsed addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: InstanceId,
    /// Not unique; may be empty.
    pub name: String,
    pub state: State,
    pub private_ips: Vec<IpAddr>,
    pub public_ips: Vec<IpAddr>,
    pub zone: String,
    pub os: String,
    /// `(key, value)`, at most [`MAX_TAGS`]. A tag too long or with control or format
    /// characters is dropped: it can never satisfy a rule (fail closed).
    pub tags: Vec<(String, String)>,
    pub region: Region,
    /// Lower-cased name, tag values and IPs, `\0`-separated, for case-insensitive search
    /// without work per query.
    folded: Box<str>,
}

impl Instance {
    /// Builds an instance from already-trusted parts (tests, fakes); text is cleaned as when
    /// parsed from Tencent's answer.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: InstanceId,
        name: &str,
        state: State,
        private_ips: Vec<IpAddr>,
        public_ips: Vec<IpAddr>,
        zone: &str,
        os: &str,
        tags: Vec<(String, String)>,
        region: Region,
    ) -> Self {
        let name = clean(name, MAX_NAME_CHARS);
        let tags: Vec<(String, String)> = tags
            .into_iter()
            .filter_map(|(k, v)| clean_tag(&k, &v))
            .take(MAX_TAGS)
            .collect();
        let mut folded = name.to_lowercase();
        for (_, v) in &tags {
            folded.push('\0');
            folded.push_str(&v.to_lowercase());
        }
        for ip in private_ips.iter().chain(&public_ips) {
            use std::fmt::Write;
            let _ = write!(folded, "\0{ip}");
        }
        Self {
            id,
            name,
            state,
            private_ips,
            public_ips,
            zone: clean(zone, MAX_ZONE_CHARS),
            os: clean(os, MAX_OS_CHARS),
            tags,
            region,
            folded: folded.into_boxed_str(),
        }
    }

    /// CVM or Lighthouse (from the ID's prefix).
    pub fn product(&self) -> Product {
        self.id.product()
    }

    /// The tag's value, if the instance carries it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// How well `query` (already lower-cased, not empty) matches: 0 exact, 1 prefix,
    /// 2 substring, over ID, name, IPs and tag values; `None` when it does not.
    fn rank(&self, query: &str) -> Option<u8> {
        let field_rank = |field: &str| {
            if field == query {
                Some(0)
            } else if field.starts_with(query) {
                Some(1)
            } else if field.contains(query) {
                Some(2)
            } else {
                None
            }
        };
        let mut best = field_rank(self.id.as_str());
        // Most instances do not match at all: one scan tells (the query holds no `\0`, so a
        // match inside `folded` lies within one field).
        if !self.folded.contains(query) {
            return best;
        }
        for part in self.folded.split('\0') {
            best = best.into_iter().chain(field_rank(part)).min();
            if best == Some(0) {
                break;
            }
        }
        best
    }
}

/// Removes control and format characters (bidi overrides and marks, zero-width characters,
/// soft hyphens), trims, and keeps at most `max` characters.
pub fn clean(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| !is_invisible(*c))
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Control characters and the Unicode format (Cf) characters that can reorder or hide text.
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}'
        )
}

fn clean_tag(k: &str, v: &str) -> Option<(String, String)> {
    let ok = |s: &str, max: usize| s.chars().count() <= max && !s.chars().any(is_invisible);
    (!k.is_empty() && ok(k, MAX_TAG_KEY_CHARS) && ok(v, MAX_TAG_VALUE_CHARS))
        .then(|| (k.to_owned(), v.to_owned()))
}

/// An `InstanceSet[]` entry as Tencent sends it, CVM's shape or Lighthouse's (which names the
/// addresses `PrivateAddresses`/`PublicAddresses` and has `Zone` at the top level); every field
/// optional, so one odd entry cannot fail a whole page.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawInstance {
    #[serde(rename = "InstanceId")]
    id: Option<String>,
    #[serde(rename = "InstanceName")]
    name: Option<String>,
    #[serde(rename = "InstanceState")]
    state: Option<String>,
    #[serde(rename = "PrivateIpAddresses")]
    private_ips: Option<Vec<String>>,
    #[serde(rename = "PublicIpAddresses")]
    public_ips: Option<Vec<String>>,
    #[serde(rename = "Placement")]
    placement: Option<RawPlacement>,
    #[serde(rename = "PrivateAddresses")]
    private_addresses: Option<Vec<String>>,
    #[serde(rename = "PublicAddresses")]
    public_addresses: Option<Vec<String>>,
    #[serde(rename = "Zone")]
    zone: Option<String>,
    #[serde(rename = "OsName")]
    os: Option<String>,
    #[serde(rename = "Tags")]
    tags: Option<Vec<RawTag>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawPlacement {
    #[serde(rename = "Zone")]
    zone: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTag {
    #[serde(rename = "Key")]
    key: Option<String>,
    #[serde(rename = "Value")]
    value: Option<String>,
}

impl RawInstance {
    /// `None` when the entry has no valid instance ID of `product` (the product whose
    /// `DescribeInstances` answered).
    pub(crate) fn into_instance(self, region: &Region, product: Product) -> Option<Instance> {
        let id = InstanceId::parse(self.id.as_deref()?).ok()?;
        if id.product() != product {
            return None;
        }
        let ips = |v: Option<Vec<String>>| -> Vec<IpAddr> {
            v.unwrap_or_default()
                .iter()
                .filter_map(|s| s.trim().parse().ok())
                .take(MAX_IPS)
                .collect()
        };
        let tags = self
            .tags
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| Some((t.key?, t.value.unwrap_or_default())))
            .collect();
        Some(Instance::new(
            id,
            self.name.as_deref().unwrap_or_default(),
            State::parse(self.state.as_deref().unwrap_or_default()),
            ips(self.private_ips.or(self.private_addresses)),
            ips(self.public_ips.or(self.public_addresses)),
            self.placement
                .and_then(|p| p.zone)
                .or(self.zone)
                .as_deref()
                .unwrap_or_default(),
            self.os.as_deref().unwrap_or_default(),
            tags,
            region.clone(),
        ))
    }
}

/// `web-01 · ins-abc12345 · RUNNING · 10.0.0.5 · ap-guangzhou` (a Lighthouse instance ends
/// `· Lighthouse`): at most [`MAX_LABEL_CHARS`] characters; a long name is cut on a character
/// boundary with `…` so the ID stays visible.
pub fn choice_label(i: &Instance) -> String {
    let mut tail = format!(" · {} · {}", i.id, i.state);
    if let Some(ip) = i.private_ips.first().or(i.public_ips.first()) {
        tail.push_str(&format!(" · {ip}"));
    }
    tail.push_str(&format!(" · {}", i.region));
    if i.product() != Product::Cvm {
        tail.push_str(&format!(" · {}", i.product().title()));
    }
    let name: String = i.name.chars().filter(|c| !is_invisible(*c)).collect();
    let name = if name.trim().is_empty() {
        "(no name)"
    } else {
        name.trim()
    };
    let budget = MAX_LABEL_CHARS.saturating_sub(tail.chars().count());
    let label = if name.chars().count() <= budget {
        format!("{name}{tail}")
    } else if budget >= 8 {
        let cut: String = name.chars().take(budget - 1).collect();
        format!("{}…{tail}", cut.trim_end())
    } else {
        format!("{name}{tail}")
    };
    truncate(&label, MAX_LABEL_CHARS)
}

/// At most `max` characters, the last being `…` when something was cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// What an exact name resolves to among the instances an actor may open.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolution<'a> {
    Unique(&'a Instance),
    /// Several carry the name: list them (ID, region, state) so the member can pick.
    Ambiguous(Vec<&'a Instance>),
    NotFound,
}

/// One region's last good list of one product's instances.
pub struct RegionList {
    pub region: Region,
    pub product: Product,
    pub instances: Arc<[Instance]>,
    index: HashMap<InstanceId, u32>,
    /// When this list was fetched; `None` until the first success.
    pub fetched_at: Option<SystemTime>,
    fetched: Option<Instant>,
}

impl RegionList {
    fn empty(region: Region, product: Product) -> Self {
        Self {
            region,
            product,
            instances: Arc::from(Vec::new()),
            index: HashMap::new(),
            fetched_at: None,
            fetched: None,
        }
    }

    fn new(region: Region, product: Product, instances: Vec<Instance>) -> Self {
        let index = instances
            .iter()
            .enumerate()
            .map(|(n, i)| (i.id.clone(), n as u32))
            .collect();
        Self {
            region,
            product,
            instances: instances.into(),
            index,
            fetched_at: Some(SystemTime::now()),
            fetched: Some(Instant::now()),
        }
    }

    /// How old the list is; `None` when no refresh has succeeded yet.
    pub fn age(&self) -> Option<Duration> {
        self.fetched.map(|t| t.elapsed())
    }

    pub fn get(&self, id: &InstanceId) -> Option<&Instance> {
        self.index.get(id).map(|n| &self.instances[*n as usize])
    }
}

/// A consistent, cheap snapshot of every region's list, to answer from without locks.
#[derive(Clone)]
pub struct View {
    lists: Vec<Arc<RegionList>>,
}

impl View {
    pub fn regions(&self) -> impl Iterator<Item = &RegionList> {
        self.lists.iter().map(|l| &**l)
    }

    pub fn instances(&self) -> impl Iterator<Item = &Instance> {
        self.lists.iter().flat_map(|l| l.instances.iter())
    }

    pub fn len(&self) -> usize {
        self.lists.iter().map(|l| l.instances.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The instance with this ID, in whichever region it is (IDs are unique across regions).
    pub fn lookup(&self, id: &InstanceId) -> Option<&Instance> {
        self.lists.iter().find_map(|l| l.get(id))
    }

    /// Up to `limit` instances `allowed` admits whose ID, name, IPs or tag values contain
    /// `query`, case-insensitively; exact matches first, then prefixes, then substrings, each
    /// by name then ID. An empty query lists every allowed instance by name.
    pub fn search(
        &self,
        query: &str,
        limit: usize,
        allowed: impl Fn(&Instance) -> bool,
    ) -> Vec<&Instance> {
        let query: String = query
            .chars()
            .filter(|c| !is_invisible(*c))
            .take(MAX_NAME_CHARS)
            .collect::<String>()
            .trim()
            .to_lowercase();
        let mut hits: Vec<(u8, &Instance)> = self
            .instances()
            .filter_map(|i| {
                let rank = if query.is_empty() {
                    Some(1)
                } else {
                    i.rank(&query)
                };
                rank.map(|r| (r, i))
            })
            .filter(|(_, i)| allowed(i))
            .collect();
        let order = |a: &(u8, &Instance), b: &(u8, &Instance)| {
            (a.0, &a.1.name, &a.1.id).cmp(&(b.0, &b.1.name, &b.1.id))
        };
        if limit == 0 {
            return Vec::new();
        }
        if hits.len() > limit {
            hits.select_nth_unstable_by(limit - 1, order);
            hits.truncate(limit);
        }
        hits.sort_unstable_by(order);
        hits.into_iter().map(|(_, i)| i).collect()
    }

    /// The instances `allowed` admits whose name is exactly `name` (after the same cleaning the
    /// catalog applies to names; case-sensitive, as Tencent's names are).
    pub fn resolve_name(&self, name: &str, allowed: impl Fn(&Instance) -> bool) -> Resolution<'_> {
        let name = clean(name, MAX_NAME_CHARS);
        if name.is_empty() {
            return Resolution::NotFound;
        }
        let mut found: Vec<&Instance> = self
            .instances()
            .filter(|i| i.name == name && allowed(i))
            .collect();
        match found.len() {
            0 => Resolution::NotFound,
            1 => Resolution::Unique(found.remove(0)),
            _ => {
                found.sort_by(|a, b| (&a.region, &a.id).cmp(&(&b.region, &b.id)));
                Resolution::Ambiguous(found)
            }
        }
    }
}

/// Lists instances: [`CvmClient`] in production, anything in tests. A source that knows only
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

impl InstanceSource for CvmClient {
    fn describe_instances(
        &self,
        region: &Region,
        query: &InstancesQuery,
    ) -> impl Future<Output = Result<InstancesPage, TencentError>> + Send {
        CvmClient::describe_instances(self, region, query)
    }

    fn serves(&self, product: Product, region: &Region) -> bool {
        CvmClient::serves(self, product, region)
    }

    fn describe_product_instances(
        &self,
        product: Product,
        region: &Region,
        query: &InstancesQuery,
    ) -> impl Future<Output = Result<InstancesPage, TencentError>> + Send {
        CvmClient::describe_instances_of(self, product, region, query)
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
        }
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
                METRICS.catalog_instances(product, region.as_str(), n as i64);
                METRICS.catalog_age(product, region.as_str(), 0);
                Ok(n)
            }
            Err(e) => {
                health.failures += 1;
                let reference = e
                    .request_id()
                    .map(|r| format!(" (RequestId {r})"))
                    .unwrap_or_default();
                health.last_error = Some(format!("{}{reference}", e.code()));
                METRICS.catalog_refresh_failure(product, region.as_str());
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
                        age_secs = ?age, error = %e,
                        "catalog refresh failed; keeping the last good list"
                    );
                }
                if let Some(a) = age {
                    METRICS.catalog_age(product, region.as_str(), a as i64);
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
                    METRICS.catalog_age(slot.product, region.as_str(), a.as_secs() as i64);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, name: &str, state: &str, ip: &str, tags: &[(&str, &str)]) -> Instance {
        Instance::new(
            InstanceId::parse(id).unwrap(),
            name,
            State::parse(state),
            vec![ip.parse().unwrap()],
            vec![],
            "ap-guangzhou-3",
            "Ubuntu 22.04",
            tags.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            Region::parse("ap-guangzhou").unwrap(),
        )
    }

    fn view(instances: Vec<Instance>) -> View {
        View {
            lists: vec![Arc::new(RegionList::new(
                Region::parse("ap-guangzhou").unwrap(),
                Product::Cvm,
                instances,
            ))],
        }
    }

    fn ids(v: &[&Instance]) -> Vec<String> {
        v.iter().map(|i| i.id.to_string()).collect()
    }

    #[test]
    fn search_ranks_exact_then_prefix_then_substring() {
        let v = view(vec![
            inst("ins-aaaaaaa1", "my-web", "RUNNING", "10.0.0.1", &[]),
            inst("ins-aaaaaaa2", "web-01", "RUNNING", "10.0.0.2", &[]),
            inst("ins-aaaaaaa3", "WEB", "STOPPED", "10.0.0.3", &[]),
            inst(
                "ins-aaaaaaa4",
                "db",
                "RUNNING",
                "10.0.0.4",
                &[("role", "Web")],
            ),
            inst("ins-aaaaaaa5", "cache", "RUNNING", "10.0.0.5", &[]),
        ]);
        let all = |_: &Instance| true;
        assert_eq!(
            ids(&v.search("web", 25, all)),
            // Exact (case-insensitive): "WEB" and the tag value "Web", by name; then the prefix
            // "web-01"; then the substring "my-web".
            vec![
                "ins-aaaaaaa3",
                "ins-aaaaaaa4",
                "ins-aaaaaaa2",
                "ins-aaaaaaa1"
            ]
        );
        assert_eq!(ids(&v.search("10.0.0.5", 25, all)), vec!["ins-aaaaaaa5"]);
        assert_eq!(
            ids(&v.search("INS-AAAAAAA2", 25, all)),
            vec!["ins-aaaaaaa2"]
        );
        assert_eq!(v.search("10.0.0.", 25, all).len(), 5);
        assert_eq!(v.search("nothing", 25, all).len(), 0);
        // The filter decides what may be seen at all, and the limit holds.
        assert_eq!(
            ids(&v.search("web", 25, |i| i.state.can_serve_console())),
            vec!["ins-aaaaaaa4", "ins-aaaaaaa2", "ins-aaaaaaa1"]
        );
        assert_eq!(
            ids(&v.search("web", 2, all)),
            vec!["ins-aaaaaaa3", "ins-aaaaaaa4"]
        );
        assert!(v.search("", 25, |_| false).is_empty());
        assert_eq!(v.search("", 3, all).len(), 3);
    }

    #[test]
    fn labels_are_bounded_and_clean() {
        let i = inst("ins-abc12345", "web-01", "RUNNING", "10.0.0.5", &[]);
        assert_eq!(
            choice_label(&i),
            "web-01 · ins-abc12345 · RUNNING · 10.0.0.5 · ap-guangzhou"
        );
        let long = inst("ins-abc12345", &"é".repeat(120), "RUNNING", "10.0.0.5", &[]);
        let l = choice_label(&long);
        assert_eq!(l.chars().count(), MAX_LABEL_CHARS, "{l}");
        assert!(
            l.ends_with("· ins-abc12345 · RUNNING · 10.0.0.5 · ap-guangzhou"),
            "{l}"
        );
        assert!(l.contains("é… · ins-"), "{l}");
        let hostile = inst(
            "ins-abc12345",
            "a\u{202E}b\u{200B}c\nd\u{0007}",
            "RUNNING",
            "10.0.0.5",
            &[],
        );
        assert_eq!(hostile.name, "abcd");
        assert!(choice_label(&hostile).starts_with("abcd · "));
        let empty = inst("ins-abc12345", " \u{200F} ", "RUNNING", "10.0.0.5", &[]);
        assert!(choice_label(&empty).starts_with("(no name) · "));
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }

    #[test]
    fn names_resolve_only_among_allowed_instances() {
        let v = view(vec![
            inst("ins-aaaaaaa1", "web-01", "RUNNING", "10.0.0.1", &[]),
            inst("ins-aaaaaaa2", "web-01", "RUNNING", "10.0.0.2", &[]),
            inst("ins-aaaaaaa3", "db", "RUNNING", "10.0.0.3", &[]),
        ]);
        let all = |_: &Instance| true;
        assert!(matches!(v.resolve_name("web-01", all), Resolution::Ambiguous(v) if v.len() == 2));
        assert!(matches!(
            v.resolve_name("web-01", |i| i.id.as_str() == "ins-aaaaaaa2"),
            Resolution::Unique(i) if i.id.as_str() == "ins-aaaaaaa2"
        ));
        assert_eq!(v.resolve_name("db", |_| false), Resolution::NotFound);
        assert_eq!(v.resolve_name("WEB-01", all), Resolution::NotFound);
        assert_eq!(v.resolve_name("", all), Resolution::NotFound);
        assert!(matches!(v.resolve_name(" db ", all), Resolution::Unique(_)));
        let id = InstanceId::parse("ins-aaaaaaa3").unwrap();
        assert_eq!(v.lookup(&id).unwrap().name, "db");
    }

    #[test]
    fn states_that_cannot_serve_a_console() {
        for s in [
            "STOPPED",
            "SHUTDOWN",
            "PENDING",
            "LAUNCH_FAILED",
            "TERMINATING",
            "STOPPING",
            "STARTING",
        ] {
            assert!(!State::parse(s).can_serve_console(), "{s}");
            assert_eq!(State::parse(s).as_str(), s);
        }
        for s in ["RUNNING", "REBOOTING", "NEW_STATE"] {
            assert!(State::parse(s).can_serve_console(), "{s}");
        }
        assert_eq!(State::parse("x\u{202E}y <@1>").as_str(), "xy1");
        assert_eq!(State::parse("").as_str(), "UNKNOWN");
    }

    #[test]
    fn raw_entries_are_bounded_and_cleaned() {
        let tags: Vec<serde_json::Value> =
            [serde_json::json!({"Key": "evil", "Value": "a\u{202E}b"})]
                .into_iter()
                .chain((0..80).map(|n| serde_json::json!({"Key": format!("k{n}"), "Value": "v"})))
                .collect();
        let raw: RawInstance = serde_json::from_value(serde_json::json!({
            "InstanceId": "ins-abc12345",
            "InstanceName": "x".repeat(500),
            "InstanceState": "RUNNING",
            "PrivateIpAddresses": ["10.0.0.1", "not an ip"],
            "PublicIpAddresses": null,
            "Placement": {"Zone": "ap-guangzhou-3"},
            "OsName": "Ubuntu",
            "Tags": tags,
        }))
        .unwrap();
        let i = raw
            .into_instance(&Region::parse("ap-guangzhou").unwrap(), Product::Cvm)
            .unwrap();
        assert_eq!(i.name.chars().count(), MAX_NAME_CHARS);
        assert_eq!(i.private_ips.len(), 1);
        assert!(i.public_ips.is_empty());
        assert_eq!(i.tags.len(), MAX_TAGS);
        assert_eq!(i.tag("evil"), None);
        assert_eq!(i.zone, "ap-guangzhou-3");
        let bad: RawInstance =
            serde_json::from_value(serde_json::json!({"InstanceId": "lhins-1"})).unwrap();
        assert!(bad
            .into_instance(&Region::parse("ap-guangzhou").unwrap(), Product::Lighthouse)
            .is_none());
    }

    #[test]
    fn lighthouse_entries_have_their_own_shape() {
        let gz = Region::parse("ap-guangzhou").unwrap();
        let entry = || {
            serde_json::json!({
                "InstanceId": "lhins-abc12345",
                "InstanceName": "blog",
                "InstanceState": "RUNNING",
                "PrivateAddresses": ["10.1.0.7"],
                "PublicAddresses": ["203.0.113.7"],
                "Zone": "ap-guangzhou-3",
                "OsName": "Ubuntu Server 22.04 LTS 64bit",
                "Tags": [{"Key": "env", "Value": "prod"}],
            })
        };
        let raw: RawInstance = serde_json::from_value(entry()).unwrap();
        let i = raw.into_instance(&gz, Product::Lighthouse).unwrap();
        assert_eq!(i.product(), Product::Lighthouse);
        assert_eq!(i.private_ips, vec!["10.1.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(i.public_ips, vec!["203.0.113.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(i.zone, "ap-guangzhou-3");
        assert_eq!(i.tag("env"), Some("prod"));
        assert_eq!(
            choice_label(&i),
            "blog · lhins-abc12345 · RUNNING · 10.1.0.7 · ap-guangzhou · Lighthouse"
        );
        // An answer of one product never files an instance of the other.
        let raw: RawInstance = serde_json::from_value(entry()).unwrap();
        assert!(raw.into_instance(&gz, Product::Cvm).is_none());
    }
}
