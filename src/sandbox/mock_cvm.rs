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
//! The verifier here is written from Tencent's documentation independently of `src/tencent/sign.rs`
//! (it canonicalises whatever headers the request names in SignedHeaders).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::http::{serve, HttpRequest, Reply};

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

/// One instance as the mock knows it (both actions read it).
#[derive(Debug, Clone)]
pub struct MockInstance {
    pub id: String,
    pub region: String,
    pub name: String,
    pub state: String,
    pub private_ips: Vec<String>,
    /// `None` is sent as JSON null, as Tencent does for an instance without a public address.
    pub public_ips: Option<Vec<String>>,
    pub zone: String,
    pub os: String,
    pub tags: Vec<(String, String)>,
}

/// The product a request or an instance belongs to, as the mock tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Cvm,
    Lighthouse,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Cvm => "cvm",
            Service::Lighthouse => "lighthouse",
        }
    }

    fn of_version(v: &str) -> Option<Self> {
        match v {
            "2017-03-12" => Some(Service::Cvm),
            "2020-03-24" => Some(Service::Lighthouse),
            _ => None,
        }
    }

    fn of_id(id: &str) -> Self {
        if id.starts_with("lhins-") {
            Service::Lighthouse
        } else {
            Service::Cvm
        }
    }
}

/// Regions where the mock serves Lighthouse.
pub const LIGHTHOUSE_REGIONS: &[&str] = &["ap-guangzhou", "ap-singapore"];

impl MockInstance {
    /// A RUNNING instance in ap-guangzhou-3 with a private IP derived from `n`.
    pub fn new(id: &str, name: &str, n: u32) -> Self {
        Self {
            id: id.to_owned(),
            region: "ap-guangzhou".to_owned(),
            name: name.to_owned(),
            state: "RUNNING".to_owned(),
            private_ips: vec![format!(
                "10.{}.{}.{}",
                (n >> 16) & 255,
                (n >> 8) & 255,
                n & 255
            )],
            public_ips: None,
            zone: "ap-guangzhou-3".to_owned(),
            os: "TencentOS Server 3.1 (TK4)".to_owned(),
            tags: Vec::new(),
        }
    }

    pub fn in_region(mut self, region: &str) -> Self {
        self.zone = format!("{region}-1");
        self.region = region.to_owned();
        self
    }

    pub fn state(mut self, state: &str) -> Self {
        self.state = state.to_owned();
        self
    }

    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn public_ip(mut self, ip: &str) -> Self {
        self.public_ips
            .get_or_insert_with(Vec::new)
            .push(ip.to_owned());
        self
    }

    /// The `InstanceSet[]` entry, with the fields Tencent sends besides the ones vncbot reads.
    fn to_json(&self) -> Value {
        if Service::of_id(&self.id) == Service::Lighthouse {
            return self.to_lighthouse_json();
        }
        json!({
            "Placement": {"Zone": self.zone, "ProjectId": 0, "HostIds": null, "HostIps": null, "HostId": null},
            "InstanceId": self.id,
            "Uuid": format!("{}-uuid", self.id),
            "InstanceState": self.state,
            "RestrictState": "NORMAL",
            "InstanceName": self.name,
            "InstanceChargeType": "POSTPAID_BY_HOUR",
            "InstanceType": "S5.MEDIUM4",
            "CPU": 2,
            "Memory": 4,
            "SystemDisk": {"DiskType": "CLOUD_PREMIUM", "DiskId": "disk-mock0001", "DiskSize": 50},
            "DataDisks": null,
            "PrivateIpAddresses": self.private_ips,
            "PublicIpAddresses": self.public_ips,
            "InternetAccessible": {"InternetChargeType": "TRAFFIC_POSTPAID_BY_HOUR", "InternetMaxBandwidthOut": 0},
            "VirtualPrivateCloud": {"VpcId": "vpc-mock0001", "SubnetId": "subnet-mock0001", "AsVpcGateway": false},
            "ImageId": "img-mock0001",
            "OsName": self.os,
            "SecurityGroupIds": ["sg-mock0001"],
            "LoginSettings": {"KeyIds": null},
            "Tags": self.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
            "CreatedTime": "2024-01-01T00:00:00Z",
            "ExpiredTime": null,
            "LatestOperation": null,
            "LatestOperationState": null,
            "LatestOperationRequestId": null,
            "IPv6Addresses": null,
            "CamRoleName": "",
            "DisasterRecoverGroupId": "",
            "StopChargingMode": "NOT_APPLICABLE",
        })
    }

    /// Lighthouse's `Instance` shape (2020-03-24): addresses and zone under their own names.
    fn to_lighthouse_json(&self) -> Value {
        json!({
            "InstanceId": self.id,
            "BundleId": "bundle_starter_mc_med2_02",
            "BlueprintId": "lhbp-mock0001",
            "CPU": 2,
            "Memory": 2,
            "InstanceName": self.name,
            "InstanceChargeType": "PREPAID",
            "SystemDisk": {"DiskType": "CLOUD_SSD", "DiskSize": 40, "DiskId": "lhdisk-mock0001"},
            "PrivateAddresses": self.private_ips,
            "PublicAddresses": self.public_ips.clone().unwrap_or_default(),
            "InternetAccessible": {"InternetChargeType": "TRAFFIC_POSTPAID_BY_HOUR", "InternetMaxBandwidthOut": 5, "PublicIpAssigned": true},
            "RenewFlag": "NOTIFY_AND_AUTO_RENEW",
            "LoginSettings": {"KeyIds": []},
            "InstanceState": self.state,
            "Uuid": format!("{}-uuid", self.id),
            "LatestOperation": "StartInstances",
            "LatestOperationState": "SUCCESS",
            "LatestOperationRequestId": "mock-op-0001",
            "IsolatedTime": null,
            "CreatedTime": "2024-01-01T00:00:00Z",
            "ExpiredTime": "2025-01-01T00:00:00Z",
            "PlatformType": "LINUX_UNIX",
            "Platform": "UBUNTU",
            "OsName": self.os,
            "Zone": self.zone,
            "Tags": self.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
            "InstanceRestrictState": "NORMAL",
        })
    }
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
                handle(&st, &host, req).await
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

fn request_id() -> String {
    let r = || fastrand::u64(..);
    let (a, b) = (r(), r());
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn error(code: &str, message: &str, rid: &str) -> Reply {
    Reply::json(
        200,
        &json!({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": rid}}),
    )
}

async fn handle(state: &Arc<Mutex<State>>, own_host: &str, req: HttpRequest) -> Reply {
    let catalog = req.header("x-tc-action") == Some(DESCRIBE_INSTANCES);
    let scripted = {
        let mut st = state.lock().unwrap();
        if catalog {
            st.catalog_script.pop_front()
        } else {
            st.script.pop_front()
        }
    };
    let mut forced_error = None;
    let mut missing_url = false;
    match scripted {
        Some(Scripted::Status(s)) => {
            record(state, &req, "http", "-");
            return Reply::Respond {
                status: s,
                content_type: "text/html",
                body: b"<html><body>502 Bad Gateway</body></html>".to_vec(),
            };
        }
        Some(Scripted::Redirect(to)) => {
            record(state, &req, "redirect", "-");
            return Reply::Redirect {
                status: 302,
                location: format!("http://{to}/"),
            };
        }
        Some(Scripted::Reset) => {
            record(state, &req, "reset", "-");
            return Reply::Reset;
        }
        Some(Scripted::Delay(d)) => tokio::time::sleep(d).await,
        Some(Scripted::Error(code)) => forced_error = Some(code),
        Some(Scripted::MissingUrl) => missing_url = true,
        None => {}
    }
    let rid = request_id();
    if catalog {
        let verdict = check(state, own_host, &req).and_then(|()| describe_instances(state, &req));
        return match (verdict, forced_error) {
            (Err((code, msg)), _) => {
                record(state, &req, code, &rid);
                error(code, &msg, &rid)
            }
            (Ok(_), Some(code)) => {
                record(state, &req, code, &rid);
                error(code, "scripted failure", &rid)
            }
            (Ok(mut answer), None) => {
                record(state, &req, "ok", &rid);
                answer["RequestId"] = json!(rid);
                Reply::json(200, &json!({ "Response": answer }))
            }
        };
    }
    let verdict = check(state, own_host, &req);
    let reply = match verdict {
        Err((code, msg)) => {
            record(state, &req, code, &rid);
            error(code, &msg, &rid)
        }
        Ok(()) if forced_error.is_some() => {
            let code = forced_error.unwrap();
            record(state, &req, code, &rid);
            error(code, "scripted failure", &rid)
        }
        Ok(()) if missing_url => {
            record(state, &req, "ok-no-url", &rid);
            Reply::json(200, &json!({"Response": {"RequestId": rid}}))
        }
        Ok(()) => {
            let len = state.lock().unwrap().token_len;
            let token: String = (0..len).map(|_| fastrand::alphanumeric()).collect();
            let url = format!("wss%3A%2F%2Fbjvnc.qcloud.com%3A26789%2Fvnc%3Fs%3D{token}");
            record(state, &req, "ok", &rid);
            state.lock().unwrap().issued.push(url.clone());
            // Tencent labels its JSON oddly at times; clients must parse regardless.
            Reply::Respond {
                status: 200,
                content_type: "text/plain",
                body: serde_json::to_vec(
                    &json!({"Response": {"InstanceVncUrl": url, "RequestId": rid}}),
                )
                .unwrap(),
            }
        }
    };
    reply
}

fn record(state: &Arc<Mutex<State>>, req: &HttpRequest, verdict: &str, rid: &str) {
    let action = req.header("x-tc-action").unwrap_or_default().to_owned();
    let catalog = action == DESCRIBE_INSTANCES;
    let product = req
        .header("x-tc-version")
        .and_then(Service::of_version)
        .map_or("?", Service::name)
        .to_owned();
    let signed_service = req
        .header("authorization")
        .and_then(parse_authorization)
        .map_or_else(|| "-".to_owned(), |a| a.service);
    let seen = Seen {
        product,
        signed_service,
        at: req.received_at,
        answered_at: Instant::now(),
        verdict: verdict.to_owned(),
        request_id: rid.to_owned(),
        region: req.header("x-tc-region").unwrap_or_default().to_owned(),
        language: req.header("x-tc-language").unwrap_or_default().to_owned(),
        body: if catalog {
            String::from_utf8_lossy(&req.body).into_owned()
        } else {
            String::new()
        },
        action,
    };
    let mut st = state.lock().unwrap();
    if catalog {
        st.seen_catalog.push(seen);
    } else {
        st.seen.push(seen);
    }
}

type Verdict = Result<(), (&'static str, String)>;

fn check(state: &Arc<Mutex<State>>, own_host: &str, req: &HttpRequest) -> Verdict {
    let fail = |code: &'static str, msg: &str| Err((code, msg.to_owned()));
    if req.method != "POST" || req.path != "/" {
        return fail("InvalidParameter", "only POST / is served");
    }
    let action = req.header("x-tc-action").unwrap_or_default();
    if action != VNC && action != DESCRIBE_INSTANCES {
        return fail("InvalidAction", "unknown action");
    }
    let Some(service) = req.header("x-tc-version").and_then(Service::of_version) else {
        return fail("NoSuchVersion", "unknown version");
    };
    let Some(auth) = req.header("authorization") else {
        return fail("AuthFailure.SignatureFailure", "no Authorization header");
    };
    let Some(Authorization {
        secret_id,
        date,
        service: signed_service,
        signed_headers,
        signature,
    }) = parse_authorization(auth)
    else {
        return fail(
            "AuthFailure.InvalidAuthorization",
            "malformed Authorization",
        );
    };
    let Some(ts) = req
        .header("x-tc-timestamp")
        .and_then(|t| t.parse::<i64>().ok())
    else {
        return fail("MissingParameter", "X-TC-Timestamp");
    };
    let (key, skew) = {
        let st = state.lock().unwrap();
        (st.keys.get(&secret_id).cloned(), st.clock_skew)
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + skew;
    if (now - ts).abs() > 300 {
        return fail(
            "AuthFailure.SignatureExpire",
            "timestamp more than 300 s off",
        );
    }
    let Some((secret_key, needs_token)) = key else {
        return fail("AuthFailure.SecretIdNotFound", "unknown SecretId");
    };
    if req.header("host") != Some(own_host) {
        return fail("AuthFailure.SignatureFailure", "Host is not this endpoint");
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"content-type") || !names.contains(&"host") {
        return fail(
            "AuthFailure.SignatureFailure",
            "content-type and host must be signed",
        );
    }
    let mut canonical_headers = String::new();
    for n in &names {
        let v = req
            .header(n)
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        canonical_headers.push_str(&format!("{n}:{v}\n"));
    }
    let canonical = format!(
        "POST\n/\n\n{canonical_headers}\n{signed_headers}\n{}",
        hex::encode(Sha256::digest(&req.body))
    );
    let ts_date = time::OffsetDateTime::from_unix_timestamp(ts)
        .unwrap()
        .date();
    let expected_date = format!(
        "{:04}-{:02}-{:02}",
        ts_date.year(),
        u8::from(ts_date.month()),
        ts_date.day()
    );
    if date != expected_date {
        return fail(
            "AuthFailure.SignatureFailure",
            "credential date is not the timestamp's UTC date",
        );
    }
    // Recompute with the service the request says it signed for, then check that service
    // is the one the action belongs to: a signature valid for `cvm` does not open Lighthouse.
    let sts = format!(
        "TC3-HMAC-SHA256\n{ts}\n{date}/{signed_service}/tc3_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mac = |k: &[u8], d: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(k).unwrap();
        m.update(d);
        m.finalize().into_bytes().to_vec()
    };
    let k = mac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k = mac(&k, signed_service.as_bytes());
    let k = mac(&k, b"tc3_request");
    if hex::encode(mac(&k, sts.as_bytes())) != signature {
        return fail("AuthFailure.SignatureFailure", "signature mismatch");
    }
    if signed_service != service.name() {
        return Err((
            "AuthFailure.SignatureFailure",
            format!(
                "the request is signed for service {signed_service}, but {} version {} belongs to {}",
                action,
                req.header("x-tc-version").unwrap_or_default(),
                service.name()
            ),
        ));
    }
    if let Some(t) = needs_token {
        if req.header("x-tc-token") != Some(t.as_str()) {
            return fail(
                "AuthFailure.TokenFailure",
                "temporary credentials need X-TC-Token",
            );
        }
    }
    let region = req.header("x-tc-region").unwrap_or_default().to_owned();
    let mut st = state.lock().unwrap();
    let served = match service {
        Service::Cvm => st.regions.contains(&region),
        Service::Lighthouse => LIGHTHOUSE_REGIONS.contains(&region.as_str()),
    };
    if !served {
        return match service {
            Service::Cvm => fail("InvalidParameterValue", "unknown region"),
            Service::Lighthouse => fail("AuthFailure.InvalidRegion", "region not open"),
        };
    }
    if action == DESCRIBE_INSTANCES {
        // Tencent's limit for DescribeInstances: 40 calls a second, counted apart from the
        // console action's (and, here, per product).
        let cutoff = req.received_at - Duration::from_secs(1);
        let window = match service {
            Service::Cvm => &mut st.catalog_window,
            Service::Lighthouse => &mut st.lighthouse_catalog_window,
        };
        while window.front().is_some_and(|t| *t <= cutoff) {
            window.pop_front();
        }
        if window.len() >= 40 {
            return fail("RequestLimitExceeded", "more than 40 requests in a second");
        }
        window.push_back(req.received_at);
        return Ok(());
    }
    // Tencent's limit: 10 calls a second for this action, per account and product, in any
    // window.
    let cutoff = req.received_at - Duration::from_secs(1);
    let window = match service {
        Service::Cvm => &mut st.window,
        Service::Lighthouse => &mut st.lighthouse_window,
    };
    while window.front().is_some_and(|t| *t <= cutoff) {
        window.pop_front();
    }
    if window.len() >= 10 {
        return fail("RequestLimitExceeded", "more than 10 requests in a second");
    }
    window.push_back(req.received_at);
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(Value::Object(o)) => Value::Object(o),
        _ => return fail("InvalidParameter", "body is not a JSON object"),
    };
    if let Some(k) = body
        .as_object()
        .unwrap()
        .keys()
        .find(|k| *k != "InstanceId")
    {
        return Err(("UnknownParameter", format!("unknown parameter {k}")));
    }
    let Some(id) = body["InstanceId"].as_str() else {
        return fail("MissingParameter", "InstanceId");
    };
    if service == Service::Lighthouse {
        if !well_formed_id_of(id, Service::Lighthouse) {
            return fail(
                "InvalidParameterValue.InstanceIdMalformed",
                "malformed instance ID",
            );
        }
        return match st.instances.get(id) {
            Some(i) if i.region != region => {
                fail("ResourceNotFound.InstanceIdNotFound", "not in this region")
            }
            None => fail("ResourceNotFound.InstanceIdNotFound", "no such instance"),
            Some(i) if i.state == "STOPPED" => fail(
                "UnsupportedOperation.InvalidInstanceState",
                "instance is stopped",
            ),
            Some(_) => Ok(()),
        };
    }
    let well_formed = id.len() == 12
        && id.starts_with("ins-")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !well_formed {
        return fail("InvalidInstanceId.Malformed", "malformed instance ID");
    }
    match st.instances.get(id) {
        Some(i) if i.region != region => fail("InvalidInstanceId.NotFound", "not in this region"),
        None => fail("InvalidInstanceId.NotFound", "no such instance"),
        Some(i) if i.state == "STOPPED" => fail(
            "UnsupportedOperation.InstanceStateStopped",
            "instance is stopped",
        ),
        Some(_) => Ok(()),
    }
}

fn well_formed_id_of(id: &str, service: Service) -> bool {
    let prefix = match service {
        Service::Cvm => "ins-",
        Service::Lighthouse => "lhins-",
    };
    id.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == 8
            && rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// The DescribeInstances answer (without RequestId) for a request that passed the checks.
fn describe_instances(
    state: &Arc<Mutex<State>>,
    req: &HttpRequest,
) -> Result<Value, (&'static str, String)> {
    let fail = |code: &'static str, msg: &str| Err((code, msg.to_owned()));
    let region = req.header("x-tc-region").unwrap_or_default().to_owned();
    let service = req
        .header("x-tc-version")
        .and_then(Service::of_version)
        .unwrap_or(Service::Cvm);
    let body = match serde_json::from_slice(&req.body) {
        Ok(Value::Object(o)) => o,
        _ => return fail("InvalidParameter", "body is not a JSON object"),
    };
    if let Some(k) = body
        .keys()
        .find(|k| !["Offset", "Limit", "InstanceIds", "Filters"].contains(&k.as_str()))
    {
        return Err(("UnknownParameter", format!("unknown parameter {k}")));
    }
    let int = |k: &str, default: u64| -> Result<u64, (&'static str, String)> {
        match body.get(k) {
            None => Ok(default),
            Some(v) => v.as_u64().ok_or((
                "InvalidParameterValue",
                format!("{k} must be a non-negative integer"),
            )),
        }
    };
    let offset = int("Offset", 0)?;
    let limit = int("Limit", 20)?;
    if !(1..=100).contains(&limit) {
        return fail("InvalidParameterValue.LimitExceeded", "Limit is 1 to 100");
    }
    let ids: Option<Vec<String>> = match body.get("InstanceIds") {
        None => None,
        Some(Value::Array(a)) => {
            let ids: Option<Vec<String>> =
                a.iter().map(|v| v.as_str().map(str::to_owned)).collect();
            let Some(ids) = ids else {
                return fail("InvalidParameterValue", "InstanceIds must be strings");
            };
            if ids.len() > 100 {
                return fail(
                    "InvalidParameterValue.LimitExceeded",
                    "at most 100 InstanceIds",
                );
            }
            if let Some(bad) = ids.iter().find(|i| !well_formed_id_of(i, service)) {
                return Err((
                    match service {
                        Service::Cvm => "InvalidInstanceId.Malformed",
                        Service::Lighthouse => "InvalidParameterValue.InstanceIdMalformed",
                    },
                    format!("malformed instance ID {bad}"),
                ));
            }
            Some(ids)
        }
        Some(_) => return fail("InvalidParameterValue", "InstanceIds must be an array"),
    };
    let mut filters: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(f) = body.get("Filters") {
        if ids.is_some() {
            return fail(
                "InvalidParameterCombination",
                "InstanceIds and Filters cannot be combined",
            );
        }
        let Some(list) = f.as_array() else {
            return fail("InvalidParameterValue", "Filters must be an array");
        };
        if list.len() > 10 {
            return fail("InvalidFilterValue.LimitExceeded", "at most 10 Filters");
        }
        for item in list {
            let name = item["Name"].as_str().unwrap_or_default().to_owned();
            let values: Vec<String> = item["Values"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if values.is_empty() || values.len() > 5 {
                return fail(
                    "InvalidFilterValue.LimitExceeded",
                    "1 to 5 Values per filter",
                );
            }
            let known = [
                "instance-name",
                "instance-id",
                "instance-state",
                "private-ip-address",
                "public-ip-address",
                "tag-key",
            ];
            if !known.contains(&name.as_str()) && !name.starts_with("tag:") {
                return Err(("InvalidFilter", format!("unknown filter {name}")));
            }
            filters.push((name, values));
        }
    }
    let st = state.lock().unwrap();
    let mut matching: Vec<&MockInstance> = st
        .instances
        .values()
        .filter(|i| i.region == region && Service::of_id(&i.id) == service)
        .filter(|i| ids.as_ref().is_none_or(|ids| ids.contains(&i.id)))
        .filter(|i| {
            filters.iter().all(|(name, values)| {
                values.iter().any(|v| match name.as_str() {
                    "instance-name" => i.name == *v,
                    "instance-id" => i.id == *v,
                    "instance-state" => i.state == *v,
                    "private-ip-address" => i.private_ips.contains(v),
                    "public-ip-address" => i.public_ips.as_ref().is_some_and(|p| p.contains(v)),
                    "tag-key" => i.tags.iter().any(|(k, _)| k == v),
                    tag => {
                        let key = &tag["tag:".len()..];
                        i.tags.iter().any(|(k, tv)| k == key && tv == v)
                    }
                })
            })
        })
        .collect();
    matching.sort_by(|a, b| a.id.cmp(&b.id));
    let total = matching.len();
    let page: Vec<Value> = matching
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(MockInstance::to_json)
        .collect();
    Ok(json!({ "TotalCount": total, "InstanceSet": page }))
}

struct Authorization {
    secret_id: String,
    date: String,
    /// The service in the credential scope: `cvm`, `lighthouse`.
    service: String,
    signed_headers: String,
    signature: String,
}

fn parse_authorization(a: &str) -> Option<Authorization> {
    let rest = a.strip_prefix("TC3-HMAC-SHA256 ")?;
    let mut cred = None;
    let mut signed = None;
    let mut sig = None;
    for part in rest.split(", ") {
        let (k, v) = part.split_once('=')?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => sig = Some(v),
            _ => return None,
        }
    }
    let mut c = cred?.split('/');
    let secret_id = c.next()?.to_owned();
    let date = c.next()?.to_owned();
    let service = c.next()?.to_owned();
    if !["cvm", "lighthouse"].contains(&service.as_str())
        || c.next()? != "tc3_request"
        || c.next().is_some()
    {
        return None;
    }
    Some(Authorization {
        secret_id,
        date,
        service,
        signed_headers: signed?.to_owned(),
        signature: sig?.to_owned(),
    })
}
