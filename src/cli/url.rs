//! `vncbot url`: one fresh link on stdout, through the same core, limits and audit as the bot.

use std::path::Path;
use std::time::UNIX_EPOCH;

use vncbot::audit::Actor;
use vncbot::config::{Config, TencentCredentials};
use vncbot::grant::{Authority, Core, Refusal, Request};
use vncbot::tencent::{ApiErrorKind, TencentError};

use super::Exit;

pub fn main(
    config_path: &Path,
    instance: String,
    region: Option<String>,
    reason: Option<String>,
) -> Exit {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            super::init_logging("warn", Default::default());
            eprintln!("error: {e}");
            return Exit::Config;
        }
    };
    super::init_logging("warn", config.log.format);
    let creds = match TencentCredentials::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Config;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts");
    runtime.block_on(async {
        let core = match Core::from_config(&config, creds) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Audit;
            }
        };
        let actor = Actor::local();
        let request = Request {
            actor: actor.clone(),
            authority: Authority::LocalCredentials,
            guild: None,
            channel: None,
            instance,
            region,
            reason,
        };
        match core.handle(request).await {
            Ok(issued) => {
                // Printing it is delivering it; record that before the link leaves the process.
                if let Err(e) = core.record_delivery(&actor, &issued, None).await {
                    eprintln!(
                        "error: the link was minted but cannot be audited, so it is withheld: {e}"
                    );
                    return Exit::Audit;
                }
                println!("{}", issued.url.expose_link());
                let until = time::OffsetDateTime::from_unix_timestamp(
                    issued
                        .expires_at
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64),
                )
                .map(|t| format!("{:02}:{:02}:{:02} UTC", t.hour(), t.minute(), t.second()))
                .unwrap_or_default();
                eprintln!(
                    "Console link for {} ({}): works once, until {until}. Tencent RequestId {}.",
                    issued.instance, issued.region, issued.request_id
                );
                Exit::Ok
            }
            Err(refusal) => {
                eprintln!("error: {refusal}");
                exit_for(&refusal)
            }
        }
    })
}

fn exit_for(r: &Refusal) -> Exit {
    match r {
        Refusal::BadInstance(_)
        | Refusal::BadRegion { .. }
        | Refusal::RegionNotServed(..)
        | Refusal::ReasonRequired
        | Refusal::ReasonTooShort
        | Refusal::ReasonTooLong => Exit::BadInput,
        Refusal::Denied { .. } | Refusal::Limited(_) => Exit::Denied,
        Refusal::AuditUnavailable(_) => Exit::Audit,
        Refusal::Tencent { error, .. } => match error.as_ref() {
            TencentError::Api {
                kind: ApiErrorKind::Credentials | ApiErrorKind::Other,
                ..
            }
            | TencentError::Signing(_) => Exit::Config,
            e if e.is_transient() => Exit::Temporary,
            TencentError::QueueFull { .. } => Exit::Temporary,
            _ => Exit::Refused,
        },
    }
}
