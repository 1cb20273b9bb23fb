//! Secrets, from the environment only (never the config file): the Tencent credentials and the
//! Discord token.

use secrecy::SecretString;

use crate::tencent::TencentCredentials;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{0} is not set: export it before starting vncbot ({1})")]
    Missing(&'static str, &'static str),
    #[error("{0} is set but empty: give it a value ({1})")]
    Empty(&'static str, &'static str),
    #[error(
        "{0} has spaces or line breaks at its ends or inside: copy the value again without them"
    )]
    Whitespace(&'static str),
    #[error("{0} is not valid Unicode: copy the value again")]
    NotUnicode(&'static str),
}

pub const SECRET_ID: &str = "TENCENTCLOUD_SECRET_ID";
pub const SECRET_KEY: &str = "TENCENTCLOUD_SECRET_KEY";
pub const SESSION_TOKEN: &str = "TENCENTCLOUD_SESSION_TOKEN";
pub const DISCORD_TOKEN: &str = "DISCORD_TOKEN";

fn env_var(
    name: &'static str,
    what: &'static str,
    required: bool,
) -> Result<Option<String>, EnvError> {
    match std::env::var(name) {
        Ok(v) if v.is_empty() && required => Err(EnvError::Empty(name, what)),
        Ok(v) if v.is_empty() => Ok(None),
        Ok(v) if v.chars().any(char::is_whitespace) => Err(EnvError::Whitespace(name)),
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) if required => Err(EnvError::Missing(name, what)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(EnvError::NotUnicode(name)),
    }
}

impl TencentCredentials {
    pub fn from_env() -> Result<Self, EnvError> {
        let secret_id = env_var(
            SECRET_ID,
            "the API key's SecretId, from the CAM console",
            true,
        )?
        .expect("required");
        let secret_key = env_var(
            SECRET_KEY,
            "the API key's SecretKey, from the CAM console",
            true,
        )?
        .expect("required");
        let session_token = env_var(SESSION_TOKEN, "only for temporary credentials", false)?;
        Ok(Self {
            secret_id,
            secret_key: secret_key.into(),
            session_token: session_token.map(Into::into),
        })
    }
}

/// The Discord bot token, from the environment only.
pub fn discord_token_from_env() -> Result<SecretString, EnvError> {
    let token = env_var(
        DISCORD_TOKEN,
        "the bot token from the Discord developer portal, Bot tab",
        true,
    )?
    .expect("required");
    Ok(token.into())
}

pub const PAGERDUTY_TOKEN: &str = crate::oncall::PAGERDUTY_TOKEN;

/// The PagerDuty REST API key, from the environment only (needed when `[oncall]` is set).
pub fn pagerduty_token_from_env() -> Result<SecretString, EnvError> {
    let token = env_var(
        PAGERDUTY_TOKEN,
        "a PagerDuty REST API key for [oncall]; a read-only key is enough: Integrations > API Access Keys",
        true,
    )?
    .expect("required");
    Ok(token.into())
}
