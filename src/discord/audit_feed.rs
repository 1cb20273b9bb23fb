//! The audit channel: one line per request, posted in the background. A slow or failing channel
//! never delays the person asking; the journal stays the record of truth.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serenity::all::{ChannelId, CreateAllowedMentions, CreateMessage, Http};
use tokio::sync::mpsc;

/// Lines waiting to be posted; past this, new lines are dropped (and logged).
const QUEUE: usize = 1024;
/// Attempts per line, with 1 s, 2 s, 4 s between them.
const ATTEMPTS: u32 = 4;

pub struct AuditFeed {
    tx: Option<mpsc::Sender<String>>,
    rx: Mutex<Option<mpsc::Receiver<String>>>,
    channel: Option<ChannelId>,
}

impl AuditFeed {
    pub fn new(channel: Option<u64>) -> Self {
        let (tx, rx) = match channel {
            Some(_) => {
                let (tx, rx) = mpsc::channel(QUEUE);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        Self {
            tx,
            rx: Mutex::new(rx),
            channel: channel.map(ChannelId::new),
        }
    }

    /// Starts the poster once, when the gateway is up and an `Http` exists.
    pub fn start(&self, http: Arc<Http>) {
        let (Some(channel), Some(mut rx)) = (
            self.channel,
            self.rx.lock().unwrap_or_else(|e| e.into_inner()).take(),
        ) else {
            return;
        };
        tokio::spawn(async move {
            while let Some(line) = rx.recv().await {
                post(&http, channel, line).await;
            }
        });
    }

    /// Queues a line without waiting.
    pub fn post(&self, line: String) {
        if let Some(tx) = &self.tx {
            if tx.try_send(line).is_err() {
                tracing::warn!(
                    "audit channel queue is full; a line was dropped (the journal has the record)"
                );
            }
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
