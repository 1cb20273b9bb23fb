//! The shipper: finds where the bucket's chain ends, then uploads each new segment and its digest.
//!
//! Where to continue is read from the bucket, not from local state: at start the last digest is
//! listed, its signature checked, and the local journal must still hold its head record (else
//! shipping stops and says where the two part). A segment stored without its digest (a crash or
//! an outage between the two PUTs) is taken up again under the same keys, so nothing is ever
//! uploaded twice under two keys. A failed PUT is retried with backoff, and the whole step again
//! later; the bot's decisions never wait for any of it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};

use super::digest::{sha256_hex, Digest, Layout, Previous};
use super::keys::AuditKey;
use super::s3::{S3Client, S3Credentials, S3Error};
use super::segment::{find_record, first_after, read_segment, Found};
use super::ShipConfig;
use crate::audit::{format_time, Journal};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    S3(#[from] S3Error),
    #[error("cannot read the journal: {0}")]
    Io(#[from] io::Error),
    /// The bucket and the local journal disagree: shipping stops until an operator looks.
    #[error("{0}")]
    Diverged(String),
}

/// Where the bucket's chain ends in the local journal.
#[derive(Debug, Clone)]
struct Position {
    /// The byte after the last shipped record's line.
    offset: u64,
    seq: u64,
    previous: Option<Previous>,
}

/// A segment and digest being uploaded, retried under the same keys until both are stored.
struct Pending {
    segment_key: String,
    segment: Vec<u8>,
    segment_stored: bool,
    digest_key: String,
    digest: Vec<u8>,
    next: Position,
}

#[derive(Default)]
struct State {
    position: Option<Position>,
    pending: Option<Pending>,
}

/// What health checks read (never waits for an upload).
#[derive(Debug, Clone, Default)]
struct Status {
    shipped_seq: u64,
    offset: u64,
    backlog: u64,
    lag: Duration,
    last_error: Option<String>,
    stopped: Option<String>,
}

pub struct Shipper {
    client: S3Client,
    layout: Layout,
    key: Arc<AuditKey>,
    journal: Journal,
    path: PathBuf,
    every: Duration,
    state: tokio::sync::Mutex<State>,
    status: Mutex<Status>,
    /// Where the backlog's age is reported (`vncbot_audit_ship_lag_seconds`), once set.
    metrics: std::sync::OnceLock<Arc<Metrics>>,
}

impl Shipper {
    /// Reports the backlog's age to this registry.
    pub fn report_to(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    pub fn new(
        config: &ShipConfig,
        creds: S3Credentials,
        key: Arc<AuditKey>,
        journal: Journal,
        path: &Path,
    ) -> Arc<Self> {
        Arc::new(Self {
            client: S3Client::new(config.bucket(), creds),
            layout: Layout::new(&config.prefix),
            key,
            journal,
            path: path.to_owned(),
            every: config.segment_interval(),
            state: Default::default(),
            status: Default::default(),
            metrics: Default::default(),
        })
    }

    /// Ships at once (the backlog a restart left), then every `segment_minutes`; after a failure,
    /// again within minutes. Refreshes the backlog's age every 15 s.
    pub fn spawn(self: Arc<Self>) {
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now();
            let mut retry = Duration::from_secs(5);
            let mut refresh = tokio::time::interval(Duration::from_secs(15));
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(next) => {
                        match self.ship_now().await {
                            Ok(_) => {
                                retry = Duration::from_secs(5);
                                next += self.every;
                            }
                            Err(ShipError::Diverged(_)) => return,
                            Err(_) => {
                                next = tokio::time::Instant::now() + retry;
                                retry = (retry * 2).min(self.every).min(Duration::from_secs(300));
                            }
                        }
                        self.refresh_lag().await;
                    }
                    _ = refresh.tick() => self.refresh_lag().await,
                }
            }
        });
    }

    /// Ships everything up to the journal head; the records shipped. An error is also kept for
    /// `/healthz`, and a divergence stops all later shipping.
    pub async fn ship_now(&self) -> Result<u64, ShipError> {
        if let Some(why) = self.lock_status().stopped.clone() {
            return Err(ShipError::Diverged(why));
        }
        let result = self.ship_pending().await;
        let mut status = self.lock_status();
        match &result {
            Ok(_) => status.last_error = None,
            Err(ShipError::Diverged(why)) => {
                tracing::error!(error = %why, "journal shipping stopped: the bucket and the local journal disagree");
                status.stopped = Some(why.clone());
            }
            Err(e) => {
                tracing::warn!(error = %e, "journal shipping failed; retrying later");
                status.last_error = Some(e.to_string());
            }
        }
        result
    }

    /// At shutdown: ships what is left, within `limit`.
    pub async fn finish(&self, limit: Duration) {
        match tokio::time::timeout(limit, self.ship_now()).await {
            Ok(Ok(n)) => tracing::info!(records = n, "journal shipped up to its head"),
            Ok(Err(_)) => {}
            Err(_) => tracing::warn!(
                "journal shipping did not finish before shutdown; the next start continues it"
            ),
        }
    }

    /// The backlog when it is late or failing, for `/healthz`'s detail.
    pub fn health_detail(&self) -> Option<String> {
        let s = self.lock_status();
        if let Some(why) = &s.stopped {
            return Some(format!("journal shipping stopped: {why}"));
        }
        let late = s.backlog > 0 && s.lag > self.every * 2;
        if s.last_error.is_none() && !late {
            return None;
        }
        let mut line = format!(
            "journal shipping: {} record(s) not shipped (oldest {} s old), shipped up to seq {}",
            s.backlog,
            s.lag.as_secs(),
            s.shipped_seq
        );
        if let Some(e) = &s.last_error {
            line.push_str(&format!("; last attempt failed: {e}"));
        }
        Some(line)
    }

    /// The records not shipped and the age of the oldest, as of the last refresh.
    pub fn backlog(&self) -> (u64, Duration) {
        let s = self.lock_status();
        (s.backlog, s.lag)
    }

    /// Re-reads the age of the oldest record not shipped (one line of the file).
    pub async fn refresh_lag(&self) {
        let (offset, shipped) = {
            let s = self.lock_status();
            (s.offset, s.shipped_seq)
        };
        let path = self.path.clone();
        let first = tokio::task::spawn_blocking(move || first_after(&path, offset))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten();
        let lag = first
            .and_then(|h| h.time)
            .and_then(|t| {
                time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|t| {
                SystemTime::now()
                    .duration_since(t.into())
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        let head = self.journal.head().seq;
        let mut s = self.lock_status();
        s.lag = lag;
        s.backlog = head.saturating_sub(shipped);
        if let Some(m) = self.metrics.get() {
            m.audit_ship_lag
                .set(i64::try_from(lag.as_secs()).unwrap_or(i64::MAX));
        }
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn ship_pending(&self) -> Result<u64, ShipError> {
        let mut state = self.state.lock().await;
        if state.position.is_none() {
            let (position, pending) = self.resume().await?;
            self.note_position(&position);
            state.position = Some(position);
            state.pending = pending;
        }
        let mut shipped = 0;
        loop {
            if let Some(p) = state.pending.as_mut() {
                if !p.segment_stored {
                    self.put(&p.segment_key, &p.segment).await?;
                    p.segment_stored = true;
                }
                self.put(&p.digest_key, &p.digest).await?;
                let next = p.next.clone();
                shipped += next.seq - state.position.as_ref().map_or(0, |p| p.seq);
                self.note_position(&next);
                state.position = Some(next);
                state.pending = None;
            }
            let position = state.position.clone().expect("set above");
            let head = self.journal.head().seq;
            if head <= position.seq {
                return Ok(shipped);
            }
            let path = self.path.clone();
            let offset = position.offset;
            let Some(segment) =
                tokio::task::spawn_blocking(move || read_segment(&path, offset, head))
                    .await
                    .map_err(|e| io::Error::other(e.to_string()))??
            else {
                return Ok(shipped);
            };
            if segment.first.seq != position.seq + 1 {
                return Err(ShipError::Diverged(format!(
                    "the journal's record after the shipped seq {} is seq {}: the file changed under the shipper",
                    position.seq, segment.first.seq
                )));
            }
            state.pending = Some(self.prepare(
                &position,
                segment.bytes,
                segment.first.seq,
                segment.last.seq,
                &segment.last.hash,
            ));
        }
    }

    /// The segment's digest, signed now, and where the chain stands once both are stored.
    fn prepare(
        &self,
        position: &Position,
        segment: Vec<u8>,
        first: u64,
        last: u64,
        head_hash: &str,
    ) -> Pending {
        let digest = Digest::new(
            &self.key,
            first,
            last,
            head_hash,
            &segment,
            position.previous.as_ref(),
            format_time(SystemTime::now()),
        )
        .to_bytes();
        let digest_key = self.layout.digest_key(first, last);
        Pending {
            segment_key: self.layout.segment_key(first, last),
            next: Position {
                offset: position.offset + segment.len() as u64,
                seq: last,
                previous: Some(Previous {
                    key: digest_key.clone(),
                    sha256: sha256_hex(&digest),
                }),
            },
            segment,
            segment_stored: false,
            digest_key,
            digest,
        }
    }

    fn note_position(&self, p: &Position) {
        let mut s = self.lock_status();
        s.shipped_seq = p.seq;
        s.offset = p.offset;
    }

    /// One PUT, retried with jittered backoff (a few attempts; the step is retried later).
    async fn put(&self, key: &str, body: &[u8]) -> Result<(), S3Error> {
        let backoff = ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .with_max_times(3);
        (|| self.client.put(key, body.to_vec()))
            .retry(backoff)
            .await
    }

    /// Where the bucket's chain ends, checked against the local journal, and a segment stored
    /// without its digest, to finish.
    async fn resume(&self) -> Result<(Position, Option<Pending>), ShipError> {
        let digests = self.client.list(&self.layout.digests_prefix()).await?;
        let last = digests
            .iter()
            .filter(|k| self.layout.range_of(k).is_some())
            .max_by_key(|k| self.layout.range_of(k));
        let position = match last {
            None => Position {
                offset: 0,
                seq: 0,
                previous: None,
            },
            Some(key) => self.after_digest(key).await?,
        };
        let segments = self.client.list(&self.layout.segments_prefix()).await?;
        let orphan = segments.iter().find(|k| {
            self.layout
                .range_of(k)
                .is_some_and(|(first, _)| first == position.seq + 1)
        });
        let Some(orphan) = orphan else {
            return Ok((position, None));
        };
        let (first, last) = self.layout.range_of(orphan).expect("filtered above");
        let stored = self.client.get(orphan).await?;
        let path = self.path.clone();
        let offset = position.offset;
        let local = tokio::task::spawn_blocking(move || read_segment(&path, offset, last))
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        match local {
            Some(s) if s.bytes == stored && s.last.seq == last => {
                tracing::info!(key = %orphan, "finishing a segment stored without its digest");
                let mut pending = self.prepare(&position, s.bytes, first, last, &s.last.hash);
                pending.segment_stored = true;
                Ok((position, Some(pending)))
            }
            _ => Err(ShipError::Diverged(format!(
                "the bucket holds the segment {orphan} without a digest, and the local journal's records {first} to {last} differ from it"
            ))),
        }
    }

    async fn after_digest(&self, key: &str) -> Result<Position, ShipError> {
        let bytes = self.client.get(key).await?;
        let digest = Digest::parse(&bytes).map_err(|e| {
            ShipError::Diverged(format!(
                "the last digest in the bucket, {key}, is not a digest: {e}"
            ))
        })?;
        if !digest.verifies(&self.key.public())
            || self.layout.range_of(key) != Some((digest.first_seq, digest.last_seq))
        {
            return Err(ShipError::Diverged(format!(
                "the last digest in the bucket, {key}, is not signed by this bot's key (VNCBOT_AUDIT_SIGNING_KEY changed, or the digest was forged)"
            )));
        }
        let path = self.path.clone();
        let (seq, hash) = (digest.last_seq, digest.head_hash.clone());
        let found = tokio::task::spawn_blocking(move || find_record(&path, seq, &hash))
            .await
            .map_err(|e| io::Error::other(e.to_string()))??;
        match found {
            Found::After(offset) => Ok(Position {
                offset,
                seq,
                previous: Some(Previous {
                    key: key.to_owned(),
                    sha256: sha256_hex(&bytes),
                }),
            }),
            Found::Differs => Err(ShipError::Diverged(format!(
                "the local journal's record seq {seq} differs from the one shipped in {key}: the journal was rewritten (check with `vncbot audit verify --remote`)"
            ))),
            Found::Missing { last } => Err(ShipError::Diverged(format!(
                "the local journal ends at seq {last}, but the bucket holds records up to seq {seq}: the journal was truncated or replaced (check with `vncbot audit verify --remote`)"
            ))),
        }
    }
}
