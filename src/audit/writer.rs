//! The journal's writer: a queue, one committer thread, and an advisory lock on the file so that
//! several processes (the bot, `vncbot url`) can append to one chain.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::record::body_hash;
use super::record::{encode_line, Entry, Record};
use super::verify::{scan, settled_prefix, LastLine, Scanned, Verifier};
use super::{Actor, Appended, AuditError, Event, GENESIS};

/// Most records one batch writes.
const MAX_BATCH: usize = 256;

/// How long the writer may wait for the file lock, or for one batch's write and fsync, before
/// health checks fail, how long it waits for the lock before failing the batch, and how often an
/// idle writer checks that the file is still the one it opened.
#[derive(Debug, Clone, Copy)]
struct Timing {
    busy_limit: Duration,
    lock_wait: Duration,
    check_every: Duration,
}

const TIMING: Timing = Timing {
    busy_limit: Duration::from_secs(5),
    lock_wait: Duration::from_secs(10),
    check_every: Duration::from_secs(5),
};

/// The longest pause between two attempts to take the lock.
const LOCK_POLL_MAX: Duration = Duration::from_millis(20);

/// What opening (or a later batch) found at the end of the file and mended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// A torn last line (a crash mid-write) got a `sealed` record holding its hash.
    Sealed(Appended),
    /// The last record was whole but for its line end, which was added.
    Completed { seq: u64 },
}

/// The journal's writer in this process. Cheap to clone; all clones append to the same chain.
///
/// Async appends go to one committer thread, which writes whatever has queued up as one batch
/// under one file lock with one `fsync` (group commit): a burst of requests costs a few fsyncs,
/// not one each, and never a pool of blocked threads. Each caller still gets its answer only
/// after its record is on disk.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Mutex<Writer>>,
    shared: Arc<Shared>,
    queue: std::sync::mpsc::Sender<Job>,
}

/// What health checks read without waiting for the writer and without touching the disk.
struct Shared {
    path: PathBuf,
    /// (device, inode) of the file we opened, to notice it being replaced under us.
    identity: (u64, u64),
    timing: Timing,
    /// Updated by the writer; never held across I/O.
    status: Mutex<Status>,
    /// Signalled after each identity check.
    checked: Condvar,
}

struct Status {
    head: Appended,
    /// The last batch's error, until a batch succeeds.
    error: Option<String>,
    /// Since when the writer has been waiting for the lock or the disk; `None` when idle.
    busy_since: Option<Instant>,
    /// The last identity check found another file (or none) at the path.
    replaced: bool,
    /// Identity checks so far.
    checks: u64,
}

struct Job {
    event: Event,
    actor: Actor,
    entry: Entry,
    done: tokio::sync::oneshot::Sender<Result<Appended, AuditError>>,
}

struct Writer {
    shared: Arc<Shared>,
    file: File,
    end: End,
    /// `end` was read without the lock; the start of its last line, to check under the lock that
    /// the line is still there (a failed write of another process may have been undone since).
    unconfirmed: Option<u64>,
    /// Bytes read while holding the lock, which every other writer waits for.
    read_locked: std::cell::Cell<u64>,
    /// A failed write could not be undone: the file may end in garbage of ours.
    poisoned: bool,
}

/// The end of the file as this process last saw it: its length, its line count and last record.
#[derive(Clone)]
struct End {
    len: u64,
    lines: usize,
    seq: u64,
    hash: String,
}

impl End {
    fn genesis() -> Self {
        End {
            len: 0,
            lines: 0,
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

/// A torn last line to mend before appending.
enum Fix {
    Complete { seq: u64 },
    Seal(Vec<u8>),
}

struct Committed {
    appended: Vec<Appended>,
    repair: Option<Repair>,
}

impl Journal {
    /// Opens (creating it and its directory, mode 0600) and checks the chain. A torn last line is
    /// sealed with a `sealed` record, a whole last record missing only its line end is completed;
    /// any other damage refuses to start, since appending to a broken chain would hide the break.
    ///
    /// The chain is read without the lock (other writers keep appending meanwhile); only what was
    /// appended during that read is read again under the lock.
    pub fn open(path: &Path) -> Result<(Self, Option<Repair>), AuditError> {
        Self::open_with(path, TIMING, || {})
    }

    /// [`Journal::open`] with other timing, and `unlocked` run between reading the chain and
    /// taking the lock (for tests).
    fn open_with(
        path: &Path,
        timing: Timing,
        unlocked: impl FnOnce(),
    ) -> Result<(Self, Option<Repair>), AuditError> {
        let open_err = |source| AuditError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if !meta.is_file() {
            return Err(open_err(io::Error::other("not a regular file")));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(open_err)?;
        }
        let genesis = Appended {
            seq: 0,
            hash: GENESIS.to_owned(),
        };
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
            timing,
            status: Mutex::new(Status {
                head: genesis,
                error: None,
                busy_since: None,
                replaced: false,
                checks: 0,
            }),
            checked: Condvar::new(),
        });
        let mut writer = Writer {
            shared: Arc::clone(&shared),
            file,
            end: End::genesis(),
            unconfirmed: None,
            read_locked: std::cell::Cell::new(0),
            poisoned: false,
        };
        writer.read_unlocked()?;
        unlocked();
        // Catching up with what was appended meanwhile is a batch with no records of its own.
        let repair = writer.commit(Vec::new())?.repair;
        let inner = Arc::new(Mutex::new(writer));
        let (queue, jobs) = std::sync::mpsc::channel();
        let committer = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || commit_loop(&committer, &jobs))
            .map_err(open_err)?;
        Ok((
            Journal {
                inner,
                shared,
                queue,
            },
            repair,
        ))
    }

    /// Appends one record and fsyncs it. Blocking I/O runs off the async workers.
    pub async fn append(
        &self,
        event: Event,
        actor: &Actor,
        entry: Entry,
    ) -> Result<Appended, AuditError> {
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            event,
            actor: actor.clone(),
            entry,
            done,
        };
        let started = std::time::Instant::now();
        let result = match self.queue.send(job) {
            Ok(()) => answer.await.unwrap_or(Err(AuditError::Poisoned)),
            Err(_) => Err(AuditError::Poisoned),
        };
        let m = &crate::metrics::METRICS;
        m.audit_write.observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            m.audit_failures.inc();
        }
        result
    }

    /// Appends one record and fsyncs it on the calling thread.
    pub fn append_blocking(
        &self,
        event: Event,
        actor: &Actor,
        entry: Entry,
    ) -> Result<Appended, AuditError> {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let committed = w.commit(vec![(event, actor.clone(), entry)])?;
        log_repair(&self.shared.path, committed.repair.as_ref());
        Ok(committed.appended.into_iter().next().expect("one record"))
    }

    /// The last record this process knows of (its own last, or the last another writer had
    /// appended before it): what the bot anchors outside the file.
    pub fn head(&self) -> Appended {
        self.shared.status().head.clone()
    }

    /// Whether the journal can be written: the writer is not stuck waiting for the lock or the
    /// disk, the last batch succeeded, and the file was still the one opened when the writer last
    /// looked (after each batch, and every few seconds when idle). It reads only memory: it never
    /// waits for the writer or touches the disk, so it answers at once while a write hangs on a
    /// slow, full or unreachable volume.
    pub fn health(&self) -> Result<(), String> {
        let status = self.shared.status();
        if let Some(since) = status.busy_since {
            let busy = since.elapsed();
            if busy >= self.shared.timing.busy_limit {
                return Err(format!(
                    "the audit journal {} has been busy for {} s: another process holds its lock, or the disk is not answering",
                    self.shared.path.display(),
                    busy.as_secs()
                ));
            }
        }
        if let Some(error) = &status.error {
            return Err(error.clone());
        }
        if status.replaced {
            return Err(self.shared.replaced().to_string());
        }
        Ok(())
    }

    pub fn is_healthy(&self) -> bool {
        self.health().is_ok()
    }
}

/// The committer thread: takes what has queued, writes it as one batch, answers each caller; when
/// idle, checks every few seconds that the file is still the one opened.
fn commit_loop(writer: &Mutex<Writer>, jobs: &Receiver<Job>) {
    let (shared, path) = {
        let w = writer.lock().unwrap_or_else(|e| e.into_inner());
        (Arc::clone(&w.shared), w.shared.path.clone())
    };
    loop {
        let first = match jobs.recv_timeout(shared.timing.check_every) {
            Ok(job) => job,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                // A blocking append holding the writer checks the file itself.
                if let Ok(_writer) = writer.try_lock() {
                    shared.busy(|| {
                        let _ = shared.check_identity();
                    });
                }
                continue;
            }
        };
        let path = path.as_path();
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (records, dones): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|j| ((j.event, j.actor, j.entry), j.done))
            .unzip();
        let result = {
            let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
            w.commit(records)
        };
        match result {
            Ok(committed) => {
                log_repair(path, committed.repair.as_ref());
                for (done, a) in dones.into_iter().zip(committed.appended) {
                    let _ = done.send(Ok(a));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for done in dones {
                    let _ = done.send(Err(e.clone_for_batch(&message)));
                }
            }
        }
    }
}

/// Another writer crashed mid-write (the repair at open is the caller's to report).
fn log_repair(path: &Path, repair: Option<&Repair>) {
    if let Some(repair) = repair {
        tracing::warn!(?repair, path = %path.display(),
            "the audit journal ended in a torn line (another writer crashed mid-write); mended it and continued the chain");
    }
}

impl Shared {
    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` (which waits for the lock or the disk) with the writer marked busy. Only ever
    /// called holding the writer, so one busy span never ends another.
    fn busy<T>(&self, f: impl FnOnce() -> T) -> T {
        self.status().busy_since = Some(Instant::now());
        let result = f();
        self.status().busy_since = None;
        result
    }

    fn replaced(&self) -> AuditError {
        AuditError::Replaced {
            path: self.path.clone(),
        }
    }

    /// Whether the path still names the file opened; the answer is kept for health checks.
    fn check_identity(&self) -> Result<(), AuditError> {
        let same = matches!(std::fs::metadata(&self.path),
            Ok(m) if m.is_file() && (m.dev(), m.ino()) == self.identity);
        let mut status = self.status();
        status.replaced = !same;
        status.checks += 1;
        drop(status);
        self.checked.notify_all();
        if same {
            Ok(())
        } else {
            Err(self.replaced())
        }
    }
}

/// An exclusive `flock` on the journal, released on drop. Advisory: it orders writers that take
/// it (every vncbot on this host), not other programs, and not other hosts.
struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    /// Tries without blocking until `wait` has passed: a holder that never lets go (a stopped
    /// `vncbot url`, `flock FILE sleep 1d`) fails this batch, not every request forever.
    fn exclusive(file: &'a File, path: &Path, wait: Duration) -> Result<Self, AuditError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(Self(file)),
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let waited = start.elapsed();
                    if waited >= wait {
                        return Err(AuditError::Locked {
                            path: path.to_owned(),
                            waited,
                        });
                    }
                    std::thread::sleep(pause.min(wait - waited));
                    pause = (pause * 2).min(LOCK_POLL_MAX);
                }
                Err(e) => {
                    return Err(AuditError::Write {
                        path: path.to_owned(),
                        source: e.into(),
                    })
                }
            }
        }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.0, FlockOperation::Unlock);
    }
}

impl Writer {
    /// Writes `records` as one batch and records the outcome where health checks see it.
    fn commit(&mut self, records: Vec<(Event, Actor, Entry)>) -> Result<Committed, AuditError> {
        let shared = Arc::clone(&self.shared);
        let result = shared.busy(|| self.commit_locked(records));
        let mut status = self.shared.status();
        match &result {
            Ok(_) => {
                status.error = None;
                status.head = Appended {
                    seq: self.end.seq,
                    hash: self.end.hash.clone(),
                };
            }
            Err(e) => status.error = Some(e.to_string()),
        }
        result
    }

    /// Under the file lock: catch up with what other writers appended, mend a torn tail, append,
    /// fsync. A failure leaves this process's view of the file as it was before the batch.
    fn commit_locked(
        &mut self,
        records: Vec<(Event, Actor, Entry)>,
    ) -> Result<Committed, AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned);
        }
        let _lock =
            FileLock::exclusive(&self.file, &self.shared.path, self.shared.timing.lock_wait)?;
        self.shared.check_identity()?;
        if let Some(line_start) = self.unconfirmed {
            if !self.still_ends_with(line_start)? {
                // Rare: what was read unlocked was undone since. Read it all again, locked.
                self.end = End::genesis();
            }
            self.unconfirmed = None;
        }
        let (start, mut end, fix) = self.catch_up()?;
        let mut buf = Vec::with_capacity(records.len() * 400);
        let repair = match fix {
            None => None,
            Some(Fix::Complete { seq }) => {
                buf.push(b'\n');
                Some(Repair::Completed { seq })
            }
            Some(Fix::Seal(fragment)) => {
                // End the torn fragment's line so the seal starts on a line of its own.
                buf.push(b'\n');
                end.lines += 1;
                let actor = Actor::Local {
                    user: "vncbot".into(),
                };
                let torn = (hex::encode(Sha256::digest(&fragment)), fragment.len());
                let sealed = encode(
                    &mut end,
                    Event::Sealed,
                    &actor,
                    Entry::default(),
                    Some(torn),
                    &mut buf,
                );
                Some(Repair::Sealed(sealed))
            }
        };
        let appended = records
            .into_iter()
            .map(|(event, actor, entry)| encode(&mut end, event, &actor, entry, None, &mut buf))
            .collect();
        if !buf.is_empty() {
            let result = (&self.file)
                .write_all(&buf)
                .and_then(|()| self.file.sync_data());
            if let Err(source) = result {
                // Undo a partial line so the next record starts clean, but only back to where
                // the file ended when we took the lock: what other writers fsynced stays. If even
                // that fails, refuse every later write rather than glue records onto garbage.
                if self.file.set_len(start).is_err() {
                    self.poisoned = true;
                }
                return Err(self.write_err(source));
            }
            end.len = start + buf.len() as u64;
        }
        self.end = end;
        Ok(Committed { appended, repair })
    }

    /// At open, without the lock: verifies the chain as far as it is settled, so that only what
    /// other writers append meanwhile is read under the lock. Damage is reported by the locked
    /// catch-up that continues from there.
    fn read_unlocked(&mut self) -> Result<(), AuditError> {
        let read_err = |source| AuditError::Read {
            path: self.shared.path.clone(),
            source,
        };
        let len = self.file.metadata().map_err(read_err)?.len();
        (&self.file).seek(SeekFrom::Start(0)).map_err(read_err)?;
        let mut reader = io::BufReader::with_capacity(64 * 1024, (&self.file).take(len));
        if let Some(s) = settled_prefix(&mut reader).map_err(read_err)? {
            self.end = End {
                len: s.len,
                lines: s.lines,
                seq: s.seq,
                hash: s.hash,
            };
            self.unconfirmed = Some(s.line_start);
        }
        Ok(())
    }

    /// Under the lock: whether the line from `line_start` to `self.end.len` is still the record
    /// read without the lock.
    fn still_ends_with(&self, line_start: u64) -> Result<bool, AuditError> {
        let read_err = |source| AuditError::Read {
            path: self.shared.path.clone(),
            source,
        };
        if self.file.metadata().map_err(read_err)?.len() < self.end.len {
            return Ok(false);
        }
        let mut line = vec![0; (self.end.len - line_start) as usize];
        (&self.file)
            .seek(SeekFrom::Start(line_start))
            .map_err(read_err)?;
        (&self.file).read_exact(&mut line).map_err(read_err)?;
        self.count_read_locked(line.len() as u64);
        let same = line.pop() == Some(b'\n')
            && super::record::parse_line(&line)
                .is_some_and(|(_, claimed)| claimed == self.end.hash)
            && body_hash(&line) == self.end.hash;
        Ok(same)
    }

    /// Reads whatever other writers appended since this process last wrote, checks that it
    /// continues the chain, and returns the file's length now, its end, and a torn tail to mend.
    fn catch_up(&self) -> Result<(u64, End, Option<Fix>), AuditError> {
        let path = &self.shared.path;
        let read_err = |source| AuditError::Read {
            path: path.clone(),
            source,
        };
        let damaged = |problem| AuditError::Damaged {
            path: path.clone(),
            problem,
        };
        let len = self.file.metadata().map_err(read_err)?.len();
        if len == self.end.len {
            return Ok((len, self.end.clone(), None));
        }
        if len < self.end.len {
            return Err(AuditError::Truncated {
                path: path.clone(),
                expected: self.end.len,
                found: len,
            });
        }
        (&self.file)
            .seek(SeekFrom::Start(self.end.len))
            .map_err(read_err)?;
        self.count_read_locked(len - self.end.len);
        let mut reader =
            io::BufReader::with_capacity(64 * 1024, (&self.file).take(len - self.end.len));
        let verifier = Verifier::resume(self.end.seq, &self.end.hash, self.end.lines, None);
        let (verifier, fix) = match scan(&mut reader, verifier).map_err(read_err)? {
            Scanned::Damaged(problem) => return Err(damaged(problem)),
            Scanned::Clean(verifier) => (verifier, None),
            Scanned::Torn {
                mut verifier,
                fragment,
            } => match verifier.last_line(&fragment).map_err(damaged)? {
                LastLine::Record { seq } => (verifier, Some(Fix::Complete { seq })),
                LastLine::Fragment => (verifier, Some(Fix::Seal(fragment))),
            },
        };
        let lines = verifier.line_no();
        let s = verifier.finish().map_err(damaged)?;
        let end = End {
            len,
            lines,
            seq: s.last_seq,
            hash: s.last_hash,
        };
        Ok((len, end, fix))
    }

    fn count_read_locked(&self, bytes: u64) {
        self.read_locked.set(self.read_locked.get() + bytes);
    }

    fn write_err(&self, source: io::Error) -> AuditError {
        AuditError::Write {
            path: self.shared.path.clone(),
            source,
        }
    }
}

/// Appends one record's line to `out` and advances `end` past it.
fn encode(
    end: &mut End,
    event: Event,
    actor: &Actor,
    entry: Entry,
    torn: Option<(String, usize)>,
    out: &mut Vec<u8>,
) -> Appended {
    let (actor_id, actor_name) = match actor {
        Actor::Discord { id, name } => (id.to_string(), name.clone()),
        Actor::Local { user } => ("local".to_owned(), user.clone()),
    };
    let (torn_sha256, torn_bytes) = torn.unzip();
    let record = Record {
        seq: end.seq + 1,
        time: now_rfc3339(),
        event,
        actor_id,
        actor_name,
        entry,
        torn_sha256,
        torn_bytes,
        prev: std::mem::take(&mut end.hash),
        hash: String::new(),
    };
    end.hash = encode_line(&record, out);
    end.seq = record.seq;
    end.lines += 1;
    Appended {
        seq: end.seq,
        hash: end.hash.clone(),
    }
}

fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now);
    now.format(&Rfc3339).expect("UTC times always format")
}

#[cfg(test)]
mod tests {
    use super::super::tests::{alice, journal_with};
    use super::super::{verify_bytes, verify_file};
    use super::*;

    #[test]
    fn torn_tail_is_sealed_on_open_and_the_chain_continues() {
        let (dir, bytes) = journal_with(3);
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
        let (j, repair) = Journal::open(&path).unwrap();
        let Some(Repair::Sealed(sealed)) = repair else {
            panic!("{repair:?}")
        };
        assert_eq!(sealed.seq, 3);
        j.append_blocking(Event::Denied, &alice(), Entry::default())
            .unwrap();
        let s = verify_file(&path).unwrap().unwrap();
        assert_eq!((s.records, s.sealed, s.last_seq), (4, 1, 4));
        // The sealed fragment cannot be swapped for another.
        let text = std::fs::read_to_string(&path).unwrap();
        let swapped = text.replacen("ins-a1b2c3d4", "ins-zzzzzzzz", 3);
        assert!(verify_bytes(swapped.as_bytes()).is_err());
    }

    #[test]
    fn a_whole_last_record_missing_its_newline_is_completed_not_sealed() {
        let (dir, bytes) = journal_with(3);
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let (j, repair) = Journal::open(&path).unwrap();
        assert_eq!(repair, Some(Repair::Completed { seq: 3 }));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "only the newline added"
        );
        assert_eq!(
            j.append_blocking(Event::Denied, &alice(), Entry::default())
                .unwrap()
                .seq,
            4
        );
        let s = verify_file(&path).unwrap().unwrap();
        assert_eq!((s.records, s.sealed, s.last_seq), (4, 0, 4));
    }

    #[test]
    fn a_replaced_file_fails_closed() {
        let (dir, _) = journal_with(0);
        let path = dir.path().join("audit.jsonl");
        let (j, _) = Journal::open(&path).unwrap();
        j.append_blocking(Event::Requested, &alice(), Entry::default())
            .unwrap();
        assert_eq!(j.health(), Ok(()));
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(
            j.append_blocking(Event::Requested, &alice(), Entry::default()),
            Err(AuditError::Replaced { .. })
        ));
        assert!(!j.is_healthy());
        assert!(j.health().unwrap_err().contains("replaced"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_neither_interleave_nor_fork() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (j, _) = Journal::open(&path).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let j = j.clone();
                tokio::spawn(async move {
                    j.append(
                        Event::Requested,
                        &alice(),
                        Entry {
                            reason: Some(format!("task {i}")),
                            ..Entry::default()
                        },
                    )
                    .await
                    .unwrap()
                    .seq
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        let s = verify_file(&path).unwrap().unwrap();
        assert_eq!(s.records, 200);
        assert_eq!(j.head().seq, 200);
        // A failed batch is refused to every caller in it and leaves the chain as it was.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let err = j
            .append(Event::Requested, &alice(), Entry::default())
            .await
            .unwrap_err();
        assert!(matches!(err, AuditError::Replaced { .. }), "{err}");
        assert_eq!(j.head().seq, 200);
    }

    #[test]
    fn file_is_private_and_other_damage_refuses_to_open() {
        let (dir, bytes) = journal_with(2);
        let path = dir.path().join("audit.jsonl");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let edited = String::from_utf8(bytes)
            .unwrap()
            .replacen("alice", "mallory", 1);
        std::fs::write(&path, edited).unwrap();
        assert!(matches!(
            Journal::open(&path),
            Err(AuditError::Damaged { .. })
        ));
    }

    /// Two opens of one file are two writers, as two processes would be: `flock` locks belong to
    /// the open file, not the process.
    #[test]
    fn two_writers_continue_each_others_chain_and_seal_each_others_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (a, _) = Journal::open(&path).unwrap();
        let (b, _) = Journal::open(&path).unwrap();
        for i in 0..6 {
            let j = if i % 3 == 0 { &a } else { &b };
            assert_eq!(
                j.append_blocking(Event::Denied, &alice(), Entry::default())
                    .unwrap()
                    .seq,
                i + 1
            );
        }
        assert_eq!(a.head().seq, 4, "a last saw its own seq 4");
        // A third writer dies mid-line; the next writer to append seals its fragment.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"seq":7,"time":"2025-"#).unwrap();
        drop(f);
        assert_eq!(
            a.append_blocking(Event::Denied, &alice(), Entry::default())
                .unwrap()
                .seq,
            8
        );
        // A whole record missing only its newline, left by b, is completed by a.
        b.append_blocking(Event::Denied, &alice(), Entry::default())
            .unwrap();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(std::fs::metadata(&path).unwrap().len() - 1)
            .unwrap();
        assert_eq!(
            a.append_blocking(Event::Denied, &alice(), Entry::default())
                .unwrap()
                .seq,
            10
        );
        let s = verify_file(&path).unwrap().unwrap();
        assert_eq!((s.records, s.sealed, s.last_seq), (10, 1, 10));
        assert_eq!(
            a.head(),
            Appended {
                seq: 10,
                hash: s.last_hash
            }
        );
        // Records removed under a running writer are refused, not written over.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = b
            .append_blocking(Event::Denied, &alice(), Entry::default())
            .unwrap_err();
        assert!(
            matches!(
                err,
                AuditError::Truncated { .. } | AuditError::Damaged { .. }
            ),
            "{err}"
        );
        assert!(b.health().is_err());
    }

    /// Timing for tests: busy after 100 ms, a held lock fails a batch after 1 s, idle checks
    /// every 50 ms.
    const FAST: Timing = Timing {
        busy_limit: Duration::from_millis(100),
        lock_wait: Duration::from_secs(1),
        check_every: Duration::from_millis(50),
    };

    /// Holds the journal's lock from another open of the file, as another process would.
    fn hold_lock(path: &Path) -> File {
        let other = File::open(path).unwrap();
        rustix::fs::flock(&other, FlockOperation::NonBlockingLockExclusive).unwrap();
        other
    }

    /// `n` chained records, as bytes, and the end after them.
    fn chain(n: usize) -> (Vec<u8>, End) {
        let mut end = End::genesis();
        let mut bytes = Vec::new();
        for i in 0..n {
            let entry = Entry {
                instance: Some("ins-a1b2c3d4".into()),
                reason: Some(format!("record {i}")),
                ..Entry::default()
            };
            encode(
                &mut end,
                Event::Requested,
                &alice(),
                entry,
                None,
                &mut bytes,
            );
        }
        end.len = bytes.len() as u64;
        (bytes, end)
    }

    fn last_line_len(bytes: &[u8]) -> u64 {
        let body = &bytes[..bytes.len() - 1];
        (body.len() - body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)) as u64 + 1
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lock_held_elsewhere_fails_the_batch_in_bounded_time_and_shows_in_health() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (j, _) = Journal::open_with(&path, FAST, || {}).unwrap();
        j.append(Event::Denied, &alice(), Entry::default())
            .await
            .unwrap();
        let held = hold_lock(&path);
        let started = Instant::now();
        let append = tokio::spawn({
            let j = j.clone();
            async move { j.append(Event::Denied, &alice(), Entry::default()).await }
        });
        // Well past the busy limit and well before the lock wait ends.
        tokio::time::sleep(FAST.busy_limit * 4).await;
        let health = j.health().unwrap_err();
        assert!(
            health.contains("has been busy for") && health.contains("holds its lock"),
            "{health}"
        );
        let result = tokio::time::timeout(FAST.lock_wait * 10, append)
            .await
            .expect("the append waited for the lock without bound")
            .unwrap();
        let waited = started.elapsed();
        let Err(AuditError::Locked {
            waited: reported, ..
        }) = result
        else {
            panic!("{result:?}")
        };
        assert!(
            reported >= FAST.lock_wait && waited < FAST.lock_wait * 5,
            "{waited:?}"
        );
        let health = j.health().unwrap_err();
        assert!(health.contains("stayed locked"), "{health}");
        assert_eq!(j.head().seq, 1);

        // Released: the next batch goes through, and health recovers.
        drop(held);
        let a = j
            .append(Event::Denied, &alice(), Entry::default())
            .await
            .unwrap();
        assert_eq!(a.seq, 2);
        assert_eq!(j.health(), Ok(()));
        assert_eq!(verify_file(&path).unwrap().unwrap().last_seq, 2);
    }

    #[test]
    fn open_reads_the_chain_without_the_lock_and_only_the_rest_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (bytes, _) = chain(5000);
        std::fs::write(&path, &bytes).unwrap();
        let (other, _) = Journal::open(&path).unwrap();
        let (j, repair) = Journal::open_with(&path, FAST, || {
            // Between reading the chain and taking the lock: the lock is free, and another writer
            // appends without waiting.
            drop(hold_lock(&path));
            let a = other
                .append_blocking(Event::Denied, &alice(), Entry::default())
                .unwrap();
            assert_eq!(a.seq, 5001);
        })
        .unwrap();
        assert!(repair.is_none());
        assert_eq!(j.head(), other.head(), "caught up with the other writer");
        // Under the lock: the last record read unlocked, to confirm it, and the other's record.
        let appended = std::fs::metadata(&path).unwrap().len() - bytes.len() as u64;
        let read_locked = j.inner.lock().unwrap().read_locked.get();
        assert_eq!(read_locked, last_line_len(&bytes) + appended);
        let a = j
            .append_blocking(Event::Denied, &alice(), Entry::default())
            .unwrap();
        assert_eq!(a.seq, 5002);
        assert_eq!(verify_file(&path).unwrap().unwrap().last_seq, 5002);
    }

    /// Another writer's failed write was undone after open read it unlocked, and a different
    /// record took its place: open reads again, under the lock, rather than trust what it read.
    #[test]
    fn open_rereads_under_the_lock_when_what_it_read_was_undone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (kept, end) = chain(19);
        let mut bytes = kept.clone();
        encode(
            &mut end.clone(),
            Event::Denied,
            &alice(),
            Entry::default(),
            None,
            &mut bytes,
        );
        std::fs::write(&path, &bytes).unwrap();
        let (j, _) = Journal::open_with(&path, FAST, || {
            let mut other = kept.clone();
            let entry = Entry {
                reason: Some("a longer record in place of the undone one".into()),
                ..Entry::default()
            };
            encode(
                &mut end.clone(),
                Event::Denied,
                &alice(),
                entry,
                None,
                &mut other,
            );
            std::fs::write(&path, &other).unwrap();
        })
        .unwrap();
        let s = verify_file(&path).unwrap().unwrap();
        assert_eq!(
            j.head(),
            Appended {
                seq: 20,
                hash: s.last_hash
            }
        );
        // The confirming read of the last line read unlocked, then the whole file again.
        assert_eq!(
            j.inner.lock().unwrap().read_locked.get(),
            last_line_len(&bytes) + std::fs::metadata(&path).unwrap().len()
        );
    }

    #[test]
    fn health_reads_only_memory_and_the_idle_writer_checks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (j, _) = Journal::open_with(&path, FAST, || {}).unwrap();
        {
            // While the writer is held (as by a batch stuck on the disk), replace the file:
            // health answers from memory, so it cannot know yet.
            let _held = j.inner.lock().unwrap();
            let checks = j.shared.status().checks;
            std::fs::remove_file(&path).unwrap();
            std::fs::create_dir(&path).unwrap();
            assert_eq!(j.health(), Ok(()));
            assert_eq!(j.shared.status().checks, checks, "the writer was held");
        }
        // The idle writer's next check notices.
        let status = j.shared.status();
        let (status, timeout) = j
            .shared
            .checked
            .wait_timeout_while(status, Duration::from_secs(30), |s| !s.replaced)
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "the idle writer never checked the file"
        );
        drop(status);
        let health = j.health().unwrap_err();
        assert!(health.contains("replaced"), "{health}");
    }

    #[test]
    fn health_answers_while_the_writer_holds_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let (j, _) = Journal::open(&dir.path().join("audit.jsonl")).unwrap();
        // As the committer holds it through a write and fsync on a slow or full disk.
        let held = j.inner.lock().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let probe = j.clone();
        std::thread::spawn(move || tx.send(probe.health()).unwrap());
        let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
        drop(held);
        assert_eq!(answer, Ok(Ok(())), "health() waited for the writer");
    }
}
