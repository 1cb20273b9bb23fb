//! One batch under the file lock: catch up with what other writers appended, mend a torn tail,
//! append, fsync. The [`Writer`] owns the open file and this process's view of its end.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::clock::Clock;

use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use super::lock::FileLock;
use super::record::body_hash;
use super::record::{encode_line, format_time, Entry, Record};
use super::status::{Mark, Shared, Status, Timing};
use super::verify::{scan, settled_prefix, LastLine, Scanned, Verifier};
use super::{Actor, Appended, AuditError, Event, GENESIS};

/// What opening (or a later batch) found at the end of the file and mended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// A torn last line (a crash mid-write) got a `sealed` record holding its hash.
    Sealed(Appended),
    /// The last record was whole but for its line end, which was added.
    Completed { seq: u64 },
}

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) file: File,
    pub(super) end: End,
    /// `end` was read without the lock; the start of its last line, to check under the lock that
    /// the line is still there (a failed write of another process may have been undone since).
    pub(super) unconfirmed: Option<u64>,
    /// Bytes read while holding the lock, which every other writer waits for.
    pub(super) read_locked: std::cell::Cell<u64>,
    /// A failed write could not be undone: the file may end in garbage of ours.
    pub(super) poisoned: bool,
    /// Every record that joins the chain, in seq order: this process's own, and those of other
    /// processes as this one finds them.
    pub(super) feed: broadcast::Sender<Arc<Record>>,
    /// Stamps each record's `time`.
    pub(super) clock: Clock,
}

/// The end of the file as this process last saw it: its length, its line count and last record.
#[derive(Clone)]
pub(super) struct End {
    pub(super) len: u64,
    pub(super) lines: usize,
    pub(super) seq: u64,
    pub(super) hash: String,
}

impl End {
    pub(super) fn genesis() -> Self {
        End {
            len: 0,
            lines: 0,
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            seq: self.seq,
            hash: self.hash.clone(),
            offset: self.len,
        }
    }
}

/// A torn last line to mend before appending.
enum Fix {
    Complete { seq: u64 },
    Seal(Vec<u8>),
}

pub(super) struct Committed {
    pub(super) appended: Vec<Appended>,
    pub(super) repair: Option<Repair>,
}

/// What a batch added to the chain.
struct Batch {
    committed: Committed,
    /// The end the batch continued from (after confirming what was read unlocked).
    from: End,
    /// Every record it added (other writers', a seal, its own), when anyone subscribes.
    records: Vec<Record>,
}

/// Records a subscriber may fall behind by before it must read them back from the file.
const FEED_CAPACITY: usize = 1024;

impl Writer {
    /// Opens (creating it and its directory, mode 0600; never through a symbolic link) and reads
    /// the chain as far as it is settled, without the lock: the first [`Writer::commit`] reads the
    /// rest under it.
    pub(super) fn open(path: &Path, timing: Timing, clock: Clock) -> Result<Self, AuditError> {
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
            // A link is refused, not followed: the file is then chmod-ed and written, and the
            // target of a link someone planted is not ours to touch.
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(|source| {
                if source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    AuditError::Symlink {
                        path: path.to_owned(),
                    }
                } else {
                    open_err(source)
                }
            })?;
        let meta = file.metadata().map_err(open_err)?;
        if !meta.is_file() {
            return Err(open_err(io::Error::other("not a regular file")));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(open_err)?;
        }
        let shared = Arc::new(Shared {
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
            timing,
            status: Mutex::new(Status::new()),
            checked: Condvar::new(),
            metrics: Mutex::new(Arc::default()),
            config_digest: Mutex::new(None),
        });
        let mut writer = Writer {
            shared,
            file,
            end: End::genesis(),
            unconfirmed: None,
            read_locked: std::cell::Cell::new(0),
            poisoned: false,
            feed: broadcast::channel(FEED_CAPACITY).0,
            clock,
        };
        writer.read_unlocked()?;
        Ok(writer)
    }

    /// Writes `records` as one batch and records the outcome where health checks see it.
    pub(super) fn commit(
        &mut self,
        records: Vec<(Event, Actor, Entry)>,
    ) -> Result<Committed, AuditError> {
        let shared = Arc::clone(&self.shared);
        match shared.busy(|| self.commit_locked(records)) {
            Ok(batch) => {
                self.shared.status().error = None;
                self.published(&batch.from, batch.records);
                Ok(batch.committed)
            }
            Err(e) => {
                self.shared.status().error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// The chain now ends at `self.end`, continued from `from` by `records` (empty when nobody
    /// subscribes): health and readers see the new head before subscribers hear of it, so that a
    /// subscriber told of a record can always read it back.
    fn published(&mut self, from: &End, records: Vec<Record>) {
        self.shared.status().advanced(from.mark(), self.end.mark());
        for record in records {
            // Err only when nobody listens any more.
            let _ = self.feed.send(Arc::new(record));
        }
    }

    /// When idle, and only if the lock is free at once: reads what other processes appended
    /// since, so that subscribers hear of it without waiting for this process's next write. A
    /// torn tail is left for the next batch to mend (reading never writes), and a held lock for
    /// the next try. A failed batch's error stays: reading proves nothing about writing.
    pub(super) fn follow_others(&mut self) {
        if self.poisoned || self.feed.receiver_count() == 0 || self.unconfirmed.is_some() {
            return;
        }
        let grew = self.file.metadata().is_ok_and(|m| m.len() != self.end.len);
        if !grew {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let result = shared.busy(|| -> Result<_, AuditError> {
            let Ok(_lock) = FileLock::exclusive(&self.file, &self.shared.path, Duration::ZERO)
            else {
                return Ok(None);
            };
            self.shared.check_identity()?;
            match self.catch_up(true)? {
                (_, end, None, records) => Ok(Some((end, records))),
                (_, _, Some(_), _) => Ok(None),
            }
        });
        match result {
            Ok(None) => {}
            Ok(Some((end, records))) => {
                let from = std::mem::replace(&mut self.end, end);
                self.published(&from, records);
            }
            Err(e) => self.shared.status().error = Some(e.to_string()),
        }
    }

    /// Under the file lock: catch up with what other writers appended, mend a torn tail, append,
    /// fsync. A failure leaves this process's view of the file as it was before the batch.
    fn commit_locked(&mut self, records: Vec<(Event, Actor, Entry)>) -> Result<Batch, AuditError> {
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
        let keep = self.feed.receiver_count() > 0;
        let (start, mut end, fix, mut kept) = self.catch_up(keep)?;
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
                let entry = Entry {
                    config_digest: self.shared.config_digest(),
                    ..Entry::default()
                };
                let sealed = encode(
                    &mut end,
                    &self.clock,
                    (Event::Sealed, &actor, entry),
                    Some(torn),
                    &mut buf,
                );
                let appended = sealed.appended();
                if keep {
                    kept.push(sealed);
                }
                Some(Repair::Sealed(appended))
            }
        };
        let in_force = self.shared.config_digest();
        let appended = records
            .into_iter()
            .map(|(event, actor, mut entry)| {
                // A record that names no config (all but `config_reloaded`) was written under
                // the one in force.
                if entry.config_digest.is_none() {
                    entry.config_digest.clone_from(&in_force);
                }
                let record = encode(
                    &mut end,
                    &self.clock,
                    (event, &actor, entry),
                    None,
                    &mut buf,
                );
                let appended = record.appended();
                if keep {
                    kept.push(record);
                }
                appended
            })
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
        let from = std::mem::replace(&mut self.end, end);
        Ok(Batch {
            committed: Committed { appended, repair },
            from,
            records: kept,
        })
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
    /// continues the chain, and returns the file's length now, its end, a torn tail to mend, and
    /// (with `keep`) the records it read.
    #[allow(clippy::type_complexity)]
    fn catch_up(&self, keep: bool) -> Result<(u64, End, Option<Fix>, Vec<Record>), AuditError> {
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
            return Ok((len, self.end.clone(), None, Vec::new()));
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
        let mut verifier = Verifier::resume(self.end.seq, &self.end.hash, self.end.lines, None);
        if keep {
            verifier = verifier.keeping_after(self.end.seq);
        }
        let (mut verifier, fix) = match scan(&mut reader, verifier).map_err(read_err)? {
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
        let kept = verifier.take_kept();
        let s = verifier.finish().map_err(damaged)?;
        let end = End {
            len,
            lines,
            seq: s.last_seq,
            hash: s.last_hash,
        };
        Ok((len, end, fix, kept))
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

/// Appends one record's line to `out`, advances `end` past it, and returns the record.
pub(super) fn encode(
    end: &mut End,
    clock: &Clock,
    (event, actor, entry): (Event, &Actor, Entry),
    torn: Option<(String, usize)>,
    out: &mut Vec<u8>,
) -> Record {
    let (actor_id, actor_name) = match actor {
        Actor::Discord { id, name } => (id.to_string(), name.clone()),
        Actor::Local { user } => ("local".to_owned(), user.clone()),
    };
    let (torn_sha256, torn_bytes) = torn.unzip();
    let mut record = Record {
        seq: end.seq + 1,
        time: format_time(clock.now()),
        event,
        actor_id,
        actor_name,
        entry,
        torn_sha256,
        torn_bytes,
        prev: std::mem::take(&mut end.hash),
        hash: String::new(),
    };
    record.hash = encode_line(&record, out);
    end.hash.clone_from(&record.hash);
    end.seq = record.seq;
    end.lines += 1;
    record
}

impl Record {
    fn appended(&self) -> Appended {
        Appended {
            seq: self.seq,
            hash: self.hash.clone(),
        }
    }
}
