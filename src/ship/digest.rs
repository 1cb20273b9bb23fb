//! The digest object and the object keys.
//!
//! A segment is the exact bytes of consecutive journal lines; its digest names it by seq range and
//! hash, and chains to the digest before it, as CloudTrail's digest files do. The digest is JSON:
//!
//! ```json
//! {"first_seq":1,"last_seq":42,"head_hash":"…","segment_sha256":"…",
//!  "previous_digest_key":null,"previous_digest_sha256":null,
//!  "time":"2026-12-03T09:00:00Z","signature":"…"}
//! ```
//!
//! The signature (Ed25519, hex) is over [`Digest::signed_bytes`]: the ASCII line
//! `vncbot-journal-digest-v1`, then one `name=value` line per field in the order above (an absent
//! previous digest is an empty value), each ending in `\n`. A text form, not the JSON, so a
//! verifier in any language rebuilds it without matching a JSON serialiser's choices.
//!
//! Keys embed the seq range, zero-padded to 20 digits (all of `u64`), so they never collide and
//! sort in seq order: `{prefix}digests/{first}-{last}.json` and
//! `{prefix}segments/{first}-{last}.jsonl`.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::keys::{AuditKey, PublicKey};

/// One shipped segment's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digest {
    pub first_seq: u64,
    pub last_seq: u64,
    /// The hash of record `last_seq`.
    pub head_hash: String,
    pub segment_sha256: String,
    pub previous_digest_key: Option<String>,
    /// SHA-256 of the previous digest object's bytes as stored.
    pub previous_digest_sha256: Option<String>,
    /// When the digest was made (RFC 3339, UTC).
    pub time: String,
    pub signature: String,
}

/// The digest before this one, as the next digest names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previous {
    pub key: String,
    pub sha256: String,
}

impl Digest {
    /// A signed digest of `segment`, the lines `first_seq..=last_seq`.
    pub fn new(
        key: &AuditKey,
        first_seq: u64,
        last_seq: u64,
        head_hash: &str,
        segment: &[u8],
        previous: Option<&Previous>,
        time: String,
    ) -> Self {
        let mut d = Self {
            first_seq,
            last_seq,
            head_hash: head_hash.to_owned(),
            segment_sha256: sha256_hex(segment),
            previous_digest_key: previous.map(|p| p.key.clone()),
            previous_digest_sha256: previous.map(|p| p.sha256.clone()),
            time,
            signature: String::new(),
        };
        d.signature = key.sign_hex(&d.signed_bytes());
        d
    }

    /// Exactly what the signature covers (see the module docs).
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "vncbot-journal-digest-v1\nfirst_seq={}\nlast_seq={}\nhead_hash={}\nsegment_sha256={}\nprevious_digest_key={}\nprevious_digest_sha256={}\ntime={}\n",
            self.first_seq,
            self.last_seq,
            self.head_hash,
            self.segment_sha256,
            self.previous_digest_key.as_deref().unwrap_or(""),
            self.previous_digest_sha256.as_deref().unwrap_or(""),
            self.time,
        )
        .into_bytes()
    }

    pub fn verifies(&self, public: &PublicKey) -> bool {
        public.verifies(&self.signed_bytes(), &self.signature)
    }

    /// The object's bytes (one JSON line).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("a digest serialises");
        v.push(b'\n');
        v
    }

    pub fn parse(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where the objects of one bucket prefix live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Empty, or ending in `/`.
    prefix: String,
}

impl Layout {
    pub fn new(prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        Self {
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
        }
    }

    pub fn digests_prefix(&self) -> String {
        format!("{}digests/", self.prefix)
    }

    pub fn segments_prefix(&self) -> String {
        format!("{}segments/", self.prefix)
    }

    pub fn digest_key(&self, first: u64, last: u64) -> String {
        format!("{}{first:020}-{last:020}.json", self.digests_prefix())
    }

    pub fn segment_key(&self, first: u64, last: u64) -> String {
        format!("{}{first:020}-{last:020}.jsonl", self.segments_prefix())
    }

    /// The seq range a digest or segment key names, or `None` for a key not of this layout.
    pub fn range_of(&self, key: &str) -> Option<(u64, u64)> {
        let name = key
            .strip_prefix(&self.digests_prefix())
            .and_then(|n| n.strip_suffix(".json"))
            .or_else(|| {
                key.strip_prefix(&self.segments_prefix())
                    .and_then(|n| n.strip_suffix(".jsonl"))
            })?;
        let (a, b) = name.split_once('-')?;
        if a.len() != 20 || b.len() != 20 {
            return None;
        }
        Some((a.parse().ok()?, b.parse().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::from_hex(&"11".repeat(32)).unwrap()
    }

    #[test]
    fn the_signed_bytes_are_the_documented_text_and_any_field_change_breaks_the_signature() {
        let prev = Previous {
            key: "p/digests/x.json".into(),
            sha256: "ab".repeat(32),
        };
        let d = Digest::new(
            &key(),
            3,
            7,
            &"cd".repeat(32),
            b"lines\n",
            Some(&prev),
            "2026-12-03T09:00:00Z".into(),
        );
        assert_eq!(
            String::from_utf8(d.signed_bytes()).unwrap(),
            format!(
                "vncbot-journal-digest-v1\nfirst_seq=3\nlast_seq=7\nhead_hash={}\nsegment_sha256={}\nprevious_digest_key=p/digests/x.json\nprevious_digest_sha256={}\ntime=2026-12-03T09:00:00Z\n",
                "cd".repeat(32),
                sha256_hex(b"lines\n"),
                "ab".repeat(32)
            )
        );
        let public = key().public();
        assert!(d.verifies(&public));
        let back = Digest::parse(&d.to_bytes()).unwrap();
        assert_eq!(back, d);
        for tamper in [
            |d: &mut Digest| d.first_seq += 1,
            |d: &mut Digest| d.last_seq += 1,
            |d: &mut Digest| d.head_hash = "00".repeat(32),
            |d: &mut Digest| d.segment_sha256 = "00".repeat(32),
            |d: &mut Digest| d.previous_digest_key = None,
            |d: &mut Digest| d.previous_digest_sha256 = Some("00".repeat(32)),
            |d: &mut Digest| d.time = "2027-01-01T00:00:00Z".into(),
        ] {
            let mut t = d.clone();
            tamper(&mut t);
            assert!(!t.verifies(&public), "{t:?}");
        }
    }

    #[test]
    fn keys_are_zero_padded_sortable_and_parse_back() {
        let l = Layout::new("/vncbot/prod/");
        assert_eq!(
            l.digest_key(1, 42),
            "vncbot/prod/digests/00000000000000000001-00000000000000000042.json"
        );
        assert_eq!(
            l.segment_key(1, 42),
            "vncbot/prod/segments/00000000000000000001-00000000000000000042.jsonl"
        );
        assert!(l.digest_key(9, 10) < l.digest_key(10, 11));
        assert_eq!(l.range_of(&l.digest_key(9, 10)), Some((9, 10)));
        assert_eq!(
            l.range_of(&l.segment_key(u64::MAX, u64::MAX)),
            Some((u64::MAX, u64::MAX))
        );
        assert_eq!(l.range_of("vncbot/prod/digests/1-2.json"), None);
        assert_eq!(
            Layout::new("").digest_key(1, 1),
            "digests/00000000000000000001-00000000000000000001.json"
        );
    }
}
