//! At start: the config checked against PagerDuty (each escalation policy, each mapped user),
//! the first on-call answer fetched, and the background refresh started.
//!
//! A key PagerDuty refuses, or a policy it does not know, stops the bot with one clear line: no
//! on-call rule could ever match. A mapped user it does not know is a warning naming the Discord
//! member and the key (that member is never on call). PagerDuty down at start is a warning too:
//! the bot starts with nobody on call and the refresh keeps trying.

use std::sync::Arc;

use secrecy::SecretString;

use super::{OnCallCache, OnCallConfig, PagerDuty, PagerDutyError};
use crate::clock::Clock;
use crate::metrics::Metrics;

/// Why the bot cannot start with this `[oncall]`.
#[derive(Debug, thiserror::Error)]
pub enum OnCallStartError {
    #[error("[oncall]: {0}")]
    Refused(PagerDutyError),
    #[error("oncall.escalation_policy_ids[{index}]: PagerDuty knows no escalation policy {id:?} (404): copy the ID from the policy's page (its URL ends with it), or remove it")]
    UnknownPolicy { index: usize, id: String },
    #[error("cannot set up the PagerDuty client: {0}")]
    Http(#[from] reqwest::Error),
}

/// What start-up found: warnings an operator should read (also logged).
#[derive(Debug, Default)]
pub struct Checked {
    pub warnings: Vec<String>,
}

fn fatal(e: &PagerDutyError) -> bool {
    matches!(e, PagerDutyError::Unauthorized | PagerDutyError::Forbidden)
}

/// Checks the config against PagerDuty, fills the cache once and starts its refresh.
pub async fn start(
    config: &OnCallConfig,
    token: &SecretString,
    clock: Clock,
    metrics: Arc<Metrics>,
) -> Result<(Arc<OnCallCache>, Checked), OnCallStartError> {
    let client = PagerDuty::new(config, token)?;
    let checked = check(&client, config).await?;
    let cache = Arc::new(OnCallCache::new(config.clone(), clock).with_metrics(metrics));
    let wait = cache.refresh_once(&client).await;
    cache.spawn_refresher(client, wait);
    Ok((cache, checked))
}

/// `GET /escalation_policies/{id}` for each policy and `GET /users/{id}` for each mapped user.
pub async fn check(client: &PagerDuty, config: &OnCallConfig) -> Result<Checked, OnCallStartError> {
    let mut checked = Checked::default();
    let mut warn = |line: String| {
        tracing::warn!("{line}");
        checked.warnings.push(line);
    };
    for (index, id) in config.escalation_policy_ids.iter().enumerate() {
        match client.policy_exists(id).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(OnCallStartError::UnknownPolicy {
                    index,
                    id: id.clone(),
                })
            }
            Err(e) if fatal(&e) => return Err(OnCallStartError::Refused(e)),
            Err(e) => {
                warn(format!("[oncall]: could not check escalation policy {id} at start ({e}); nobody counts as on call until PagerDuty answers"));
                // PagerDuty is down: the users cannot be checked either.
                return Ok(checked);
            }
        }
    }
    for (discord, pd) in &config.users {
        match client.user_exists(pd).await {
            Ok(true) => {}
            Ok(false) => warn(format!(
                "oncall.users.\"{discord}\": PagerDuty knows no user {pd:?} (404), so Discord member {discord} will never count as on call: copy the user ID from their PagerDuty profile URL"
            )),
            Err(e) if fatal(&e) => return Err(OnCallStartError::Refused(e)),
            Err(PagerDutyError::RateLimited(reset)) => {
                warn(format!("[oncall]: PagerDuty rate limited the start-up check of [oncall.users]; the rest is not checked ({} s to wait)", reset.as_secs()));
                return Ok(checked);
            }
            Err(e) => warn(format!(
                "oncall.users.\"{discord}\": could not check PagerDuty user {pd} at start ({e})"
            )),
        }
    }
    Ok(checked)
}
