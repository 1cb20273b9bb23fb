//! `vncbot audit verify [FILE]`: walks the journal's hash chain.

use std::path::{Path, PathBuf};

use vncbot::audit::verify_file;
use vncbot::config::Config;

use super::Exit;

pub fn main(config_path: &Path, file: Option<PathBuf>) -> Exit {
    let path = match file {
        Some(f) => f,
        None => match Config::load(config_path) {
            Ok(c) => c.audit.path,
            Err(e) => {
                eprintln!("error: {e}\n(or name the journal file: vncbot audit verify FILE)");
                return Exit::Config;
            }
        },
    };
    match verify_file(&path) {
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            Exit::Config
        }
        Ok(Ok(s)) => {
            println!(
                "{}: intact, {} records (seq 1 to {}), first {}, last {}, {} sealed torn line(s); head hash {}",
                path.display(),
                s.records,
                s.last_seq,
                s.first_time.as_deref().unwrap_or("-"),
                s.last_time.as_deref().unwrap_or("-"),
                s.sealed,
                s.last_hash
            );
            Exit::Ok
        }
        Ok(Err(e)) => {
            eprintln!("{}: DAMAGED at {e}", path.display());
            Exit::Refused
        }
    }
}
