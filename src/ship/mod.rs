//! Shipping the journal to object storage (S3 or Tencent COS with Object Lock), CloudTrail's way:
//! every `segment_minutes` and at shutdown, the records not yet shipped go up as a segment (the
//! exact journal lines) and a signed digest chained to the one before ([`digest`]). `vncbot audit
//! verify --remote` walks that chain ([`verify`]). The local journal stays the source of truth
//! the bot fails closed on: shipping runs beside it and never holds up a decision.
//!
//! [`keys`] is the Ed25519 key (it also signs the journal-head anchors), [`s3`] the client,
//! [`segment`] cuts byte ranges out of the journal, [`task`] is the shipper.

pub mod digest;
pub mod keys;
pub mod s3;
pub mod segment;
pub mod task;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use crate::audit::{Appended, Journal};
pub use keys::{AuditKey, KeyError, PublicKey, SIGNING_KEY_ENV};
pub use task::Shipper;

/// `[audit.ship]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipConfig {
    /// `scheme://host[:port]`; `http` only to loopback.
    pub endpoint: Url,
    pub bucket: String,
    /// Empty, or a folder the objects go under.
    pub prefix: String,
    pub region: String,
    pub segment_minutes: u32,
}

pub const DEFAULT_SEGMENT_MINUTES: u32 = 60;
/// A day: a longer stretch of the journal would sit on one disk only.
pub const MAX_SEGMENT_MINUTES: u32 = 1440;

impl ShipConfig {
    pub fn segment_interval(&self) -> Duration {
        Duration::from_secs(u64::from(self.segment_minutes) * 60)
    }

    pub fn bucket(&self) -> s3::Bucket {
        s3::Bucket {
            endpoint: self.endpoint.clone(),
            name: self.bucket.clone(),
            region: self.region.clone(),
        }
    }
}

/// The signature of a journal head, for the anchor line: over the text
/// `vncbot-journal-head-v1\nseq={seq}\nhash={hash}\n`.
pub fn head_message(head: &Appended) -> Vec<u8> {
    format!(
        "vncbot-journal-head-v1\nseq={}\nhash={}\n",
        head.seq, head.hash
    )
    .into_bytes()
}

/// What the running bot holds: the signing key (when set) and the shipper (when `[audit.ship]`
/// is).
#[derive(Default)]
pub struct Shipping {
    key: Option<Arc<AuditKey>>,
    shipper: Option<Arc<Shipper>>,
}

impl Shipping {
    /// Reads the key and credentials from the environment and starts the shipper; a missing or
    /// malformed variable is a start-up error naming it.
    pub fn start(
        config: Option<&ShipConfig>,
        journal: &Journal,
        path: &std::path::Path,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<Self, String> {
        let key = AuditKey::from_env()
            .map_err(|e| e.to_string())?
            .map(Arc::new);
        let Some(config) = config else {
            return Ok(Self { key, shipper: None });
        };
        let Some(key) = key else {
            return Err(format!("[audit.ship] is set, so {}", KeyError::Missing));
        };
        let creds = s3::S3Credentials::from_env()?;
        let shipper = Shipper::new(config, creds, Arc::clone(&key), journal.clone(), path);
        shipper.report_to(metrics);
        Arc::clone(&shipper).spawn();
        Ok(Self {
            key: Some(key),
            shipper: Some(shipper),
        })
    }

    /// The head's signature (hex), when a key is configured.
    pub fn sign_head(&self, head: &Appended) -> Option<String> {
        self.key.as_ref().map(|k| k.sign_hex(&head_message(head)))
    }

    /// The backlog, for `/healthz`'s detail.
    pub fn health_detail(&self) -> Option<String> {
        self.shipper.as_ref().and_then(|s| s.health_detail())
    }

    /// Ships what is left, within `limit`.
    pub async fn finish(&self, limit: Duration) {
        if let Some(s) = &self.shipper {
            s.finish(limit).await;
        }
    }
}
