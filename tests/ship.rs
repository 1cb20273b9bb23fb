//! Shipping the journal to a real S3 implementation (moto's server, with an Object Lock bucket
//! in COMPLIANCE mode), and `audit verify --remote` on what it holds. Skipped, with a message,
//! when `VNCBOT_MOTO_SERVER` is unset outside CI.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use reqwest::Url;
use secrecy::SecretString;
use vncbot::audit::{Actor, Entry, Event, Journal};
use vncbot::ship::digest::{Digest, Layout};
use vncbot::ship::s3::{S3Client, S3Credentials};
use vncbot::ship::segment::read_segment;
use vncbot::ship::verify::{compare_local, verify_bucket, RemoteError};
use vncbot::ship::{AuditKey, ShipConfig, Shipper};

use support::moto::{self, Moto, Relay};

const BUCKET: &str = "vncbot-audit";
/// moto checks no signature, but treats a request without one as anonymous (refused a DELETE).
const AUTH: &str = "AWS4-HMAC-SHA256 Credential=testing/20261203/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";

fn creds() -> S3Credentials {
    S3Credentials {
        access_key_id: "testing".into(),
        secret_access_key: SecretString::from("testing"),
    }
}

struct Fixture {
    moto: Moto,
    _dir: support::TempDir,
    path: PathBuf,
    journal: Journal,
    key: Arc<AuditKey>,
    prefix: String,
}

impl Fixture {
    async fn start(prefix: &str) -> Option<Self> {
        let moto = moto::start().await?;
        moto.locked_bucket(BUCKET).await;
        let dir = support::TempDir::new("ship");
        let path = dir.join("audit.jsonl");
        let (journal, _) = Journal::open(&path).unwrap();
        Some(Self {
            moto,
            _dir: dir,
            path,
            journal,
            key: Arc::new(AuditKey::generate()),
            prefix: prefix.into(),
        })
    }

    fn config(&self, endpoint: &str) -> ShipConfig {
        ShipConfig {
            endpoint: Url::parse(endpoint).unwrap(),
            bucket: BUCKET.into(),
            prefix: self.prefix.clone(),
            region: "us-east-1".into(),
            segment_minutes: 60,
        }
    }

    /// A shipper as a fresh start makes it (it knows nothing but what the bucket holds).
    fn shipper(&self, endpoint: &str) -> Arc<Shipper> {
        Shipper::new(
            &self.config(endpoint),
            creds(),
            Arc::clone(&self.key),
            self.journal.clone(),
            &self.path,
        )
    }

    fn client(&self) -> S3Client {
        S3Client::new(self.config(&self.moto.endpoint).bucket(), creds())
    }

    fn layout(&self) -> Layout {
        Layout::new(&self.prefix)
    }

    async fn append(&self, n: usize) {
        for i in 0..n {
            let entry = Entry {
                instance: Some(format!("ins-{i:08}")),
                region: Some("ap-guangzhou".into()),
                ..Entry::default()
            };
            let actor = Actor::Discord {
                id: 42,
                name: "alice".into(),
            };
            self.journal
                .append(Event::Denied, &actor, entry)
                .await
                .unwrap();
        }
    }

    async fn ranges(&self, prefix: &str) -> Vec<(u64, u64)> {
        let layout = self.layout();
        self.client()
            .list(prefix)
            .await
            .unwrap()
            .iter()
            .map(|k| layout.range_of(k).unwrap())
            .collect()
    }

    async fn verify(&self, path: &Path) -> Result<u64, RemoteError> {
        let (remote, bytes) =
            verify_bucket(&self.client(), &self.layout(), &self.key.public()).await?;
        compare_local(path, &remote, &bytes).map(|l| l.unshipped)
    }
}

#[tokio::test]
async fn ships_across_segments_and_continues_after_a_restart() {
    let Some(f) = Fixture::start("vncbot/prod").await else {
        return;
    };
    let shipper = f.shipper(&f.moto.endpoint);
    f.append(3).await;
    assert_eq!(shipper.ship_now().await.unwrap(), 3);
    f.append(2).await;
    assert_eq!(shipper.ship_now().await.unwrap(), 2);
    // Nothing new: no empty segment.
    assert_eq!(shipper.ship_now().await.unwrap(), 0);
    drop(shipper);

    // A restart continues after the bucket's last digest.
    let restarted = f.shipper(&f.moto.endpoint);
    f.append(1).await;
    assert_eq!(restarted.ship_now().await.unwrap(), 1);
    let layout = f.layout();
    assert_eq!(
        f.ranges(&layout.digests_prefix()).await,
        [(1, 3), (4, 5), (6, 6)]
    );
    assert_eq!(
        f.ranges(&layout.segments_prefix()).await,
        [(1, 3), (4, 5), (6, 6)]
    );
    // The segments are the journal's exact bytes, and the digests chain.
    let d2 = Digest::parse(&f.client().get(&layout.digest_key(4, 5)).await.unwrap()).unwrap();
    assert_eq!(
        d2.previous_digest_key.as_deref(),
        Some(layout.digest_key(1, 3).as_str())
    );
    assert_eq!(f.verify(&f.path).await.unwrap(), 0);
    f.append(1).await;
    assert_eq!(
        f.verify(&f.path).await.unwrap(),
        1,
        "one record not shipped yet"
    );

    // The command an auditor runs: exit 0, and 1 with another key.
    let cfg = f.path.with_file_name("vncbot.toml");
    std::fs::write(
        &cfg,
        format!(
            "[discord]\nguild_ids = [800000000000000001]\n[tencent]\nregions = [\"ap-guangzhou\"]\n[[allow]]\nroles = [555000000000000001]\ninstances = [\"*\"]\nregions = [\"*\"]\n[audit]\npath = {:?}\n[audit.ship]\nendpoint = {:?}\nbucket = {BUCKET:?}\nprefix = \"vncbot/prod\"\nregion = \"us-east-1\"\n",
            f.path, f.moto.endpoint
        ),
    )
    .unwrap();
    let run = |key: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vncbot"))
            .args([
                "--config",
                cfg.to_str().unwrap(),
                "audit",
                "verify",
                "--remote",
                "--public-key",
                &key,
            ])
            .env("VNCBOT_SHIP_ACCESS_KEY_ID", "testing")
            .env("VNCBOT_SHIP_SECRET_ACCESS_KEY", "testing")
            .env_remove("VNCBOT_AUDIT_SIGNING_KEY")
            .output()
            .unwrap()
    };
    let out = run(f.key.public_hex());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 digest(s)"));
    let out = run(AuditKey::generate().public_hex());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("signature does not verify"));
}

#[tokio::test]
async fn an_outage_loses_nothing_and_uploads_nothing_twice() {
    let Some(f) = Fixture::start("").await else {
        return;
    };
    let relay = Relay::start(&f.moto.endpoint).await;
    let shipper = f.shipper(&relay.endpoint);
    f.append(2).await;
    relay.set_down(true);
    assert!(shipper.ship_now().await.is_err());
    assert!(shipper
        .health_detail()
        .unwrap()
        .contains("last attempt failed"));
    relay.set_down(false);
    assert_eq!(shipper.ship_now().await.unwrap(), 2);
    assert!(shipper.health_detail().is_none());
    f.append(1).await;
    relay.set_down(true);
    assert!(shipper.ship_now().await.is_err());
    f.append(1).await;
    relay.set_down(false);
    assert_eq!(shipper.ship_now().await.unwrap(), 2);

    // A segment stored before a crash, without its digest: the next start finishes it under the
    // same key rather than shipping those records again under another.
    f.append(2).await;
    let layout = f.layout();
    let whole = std::fs::read(&f.path).unwrap();
    let tail = read_segment(&f.path, (whole.len() - last_lines_len(&whole, 2)) as u64, 6)
        .unwrap()
        .unwrap();
    assert_eq!((tail.first.seq, tail.last.seq), (5, 6));
    f.client()
        .put(&layout.segment_key(5, 6), tail.bytes.clone())
        .await
        .unwrap();
    drop(shipper);
    let restarted = f.shipper(&f.moto.endpoint);
    assert_eq!(restarted.ship_now().await.unwrap(), 2);
    // The failed step was retried under its own keys (3 alone), not merged into a new range.
    let expected = [(1, 2), (3, 3), (4, 4), (5, 6)];
    assert_eq!(f.ranges(&layout.digests_prefix()).await, expected);
    assert_eq!(f.ranges(&layout.segments_prefix()).await, expected);
    assert_eq!(f.verify(&f.path).await.unwrap(), 0);
}

fn last_lines_len(bytes: &[u8], n: usize) -> usize {
    let lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
    lines[lines.len() - n..].iter().map(|l| l.len()).sum()
}

#[tokio::test]
async fn verify_remote_fails_on_a_changed_journal_another_key_or_a_deleted_digest() {
    let Some(f) = Fixture::start("tamper").await else {
        return;
    };
    let shipper = f.shipper(&f.moto.endpoint);
    for n in [2, 2, 2] {
        f.append(n).await;
        shipper.ship_now().await.unwrap();
    }
    assert_eq!(f.verify(&f.path).await.unwrap(), 0);

    // Another key.
    let other = AuditKey::generate().public();
    let err = verify_bucket(&f.client(), &f.layout(), &other)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("signature does not verify"),
        "{err}"
    );

    // A local journal truncated, or recomputed from scratch.
    let whole = std::fs::read(&f.path).unwrap();
    let truncated = f.path.with_file_name("truncated.jsonl");
    std::fs::write(
        &truncated,
        &whole[..whole.len() - last_lines_len(&whole, 3)],
    )
    .unwrap();
    match f.verify(&truncated).await {
        Err(RemoteError::Diverges { seq: 4, why }) => assert!(why.contains("truncated"), "{why}"),
        other => panic!("{other:?}"),
    }
    let recomputed = f.path.with_file_name("recomputed.jsonl");
    {
        let (j, _) = Journal::open(&recomputed).unwrap();
        let actor = Actor::Local {
            user: "mallory".into(),
        };
        for _ in 0..6 {
            j.append(Event::Denied, &actor, Entry::default())
                .await
                .unwrap();
        }
    }
    match f.verify(&recomputed).await {
        Err(RemoteError::Diverges { seq: 1, .. }) => {}
        other => panic!("{other:?}"),
    }

    // Object Lock refuses to delete the digest's locked version...
    let layout = f.layout();
    let key = layout.digest_key(3, 4);
    let url = format!("{}/{BUCKET}/{key}", f.moto.endpoint);
    let http = reqwest::Client::new();
    let versions = http
        .get(format!(
            "{}/{BUCKET}?versions&prefix={key}",
            f.moto.endpoint
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let version = versions
        .split("<VersionId>")
        .nth(1)
        .and_then(|v| v.split('<').next())
        .unwrap_or_else(|| panic!("no version in {versions}"))
        .to_owned();
    let refused = http
        .delete(format!("{url}?versionId={version}"))
        .header("authorization", AUTH)
        .send()
        .await
        .unwrap();
    assert!(
        !refused.status().is_success(),
        "a locked version was deleted"
    );
    // ...but a plain DELETE leaves a delete marker that hides it from listings (the locked
    // version stays for the record): the chain shows the gap.
    let marker = http
        .delete(&url)
        .header("authorization", AUTH)
        .send()
        .await
        .unwrap();
    assert!(marker.status().is_success());
    match verify_bucket(&f.client(), &layout, &f.key.public()).await {
        Err(RemoteError::Bucket { key, why }) => {
            assert_eq!(key, layout.digest_key(5, 6));
            assert!(why.contains("a digest was deleted"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn verify_remote_fails_on_a_replaced_digest() {
    let Some(f) = Fixture::start("replace").await else {
        return;
    };
    let shipper = f.shipper(&f.moto.endpoint);
    for n in [2, 2] {
        f.append(n).await;
        shipper.ship_now().await.unwrap();
    }
    // A new version under the same key (Object Lock keeps the old one, but GET serves the
    // newest), validly signed: the next digest names the old one's SHA-256.
    let layout = f.layout();
    let mut d = Digest::parse(&f.client().get(&layout.digest_key(1, 2)).await.unwrap()).unwrap();
    d.time = "2020-01-01T00:00:00Z".into();
    d.signature = f.key.sign_hex(&d.signed_bytes());
    assert!(d.verifies(&f.key.public()));
    f.client()
        .put(&layout.digest_key(1, 2), d.to_bytes())
        .await
        .unwrap();
    match verify_bucket(&f.client(), &layout, &f.key.public()).await {
        Err(RemoteError::Bucket { key, why }) => {
            assert_eq!(key, layout.digest_key(3, 4));
            assert!(why.contains("replaced"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

/// No bucket needed: the signed anchor the bot posts, checked by `audit verify --head`, and the
/// key commands.
#[tokio::test]
async fn a_signed_anchor_verifies_and_a_forged_one_fails() {
    let dir = support::TempDir::new("anchor");
    let path = dir.join("audit.jsonl");
    let (journal, _) = Journal::open(&path).unwrap();
    let actor = Actor::Local { user: "ops".into() };
    journal
        .append(Event::Denied, &actor, Entry::default())
        .await
        .unwrap();
    let head = journal
        .append(Event::Denied, &actor, Entry::default())
        .await
        .unwrap();
    let bin = env!("CARGO_BIN_EXE_vncbot");

    let keygen = std::process::Command::new(bin)
        .args(["audit", "keygen"])
        .output()
        .unwrap();
    assert_eq!(keygen.status.code(), Some(0));
    let text = String::from_utf8(keygen.stdout).unwrap();
    let private = text
        .lines()
        .find_map(|l| l.strip_prefix("VNCBOT_AUDIT_SIGNING_KEY="))
        .unwrap()
        .to_owned();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .unwrap()
        .to_owned();
    let pubkey = std::process::Command::new(bin)
        .args(["audit", "pubkey"])
        .env("VNCBOT_AUDIT_SIGNING_KEY", &private)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(pubkey.stdout).unwrap().trim(), public);

    let key = AuditKey::from_hex(&private).unwrap();
    let sig = key.sign_hex(&vncbot::ship::head_message(&head));
    let line = vncbot::discord::messages::anchor_line(&head, Some(&sig));
    assert!(line.contains(&format!("signature {sig}")), "{line}");
    let verify = |anchor: String, key: &str| {
        std::process::Command::new(bin)
            .args(["audit", "verify", "--head", &anchor, "--public-key", key])
            .arg(&path)
            .env_remove("VNCBOT_AUDIT_SIGNING_KEY")
            .output()
            .unwrap()
            .status
            .code()
    };
    let anchor = format!("{}:{}:{sig}", head.seq, head.hash);
    assert_eq!(verify(anchor.clone(), &public), Some(0));
    assert_eq!(verify(anchor, &AuditKey::generate().public_hex()), Some(1));
    // A line copied with another seq keeps a signature that no longer fits.
    assert_eq!(verify(format!("1:{}:{sig}", head.hash), &public), Some(1));
    // The unsigned form still works without a key.
    let plain = vncbot::discord::messages::anchor_line(&head, None);
    assert!(!plain.contains("signature"));
    assert_eq!(
        std::process::Command::new(bin)
            .args([
                "audit",
                "verify",
                "--head",
                &format!("{}:{}", head.seq, head.hash)
            ])
            .arg(&path)
            .status()
            .unwrap()
            .code(),
        Some(0)
    );
}
