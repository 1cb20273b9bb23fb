//! TC3-HMAC-SHA256 request signing, as Tencent Cloud API 3.0 defines it.
//! Source: <https://www.tencentcloud.com/document/api/213/33224>.
//!
//! Pure: the caller passes the clock reading, the exact body bytes and the headers to sign, and
//! gets every intermediate value back so tests can compare each against Tencent's SDK.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const ALGORITHM: &str = "TC3-HMAC-SHA256";

/// What the signature covers besides the body. Its `Debug` leaves the secret key out.
#[derive(Clone, Copy)]
pub struct SignInput<'a> {
    pub secret_id: &'a str,
    pub secret_key: &'a str,
    /// The product's service name: `cvm`.
    pub service: &'a str,
    /// Unix seconds; also sent as `X-TC-Timestamp`.
    pub timestamp: i64,
    /// Headers to sign, as sent. Tencent requires `content-type` and `host`.
    pub headers: &'a [(&'a str, &'a str)],
    /// The exact bytes of the request body.
    pub payload: &'a [u8],
}

impl fmt::Debug for SignInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignInput")
            .field("secret_id", &crate::text::mask(self.secret_id))
            .field("secret_key", &"[redacted]")
            .field("service", &self.service)
            .field("timestamp", &self.timestamp)
            .field("headers", &self.headers)
            .field("payload", &format_args!("{} bytes", self.payload.len()))
            .finish()
    }
}

/// A signature and the values it was derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub credential_scope: String,
    pub canonical_request: String,
    pub string_to_sign: String,
    pub signature: String,
    pub authorization: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timestamp {0} is outside the range a date can be computed for")]
pub struct TimestampOutOfRange(pub i64);

/// Signs a `POST /` request with an empty query string, the only shape this bot sends.
pub fn sign(input: &SignInput<'_>) -> Result<Signed, TimestampOutOfRange> {
    // The credential scope uses the UTC date of the timestamp: a local date would break every
    // request made between local midnight and UTC midnight.
    let date = utc_date(input.timestamp).ok_or(TimestampOutOfRange(input.timestamp))?;

    let mut headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.trim().to_ascii_lowercase(),
                value.trim().to_ascii_lowercase(),
            )
        })
        .collect();
    headers.sort();
    let mut canonical_headers = String::new();
    for (name, value) in &headers {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
    }
    let signed_headers = headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");

    let canonical_request = format!(
        "POST\n/\n\n{canonical_headers}\n{signed_headers}\n{}",
        hex::encode(Sha256::digest(input.payload))
    );
    let credential_scope = format!("{date}/{}/tc3_request", input.service);
    let string_to_sign = format!(
        "{ALGORITHM}\n{}\n{credential_scope}\n{}",
        input.timestamp,
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );

    let secret_date = hmac(
        format!("TC3{}", input.secret_key).as_bytes(),
        date.as_bytes(),
    );
    let secret_service = hmac(&secret_date, input.service.as_bytes());
    let secret_signing = hmac(&secret_service, b"tc3_request");
    let signature = hex::encode(hmac(&secret_signing, string_to_sign.as_bytes()));

    let authorization = format!(
        "{ALGORITHM} Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
        input.secret_id
    );
    Ok(Signed {
        credential_scope,
        canonical_request,
        string_to_sign,
        signature,
        authorization,
    })
}

/// `YYYY-MM-DD` of a Unix timestamp, in UTC.
fn utc_date(timestamp: i64) -> Option<String> {
    let date = time::OffsetDateTime::from_unix_timestamp(timestamp)
        .ok()?
        .date();
    Some(format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    ))
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_date_ignores_local_time() {
        assert_eq!(utc_date(1710460799).unwrap(), "2024-03-14"); // 23:59:59 UTC
        assert_eq!(utc_date(1710460800).unwrap(), "2024-03-15"); // 00:00:00 UTC
        assert!(utc_date(i64::MAX).is_none());
    }

    #[test]
    fn debug_leaves_the_secret_key_out() {
        let input = SignInput {
            secret_id: "AKIDsecretidsecretid",
            secret_key: "Gu5t9xGARNpq86cd98joQYCN3EXAMPLEkey",
            service: "cvm",
            timestamp: 1_700_000_000,
            headers: &[("host", "cvm.tencentcloudapi.com")],
            payload: b"{}",
        };
        let d = format!("{input:?} {input:#?}");
        assert!(!d.contains("Gu5t9xGARNpq86cd98joQYCN3EXAMPLEkey"), "{d}");
        assert!(!d.contains("AKIDsecretidsecretid"), "{d}");
        assert!(d.contains("[redacted]") && d.contains("1700000000"), "{d}");
    }

    #[test]
    fn header_order_and_case_do_not_matter() {
        let a = sign(&SignInput {
            secret_id: "id",
            secret_key: "key",
            service: "cvm",
            timestamp: 1_700_000_000,
            headers: &[
                ("Host", " CVM.tencentcloudapi.com "),
                ("Content-Type", "application/json"),
            ],
            payload: b"{}",
        })
        .unwrap();
        let b = sign(&SignInput {
            headers: &[
                ("content-type", "application/json"),
                ("host", "cvm.tencentcloudapi.com"),
            ],
            ..SignInput {
                secret_id: "id",
                secret_key: "key",
                service: "cvm",
                timestamp: 1_700_000_000,
                headers: &[],
                payload: b"{}",
            }
        })
        .unwrap();
        assert_eq!(a, b);
        assert!(a.authorization.contains("SignedHeaders=content-type;host,"));
    }
}
