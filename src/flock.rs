//! An exclusive advisory `flock` taken with a bounded wait, released on drop: what orders the
//! processes that share the journal and the limits file beside it.

use std::fs::File;
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

/// Held until dropped.
pub(crate) struct Held<'a>(&'a File);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.0, FlockOperation::Unlock);
    }
}

/// Why the lock was not taken.
pub(crate) enum NotTaken {
    /// Another holder kept it for all of `wait` (this long).
    Busy(Duration),
    Io(std::io::Error),
}

/// Tries without blocking until `wait` has passed, pausing from `first_pause` up to `max_pause`
/// between attempts: a holder that never lets go (a stopped process, `flock FILE sleep 1d`)
/// fails this attempt, not every one forever.
pub(crate) fn exclusive(
    file: &File,
    wait: Duration,
    first_pause: Duration,
    max_pause: Duration,
) -> Result<Held<'_>, NotTaken> {
    let start = Instant::now();
    let mut pause = first_pause;
    loop {
        match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(Held(file)),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let waited = start.elapsed();
                if waited >= wait {
                    return Err(NotTaken::Busy(waited));
                }
                std::thread::sleep(pause.min(wait - waited));
                pause = (pause * 2).min(max_pause);
            }
            Err(e) => return Err(NotTaken::Io(e.into())),
        }
    }
}
