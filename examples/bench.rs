//! Benchmarks: signing cost per request, and `vncbot url` end to end against a local mock
//! Tencent endpoint (wall time and peak memory).
//!
//! cargo build --release && cargo run --release --example bench [sign|audit|url ...]
//!
//! With names, runs only those parts (`-- audit` needs no `vncbot` binary).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::mock_cvm::{self, MockCvm};
use support::{config_text, write_config, TempDir};
use vncbot::tencent::sign::{sign, SignInput};

fn bench_sign() {
    let body = br#"{"InstanceId":"ins-a1b2c3d4"}"#;
    let n = 200_000u32;
    let mut sink = 0usize;
    let start = Instant::now();
    for i in 0..n {
        let s = sign(&SignInput {
            secret_id: "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
            secret_key: "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            service: "cvm",
            timestamp: 1_700_000_000 + i64::from(i),
            headers: &[
                ("content-type", "application/json"),
                ("host", "cvm.tencentcloudapi.com"),
            ],
            payload: body,
        })
        .unwrap();
        sink += s.authorization.len();
    }
    let per = start.elapsed() / n;
    println!(
        "sign: {n} requests, {:.2} µs per request (checksum {sink})",
        per.as_nanos() as f64 / 1000.0
    );
}

/// Runs a command to completion and returns (success, peak RSS in KiB) of that one process.
/// `wait4` reaps the child, which `Child::wait` cannot do while also returning its rusage.
#[allow(clippy::zombie_processes)]
fn run_measured(mut cmd: std::process::Command) -> (bool, i64) {
    let child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // SAFETY: wait4 writes only into the status and rusage we pass, for our own child.
    unsafe {
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut usage);
        (
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            usage.ru_maxrss,
        )
    }
}

async fn bench_url() {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("vncbot");
    if !bin.exists() {
        println!(
            "url: {} not found; run `cargo build --release` first",
            bin.display()
        );
        return;
    }
    let mock = MockCvm::start().await;
    let dir = TempDir::new("bench");
    let cfg = write_config(&dir, &config_text(&dir, &mock.endpoint(), ""));
    // Each run is a new process, so the per-member limit starts afresh; use a new instance
    // each time to stay clear of the per-instance limit too.
    let runs = 20;
    let mut times = Vec::with_capacity(runs);
    let mut peak = 0;
    for i in 0..runs {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["url", &format!("ins-load{i:04}"), "--config"])
            .arg(&cfg)
            .env("TENCENTCLOUD_SECRET_ID", mock_cvm::SECRET_ID)
            .env("TENCENTCLOUD_SECRET_KEY", mock_cvm::SECRET_KEY)
            .env("NO_PROXY", "127.0.0.1");
        let start = Instant::now();
        let (ok, rss) = tokio::task::spawn_blocking(move || run_measured(cmd))
            .await
            .unwrap();
        times.push(start.elapsed());
        assert!(ok, "vncbot url failed");
        peak = peak.max(rss);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "url end to end: {} runs, median {:.1} ms, max {:.1} ms, peak RSS {} KiB",
        times.len(),
        ms(times[times.len() / 2]),
        ms(*times.last().unwrap()),
        peak
    );
}

async fn bench_audit() {
    use vncbot::audit::{verify_file, Actor, Entry, Event, Journal};
    let dir = TempDir::new("bench-audit");
    let path = dir.join("audit.jsonl");
    let (journal, _) = Journal::open(&path).unwrap();
    let actor = Actor::Discord {
        id: 800000000000000001,
        name: "oncall".into(),
    };
    // 64 concurrent writers, as a burst of commands would be.
    let n = 20_000;
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let (j, a) = (journal.clone(), actor.clone());
            tokio::spawn(async move {
                for _ in 0..n / 64 {
                    let e = Entry {
                        instance: Some("ins-a1b2c3d4".into()),
                        region: Some("ap-guangzhou".into()),
                        guild: Some(w),
                        ..Entry::default()
                    };
                    j.append(Event::Requested, &a, e).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let written = start.elapsed();
    let records = (n / 64) * 64;
    let start = Instant::now();
    let summary = verify_file(&path).unwrap().unwrap();
    let verified = start.elapsed();
    assert_eq!(summary.records, records as u64);
    let bytes = std::fs::metadata(&path).unwrap().len();
    println!(
        "audit: {records} fsynced appends from 64 concurrent writers in {:.2} s ({:.0} records/s, group commit); verify {records} records ({:.1} MB) in {:.0} ms",
        written.as_secs_f64(),
        records as f64 / written.as_secs_f64(),
        bytes as f64 / 1e6,
        verified.as_secs_f64() * 1000.0
    );
}

#[tokio::main]
async fn main() {
    let only: Vec<String> = std::env::args().skip(1).collect();
    let run = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    if run("sign") {
        bench_sign();
    }
    if run("audit") {
        bench_audit().await;
    }
    if run("url") {
        bench_url().await;
    }
    if run("limits") {
        bench_limits();
    }
}

/// One decision's cost on the limits: check and take a member's and an instance's budget, in
/// this process alone and in the file every process on the journal shares (a lock, a read and a
/// write; the parse is skipped while no other process wrote). 300 active members.
fn bench_limits() {
    use std::num::NonZeroU32;
    use std::sync::Arc;
    use vncbot::ids::InstanceId;
    use vncbot::limits::{LimitsConfig, RequestLimits, StateFile};
    let cfg = LimitsConfig {
        per_user_per_minute: NonZeroU32::new(600).unwrap(),
        refusals_per_user_per_minute: NonZeroU32::new(600).unwrap(),
        per_instance_per_minute: NonZeroU32::new(600).unwrap(),
        api_per_second: NonZeroU32::new(10).unwrap(),
    };
    let dir = TempDir::new("bench-limits");
    let file = Arc::new(StateFile::open(&StateFile::path_for(&dir.join("audit.jsonl"))).unwrap());
    let ids: Vec<InstanceId> = (0..300)
        .map(|i| InstanceId::parse(&format!("ins-b{i:07}")).unwrap())
        .collect();
    for (name, limits) in [
        ("in this process", RequestLimits::new(&cfg)),
        (
            "shared file",
            RequestLimits::shared(&cfg, Arc::clone(&file)),
        ),
    ] {
        let n = 20_000usize;
        let start = Instant::now();
        for k in 0..n {
            let member = format!("discord:{}", k % 300);
            let mut g = limits.lock().unwrap();
            if g.check(&member, &ids[k % 300]).is_ok() {
                g.take(&member, &ids[k % 300]);
            }
        }
        let per = start.elapsed() / n as u32;
        println!(
            "limits ({name}): {:.1} µs per decision, 300 active members",
            per.as_secs_f64() * 1e6
        );
    }
}
