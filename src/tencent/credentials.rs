//! Tencent Cloud API credentials. They come from the environment only (the config reads them:
//! [`crate::config`]), never from the config file, and never show in full.

use std::fmt;

use secrecy::SecretString;

use crate::text::mask;

/// Tencent Cloud API credentials, from the environment only (the names Tencent's SDKs use).
#[derive(Clone)]
pub struct TencentCredentials {
    pub secret_id: String,
    pub secret_key: SecretString,
    pub session_token: Option<SecretString>,
}

impl fmt::Debug for TencentCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TencentCredentials")
            .field("secret_id", &mask(&self.secret_id))
            .field("secret_key", &"[redacted]")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = TencentCredentials {
            secret_id: "AKIDexampleexample".into(),
            secret_key: "topsecretvalue".to_string().into(),
            session_token: Some("tokenvalue".to_string().into()),
        };
        let d = format!("{c:?}");
        assert!(
            !d.contains("topsecretvalue")
                && !d.contains("tokenvalue")
                && !d.contains("AKIDexampleexample"),
            "{d}"
        );
    }
}
