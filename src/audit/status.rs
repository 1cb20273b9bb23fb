//! What health checks read about the writer without waiting for it and without touching the
//! disk: the head, the last batch's error, whether a batch is stuck, whether the file was
//! replaced. The writer updates it; the lock around it is never held across I/O.

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Appended, AuditError, GENESIS};
use crate::metrics::Metrics;

/// How long the writer may wait for the file lock, or for one batch's write and fsync, before
/// health checks fail, how long it waits for the lock before failing the batch, and how often an
/// idle writer checks that the file is still the one it opened.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub(super) busy_limit: Duration,
    pub(super) lock_wait: Duration,
    pub(super) check_every: Duration,
}

pub(super) const TIMING: Timing = Timing {
    busy_limit: Duration::from_secs(5),
    lock_wait: Duration::from_secs(10),
    check_every: Duration::from_secs(5),
};

/// What health checks read without waiting for the writer and without touching the disk.
pub(super) struct Shared {
    pub(super) path: PathBuf,
    /// (device, inode) of the file we opened, to notice it being replaced under us.
    pub(super) identity: (u64, u64),
    pub(super) timing: Timing,
    /// Updated by the writer; never held across I/O.
    pub(super) status: Mutex<Status>,
    /// Signalled after each identity check.
    pub(super) checked: Condvar,
    /// Where write times and failures are counted (the process's registry once the core is
    /// built; a registry of its own until then).
    pub(super) metrics: Mutex<Arc<Metrics>>,
    /// The digest of the config in force, stamped on every record that names none, so an
    /// auditor can tell which config allowed what. `None` for a journal opened without a config
    /// (tests, `audit` commands that only read).
    pub(super) config_digest: Mutex<Option<String>>,
}

pub(super) struct Status {
    pub(super) head: Appended,
    /// Where the head record's line ends: reads back stop there.
    pub(super) head_len: u64,
    /// Where recent batches started, oldest first, so that reading the records after a recent
    /// seq back from the file starts near it rather than at the top.
    pub(super) marks: VecDeque<Mark>,
    /// The last batch's error, until a batch succeeds.
    pub(super) error: Option<String>,
    /// Since when the writer has been waiting for the lock or the disk; `None` when idle.
    pub(super) busy_since: Option<Instant>,
    /// The last identity check found another file (or none) at the path.
    pub(super) replaced: bool,
    /// Identity checks so far.
    pub(super) checks: u64,
}

/// How many batch starts [`Status::marks`] keeps: a subscriber that lagged further reads from
/// the top of the file.
const MARKS: usize = 4096;

/// The end of a whole record's line: reading the records after `seq` starts at `offset`, and the
/// first of them must chain to `hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Mark {
    pub(super) seq: u64,
    pub(super) hash: String,
    pub(super) offset: u64,
}

impl Mark {
    pub(super) fn genesis() -> Self {
        Mark {
            seq: 0,
            hash: GENESIS.to_owned(),
            offset: 0,
        }
    }
}

impl Status {
    pub(super) fn new() -> Self {
        Status {
            head: Appended {
                seq: 0,
                hash: GENESIS.to_owned(),
            },
            head_len: 0,
            marks: VecDeque::new(),
            error: None,
            busy_since: None,
            replaced: false,
            checks: 0,
        }
    }

    /// A batch moved the head from `from` to `to`.
    pub(super) fn advanced(&mut self, from: Mark, to: Mark) {
        if to.seq > from.seq {
            if self.marks.len() >= MARKS {
                self.marks.pop_front();
            }
            self.marks.push_back(from);
        }
        self.head = Appended {
            seq: to.seq,
            hash: to.hash,
        };
        self.head_len = to.offset;
    }

    /// Where to start reading the records after `after`, and the head to read up to.
    pub(super) fn read_from(&self, after: u64) -> (Mark, Mark) {
        let start = self
            .marks
            .iter()
            .rev()
            .find(|m| m.seq <= after)
            .cloned()
            .unwrap_or_else(Mark::genesis);
        let head = Mark {
            seq: self.head.seq,
            hash: self.head.hash.clone(),
            offset: self.head_len,
        };
        (start, head)
    }
}

impl Shared {
    pub(super) fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` (which waits for the lock or the disk) with the writer marked busy. Only ever
    /// called holding the writer, so one busy span never ends another.
    pub(super) fn busy<T>(&self, f: impl FnOnce() -> T) -> T {
        self.status().busy_since = Some(Instant::now());
        let result = f();
        self.status().busy_since = None;
        result
    }

    /// The digest of the config in force, if any.
    pub(super) fn config_digest(&self) -> Option<String> {
        self.config_digest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(super) fn replaced(&self) -> AuditError {
        AuditError::Replaced {
            path: self.path.clone(),
        }
    }

    /// Whether the path still names the file opened; the answer is kept for health checks.
    pub(super) fn check_identity(&self) -> Result<(), AuditError> {
        // A link put in the file's place is another file, even one that points to it.
        let same = matches!(std::fs::symlink_metadata(&self.path),
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
