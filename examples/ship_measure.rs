//! Figures for shipping the journal, against moto's S3 server (`VNCBOT_MOTO_SERVER`):
//! upload cost per 1,000 records, and how long `verify --remote` takes on 1,000 segments.
//!
//! VNCBOT_MOTO_SERVER=/path/to/venv/bin/moto_server cargo run --release --example ship_measure

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Instant;

use reqwest::Url;
use secrecy::SecretString;
use vncbot::audit::{Actor, Entry, Event, Journal};
use vncbot::ship::digest::Layout;
use vncbot::ship::s3::{S3Client, S3Credentials};
use vncbot::ship::verify::{compare_local, verify_bucket};
use vncbot::ship::{AuditKey, ShipConfig, Shipper};

fn creds() -> S3Credentials {
    S3Credentials {
        access_key_id: "testing".into(),
        secret_access_key: SecretString::from("testing"),
    }
}

#[tokio::main]
async fn main() {
    let moto = support::moto::start()
        .await
        .expect("set VNCBOT_MOTO_SERVER");
    moto.locked_bucket("measure").await;
    let key = Arc::new(AuditKey::generate());
    for (prefix, per_segment) in [("one", 1000usize), ("many", 1)] {
        let dir = support::TempDir::new("ship-measure");
        let path = dir.join("audit.jsonl");
        let (journal, _) = Journal::open(&path).unwrap();
        let config = ShipConfig {
            endpoint: Url::parse(&moto.endpoint).unwrap(),
            bucket: "measure".into(),
            prefix: prefix.into(),
            region: "us-east-1".into(),
            segment_minutes: 60,
        };
        let shipper = Shipper::new(&config, creds(), Arc::clone(&key), journal.clone(), &path);
        let actor = Actor::Discord {
            id: 800000000000000001,
            name: "alice".into(),
        };
        let started = Instant::now();
        for i in 0..1000 {
            let entry = Entry {
                guild: Some(800000000000000002),
                instance: Some(format!("ins-{i:08x}")),
                region: Some("ap-guangzhou".into()),
                reason: Some("INC-1234 disk full on the primary".into()),
                rule: Some(0),
                ..Entry::default()
            };
            journal.append(Event::Granted, &actor, entry).await.unwrap();
            if (i + 1) % per_segment == 0 {
                shipper.ship_now().await.unwrap();
            }
        }
        let ship_time = started.elapsed();
        let client = S3Client::new(config.bucket(), creds());
        let layout = Layout::new(prefix);
        let mut bytes = [0u64; 2];
        let mut count = [0usize; 2];
        for (i, p) in [layout.segments_prefix(), layout.digests_prefix()]
            .iter()
            .enumerate()
        {
            for k in client.list(p).await.unwrap() {
                bytes[i] += client.get(&k).await.unwrap().len() as u64;
                count[i] += 1;
            }
        }
        println!(
            "1,000 records, {per_segment} per segment: {} segment(s) {} bytes, {} digest(s) {} bytes, {} PUTs (shipped in {:.1} s)",
            count[0],
            bytes[0],
            count[1],
            bytes[1],
            count[0] + count[1],
            ship_time.as_secs_f64()
        );
        let started = Instant::now();
        let (remote, shipped) = verify_bucket(&client, &layout, &key.public())
            .await
            .unwrap();
        compare_local(&path, &remote, &shipped).unwrap();
        println!(
            "  verify --remote over {} digest(s): {:.2} s (1 LIST page per 1,000 keys, 2 GETs per segment)",
            remote.digests,
            started.elapsed().as_secs_f64()
        );
    }
}
