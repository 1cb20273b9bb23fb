//! The journal's writer: a queue and one committer thread that writes what has queued as one
//! batch ([`super::append`]), under an advisory lock on the file so that several processes (the
//! bot, `vncbot url`) can append to one chain.

use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::append::Writer;
use super::follow::{Follower, Reader};
use super::record::{Entry, Record};
use super::status::{Shared, Timing, TIMING};
use super::{Actor, Appended, AuditError, Event, Repair};
use crate::clock::Clock;
use crate::metrics::Metrics;

/// Most records one batch writes.
const MAX_BATCH: usize = 256;

/// The journal's writer in this process. Cheap to clone; all clones append to the same chain.
///
/// Async appends go to one committer thread, which writes whatever has queued up as one batch
/// under one file lock with one `fsync` (group commit): a burst of requests costs a few fsyncs,
/// not one each, and never a pool of blocked threads. Each caller still gets its answer only
/// after its record is on disk.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Mutex<Writer>>,
    pub(super) shared: Arc<Shared>,
    queue: std::sync::mpsc::Sender<Job>,
    feed: broadcast::Sender<Arc<Record>>,
    reader: Reader,
}

struct Job {
    event: Event,
    actor: Actor,
    entry: Entry,
    done: tokio::sync::oneshot::Sender<Result<Appended, AuditError>>,
}

impl Journal {
    /// Opens (creating it and its directory, mode 0600) and checks the chain. A torn last line is
    /// sealed with a `sealed` record, a whole last record missing only its line end is completed;
    /// any other damage refuses to start, since appending to a broken chain would hide the break.
    ///
    /// The chain is read without the lock (other writers keep appending meanwhile); only what was
    /// appended during that read is read again under the lock.
    pub fn open(path: &Path) -> Result<(Self, Option<Repair>), AuditError> {
        Self::open_with(path, TIMING, Clock::system(), || {})
    }

    /// [`Journal::open`], with records stamped by `clock`.
    pub fn open_clocked(path: &Path, clock: Clock) -> Result<(Self, Option<Repair>), AuditError> {
        Self::open_with(path, TIMING, clock, || {})
    }

    /// [`Journal::open_clocked`] for a process running under a config: every record it writes
    /// (a seal made at open included) carries `config_digest`, the digest of the config in force
    /// (`config::Source::digest`), until [`Journal::set_config_digest`] names another.
    pub fn open_configured(
        path: &Path,
        clock: Clock,
        config_digest: String,
    ) -> Result<(Self, Option<Repair>), AuditError> {
        Self::open_full(path, TIMING, clock, Some(config_digest), || {})
    }

    /// [`Journal::open`] with other timing, and `unlocked` run between reading the chain and
    /// taking the lock (for tests).
    pub(super) fn open_with(
        path: &Path,
        timing: Timing,
        clock: Clock,
        unlocked: impl FnOnce(),
    ) -> Result<(Self, Option<Repair>), AuditError> {
        Self::open_full(path, timing, clock, None, unlocked)
    }

    fn open_full(
        path: &Path,
        timing: Timing,
        clock: Clock,
        config_digest: Option<String>,
        unlocked: impl FnOnce(),
    ) -> Result<(Self, Option<Repair>), AuditError> {
        let open_err = |source| AuditError::Open {
            path: path.to_owned(),
            source,
        };
        let mut writer = Writer::open(path, timing, clock)?;
        *writer
            .shared
            .config_digest
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = config_digest;
        let shared = Arc::clone(&writer.shared);
        let reader = Reader {
            shared: Arc::clone(&shared),
            file: Arc::new(writer.file.try_clone().map_err(open_err)?),
        };
        let feed = writer.feed.clone();
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
                feed,
                reader,
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
        let m = self.shared.metrics();
        m.audit_write.observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            m.audit_failures.inc();
        }
        result
    }

    /// A reload put another config in force: records written from now on carry its digest.
    pub fn set_config_digest(&self, digest: String) {
        *self
            .shared
            .config_digest
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(digest);
    }

    /// Counts this journal's write times and failures (every clone's) into `metrics` from now on.
    pub fn count_into(&self, metrics: &Arc<Metrics>) {
        *self
            .shared
            .metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Arc::clone(metrics);
    }

    /// The registry this journal counts into.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.shared.metrics()
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

    /// Every record that joins the chain from now on, in seq order: this process's own (sent once
    /// they are on disk), and those other processes appended, as this process finds them (before
    /// its next batch, or within a few seconds when idle). A receiver that falls more than 1024
    /// records behind gets `Lagged` and reads the rest with [`Journal::records_after`], or uses
    /// [`Journal::follow`], which does that itself.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        self.feed.subscribe()
    }

    /// Every record after seq `after`: those already in the file, then each new one, gapless.
    pub fn follow(&self, after: u64) -> Follower {
        Follower::new(self.reader.clone(), self.feed.subscribe(), after)
    }

    /// The records after seq `after` up to the head, read back from the file and checked against
    /// the chain and the head. Blocking; cheap for a recent `after` (it starts at the nearest
    /// recent batch), a full read for an old one.
    pub fn records_after(&self, after: u64) -> Result<Vec<Record>, AuditError> {
        self.reader.records_after(after)
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
                if let Ok(mut writer) = writer.try_lock() {
                    let was_replaced = shared.status().replaced;
                    let found = shared.busy(|| shared.check_identity());
                    // Found moved or replaced while idle: no record failed yet, but the next
                    // would, so it counts as a write failure now (once, not at every check).
                    if found.is_err() && !was_replaced {
                        shared.metrics().audit_failures.inc();
                    }
                    writer.follow_others();
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
        let (repair, seq) = match repair {
            Repair::Sealed(a) => ("sealed", a.seq),
            Repair::Completed { seq } => ("completed", *seq),
        };
        tracing::warn!(repair, seq, path = %path.display(),
            "the audit journal ended in a torn line (another writer crashed mid-write); mended it and continued the chain");
    }
}

#[cfg(test)]
mod tests {
    use super::super::append::{encode, End};
    use super::super::tests::{alice, journal_with};
    use super::super::{verify_bytes, verify_file};
    use super::*;
    use rustix::fs::FlockOperation;
    use std::fs::{File, OpenOptions};
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    #[test]
    fn every_record_names_the_config_in_force_and_old_records_still_verify() {
        // Three records written before digests existed, and a torn tail.
        let (dir, bytes) = journal_with(3);
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let (j, repair) = Journal::open_configured(&path, Clock::system(), a.clone()).unwrap();
        assert!(matches!(repair, Some(Repair::Sealed(_))), "{repair:?}");
        j.append_blocking(Event::Denied, &alice(), Entry::default())
            .unwrap();
        j.set_config_digest(b.clone());
        j.append_blocking(Event::Granted, &alice(), Entry::default())
            .unwrap();
        // A record that names its config (a reload's) keeps it.
        let own = Entry {
            config_digest: Some("c".repeat(64)),
            ..Entry::default()
        };
        j.append_blocking(Event::ConfigReloaded, &alice(), own)
            .unwrap();
        let digests: Vec<Option<String>> = crate::audit::read_records(&path)
            .unwrap()
            .map(|r| r.unwrap().entry.config_digest)
            .collect();
        assert_eq!(
            digests,
            [
                None,
                None,
                Some(a.clone()),
                Some(a),
                Some(b),
                Some("c".repeat(64))
            ]
        );
        let s = verify_file(&path).unwrap().unwrap();
        assert_eq!((s.records, s.sealed), (6, 1));
    }

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

    /// A link planted at the journal's path could aim the bot's writes and its chmod anywhere.
    #[test]
    fn a_symbolic_link_at_the_path_is_refused_and_its_target_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("someone-elses.txt");
        std::fs::write(&target, "not a journal\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = dir.path().join("audit.jsonl");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let err = Journal::open(&path).err().expect("a link was followed");
        assert!(matches!(err, AuditError::Symlink { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&path.display().to_string())
                && text.contains("symbolic link")
                && text.contains("[audit] path"),
            "{text}"
        );
        let meta = std::fs::metadata(&target).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o644,
            "the target was chmod-ed"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "not a journal\n");

        // A dangling link does not create its target either.
        let nowhere = dir.path().join("created-through-the-link.jsonl");
        let dangling = dir.path().join("dangling.jsonl");
        std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
        assert!(matches!(
            Journal::open(&dangling),
            Err(AuditError::Symlink { .. })
        ));
        assert!(!nowhere.exists());

        // A link put in place of an open journal, even to the journal itself, is a replacement.
        let real = dir.path().join("real.jsonl");
        let (j, _) = Journal::open(&real).unwrap();
        let moved = dir.path().join("moved.jsonl");
        std::fs::rename(&real, &moved).unwrap();
        std::os::unix::fs::symlink(&moved, &real).unwrap();
        assert!(matches!(
            j.append_blocking(Event::Denied, &alice(), Entry::default()),
            Err(AuditError::Replaced { .. })
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
                &Clock::system(),
                (Event::Requested, &alice(), entry),
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
        let (j, _) = Journal::open_with(&path, FAST, Clock::system(), || {}).unwrap();
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
        let (j, repair) = Journal::open_with(&path, FAST, Clock::system(), || {
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
            &Clock::system(),
            (Event::Denied, &alice(), Entry::default()),
            None,
            &mut bytes,
        );
        std::fs::write(&path, &bytes).unwrap();
        let (j, _) = Journal::open_with(&path, FAST, Clock::system(), || {
            let mut other = kept.clone();
            let entry = Entry {
                reason: Some("a longer record in place of the undone one".into()),
                ..Entry::default()
            };
            encode(
                &mut end.clone(),
                &Clock::system(),
                (Event::Denied, &alice(), entry),
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
        let (j, _) = Journal::open_with(&path, FAST, Clock::system(), || {}).unwrap();
        let metrics = Arc::new(Metrics::new());
        j.count_into(&metrics);
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
        // Two checks later the discovery has been counted, once: a write failure before any
        // record failed.
        let found_at = status.checks;
        let (status, _) = j
            .shared
            .checked
            .wait_timeout_while(status, Duration::from_secs(30), |s| s.checks < found_at + 2)
            .unwrap();
        drop(status);
        let health = j.health().unwrap_err();
        assert!(health.contains("replaced"), "{health}");
        let out = metrics.render();
        assert!(
            out.contains("vncbot_audit_write_failures_total 1\n"),
            "{out}"
        );
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
