//! `vncbot run`: the Discord bot.

use std::path::Path;

use super::Exit;

pub fn main(config_path: &Path) -> Exit {
    match vncbot::app::run_from_path(config_path) {
        Ok(()) => Exit::Ok,
        Err(vncbot::app::RunError::Start(vncbot::app::StartError::Audit(e))) => {
            eprintln!("error: {e}");
            Exit::Audit
        }
        Err(e @ vncbot::app::RunError::AnchorMismatch(_)) => {
            eprintln!("error: {e}");
            Exit::Audit
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Config
        }
    }
}
