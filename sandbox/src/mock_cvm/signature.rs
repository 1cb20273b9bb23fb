//! The TC3-HMAC-SHA256 check, written from Tencent's documentation independently of
//! `src/tencent/sign.rs`: it canonicalises whatever headers the request names in SignedHeaders
//! and recomputes the signature with the service the credential scope names.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{Service, State, DESCRIBE_INSTANCES, VNC};
use crate::http::HttpRequest;

/// Checks a request as Tencent's gateway does before any action runs: POST /, a known action and
/// version, a well-formed TC3 `Authorization` whose signature the mock recomputes from the
/// headers received, a fresh timestamp, this endpoint's Host, the service the version belongs
/// to, and the session token temporary credentials need. Returns the product asked for.
pub(super) fn verify(
    state: &Arc<Mutex<State>>,
    own_host: &str,
    req: &HttpRequest,
) -> Result<Service, (&'static str, String)> {
    let fail = |code: &'static str, msg: &str| Err((code, msg.to_owned()));
    if req.method != "POST" || req.path != "/" {
        return fail("InvalidParameter", "only POST / is served");
    }
    let action = req.header("x-tc-action").unwrap_or_default();
    if action != VNC && action != DESCRIBE_INSTANCES {
        return fail("InvalidAction", "unknown action");
    }
    let Some(service) = req.header("x-tc-version").and_then(Service::of_version) else {
        return fail("NoSuchVersion", "unknown version");
    };
    let Some(auth) = req.header("authorization") else {
        return fail("AuthFailure.SignatureFailure", "no Authorization header");
    };
    let Some(Authorization {
        secret_id,
        date,
        service: signed_service,
        signed_headers,
        signature,
    }) = parse_authorization(auth)
    else {
        return fail(
            "AuthFailure.InvalidAuthorization",
            "malformed Authorization",
        );
    };
    let Some(ts) = req
        .header("x-tc-timestamp")
        .and_then(|t| t.parse::<i64>().ok())
    else {
        return fail("MissingParameter", "X-TC-Timestamp");
    };
    let (key, skew) = {
        let st = state.lock().unwrap();
        (st.keys.get(&secret_id).cloned(), st.clock_skew)
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + skew;
    if (now - ts).abs() > 300 {
        return fail(
            "AuthFailure.SignatureExpire",
            "timestamp more than 300 s off",
        );
    }
    let Some((secret_key, needs_token)) = key else {
        return fail("AuthFailure.SecretIdNotFound", "unknown SecretId");
    };
    if req.header("host") != Some(own_host) {
        return fail("AuthFailure.SignatureFailure", "Host is not this endpoint");
    }
    let names: Vec<&str> = signed_headers.split(';').collect();
    if !names.contains(&"content-type") || !names.contains(&"host") {
        return fail(
            "AuthFailure.SignatureFailure",
            "content-type and host must be signed",
        );
    }
    let mut canonical_headers = String::new();
    for n in &names {
        let v = req
            .header(n)
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        canonical_headers.push_str(&format!("{n}:{v}\n"));
    }
    let canonical = format!(
        "POST\n/\n\n{canonical_headers}\n{signed_headers}\n{}",
        hex::encode(Sha256::digest(&req.body))
    );
    let ts_date = time::OffsetDateTime::from_unix_timestamp(ts)
        .unwrap()
        .date();
    let expected_date = format!(
        "{:04}-{:02}-{:02}",
        ts_date.year(),
        u8::from(ts_date.month()),
        ts_date.day()
    );
    if date != expected_date {
        return fail(
            "AuthFailure.SignatureFailure",
            "credential date is not the timestamp's UTC date",
        );
    }
    // Recompute with the service the request says it signed for, then check that service
    // is the one the action belongs to: a signature valid for `cvm` does not open Lighthouse.
    let sts = format!(
        "TC3-HMAC-SHA256\n{ts}\n{date}/{signed_service}/tc3_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mac = |k: &[u8], d: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(k).unwrap();
        m.update(d);
        m.finalize().into_bytes().to_vec()
    };
    let k = mac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k = mac(&k, signed_service.as_bytes());
    let k = mac(&k, b"tc3_request");
    if hex::encode(mac(&k, sts.as_bytes())) != signature {
        return fail("AuthFailure.SignatureFailure", "signature mismatch");
    }
    if signed_service != service.name() {
        return Err((
            "AuthFailure.SignatureFailure",
            format!(
                "the request is signed for service {signed_service}, but {} version {} belongs to {}",
                action,
                req.header("x-tc-version").unwrap_or_default(),
                service.name()
            ),
        ));
    }
    if let Some(t) = needs_token {
        if req.header("x-tc-token") != Some(t.as_str()) {
            return fail(
                "AuthFailure.TokenFailure",
                "temporary credentials need X-TC-Token",
            );
        }
    }
    Ok(service)
}

pub(super) struct Authorization {
    secret_id: String,
    date: String,
    /// The service in the credential scope: `cvm`, `lighthouse`.
    pub(super) service: String,
    signed_headers: String,
    signature: String,
}

pub(super) fn parse_authorization(a: &str) -> Option<Authorization> {
    let rest = a.strip_prefix("TC3-HMAC-SHA256 ")?;
    let mut cred = None;
    let mut signed = None;
    let mut sig = None;
    for part in rest.split(", ") {
        let (k, v) = part.split_once('=')?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => sig = Some(v),
            _ => return None,
        }
    }
    let mut c = cred?.split('/');
    let secret_id = c.next()?.to_owned();
    let date = c.next()?.to_owned();
    let service = c.next()?.to_owned();
    if !["cvm", "lighthouse"].contains(&service.as_str())
        || c.next()? != "tc3_request"
        || c.next().is_some()
    {
        return None;
    }
    Some(Authorization {
        secret_id,
        date,
        service,
        signed_headers: signed?.to_owned(),
        signature: sig?.to_owned(),
    })
}
