//! `vncbot audit verify --remote [--public-key KEY] [FILE]`: checks the digests and segments
//! shipped to `[audit.ship]`'s bucket, then the local journal against them. Needs only List and
//! Get on the bucket (`VNCBOT_SHIP_ACCESS_KEY_ID`, `VNCBOT_SHIP_SECRET_ACCESS_KEY`), no bot.

use std::path::{Path, PathBuf};
use std::time::Instant;

use vncbot::config::Config;
use vncbot::ship::digest::Layout;
use vncbot::ship::s3::{S3Client, S3Credentials, S3Error};
use vncbot::ship::verify::{compare_local, verify_bucket, RemoteError};

use super::Exit;

pub fn main(config_path: &Path, file: Option<PathBuf>, public_key: Option<&str>) -> Exit {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Config;
        }
    };
    let Some(ship) = config.audit.ship else {
        eprintln!(
            "error: {} has no [audit.ship] section: --remote reads the bucket it names",
            config_path.display()
        );
        return Exit::Config;
    };
    let public = match super::audit_keys::public_key(public_key) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Config;
        }
    };
    let creds = match S3Credentials::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Config;
        }
    };
    let path = file.unwrap_or(config.audit.path);
    let client = S3Client::new(ship.bucket(), creds);
    let layout = Layout::new(&ship.prefix);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let started = Instant::now();
    let result = runtime.block_on(verify_bucket(&client, &layout, &public));
    let (remote, shipped) = match result {
        Ok(r) => r,
        Err(e) => return fail(&e),
    };
    println!(
        "bucket {} prefix {:?}: intact, {} digest(s) signed by {}, {} bytes, records 1 to {} (head sha256 {}), checked in {:.1} s",
        ship.bucket,
        ship.prefix,
        remote.digests,
        public.to_hex(),
        remote.bytes,
        remote.head.seq,
        remote.head.hash,
        started.elapsed().as_secs_f64()
    );
    match compare_local(&path, &remote, &shipped) {
        Ok(local) => {
            println!(
                "{}: matches the bucket up to seq {}, and {} record(s) after it are not shipped yet",
                path.display(),
                remote.head.seq,
                local.unshipped
            );
            Exit::Ok
        }
        Err(RemoteError::Io(e)) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            Exit::Config
        }
        Err(e) => {
            eprintln!("{}: DIVERGES: {e}", path.display());
            Exit::Refused
        }
    }
}

fn fail(e: &RemoteError) -> Exit {
    match e {
        RemoteError::Store(S3Error::Network { .. }) => {
            eprintln!("error: {e}");
            Exit::Temporary
        }
        RemoteError::Store(S3Error::Status { status, .. }) if status.is_server_error() => {
            eprintln!("error: {e}");
            Exit::Temporary
        }
        RemoteError::Store(_) | RemoteError::Io(_) => {
            eprintln!(
                "error: {e} (check [audit.ship] and the credentials' List and Get permissions)"
            );
            Exit::Config
        }
        RemoteError::Bucket { .. } | RemoteError::Diverges { .. } => {
            eprintln!("DAMAGED: {e}");
            Exit::Refused
        }
    }
}
