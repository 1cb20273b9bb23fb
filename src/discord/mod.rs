//! The Discord adapter.

use std::path::Path;

pub fn run_from_path(_config: &Path) -> Result<(), String> {
    Err("the Discord bot is not wired up yet".into())
}
