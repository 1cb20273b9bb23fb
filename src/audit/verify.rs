//! Walking the chain: `vncbot audit verify`, `check-config`, and the writer when it opens the
//! journal or reads what another process appended.

use std::fs::File;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::record::{body_hash, parse_line, Record};
use super::{Appended, Event, GENESIS};

/// An intact chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub first_time: Option<String>,
    pub last_time: Option<String>,
    pub last_seq: u64,
    pub last_hash: String,
    pub sealed: u64,
}

/// The first problem found, with the 1-based line where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct VerifyError {
    pub line: usize,
    pub kind: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("not a journal record (unreadable JSON or no hash)")]
    Unreadable,
    #[error("record seq {seq} was edited: its hash does not match its content")]
    Edited { seq: u64 },
    #[error("record seq {seq} does not follow the record before it (expected seq {expected}): a record was deleted, inserted or moved")]
    OutOfSequence { seq: u64, expected: u64 },
    #[error("record seq {seq} does not chain to the record before it: a record was deleted, inserted, moved or edited")]
    BrokenLink { seq: u64 },
    #[error("the last line is torn ({bytes} bytes with no line end), as a crash mid-write leaves it; the bot seals it on its next start")]
    TornTail { bytes: usize },
    #[error("the last line, record seq {seq}, is complete but has no line end, as a crash just before the newline leaves it; the next writer completes it")]
    Unterminated { seq: u64 },
    #[error("record seq {seq} is not the anchored head: its hash differs, so the journal was rewritten at or before this record")]
    HeadMismatch { seq: u64 },
    #[error("the journal ends at seq {last}, before the anchored head seq {seq}: records were removed from its end, or the file was replaced")]
    HeadMissing { seq: u64, last: u64 },
}

/// Verifies a journal file, reading it a line at a time (a journal of years stays cheap to check).
pub fn verify_file(path: &Path) -> Result<Result<Summary, VerifyError>, io::Error> {
    verify_file_anchored(path, None)
}

/// As [`verify_file`], and with `head`, also checks that the journal still holds that record: an
/// anchor kept outside the file shows truncation and wholesale rewrites, which the chain alone
/// cannot.
pub fn verify_file_anchored(
    path: &Path,
    head: Option<&Appended>,
) -> Result<Result<Summary, VerifyError>, io::Error> {
    let mut reader = io::BufReader::with_capacity(64 * 1024, File::open(path)?);
    Ok(verdict(scan(&mut reader, Verifier::new(head.cloned()))?))
}

/// Walks the chain in memory. A torn line is accepted only when the next record seals exactly it.
pub fn verify_bytes(bytes: &[u8]) -> Result<Summary, VerifyError> {
    verdict(scan(&mut &bytes[..], Verifier::new(None)).expect("reading from memory cannot fail"))
}

fn verdict(scanned: Scanned) -> Result<Summary, VerifyError> {
    match scanned {
        Scanned::Damaged(e) => Err(e),
        Scanned::Clean(verifier) => verifier.finish(),
        Scanned::Torn {
            mut verifier,
            fragment,
        } => match verifier.last_line(&fragment)? {
            LastLine::Record { seq } => {
                Err(verifier.fail(verifier.line_no, Problem::Unterminated { seq }))
            }
            LastLine::Fragment => Err(verifier.fail(
                verifier.line_no + 1,
                Problem::TornTail {
                    bytes: fragment.len(),
                },
            )),
        },
    }
}

pub(crate) enum Scanned {
    /// A complete line is damaged.
    Damaged(VerifyError),
    /// The input ended with a line end ([`Verifier::finish`] gives the verdict).
    Clean(Verifier),
    /// Every complete line verified, but the input ends mid-line.
    Torn {
        verifier: Verifier,
        fragment: Vec<u8>,
    },
}

/// Feeds every complete line to `v`.
pub(crate) fn scan(reader: &mut impl io::BufRead, mut v: Verifier) -> io::Result<Scanned> {
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(Scanned::Clean(v));
        }
        if line.last() != Some(&b'\n') {
            return Ok(Scanned::Torn {
                verifier: v,
                fragment: line,
            });
        }
        line.pop();
        if let Err(e) = v.line(&line) {
            return Ok(Scanned::Damaged(e));
        }
    }
}

/// How far a journal verifies to a point where the chain could continue: the end of its last
/// record that leaves nothing pending (no torn line waiting for its seal).
pub(crate) struct Settled {
    /// Where that record's line starts, and where it ends (after its line end).
    pub(crate) line_start: u64,
    pub(crate) len: u64,
    pub(crate) lines: usize,
    pub(crate) seq: u64,
    pub(crate) hash: String,
}

/// Verifies complete lines from the start and returns the last settled point, stopping quietly at
/// the first line that does not verify or end: read without the writers' lock, the tail may be a
/// write in progress or one about to be undone, so the caller re-reads from there under the lock,
/// where damage is reported.
pub(crate) fn settled_prefix(reader: &mut impl io::BufRead) -> io::Result<Option<Settled>> {
    let mut v = Verifier::new(None);
    let mut line = Vec::with_capacity(512);
    let mut offset = 0u64;
    let mut settled = None;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(settled);
        }
        let line_start = offset;
        offset += n as u64;
        line.pop();
        if v.line(&line).is_err() {
            return Ok(settled);
        }
        if v.pending_torn.is_none() {
            settled = Some(Settled {
                line_start,
                len: offset,
                lines: v.line_no,
                seq: v.s.last_seq,
                hash: v.s.last_hash.clone(),
            });
        }
    }
}

/// What an unterminated last line turned out to be.
pub(crate) enum LastLine {
    /// A whole record that chains, missing only its line end (now counted).
    Record { seq: u64 },
    /// A torn fragment.
    Fragment,
}

/// The chain check, one line at a time.
pub(crate) struct Verifier {
    s: Summary,
    line_no: usize,
    /// An unreadable line (and the SHA-256 of its bytes) that only a `sealed` record may follow.
    pending_torn: Option<(usize, String)>,
    /// A record the journal must still hold.
    head: Option<Appended>,
    /// Records after this seq are kept as they verify (for the writer's subscribers).
    keep_after: Option<u64>,
    kept: Vec<Record>,
}

impl Verifier {
    fn new(head: Option<Appended>) -> Self {
        Self::resume(0, GENESIS, 0, head)
    }

    /// Continues a chain whose last record (on line `line_no`) is `seq` with `hash`.
    pub(crate) fn resume(seq: u64, hash: &str, line_no: usize, head: Option<Appended>) -> Self {
        Self {
            s: Summary {
                records: 0,
                first_time: None,
                last_time: None,
                last_seq: seq,
                last_hash: hash.to_owned(),
                sealed: 0,
            },
            line_no,
            pending_torn: None,
            head,
            keep_after: None,
            kept: Vec::new(),
        }
    }

    /// Keeps every record with a seq above `after` that verifies, for [`Verifier::take_kept`].
    pub(crate) fn keeping_after(mut self, after: u64) -> Self {
        self.keep_after = Some(after);
        self
    }

    /// The records kept so far, in seq order, each with its hash.
    pub(crate) fn take_kept(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.kept)
    }

    pub(crate) fn line_no(&self) -> usize {
        self.line_no
    }

    fn fail(&self, line: usize, kind: Problem) -> VerifyError {
        VerifyError { line, kind }
    }

    /// One complete line, without its line end.
    pub(crate) fn line(&mut self, line: &[u8]) -> Result<(), VerifyError> {
        self.line_no += 1;
        let Some((record, hash)) = parse_line(line) else {
            if let Some((torn_line, _)) = self.pending_torn {
                return Err(self.fail(torn_line, Problem::Unreadable));
            }
            // Could be a torn line sealed at start-up; the next record decides.
            self.pending_torn = Some((self.line_no, hex::encode(Sha256::digest(line))));
            return Ok(());
        };
        if let Some((torn_line, fragment_hash)) = self.pending_torn.take() {
            let seals_it = record.event == Event::Sealed
                && record.torn_sha256.as_deref() == Some(&fragment_hash);
            if !seals_it {
                return Err(self.fail(torn_line, Problem::Unreadable));
            }
        }
        let s = &self.s;
        if record.seq != s.last_seq + 1 {
            return Err(self.fail(
                self.line_no,
                Problem::OutOfSequence {
                    seq: record.seq,
                    expected: s.last_seq + 1,
                },
            ));
        }
        if hash != body_hash(line) {
            return Err(self.fail(self.line_no, Problem::Edited { seq: record.seq }));
        }
        if record.prev != s.last_hash {
            return Err(self.fail(self.line_no, Problem::BrokenLink { seq: record.seq }));
        }
        if let Some(head) = self.head.as_ref().filter(|h| h.seq == record.seq) {
            if head.hash != hash {
                return Err(self.fail(self.line_no, Problem::HeadMismatch { seq: record.seq }));
            }
        }
        let s = &mut self.s;
        s.records += 1;
        s.sealed += u64::from(record.event == Event::Sealed);
        s.first_time.get_or_insert_with(|| record.time.clone());
        s.last_seq = record.seq;
        s.last_hash = hash.to_owned();
        if self.keep_after.is_some_and(|after| record.seq > after) {
            s.last_time = Some(record.time.clone());
            let mut record = record;
            record.hash = hash.to_owned();
            self.kept.push(record);
        } else {
            s.last_time = Some(record.time);
        }
        Ok(())
    }

    /// The input ended mid-line with `fragment`: a whole record missing its line end (verified
    /// like any other line), or a torn fragment.
    pub(crate) fn last_line(&mut self, fragment: &[u8]) -> Result<LastLine, VerifyError> {
        if parse_line(fragment).is_none() {
            return Ok(LastLine::Fragment);
        }
        self.line(fragment)?;
        Ok(LastLine::Record {
            seq: self.s.last_seq,
        })
    }

    /// The input ended after a line end.
    pub(crate) fn finish(self) -> Result<Summary, VerifyError> {
        if let Some((line, _)) = self.pending_torn {
            return Err(self.fail(line, Problem::Unreadable));
        }
        if let Some(head) = self.head.as_ref().filter(|h| h.seq > self.s.last_seq) {
            return Err(self.fail(
                self.line_no + 1,
                Problem::HeadMissing {
                    seq: head.seq,
                    last: self.s.last_seq,
                },
            ));
        }
        Ok(self.s)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{alice, journal_with};
    use super::super::{Entry, Event, Journal};
    use super::*;

    fn lines(bytes: &[u8]) -> Vec<&[u8]> {
        bytes.split_inclusive(|b| *b == b'\n').collect()
    }

    #[test]
    fn intact_chain_verifies() {
        let (_d, bytes) = journal_with(5);
        let s = verify_bytes(&bytes).unwrap();
        assert_eq!((s.records, s.last_seq, s.sealed), (5, 5, 0));
        assert!(s.first_time.unwrap().ends_with('Z'));
    }

    #[test]
    fn every_tamper_kind_is_caught_at_the_right_line() {
        let (_d, bytes) = journal_with(5);
        let l = lines(&bytes);

        let edited = String::from_utf8(bytes.clone())
            .unwrap()
            .replacen("deploy", "dep1oy", 1);
        let e = verify_bytes(edited.as_bytes()).unwrap_err();
        assert_eq!((e.line, e.kind), (2, Problem::Edited { seq: 2 }));

        let deleted: Vec<u8> = [l[0], l[1], l[3], l[4]].concat();
        assert_eq!(verify_bytes(&deleted).unwrap_err().line, 3);

        let reordered: Vec<u8> = [l[0], l[2], l[1], l[3], l[4]].concat();
        assert_eq!(verify_bytes(&reordered).unwrap_err().line, 2);

        let inserted: Vec<u8> = [l[0], l[1], l[1], l[2], l[3], l[4]].concat();
        assert_eq!(verify_bytes(&inserted).unwrap_err().line, 3);

        let torn = &bytes[..bytes.len() - 10];
        assert!(matches!(
            verify_bytes(torn).unwrap_err(),
            VerifyError {
                line: 5,
                kind: Problem::TornTail { .. }
            }
        ));

        // Renumbering and rehashing a forged record still breaks the link to its neighbour.
        let junk: Vec<u8> = [l[0], &b"{\"not\":\"a record\"}\n"[..], l[1]].concat();
        assert_eq!(verify_bytes(&junk).unwrap_err().line, 2);
    }

    #[test]
    fn a_complete_last_record_without_its_newline_is_named_as_such() {
        let (_d, bytes) = journal_with(3);
        let e = verify_bytes(&bytes[..bytes.len() - 1]).unwrap_err();
        assert_eq!((e.line, &e.kind), (3, &Problem::Unterminated { seq: 3 }));
        assert!(
            e.to_string().contains("complete but has no line end"),
            "{e}"
        );
        // One byte more torn off, and it is a torn fragment.
        let last = lines(&bytes).last().unwrap().len();
        let e = verify_bytes(&bytes[..bytes.len() - 2]).unwrap_err();
        assert_eq!((e.line, e.kind), (3, Problem::TornTail { bytes: last - 2 }));
    }

    #[test]
    fn an_anchored_head_shows_truncation_and_rewrites() {
        let (dir, _) = journal_with(4);
        let path = dir.path().join("audit.jsonl");
        let (j, _) = Journal::open(&path).unwrap();
        let head = j.head();
        assert_eq!(head.seq, 4);
        let s = verify_file_anchored(&path, Some(&head)).unwrap().unwrap();
        assert_eq!(s.last_seq, 4);

        // Records cut from the end: the chain alone is intact, the anchor is not.
        let bytes = std::fs::read(&path).unwrap();
        let l = lines(&bytes);
        let cut = dir.path().join("cut.jsonl");
        std::fs::write(&cut, l[..3].concat()).unwrap();
        assert!(verify_file(&cut).unwrap().is_ok());
        let e = verify_file_anchored(&cut, Some(&head))
            .unwrap()
            .unwrap_err();
        assert_eq!(
            (e.line, e.kind),
            (4, Problem::HeadMissing { seq: 4, last: 3 })
        );

        // The whole file rewritten from scratch: intact again, but not the anchored record.
        let rewritten = dir.path().join("rewritten.jsonl");
        let (w, _) = Journal::open(&rewritten).unwrap();
        for _ in 0..5 {
            w.append_blocking(Event::Denied, &alice(), Entry::default())
                .unwrap();
        }
        let e = verify_file_anchored(&rewritten, Some(&head))
            .unwrap()
            .unwrap_err();
        assert_eq!((e.line, e.kind), (4, Problem::HeadMismatch { seq: 4 }));
    }

    /// The first journals wrote times with trailing zeros dropped; they still verify, read back
    /// and continue.
    #[test]
    fn records_with_the_first_journals_times_still_verify_and_continue() {
        use super::super::record::encode_line;
        use super::super::{read_records, Record};
        let mut bytes = Vec::new();
        let mut prev = GENESIS.to_owned();
        for (seq, time) in [(1, "2025-01-02T03:04:05Z"), (2, "2025-01-02T03:04:05.12Z")] {
            let record = Record {
                seq,
                time: time.into(),
                event: Event::Denied,
                actor_id: "42".into(),
                actor_name: "alice".into(),
                entry: Entry::default(),
                torn_sha256: None,
                torn_bytes: None,
                prev: prev.clone(),
                hash: String::new(),
            };
            prev = encode_line(&record, &mut bytes);
        }
        let s = verify_bytes(&bytes).unwrap();
        assert_eq!(s.first_time.as_deref(), Some("2025-01-02T03:04:05Z"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, &bytes).unwrap();
        let times: Vec<_> = read_records(&path)
            .unwrap()
            .map(|r| r.unwrap().time)
            .collect();
        assert_eq!(times, ["2025-01-02T03:04:05Z", "2025-01-02T03:04:05.12Z"]);
        let (j, repair) = Journal::open(&path).unwrap();
        assert!(repair.is_none());
        j.append_blocking(Event::Denied, &alice(), Entry::default())
            .unwrap();
        let s = verify_file(&path).unwrap().unwrap();
        assert_eq!(s.last_seq, 3);
        assert_eq!(s.last_time.unwrap().len(), "2025-01-02T03:04:05.120Z".len());
    }
}
