//! The CVM client over real HTTP against the mock Tencent endpoint.

mod support;

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::http::{serve, HttpRequest, Reply};
use support::mock_cvm::{self, MockCvm, Scripted};
use vncbot::config::{Language, TencentConfig, TencentCredentials};
use vncbot::ids::{InstanceId, Region};
use vncbot::limits::ApiPacer;
use vncbot::link::CONSOLE_PAGE;
use vncbot::tencent::client::RetryPolicy;
use vncbot::tencent::{ApiErrorKind, Console, CvmClient, TencentError, VncUrl};

fn creds(id: &str, key: &str, token: Option<&str>) -> TencentCredentials {
    TencentCredentials {
        secret_id: id.into(),
        secret_key: key.to_string().into(),
        session_token: token.map(|t| t.to_string().into()),
    }
}

fn client_with(mock: &MockCvm, creds: TencentCredentials, timeout: Duration) -> CvmClient {
    let cfg = TencentConfig {
        regions: vec![Region::parse("ap-guangzhou").unwrap()],
        products: vec![vncbot::ids::Product::Cvm],
        lighthouse_regions: vec![],
        endpoint: Some(mock.endpoint().parse().unwrap()),
        language: Language::EnUs,
        timeout,
    };
    let pacer = ApiPacer::new(NonZeroU32::new(10).unwrap(), Duration::from_secs(60));
    let retry = RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(20),
        rate_limited_floor: Duration::from_millis(1100),
    };
    CvmClient::new(&cfg, creds, pacer, retry).unwrap()
}

fn client(mock: &MockCvm) -> CvmClient {
    client_with(
        mock,
        creds(mock_cvm::SECRET_ID, mock_cvm::SECRET_KEY, None),
        Duration::from_secs(2),
    )
}

fn gz() -> Region {
    Region::parse("ap-guangzhou").unwrap()
}

fn id(s: &str) -> InstanceId {
    InstanceId::parse(s).unwrap()
}

async fn api_code(c: &CvmClient, region: &Region, instance: &str) -> (ApiErrorKind, String) {
    match c.describe_instance_vnc_url(region, &id(instance)).await {
        Err(TencentError::Api {
            kind,
            code,
            request_id,
            ..
        }) => {
            assert!(!request_id.is_empty());
            (kind, code)
        }
        other => panic!("expected a Tencent API error, got {other:?}"),
    }
}

#[tokio::test]
async fn success_returns_the_composed_link_and_request_id() {
    let mock = MockCvm::start().await;
    let c = client(&mock);
    let vnc = c
        .describe_instance_vnc_url(&gz(), &id("ins-running1"))
        .await
        .unwrap();
    let issued = mock.issued();
    assert_eq!(issued.len(), 1);
    assert_eq!(
        vnc.url.expose_link(),
        format!("{CONSOLE_PAGE}{}", issued[0])
    );
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].verdict, "ok");
    assert_eq!(vnc.request_id, seen[0].request_id);
    assert_eq!(
        (seen[0].region.as_str(), seen[0].language.as_str()),
        ("ap-guangzhou", "en-US")
    );
    assert_eq!(vnc.attempts, 1);
}

#[tokio::test]
async fn temporary_credentials_send_the_session_token() {
    let mock = MockCvm::start().await;
    let with_token = client_with(
        &mock,
        creds(
            mock_cvm::TEMP_SECRET_ID,
            mock_cvm::TEMP_SECRET_KEY,
            Some(mock_cvm::SESSION_TOKEN),
        ),
        Duration::from_secs(2),
    );
    with_token
        .describe_instance_vnc_url(&gz(), &id("ins-running1"))
        .await
        .unwrap();
    let without = client_with(
        &mock,
        creds(mock_cvm::TEMP_SECRET_ID, mock_cvm::TEMP_SECRET_KEY, None),
        Duration::from_secs(2),
    );
    assert_eq!(
        api_code(&without, &gz(), "ins-running1").await,
        (ApiErrorKind::Credentials, "AuthFailure.TokenFailure".into())
    );
}

#[tokio::test]
async fn finance_region_is_sent_with_its_region_header() {
    let mock = MockCvm::start().await;
    let c = client(&mock);
    let fsi = Region::parse("ap-shanghai-fsi").unwrap();
    c.describe_instance_vnc_url(&fsi, &id("ins-fsi00001"))
        .await
        .unwrap();
    assert_eq!(mock.seen()[0].region, "ap-shanghai-fsi");
}

#[tokio::test]
async fn every_error_family_is_typed() {
    let mock = MockCvm::start().await;
    let c = client(&mock);
    assert_eq!(
        api_code(&c, &gz(), "ins-nothere1").await,
        (ApiErrorKind::NotFound, "InvalidInstanceId.NotFound".into())
    );
    // In another region than the one asked.
    assert_eq!(
        api_code(&c, &gz(), "ins-fsi00001").await.0,
        ApiErrorKind::NotFound
    );
    assert_eq!(
        api_code(&c, &gz(), "ins-stopped1").await,
        (
            ApiErrorKind::InstanceState,
            "UnsupportedOperation.InstanceStateStopped".into()
        )
    );
    for (code, kind) in [
        ("InvalidInstanceState", ApiErrorKind::InstanceState),
        (
            "OperationDenied.InstanceOperationInProgress",
            ApiErrorKind::Busy,
        ),
        ("InvalidInstanceId.Malformed", ApiErrorKind::MalformedId),
        (
            "InvalidParameterValue.InstanceIdMalformed",
            ApiErrorKind::MalformedId,
        ),
        ("UnauthorizedOperation", ApiErrorKind::Credentials),
    ] {
        mock.script([Scripted::Error(code)]);
        assert_eq!(
            api_code(&c, &gz(), "ins-running1").await,
            (kind, code.to_owned()),
            "{code}"
        );
    }
    // Transient families are retried; three in a row exhaust the attempts.
    for code in [
        "InternalError",
        "ServiceUnavailable",
        "RequestLimitExceeded",
    ] {
        mock.script([Scripted::Error(code); 3]);
        let before = mock.seen().len();
        let kind = api_code(&c, &gz(), "ins-running1").await.0;
        assert!(
            matches!(kind, ApiErrorKind::ServerSide | ApiErrorKind::RateLimited),
            "{code}"
        );
        assert_eq!(mock.seen().len() - before, 3, "{code} is tried three times");
    }
}

#[tokio::test]
async fn a_wrong_secret_key_is_a_credentials_error_not_retried() {
    let mock = MockCvm::start().await;
    let c = client_with(
        &mock,
        creds(mock_cvm::SECRET_ID, "not-the-right-key-0000000000000", None),
        Duration::from_secs(2),
    );
    assert_eq!(
        api_code(&c, &gz(), "ins-running1").await,
        (
            ApiErrorKind::Credentials,
            "AuthFailure.SignatureFailure".into()
        )
    );
    let unknown = client_with(
        &mock,
        creds("AKIDunknown", "k", None),
        Duration::from_secs(2),
    );
    assert_eq!(
        api_code(&unknown, &gz(), "ins-running1").await.1,
        "AuthFailure.SecretIdNotFound"
    );
    assert_eq!(mock.seen().len(), 2, "credential errors are not retried");
}

#[tokio::test]
async fn a_clock_more_than_five_minutes_off_is_rejected() {
    let mock = MockCvm::start().await;
    mock.set_clock_skew(301);
    let c = client(&mock);
    assert_eq!(
        api_code(&c, &gz(), "ins-running1").await.1,
        "AuthFailure.SignatureExpire"
    );
    mock.set_clock_skew(-250);
    c.describe_instance_vnc_url(&gz(), &id("ins-running1"))
        .await
        .unwrap();
}

#[tokio::test]
async fn http_500_is_retried_then_reported() {
    let mock = MockCvm::start().await;
    let c = client(&mock);
    mock.script([Scripted::Status(502)]);
    let ok = c
        .describe_instance_vnc_url(&gz(), &id("ins-running1"))
        .await
        .unwrap();
    assert_eq!(ok.attempts, 2);
    mock.script([Scripted::Status(500); 3]);
    match c
        .describe_instance_vnc_url(&gz(), &id("ins-running1"))
        .await
    {
        Err(TencentError::Status { status: 500, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_reset_connection_is_retried() {
    let mock = MockCvm::start().await;
    let c = client(&mock);
    mock.script([Scripted::Reset]);
    let ok = c
        .describe_instance_vnc_url(&gz(), &id("ins-running1"))
        .await
        .unwrap();
    assert_eq!(ok.attempts, 2);
    mock.script([Scripted::Reset; 3]);
    let err = c
        .describe_instance_vnc_url(&gz(), &id("ins-running1"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TencentError::Transport(_) | TencentError::Connect(_)),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_times_out() {
    let mock = MockCvm::start().await;
    let c = client_with(
        &mock,
        creds(mock_cvm::SECRET_ID, mock_cvm::SECRET_KEY, None),
        Duration::from_millis(300),
    );
    mock.script([Scripted::Delay(Duration::from_millis(800)); 3]);
    let started = Instant::now();
    let err = c
        .describe_instance_vnc_url(&gz(), &id("ins-running1"))
        .await
        .unwrap_err();
    assert!(matches!(err, TencentError::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn rate_limited_then_success_returns_the_success() {
    let mock = MockCvm::start().await;
    let c = client(&mock);
    mock.script([Scripted::Error("RequestLimitExceeded")]);
    let vnc = c
        .describe_instance_vnc_url(&gz(), &id("ins-running1"))
        .await
        .unwrap();
    assert_eq!(vnc.attempts, 2);
    let seen = mock.seen();
    assert_eq!(seen[0].verdict, "RequestLimitExceeded");
    assert_eq!(seen[1].verdict, "ok");
    assert_eq!(vnc.request_id, seen[1].request_id);
    assert_eq!(
        vnc.url.expose_link(),
        format!("{CONSOLE_PAGE}{}", mock.issued()[0])
    );
}

#[tokio::test]
async fn a_success_without_a_url_is_an_error() {
    let mock = MockCvm::start().await;
    let c = client(&mock);
    mock.script([Scripted::MissingUrl]);
    match c
        .describe_instance_vnc_url(&gz(), &id("ins-running1"))
        .await
    {
        Err(TencentError::InvalidResponse {
            request_id: Some(rid),
            ..
        }) => {
            assert_eq!(rid, mock.seen()[0].request_id)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_redirect_is_not_followed_and_the_session_token_stays_home() {
    let mock = MockCvm::start().await;
    // Another loopback listener standing in for whatever host a gateway redirects to. It answers
    // like Tencent would, so following the redirect would even look like success.
    let received: Arc<Mutex<Vec<HttpRequest>>> = Arc::default();
    let log = Arc::clone(&received);
    let elsewhere = serve(move |req| {
        log.lock().unwrap().push(req);
        async {
            Reply::json(
                200,
                &serde_json::json!({"Response": {
                    "InstanceVncUrl": "wss%3A%2F%2Fbjvnc.qcloud.com%3A26789%2Fvnc%3Fs%3Dstolen",
                    "RequestId": "elsewhere"
                }}),
            )
        }
    })
    .await;
    let c = client_with(
        &mock,
        creds(
            mock_cvm::TEMP_SECRET_ID,
            mock_cvm::TEMP_SECRET_KEY,
            Some(mock_cvm::SESSION_TOKEN),
        ),
        Duration::from_secs(2),
    );
    mock.script([Scripted::Redirect(elsewhere)]);
    let result = c
        .describe_instance_vnc_url(&gz(), &id("ins-running1"))
        .await;
    // The client has returned, so a followed redirect would already have arrived.
    let got = received.lock().unwrap().clone();
    assert!(
        got.iter().all(|r| r.header("x-tc-token").is_none()),
        "X-TC-Token was sent to the redirect target"
    );
    assert!(got.is_empty(), "the redirect was followed: {got:?}");
    let err = result.unwrap_err();
    match &err {
        TencentError::Redirected {
            status: 302,
            location_host: Some(host),
        } => assert_eq!(host, "127.0.0.1"),
        other => panic!("expected a redirect error, got {other:?}"),
    }
    assert_eq!(mock.seen().len(), 1, "a redirect is not retried");
    assert!(!err.is_transient() && err.needs_admin());
    assert_eq!(err.code(), "redirect");
    assert!(err.to_string().contains("never follows redirects"), "{err}");
}

async fn via_console<C: Console>(c: &C) -> Result<VncUrl, TencentError> {
    c.describe_instance_vnc_url(&gz(), &id("ins-running1"), &|| true)
        .await
}

#[tokio::test]
async fn the_client_serves_the_console_trait() {
    let mock = MockCvm::start().await;
    let c = Arc::new(client(&mock));
    // Spawned: the trait's future must be Send.
    let vnc = tokio::spawn(async move { via_console(&*c).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        vnc.url.expose_link(),
        format!("{CONSOLE_PAGE}{}", mock.issued()[0])
    );
    assert_eq!(mock.seen().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let cfg = TencentConfig {
        regions: vec![gz()],
        products: vec![vncbot::ids::Product::Cvm],
        lighthouse_regions: vec![],
        endpoint: Some(format!("http://{addr}").parse().unwrap()),
        language: Language::EnUs,
        timeout: Duration::from_secs(2),
    };
    let c = CvmClient::new(
        &cfg,
        creds("AKIDx", "k", None),
        ApiPacer::new(NonZeroU32::new(10).unwrap(), Duration::from_secs(1)),
        RetryPolicy {
            attempts: 2,
            base: Duration::from_millis(10),
            ..Default::default()
        },
    )
    .unwrap();
    let err = c
        .describe_instance_vnc_url(&gz(), &id("ins-running1"))
        .await
        .unwrap_err();
    assert!(matches!(err, TencentError::Connect(_)), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_burst_of_50_never_exceeds_10_per_second_at_the_mock() {
    let mock = MockCvm::start().await;
    let c = std::sync::Arc::new(client(&mock));
    let started = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                c.describe_instance_vnc_url(&gz(), &id("ins-running1"))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let seen = mock.seen();
    assert_eq!(
        seen.len(),
        50,
        "every call succeeded first time: no RequestLimitExceeded"
    );
    assert!(seen.iter().all(|s| s.verdict == "ok"));
    assert!(
        mock.max_per_second() <= 10,
        "max {} per second",
        mock.max_per_second()
    );
    // Paced, not sent at once: with at most 10 in any second, the 41st call comes at least four
    // seconds after the first (the pacer sends bursts within the budget at once, so it is no
    // longer 49 fixed gaps).
    assert!(started.elapsed() >= Duration::from_secs(4));
}

/// The mock itself must reject what Tencent rejects, or the tests above prove nothing.
mod mock_self_checks {
    use super::*;
    use vncbot::tencent::sign::{sign, SignInput};

    async fn raw(
        mock: &MockCvm,
        host: &str,
        signed_body: &str,
        sent_body: &str,
        ts: i64,
    ) -> String {
        let s = sign(&SignInput {
            secret_id: mock_cvm::SECRET_ID,
            secret_key: mock_cvm::SECRET_KEY,
            service: "cvm",
            timestamp: ts,
            headers: &[("content-type", "application/json"), ("host", host)],
            payload: signed_body.as_bytes(),
        })
        .unwrap();
        let resp = reqwest::Client::new()
            .post(mock.endpoint())
            .header("content-type", "application/json")
            .header("host", host)
            .header("x-tc-action", "DescribeInstanceVncUrl")
            .header("x-tc-version", "2017-03-12")
            .header("x-tc-region", "ap-guangzhou")
            .header("x-tc-timestamp", ts.to_string())
            .header("authorization", s.authorization)
            .body(sent_body.to_owned())
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
        v["Response"]["Error"]["Code"]
            .as_str()
            .unwrap_or("ok")
            .to_owned()
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[tokio::test]
    async fn rejects_tampering() {
        let mock = MockCvm::start().await;
        let host = mock.addr.to_string();
        let body = r#"{"InstanceId":"ins-running1"}"#;
        assert_eq!(raw(&mock, &host, body, body, now()).await, "ok");
        assert_eq!(
            raw(
                &mock,
                &host,
                body,
                r#"{"InstanceId":"ins-stopped1"}"#,
                now()
            )
            .await,
            "AuthFailure.SignatureFailure"
        );
        assert_eq!(
            raw(&mock, "cvm.tencentcloudapi.com", body, body, now()).await,
            "AuthFailure.SignatureFailure"
        );
        assert_eq!(
            raw(&mock, &host, body, body, now() - 301).await,
            "AuthFailure.SignatureExpire"
        );
        let extra = r#"{"InstanceId":"ins-running1","X":1}"#;
        assert_eq!(
            raw(&mock, &host, extra, extra, now()).await,
            "UnknownParameter"
        );
    }
}
