//! `vncbot run`: the Discord bot.

use std::path::Path;

use super::Exit;

pub fn main(config_path: &Path) -> Exit {
    match vncbot::discord::run_from_path(config_path) {
        Ok(()) => Exit::Ok,
        Err(vncbot::discord::RunError::Start(vncbot::grant::StartError::Audit(e))) => {
            eprintln!("error: {e}");
            Exit::Audit
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Config
        }
    }
}
