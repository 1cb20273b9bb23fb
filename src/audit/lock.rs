//! The advisory lock that orders the writers of one journal across processes.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use super::AuditError;
use crate::flock::{self, NotTaken};

/// The longest pause between two attempts to take the lock.
const LOCK_POLL_MAX: Duration = Duration::from_millis(20);

/// An exclusive `flock` on the journal, released on drop. Advisory: it orders writers that take
/// it (every vncbot on this host), not other programs, and not other hosts.
pub(super) struct FileLock<'a>(#[allow(dead_code)] flock::Held<'a>);

impl<'a> FileLock<'a> {
    /// Tries without blocking until `wait` has passed: a holder that never lets go (a stopped
    /// `vncbot url`, `flock FILE sleep 1d`) fails this batch, not every request forever.
    pub(super) fn exclusive(
        file: &'a File,
        path: &Path,
        wait: Duration,
    ) -> Result<Self, AuditError> {
        match flock::exclusive(file, wait, Duration::from_millis(1), LOCK_POLL_MAX) {
            Ok(held) => Ok(Self(held)),
            Err(NotTaken::Busy(waited)) => Err(AuditError::Locked {
                path: path.to_owned(),
                waited,
            }),
            Err(NotTaken::Io(source)) => Err(AuditError::Write {
                path: path.to_owned(),
                source,
            }),
        }
    }
}
