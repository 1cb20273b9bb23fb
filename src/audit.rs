//! The audit journal: one JSON object a line, hash-chained, fsynced before the bot acts.
//!
//! Each record carries `prev` (the previous record's hash) and `hash` (SHA-256 of the record's own
//! line without its `hash` field), so editing, deleting, inserting or reordering lines breaks the
//! chain at the first changed record. One writer serialises appends, so concurrent requests can
//! neither interleave bytes nor fork the chain. The console link is never a field.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const HASH_SUFFIX_LEN: usize = r#","hash":""}"#.len() + 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Allowed and about to call Tencent (written before the call).
    Requested,
    /// Refused by the allowlist.
    Denied,
    /// Refused as malformed (bad ID, region, reason, guild).
    Invalid,
    /// Refused by a per-member or per-instance limit.
    Limited,
    /// Tencent returned a URL (the URL itself is never recorded).
    Issued,
    /// Tencent or the network failed.
    Failed,
    /// The link reached the member's DMs.
    Delivered,
    /// The DM could not be sent; the link was discarded.
    DmFailed,
    /// A torn last line (a crash mid-write) was found and sealed at start-up.
    Sealed,
    /// A window of console access was granted.
    Granted,
    /// A grant ended (by the member, by expiry, or by a removed role).
    Ended,
}

/// Who asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Discord { id: u64, name: String },
    Local { user: String },
}

impl Actor {
    /// The key for per-member limits.
    pub fn key(&self) -> String {
        match self {
            Actor::Discord { id, .. } => format!("discord:{id}"),
            Actor::Local { user } => format!("local:{user}"),
        }
    }

    /// The person running this process, for `vncbot url`.
    pub fn local() -> Self {
        let user = std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| "unknown".into());
        let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
        Actor::Local {
            user: match uid {
                Some(uid) => format!("{user} (uid {uid})"),
                None => user,
            },
        }
    }
}

/// What one record says, apart from the chain fields the journal fills in.
#[derive(Debug, Clone, Default)]
pub(crate) struct EntryRef<'a> {
    pub guild: Option<u64>,
    pub channel: Option<u64>,
    pub instance: Option<&'a str>,
    pub region: Option<&'a str>,
    pub reason: Option<&'a str>,
    /// The allowlist rule that allowed the request.
    pub rule: Option<usize>,
    /// Our or Tencent's error code.
    pub code: Option<&'a str>,
    pub request_id: Option<&'a str>,
    /// The `seq` of the record this one follows up (an outcome names its `requested`).
    pub refers_to: Option<u64>,
}

/// What one record says (owned).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    pub guild: Option<u64>,
    pub channel: Option<u64>,
    pub instance: Option<String>,
    pub region: Option<String>,
    pub reason: Option<String>,
    pub rule: Option<usize>,
    pub code: Option<String>,
    pub request_id: Option<String>,
    pub refers_to: Option<u64>,
    pub until: Option<String>,
    pub count: Option<u64>,
}

impl From<&EntryRef<'_>> for Entry {
    fn from(e: &EntryRef<'_>) -> Self {
        let own = |s: Option<&str>| s.map(str::to_owned);
        Entry {
            guild: e.guild,
            channel: e.channel,
            instance: own(e.instance),
            region: own(e.region),
            reason: own(e.reason),
            rule: e.rule,
            code: own(e.code),
            request_id: own(e.request_id),
            refers_to: e.refers_to,
            until: None,
            count: None,
        }
    }
}

impl Entry {
    fn as_ref(&self) -> EntryRef<'_> {
        EntryRef {
            guild: self.guild,
            channel: self.channel,
            instance: self.instance.as_deref(),
            region: self.region.as_deref(),
            reason: self.reason.as_deref(),
            rule: self.rule,
            code: self.code.as_deref(),
            request_id: self.request_id.as_deref(),
            refers_to: self.refers_to,
        }
    }
}

#[derive(Serialize)]
struct Record<'a> {
    seq: u64,
    time: String,
    event: Event,
    actor_id: String,
    actor_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    guild: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    region: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refers_to: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    torn_sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    torn_bytes: Option<usize>,
    prev: &'a str,
}

/// The fields `verify` reads back.
#[derive(Deserialize)]
struct Head {
    seq: u64,
    time: String,
    event: Event,
    prev: String,
    torn_sha256: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit journal {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("the audit journal {path} is damaged: {problem}. Run `vncbot audit verify` and move the file aside once it has been examined")]
    Damaged { path: PathBuf, problem: VerifyError },
    #[error("cannot write to the audit journal {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("the audit journal {path} was moved, deleted or replaced while the bot was running")]
    Replaced { path: PathBuf },
    #[error(
        "an earlier write to the audit journal failed and could not be undone; restart the bot"
    )]
    Poisoned,
}

/// Where a record landed in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub hash: String,
}

/// The journal's single writer. Cheap to clone; all clones append to the same chain.
///
/// Async appends go to one committer thread, which writes whatever has queued up as one batch
/// with one `fsync` (group commit): a burst of requests costs a few fsyncs, not one each, and
/// never a pool of blocked threads. Each caller still gets its answer only after its record is on
/// disk.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Mutex<Writer>>,
    queue: std::sync::mpsc::Sender<Job>,
}

struct Job {
    event: Event,
    actor: Actor,
    entry: OwnedEntry,
    done: tokio::sync::oneshot::Sender<Result<Appended, AuditError>>,
}

/// Most records one batch writes.
const MAX_BATCH: usize = 256;

struct Writer {
    path: PathBuf,
    file: File,
    /// (device, inode) of the file we opened, to notice it being replaced under us.
    identity: (u64, u64),
    len: u64,
    seq: u64,
    prev: String,
    poisoned: bool,
}

impl Journal {
    /// Opens (creating it and its directory, mode 0600) and checks the chain. A torn last line is
    /// sealed with a `sealed` record; any other damage refuses to start, since appending to a
    /// broken chain would hide the break.
    pub fn open(path: &Path) -> Result<(Self, Option<Appended>), AuditError> {
        let open_err = |source| AuditError::Open {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_err)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if !meta.is_file() {
            return Err(open_err(io::Error::other("not a regular file")));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(open_err)?;
        }
        let damaged = |problem| AuditError::Damaged {
            path: path.to_owned(),
            problem,
        };
        let mut len = 0u64;
        let scanned = scan(&mut io::BufReader::with_capacity(64 * 1024, &file), |n| {
            len += n
        })
        .map_err(open_err)?;
        let (state, torn) = match scanned {
            Scanned::Clean(result) => (result.map_err(damaged)?, None),
            Scanned::Torn { verifier, fragment } => {
                (verifier.finish().map_err(damaged)?, Some(fragment))
            }
        };
        let inner = Arc::new(Mutex::new(Writer {
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
            len,
            file,
            seq: state.last_seq,
            prev: state.last_hash,
            poisoned: false,
        }));
        let (queue, jobs) = std::sync::mpsc::channel();
        let committer = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || commit_loop(&committer, &jobs))
            .map_err(open_err)?;
        let journal = Journal { inner, queue };
        let sealed = match torn {
            None => None,
            Some(fragment) => Some(journal.seal(&fragment)?),
        };
        Ok((journal, sealed))
    }

    fn seal(&self, fragment: &[u8]) -> Result<Appended, AuditError> {
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // End the torn fragment's line so the seal starts on a line of its own.
        w.write_raw(b"\n")?;
        let actor = Actor::Local {
            user: "vncbot".into(),
        };
        w.append(
            Event::Sealed,
            &actor,
            &EntryRef::default(),
            Some((hex::encode(Sha256::digest(fragment)), fragment.len())),
        )
    }

    /// Appends one record and fsyncs it. Blocking I/O runs off the async workers.
    pub async fn append(
        &self,
        event: Event,
        actor: &Actor,
        entry: impl Into<Entry>,
    ) -> Result<Appended, AuditError> {
        let entry: Entry = entry.into();
        let entry = &entry.as_ref();
        let (done, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            event,
            actor: actor.clone(),
            entry: OwnedEntry::from(entry),
            done,
        };
        let started = std::time::Instant::now();
        let result = match self.queue.send(job) {
            Ok(()) => answer.await.unwrap_or(Err(AuditError::Poisoned)),
            Err(_) => Err(AuditError::Poisoned),
        };
        let m = &crate::metrics::METRICS;
        m.audit_write.observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            m.audit_failures.inc();
        }
        result
    }

    pub fn append_blocking(
        &self,
        event: Event,
        actor: &Actor,
        entry: impl Into<Entry>,
    ) -> Result<Appended, AuditError> {
        let entry: Entry = entry.into();
        let entry = &entry.as_ref();
        let mut w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        w.append(event, actor, entry, None)
    }

    /// True when the file is still ours and writable: for health checks.
    pub fn is_healthy(&self) -> bool {
        let w = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        !w.poisoned && w.check_identity().is_ok()
    }
}

/// The committer thread: takes what has queued, writes it as one batch, answers each caller.
fn commit_loop(writer: &Mutex<Writer>, jobs: &std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
        let (seq, prev) = (w.seq, w.prev.clone());
        let mut buf = Vec::with_capacity(batch.len() * 400);
        let mut appended = Vec::with_capacity(batch.len());
        for job in &batch {
            appended.push(w.encode(job.event, &job.actor, &job.entry.borrow(), None, &mut buf));
        }
        match w.write_raw(&buf) {
            Ok(()) => {
                for (job, a) in batch.into_iter().zip(appended) {
                    let _ = job.done.send(Ok(a));
                }
            }
            Err(e) => {
                // Nothing of the batch counts: roll the chain back to before it.
                w.seq = seq;
                w.prev = prev;
                let message = e.to_string();
                for job in batch {
                    let _ = job.done.send(Err(e.clone_for_batch(&message)));
                }
            }
        }
    }
}

impl AuditError {
    /// `io::Error` is not `Clone`; each caller of a failed batch gets an equivalent error.
    fn clone_for_batch(&self, message: &str) -> Self {
        match self {
            AuditError::Write { path, source } => AuditError::Write {
                path: path.clone(),
                source: io::Error::new(source.kind(), message.to_owned()),
            },
            AuditError::Replaced { path } => AuditError::Replaced { path: path.clone() },
            AuditError::Open { path, source } => AuditError::Open {
                path: path.clone(),
                source: io::Error::new(source.kind(), message.to_owned()),
            },
            AuditError::Damaged { path, problem } => AuditError::Damaged {
                path: path.clone(),
                problem: problem.clone(),
            },
            AuditError::Poisoned => AuditError::Poisoned,
        }
    }
}

impl Writer {
    fn check_identity(&self) -> Result<(), AuditError> {
        match std::fs::metadata(&self.path) {
            Ok(m) if m.is_file() && (m.dev(), m.ino()) == self.identity => Ok(()),
            _ => Err(AuditError::Replaced {
                path: self.path.clone(),
            }),
        }
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned);
        }
        self.check_identity()?;
        let result = self
            .file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data());
        if let Err(source) = result {
            // Undo a partial line so the next record starts clean; if even that fails, refuse
            // every later write rather than glue records onto garbage.
            if self.file.set_len(self.len).is_err() {
                self.poisoned = true;
            }
            return Err(AuditError::Write {
                path: self.path.clone(),
                source,
            });
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn append(
        &mut self,
        event: Event,
        actor: &Actor,
        e: &EntryRef<'_>,
        torn: Option<(String, usize)>,
    ) -> Result<Appended, AuditError> {
        let (seq, prev) = (self.seq, self.prev.clone());
        let mut line = Vec::with_capacity(512);
        let appended = self.encode(event, actor, e, torn, &mut line);
        if let Err(err) = self.write_raw(&line) {
            self.seq = seq;
            self.prev = prev;
            return Err(err);
        }
        Ok(appended)
    }

    /// Appends one record's line to `out` and advances the chain (the caller writes `out`, and
    /// rolls the chain back if that fails).
    fn encode(
        &mut self,
        event: Event,
        actor: &Actor,
        e: &EntryRef<'_>,
        torn: Option<(String, usize)>,
        out: &mut Vec<u8>,
    ) -> Appended {
        let (actor_id, actor_name) = match actor {
            Actor::Discord { id, name } => (id.to_string(), name.as_str()),
            Actor::Local { user } => ("local".to_owned(), user.as_str()),
        };
        let seq = self.seq + 1;
        let record = Record {
            seq,
            time: now_rfc3339(),
            event,
            actor_id,
            actor_name,
            guild: e.guild.map(|g| g.to_string()),
            channel: e.channel.map(|c| c.to_string()),
            instance: e.instance,
            region: e.region,
            reason: e.reason,
            rule: e.rule,
            code: e.code,
            request_id: e.request_id,
            refers_to: e.refers_to,
            torn_bytes: torn.as_ref().map(|t| t.1),
            torn_sha256: torn.map(|t| t.0),
            prev: &self.prev,
        };
        let start = out.len();
        serde_json::to_writer(&mut *out, &record).expect("a record always serialises");
        let hash = hex::encode(Sha256::digest(&out[start..]));
        out.pop(); // the closing brace
        out.extend_from_slice(br#","hash":""#);
        out.extend_from_slice(hash.as_bytes());
        out.extend_from_slice(b"\"}\n");
        self.seq = seq;
        self.prev.clone_from(&hash);
        Appended { seq, hash }
    }
}

struct OwnedEntry {
    guild: Option<u64>,
    channel: Option<u64>,
    instance: Option<String>,
    region: Option<String>,
    reason: Option<String>,
    rule: Option<usize>,
    code: Option<String>,
    request_id: Option<String>,
    refers_to: Option<u64>,
}

impl OwnedEntry {
    fn from(e: &EntryRef<'_>) -> Self {
        let own = |s: Option<&str>| s.map(str::to_owned);
        Self {
            guild: e.guild,
            channel: e.channel,
            instance: own(e.instance),
            region: own(e.region),
            reason: own(e.reason),
            rule: e.rule,
            code: own(e.code),
            request_id: own(e.request_id),
            refers_to: e.refers_to,
        }
    }

    fn borrow(&self) -> EntryRef<'_> {
        EntryRef {
            guild: self.guild,
            channel: self.channel,
            instance: self.instance.as_deref(),
            region: self.region.as_deref(),
            reason: self.reason.as_deref(),
            rule: self.rule,
            code: self.code.as_deref(),
            request_id: self.request_id.as_deref(),
            refers_to: self.refers_to,
        }
    }
}

fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc();
    let now = now
        .replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now);
    now.format(&Rfc3339).expect("UTC times always format")
}

// ---- verification -----------------------------------------------------------------------------

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
}

/// Verifies a journal file, reading it a line at a time (a journal of years stays cheap to check).
pub fn verify_file(path: &Path) -> Result<Result<Summary, VerifyError>, io::Error> {
    let mut reader = io::BufReader::with_capacity(64 * 1024, File::open(path)?);
    Ok(match scan(&mut reader, |_| {})? {
        Scanned::Clean(result) => result,
        Scanned::Torn { verifier, fragment } => Err(verifier.torn(fragment.len())),
    })
}

/// Walks the chain in memory. A torn line is accepted only when the next record seals exactly it.
pub fn verify_bytes(bytes: &[u8]) -> Result<Summary, VerifyError> {
    match scan(&mut &bytes[..], |_| {}).expect("reading from memory cannot fail") {
        Scanned::Clean(result) => result,
        Scanned::Torn { verifier, fragment } => Err(verifier.torn(fragment.len())),
    }
}

enum Scanned {
    /// The input ended with a line end: the verdict.
    Clean(Result<Summary, VerifyError>),
    /// Every complete line verified, but the input ends mid-line.
    Torn {
        verifier: Verifier,
        fragment: Vec<u8>,
    },
}

/// Feeds every complete line to a [`Verifier`]; `on_len` sees the byte length read.
fn scan(reader: &mut impl io::BufRead, mut on_len: impl FnMut(u64)) -> io::Result<Scanned> {
    let mut v = Verifier::new();
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        on_len(n as u64);
        if n == 0 {
            return Ok(Scanned::Clean(v.finish()));
        }
        if line.last() != Some(&b'\n') {
            return Ok(Scanned::Torn {
                verifier: v,
                fragment: line,
            });
        }
        line.pop();
        if let Err(e) = v.line(&line) {
            return Ok(Scanned::Clean(Err(e)));
        }
    }
}

/// The chain check, one line at a time.
struct Verifier {
    s: Summary,
    line_no: usize,
    /// An unreadable line (and the SHA-256 of its bytes) that only a `sealed` record may follow.
    pending_torn: Option<(usize, String)>,
}

impl Verifier {
    fn new() -> Self {
        Self {
            s: Summary {
                records: 0,
                first_time: None,
                last_time: None,
                last_seq: 0,
                last_hash: GENESIS.to_owned(),
                sealed: 0,
            },
            line_no: 0,
            pending_torn: None,
        }
    }

    fn fail(&self, line: usize, kind: Problem) -> VerifyError {
        VerifyError { line, kind }
    }

    /// One complete line, without its line end.
    fn line(&mut self, line: &[u8]) -> Result<(), VerifyError> {
        self.line_no += 1;
        let Some((head, hash)) = parse_line(line) else {
            if let Some((torn_line, _)) = self.pending_torn {
                return Err(self.fail(torn_line, Problem::Unreadable));
            }
            // Could be a torn line sealed at start-up; the next record decides.
            self.pending_torn = Some((self.line_no, hex::encode(Sha256::digest(line))));
            return Ok(());
        };
        if let Some((torn_line, fragment_hash)) = self.pending_torn.take() {
            let seals_it =
                head.event == Event::Sealed && head.torn_sha256.as_deref() == Some(&fragment_hash);
            if !seals_it {
                return Err(self.fail(torn_line, Problem::Unreadable));
            }
        }
        let s = &self.s;
        if head.seq != s.last_seq + 1 {
            return Err(self.fail(
                self.line_no,
                Problem::OutOfSequence {
                    seq: head.seq,
                    expected: s.last_seq + 1,
                },
            ));
        }
        if hash != hex::encode(Sha256::digest(body_without_hash(line))) {
            return Err(self.fail(self.line_no, Problem::Edited { seq: head.seq }));
        }
        if head.prev != s.last_hash {
            return Err(self.fail(self.line_no, Problem::BrokenLink { seq: head.seq }));
        }
        let s = &mut self.s;
        s.records += 1;
        s.sealed += u64::from(head.event == Event::Sealed);
        s.first_time.get_or_insert_with(|| head.time.clone());
        s.last_time = Some(head.time);
        s.last_seq = head.seq;
        s.last_hash = hash.to_owned();
        Ok(())
    }

    /// The input ended after a line end.
    fn finish(self) -> Result<Summary, VerifyError> {
        match self.pending_torn {
            Some((line, _)) => Err(self.fail(line, Problem::Unreadable)),
            None => Ok(self.s),
        }
    }

    /// The input ended mid-line, after `bytes` bytes of a last line.
    fn torn(&self, bytes: usize) -> VerifyError {
        self.fail(self.line_no + 1, Problem::TornTail { bytes })
    }
}

/// Splits `{...,"hash":"<64 hex>"}` into its parsed head and the hash.
fn parse_line(line: &[u8]) -> Option<(Head, &str)> {
    if line.len() < HASH_SUFFIX_LEN || !line.ends_with(b"\"}") {
        return None;
    }
    let suffix = &line[line.len() - HASH_SUFFIX_LEN..];
    if !suffix.starts_with(br#","hash":""#) {
        return None;
    }
    let hash = std::str::from_utf8(&suffix[9..9 + 64]).ok()?;
    if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let head: Head = serde_json::from_slice(&body_without_hash(line)).ok()?;
    Some((head, hash))
}

fn body_without_hash(line: &[u8]) -> Vec<u8> {
    let mut body = line[..line.len() - HASH_SUFFIX_LEN].to_vec();
    body.push(b'}');
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Actor {
        Actor::Discord {
            id: 42,
            name: "alice".into(),
        }
    }

    fn journal_with(n: usize) -> (tempdir::Dir, Vec<u8>) {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("audit.jsonl");
        let (j, sealed) = Journal::open(&path).unwrap();
        assert!(sealed.is_none());
        for i in 0..n {
            j.append_blocking(
                Event::Requested,
                &alice(),
                &EntryRef {
                    instance: Some("ins-a1b2c3d4"),
                    region: Some("ap-guangzhou"),
                    reason: Some(if i % 2 == 0 {
                        "incident \"42\"\n"
                    } else {
                        "deploy"
                    }),
                    ..EntryRef::default()
                },
            )
            .unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        (dir, bytes)
    }

    #[test]
    fn intact_chain_verifies() {
        let (_d, bytes) = journal_with(5);
        let s = verify_bytes(&bytes).unwrap();
        assert_eq!((s.records, s.last_seq, s.sealed), (5, 5, 0));
        assert!(s.first_time.unwrap().ends_with('Z'));
    }

    fn lines(bytes: &[u8]) -> Vec<&[u8]> {
        bytes.split_inclusive(|b| *b == b'\n').collect()
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
    fn torn_tail_is_sealed_on_open_and_the_chain_continues() {
        let (dir, bytes) = journal_with(3);
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
        let (j, sealed) = Journal::open(&path).unwrap();
        assert_eq!(sealed.unwrap().seq, 3);
        j.append_blocking(Event::Denied, &alice(), &EntryRef::default())
            .unwrap();
        let s = verify_file(&path).unwrap().unwrap();
        assert_eq!((s.records, s.sealed, s.last_seq), (4, 1, 4));
        // The sealed fragment cannot be swapped for another.
        let text = std::fs::read_to_string(&path).unwrap();
        let swapped = text.replacen("ins-a1b2c3d4", "ins-zzzzzzzz", 3);
        assert!(verify_bytes(swapped.as_bytes()).is_err());
    }

    #[test]
    fn a_replaced_file_fails_closed() {
        let (dir, _) = journal_with(0);
        let path = dir.path().join("audit.jsonl");
        let (j, _) = Journal::open(&path).unwrap();
        j.append_blocking(Event::Requested, &alice(), &EntryRef::default())
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(matches!(
            j.append_blocking(Event::Requested, &alice(), &EntryRef::default()),
            Err(AuditError::Replaced { .. })
        ));
        assert!(!j.is_healthy());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_neither_interleave_nor_fork() {
        let dir = tempdir::Dir::new();
        let path = dir.path().join("audit.jsonl");
        let (j, _) = Journal::open(&path).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let j = j.clone();
                tokio::spawn(async move {
                    let reason = format!("task {i}");
                    j.append(
                        Event::Requested,
                        &alice(),
                        &EntryRef {
                            reason: Some(&reason),
                            ..EntryRef::default()
                        },
                    )
                    .await
                    .unwrap()
                    .seq
                })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
        let s = verify_file(&path).unwrap().unwrap();
        assert_eq!(s.records, 200);
        // A failed batch is refused to every caller in it and leaves the chain as it was.
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let err = j
            .append(Event::Requested, &alice(), &EntryRef::default())
            .await
            .unwrap_err();
        assert!(matches!(err, AuditError::Replaced { .. }), "{err}");
    }

    #[test]
    fn file_is_private_and_other_damage_refuses_to_open() {
        let (dir, bytes) = journal_with(2);
        let path = dir.path().join("audit.jsonl");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let edited = String::from_utf8(bytes)
            .unwrap()
            .replacen("alice", "mallory", 1);
        std::fs::write(&path, edited).unwrap();
        assert!(matches!(
            Journal::open(&path),
            Err(AuditError::Damaged { .. })
        ));
    }

    /// A throwaway directory, removed on drop.
    mod tempdir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let p = std::env::temp_dir().join(format!(
                    "vncbot-audit-test-{}-{}",
                    std::process::id(),
                    fastrand::u64(..)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
