//! Lighthouse instances (`lhins-…`) end to end against the mock, which serves CVM and Lighthouse
//! at one endpoint and checks each request's signature against the service it names: console
//! URLs, error codes, each product's own pace, the catalog, bad input refused before any call,
//! and `vncbot url` run as a user would.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::mock_cvm::{self, MockCvm, MockInstance, Scripted, Seen, Service};
use support::tencent::ClientBuilder;
use support::{config_text, write_config, TempDir};
use vncbot::config::Config;
use vncbot::ids::{InstanceId, InvalidInstanceId, Product, Region};
use vncbot::tencent::sign::{sign, SignInput};
use vncbot::tencent::{
    ApiErrorKind, Catalog, Console, InstancesQuery, NotServed, State, TencentClient, TencentError,
};

const GZ: &str = "ap-guangzhou";
const SG: &str = "ap-singapore";

fn region(s: &str) -> Region {
    Region::parse(s).unwrap()
}

fn id(s: &str) -> InstanceId {
    InstanceId::parse(s).unwrap()
}

/// A client of the mock serving `products` in `regions`, Lighthouse in `lighthouse`.
fn client_for(
    mock: &MockCvm,
    regions: &[&str],
    products: &[Product],
    lighthouse: &[&str],
) -> TencentClient {
    ClientBuilder::mock(mock)
        .regions(regions)
        .products(products)
        .lighthouse_regions(lighthouse)
        .timeout(Duration::from_secs(5))
        .build()
}

/// Both products, CVM in ap-guangzhou, Lighthouse in ap-guangzhou and ap-singapore.
fn both(mock: &MockCvm) -> TencentClient {
    client_for(
        mock,
        &[GZ, SG],
        &[Product::Cvm, Product::Lighthouse],
        &[GZ, SG],
    )
}

async fn api_error(c: &TencentClient, r: &str, instance: &str) -> TencentError {
    c.describe_instance_vnc_url(&region(r), &id(instance))
        .await
        .unwrap_err()
}

#[tokio::test]
async fn a_lighthouse_console_is_minted_with_lighthouse_signature_version_and_region() {
    let mock = MockCvm::start().await;
    let c = both(&mock);
    // Through the trait the core uses, with the same signature as for CVM.
    let url = Console::describe_instance_vnc_url(&c, &region(SG), &id("lhins-sg000001"), &|| true)
        .await
        .unwrap();
    assert_eq!(url.attempts, 1);
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].verdict, "ok");
    assert_eq!(seen[0].product, "lighthouse");
    assert_eq!(seen[0].signed_service, "lighthouse");
    assert_eq!(seen[0].region, SG);
    assert_eq!(seen[0].action, "DescribeInstanceVncUrl");
    assert_eq!(url.request_id, seen[0].request_id);
    // CVM through the same client still signs for `cvm`.
    c.describe_instance_vnc_url(&region(GZ), &id("ins-running1"))
        .await
        .unwrap();
    let seen = mock.seen();
    assert_eq!(
        (seen[1].product.as_str(), seen[1].signed_service.as_str()),
        ("cvm", "cvm")
    );
    let metrics = c.metrics().render();
    assert!(
        metrics.contains(r#"vncbot_tencent_calls_total{product="lighthouse",action="DescribeInstanceVncUrl",result="ok"}"#),
        "{metrics}"
    );
    assert!(
        !metrics.contains("lhins-"),
        "metrics never carry an instance ID"
    );
}

#[tokio::test]
async fn lighthouse_errors_map_to_the_same_sentences_as_cvm() {
    let mock = MockCvm::start().await;
    let c = both(&mock);
    let gz = region(GZ);
    let kind = |e: &TencentError| match e {
        TencentError::Api { kind, code, .. } => (*kind, code.clone()),
        other => panic!("{other:?}"),
    };

    let lh = api_error(&c, GZ, "lhins-stop0001").await;
    let cvm = api_error(&c, GZ, "ins-stopped1").await;
    assert_eq!(
        kind(&lh),
        (
            ApiErrorKind::InstanceState,
            "UnsupportedOperation.InvalidInstanceState".into()
        )
    );
    assert_eq!(kind(&cvm).0, ApiErrorKind::InstanceState);
    assert_eq!(
        lh.user_message(&id("lhins-stop0001"), &gz)
            .replace("lhins-stop0001", "X"),
        cvm.user_message(&id("ins-stopped1"), &gz)
            .replace("ins-stopped1", "X"),
        "the same sentence for either product"
    );

    // Not found: no such instance, or one in another region.
    for instance in ["lhins-nothere1", "lhins-sg000001"] {
        let e = api_error(&c, GZ, instance).await;
        assert_eq!(
            kind(&e),
            (
                ApiErrorKind::NotFound,
                "ResourceNotFound.InstanceIdNotFound".into()
            ),
            "{instance}"
        );
        assert!(e
            .user_message(&id(instance), &gz)
            .starts_with(&format!("There is no instance {instance} in ap-guangzhou")));
    }

    // Busy, credentials and transient codes of Lighthouse's own list.
    mock.script([
        Scripted::Error("UnsupportedOperation.LatestOperationUnfinished"),
        Scripted::Error("UnauthorizedOperation.NoPermission"),
    ]);
    let busy = api_error(&c, GZ, "lhins-run00001").await;
    assert_eq!(kind(&busy).0, ApiErrorKind::Busy);
    assert!(busy
        .user_message(&id("lhins-run00001"), &gz)
        .contains("is busy with another operation"));
    let cam = api_error(&c, GZ, "lhins-run00001").await;
    assert_eq!(kind(&cam).0, ApiErrorKind::Credentials);
    assert!(cam.needs_admin());

    // A transient failure is retried and the first success returned.
    mock.script([Scripted::Error("FailedOperation.DescribeInstanceStatus")]);
    let ok = c
        .describe_instance_vnc_url(&gz, &id("lhins-run00001"))
        .await
        .unwrap();
    assert_eq!(ok.attempts, 2);

    // A code nobody documented: named, with the RequestId, and the admins are told.
    mock.script([Scripted::Error("FailedOperation.InstanceOperationFailed")]);
    let odd = api_error(&c, GZ, "lhins-run00001").await;
    assert_eq!(kind(&odd).0, ApiErrorKind::Other);
    assert!(odd.needs_admin());
    let rid = mock.seen().last().unwrap().request_id.clone();
    let m = odd.user_message(&id("lhins-run00001"), &gz);
    assert!(
        m.contains("FailedOperation.InstanceOperationFailed")
            && m.contains(&format!("RequestId {rid}")),
        "{m}"
    );
}

/// A request signed for `cvm` sent to a Lighthouse action is refused (and the other way round),
/// while the same request signed for `lighthouse` succeeds: the mock checks the service.
#[tokio::test]
async fn a_signature_for_the_wrong_service_is_refused() {
    let mock = MockCvm::start().await;
    let http = reqwest::Client::new();
    let host = mock.addr.to_string();
    let send = |service: &'static str, version: &'static str, instance: &'static str| {
        let http = http.clone();
        let host = host.clone();
        let endpoint = mock.endpoint();
        async move {
            let body = format!(r#"{{"InstanceId":"{instance}"}}"#);
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let signed = sign(&SignInput {
                secret_id: mock_cvm::SECRET_ID,
                secret_key: mock_cvm::SECRET_KEY,
                service,
                timestamp: ts,
                headers: &[("content-type", "application/json"), ("host", &host)],
                payload: body.as_bytes(),
            })
            .unwrap();
            let bytes = http
                .post(endpoint)
                .header("content-type", "application/json")
                .header("x-tc-action", "DescribeInstanceVncUrl")
                .header("x-tc-version", version)
                .header("x-tc-region", GZ)
                .header("x-tc-timestamp", ts.to_string())
                .header("authorization", signed.authorization)
                .body(body)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            answer["Response"]["Error"]["Code"]
                .as_str()
                .unwrap_or("ok")
                .to_owned()
        }
    };
    assert_eq!(
        send("cvm", "2020-03-24", "lhins-run00001").await,
        "AuthFailure.SignatureFailure"
    );
    assert_eq!(
        send("lighthouse", "2017-03-12", "ins-running1").await,
        "AuthFailure.SignatureFailure"
    );
    assert_eq!(
        send("lighthouse", "2020-03-24", "lhins-run00001").await,
        "ok"
    );
    assert_eq!(send("cvm", "2017-03-12", "ins-running1").await, "ok");
    let seen = mock.seen();
    assert_eq!(
        (seen[0].product.as_str(), seen[0].signed_service.as_str()),
        ("lighthouse", "cvm")
    );
}

/// How many calls to the other product the mock saw before the `nth` call to `product`.
fn others_before(seen: &[Seen], product: &str, nth: usize) -> usize {
    let (mut calls, mut others) = (0, 0);
    for s in seen {
        if s.product != product {
            others += 1;
        } else {
            calls += 1;
            if calls == nth {
                return others;
            }
        }
    }
    panic!("the mock never saw call {nth} to {product}: {seen:?}");
}

/// Each product has its own 10-a-second budget: a burst of CVM consoles does not hold a
/// Lighthouse one back, and neither product ever exceeds 10 in a second.
#[tokio::test]
async fn a_cvm_burst_does_not_delay_lighthouse() {
    let mock = MockCvm::start().await;
    let c = std::sync::Arc::new(both(&mock));
    let gz = region(GZ);
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (c, gz) = (std::sync::Arc::clone(&c), gz.clone());
        tasks.push(tokio::spawn(async move {
            c.describe_instance_vnc_url(&gz, &id("ins-running1"))
                .await
                .map(|_| ())
        }));
    }
    // Queued behind twelve CVM calls (over a second of CVM slots), one Lighthouse call.
    tokio::task::yield_now().await;
    let lh = c
        .describe_instance_vnc_url(&gz, &id("lhins-run00001"))
        .await
        .unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(lh.attempts, 1);
    // Order, not time: the Lighthouse call went out before the CVM calls that had to wait for
    // CVM's next window (the 11th and 12th), however slow this machine is.
    let seen = mock.seen();
    assert!(others_before(&seen, "lighthouse", 1) <= 10, "{seen:?}");
    assert!(seen.iter().all(|s| s.verdict == "ok"), "{seen:?}");
    assert!(mock.max_per_second_of(Service::Cvm) <= 10);
    assert!(mock.max_per_second_of(Service::Lighthouse) <= 10);

    // And the other way round: twelve Lighthouse calls do not delay CVM.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (c, gz) = (std::sync::Arc::clone(&c), gz.clone());
        tasks.push(tokio::spawn(async move {
            c.describe_instance_vnc_url(&gz, &id("lhins-run00001"))
                .await
                .map(|_| ())
        }));
    }
    tokio::task::yield_now().await;
    c.describe_instance_vnc_url(&gz, &id("ins-running1"))
        .await
        .unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // The CVM call went out before the Lighthouse calls that had to wait for Lighthouse's next
    // window: the 13th CVM call overall came before the 12th Lighthouse one (the 1st was above).
    let seen = mock.seen();
    assert!(others_before(&seen, "cvm", 13) <= 11, "{seen:?}");
    assert!(mock.max_per_second_of(Service::Lighthouse) <= 10);
    assert!(mock.max_per_second_of(Service::Cvm) <= 10);
    assert!(mock.seen().iter().all(|s| s.verdict == "ok"));
}

/// Refused before any call: a product the config does not serve, a Lighthouse region it does not
/// list, and Lighthouse IDs of the wrong shape (which cannot even be parsed).
#[tokio::test]
async fn input_the_config_does_not_serve_never_reaches_tencent() {
    let mock = MockCvm::start().await;
    let cvm_only = client_for(&mock, &[GZ], &[Product::Cvm], &[]);
    let e = api_error(&cvm_only, GZ, "lhins-run00001").await;
    assert!(
        matches!(
            &e,
            TencentError::NotServed(NotServed::Product {
                product: Product::Lighthouse,
                ..
            })
        ),
        "{e:?}"
    );
    let m = e.user_message(&id("lhins-run00001"), &region(GZ));
    assert!(
        m.contains("lhins-run00001 is a Lighthouse instance, and this bot does not serve Lighthouse instances (tencent.products)"),
        "{m}"
    );
    assert_eq!(e.code(), "product_not_served");
    assert!(!e.is_transient());

    let gz_only = client_for(
        &mock,
        &[GZ, SG],
        &[Product::Cvm, Product::Lighthouse],
        &[GZ],
    );
    let e = api_error(&gz_only, SG, "lhins-sg000001").await;
    let m = e.user_message(&id("lhins-sg000001"), &region(SG));
    assert!(
        m.contains(
            "does not serve Lighthouse instances in ap-singapore; it serves them in: ap-guangzhou"
        ),
        "{m}"
    );
    assert_eq!(e.code(), "region_not_served");
    // The catalog does not list Lighthouse there either.
    let err = gz_only
        .describe_instances_of(
            Product::Lighthouse,
            &region(SG),
            &InstancesQuery::Page {
                offset: 0,
                limit: 100,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TencentError::NotServed(_)), "{err:?}");

    for (bad, want) in [
        ("lhins-run0001", "must be 14"),
        ("lhins-run000001", "must be 14"),
        ("LHINS-RUN00001", "try lhins-run00001"),
        ("lhins-RUN00001", "try lhins-run00001"),
    ] {
        let err = InstanceId::parse(bad).unwrap_err();
        assert!(
            matches!(
                err,
                InvalidInstanceId::LighthouseWrongLength(_) | InvalidInstanceId::UpperCase(..)
            ),
            "{bad}: {err:?}"
        );
        assert!(err.to_string().contains(want), "{bad}: {err}");
    }
    assert!(mock.seen().is_empty(), "nothing reached Tencent");
    assert!(mock.seen_catalog().is_empty(), "nothing reached Tencent");
}

#[tokio::test]
async fn the_catalog_lists_both_products_each_on_its_own() {
    let mock = MockCvm::start().await;
    let c = client_for(&mock, &[GZ], &[Product::Cvm, Product::Lighthouse], &[GZ]);
    let cat = Catalog::new(&[region(GZ)]);
    cat.refresh_all(&c).await;
    let view = cat.view();
    let lh = view.lookup(&id("lhins-run00001")).expect("listed");
    assert_eq!(lh.product(), Product::Lighthouse);
    assert_eq!(lh.name, "blog");
    assert_eq!(lh.state, State::Running);
    assert_eq!(
        lh.public_ips,
        vec!["203.0.113.10".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(lh.private_ips.len(), 1);
    assert_eq!(lh.zone, "ap-guangzhou-1");
    assert_eq!(lh.tag("env"), Some("prod"));
    assert_eq!(
        view.lookup(&id("lhins-stop0001")).unwrap().state,
        State::Stopped
    );
    assert!(
        view.lookup(&id("lhins-sg000001")).is_none(),
        "another region"
    );
    assert_eq!(
        view.lookup(&id("ins-web00001")).unwrap().product(),
        Product::Cvm
    );
    // One search covers both products.
    let hits: Vec<String> = view
        .search("blog", 25, |_| true)
        .iter()
        .map(|i| i.id.to_string())
        .collect();
    assert_eq!(hits, vec!["lhins-run00001", "lhins-stop0001"]);
    let status: Vec<String> = cat.status().iter().map(ToString::to_string).collect();
    assert_eq!(status.len(), 2, "{status:?}");
    assert!(
        status[0].starts_with("ap-guangzhou: 403 instances"),
        "{status:?}"
    );
    assert!(
        status[1].starts_with("ap-guangzhou Lighthouse: 2 instances"),
        "{status:?}"
    );
    let lh_calls: Vec<_> = mock
        .seen_catalog()
        .into_iter()
        .filter(|s| s.product == "lighthouse")
        .collect();
    assert_eq!(lh_calls.len(), 1);
    assert_eq!(lh_calls[0].signed_service, "lighthouse");
    assert_eq!(lh_calls[0].body, r#"{"Limit":100,"Offset":0}"#);
    let metrics = cat.metrics().render();
    assert!(
        metrics
            .contains(r#"vncbot_catalog_instances{region="ap-guangzhou",product="lighthouse"} 2"#),
        "{metrics}"
    );

    // One instance re-read through its own product's API.
    let mut stopped = MockInstance::new("lhins-run00001", "blog", 5000)
        .state("STOPPED")
        .tag("env", "prod");
    stopped.zone = "ap-guangzhou-1".into();
    mock.put_instance(stopped);
    let fresh = cat
        .refresh_one(&c, &region(GZ), &id("lhins-run00001"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fresh.state, State::Stopped);
    assert_eq!(
        cat.lookup(&id("lhins-run00001")).unwrap().state,
        State::Stopped
    );
    let last = mock.seen_catalog().pop().unwrap();
    assert_eq!(
        (last.product.as_str(), last.body.as_str()),
        ("lighthouse", r#"{"InstanceIds":["lhins-run00001"]}"#)
    );
    // An Ids query of the other product is refused before sending.
    let before = mock.seen_catalog().len();
    assert!(c
        .describe_instances_of(
            Product::Lighthouse,
            &region(GZ),
            &InstancesQuery::Ids(vec![id("ins-running1")])
        )
        .await
        .is_err());
    assert_eq!(mock.seen_catalog().len(), before);
}

/// A missing `lighthouse:DescribeInstances` permission is Lighthouse's alone: CVM's list stays.
#[tokio::test]
async fn a_missing_lighthouse_permission_leaves_cvm_listed() {
    let mock = MockCvm::start().await;
    let c = client_for(&mock, &[GZ], &[Product::Lighthouse], &[GZ]);
    mock.script_catalog([Scripted::Error("UnauthorizedOperation.NoPermission")]);
    let cat = Catalog::new(&[region(GZ)]);
    cat.refresh_all(&c).await;
    let status = cat.status();
    assert_eq!(status.len(), 1, "a Lighthouse-only config lists no CVM");
    assert_eq!(status[0].product, Product::Lighthouse);
    assert!(status[0].permission_missing);
    assert!(
        status[0]
            .to_string()
            .contains("the CAM policy needs lighthouse:DescribeInstances"),
        "{}",
        status[0]
    );
    assert!(mock
        .seen_catalog()
        .iter()
        .all(|s| s.product == "lighthouse"));
}

// `vncbot url`, run as a user would.

fn vncbot() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_vncbot"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("USER", "tester")
        .env("TENCENTCLOUD_SECRET_ID", mock_cvm::SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", mock_cvm::SECRET_KEY)
        .env("DISCORD_TOKEN", "discord-token-for-tests");
    c
}

async fn url(cfg: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = vncbot()
        .arg("url")
        .args(args)
        .arg("--config")
        .arg(cfg)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn vncbot_url_opens_lighthouse_and_refuses_what_is_not_served() {
    let mock = MockCvm::start().await;
    let dir = TempDir::new("lh-url");
    let base = config_text(&dir, &mock.endpoint(), "");
    let with_lighthouse = base.replace(
        "[tencent]\n",
        "[tencent]\nproducts = [\"cvm\", \"lighthouse\"]\n",
    );
    assert!(Config::parse(&with_lighthouse).is_ok());
    let cfg = write_config(&dir, &with_lighthouse);

    let (code, stdout, stderr) =
        url(&cfg, &["lhins-run00001", "--reason", "INC-7 blog down"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.trim_end(),
        format!("{}{}", vncbot::link::CONSOLE_PAGE, mock.issued()[0])
    );
    assert_eq!(mock.seen()[0].product, "lighthouse");
    let journal = std::fs::read_to_string(dir.join("audit/vncbot-audit.jsonl")).unwrap();
    assert!(journal.contains("lhins-run00001"), "{journal}");
    assert!(
        !journal.contains(&mock.issued()[0]),
        "the link is never journaled"
    );

    // Bad input: one clear line each, nothing sent.
    let before = mock.seen().len();
    for (args, want) in [
        (vec!["lhins-run0001"], "must be 14"),
        (vec!["LHINS-RUN00001"], "try lhins-run00001"),
    ] {
        let (code, stdout, stderr) = url(&cfg, &args).await;
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(stdout.is_empty());
    }
    // The default Lighthouse regions leave out the finance-cloud one.
    let (code, stdout, stderr) =
        url(&cfg, &["lhins-run00001", "--region", "ap-shanghai-fsi"]).await;
    assert_eq!(
        code,
        Some(2),
        "bad input, refused before the journal: {stderr}"
    );
    assert!(
        stderr.contains("does not serve Lighthouse instances in ap-shanghai-fsi"),
        "{stderr}"
    );
    assert!(stdout.is_empty());

    // The same ID in a CVM-only config.
    let cvm_only = write_config(&dir, &base);
    let (code, stdout, stderr) = url(&cvm_only, &["lhins-run00001"]).await;
    assert_eq!(
        code,
        Some(2),
        "bad input, refused before the journal: {stderr}"
    );
    assert!(
        stderr.contains("does not serve Lighthouse instances (tencent.products)"),
        "{stderr}"
    );
    assert!(stdout.is_empty());
    assert_eq!(mock.seen().len(), before, "no request reached Tencent");
}
