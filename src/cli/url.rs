//! `vncbot url`: one fresh link on stdout, through the same core, limits and audit as the bot.

use std::path::Path;

use vncbot::audit::Actor;
use vncbot::clock::Clock;
use vncbot::config::{Config, TencentCredentials};
use vncbot::core::{Authority, Outcome, Request};

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
        let core = match vncbot::app::build_core(&config, creds, Clock::system()) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::Audit;
            }
        };
        // A name (not an ID): the catalog resolves it, so list the instances first.
        if !vncbot::core::decision::looks_like_id(&instance) {
            core.refresh_catalog().await;
        }
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
                if let Err(e) = core
                    .record_delivery(&actor, &issued, &Outcome::Delivered)
                    .await
                {
                    eprintln!(
                        "error: the link was minted but cannot be audited, so it is withheld: {e}"
                    );
                    return Exit::Audit;
                }
                // A closed stdout (a pipe that went away) must not panic after `delivered`.
                let printed = {
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "{}", issued.url.expose_link()).and_then(|()| out.flush())
                };
                if let Err(e) = printed {
                    eprintln!(
                        "error: could not print the link ({}); it is discarded: run again",
                        e.kind()
                    );
                    // The journal said `delivered`; say what really became of it.
                    let _ = core
                        .record_delivery(&actor, &issued, &Outcome::NotPrinted)
                        .await;
                    return Outcome::NotPrinted.exit();
                }
                let until = vncbot::link::utc_clock(issued.expires_at);
                eprintln!(
                    "Console link for {} ({}): works once, until {until}. Tencent RequestId {}.",
                    issued.instance, issued.region, issued.request_id
                );
                Exit::Ok
            }
            Err(refusal) => {
                eprintln!("error: {}", super::refusals::say(&refusal));
                refusal.outcome().exit()
            }
        }
    })
}
