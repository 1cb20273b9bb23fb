//! The Ed25519 key that signs digests and journal-head anchors.
//!
//! Keys are written as hex, like every hash in the journal: the private key is the 32-byte seed
//! (64 hex digits, in `VNCBOT_AUDIT_SIGNING_KEY`), the public key its 32-byte point (64 hex
//! digits), a signature 64 bytes (128 hex digits).

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use secrecy::{ExposeSecret, SecretString};

/// The environment variable that holds the private key.
pub const SIGNING_KEY_ENV: &str = "VNCBOT_AUDIT_SIGNING_KEY";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{SIGNING_KEY_ENV} is not set: create a key with `vncbot audit keygen` and set the private key it prints")]
    Missing,
    #[error(
        "{what} is not 64 hex digits (a 32-byte Ed25519 key as `vncbot audit keygen` prints it)"
    )]
    Malformed { what: &'static str },
    #[error("the public key is not a valid Ed25519 point")]
    BadPoint,
}

/// The private key. Its `Debug` never prints the key.
pub struct AuditKey(SigningKey);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey(public {})", self.public_hex())
    }
}

impl AuditKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).expect("the operating system provides random bytes");
        let key = Self(SigningKey::from_bytes(&seed));
        seed.fill(0);
        key
    }

    /// Parses the hex seed.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = hex32(text, "the signing key")?;
        Ok(Self(SigningKey::from_bytes(&bytes)))
    }

    /// The key in `VNCBOT_AUDIT_SIGNING_KEY`, or `None` when the variable is unset or empty.
    pub fn from_env() -> Result<Option<Self>, KeyError> {
        match std::env::var(SIGNING_KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => {
                let secret = SecretString::from(v);
                Self::from_hex(secret.expose_secret()).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The private key as `keygen` prints it (only `keygen` calls this).
    pub fn private_hex(&self) -> SecretString {
        SecretString::from(hex::encode(self.0.to_bytes()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    pub fn public_hex(&self) -> String {
        self.public().to_hex()
    }

    /// The signature of `message`, as hex.
    pub fn sign_hex(&self, message: &[u8]) -> String {
        hex::encode(self.0.sign(message).to_bytes())
    }
}

/// A public key, to check signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = hex32(text, "the public key")?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| KeyError::BadPoint)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    /// Whether `signature_hex` is this key's signature of `message` (strict: no malleable or
    /// small-order forms).
    pub fn verifies(&self, message: &[u8], signature_hex: &str) -> bool {
        let Ok(bytes) = hex::decode(signature_hex.trim()) else {
            return false;
        };
        let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
            return false;
        };
        let signature = Signature::from_bytes(&bytes);
        self.0.verify_strict(message, &signature).is_ok()
            && self.0.verify(message, &signature).is_ok()
    }
}

fn hex32(text: &str, what: &'static str) -> Result<[u8; 32], KeyError> {
    let bytes = hex::decode(text.trim()).map_err(|_| KeyError::Malformed { what })?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| KeyError::Malformed { what })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_through_hex_and_signs_what_its_public_half_verifies() {
        let key = AuditKey::generate();
        let again = AuditKey::from_hex(key.private_hex().expose_secret()).unwrap();
        assert_eq!(again.public_hex(), key.public_hex());
        let public = PublicKey::from_hex(&key.public_hex()).unwrap();
        let sig = key.sign_hex(b"message");
        assert_eq!(sig.len(), 128);
        assert!(public.verifies(b"message", &sig));
        assert!(!public.verifies(b"messagE", &sig));
        assert!(!public.verifies(b"message", "00"));
        let other = AuditKey::generate().public();
        assert!(!other.verifies(b"message", &sig));
        assert!(!format!("{key:?}").contains(key.private_hex().expose_secret()));
    }

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 section 7.1, TEST 1 (empty message).
        let key =
            AuditKey::from_hex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap();
        assert_eq!(
            key.public_hex(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(key.sign_hex(b""), "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b");
    }

    #[test]
    fn malformed_keys_say_what_is_wrong() {
        assert_eq!(
            AuditKey::from_hex("abc").unwrap_err(),
            KeyError::Malformed {
                what: "the signing key"
            }
        );
        assert!(PublicKey::from_hex(&"zz".repeat(32)).is_err());
    }
}
