//! The audit channel: one line per request, posted in the background. A slow or failing channel
//! never delays the person asking; the journal stays the record of truth.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serenity::all::{ChannelId, CreateAllowedMentions, CreateMessage, Http};
use tokio::sync::mpsc;

/// Lines waiting to be posted; past this, new lines are dropped (and logged).
const QUEUE: usize = 1024;
/// Attempts per line, with 1 s, 2 s, 4 s between them.
const ATTEMPTS: u32 = 4;

type Line = (ChannelId, String);

pub struct AuditFeed {
    tx: mpsc::Sender<Line>,
    rx: Mutex<Option<mpsc::Receiver<Line>>>,
    /// Swapped by a config reload; 0 means off.
    channel: AtomicU64,
}

impl AuditFeed {
    pub fn new(channel: Option<u64>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            channel: AtomicU64::new(channel.unwrap_or(0)),
        }
    }

    pub fn set_channel(&self, channel: Option<u64>) {
        self.channel.store(channel.unwrap_or(0), Ordering::Relaxed);
    }

    /// Starts the poster once, when the gateway is up and an `Http` exists.
    pub fn start(&self, http: Arc<Http>) {
        let Some(mut rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        tokio::spawn(async move {
            while let Some((channel, line)) = rx.recv().await {
                post(&http, channel, line).await;
            }
        });
    }

    /// Queues a line without waiting; a no-op when no channel is configured.
    pub fn post(&self, line: String) {
        let channel = self.channel.load(Ordering::Relaxed);
        if channel == 0 {
            return;
        }
        if self.tx.try_send((ChannelId::new(channel), line)).is_err() {
            tracing::warn!(
                "audit channel queue is full; a line was dropped (the journal has the record)"
            );
        }
    }
}

async fn post(http: &Http, channel: ChannelId, line: String) {
    let mentions = CreateAllowedMentions::new()
        .everyone(false)
        .all_users(false)
        .all_roles(false);
    for attempt in 1..=ATTEMPTS {
        let msg = CreateMessage::new()
            .content(line.clone())
            .allowed_mentions(mentions.clone());
        match channel.send_message(http, msg).await {
            Ok(_) => return,
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(%channel, attempt, error = %e, "could not post to the audit channel; retrying");
                tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
            }
            Err(e) => {
                tracing::error!(%channel, error = %e, "gave up posting to the audit channel (the journal has the record)");
            }
        }
    }
}
