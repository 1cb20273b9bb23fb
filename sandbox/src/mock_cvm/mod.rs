//! A mock CVM endpoint that checks each request the way Tencent does: it recomputes the TC3
//! signature from the secret and the headers actually received, rejects stale timestamps, a
//! wrong Host, a changed body and unknown SecretIds, enforces 10 calls in any one-second window,
//! and answers in Tencent's JSON shape with a fresh RequestId.
//!
//! It also answers `DescribeInstances` like Tencent: `Offset`/`Limit` paging (Limit at most 100,
//! default 20), `InstanceIds` (at most 100, not with `Filters`), `Filters` (`instance-name`,
//! `instance-id`, `instance-state`, `private-ip-address`, `tag-key`, `tag:KEY`; at most 10 of 5
//! values), the documented response shape (`PublicIpAddresses` null when there is none), and its
//! own limit of 40 calls in any one-second window. Its failures are scripted separately
//! ([`MockCvm::script_catalog`]) and its calls recorded separately ([`MockCvm::seen_catalog`]),
//! so the console tests see exactly what they saw before.
//!
//! It serves Lighthouse at the same endpoint, as one gateway would: `X-TC-Version` `2020-03-24`
//! asks for Lighthouse, `2017-03-12` for CVM. The signature is recomputed with the service the
//! request's credential scope names, and a valid signature for the wrong service (`cvm` sent to
//! a Lighthouse action, or the other way round) is refused with `AuthFailure.SignatureFailure`,
//! as Tencent refuses it. Lighthouse has its own instances (`lhins-…`), its own error codes
//! (`ResourceNotFound.InstanceIdNotFound`, `UnsupportedOperation.InvalidInstanceState`,
//! `InvalidParameterValue.InstanceIdMalformed`), its own `DescribeInstances` shape
//! (`PrivateAddresses`, `PublicAddresses`, `Zone`), its own regions and its own 10-a-second
//! window for the console action.
//!
//! The files: `signature.rs` (the gateway's checks, TC3 recomputed from Tencent's documentation,
//! independently of vncbot's `src/tencent/sign.rs`), `console.rs` (serving a request, the console
//! action), `catalog.rs` (`DescribeInstances`), `instances.rs` (the instances and their shapes).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::serve;

mod catalog;
mod console;
mod instances;
mod signature;

pub use instances::{MockInstance, Service, LIGHTHOUSE_REGIONS};

pub const SECRET_ID: &str = "AKIDmockmockmockmockmockmockmockmock";
pub const SECRET_KEY: &str = "mockSecretKeyForTestsOnly0123456";
pub const TEMP_SECRET_ID: &str = "AKIDtemporarytemporarytemporary0001";
pub const TEMP_SECRET_KEY: &str = "tempSecretKeyForTestsOnly6543210";
pub const SESSION_TOKEN: &str = "mockSessionTokenValue-abcdefghijklmnopqrstuvwxyz";

/// A canned failure for the next call(s), applied in order.
#[derive(Debug, Clone, Copy)]
pub enum Scripted {
    /// Answer with this HTTP status and an HTML body, as a gateway would.
    Status(u16),
    /// Reset the connection.
    Reset,
    /// Hold the answer this long, then process normally.
    Delay(Duration),
    /// Pass the checks, then answer with this error code.
    Error(&'static str),
    /// A success without `InstanceVncUrl`.
    MissingUrl,
    /// Answer `302 Found` with `Location: http://<addr>/`, as a hijacked or misconfigured
    /// gateway would.
    Redirect(SocketAddr),
}

/// What the mock made of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    /// When the mock produced its answer.
    pub answered_at: Instant,
    /// "ok" or the error code returned.
    pub verdict: String,
    pub request_id: String,
    pub region: String,
    pub language: String,
    /// `X-TC-Action`.
    pub action: String,
    /// The product the request asked for (by `X-TC-Version`): `cvm`, `lighthouse` or `?`.
    pub product: String,
    /// The service named in the request's credential scope (`-` when unreadable).
    pub signed_service: String,
    /// The request body (DescribeInstances only; console calls keep it empty).
    pub body: String,
}

const DESCRIBE_INSTANCES: &str = "DescribeInstances";
const VNC: &str = "DescribeInstanceVncUrl";

struct State {
    keys: HashMap<String, (String, Option<String>)>,
    instances: HashMap<String, MockInstance>,
    regions: Vec<String>,
    script: VecDeque<Scripted>,
    catalog_script: VecDeque<Scripted>,
    seen: Vec<Seen>,
    seen_catalog: Vec<Seen>,
    issued: Vec<String>,
    window: VecDeque<Instant>,
    catalog_window: VecDeque<Instant>,
    /// Lighthouse's own windows: its limits are counted apart from CVM's.
    lighthouse_window: VecDeque<Instant>,
    lighthouse_catalog_window: VecDeque<Instant>,
    clock_skew: i64,
    /// Length of the random token in issued URLs.
    token_len: usize,
}

#[derive(Clone)]
pub struct MockCvm {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl MockCvm {
    /// Serves CVM in ap-guangzhou and ap-shanghai-fsi with a few instances:
    /// `ins-running1` and `ins-web00001` (RUNNING, ap-guangzhou), `ins-stopped1` (STOPPED),
    /// `ins-fsi00001` (RUNNING, ap-shanghai-fsi); and Lighthouse in [`LIGHTHOUSE_REGIONS`]:
    /// `lhins-run00001` (RUNNING, ap-guangzhou, public 203.0.113.10), `lhins-stop0001`
    /// (STOPPED, ap-guangzhou), `lhins-sg000001` (RUNNING, ap-singapore).
    pub async fn start() -> Self {
        let mut keys = HashMap::new();
        keys.insert(SECRET_ID.to_owned(), (SECRET_KEY.to_owned(), None));
        keys.insert(
            TEMP_SECRET_ID.to_owned(),
            (TEMP_SECRET_KEY.to_owned(), Some(SESSION_TOKEN.to_owned())),
        );
        let mut instances = HashMap::new();
        for (n, (id, name, region, state)) in [
            ("ins-running1", "running-1", "ap-guangzhou", "RUNNING"),
            ("ins-web00001", "web-01", "ap-guangzhou", "RUNNING"),
            ("ins-stopped1", "stopped-1", "ap-guangzhou", "STOPPED"),
            ("ins-fsi00001", "fsi-01", "ap-shanghai-fsi", "RUNNING"),
        ]
        .into_iter()
        .enumerate()
        {
            let i = MockInstance::new(id, name, n as u32 + 1)
                .in_region(region)
                .state(state);
            instances.insert(id.to_owned(), i);
        }
        for i in 0..400 {
            let id = format!("ins-load{i:04}");
            let m = MockInstance::new(&id, &format!("load-{i:04}"), 1000 + i);
            instances.insert(id, m);
        }
        for (n, (id, name, region, state)) in [
            ("lhins-run00001", "blog", "ap-guangzhou", "RUNNING"),
            ("lhins-stop0001", "old-blog", "ap-guangzhou", "STOPPED"),
            ("lhins-sg000001", "sg-shop", "ap-singapore", "RUNNING"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut i = MockInstance::new(id, name, 5000 + n as u32)
                .in_region(region)
                .state(state)
                .tag("env", "prod");
            i.os = "Ubuntu Server 22.04 LTS 64bit".into();
            if n == 0 {
                i = i.public_ip("203.0.113.10");
            }
            instances.insert(id.to_owned(), i);
        }
        let state = Arc::new(Mutex::new(State {
            keys,
            instances,
            regions: vec!["ap-guangzhou".into(), "ap-shanghai-fsi".into()],
            script: VecDeque::new(),
            catalog_script: VecDeque::new(),
            seen: Vec::new(),
            seen_catalog: Vec::new(),
            issued: Vec::new(),
            window: VecDeque::new(),
            catalog_window: VecDeque::new(),
            lighthouse_window: VecDeque::new(),
            lighthouse_catalog_window: VecDeque::new(),
            clock_skew: 0,
            token_len: 32,
        }));
        let addr_cell: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let (st, cell) = (Arc::clone(&state), Arc::clone(&addr_cell));
        let addr = serve(move |req| {
            let st = Arc::clone(&st);
            let cell = Arc::clone(&cell);
            async move {
                let host = cell
                    .lock()
                    .unwrap()
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                console::handle(&st, &host, req).await
            }
        })
        .await;
        *addr_cell.lock().unwrap() = Some(addr);
        Self { addr, state }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Failures for the next DescribeInstanceVncUrl calls, in order.
    pub fn script(&self, items: impl IntoIterator<Item = Scripted>) {
        self.state.lock().unwrap().script.extend(items);
    }

    /// Failures for the next DescribeInstances calls, in order (console calls are unaffected).
    pub fn script_catalog(&self, items: impl IntoIterator<Item = Scripted>) {
        self.state.lock().unwrap().catalog_script.extend(items);
    }

    /// Replaces every instance of `region` (both actions see the change).
    pub fn set_instances(&self, region: &str, list: impl IntoIterator<Item = MockInstance>) {
        let mut st = self.state.lock().unwrap();
        st.instances.retain(|_, i| i.region != region);
        for i in list {
            assert_eq!(i.region, region, "{} is not in {region}", i.id);
            st.instances.insert(i.id.clone(), i);
        }
    }

    /// Adds or replaces one instance.
    pub fn put_instance(&self, i: MockInstance) {
        self.state.lock().unwrap().instances.insert(i.id.clone(), i);
    }

    /// Deletes an instance (it disappears from both actions).
    pub fn remove_instance(&self, id: &str) {
        self.state.lock().unwrap().instances.remove(id);
    }

    /// `n` RUNNING instances `ins-c0000000`… named `cat-00000`… in `region`.
    pub fn many(region: &str, n: u32) -> Vec<MockInstance> {
        (0..n)
            .map(|k| {
                MockInstance::new(&format!("ins-c{k:07}"), &format!("cat-{k:05}"), k)
                    .in_region(region)
            })
            .collect()
    }

    /// DescribeInstances calls as the mock saw them.
    pub fn seen_catalog(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen_catalog.clone()
    }

    /// The most DescribeInstances calls that arrived within any one-second window.
    pub fn max_catalog_per_second(&self) -> usize {
        max_in_a_second(self.seen_catalog().iter().map(|s| s.at).collect())
    }

    /// Makes issued URLs carry a token this long (real ones vary; some exceed Discord's 512).
    pub fn set_token_len(&self, len: usize) {
        self.state.lock().unwrap().token_len = len;
    }

    pub fn set_clock_skew(&self, secs: i64) {
        self.state.lock().unwrap().clock_skew = secs;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Every InstanceVncUrl value handed out (for secret-hygiene checks).
    pub fn issued(&self) -> Vec<String> {
        self.state.lock().unwrap().issued.clone()
    }

    /// The most requests that arrived within any one-second window.
    pub fn max_per_second(&self) -> usize {
        max_in_a_second(self.seen().iter().map(|s| s.at).collect())
    }

    /// The most console requests of one product that arrived within any one-second window.
    pub fn max_per_second_of(&self, product: Service) -> usize {
        max_in_a_second(
            self.seen()
                .iter()
                .filter(|s| s.product == product.name())
                .map(|s| s.at)
                .collect(),
        )
    }
}

fn max_in_a_second(mut times: Vec<Instant>) -> usize {
    times.sort();
    let mut max = 0;
    for (i, t) in times.iter().enumerate() {
        let n = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t) < Duration::from_secs(1))
            .count();
        max = max.max(n);
    }
    max
}
