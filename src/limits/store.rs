//! The limits every process on one journal shares: `<journal>.limits`, beside the journal.
//!
//! Each `vncbot url` run builds a fresh core, and a restart used to wipe the bot's counters: 15
//! runs with `per_user_per_minute = 3` all got links, and 24 concurrent runs went past Tencent's
//! 10 calls a second. So the recent spends (each key's GCRA theoretical arrival time) and the
//! recent Tencent calls (each product's last `api_per_second` slots) live in a small JSON file,
//! read and rewritten under an exclusive `flock` for each decision. The file is private (0600),
//! opened without following a link (like the journal), and holds no secret: member keys,
//! instance IDs and times.
//!
//! In one process the file is read into a cache and parsed again only when its bytes differ
//! from what this process last read or wrote (another process wrote it), so a burst in one bot
//! costs a lock, a read and a write per decision, not a parse.
//!
//! It is not fsync-ed: the limits are a minute's worth of soft state; the journal is the record.
//! A file that cannot be parsed (a torn write after a power loss, an edit by hand) fails each
//! request closed with an error that says so, until it is fixed or removed; a missing one is
//! created.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::{Add, Sub};
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The format this build writes and reads.
const FORMAT: u32 = 1;
/// How long a decision waits for another process to let go of the file: each holds it for a
/// read and a write (microseconds), so only a stopped process (`kill -STOP`, `flock FILE sleep`)
/// holds it longer, and that fails the request rather than freezing the bot.
const LOCK_WAIT: Duration = Duration::from_millis(500);
/// The longest pause between two attempts to take the lock.
const LOCK_POLL_MAX: Duration = Duration::from_millis(5);

/// Why the shared limits could not be read or written. Every request that needs them is refused
/// (fail closed): a limit nobody can see is no limit.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the limits file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("the limits file {path} is a symbolic link, and the bot opens only a regular file there (it changed nothing the link points to). Remove the link; the bot creates the file")]
    Symlink { path: PathBuf },
    #[error("cannot read or write the limits file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the limits file {path} stayed locked by another process for {} ms", waited.as_millis())]
    Locked { path: PathBuf, waited: Duration },
    #[error("the limits file {path} is damaged ({problem}); requests are refused until it is fixed. It holds only the last minute's counters: move it aside and the bot starts them afresh")]
    Damaged { path: PathBuf, problem: String },
}

/// A wall-clock time in milliseconds since the Unix epoch: what every process on the host
/// agrees on, and what survives a restart (a monotonic clock does neither across a reboot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WallMs(u64);

impl WallMs {
    pub fn now() -> Self {
        Self::at(SystemTime::now())
    }

    pub fn at(t: SystemTime) -> Self {
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
        Self(u64::try_from(ms).unwrap_or(u64::MAX))
    }
}

impl Add<Duration> for WallMs {
    type Output = Self;
    fn add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(ms))
    }
}

impl Sub for WallMs {
    type Output = Duration;
    /// Zero when `rhs` is later, as `Instant`'s subtraction.
    fn sub(self, rhs: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(rhs.0))
    }
}

/// Each key's theoretical arrival time under each limit (see `Rate` in the parent module).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "T: Serialize",
    deserialize = "T: Deserialize<'de> + Eq + std::hash::Hash"
))]
pub struct Tats<T> {
    pub user: HashMap<String, T>,
    pub instance: HashMap<String, T>,
    pub refusals: HashMap<String, T>,
}

impl<T> Default for Tats<T> {
    fn default() -> Self {
        Self {
            user: HashMap::new(),
            instance: HashMap::new(),
            refusals: HashMap::new(),
        }
    }
}

/// What the file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Doc {
    pub format: u32,
    pub limits: Tats<WallMs>,
    /// Per paced action (`cvm`, `lighthouse`): its last calls.
    pub pace: HashMap<String, Pace>,
}

/// One paced action's last calls, oldest first.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pace {
    /// The slots handed out (some may lie ahead): the queue, first come, first served.
    pub reserved: VecDeque<WallMs>,
    /// The calls that went out and may still count in a window at Tencent.
    pub calls: Vec<Call>,
}

/// One call to Tencent: it reached Tencent no earlier than `sent` and no later than `answered`.
/// A process that reached its slot late (a busy host, a fresh `vncbot url` still starting) may
/// send well after it stamped `sent`, so the window is kept on `answered`, which bounds its
/// arrival from above whatever the delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    pub sent: WallMs,
    /// `None` while it is in flight.
    pub answered: Option<WallMs>,
}

/// The open limits file.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    file: File,
    /// The bytes last read or written and what they say; held while the file lock is.
    cache: Mutex<Cache>,
}

#[derive(Debug)]
struct Cache {
    raw: Vec<u8>,
    doc: Doc,
}

impl Doc {
    /// What an empty (new) file says.
    fn empty() -> Self {
        Self {
            format: FORMAT,
            ..Self::default()
        }
    }
}

impl StateFile {
    /// Where the limits of the journal at `journal` live.
    pub fn path_for(journal: &Path) -> PathBuf {
        let mut name = journal.as_os_str().to_owned();
        name.push(".limits");
        PathBuf::from(name)
    }

    /// Opens (creating it, mode 0600) the file; reads nothing yet.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        let open_err = |source| StateError::Open {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            // As for the journal: a planted link must not point our writes and chmod elsewhere.
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(|source| {
                if source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    StateError::Symlink {
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
        Ok(Self {
            path: path.to_owned(),
            file,
            cache: Mutex::new(Cache {
                raw: Vec::new(),
                doc: Doc::empty(),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Locks the file (this process's cache, then the `flock`, waiting at most [`LOCK_WAIT`])
    /// and reads it. Blocks the calling thread for that long at worst; each holder keeps it for
    /// a read and a write.
    pub fn lock(&self) -> Result<Locked<'_>, StateError> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let flock = Flock::exclusive(&self.file, &self.path)?;
        let mut locked = Locked {
            cache,
            _flock: flock,
            owner: self,
        };
        locked.read()?;
        Ok(locked)
    }
}

/// The file, locked and read: change [`Locked::doc`], then [`Locked::save`].
pub struct Locked<'a> {
    cache: MutexGuard<'a, Cache>,
    // Declared after the cache's guard: dropped after it, which is harmless either way, since
    // both are released together.
    _flock: Flock<'a>,
    owner: &'a StateFile,
}

impl Locked<'_> {
    pub fn doc(&self) -> &Doc {
        &self.cache.doc
    }

    pub fn doc_mut(&mut self) -> &mut Doc {
        &mut self.cache.doc
    }

    fn io_err(&self, source: io::Error) -> StateError {
        StateError::Io {
            path: self.owner.path.clone(),
            source,
        }
    }

    fn read(&mut self) -> Result<(), StateError> {
        let file = &self.owner.file;
        let len = file.metadata().map_err(|e| self.io_err(e))?.len();
        let mut raw = vec![0; usize::try_from(len).unwrap_or(0)];
        let mut got = 0;
        while got < raw.len() {
            match file.read_at(&mut raw[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_err(e)),
            }
        }
        raw.truncate(got);
        if raw == self.cache.raw {
            return Ok(());
        }
        let doc = if raw.is_empty() {
            Doc::empty()
        } else {
            let damaged = |problem: String| StateError::Damaged {
                path: self.owner.path.clone(),
                problem,
            };
            let doc: Doc = serde_json::from_slice(&raw).map_err(|e| damaged(e.to_string()))?;
            if doc.format != FORMAT {
                return Err(damaged(format!(
                    "format {}, where this build reads {FORMAT}",
                    doc.format
                )));
            }
            doc
        };
        self.cache.doc = doc;
        self.cache.raw = raw;
        Ok(())
    }

    /// Writes the document back in place (one `pwrite`, then the length).
    pub fn save(&mut self) -> Result<(), StateError> {
        let mut raw = serde_json::to_vec(&self.cache.doc).map_err(|e| self.io_err(e.into()))?;
        raw.push(b'\n');
        let file = &self.owner.file;
        let written = file
            .write_all_at(&raw, 0)
            .and_then(|()| file.set_len(raw.len() as u64));
        match written {
            Ok(()) => {
                self.cache.raw = raw;
                Ok(())
            }
            Err(e) => {
                // What is on disk is unknown now: read it afresh next time.
                self.cache.raw.clear();
                Err(self.io_err(e))
            }
        }
    }
}

/// An exclusive `flock` on the file, released on drop (as the journal's, in `audit::lock`).
struct Flock<'a>(#[allow(dead_code)] crate::flock::Held<'a>);

impl<'a> Flock<'a> {
    fn exclusive(file: &'a File, path: &Path) -> Result<Self, StateError> {
        use crate::flock::NotTaken;
        match crate::flock::exclusive(file, LOCK_WAIT, Duration::from_micros(100), LOCK_POLL_MAX) {
            Ok(held) => Ok(Self(held)),
            Err(NotTaken::Busy(waited)) => Err(StateError::Locked {
                path: path.to_owned(),
                waited,
            }),
            Err(NotTaken::Io(source)) => Err(StateError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = StateFile::path_for(&dir.path().join("audit.jsonl"));
        (dir, path)
    }

    #[test]
    fn a_missing_file_is_created_private_and_two_opens_share_it() {
        let (_dir, path) = temp();
        assert!(path.to_string_lossy().ends_with("audit.jsonl.limits"));
        let a = StateFile::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = StateFile::open(&path).unwrap();
        {
            let mut l = a.lock().unwrap();
            assert!(l.doc().limits.user.is_empty());
            l.doc_mut().limits.user.insert("alice".into(), WallMs(42));
            l.save().unwrap();
        }
        // `b` parses what `a` wrote; `a` reads its own write from the cache.
        assert_eq!(b.lock().unwrap().doc().limits.user["alice"], WallMs(42));
        {
            let mut l = b.lock().unwrap();
            l.doc_mut()
                .pace
                .entry("cvm".into())
                .or_default()
                .reserved
                .push_back(WallMs(7));
            l.save().unwrap();
        }
        let l = a.lock().unwrap();
        assert_eq!(l.doc().pace["cvm"].reserved, [WallMs(7)]);
        assert_eq!(l.doc().limits.user["alice"], WallMs(42));
    }

    #[test]
    fn a_damaged_file_fails_each_lock_with_a_clear_error_until_it_is_fixed() {
        let (_dir, path) = temp();
        let f = StateFile::open(&path).unwrap();
        std::fs::write(&path, b"{\"format\":1,\"limits\":{\"user\":{\"al").unwrap();
        for _ in 0..2 {
            let e = f.lock().err().expect("a torn file was read");
            assert!(matches!(e, StateError::Damaged { .. }), "{e}");
            let said = e.to_string();
            assert!(
                said.contains("damaged") && said.contains("move it aside"),
                "{said}"
            );
        }
        std::fs::write(
            &path,
            b"{\"format\":9,\"limits\":{\"user\":{},\"instance\":{},\"refusals\":{}},\"pace\":{}}",
        )
        .unwrap();
        let e = f.lock().err().unwrap();
        assert!(e.to_string().contains("format 9"), "{e}");
        std::fs::remove_file(&path).unwrap();
        // A new file at the path: opening it again starts afresh.
        let f = StateFile::open(&path).unwrap();
        assert!(f.lock().unwrap().doc().limits.user.is_empty());
    }

    #[test]
    fn a_link_is_refused_and_its_target_left_alone() {
        let (dir, path) = temp();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"precious").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = StateFile::open(&path).expect_err("a link was followed");
        assert!(matches!(e, StateError::Symlink { .. }), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_holder_that_never_lets_go_fails_the_lock_after_the_bound() {
        let (_dir, path) = temp();
        let f = StateFile::open(&path).unwrap();
        let other = File::open(&path).unwrap();
        rustix::fs::flock(&other, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let e = f.lock().err().expect("locked twice");
        assert!(matches!(e, StateError::Locked { .. }), "{e}");
        rustix::fs::flock(&other, rustix::fs::FlockOperation::Unlock).unwrap();
        f.lock().unwrap();
    }
}
