//! Every deadline the core keeps, on one task and the injected clock: a grant's window, a
//! link's 15 seconds. When one comes, the core acts (records the end) and announces it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::mpsc;

use super::GrantEvent;
use crate::core::Core;
use crate::tencent::Console;

/// Something due at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// The grant's window ends.
    GrantEnds(u64),
    /// A link shown in this DM (channel, message) is dead: scrub it.
    LinkExpires { grant: u64, dm: (u64, u64) },
    /// A request's expiry or reminder (src/core/approvals).
    Approval(crate::core::approvals::ApprovalDue),
    /// A break-glass use's acknowledgement deadline (src/core/break_glass).
    BreakGlass(crate::core::break_glass::BreakGlassDue),
}

/// The queue of deadlines; [`Core::run_timers`] serves it.
pub(crate) struct Timers {
    tx: mpsc::UnboundedSender<(SystemTime, Due)>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<(SystemTime, Due)>>>,
}

impl Default for Timers {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl Timers {
    pub(crate) fn schedule(&self, at: SystemTime, due: Due) {
        // The receiver lives as long as the core; a send fails only once it is gone.
        let _ = self.tx.send((at, due));
    }
}

impl<C: Console + Send + Sync + 'static> Core<C> {
    /// Serves the core's deadlines until the process ends. Started once by the process (the
    /// bot); without it, grants still end on time for every check (a press compares `until`
    /// with the clock), but nothing is recorded or announced when they do.
    pub fn run_timers(self: &Arc<Self>) {
        let Some(mut rx) = self
            .timers
            .rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let core = Arc::clone(self);
        tokio::spawn(async move {
            let mut due: BTreeMap<(SystemTime, u64), Due> = BTreeMap::new();
            let mut n = 0u64;
            loop {
                let next = due.keys().next().map(|(t, _)| *t);
                let wait = async {
                    match next {
                        Some(t) => core.clock.sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    item = rx.recv() => match item {
                        Some((at, d)) => {
                            n += 1;
                            due.insert((at, n), d);
                        }
                        None => return,
                    },
                    () = wait => {
                        let now = core.clock.now();
                        while let Some(entry) = due.first_entry() {
                            if entry.key().0 > now {
                                break;
                            }
                            // Each on its own task: a grant's end waits on the journal (a
                            // lock, a slow disk), and no other deadline may wait behind it.
                            let (core, due) = (Arc::clone(&core), entry.remove());
                            tokio::spawn(async move { core.fire(due).await });
                        }
                    }
                }
            }
        });
    }

    async fn fire(&self, due: Due) {
        match due {
            Due::GrantEnds(id) => {
                if let Err(e) = self.expire_grant(id).await {
                    tracing::error!(grant = id, error = %e, "could not record a grant's end");
                }
            }
            Due::Approval(due) => self.fire_approval(due).await,
            Due::BreakGlass(due) => self.fire_break_glass(due).await,
            Due::LinkExpires { grant, dm } => {
                let Some(g) = self.grant_by_id(grant) else {
                    return;
                };
                let live = self.grant_is_live(grant);
                self.grants
                    .emit(GrantEvent::LinkExpired { grant: g, dm, live });
            }
        }
    }
}
