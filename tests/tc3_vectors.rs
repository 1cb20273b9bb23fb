//! The signer against signatures computed by Tencent's official Python SDK
//! (`tests/data/tc3_vectors.json`): every case and documentation example, byte for byte.

use serde::Deserialize;
use vncbot::tencent::sign::{sign, SignInput};

#[derive(Deserialize)]
struct Vectors {
    cases: Vec<Case>,
    reference_vectors: Vec<Reference>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    secret_id: String,
    secret_key: String,
    timestamp: i64,
    host: String,
    service: String,
    content_type: String,
    payload: String,
    authorization: String,
    sdk_string_to_sign: String,
    intermediate: Intermediate,
}

#[derive(Deserialize)]
struct Reference {
    name: String,
    secret_id: String,
    secret_key: String,
    timestamp: i64,
    headers: std::collections::BTreeMap<String, String>,
    payload: String,
    authorization: String,
    intermediate: Intermediate,
}

#[derive(Deserialize)]
struct Intermediate {
    credential_scope: String,
    canonical_request: String,
    string_to_sign: String,
    signature: String,
}

fn vectors() -> Vectors {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tc3_vectors.json");
    let text = std::fs::read_to_string(path).expect("tests/data/tc3_vectors.json is readable");
    serde_json::from_str(&text).expect("tc3_vectors.json parses")
}

fn check(name: &str, got: &vncbot::tencent::sign::Signed, want: &Intermediate, auth: &str) {
    assert_eq!(
        got.credential_scope, want.credential_scope,
        "{name}: credential scope"
    );
    assert_eq!(
        got.canonical_request, want.canonical_request,
        "{name}: canonical request"
    );
    assert_eq!(
        got.string_to_sign, want.string_to_sign,
        "{name}: string to sign"
    );
    assert_eq!(got.signature, want.signature, "{name}: signature");
    assert_eq!(got.authorization, auth, "{name}: Authorization header");
}

#[test]
fn every_sdk_case_matches_byte_for_byte() {
    let v = vectors();
    assert_eq!(
        v.cases.len(),
        12,
        "the vector file should hold 12 SDK cases"
    );
    for case in &v.cases {
        let signed = sign(&SignInput {
            secret_id: &case.secret_id,
            secret_key: &case.secret_key,
            service: &case.service,
            timestamp: case.timestamp,
            headers: &[("content-type", &case.content_type), ("host", &case.host)],
            payload: case.payload.as_bytes(),
        })
        .unwrap();
        assert_eq!(
            signed.string_to_sign, case.sdk_string_to_sign,
            "{}: SDK string to sign",
            case.name
        );
        check(&case.name, &signed, &case.intermediate, &case.authorization);
    }
}

#[test]
fn every_documentation_example_matches_byte_for_byte() {
    let v = vectors();
    assert_eq!(
        v.reference_vectors.len(),
        3,
        "the vector file should hold 3 doc examples"
    );
    for r in &v.reference_vectors {
        let headers: Vec<(&str, &str)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let signed = sign(&SignInput {
            secret_id: &r.secret_id,
            secret_key: &r.secret_key,
            service: "cvm",
            timestamp: r.timestamp,
            headers: &headers,
            payload: r.payload.as_bytes(),
        })
        .unwrap();
        check(&r.name, &signed, &r.intermediate, &r.authorization);
    }
}

/// Lighthouse requests, signed for the `lighthouse` service by the official SDK's
/// `LighthouseClient` (`tests/data/gen_lighthouse_vectors.py`).
#[derive(Deserialize)]
struct LighthouseFile {
    lighthouse_cases: Vec<LighthouseCase>,
}

#[derive(Deserialize)]
struct LighthouseCase {
    name: String,
    secret_id: String,
    secret_key: String,
    timestamp: i64,
    host: String,
    service: String,
    version: String,
    action: String,
    content_type: String,
    payload: String,
    authorization: String,
    sdk_headers: std::collections::BTreeMap<String, String>,
    intermediate: Intermediate,
}

#[test]
fn every_lighthouse_sdk_case_matches_byte_for_byte() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tc3_vectors.json");
    let text = std::fs::read_to_string(path).expect("tests/data/tc3_vectors.json is readable");
    let file: LighthouseFile = serde_json::from_str(&text).expect("lighthouse_cases parse");
    assert!(
        file.lighthouse_cases.len() >= 7,
        "the vector file should hold the Lighthouse SDK cases"
    );
    let mut actions = std::collections::BTreeSet::new();
    for case in &file.lighthouse_cases {
        assert_eq!(case.service, "lighthouse", "{}", case.name);
        assert_eq!(case.version, "2020-03-24", "{}", case.name);
        assert_eq!(
            case.sdk_headers["X-TC-Version"], case.version,
            "{}",
            case.name
        );
        assert_eq!(case.sdk_headers["Authorization"], case.authorization);
        actions.insert(case.action.as_str());
        let input = SignInput {
            secret_id: &case.secret_id,
            secret_key: &case.secret_key,
            service: &case.service,
            timestamp: case.timestamp,
            headers: &[("content-type", &case.content_type), ("host", &case.host)],
            payload: case.payload.as_bytes(),
        };
        let signed = sign(&input).unwrap();
        check(&case.name, &signed, &case.intermediate, &case.authorization);
        // The service is part of the key: the same request signed for `cvm` is not valid.
        let as_cvm = sign(&SignInput {
            service: "cvm",
            ..input
        })
        .unwrap();
        assert_ne!(
            as_cvm.signature, case.intermediate.signature,
            "{}",
            case.name
        );
        assert!(as_cvm.authorization.contains("/cvm/tc3_request,"));
    }
    assert!(
        actions.contains("DescribeInstanceVncUrl") && actions.contains("DescribeInstances"),
        "{actions:?}"
    );
}
