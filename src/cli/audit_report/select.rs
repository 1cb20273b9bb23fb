//! What `audit report` and `audit query` share: the journal read line by line as the JSON it is
//! (fields a newer bot added are kept, not dropped), what the chain verification says about it,
//! and the selection an auditor asks for (a period, a member, an instance).

use std::fs::File;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, Duration, OffsetDateTime, Time};
use vncbot::audit::verify_file;
use vncbot::config::Config;

use crate::cli::Exit;

/// The journal named on the command line, or the config's `audit.path`.
pub fn journal_path(
    config_path: &Path,
    file: Option<PathBuf>,
    command: &str,
) -> Result<PathBuf, Exit> {
    match file {
        Some(f) => Ok(f),
        None => match Config::load(config_path) {
            Ok(c) => Ok(c.audit.path),
            Err(e) => {
                eprintln!("error: {e}\n(or name the journal file: vncbot audit {command} FILE)");
                Err(Exit::Config)
            }
        },
    }
}

/// One journal line as written, with the fields every selection needs read out.
pub struct Raw {
    /// The line as written (without its line end).
    pub line: String,
    pub fields: Map<String, Value>,
    pub seq: u64,
    pub time: Option<OffsetDateTime>,
    pub event: String,
}

impl Raw {
    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }

    /// A number, written as a JSON number or (as Discord IDs are) a string.
    pub fn u64(&self, key: &str) -> Option<u64> {
        match self.fields.get(key)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn actor_id(&self) -> &str {
        self.str("actor_id").unwrap_or_default()
    }

    pub fn actor_name(&self) -> &str {
        self.str("actor_name").unwrap_or_default()
    }
}

/// Calls `each` with every line that is a JSON object with a `seq`, in file order, and returns
/// how many lines were not (a torn tail, a damaged line): the chain verdict names those.
pub fn read_raw(path: &Path, mut each: impl FnMut(Raw)) -> io::Result<u64> {
    let mut reader = io::BufReader::with_capacity(64 * 1024, File::open(path)?);
    let mut line = Vec::with_capacity(1024);
    let mut unreadable = 0;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(unreadable);
        }
        while line.last().is_some_and(u8::is_ascii_whitespace) {
            line.pop();
        }
        let raw = std::str::from_utf8(&line)
            .ok()
            .and_then(|text| Some((text, serde_json::from_str::<Map<String, Value>>(text).ok()?)))
            .and_then(|(text, fields)| {
                let seq = fields.get("seq")?.as_u64()?;
                let event = fields.get("event")?.as_str()?.to_owned();
                let time = fields
                    .get("time")
                    .and_then(Value::as_str)
                    .and_then(parse_time);
                Some(Raw {
                    line: text.to_owned(),
                    fields,
                    seq,
                    time,
                    event,
                })
            });
        match raw {
            Some(r) => each(r),
            None if line.is_empty() => {}
            None => unreadable += 1,
        }
    }
}

pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Every time in a report is UTC with milliseconds, as the journal writes them now (older records
/// have other precisions), so the text sorts as the times do.
pub fn format_time(t: OffsetDateTime) -> String {
    vncbot::audit::format_time(t.into())
}

/// What the chain verification says, for the report's header.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Chain {
    pub verified: bool,
    pub records: u64,
    /// The last record the chain vouches for (on a damaged chain: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Chain {
    pub fn check(path: &Path) -> io::Result<Self> {
        Ok(match verify_file(path)? {
            Ok(s) => Chain {
                verified: true,
                records: s.records,
                head_seq: Some(s.last_seq),
                head_hash: Some(s.last_hash),
                problem: None,
            },
            Err(e) => Chain {
                verified: false,
                records: 0,
                head_seq: None,
                head_hash: None,
                problem: Some(e.to_string()),
            },
        })
    }

    /// One line: `chain verified: 12 records, up to seq 12, sha256 …` or why not.
    pub fn line(&self, path: &Path) -> String {
        match (&self.problem, self.head_seq, &self.head_hash) {
            (Some(p), ..) => format!(
                "chain NOT verified: {} is DAMAGED at {p}; the rows below come from records the chain does not vouch for",
                path.display()
            ),
            (None, Some(seq), Some(hash)) if seq > 0 => format!(
                "chain verified: {} records in {}, up to seq {seq}, sha256 {hash}",
                self.records,
                path.display()
            ),
            _ => format!("chain verified: {} holds no records", path.display()),
        }
    }
}

/// A `--since`/`--until` value, resolved against "now" once the command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    At(OffsetDateTime),
    /// A plain date: from its first instant as `--since`, through its last as `--until`.
    Day(Date),
    /// A duration back from now (`7d`, `12h`, `30m`).
    Ago(Duration),
}

const WHEN_USAGE: &str = "expected an RFC 3339 time (2026-12-01T09:30:00Z), a date (2026-12-01), or a duration back from now (7d, 12h, 30m)";

/// Parses a `--since`/`--until` value (clap's value parser: a bad one is a usage error, exit 2).
pub fn parse_when(value: &str) -> Result<When, String> {
    let v = value.trim();
    if let Ok(t) = OffsetDateTime::parse(v, &Rfc3339) {
        return Ok(When::At(t));
    }
    if let Ok(d) = Date::parse(v, format_description!("[year]-[month]-[day]")) {
        return Ok(When::Day(d));
    }
    let (number, unit) = v.split_at(v.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len());
    let digits = !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit());
    if let (true, Ok(n)) = (digits, number.parse::<u32>()) {
        let n = i64::from(n);
        let ago = match unit {
            "w" => Some(Duration::weeks(n)),
            "d" => Some(Duration::days(n)),
            "h" => Some(Duration::hours(n)),
            "m" => Some(Duration::minutes(n)),
            _ => None,
        };
        if let Some(ago) = ago {
            return Ok(When::Ago(ago));
        }
    }
    Err(WHEN_USAGE.to_owned())
}

impl When {
    fn resolve(self, now: OffsetDateTime, end_of_day: bool) -> OffsetDateTime {
        match self {
            When::At(t) => t,
            When::Day(d) if end_of_day => {
                d.with_time(Time::MIDNIGHT).assume_utc() + Duration::DAY - Duration::MILLISECOND
            }
            When::Day(d) => d.with_time(Time::MIDNIGHT).assume_utc(),
            When::Ago(ago) => now - ago,
        }
    }
}

/// A member (Discord ID, or name ignoring case) or an instance (ID, or name ignoring case).
#[derive(Debug, Clone)]
pub struct Pick(String);

impl Pick {
    pub fn new(s: &str) -> Self {
        Self(s.trim().to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn matches(&self, id: Option<&str>, name: Option<&str>) -> bool {
        id.is_some_and(|i| i.eq_ignore_ascii_case(&self.0))
            || name.is_some_and(|n| n.to_lowercase() == self.0.to_lowercase())
    }
}

/// What the auditor asked for.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub member: Option<Pick>,
    pub instance: Option<Pick>,
}

impl Selection {
    /// Resolves the options at `now`; an empty period is a usage error.
    pub fn new(
        since: Option<When>,
        until: Option<When>,
        member: Option<String>,
        instance: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Self, String> {
        let since = since.map(|w| w.resolve(now, false));
        let until = until.map(|w| w.resolve(now, true));
        if let (Some(s), Some(u)) = (since, until) {
            if s > u {
                return Err(format!(
                    "--since ({}) is after --until ({}): the period is empty",
                    format_time(s),
                    format_time(u)
                ));
            }
        }
        let pick = |v: Option<String>, what: &str| match v {
            Some(s) if s.trim().is_empty() => Err(format!("--{what} needs an ID or a name")),
            v => Ok(v.as_deref().map(Pick::new)),
        };
        Ok(Self {
            since,
            until,
            member: pick(member, "member")?,
            instance: pick(instance, "instance")?,
        })
    }

    /// Whether `[start, end]` overlaps the period (an unknown time is kept: better shown than lost).
    pub fn overlaps(&self, start: Option<OffsetDateTime>, end: Option<OffsetDateTime>) -> bool {
        let after_since = match (self.since, end.or(start)) {
            (Some(s), Some(e)) => e >= s,
            _ => true,
        };
        let before_until = match (self.until, start) {
            (Some(u), Some(s)) => s <= u,
            _ => true,
        };
        after_since && before_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn when_reads_times_dates_and_durations() {
        let now = datetime!(2026-12-03 08:00 UTC);
        assert_eq!(
            parse_when("2026-12-01T09:30:00+02:00").unwrap(),
            When::At(datetime!(2026-12-01 07:30 UTC))
        );
        let day = parse_when("2026-12-01").unwrap();
        assert_eq!(day.resolve(now, false), datetime!(2026-12-01 00:00 UTC));
        assert_eq!(
            day.resolve(now, true),
            datetime!(2026-12-01 23:59:59.999 UTC)
        );
        assert_eq!(
            parse_when("7d").unwrap().resolve(now, false),
            datetime!(2026-11-26 08:00 UTC)
        );
        assert_eq!(
            parse_when("12h").unwrap().resolve(now, true),
            datetime!(2026-12-02 20:00 UTC)
        );
        assert_eq!(
            parse_when("30m").unwrap().resolve(now, true),
            datetime!(2026-12-03 07:30 UTC)
        );
        for bad in [
            "",
            "7",
            "d",
            "7y",
            "-7d",
            "7dd",
            "+7d",
            "7é",
            "2026-13-01",
            "yesterday",
            "2026-12-01 10:00",
        ] {
            assert_eq!(parse_when(bad), Err(WHEN_USAGE.to_owned()), "{bad:?}");
        }
    }

    #[test]
    fn a_selection_keeps_what_overlaps_its_period() {
        let now = datetime!(2026-12-03 08:00 UTC);
        let s = Selection::new(
            Some(When::Day(time::macros::date!(2026 - 12 - 01))),
            Some(When::Day(time::macros::date!(2026 - 12 - 01))),
            None,
            None,
            now,
        )
        .unwrap();
        let t = |h| Some(datetime!(2026-12-01 00:00 UTC) + Duration::hours(h));
        assert!(s.overlaps(t(-1), t(1)), "started the day before");
        assert!(s.overlaps(t(23), t(25)), "ends the day after");
        assert!(!s.overlaps(t(-3), t(-1)));
        assert!(!s.overlaps(t(24), t(25)));
        assert!(s.overlaps(None, None));
        let err = Selection::new(
            Some(When::Ago(Duration::hours(1))),
            Some(When::Ago(Duration::hours(2))),
            None,
            None,
            now,
        )
        .unwrap_err();
        assert!(err.contains("the period is empty"), "{err}");
        assert!(Selection::new(None, None, Some(" ".into()), None, now).is_err());
    }

    #[test]
    fn picks_match_an_id_or_a_name_ignoring_case() {
        let p = Pick::new("Alice");
        assert!(p.matches(Some("42"), Some("alice")));
        assert!(!p.matches(Some("42"), Some("alicia")));
        assert!(Pick::new("42").matches(Some("42"), None));
        assert!(Pick::new("INS-A1B2C3D4").matches(Some("ins-a1b2c3d4"), None));
    }
}
