//! `vncbot audit keygen` and `vncbot audit pubkey`: the Ed25519 key that signs the shipped
//! digests and the journal-head anchors.

use secrecy::ExposeSecret;
use vncbot::ship::{AuditKey, SIGNING_KEY_ENV};

use super::Exit;

/// Prints a new key pair: the private key for `VNCBOT_AUDIT_SIGNING_KEY`, and its public key
/// for auditors.
pub fn keygen() -> Exit {
    let key = AuditKey::generate();
    println!(
        "# Keep the private key secret: set it as {SIGNING_KEY_ENV} for the bot only.\n{SIGNING_KEY_ENV}={}\n# Give the public key to auditors: vncbot audit verify --remote --public-key KEY\npublic key: {}",
        key.private_hex().expose_secret(),
        key.public_hex()
    );
    Exit::Ok
}

/// Prints the public half of the key in `VNCBOT_AUDIT_SIGNING_KEY`.
pub fn pubkey() -> Exit {
    match AuditKey::from_env() {
        Ok(Some(key)) => {
            println!("{}", key.public_hex());
            Exit::Ok
        }
        Ok(None) => {
            eprintln!("error: {}", vncbot::ship::KeyError::Missing);
            Exit::Config
        }
        Err(e) => {
            eprintln!("error: {SIGNING_KEY_ENV}: {e}");
            Exit::Config
        }
    }
}

/// The public key to check signatures with: `--public-key`, else the configured signing key's.
pub fn public_key(given: Option<&str>) -> Result<vncbot::ship::PublicKey, String> {
    match given {
        Some(text) => vncbot::ship::PublicKey::from_hex(text).map_err(|e| format!("--public-key: {e}")),
        None => match AuditKey::from_env() {
            Ok(Some(key)) => Ok(key.public()),
            Ok(None) => Err(format!(
                "give the bot's public key with --public-key (or set {SIGNING_KEY_ENV} on the bot's host)"
            )),
            Err(e) => Err(format!("{SIGNING_KEY_ENV}: {e}")),
        },
    }
}
