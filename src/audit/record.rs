//! One journal line: what it says ([`Entry`]), the chain fields around it ([`Record`]), how its hash
//! is computed, and a streaming reader for rebuilding state at start.

use std::fs::File;
use std::io::{self, BufRead};
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{Actor, Event};

/// What one record says, apart from the chain fields the journal fills in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Entry {
    /// Discord IDs are written as strings, as Discord itself sends them (and as the first
    /// journals did): JSON readers that use doubles would round them.
    #[serde(with = "id_string", skip_serializing_if = "Option::is_none")]
    pub guild: Option<u64>,
    #[serde(with = "id_string", skip_serializing_if = "Option::is_none")]
    pub channel: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The allowlist rule that allowed the request (its index: it shifts on reload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
    /// The role IDs of that rule, which do not shift.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_roles: Option<Vec<String>>,
    /// The instance's name, when the catalog knows it (what an auditor reads first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_name: Option<String>,
    /// Our or Tencent's error code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The `seq` of the record this one follows up (an outcome names its `requested`, an `ended`
    /// its `granted`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refers_to: Option<u64>,
    /// When a grant ends (RFC 3339), on `granted` records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// How many refusals one coalesced record stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// The Discord message a record is about (the DM that carries a grant's buttons).
    #[serde(with = "id_string", skip_serializing_if = "Option::is_none")]
    pub message: Option<u64>,
    /// SHA-256 of the config in force, canonical form (see `config::Source::digest`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    /// On `config_reloaded` records: the keys whose value the reload changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed: Option<Vec<String>>,
    /// On role records: the member a role was given to or taken from.
    #[serde(with = "id_string", skip_serializing_if = "Option::is_none")]
    pub target: Option<u64>,
    /// On role records: the role, and its name where Discord gave it.
    #[serde(with = "id_string", skip_serializing_if = "Option::is_none")]
    pub role: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_name: Option<String>,
    /// On role records: the server's audit log entry they were read from (what makes each
    /// entry recorded once, across restarts).
    #[serde(with = "id_string", skip_serializing_if = "Option::is_none")]
    pub audit_log_entry: Option<u64>,
    /// How a role record reached the bot: `gateway` (as it happened) or `backfill` (read from
    /// the audit log at start: it happened while the bot was down).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// On `command_permissions_changed` records: the command (or the application, for all its
    /// commands) and its permission overwrites now, as `role:ID=allow`, `user:ID=deny`, ….
    #[serde(with = "id_string", skip_serializing_if = "Option::is_none")]
    pub command: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Vec<String>>,
    /// On `extended` records: the end the extension replaced (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_until: Option<String>,
}

/// One whole journal line as read back.
///
/// Serialising a `Record` gives the line's hashed body: every field but `hash`, which is the
/// SHA-256 of exactly that body and is appended last (see [`encode_line`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub time: String,
    pub event: Event,
    /// The Discord user ID, or `local` for `vncbot url`.
    pub actor_id: String,
    pub actor_name: String,
    #[serde(flatten)]
    pub entry: Entry,
    /// On `sealed` records: the SHA-256 and length of the torn fragment it seals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub torn_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub torn_bytes: Option<usize>,
    pub prev: String,
    #[serde(default, skip_serializing)]
    pub hash: String,
}

impl Record {
    /// Who the record names.
    pub fn actor(&self) -> Actor {
        match self.actor_id.parse() {
            Ok(id) if self.actor_id != "local" => Actor::Discord {
                id,
                name: self.actor_name.clone(),
            },
            _ => Actor::Local {
                user: self.actor_name.clone(),
            },
        }
    }
}

/// A record's `time`: RFC 3339 in UTC with exactly three digits of milliseconds
/// (`2025-01-02T03:04:05.120Z`), so that times sort as text and line up in a terminal. Readers
/// accept any RFC 3339 time: the first journals dropped trailing zeros (`.12Z`, or no fraction).
pub fn format_time(t: SystemTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    OffsetDateTime::from(t)
        .format(FORMAT)
        .expect("UTC times always format")
}

/// `,"hash":"<64 hex>"}`: how every line ends.
const HASH_SUFFIX_LEN: usize = r#","hash":""}"#.len() + 64;

/// Writes `record`'s line (with its hash and line end) to `out` and returns the hash.
pub(crate) fn encode_line(record: &Record, out: &mut Vec<u8>) -> String {
    let start = out.len();
    serde_json::to_writer(&mut *out, record).expect("a record always serialises");
    let hash = hex::encode(Sha256::digest(&out[start..]));
    out.pop(); // the closing brace
    out.extend_from_slice(br#","hash":""#);
    out.extend_from_slice(hash.as_bytes());
    out.extend_from_slice(b"\"}\n");
    hash
}

/// A line (without its line end) split into its record and its claimed hash; `None` when it is
/// not a journal record at all.
pub(crate) fn parse_line(line: &[u8]) -> Option<(Record, &str)> {
    let hash = claimed_hash(line)?;
    let record: Record = serde_json::from_slice(line).ok()?;
    Some((record, hash))
}

fn claimed_hash(line: &[u8]) -> Option<&str> {
    if line.len() < HASH_SUFFIX_LEN || !line.ends_with(b"\"}") {
        return None;
    }
    let suffix = &line[line.len() - HASH_SUFFIX_LEN..];
    if !suffix.starts_with(br#","hash":""#) {
        return None;
    }
    let hash = std::str::from_utf8(&suffix[9..9 + 64]).ok()?;
    hash.bytes().all(|b| b.is_ascii_hexdigit()).then_some(hash)
}

/// The SHA-256 of a line's body: the line without its `,"hash":"…"` suffix, closed again.
pub(crate) fn body_hash(line: &[u8]) -> String {
    let body = &line[..line.len() - HASH_SUFFIX_LEN];
    hex::encode(
        Sha256::new()
            .chain_update(body)
            .chain_update(b"}")
            .finalize(),
    )
}

/// Reads a journal's records one at a time, for rebuilding state at start. It does not check the
/// chain ([`super::Journal::open`] and [`super::verify_file`] do); it skips a torn fragment that a
/// `sealed` record right after it seals, and reports any other line that is not a record as
/// `InvalidData`.
pub fn read_records(path: &Path) -> io::Result<impl Iterator<Item = io::Result<Record>>> {
    Ok(Records {
        reader: io::BufReader::with_capacity(64 * 1024, File::open(path)?),
        line_no: 0,
        unreadable: None,
        done: false,
    })
}

struct Records {
    reader: io::BufReader<File>,
    line_no: usize,
    /// A line that is not a record, with its number and hash: fine only if a seal follows.
    unreadable: Option<(usize, String)>,
    done: bool,
}

impl Records {
    fn not_a_record(line_no: usize) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("line {line_no} of the audit journal is not a journal record"),
        )
    }
}

impl Iterator for Records {
    type Item = io::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut line = Vec::with_capacity(512);
        while !self.done {
            line.clear();
            match self.reader.read_until(b'\n', &mut line) {
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Ok(0) => {
                    self.done = true;
                    break;
                }
                Ok(_) => {}
            }
            self.line_no += 1;
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            let Some((record, hash)) = parse_line(&line) else {
                if let Some((n, _)) = self.unreadable.take() {
                    self.done = true;
                    return Some(Err(Self::not_a_record(n)));
                }
                self.unreadable = Some((self.line_no, hex::encode(Sha256::digest(&line))));
                continue;
            };
            if let Some((n, fragment)) = self.unreadable.take() {
                let seals_it = record.event == Event::Sealed
                    && record.torn_sha256.as_deref() == Some(&fragment);
                if !seals_it {
                    self.done = true;
                    return Some(Err(Self::not_a_record(n)));
                }
            }
            let mut record = record;
            record.hash = hash.to_owned();
            return Some(Ok(record));
        }
        // A fragment with no seal after it (a torn tail not yet sealed) is not a record either.
        self.unreadable
            .take()
            .map(|(n, _)| Err(Self::not_a_record(n)))
    }
}

/// `Option<u64>` as a JSON string (numbers are accepted on reading).
mod id_string {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.collect_str(id),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Id {
            Text(String),
            Number(u64),
        }
        match Option::<Id>::deserialize(d)? {
            None => Ok(None),
            Some(Id::Number(n)) => Ok(Some(n)),
            Some(Id::Text(t)) => t.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(entry: Entry) -> Record {
        Record {
            seq: 7,
            time: "2025-01-02T03:04:05.678Z".into(),
            event: Event::Granted,
            actor_id: "42".into(),
            actor_name: "alice".into(),
            entry,
            torn_sha256: None,
            torn_bytes: None,
            prev: super::super::GENESIS.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_line_keeps_the_first_journals_format_and_reads_back_whole() {
        let entry = Entry {
            guild: Some(800000000000000001),
            channel: Some(900000000000000002),
            instance: Some("ins-a1b2c3d4".into()),
            reason: Some("incident \"42\"\n".into()),
            until: Some("2025-01-02T04:04:05Z".into()),
            count: Some(3),
            ..Entry::default()
        };
        let mut line = Vec::new();
        let hash = encode_line(&record(entry.clone()), &mut line);
        let text = std::str::from_utf8(&line).unwrap();
        assert!(
            text.starts_with(
                r#"{"seq":7,"time":"2025-01-02T03:04:05.678Z","event":"granted","actor_id":"42","actor_name":"alice","guild":"800000000000000001","channel":"900000000000000002","instance":"ins-a1b2c3d4""#
            ),
            "{text}"
        );
        assert!(text.ends_with(&format!("{}\n", r#","hash":""#.to_owned() + &hash + "\"}")));
        assert!(!text.contains("region") && !text.contains("torn"), "{text}");
        line.pop();
        let (back, claimed) = parse_line(&line).unwrap();
        assert_eq!(claimed, hash);
        assert_eq!(body_hash(&line), hash);
        assert_eq!(back.entry, entry);
        assert_eq!(
            back.actor(),
            Actor::Discord {
                id: 42,
                name: "alice".into()
            }
        );
        // Numeric IDs (a hand-written line) read too.
        let numeric: Entry = serde_json::from_str(r#"{"guild":5}"#).unwrap();
        assert_eq!(numeric.guild, Some(5));
    }

    #[test]
    fn times_have_exactly_three_digits_of_milliseconds() {
        use std::time::{Duration, UNIX_EPOCH};
        let at = |ms| format_time(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(17_120), "1970-01-01T00:00:17.120Z");
        assert_eq!(at(17_000), "1970-01-01T00:00:17.000Z");
        assert_eq!(at(17_001), "1970-01-01T00:00:17.001Z");
        // Truncated, not rounded: a record is never stamped later than it was written.
        assert_eq!(
            format_time(UNIX_EPOCH + Duration::from_nanos(17_999_999_999)),
            "1970-01-01T00:00:17.999Z"
        );
        assert_eq!(
            at(1_735_787_045_678),
            "2025-01-02T03:04:05.678Z",
            "the same text as the first journals wrote when the milliseconds had no trailing zero"
        );
    }
}
