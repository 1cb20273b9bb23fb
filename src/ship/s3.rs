//! A small S3 client: PUT (with `Content-MD5`), GET and ListObjectsV2, signed with AWS Signature
//! Version 4, which Tencent COS's S3-compatible API accepts too.
//!
//! Our own signer on `hmac`/`sha2` rather than a crate: the three calls need ~150 lines, the
//! project already keeps the same shape for Tencent's TC3, and `rusty-s3` would bring a second
//! digest stack (hmac 0.13, sha2 0.11), `jiff` and an XML crate. The signer is checked against
//! AWS's published example (`tests` below).
//!
//! Addressing: virtual-hosted (`https://{bucket}.{endpoint host}/{key}`) for a named host, as COS
//! requires; path-style (`http://127.0.0.1:port/{bucket}/{key}`) for an IP address or `localhost`
//! (a local S3 such as moto, which plain http may reach; see the config's URL rule).

use std::fmt;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::Md5;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

pub const ACCESS_KEY_ENV: &str = "VNCBOT_SHIP_ACCESS_KEY_ID";
pub const SECRET_KEY_ENV: &str = "VNCBOT_SHIP_SECRET_ACCESS_KEY";

/// The object store's credentials. `Debug` shows neither part.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("S3Credentials(..)")
    }
}

impl S3Credentials {
    /// Both variables, or a sentence naming the missing one.
    pub fn from_env() -> Result<Self, String> {
        let get = |name: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    format!("{name} is not set: [audit.ship] needs the object store's access key in {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}")
                })
        };
        Ok(Self {
            access_key_id: get(ACCESS_KEY_ENV)?,
            secret_access_key: SecretString::from(get(SECRET_KEY_ENV)?),
        })
    }
}

/// Where the bucket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// `scheme://host[:port]`.
    pub endpoint: Url,
    pub name: String,
    pub region: String,
}

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("the object store answered {status} to {op} {key}: {code}")]
    Status {
        op: &'static str,
        key: String,
        status: StatusCode,
        /// S3's `<Code>`, or the start of the body.
        code: String,
    },
    #[error("cannot reach the object store for {op} {key}: {message}")]
    Network {
        op: &'static str,
        key: String,
        message: String,
    },
    #[error("the object store's listing is not ListObjectsV2 XML: {0}")]
    Listing(String),
}

impl S3Error {
    pub fn is_not_found(&self) -> bool {
        matches!(self, S3Error::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

#[derive(Clone)]
pub struct S3Client {
    http: reqwest::Client,
    bucket: Bucket,
    creds: S3Credentials,
}

impl S3Client {
    pub fn new(bucket: Bucket, creds: S3Credentials) -> Self {
        let http = reqwest::Client::builder()
            // Never follow a redirect: it would carry a signed request to another host.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("the HTTP client builds");
        Self {
            http,
            bucket,
            creds,
        }
    }

    /// Stores `body` at `key`, with `Content-MD5` (required under Object Lock).
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), S3Error> {
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
        let extra = [("content-md5", md5)];
        self.send(Method::PUT, "PUT", key, &[], &extra, body)
            .await
            .map(drop)
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, S3Error> {
        self.send(Method::GET, "GET", key, &[], &[], Vec::new())
            .await
    }

    /// Every key under `prefix`, in key order, following ListObjectsV2's continuation tokens.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![
                ("list-type".to_owned(), "2".to_owned()),
                ("prefix".to_owned(), prefix.to_owned()),
            ];
            if let Some(t) = token.take() {
                query.push(("continuation-token".to_owned(), t));
            }
            let body = self
                .send(Method::GET, "LIST", "", &query, &[], Vec::new())
                .await?;
            let page = parse_listing(&String::from_utf8_lossy(&body))?;
            keys.extend(page.keys);
            match page.next {
                Some(t) => token = Some(t),
                None => return Ok(keys),
            }
        }
    }

    async fn send(
        &self,
        method: Method,
        op: &'static str,
        key: &str,
        query: &[(String, String)],
        extra: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Vec<u8>, S3Error> {
        let (url, host, path) = self.target(key);
        let signed = sign(
            &SignInput {
                method: method.as_str(),
                host: &host,
                path: &path,
                query,
                extra,
                body: &body,
                region: &self.bucket.region,
            },
            &self.creds,
            SystemTime::now(),
        );
        let mut url = url;
        url.set_query(Some(&signed.query));
        let mut req = self.http.request(method, url).body(body);
        for (name, value) in &signed.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let network = |e: reqwest::Error| S3Error::Network {
            op,
            key: key.to_owned(),
            // Without the URL: it carries nothing secret, but keeps the message short.
            message: e.without_url().to_string(),
        };
        let resp = req.send().await.map_err(network)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(network)?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            let code = tag_text(&text, "Code")
                .unwrap_or_else(|| text.chars().take(120).collect::<String>());
            return Err(S3Error::Status {
                op,
                key: key.to_owned(),
                status,
                code: crate::text::clean(&code, 120),
            });
        }
        Ok(bytes.to_vec())
    }

    /// The URL, the `Host` header and the encoded path for `key` (empty for the bucket).
    fn target(&self, key: &str) -> (Url, String, String) {
        let e = &self.bucket.endpoint;
        let host = e.host_str().unwrap_or_default();
        let path_style = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok();
        let port = e.port().map(|p| format!(":{p}")).unwrap_or_default();
        let (host, path) = if path_style {
            (
                format!("{host}{port}"),
                format!("/{}/{}", encode_path(&self.bucket.name), encode_path(key)),
            )
        } else {
            (
                format!("{}.{host}{port}", self.bucket.name),
                format!("/{}", encode_path(key)),
            )
        };
        let path = if key.is_empty() && path_style {
            path.trim_end_matches('/').to_owned()
        } else {
            path
        };
        let url = Url::parse(&format!("{}://{host}{path}", e.scheme()))
            .expect("an endpoint URL with an encoded path parses");
        (url, host, path)
    }
}

/// Everything but the unreserved characters, as SigV4 encodes (`/` is kept in paths).
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode_path(s: &str) -> String {
    s.split('/')
        .map(|seg| utf8_percent_encode(seg, ENCODE).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODE).to_string()
}

struct SignInput<'a> {
    method: &'a str,
    host: &'a str,
    /// Already encoded.
    path: &'a str,
    query: &'a [(String, String)],
    extra: &'a [(&'a str, String)],
    body: &'a [u8],
    region: &'a str,
}

struct Signed {
    /// The canonical query string (also what is sent).
    query: String,
    /// Headers to send, `Authorization` included (`Host` is set by the HTTP client).
    headers: Vec<(String, String)>,
}

fn sign(input: &SignInput<'_>, creds: &S3Credentials, now: SystemTime) -> Signed {
    let now = OffsetDateTime::from(now);
    let amz_date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let date = &amz_date[..8];
    let payload = hex::encode(Sha256::digest(input.body));
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), input.host.to_owned()),
        ("x-amz-content-sha256".into(), payload.clone()),
        ("x-amz-date".into(), amz_date.clone()),
    ];
    headers.extend(
        input
            .extra
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned())),
    );
    headers.sort();
    let mut query: Vec<(String, String)> = input
        .query
        .iter()
        .map(|(k, v)| (encode(k), encode(v)))
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let signed_headers = headers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let canonical = format!(
        "{}\n{}\n{query}\n{canonical_headers}\n{signed_headers}\n{payload}",
        input.method, input.path
    );
    let scope = format!("{date}/{}/s3/aws4_request", input.region);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let secret = format!("AWS4{}", creds.secret_access_key.expose_secret());
    let mut k = hmac(secret.as_bytes(), date.as_bytes());
    for part in [input.region, "s3", "aws4_request"] {
        k = hmac(&k, part.as_bytes());
    }
    let signature = hex::encode(hmac(&k, to_sign.as_bytes()));
    headers.retain(|(n, _)| n != "host");
    headers.push((
        "authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    Signed { query, headers }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

struct Page {
    keys: Vec<String>,
    next: Option<String>,
}

/// The keys and continuation token of one ListObjectsV2 page. A tag scan, not a full XML parser:
/// the document is S3's own, and the only escapes in it are the five XML entities.
fn parse_listing(xml: &str) -> Result<Page, S3Error> {
    if !xml.contains("<ListBucketResult") {
        return Err(S3Error::Listing(xml.chars().take(80).collect()));
    }
    let mut keys = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<Contents>") {
        let after = &rest[start..];
        let end = after
            .find("</Contents>")
            .ok_or_else(|| S3Error::Listing("unclosed <Contents>".into()))?;
        let item = &after[..end];
        keys.push(
            tag_text(item, "Key")
                .ok_or_else(|| S3Error::Listing("a <Contents> without <Key>".into()))?,
        );
        rest = &after[end..];
    }
    let truncated = tag_text(xml, "IsTruncated").as_deref() == Some("true");
    let next =
        if truncated {
            Some(tag_text(xml, "NextContinuationToken").ok_or_else(|| {
                S3Error::Listing("truncated without a NextContinuationToken".into())
            })?)
        } else {
            None
        };
    Ok(Page { keys, next })
}

fn tag_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..end]
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aws_example_creds() -> S3Credentials {
        S3Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        }
    }

    fn may_24_2013() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_369_353_600)
    }

    /// AWS's "Example: GET Object" for SigV4 with the Authorization header (S3 API reference,
    /// sig-v4-header-based-auth).
    #[test]
    fn the_signer_reproduces_aws_get_object_example() {
        let extra = [("range", "bytes=0-9".to_owned())];
        let s = sign(
            &SignInput {
                method: "GET",
                host: "examplebucket.s3.amazonaws.com",
                path: "/test.txt",
                query: &[],
                extra: &extra,
                body: b"",
                region: "us-east-1",
            },
            &aws_example_creds(),
            may_24_2013(),
        );
        let auth = &s
            .headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1;
        assert_eq!(auth, "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41");
    }

    /// AWS's "Example: GET Bucket (List Objects)".
    #[test]
    fn the_signer_reproduces_aws_list_objects_example() {
        let query = [
            ("max-keys".to_owned(), "2".to_owned()),
            ("prefix".to_owned(), "J".to_owned()),
        ];
        let s = sign(
            &SignInput {
                method: "GET",
                host: "examplebucket.s3.amazonaws.com",
                path: "/",
                query: &query,
                extra: &[],
                body: b"",
                region: "us-east-1",
            },
            &aws_example_creds(),
            may_24_2013(),
        );
        assert_eq!(s.query, "max-keys=2&prefix=J");
        let auth = &s
            .headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap()
            .1;
        assert!(
            auth.ends_with(
                "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
            ),
            "{auth}"
        );
    }

    #[test]
    fn a_listing_page_gives_keys_in_order_and_the_continuation_token() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><IsTruncated>true</IsTruncated>
<Contents><Key>p/digests/a&amp;b.json</Key><Size>3</Size></Contents><Contents><Key>p/digests/c.json</Key></Contents>
<NextContinuationToken>tok/en=</NextContinuationToken></ListBucketResult>"#;
        let page = parse_listing(xml).unwrap();
        assert_eq!(page.keys, ["p/digests/a&b.json", "p/digests/c.json"]);
        assert_eq!(page.next.as_deref(), Some("tok/en="));
        let last =
            parse_listing("<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>")
                .unwrap();
        assert!(last.keys.is_empty() && last.next.is_none());
        assert!(parse_listing("<Error><Code>AccessDenied</Code></Error>").is_err());
    }

    #[test]
    fn keys_use_virtual_hosts_for_names_and_paths_for_loopback() {
        let client = |endpoint: &str| {
            S3Client::new(
                Bucket {
                    endpoint: Url::parse(endpoint).unwrap(),
                    name: "audit-1250000000".into(),
                    region: "ap-guangzhou".into(),
                },
                aws_example_creds(),
            )
        };
        let (url, host, _) = client("https://cos.ap-guangzhou.myqcloud.com").target("p/a b.json");
        assert_eq!(
            url.as_str(),
            "https://audit-1250000000.cos.ap-guangzhou.myqcloud.com/p/a%20b.json"
        );
        assert_eq!(host, "audit-1250000000.cos.ap-guangzhou.myqcloud.com");
        let (url, host, path) = client("http://127.0.0.1:5000").target("");
        assert_eq!(url.as_str(), "http://127.0.0.1:5000/audit-1250000000");
        assert_eq!(
            (host.as_str(), path.as_str()),
            ("127.0.0.1:5000", "/audit-1250000000")
        );
        assert!(!format!("{:?}", aws_example_creds()).contains("EXAMPLE"));
    }
}
