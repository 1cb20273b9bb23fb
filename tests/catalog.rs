//! The catalog over real HTTP against the mock Tencent endpoint: DescribeInstances' shape,
//! paging, InstanceIds and Filters, its own pace, failures that keep the last good list, and
//! untrusted names.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::mock_cvm::{self, MockCvm, MockInstance, Scripted};
use support::tencent::ClientBuilder;
use vncbot::access::{authorize_with_tags, Decision, Rule};
use vncbot::ids::{InstanceId, Region, Snowflake};
use vncbot::tencent::RetryPolicy;
use vncbot::tencent::{choice_label, MAX_LABEL_CHARS};
use vncbot::tencent::{Catalog, InstancesQuery, Resolution, State, TencentClient, TencentError};
use vncbot::text::is_invisible;

const GZ: &str = "ap-guangzhou";
const FSI: &str = "ap-shanghai-fsi";

fn region(s: &str) -> Region {
    Region::parse(s).unwrap()
}

fn id(s: &str) -> InstanceId {
    InstanceId::parse(s).unwrap()
}

fn client_with(mock: &MockCvm, timeout: Duration, attempts: u32) -> TencentClient {
    ClientBuilder::mock(mock)
        .regions(&[GZ, FSI])
        .timeout(timeout)
        .retry(RetryPolicy {
            attempts,
            base: Duration::from_millis(10),
            rate_limited_floor: Duration::from_millis(50),
        })
        .build()
}

fn client(mock: &MockCvm) -> TencentClient {
    client_with(mock, Duration::from_secs(2), 2)
}

fn catalog() -> Catalog {
    Catalog::new(&[region(GZ), region(FSI)])
}

#[tokio::test]
async fn describe_instances_reads_tencents_shape() {
    let mock = MockCvm::start().await;
    mock.put_instance(
        MockInstance::new("ins-web00001", "web-01", 5)
            .public_ip("203.0.113.7")
            .tag("env", "staging")
            .tag("team", "web"),
    );
    let c = client(&mock);
    let page = c
        .describe_instances(&region(GZ), &InstancesQuery::Ids(vec![id("ins-web00001")]))
        .await
        .unwrap();
    assert_eq!(page.total, 1);
    assert!(!page.request_id.is_empty());
    let i = &page.instances[0];
    assert_eq!(i.id.as_str(), "ins-web00001");
    assert_eq!(i.name, "web-01");
    assert_eq!(i.state, State::Running);
    assert_eq!(
        i.private_ips,
        vec!["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(
        i.public_ips,
        vec!["203.0.113.7".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(i.zone, "ap-guangzhou-3");
    assert_eq!(i.os, "TencentOS Server 3.1 (TK4)");
    assert_eq!(i.region, region(GZ));
    assert_eq!(i.tag("env"), Some("staging"));
    assert_eq!(i.tags.len(), 2);

    // PublicIpAddresses null; a page; the mock checked the signature of each.
    let page = c
        .describe_instances(
            &region(GZ),
            &InstancesQuery::Page {
                offset: 0,
                limit: 100,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total, 403);
    assert_eq!(page.instances.len(), 100);
    let stopped = c
        .describe_instances(&region(GZ), &InstancesQuery::Ids(vec![id("ins-stopped1")]))
        .await
        .unwrap();
    assert_eq!(stopped.instances[0].state, State::Stopped);
    assert!(stopped.instances[0].public_ips.is_empty());
    let seen = mock.seen_catalog();
    assert!(seen
        .iter()
        .all(|s| s.verdict == "ok" && s.action == "DescribeInstances"));
    assert_eq!(seen[0].body, r#"{"InstanceIds":["ins-web00001"]}"#);
    assert_eq!(seen[1].body, r#"{"Limit":100,"Offset":0}"#);
    // None of this touched the console action's records.
    assert!(mock.seen().is_empty());
}

#[tokio::test]
async fn filters_narrow_the_list_as_tencent_does() {
    let mock = MockCvm::start().await;
    mock.set_instances(
        GZ,
        [
            MockInstance::new("ins-aaaaaaa1", "web-01", 1).tag("env", "prod"),
            MockInstance::new("ins-aaaaaaa2", "web-02", 2).tag("env", "staging"),
            MockInstance::new("ins-aaaaaaa3", "db-01", 3)
                .state("STOPPED")
                .tag("env", "prod"),
        ],
    );
    let c = client(&mock);
    let ask = |filters: Vec<(&str, Vec<&str>)>| {
        let c = &c;
        let filters: Vec<(String, Vec<String>)> = filters
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.into_iter().map(str::to_owned).collect()))
            .collect();
        async move {
            let page = c
                .describe_instances(
                    &region(GZ),
                    &InstancesQuery::Filtered {
                        filters,
                        offset: 0,
                        limit: 100,
                    },
                )
                .await
                .unwrap();
            let mut ids: Vec<String> = page.instances.iter().map(|i| i.id.to_string()).collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(
        ask(vec![("instance-name", vec!["web-01"])]).await,
        ["ins-aaaaaaa1"]
    );
    assert_eq!(
        ask(vec![("instance-name", vec!["web-01", "web-02"])]).await,
        ["ins-aaaaaaa1", "ins-aaaaaaa2"]
    );
    assert_eq!(
        ask(vec![("instance-state", vec!["STOPPED"])]).await,
        ["ins-aaaaaaa3"]
    );
    assert_eq!(
        ask(vec![("private-ip-address", vec!["10.0.0.2"])]).await,
        ["ins-aaaaaaa2"]
    );
    assert_eq!(
        ask(vec![("instance-id", vec!["ins-aaaaaaa2"])]).await,
        ["ins-aaaaaaa2"]
    );
    assert_eq!(
        ask(vec![
            ("tag:env", vec!["prod"]),
            ("instance-state", vec!["RUNNING"])
        ])
        .await,
        ["ins-aaaaaaa1"]
    );
    assert_eq!(ask(vec![("tag-key", vec!["env"])]).await.len(), 3);
    // Too many values: the client refuses before sending, as Tencent would refuse.
    let err = c
        .describe_instances(
            &region(GZ),
            &InstancesQuery::Filtered {
                filters: vec![(
                    "instance-name".into(),
                    (0..6).map(|n| n.to_string()).collect(),
                )],
                offset: 0,
                limit: 10,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TencentError::Signing(_)), "{err:?}");
}

#[tokio::test]
async fn an_empty_region_and_one_of_2500_instances_in_25_pages() {
    let mock = MockCvm::start().await;
    mock.set_instances(GZ, MockCvm::many(GZ, 2500));
    mock.set_instances(FSI, []);
    let cat = catalog();
    cat.refresh_all(&client(&mock)).await;
    let view = cat.view();
    assert_eq!(view.len(), 2500);
    let pages: Vec<_> = mock
        .seen_catalog()
        .into_iter()
        .filter(|s| s.region == GZ)
        .collect();
    assert_eq!(pages.len(), 25);
    assert_eq!(pages[24].body, r#"{"Limit":100,"Offset":2400}"#);
    let fsi: Vec<_> = mock
        .seen_catalog()
        .into_iter()
        .filter(|s| s.region == FSI)
        .collect();
    assert_eq!(fsi.len(), 1);
    assert!(
        mock.max_catalog_per_second() <= 40,
        "{}",
        mock.max_catalog_per_second()
    );
    let status = cat.status();
    assert_eq!(status[0].instances, 2500);
    assert_eq!(status[1].instances, 0);
    assert!(status.iter().all(|s| s.is_healthy()), "{status:?}");
    assert_eq!(cat.lookup(&id("ins-c0001234")).unwrap().name, "cat-01234");
    assert_eq!(view.search("cat-0123", 25, |_| true).len(), 10);
    let metrics = cat.metrics().render();
    assert!(
        metrics.contains(r#"vncbot_catalog_instances{region="ap-guangzhou"} 2500"#),
        "{metrics}"
    );
}

/// Each failure mode: the last good list stays, its age is reported, and the next success
/// clears the failure.
#[tokio::test]
async fn a_failed_refresh_keeps_the_last_good_list_and_says_how_old_it_is() {
    let mock = MockCvm::start().await;
    let c = client_with(&mock, Duration::from_millis(300), 2);
    let cat = Catalog::new(&[region(GZ)]);
    cat.refresh_region(&c, &region(GZ)).await.unwrap();
    let before = cat.view().len();
    assert_eq!(before, 403);
    for (script, code) in [
        (
            vec![Scripted::Error("RequestLimitExceeded"); 2],
            "RequestLimitExceeded",
        ),
        (vec![Scripted::Status(500); 2], "http_500"),
        (
            vec![Scripted::Delay(Duration::from_millis(800)); 2],
            "timeout",
        ),
        (vec![Scripted::Error("InternalError"); 2], "InternalError"),
    ] {
        // The first page succeeds and a later one fails: nothing half-listed replaces the list.
        mock.remove_instance("ins-load0000");
        let mut s = vec![];
        s.extend(script);
        mock.script_catalog(std::iter::once(Scripted::Delay(Duration::ZERO)).chain(s));
        let err = cat.refresh_region(&c, &region(GZ)).await.unwrap_err();
        assert_eq!(err.code(), code);
        assert_eq!(cat.view().len(), before, "{code}");
        assert!(cat.lookup(&id("ins-load0000")).is_some(), "{code}");
        let st = &cat.status()[0];
        assert_eq!(st.failures, 1, "{code}");
        assert!(
            st.last_error.as_deref().unwrap().starts_with(code),
            "{st:?}"
        );
        assert!(st.age.is_some(), "{st:?}");
        assert!(st.to_string().contains("listed"), "{st}");
        assert!(!st.is_healthy());
        // Recovery: the new list (without the deleted instance) replaces the old one.
        cat.refresh_region(&c, &region(GZ)).await.unwrap();
        assert_eq!(cat.view().len(), before - 1, "{code}");
        assert!(cat.lookup(&id("ins-load0000")).is_none(), "{code}");
        assert!(cat.status()[0].is_healthy());
        mock.put_instance(MockInstance::new("ins-load0000", "load-0000", 1000));
        cat.refresh_region(&c, &region(GZ)).await.unwrap();
    }
    let failures = cat.metrics().render();
    assert!(
        failures.contains(r#"vncbot_catalog_refresh_failures_total{region="ap-guangzhou"}"#),
        "{failures}"
    );
    assert!(
        failures.contains("vncbot_catalog_age_seconds"),
        "{failures}"
    );
}

#[tokio::test]
async fn a_missing_permission_is_reported_and_ids_keep_working() {
    let mock = MockCvm::start().await;
    let c = client(&mock);
    let cat = catalog();
    mock.script_catalog([
        Scripted::Error("UnauthorizedOperation"),
        Scripted::Error("UnauthorizedOperation.CamNoAuth"),
    ]);
    cat.refresh_all(&c).await;
    // Not transient: one call per region, no retries.
    assert_eq!(mock.seen_catalog().len(), 2);
    let st = cat.status();
    assert!(
        st[0].permission_missing && st[1].permission_missing,
        "{st:?}"
    );
    assert!(st[0].age.is_none());
    assert!(
        st[0].to_string().contains("cvm:DescribeInstances"),
        "{}",
        st[0]
    );
    assert!(cat.view().is_empty());
    // The console action does not care.
    c.describe_instance_vnc_url(&region(GZ), &id("ins-running1"))
        .await
        .unwrap();
    // Once the policy is fixed, the next refresh works and the report clears.
    cat.refresh_all(&c).await;
    assert!(!cat.status()[1].permission_missing);
    assert_eq!(cat.view().len(), 404);
}

#[tokio::test]
async fn refresh_one_rereads_state_and_notices_a_deleted_instance() {
    let mock = MockCvm::start().await;
    let c = client(&mock);
    let cat = catalog();
    cat.refresh_all(&c).await;
    assert_eq!(
        cat.lookup(&id("ins-web00001")).unwrap().state,
        State::Running
    );
    let age = cat.status()[0].age;

    mock.put_instance(MockInstance::new("ins-web00001", "web-01", 2).state("STOPPED"));
    let fresh = cat
        .refresh_one(&c, &region(GZ), &id("ins-web00001"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fresh.state, State::Stopped);
    assert!(!fresh.state.can_serve_console());
    assert_eq!(
        cat.lookup(&id("ins-web00001")).unwrap().state,
        State::Stopped
    );
    let last = mock.seen_catalog().pop().unwrap();
    assert_eq!(last.body, r#"{"InstanceIds":["ins-web00001"]}"#);
    // One instance's re-read does not make the region's list look fresher.
    assert!(cat.status()[0].age >= age);

    mock.remove_instance("ins-web00001");
    assert_eq!(
        cat.refresh_one(&c, &region(GZ), &id("ins-web00001"))
            .await
            .unwrap(),
        None
    );
    assert!(cat.lookup(&id("ins-web00001")).is_none());
    assert_eq!(cat.view().len(), 403);
    // An instance the catalog never knew, which exists: added.
    mock.put_instance(MockInstance::new("ins-new00001", "new-01", 9));
    assert!(cat
        .refresh_one(&c, &region(GZ), &id("ins-new00001"))
        .await
        .unwrap()
        .is_some());
    assert_eq!(cat.lookup(&id("ins-new00001")).unwrap().name, "new-01");
}

#[tokio::test]
async fn hostile_names_are_bounded_cleaned_and_found() {
    let mock = MockCvm::start().await;
    let (long, longer) = ("long-name-".repeat(7), "x".repeat(300));
    let names = [
        ("ins-h0000001", "name with  spaces"),
        ("ins-h0000002", "**bold** `code` ||spoiler||"),
        ("ins-h0000003", "<@123456789012345678> @everyone"),
        ("ins-h0000004", "\u{202E}lmth.exe\u{200F}"),
        ("ins-h0000005", long.as_str()),
        ("ins-h0000006", "数据库-主节点-01"),
        ("ins-h0000007", "dup"),
        ("ins-h0000008", "dup"),
        ("ins-h0000009", longer.as_str()),
    ];
    mock.set_instances(
        GZ,
        names
            .iter()
            .enumerate()
            .map(|(n, (i, name))| MockInstance::new(i, name, n as u32)),
    );
    let cat = catalog();
    cat.refresh_all(&client(&mock)).await;
    let view = cat.view();
    assert_eq!(view.len(), 9 + 1);
    for i in view.instances() {
        let label = choice_label(i);
        assert!(label.chars().count() <= MAX_LABEL_CHARS, "{label}");
        assert!(!label.chars().any(is_invisible), "{label:?}");
        assert!(label.contains(i.id.as_str()), "{label}");
        assert!(i.name.chars().count() <= 128);
    }
    let rtl = cat.lookup(&id("ins-h0000004")).unwrap();
    assert_eq!(rtl.name, "lmth.exe");
    assert!(matches!(
        view.resolve_name("dup", |_| true),
        Resolution::Ambiguous(v) if v.len() == 2
    ));
    assert!(matches!(
        view.resolve_name("数据库-主节点-01", |_| true),
        Resolution::Unique(i) if i.id.as_str() == "ins-h0000006"
    ));
    assert_eq!(view.search("主节点", 25, |_| true).len(), 1);
    assert_eq!(view.search("LONG-NAME", 25, |_| true).len(), 1);
    assert_eq!(view.search("@everyone", 25, |_| true).len(), 1);
    let long = choice_label(&cat.lookup(&id("ins-h0000009")).unwrap());
    assert_eq!(long.chars().count(), MAX_LABEL_CHARS);
    assert!(long.contains("x… · ins-h0000009"), "{long}");
}

#[tokio::test]
async fn catalog_refreshes_do_not_delay_console_calls() {
    let mock = MockCvm::start().await;
    mock.set_instances(GZ, MockCvm::many(GZ, 3000));
    let c = Arc::new(client(&mock));
    let cat = Arc::new(Catalog::new(&[region(GZ)]));
    let refresh = {
        let (c, cat) = (Arc::clone(&c), Arc::clone(&cat));
        tokio::spawn(async move {
            // Twice: 60 pages, more than the catalog's pace lets out in one window, so the
            // refresh is still paging well after the console calls (which go out at once now
            // that a burst within the budget is not spaced).
            cat.refresh_all(&*c).await;
            cat.refresh_all(&*c).await;
            Instant::now()
        })
    };
    // Console calls once the refresh is paging.
    while mock.seen_catalog().len() < 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..3 {
        c.describe_instance_vnc_url(&region(GZ), &id("ins-c0000001"))
            .await
            .unwrap();
    }
    let console_done = Instant::now();
    let refresh_done = refresh.await.unwrap();
    // Three console calls within the console's own budget go out at once; the 60 pages of the
    // refresh take over a second at 36 a window. Sharing one pace, the console calls would wait
    // behind the pages, until the catalog's window turns: after its 36th page. Order, not time,
    // so a slow machine does not change the verdict.
    assert!(refresh_done > console_done);
    let pages = mock.seen_catalog();
    let before = pages.iter().filter(|p| p.at < console_done).count();
    assert!(
        (3..36).contains(&before),
        "{before} pages before the console calls were done"
    );
    assert!(pages.iter().any(|p| p.at > console_done));
    assert_eq!(cat.view().len(), 3000);
    assert!(mock.max_catalog_per_second() <= 40);
    assert!(mock.max_per_second() <= 10);
}

#[tokio::test]
async fn the_mock_limits_describe_instances_to_40_a_second() {
    let mock = MockCvm::start().await;
    // Two clients, each with its own pace of 36/s: together they exceed Tencent's 40.
    let (a, b) = (
        client_with(&mock, Duration::from_secs(2), 1),
        client_with(&mock, Duration::from_secs(2), 1),
    );
    let q = InstancesQuery::Page {
        offset: 0,
        limit: 1,
    };
    let calls = (0..30).flat_map(|_| [&a, &b]).map(|c| {
        let q = q.clone();
        async move { c.describe_instances(&region(GZ), &q).await }
    });
    let results = futures_util::future::join_all(calls).await;
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(e) if e.code() == "RequestLimitExceeded"))
        .count();
    assert!(limited > 0, "no call was limited");
    assert!(results.iter().filter(|r| r.is_ok()).count() >= 40);
}

#[tokio::test]
async fn refresher_runs_on_its_interval_and_tag_rules_use_what_it_saw() {
    let mock = MockCvm::start().await;
    mock.put_instance(MockInstance::new("ins-web00001", "web-01", 2).tag("env", "staging"));
    let c = Arc::new(client(&mock));
    let cat = Arc::new(catalog());
    let mut rounds = cat.rounds();
    let task = cat.spawn_refresher(Arc::clone(&c), Duration::from_millis(50));
    rounds.wait_for(|n| *n >= 2).await.unwrap();
    task.abort();
    let rules = vec![Rule {
        roles: vec![Snowflake::new(1).unwrap()],
        instances: vec!["*".into()],
        regions: None,
        tags: vec![("env".into(), "staging".into())],
        gate: Default::default(),
    }];
    let roles = [Snowflake::new(1).unwrap()];
    let decide = |i: &str| {
        let i = id(i);
        let known = cat.lookup(&i);
        authorize_with_tags(
            &rules,
            &roles,
            &i,
            &region(GZ),
            known.as_ref().map(|k| k.tags.as_slice()),
        )
    };
    assert_eq!(decide("ins-web00001"), Decision::Allowed { rule: 0 });
    // Known but untagged: no match. Unknown to the catalog: fail closed. Both say the same (the
    // rule that needs the tags), so the answer tells nothing of whether the ID exists.
    assert_eq!(
        decide("ins-running1"),
        Decision::Denied {
            would_allow: vec![],
            needs_catalog: vec![0]
        }
    );
    assert_eq!(
        decide("ins-zzzzzzzz"),
        Decision::Denied {
            would_allow: vec![],
            needs_catalog: vec![0]
        }
    );
    // Autocomplete's filter: only what the member may open.
    let view = cat.view();
    let allowed = |i: &vncbot::tencent::Instance| {
        matches!(
            authorize_with_tags(&rules, &roles, &i.id, &i.region, Some(&i.tags)),
            Decision::Allowed { .. }
        )
    };
    let hits = view.search("", 25, allowed);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].id.as_str(), "ins-web00001");
    assert!(view.search("", 25, |_| false).is_empty());
}

mod cli {
    use super::*;
    use support::{config_text, write_config, TempDir, ONCALL_ROLE, WEB_ROLE};

    async fn instances(
        mock: &MockCvm,
        dir: &TempDir,
        args: &[&str],
    ) -> (Option<i32>, String, String) {
        let cfg = write_config(dir, &config_text(dir, &mock.endpoint(), ""));
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_vncbot"))
            .arg("instances")
            .args(args)
            .arg("--config")
            .arg(cfg)
            .env_clear()
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("TENCENTCLOUD_SECRET_ID", mock_cvm::SECRET_ID)
            .env("TENCENTCLOUD_SECRET_KEY", mock_cvm::SECRET_KEY)
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
    async fn instances_lists_what_each_rule_opens() {
        let mock = MockCvm::start().await;
        mock.put_instance(MockInstance::new("ins-web00001", "web\u{202E}-01\u{7}", 2));
        let dir = TempDir::new("instances");
        let (code, out, err) = instances(&mock, &dir, &[]).await;
        assert_eq!(code, Some(0), "{err}");
        let line = |id: &str| {
            out.lines()
                .find(|l| l.starts_with(id))
                .unwrap_or_else(|| panic!("{id} missing:\n{out}"))
                .to_owned()
        };
        assert!(out.starts_with("ID "), "{out}");
        let web = line("ins-web00001");
        assert!(
            web.contains("web-01 ")
                && web.contains("RUNNING")
                && web.contains("10.0.0.2")
                && web.contains("ap-guangzhou")
                && web.ends_with(&format!("[0] roles {ONCALL_ROLE}; [1] roles {WEB_ROLE}")),
            "{web}"
        );
        assert!(!out.chars().any(is_invisible_but_newline), "{out:?}");
        let fsi = line("ins-fsi00001");
        assert!(fsi.ends_with(&format!("[0] roles {ONCALL_ROLE}")), "{fsi}");
        assert!(line("ins-stopped1").contains("STOPPED"));
        assert!(out.ends_with("404 instance(s) in 2 region(s).\n"), "{out}");

        let (code, out, _) = instances(&mock, &dir, &["--region", FSI]).await;
        assert_eq!(code, Some(0));
        assert!(out.ends_with("1 instance(s) in 1 region(s).\n"), "{out}");
        let (code, _, err) = instances(&mock, &dir, &["--region", "ap-tokyo"]).await;
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains("not one of this bot's regions"), "{err}");
    }

    fn is_invisible_but_newline(c: char) -> bool {
        c != '\n' && is_invisible(c)
    }

    #[tokio::test]
    async fn instances_exits_as_the_other_commands_on_failure() {
        let mock = MockCvm::start().await;
        let dir = TempDir::new("instances-fail");
        mock.script_catalog([Scripted::Error("UnauthorizedOperation")]);
        let (code, _, err) = instances(&mock, &dir, &["--region", GZ]).await;
        assert_eq!(code, Some(3), "{err}");
        assert!(err.contains("cvm:DescribeInstances"), "{err}");
        mock.script_catalog([Scripted::Status(500); 3]);
        let (code, out, err) = instances(&mock, &dir, &[]).await;
        assert_eq!(code, Some(5), "{err}");
        assert!(err.contains("cannot list ap-guangzhou: http_500"), "{err}");
        // The region that answered is still listed.
        assert!(out.contains("ins-fsi00001"), "{out}");
    }
}
