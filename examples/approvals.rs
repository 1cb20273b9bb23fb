//! Approvals benchmark, in one process against the fake Discord and the mock Tencent endpoint:
//! an approver presses Approve on a request in the approvals channel → the requester's DM with
//! **Open console** is sent. 200 requests, one at a time; p50 and p99 (target p99 < 50 ms).
//!
//! cargo run --release --example approvals

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::fake_discord::{vnc, TOKEN};
use support::{mock_cvm, Fakes};
use vncbot::config::{Config, TencentCredentials};

const REQUESTS: usize = 200;
const PROD_ROLE: u64 = 555000000000000003;
const APPROVER: u64 = 555000000000000009;
const APPROVALS: u64 = 810000000000000003;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let f = Fakes::start("approvals-bench").await;
    let text = f.config.replace(
        "[limits]",
        &format!(
            "[[allow]]\nroles = [{PROD_ROLE}]\ninstances = [\"*\"]\nregions = [\"*\"]\napproval = \"required\"\napprover_roles = [{APPROVER}]\n\n[approvals]\nchannel_id = {APPROVALS}\n\n[limits]"
        ),
    )
    // Each requester asks once; the member limit is not what is measured.
    .replace("per_user_per_minute = 3", "per_user_per_minute = 60");
    let config = Config::parse(&text).unwrap();
    let creds = TencentCredentials {
        secret_id: mock_cvm::SECRET_ID.into(),
        secret_key: mock_cvm::SECRET_KEY.to_string().into(),
        session_token: None,
    };
    let clock = f.clock.clone();
    tokio::spawn(async move {
        vncbot::app::run_with(config, None, TOKEN, creds, clock)
            .await
            .unwrap();
    });
    f.discord.wait_ready().await;
    let approver = 9_999;
    f.discord.set_roles(approver, vec![APPROVER]);
    let posts = |f: &Fakes| {
        f.discord
            .calls()
            .into_iter()
            .filter(|c| {
                c.method == "POST" && c.path == format!("/api/v10/channels/{APPROVALS}/messages")
            })
            .collect::<Vec<_>>()
    };
    let mut took = Vec::with_capacity(REQUESTS);
    for i in 0..REQUESTS {
        let user = 20_000 + i as u64;
        let before = posts(&f).len();
        let token = f.discord.invoke(vnc(
            user,
            vec![PROD_ROLE],
            vec![("instance", "ins-running1"), ("reason", "INC-1 benchmark")],
        ));
        f.discord.reply(&token).await;
        let post = posts(&f).get(before).cloned().expect("the request's post");
        let custom = post.body["components"][0]["components"][0]["custom_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let message: u64 = post.reply["id"].as_str().unwrap().parse().unwrap();
        let sent = Instant::now();
        f.discord
            .press_in_guild(approver, vec![APPROVER], APPROVALS, message, &custom);
        let dm = f
            .discord
            .wait_for(Duration::from_secs(10), "the Open console DM", |c| {
                c.method == "POST"
                    && c.at >= sent
                    && f.discord
                        .dm_channels_of(user)
                        .iter()
                        .any(|ch| c.path == format!("/api/v10/channels/{ch}/messages"))
                    && c.body["components"][0]["components"][0]["custom_id"]
                        .as_str()
                        .is_some_and(|s| s.starts_with("vnc:open:"))
            })
            .await;
        took.push(dm.at.duration_since(sent));
    }
    took.sort();
    println!(
        "approvals: {REQUESTS} requests, approver's press -> requester's Open console DM: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&took, 0.5),
        pct(&took, 0.99),
        pct(&took, 1.0)
    );
}
