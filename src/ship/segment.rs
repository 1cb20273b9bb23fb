//! Cutting segments out of the journal file: byte ranges that end after a whole record line.
//!
//! The shipper reads the file itself, without the writers' lock, so a segment is the exact bytes
//! on disk. It stops at the journal head this process knows (a line past it may be a write still
//! in progress), and never ends a segment on a torn fragment (its `sealed` record comes later).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::Path;

use serde::Deserialize;

/// The most one segment carries; a larger backlog (a long outage) goes as several.
pub const MAX_SEGMENT_BYTES: usize = 8 * 1024 * 1024;

/// The fields of a journal line the shipper needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LineHead {
    pub seq: u64,
    pub hash: String,
    #[serde(default)]
    pub time: Option<String>,
}

/// `None` for a line that is not a record (a torn fragment).
pub fn line_head(line: &[u8]) -> Option<LineHead> {
    serde_json::from_slice(line).ok()
}

/// Consecutive whole lines of the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub bytes: Vec<u8>,
    pub first: LineHead,
    pub last: LineHead,
}

/// The lines after byte `offset`, up to and including record `max_seq`, at most
/// [`MAX_SEGMENT_BYTES`] (but always one record); `None` when no whole record is there yet.
pub fn read_segment(path: &Path, offset: u64, max_seq: u64) -> io::Result<Option<Segment>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut bytes = Vec::new();
    let mut cut = 0usize;
    let (mut first, mut last) = (None, None);
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        let head = line_head(&line[..n - 1]);
        if let Some(h) = &head {
            if h.seq > max_seq || (cut > 0 && bytes.len() + n > MAX_SEGMENT_BYTES) {
                break;
            }
        }
        bytes.extend_from_slice(&line);
        if let Some(h) = head {
            cut = bytes.len();
            if first.is_none() {
                first = Some(h.clone());
            }
            last = Some(h);
        }
    }
    bytes.truncate(cut);
    Ok(match (first, last) {
        (Some(first), Some(last)) => Some(Segment { bytes, first, last }),
        _ => None,
    })
}

/// Where the journal stands against a shipped record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Record `seq` is there with the shipped hash; the next segment starts at this byte.
    After(u64),
    /// Record `seq` is there with another hash: the journal was rewritten at or before it.
    Differs,
    /// The journal ends before `seq` (its last record is `last`).
    Missing { last: u64 },
}

/// Finds record `seq` (which was shipped with `hash`) in the journal.
pub fn find_record(path: &Path, seq: u64, hash: &str) -> io::Result<Found> {
    let mut reader = BufReader::with_capacity(64 * 1024, File::open(path)?);
    let mut offset = 0u64;
    let mut last = 0;
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(Found::Missing { last });
        }
        offset += n as u64;
        if let Some(h) = line_head(&line[..n - 1]) {
            if h.seq == seq {
                return Ok(if h.hash == hash {
                    Found::After(offset)
                } else {
                    Found::Differs
                });
            }
            last = h.seq;
        }
    }
}

/// The first whole record after byte `offset`, if any (for the backlog's age).
pub fn first_after(path: &Path, offset: u64) -> io::Result<Option<LineHead>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(None);
        }
        if let Some(h) = line_head(&line[..n - 1]) {
            return Ok(Some(h));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64) -> String {
        format!("{{\"seq\":{seq},\"time\":\"t{seq}\",\"hash\":\"h{seq}\"}}\n")
    }

    #[test]
    fn a_segment_is_whole_lines_up_to_the_head_and_never_ends_on_a_fragment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let text = format!("{}{}torn\n{}{}partial", rec(1), rec(2), rec(3), rec(4));
        std::fs::write(&path, &text).unwrap();
        let s = read_segment(&path, 0, 3).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(s.bytes).unwrap(),
            format!("{}{}torn\n{}", rec(1), rec(2), rec(3))
        );
        assert_eq!(
            (s.first.seq, s.last.seq, s.last.hash.as_str()),
            (1, 3, "h3")
        );
        // Up to seq 2: the fragment after it waits for the record that seals it.
        let s = read_segment(&path, 0, 2).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(s.bytes).unwrap(),
            format!("{}{}", rec(1), rec(2))
        );
        let off = match find_record(&path, 3, "h3").unwrap() {
            Found::After(o) => o,
            other => panic!("{other:?}"),
        };
        assert_eq!(off as usize, text.find(&rec(4)).unwrap());
        // The unterminated last line is not a record yet.
        assert_eq!(read_segment(&path, off, 99).unwrap().unwrap().last.seq, 4);
        assert_eq!(
            first_after(&path, off).unwrap().unwrap().time.as_deref(),
            Some("t4")
        );
        let end = text.len() as u64 - "partial".len() as u64;
        assert!(read_segment(&path, end, 99).unwrap().is_none());
        assert_eq!(find_record(&path, 3, "hX").unwrap(), Found::Differs);
        assert_eq!(
            find_record(&path, 9, "h9").unwrap(),
            Found::Missing { last: 4 }
        );
    }
}
