//! Reading the chain as it grows: every record that joins it is broadcast in seq order (see
//! [`super::Journal::subscribe`]), and a [`Follower`] turns that broadcast into a gapless stream
//! that reads back from the file whatever it fell behind on.
//!
//! Records appended by other processes (`vncbot url`) join the stream when this process reads
//! them: under the lock before each of its own batches, and when idle, whenever the lock is free,
//! every few seconds.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use tokio::sync::broadcast;

use super::record::Record;
use super::status::Shared;
use super::verify::{scan, Scanned, Verifier};
use super::{Appended, AuditError};

/// Reads records back from the file this process opened (by its descriptor, not its path: a file
/// moved in its place is not read), up to the head this process has verified.
#[derive(Clone)]
pub(super) struct Reader {
    pub(super) shared: Arc<Shared>,
    /// A duplicate of the writer's descriptor, read with `pread` so that it never moves the
    /// writer's offset.
    pub(super) file: Arc<File>,
}

impl Reader {
    /// The records after seq `after`, up to the head, checked as the chain: each continues the
    /// one before it, and the last is the head this process verified or wrote. It starts from the
    /// nearest batch it remembers, so a recent `after` costs a few records' reading, not the file.
    pub(super) fn records_after(&self, after: u64) -> Result<Vec<Record>, AuditError> {
        let (start, head) = self.shared.status().read_from(after);
        if after >= head.seq {
            return Ok(Vec::new());
        }
        let path = &self.shared.path;
        let mut reader = io::BufReader::with_capacity(
            64 * 1024,
            ReadAt {
                file: &self.file,
                pos: start.offset,
                end: head.offset,
            },
        );
        let anchor = Appended {
            seq: head.seq,
            hash: head.hash,
        };
        let verifier =
            Verifier::resume(start.seq, &start.hash, 0, Some(anchor)).keeping_after(after);
        let damaged = |problem| AuditError::Damaged {
            path: path.clone(),
            problem,
        };
        let scanned = scan(&mut reader, verifier).map_err(|source| AuditError::Read {
            path: path.clone(),
            source,
        })?;
        match scanned {
            Scanned::Clean(mut verifier) => {
                let records = verifier.take_kept();
                verifier.finish().map_err(damaged)?;
                Ok(records)
            }
            Scanned::Damaged(problem) => Err(damaged(problem)),
            // The head ends a line, so a line cut short was changed since it was verified.
            Scanned::Torn { verifier, fragment } => Err(damaged(super::VerifyError {
                line: verifier.line_no() + 1,
                kind: super::Problem::TornTail {
                    bytes: fragment.len(),
                },
            })),
        }
    }
}

/// `pread` from `pos` up to `end`.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Records a [`Follower`] could not read back from the file: it skipped them, and goes on with
/// the records after `to`.
#[derive(Debug, thiserror::Error)]
#[error(
    "records {from} to {to} of the audit journal could not be read back and were skipped: {error}"
)]
pub struct Missed {
    pub from: u64,
    pub to: u64,
    pub error: AuditError,
}

/// Every record after a given seq, in seq order, with no gaps and no repeats: the file's records
/// first, then each new one as it joins the chain. A follower that falls behind the broadcast
/// reads what it missed back from the file, so a slow consumer (a Discord channel in an outage)
/// loses nothing.
pub struct Follower {
    reader: Reader,
    feed: broadcast::Receiver<Arc<Record>>,
    /// The seq of the next record to hand out.
    next: u64,
    /// Records read back from the file, not yet handed out.
    backlog: VecDeque<Record>,
    /// The broadcast skipped records (lagged, or started after them): read the file first.
    behind: bool,
}

impl Follower {
    pub(super) fn new(reader: Reader, feed: broadcast::Receiver<Arc<Record>>, after: u64) -> Self {
        // Subscribed before the head is read: a record is in the file up to that head, or in the
        // broadcast, or both (repeats are dropped by seq).
        let behind = after < reader.shared.status().head.seq;
        Follower {
            reader,
            feed,
            next: after + 1,
            backlog: VecDeque::new(),
            behind,
        }
    }

    /// The seq of the last record handed out (or skipped).
    pub fn position(&self) -> u64 {
        self.next - 1
    }

    /// The next record; `None` once the journal is closed (every handle dropped). Reading back
    /// from the file runs off the async workers.
    pub async fn next(&mut self) -> Option<Result<Arc<Record>, Missed>> {
        loop {
            if let Some(record) = self.backlog.pop_front() {
                if record.seq < self.next {
                    continue;
                }
                self.next = record.seq + 1;
                return Some(Ok(Arc::new(record)));
            }
            if self.behind {
                self.behind = false;
                let reader = self.reader.clone();
                let after = self.position();
                let read = tokio::task::spawn_blocking(move || reader.records_after(after)).await;
                match read {
                    Ok(Ok(records)) => self.backlog.extend(records),
                    Ok(Err(error)) => return Some(Err(self.skip(error))),
                    Err(join) => {
                        return Some(Err(self.skip(AuditError::Read {
                            path: self.reader.shared.path.clone(),
                            source: io::Error::other(join.to_string()),
                        })))
                    }
                }
                continue;
            }
            match self.feed.recv().await {
                Ok(record) if record.seq < self.next => {}
                Ok(record) if record.seq == self.next => {
                    self.next += 1;
                    return Some(Ok(record));
                }
                // A gap: the head already covers this record, so the file holds the gap and it.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.behind = true,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Gives up on the records up to the head, which could not be read back.
    fn skip(&mut self, error: AuditError) -> Missed {
        let from = self.next;
        let to = self.reader.shared.status().head.seq.max(from);
        self.next = to + 1;
        Missed { from, to, error }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::super::status::Timing;
    use super::super::tests::alice;
    use super::super::{verify_file, Entry, Event, Journal};
    use super::*;
    use crate::clock::Clock;

    /// Idle writers look at the file every 50 ms.
    const FAST: Timing = Timing {
        busy_limit: Duration::from_millis(100),
        lock_wait: Duration::from_secs(1),
        check_every: Duration::from_millis(50),
    };

    fn open(path: &std::path::Path) -> Journal {
        Journal::open_with(path, FAST, Clock::system(), || {})
            .unwrap()
            .0
    }

    fn reason(text: &str) -> Entry {
        Entry {
            reason: Some(text.into()),
            ..Entry::default()
        }
    }

    async fn recv(rx: &mut broadcast::Receiver<Arc<Record>>) -> Arc<Record> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("no record reached the subscriber")
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribers_hear_every_record_once_it_is_on_disk_in_seq_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let j = open(&path);
        j.append_blocking(Event::Denied, &alice(), reason("before"))
            .unwrap();
        let mut rx = j.subscribe();
        let a = j
            .append(Event::Requested, &alice(), reason("one"))
            .await
            .unwrap();
        let b = j
            .append_blocking(Event::Granted, &alice(), reason("two"))
            .unwrap();
        let first = recv(&mut rx).await;
        let second = recv(&mut rx).await;
        assert_eq!((first.seq, first.event), (2, Event::Requested));
        assert_eq!((second.seq, second.event), (3, Event::Granted));
        assert_eq!((first.hash.clone(), second.hash.clone()), (a.hash, b.hash));
        assert_eq!(second.prev, first.hash);
        assert_eq!(second.entry.reason.as_deref(), Some("two"));
        assert_eq!(second.actor(), alice());
        assert!(
            rx.try_recv().is_err(),
            "the record before subscribing is not sent"
        );
        // What was sent is what the file holds.
        let on_disk = j.records_after(1).unwrap();
        assert_eq!(on_disk, vec![(*first).clone(), (*second).clone()]);
        assert_eq!(verify_file(&path).unwrap().unwrap().last_hash, second.hash);
    }

    /// Two opens of one file are two writers, as two processes would be.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_of_other_processes_reach_subscribers_in_seq_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let bot = open(&path);
        let (url, _) = Journal::open(&path).unwrap();
        let mut rx = bot.subscribe();
        url.append_blocking(Event::Requested, &alice(), reason("url 1"))
            .unwrap();
        url.append_blocking(Event::Issued, &alice(), reason("url 2"))
            .unwrap();
        // The bot's next batch reads them under the lock, and sends them before its own.
        bot.append_blocking(Event::Denied, &alice(), reason("bot"))
            .unwrap();
        let seen: Vec<_> = [
            recv(&mut rx).await,
            recv(&mut rx).await,
            recv(&mut rx).await,
        ]
        .iter()
        .map(|r| (r.seq, r.entry.reason.clone().unwrap()))
        .collect();
        assert_eq!(
            seen,
            [(1, "url 1".into()), (2, "url 2".into()), (3, "bot".into())]
        );
        // An idle bot finds them too, without writing: within a few idle checks.
        url.append_blocking(Event::Ended, &alice(), reason("url 3"))
            .unwrap();
        let r = recv(&mut rx).await;
        assert_eq!((r.seq, r.event), (4, Event::Ended));
        assert_eq!(bot.head(), url.head());
        assert_eq!(
            std::fs::read(&path)
                .unwrap()
                .iter()
                .filter(|b| **b == b'\n')
                .count(),
            4,
            "reading wrote nothing"
        );

        // A torn line another writer left is not sent, nor mended, by an idle reader; the next
        // batch seals it, and the seal and the batch are sent.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"seq":5,"time":"2025-"#).unwrap();
        drop(f);
        tokio::time::sleep(FAST.check_every * 6).await;
        assert!(rx.try_recv().is_err());
        assert_eq!(bot.health(), Ok(()));
        bot.append_blocking(Event::Denied, &alice(), reason("after the tear"))
            .unwrap();
        let seal = recv(&mut rx).await;
        let next = recv(&mut rx).await;
        assert_eq!((seal.seq, seal.event), (5, Event::Sealed));
        assert_eq!((next.seq, next.event), (6, Event::Denied));
    }

    async fn take(follower: &mut Follower, n: usize) -> Vec<u64> {
        let mut seqs = Vec::new();
        while seqs.len() < n {
            let r = tokio::time::timeout(Duration::from_secs(10), follower.next())
                .await
                .expect("the follower stalled")
                .expect("the journal is open")
                .expect("every record reads back");
            seqs.push(r.seq);
        }
        seqs
    }

    /// Reading other processes' records proves the file readable, not writable: a failed batch's
    /// error stays in health until a batch succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_read_does_not_clear_a_failed_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let bot = open(&path);
        let (url, _) = Journal::open(&path).unwrap();
        let mut rx = bot.subscribe();
        let held = std::fs::File::open(&path).unwrap();
        rustix::fs::flock(&held, rustix::fs::FlockOperation::NonBlockingLockExclusive).unwrap();
        let err = bot
            .append(Event::Denied, &alice(), Entry::default())
            .await
            .unwrap_err();
        assert!(matches!(err, AuditError::Locked { .. }), "{err}");
        drop(held);
        url.append_blocking(Event::Requested, &alice(), reason("url"))
            .unwrap();
        let r = recv(&mut rx).await;
        assert_eq!(
            r.entry.reason.as_deref(),
            Some("url"),
            "the idle bot read it"
        );
        assert!(bot.health().unwrap_err().contains("stayed locked"));
        bot.append(Event::Denied, &alice(), Entry::default())
            .await
            .unwrap();
        assert_eq!(bot.health(), Ok(()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_that_falls_behind_reads_what_it_missed_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let j = open(&path);
        for i in 0..5 {
            j.append_blocking(Event::Denied, &alice(), reason(&format!("old {i}")))
                .unwrap();
        }
        // From seq 2: the file's 3 to 5 first, then the live ones. From the head: live only.
        let mut from_file = j.follow(2);
        let mut live = j.follow(5);
        // More than the broadcast holds, before either reads any: both lag.
        let mut appends = tokio::task::JoinSet::new();
        for i in 0..1500 {
            let j = j.clone();
            appends.spawn(async move {
                j.append(Event::Requested, &alice(), reason(&format!("new {i}")))
                    .await
                    .unwrap()
            });
        }
        while let Some(done) = appends.join_next().await {
            done.unwrap();
        }
        assert_eq!(take(&mut live, 1500).await, (6..=1505).collect::<Vec<_>>());
        let seqs = take(&mut from_file, 1503).await;
        let follower = &mut from_file;
        assert_eq!(seqs, (3..=1505).collect::<Vec<_>>());
        assert_eq!(follower.position(), 1505);
        // And it goes on live.
        j.append(Event::Ended, &alice(), Entry::default())
            .await
            .unwrap();
        let r = follower.next().await.unwrap().unwrap();
        assert_eq!((r.seq, r.event), (1506, Event::Ended));
        // Every handle dropped: the follower ends.
        drop(j);
        let end = tokio::time::timeout(Duration::from_secs(10), follower.next())
            .await
            .expect("the follower outlived the journal");
        assert!(end.is_none());
    }

    #[test]
    fn records_after_start_at_a_recent_batch_and_check_the_chain_up_to_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let j = open(&path);
        for i in 0..100 {
            j.append_blocking(Event::Denied, &alice(), reason(&format!("r{i}")))
                .unwrap();
        }
        assert_eq!(j.records_after(100).unwrap(), vec![]);
        assert_eq!(j.records_after(500).unwrap(), vec![]);
        let all = j.records_after(0).unwrap();
        assert_eq!(all.len(), 100);
        assert_eq!(all.last().unwrap().hash, j.head().hash);
        let tail = j.records_after(97).unwrap();
        assert_eq!(tail, all[97..].to_vec());
        // Starts at the nearest batch: the mark for seq 97 is at its line's end.
        let (start, _) = j.shared.status().read_from(97);
        assert_eq!(start.seq, 97);
        assert_eq!(
            start.offset,
            std::fs::read(&path)
                .unwrap()
                .split_inclusive(|b| *b == b'\n')
                .take(97)
                .map(<[u8]>::len)
                .sum::<usize>() as u64
        );

        // An edit after the bot verified it: the read fails rather than hand out a forged record.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("r98", "r99", 1)).unwrap();
        let err = j.records_after(97).unwrap_err();
        assert!(matches!(err, AuditError::Damaged { .. }), "{err}");
        // Cut short: the head is missing.
        std::fs::write(&path, &text.as_bytes()[..text.len() / 2]).unwrap();
        let err = j.records_after(0).unwrap_err();
        assert!(matches!(err, AuditError::Damaged { .. }), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_follower_skips_what_it_cannot_read_back_and_says_which() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let j = open(&path);
        for i in 0..3 {
            j.append_blocking(Event::Denied, &alice(), reason(&format!("r{i}")))
                .unwrap();
        }
        let mut follower = j.follow(0);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("r1", "rX", 1)).unwrap();
        let missed = follower.next().await.unwrap().unwrap_err();
        assert_eq!((missed.from, missed.to), (1, 3));
        assert!(missed.to_string().contains("records 1 to 3"), "{missed}");
        assert_eq!(follower.position(), 3);
    }

    #[test]
    fn records_are_stamped_by_the_injected_clock_with_three_digit_milliseconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let clock = Clock::adjustable();
        clock.advance(Duration::from_secs(400 * 86_400));
        let (j, _) = Journal::open_clocked(&path, clock).unwrap();
        j.append_blocking(Event::Denied, &alice(), Entry::default())
            .unwrap();
        let r = j.records_after(0).unwrap().remove(0);
        // Fixed-width times sort as text.
        let day = Duration::from_secs(86_400);
        let now = std::time::SystemTime::now();
        let (low, high) = (
            super::super::format_time(now + day * 399),
            super::super::format_time(now + day * 401),
        );
        assert!(low < r.time && r.time < high, "{}", r.time);
        // `…:SS.mmmZ`
        let ms = &r.time[r.time.len() - 5..];
        assert!(
            ms.starts_with('.')
                && ms.ends_with('Z')
                && ms[1..4].bytes().all(|b| b.is_ascii_digit()),
            "{}",
            r.time
        );
    }
}
