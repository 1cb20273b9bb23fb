//! The audit channel: a line per event, posted in the background. A slow or failing channel
//! never delays the person asking; the journal stays the record of truth.
//!
//! Lines about links (issued, delivered, failed) have their own queue and always go first.
//! Refusals cannot crowd them out: a member's first refusal in a minute is posted as it is, the
//! rest are counted and posted as one line a minute ("5 more refused requests from @x").

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serenity::all::{ChannelId, CreateMessage, Http};
use tokio::sync::{mpsc, Notify};

use super::audit_lines::{Line, Lines};
use super::no_mentions;
use crate::audit::Follower;

/// Link lines waiting to be posted; past this (hours of a dead channel), lines are dropped and
/// logged. Refusals never take their room.
const QUEUE: usize = 4096;
/// Refusal lines waiting; past this they are only counted.
const REFUSALS_QUEUE: usize = 256;
/// Attempts per line, with 1 s, 2 s, 4 s between them.
const ATTEMPTS: u32 = 4;
/// A post waiting this long on Discord makes the feed stalled in `/healthz` (each attempt is
/// bounded at 10 s by the REST client).
const STALLED_AFTER: Duration = Duration::from_secs(15);
/// How often counted refusals are summed up.
const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Refusals {
    lines: VecDeque<String>,
    /// Members whose first refusal of this window was posted.
    posted: HashSet<u64>,
    /// Refusals per member counted, not posted, in this window.
    counted: HashMap<u64, u64>,
}

pub struct AuditFeed {
    tx: mpsc::Sender<String>,
    rx: Mutex<Option<mpsc::Receiver<String>>>,
    refusals: Arc<Mutex<Refusals>>,
    refused: Arc<Notify>,
    /// Swapped by a config reload; 0 means off.
    channel: Arc<AtomicU64>,
    started: AtomicBool,
    /// Set by `drain`: the poster sums up refusals, empties both queues, then says so.
    draining: Arc<AtomicBool>,
    drained: Arc<Notify>,
    /// Since when the line being posted has been waiting on Discord.
    posting: Arc<Mutex<Option<Instant>>>,
    /// When a line was last given up on.
    gave_up: Arc<Mutex<Option<Instant>>>,
}

impl AuditFeed {
    pub fn new(channel: Option<u64>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            refusals: Arc::default(),
            refused: Arc::default(),
            channel: Arc::new(AtomicU64::new(channel.unwrap_or(0))),
            started: AtomicBool::new(false),
            draining: Arc::default(),
            drained: Arc::default(),
            posting: Arc::default(),
            gave_up: Arc::default(),
        }
    }

    /// Why the feed is behind, for `/healthz`: a post waiting on Discord for long, or a line
    /// given up on in the last minute.
    pub fn stalled(&self) -> Option<String> {
        let queued = QUEUE - self.tx.capacity() + lock(&self.refusals).lines.len();
        if let Some(since) = *lock_at(&self.posting) {
            if since.elapsed() >= STALLED_AFTER {
                return Some(format!(
                    "audit channel: a line has waited on Discord for {} s; {queued} more queued (the journal has them all)",
                    since.elapsed().as_secs()
                ));
            }
        }
        let gave_up = (*lock_at(&self.gave_up)).filter(|t| t.elapsed() < Duration::from_secs(60));
        gave_up.map(|_| {
            format!("audit channel: Discord refused or timed out a line in the last minute (given up after {ATTEMPTS} attempts); {queued} queued")
        })
    }

    pub fn set_channel(&self, channel: Option<u64>) {
        self.channel.store(channel.unwrap_or(0), Ordering::Relaxed);
    }

    /// The audit channel in force, if any.
    pub fn channel(&self) -> Option<u64> {
        Some(self.channel.load(Ordering::Relaxed)).filter(|c| *c != 0)
    }

    fn enabled(&self) -> bool {
        self.channel.load(Ordering::Relaxed) != 0
    }

    /// Starts the poster once, when the gateway is up and an `Http` exists.
    pub fn start(&self, http: Arc<Http>) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        self.started.store(true, Ordering::SeqCst);
        let (refusals, refused, channel) = (
            Arc::clone(&self.refusals),
            Arc::clone(&self.refused),
            Arc::clone(&self.channel),
        );
        let (draining, drained) = (Arc::clone(&self.draining), Arc::clone(&self.drained));
        let (posting, gave_up) = (Arc::clone(&self.posting), Arc::clone(&self.gave_up));
        let mut summed_for_drain = false;
        tokio::spawn(async move {
            let mut window = tokio::time::interval(REFUSAL_WINDOW);
            window.tick().await;
            let mut window_ends = tokio::time::Instant::now() + REFUSAL_WINDOW;
            loop {
                // Checked on every turn, so a steady stream of lines cannot put off the summary.
                if tokio::time::Instant::now() >= window_ends {
                    summarise(&refusals);
                    window_ends += REFUSAL_WINDOW;
                    window.reset();
                }
                // Link lines first, then refusal lines, then wait for either or the window.
                let line = match rx.try_recv() {
                    Ok(line) => Some(line),
                    Err(_) => lock(&refusals).lines.pop_front(),
                };
                let line = match line {
                    Some(line) => line,
                    None if draining.load(Ordering::SeqCst) => {
                        if !summed_for_drain {
                            summed_for_drain = true;
                            summarise(&refusals);
                            continue;
                        }
                        drained.notify_waiters();
                        // Lines queued after the drain are still posted.
                        summed_for_drain = false;
                        draining.store(false, Ordering::SeqCst);
                        continue;
                    }
                    None => tokio::select! {
                        biased;
                        line = rx.recv() => match line {
                            Some(line) => line,
                            None => return,
                        },
                        () = refused.notified() => continue,
                        _ = window.tick() => continue,
                    },
                };
                let c = channel.load(Ordering::Relaxed);
                if c != 0 {
                    *lock_at(&posting) = Some(Instant::now());
                    let posted = post(&http, ChannelId::new(c), line).await;
                    *lock_at(&posting) = None;
                    if !posted {
                        *lock_at(&gave_up) = Some(Instant::now());
                    }
                }
            }
        });
    }

    /// Follows the journal from `follower` on and queues each record's line: the channel is a
    /// projection of the journal, whichever process wrote the record.
    pub fn project(self: &Arc<Self>, mut follower: Follower) {
        let feed = Arc::clone(self);
        tokio::spawn(async move {
            let mut lines = Lines::default();
            while let Some(next) = follower.next().await {
                match next {
                    Ok(record) => match lines.line(&record) {
                        Some(Line::Access(text)) => feed.post(text),
                        Some(Line::Refusal { user, text }) => feed.post_refusal(user, text),
                        Some(Line::Summary(text)) => feed.post_refusals(text),
                        None => {}
                    },
                    Err(missed) => {
                        tracing::error!(error = %missed, "the audit channel skipped records it could not read back");
                        feed.post(format!(
                            "audit journal: records {} to {} could not be read back for this channel (run `vncbot audit verify`)",
                            missed.from, missed.to
                        ));
                    }
                }
            }
        });
    }

    /// Queues a line about a link without waiting; a no-op when no channel is configured.
    pub fn post(&self, line: String) {
        if self.enabled() && self.tx.try_send(line).is_err() {
            tracing::warn!(
                "audit channel queue is full; a line was dropped (the journal has the record)"
            );
        }
    }

    /// Waits until every queued line has been posted (refusal counts summed up first), for
    /// shutdown. Returns at once when the poster never started (the gateway never came up).
    pub async fn drain(&self) {
        if !self.started.load(Ordering::SeqCst) {
            return;
        }
        let drained = self.drained.notified();
        tokio::pin!(drained);
        drained.as_mut().enable();
        self.draining.store(true, Ordering::SeqCst);
        self.refused.notify_one();
        drained.await;
    }

    /// Queues a refusal of `user`'s: posted if it is their first this minute, else counted.
    pub fn post_refusal(&self, user: u64, line: String) {
        if !self.enabled() {
            return;
        }
        let mut r = lock(&self.refusals);
        if r.lines.len() < REFUSALS_QUEUE && r.posted.insert(user) {
            r.lines.push_back(line);
            drop(r);
            self.refused.notify_one();
        } else {
            *r.counted.entry(user).or_default() += 1;
        }
    }

    /// Queues a line that already sums up refusals.
    pub fn post_refusals(&self, line: String) {
        if !self.enabled() {
            return;
        }
        let mut r = lock(&self.refusals);
        if r.lines.len() < REFUSALS_QUEUE {
            r.lines.push_back(line);
            drop(r);
            self.refused.notify_one();
        } else {
            tracing::warn!("audit channel refusal queue is full; a summary was dropped (the journal has the records)");
        }
    }
}

fn lock_at(m: &Mutex<Option<Instant>>) -> std::sync::MutexGuard<'_, Option<Instant>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock(r: &Mutex<Refusals>) -> std::sync::MutexGuard<'_, Refusals> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends a window: one line per member whose refusals were counted, and a fresh start.
fn summarise(refusals: &Mutex<Refusals>) {
    let mut r = lock(refusals);
    r.posted.clear();
    let counted: Vec<(u64, u64)> = r.counted.drain().collect();
    for (user, n) in counted {
        r.lines
            .push_back(super::messages::refusals_line(user, n, REFUSAL_WINDOW));
    }
}

/// Posts one line, retrying what may mend itself; false when it was given up on.
async fn post(http: &Http, channel: ChannelId, line: String) -> bool {
    use backon::{ExponentialBuilder, Retryable};
    // 1 s, 2 s, 4 s between attempts: the project's one retry helper.
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_factor(2.0)
        .with_max_times(ATTEMPTS as usize - 1);
    let send = || async {
        let msg = CreateMessage::new()
            .content(line.clone())
            .allowed_mentions(no_mentions());
        channel.send_message(http, msg).await
    };
    let sent = send
        .retry(backoff)
        .when(worth_retrying)
        .notify(|e, wait| {
            tracing::warn!(%channel, error = %e, retry_in_ms = wait.as_millis() as u64, "could not post to the audit channel; retrying");
        })
        .await;
    match sent {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(%channel, error = %e, "gave up posting to the audit channel (the journal has the record)");
            false
        }
    }
}

/// A wrong channel or a missing permission (4xx) will not mend itself in seconds; retrying it
/// would only hold up the lines behind. 429 and 5xx and lost connections may.
fn worth_retrying(e: &serenity::Error) -> bool {
    match e {
        serenity::Error::Http(serenity::http::HttpError::UnsuccessfulRequest(r)) => {
            r.status_code.as_u16() == 429 || r.status_code.is_server_error()
        }
        _ => true,
    }
}
