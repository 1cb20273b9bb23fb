//! Several processes appending to one journal, as the bot and operators' `vncbot url` runs do:
//! real processes, a real file, the real lock.
//!
//! Some processes are this test binary again, run with `VNCBOT_JOURNAL_HELPER` set, so that they
//! open the journal, say `ready`, and wait for `go` on stdin before writing: their view of the
//! file is stale by the time they write, which is the case the lock and the catch-up are for.

mod support;

use std::path::Path;
use std::process::Stdio;

use support::mock_cvm::{self, MockCvm};
use support::{config_text, write_config, TempDir};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use vncbot::audit::{read_records, verify_file, Actor, AuditError, Entry, Event, Journal};

const HELPER: &str = "VNCBOT_JOURNAL_HELPER";
const JOURNAL: &str = "VNCBOT_JOURNAL_HELPER_PATH";
const APPENDS: usize = 100;

fn actor(name: &str) -> Actor {
    Actor::Discord {
        id: 42,
        name: name.into(),
    }
}

/// The child side. `append`: `APPENDS` concurrent async appends (group commit). `fail`: one
/// append under a file-size limit just above the file's length now, which fails mid-write.
/// `hold`: takes the journal's lock, as `flock FILE sleep 1d` or a stopped writer would, and keeps
/// it until killed.
#[test]
fn helper_process() {
    let Ok(mode) = std::env::var(HELPER) else {
        return; // an ordinary test run: nothing to do
    };
    let path = std::env::var(JOURNAL).unwrap();
    let (journal, _) = Journal::open(Path::new(&path)).unwrap();
    println!("helper ready");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    let me = format!("helper {}", std::process::id());
    match mode.as_str() {
        "append" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap();
            rt.block_on(async {
                let tasks: Vec<_> = (0..APPENDS)
                    .map(|i| {
                        let (j, a) = (journal.clone(), actor(&me));
                        tokio::spawn(async move {
                            let entry = Entry {
                                reason: Some(format!("append {i}")),
                                ..Entry::default()
                            };
                            j.append(Event::Requested, &a, entry).await.unwrap()
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            });
            println!("helper done");
        }
        "fail" => {
            let len = std::fs::metadata(&path).unwrap().len();
            // SAFETY: plain libc calls on this process's own signal disposition and limits.
            unsafe {
                // Past the limit, write() fails with EFBIG instead of killing the process.
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let mut limit: libc::rlimit = std::mem::zeroed();
                assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit), 0);
                limit.rlim_cur = len + 100;
                assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
            }
            let entry = Entry {
                reason: Some("x".repeat(1000)),
                ..Entry::default()
            };
            let err = journal
                .append_blocking(Event::Requested, &actor(&me), entry)
                .unwrap_err();
            println!("helper append error: {err}");
            println!("helper health: {}", journal.health().unwrap_err());
        }
        "hold" => {
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(&path).unwrap();
            // SAFETY: flock on a descriptor this process owns and keeps open.
            assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
            println!("helper holding");
            loop {
                std::thread::park();
            }
        }
        other => panic!("unknown helper mode {other}"),
    }
}

struct Helper {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Helper {
    /// Starts a helper and waits until it has opened the journal.
    async fn start(mode: &str, journal: &Path) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HELPER, mode)
            .env(JOURNAL, journal)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut helper = Self { child, stdout };
        helper.expect("helper ready").await;
        helper
    }

    /// What follows `prefix` on the first stdout line that has it (libtest may print before it).
    async fn expect(&mut self, prefix: &str) -> String {
        let wait = async {
            while let Some(line) = self.stdout.next_line().await.unwrap() {
                if let Some(at) = line.find(prefix) {
                    return line[at + prefix.len()..].trim().to_owned();
                }
            }
            panic!("the helper ended without saying {prefix:?}");
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("the helper did not say {prefix:?} within a minute"))
    }

    async fn go(&mut self) {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"go\n").await.unwrap();
    }

    async fn finish(mut self) {
        let status = self.child.wait().await.unwrap();
        assert!(status.success(), "helper failed: {status}");
    }
}

fn url_run(cfg: &Path, instance: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vncbot"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("USER", "tester")
        .env("TENCENTCLOUD_SECRET_ID", mock_cvm::SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", mock_cvm::SECRET_KEY)
        .args(["url", instance, "--reason", "many writers", "--config"])
        .arg(cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_processes_append_to_one_unbroken_chain() {
    let mock = MockCvm::start().await;
    let dir = TempDir::new("journal-processes");
    // Four `vncbot url` runs by one user: the limit (shared by every run) allows them.
    let text = config_text(&dir, &mock.endpoint(), "")
        .replace("per_user_per_minute = 3", "per_user_per_minute = 10");
    let cfg = write_config(&dir, &text);
    let path = dir.join("audit/vncbot-audit.jsonl");
    // This process writes too, and opens first.
    let (journal, _) = Journal::open(&path).unwrap();
    journal
        .append(Event::Denied, &actor("parent"), Entry::default())
        .await
        .unwrap();

    let mut helpers = Vec::new();
    for _ in 0..4 {
        helpers.push(Helper::start("append", &path).await);
    }
    for h in &mut helpers {
        h.go().await;
    }
    let urls: Vec<Child> = (0..4).map(|_| url_run(&cfg, "ins-running1")).collect();
    let parent = tokio::spawn({
        let journal = journal.clone();
        async move {
            for i in 0..APPENDS {
                let entry = Entry {
                    reason: Some(format!("parent {i}")),
                    ..Entry::default()
                };
                journal
                    .append(Event::Requested, &actor("parent"), entry)
                    .await
                    .unwrap();
            }
        }
    });
    for mut h in helpers {
        h.expect("helper done").await;
        h.finish().await;
    }
    for u in urls {
        let out = u.wait_with_output().await.unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parent.await.unwrap();

    let summary = verify_file(&path)
        .unwrap()
        .unwrap_or_else(|e| panic!("the chain broke: {e}"));
    let expected = 1 + 4 * APPENDS + APPENDS + 4 * 3;
    assert_eq!(summary.records, expected as u64);
    assert_eq!(summary.last_seq, expected as u64);
    // Every record is there, once: count them by who wrote them.
    let records: Vec<_> = read_records(&path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(records.len(), expected);
    let by = |f: &dyn Fn(&str) -> bool| records.iter().filter(|r| f(&r.actor_name)).count();
    assert_eq!(by(&|n| n == "parent"), 1 + APPENDS);
    assert_eq!(by(&|n| n.starts_with("helper ")), 4 * APPENDS);
    assert_eq!(by(&|n| n.contains("USER=tester")), 4 * 3);
    let mut reasons: Vec<_> = records
        .iter()
        .filter_map(|r| r.entry.reason.as_deref())
        .filter(|r| r.starts_with("append "))
        .collect();
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(
        reasons.len(),
        APPENDS,
        "each helper wrote append 0..{APPENDS}"
    );
}

#[tokio::test]
async fn a_failed_write_keeps_other_writers_records_and_shows_in_health() {
    let dir = TempDir::new("journal-fail");
    let path = dir.join("audit.jsonl");
    let (journal, _) = Journal::open(&path).unwrap();
    journal
        .append(Event::Denied, &actor("parent"), Entry::default())
        .await
        .unwrap();
    // The helper opens now; what this process appends next is newer than its view of the file.
    let mut helper = Helper::start("fail", &path).await;
    for _ in 0..5 {
        journal
            .append(Event::Denied, &actor("parent"), Entry::default())
            .await
            .unwrap();
    }
    helper.go().await;
    let error = helper.expect("helper append error:").await;
    let health = helper.expect("helper health:").await;
    helper.finish().await;
    assert!(error.contains("File too large"), "{error}");
    assert_eq!(health, error, "health carries the failed write's text");

    // The helper undid only its own partial line: the six records this process fsynced stay.
    let summary = verify_file(&path)
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((summary.records, summary.last_seq), (6, 6));
    assert_eq!(journal.head().seq, 6);
    assert_eq!(
        journal
            .append(Event::Denied, &actor("parent"), Entry::default())
            .await
            .unwrap()
            .seq,
        7
    );
    assert!(journal.is_healthy());
}

/// A process stopped (Ctrl-Z) while holding the journal's lock: appends fail within a bound
/// instead of hanging, health says the journal is busy meanwhile, and once the holder is gone the
/// next append goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_process_holding_the_lock_fails_appends_in_bounded_time() {
    use std::time::{Duration, Instant};
    let dir = TempDir::new("journal-held");
    let path = dir.join("audit.jsonl");
    let (journal, _) = Journal::open(&path).unwrap();
    journal
        .append(Event::Denied, &actor("parent"), Entry::default())
        .await
        .unwrap();
    let mut helper = Helper::start("hold", &path).await;
    helper.go().await;
    helper.expect("helper holding").await;
    let pid = helper.child.id().unwrap() as libc::pid_t;
    // SAFETY: a signal to our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);

    let started = Instant::now();
    let append = tokio::spawn({
        let journal = journal.clone();
        async move {
            journal
                .append(Event::Denied, &actor("parent"), Entry::default())
                .await
        }
    });
    // Past the writer's 5 s busy limit, and before its 10 s wait for the lock ends.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let health = journal.health().unwrap_err();
    assert!(health.contains("has been busy for"), "{health}");
    let result = tokio::time::timeout(Duration::from_secs(60), append)
        .await
        .expect("the append hung behind the held lock")
        .unwrap();
    let waited = started.elapsed();
    assert!(
        matches!(result, Err(AuditError::Locked { .. })),
        "{result:?}"
    );
    assert!(waited < Duration::from_secs(20), "{waited:?}");
    let health = journal.health().unwrap_err();
    assert!(health.contains("stayed locked"), "{health}");

    // The holder dies; its lock goes with it.
    helper.child.kill().await.unwrap();
    let a = journal
        .append(Event::Denied, &actor("parent"), Entry::default())
        .await
        .unwrap();
    assert_eq!(a.seq, 2);
    assert_eq!(journal.health(), Ok(()));
    assert_eq!(verify_file(&path).unwrap().unwrap().last_seq, 2);
}
