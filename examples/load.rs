//! Load benchmark: 300 `/vnc` commands from 300 members in one burst, against the fake Discord
//! and the mock Tencent endpoint, with the real bot binary as a separate process.
//!
//! cargo build --release && cargo run --release --example load

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::fake_discord::Invocation;
use support::{Fakes, GUILD, ONCALL_ROLE};

const MEMBERS: usize = 300;

/// (user, system) CPU ticks of a process.
fn cpu_split(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15; after the ")" they are at 11 and 12.
    (fields[11].parse().unwrap(), fields[12].parse().unwrap())
}

fn cpu_ticks(pid: u32) -> u64 {
    let (u, s) = cpu_split(pid);
    u + s
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("vncbot");
    assert!(bin.exists(), "run `cargo build --release` first");
    let f = Fakes::start("load").await;
    let (discord, cvm) = (&f.discord, &f.cvm);
    let cfg = f.write_config(&f.config);
    let mut bot = support::bot_command(&bin, &cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = bot.id().unwrap();
    discord.wait_ready().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cpu_before = cpu_ticks(pid);
    let split_before = cpu_split(pid);
    let fakes_before = cpu_ticks(std::process::id());

    let ids: Vec<String> = (0..MEMBERS).map(|i| format!("ins-load{i:04}")).collect();
    let start = Instant::now();
    let mut sent = Vec::with_capacity(MEMBERS);
    for (i, id) in ids.iter().enumerate() {
        let t = Instant::now();
        let token = discord.invoke(Invocation {
            user: 10_000 + i as u64,
            name: "member",
            guild: Some(GUILD),
            roles: vec![ONCALL_ROLE],
            command: "vnc",
            options: vec![("instance", id)],
        });
        sent.push((token, t));
    }
    // Wait for every reply edit.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = discord.count(|c| c.method == "PATCH" && c.path.ends_with("@original"));
        if done >= MEMBERS || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = start.elapsed();
    let cpu_after = cpu_ticks(pid);
    let split_after = cpu_split(pid);
    let fakes_after = cpu_ticks(std::process::id());
    let rss = peak_rss_kib(pid);

    let calls = discord.calls();
    let mut deferral: Vec<Duration> = sent
        .iter()
        .filter_map(|(token, t)| {
            calls
                .iter()
                .find(|c| c.path.contains(token.as_str()) && c.path.ends_with("/callback"))
                .map(|c| c.at.duration_since(*t))
        })
        .collect();
    let seen = cvm.seen();
    let mut freshness: Vec<Duration> = calls
        .iter()
        .filter(|c| c.method == "POST" && c.path.ends_with("/messages") && c.status == 200)
        .filter_map(|c| {
            let rid = c.body["content"].as_str()?.rsplit('`').nth(1)?.to_owned();
            let s = seen.iter().find(|s| s.request_id == rid)?;
            Some(c.at.duration_since(s.answered_at))
        })
        .collect();
    deferral.sort();
    freshness.sort();
    let rle = seen
        .iter()
        .filter(|s| s.verdict.starts_with("RequestLimitExceeded"))
        .count();
    let ticks_per_sec = 100.0; // Linux USER_HZ
    let cpu_ms = (cpu_after - cpu_before) as f64 / ticks_per_sec * 1000.0;

    println!("load: {MEMBERS} commands from {MEMBERS} members in one burst");
    println!("  deferral latency (interaction sent -> callback received): p50 {:.1} ms, p99 {:.1} ms, min {:.1} ms, max {:.1} ms ({} measured)", pct(&deferral, 0.5), pct(&deferral, 0.99), pct(&deferral, 0.0), pct(&deferral, 1.0), deferral.len());
    println!(
        "  freshness (Tencent answered -> DM received): p50 {:.1} ms, p99 {:.1} ms ({} DMs)",
        pct(&freshness, 0.5),
        pct(&freshness, 0.99),
        freshness.len()
    );
    println!("  total: {:.1} s for all replies (floor at 10 req/s: {:.1} s); Tencent max {} in any second", total.as_secs_f64(), MEMBERS as f64 / 10.0, cvm.max_per_second());
    println!("  RequestLimitExceeded at Tencent: {rle}");
    println!(
        "  bot CPU: {cpu_ms:.0} ms for the burst, {:.3} ms per command; peak RSS {:.1} MB",
        cpu_ms / MEMBERS as f64,
        rss as f64 / 1024.0
    );
    println!(
        "  bot CPU split: user {:.0} ms, system {:.0} ms",
        (split_after.0 - split_before.0) as f64 * 10.0,
        (split_after.1 - split_before.1) as f64 * 10.0
    );
    println!(
        "  (the fakes, in this process, used {:.0} ms of CPU on the same 2 cores)",
        (fakes_after - fakes_before) as f64 / ticks_per_sec * 1000.0
    );

    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    let status = bot.wait().await.unwrap();
    println!("  shutdown on SIGTERM: exit {:?}", status.code());
}
