//! The console link: a bearer credential for a machine's console, handled like a password.

use std::fmt;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use secrecy::{ExposeSecret, SecretString};

/// Tencent's console page; the URL from DescribeInstanceVncUrl goes after the `=`.
pub const CONSOLE_PAGE: &str =
    "https://img.qcloud.com/qcloud/app/active_vnc/index.html?InstanceVncUrl=";

/// The URL works once, and only within this many seconds of the API call.
pub const VALID_FOR_SECS: u64 = 15;

/// Longest `InstanceVncUrl` we accept; real ones are a few hundred bytes.
const MAX_RAW_LEN: usize = 8 * 1024;

/// RFC 3986 unreserved characters stay as they are; everything else is encoded.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The composed console link. `Debug` and `Display` show only the public page, never the secret
/// part; the one way to read it is [`ConsoleUrl::expose_link`], called where it is put in the DM or
/// printed on stdout.
#[derive(Clone)]
pub struct ConsoleUrl(SecretString);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadVncUrl {
    #[error("the InstanceVncUrl is empty")]
    Empty,
    #[error("the InstanceVncUrl is {0} bytes long, over the {MAX_RAW_LEN}-byte bound")]
    TooLong(usize),
}

impl ConsoleUrl {
    /// Appends `instance_vnc_url` to the console page. Tencent returns it already
    /// percent-encoded (`wss%3A%2F%2F...`), and encoding it again would break it, so an encoded
    /// value is appended verbatim and only a raw one is encoded.
    pub fn compose(instance_vnc_url: &str) -> Result<Self, BadVncUrl> {
        let raw = instance_vnc_url.trim();
        if raw.is_empty() {
            return Err(BadVncUrl::Empty);
        }
        if raw.len() > MAX_RAW_LEN {
            return Err(BadVncUrl::TooLong(raw.len()));
        }
        let mut link = String::with_capacity(CONSOLE_PAGE.len() + raw.len() * 3);
        link.push_str(CONSOLE_PAGE);
        if is_percent_encoded(raw) {
            link.push_str(raw);
        } else {
            link.extend(utf8_percent_encode(raw, COMPONENT));
        }
        Ok(Self(link.into()))
    }

    /// The full link. Only for the DM and for `vncbot url`'s stdout.
    pub fn expose_link(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for ConsoleUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConsoleUrl({CONSOLE_PAGE}[redacted])")
    }
}

impl fmt::Display for ConsoleUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{CONSOLE_PAGE}[redacted]")
    }
}

/// True when every byte is unreserved or part of a valid `%XX` escape.
/// `HH:MM:SS UTC`: how expiry times are written where `<t:…>` does not render (the terminal,
/// a fallback for Discord clients that show raw timestamps).
pub fn utc_clock(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!("{:02}:{:02}:{:02} UTC", t.hour(), t.minute(), t.second())
}

fn is_percent_encoded(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                if i + 2 >= b.len()
                    || !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit())
                {
                    return false;
                }
                i += 3;
            }
            c if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') => i += 1,
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENCODED: &str = "wss%3A%2F%2Fbjvnc.qcloud.com%3A26789%2Fvnc%3Fs%3DaHR0cHM6Ly9leGFtcGxl";

    #[test]
    fn encoded_value_is_appended_verbatim() {
        let u = ConsoleUrl::compose(ENCODED).unwrap();
        assert_eq!(u.expose_link(), format!("{CONSOLE_PAGE}{ENCODED}"));
    }

    #[test]
    fn raw_value_is_encoded_once() {
        let u =
            ConsoleUrl::compose("wss://bjvnc.qcloud.com:26789/vnc?s=aHR0cHM6Ly9leGFtcGxl").unwrap();
        assert_eq!(u.expose_link(), format!("{CONSOLE_PAGE}{ENCODED}"));
        let pct = ConsoleUrl::compose("wss://h/v?s=a%zz").unwrap();
        assert!(
            pct.expose_link().ends_with("s%3Da%25zz"),
            "{}",
            pct.expose_link()
        );
        assert!(ConsoleUrl::compose("abc%4")
            .unwrap()
            .expose_link()
            .ends_with("abc%254"));
        assert!(ConsoleUrl::compose("abc%")
            .unwrap()
            .expose_link()
            .ends_with("abc%25"));
    }

    #[test]
    fn debug_and_display_hide_the_secret() {
        let u = ConsoleUrl::compose(ENCODED).unwrap();
        for shown in [format!("{u}"), format!("{u:?}"), format!("{:?}", Some(&u))] {
            assert!(
                !shown.contains("bjvnc") && shown.contains("[redacted]"),
                "{shown}"
            );
        }
    }

    #[test]
    fn empty_and_oversized_are_rejected() {
        assert_eq!(ConsoleUrl::compose("  ").unwrap_err(), BadVncUrl::Empty);
        assert!(matches!(
            ConsoleUrl::compose(&"a".repeat(9000)),
            Err(BadVncUrl::TooLong(9000))
        ));
    }
}
