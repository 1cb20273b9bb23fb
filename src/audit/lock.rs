//! The advisory lock that orders the writers of one journal across processes.

use std::fs::File;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

use super::AuditError;

/// The longest pause between two attempts to take the lock.
const LOCK_POLL_MAX: Duration = Duration::from_millis(20);

/// An exclusive `flock` on the journal, released on drop. Advisory: it orders writers that take
/// it (every vncbot on this host), not other programs, and not other hosts.
pub(super) struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    /// Tries without blocking until `wait` has passed: a holder that never lets go (a stopped
    /// `vncbot url`, `flock FILE sleep 1d`) fails this batch, not every request forever.
    pub(super) fn exclusive(
        file: &'a File,
        path: &Path,
        wait: Duration,
    ) -> Result<Self, AuditError> {
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
