//! `vncbot audit verify --remote`: walks the bucket's digests like CloudTrail's `validate-logs`.
//!
//! Every digest must carry a good signature, name the digest before it by key and SHA-256 (so a
//! deleted or replaced digest breaks the chain) and continue its seq range; every segment must
//! hash to its digest's `segment_sha256` and end on its `head_hash`; the segments together must
//! form one hash chain from the genesis. Then the local journal must start with exactly those
//! bytes: the first line where it parts is reported by seq. Only List and Get are needed.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use super::digest::{sha256_hex, Digest, Layout};
use super::keys::PublicKey;
use super::s3::{S3Client, S3Error};
use super::segment::line_head;
use crate::audit::{verify_bytes, verify_file_anchored, Appended};

/// What an intact bucket holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub digests: usize,
    pub bytes: u64,
    /// The last shipped record (seq 0 for an empty bucket).
    pub head: Appended,
}

/// How the local journal compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// Records after the bucket's head, not shipped yet.
    pub unshipped: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The bucket could not be read: access or network.
    #[error(transparent)]
    Store(#[from] S3Error),
    #[error("cannot read the local journal: {0}")]
    Io(#[from] io::Error),
    /// The bucket's chain is broken.
    #[error("the bucket's chain is broken at {key}: {why}")]
    Bucket { key: String, why: String },
    /// The local journal parts from the bucket.
    #[error("the local journal parts from the bucket at seq {seq}: {why}")]
    Diverges { seq: u64, why: String },
}

/// Walks the digests under `layout`'s prefix and their segments.
pub async fn verify_bucket(
    client: &S3Client,
    layout: &Layout,
    public: &PublicKey,
) -> Result<(Remote, Vec<u8>), RemoteError> {
    let mut keys: Vec<(u64, u64, String)> = client
        .list(&layout.digests_prefix())
        .await?
        .into_iter()
        .filter_map(|k| layout.range_of(&k).map(|(a, b)| (a, b, k)))
        .collect();
    keys.sort();
    let mut previous: Option<(String, String)> = None;
    let mut next_seq = 1;
    let mut all = Vec::new();
    let mut head = Appended {
        seq: 0,
        hash: crate::audit::GENESIS.to_owned(),
    };
    for (first, last, key) in &keys {
        let broken = |why: String| RemoteError::Bucket {
            key: key.clone(),
            why,
        };
        let bytes = client.get(key).await?;
        let d = Digest::parse(&bytes).map_err(|e| broken(format!("not a digest ({e})")))?;
        if !d.verifies(public) {
            return Err(broken(
                "its signature does not verify with this public key (forged, edited, or signed by another key)".into(),
            ));
        }
        if (d.first_seq, d.last_seq) != (*first, *last) {
            return Err(broken("its seq range differs from its key's".into()));
        }
        let named = d
            .previous_digest_key
            .clone()
            .zip(d.previous_digest_sha256.clone());
        if named != previous {
            return Err(broken(match (&named, &previous) {
                (Some((k, _)), Some((pk, _))) if k != pk => format!(
                    "it follows {k}, but the digest before it is {pk}: a digest was deleted"
                ),
                (Some((k, _)), None) => {
                    format!("it follows {k}, which is not in the bucket: a digest was deleted")
                }
                (None, Some((pk, _))) => {
                    format!("it starts a new chain after {pk}: the chain was restarted")
                }
                _ => "the digest before it was replaced (its SHA-256 differs from the one named)"
                    .into(),
            }));
        }
        if d.first_seq != next_seq {
            return Err(broken(format!(
                "it starts at seq {}, but the chain is at seq {}: records are missing",
                d.first_seq, next_seq
            )));
        }
        let seg_key = layout.segment_key(*first, *last);
        let segment = client.get(&seg_key).await.map_err(|e| {
            if e.is_not_found() {
                broken(format!("its segment {seg_key} is missing"))
            } else {
                RemoteError::Store(e)
            }
        })?;
        if sha256_hex(&segment) != d.segment_sha256 {
            return Err(broken(format!(
                "its segment {seg_key} was altered (SHA-256 differs)"
            )));
        }
        let last_line = segment
            .strip_suffix(b"\n")
            .and_then(|s| s.rsplit(|b| *b == b'\n').next())
            .and_then(line_head);
        if last_line.as_ref().map(|h| (h.seq, h.hash.as_str()))
            != Some((d.last_seq, d.head_hash.as_str()))
        {
            return Err(broken(format!(
                "its segment {seg_key} does not end on record seq {} with the digest's head hash",
                d.last_seq
            )));
        }
        all.extend_from_slice(&segment);
        next_seq = d.last_seq + 1;
        head = Appended {
            seq: d.last_seq,
            hash: d.head_hash.clone(),
        };
        previous = Some((key.clone(), sha256_hex(&bytes)));
    }
    if let Err(e) = verify_bytes(&all) {
        return Err(RemoteError::Bucket {
            key: layout.segments_prefix(),
            why: format!("the segments together do not form one chain: {e}"),
        });
    }
    Ok((
        Remote {
            digests: keys.len(),
            bytes: all.len() as u64,
            head,
        },
        all,
    ))
}

/// Compares the local journal with the shipped bytes, line by line, then verifies its own chain
/// (the unshipped rest included) anchored on the bucket's head.
pub fn compare_local(path: &Path, remote: &Remote, shipped: &[u8]) -> Result<Local, RemoteError> {
    let mut local = BufReader::with_capacity(64 * 1024, File::open(path)?);
    let mut line = Vec::with_capacity(512);
    let mut last_seq = 0;
    for remote_line in shipped.split_inclusive(|b| *b == b'\n') {
        let seq = line_head(remote_line.strip_suffix(b"\n").unwrap_or(remote_line))
            .map_or(last_seq + 1, |h| h.seq);
        line.clear();
        local.read_until(b'\n', &mut line)?;
        if line.is_empty() || (line.last() != Some(&b'\n') && line.len() < remote_line.len()) {
            return Err(RemoteError::Diverges {
                seq,
                why: format!(
                    "it ends after seq {last_seq}, but the bucket holds records up to seq {}: the journal was truncated or replaced",
                    remote.head.seq
                ),
            });
        }
        if line != remote_line {
            return Err(RemoteError::Diverges {
                seq,
                why: "this line differs from the shipped one: the journal was rewritten or replaced from here".into(),
            });
        }
        last_seq = seq;
    }
    let anchor = (remote.head.seq > 0).then(|| remote.head.clone());
    match verify_file_anchored(path, anchor.as_ref())? {
        Ok(summary) => Ok(Local {
            unshipped: summary.last_seq.saturating_sub(remote.head.seq),
        }),
        Err(e) => Err(RemoteError::Diverges {
            seq: remote.head.seq + 1,
            why: format!("the records not shipped yet do not verify: {e}"),
        }),
    }
}
