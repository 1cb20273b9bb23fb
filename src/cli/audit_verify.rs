//! `vncbot audit verify [--head SEQ:HASH] [FILE]`: walks the journal's hash chain, and checks it
//! still holds a head anchored outside the file.

use std::path::{Path, PathBuf};

use vncbot::audit::{verify_file_anchored, Appended, GENESIS};
use vncbot::config::Config;

use super::Exit;

/// `--head SEQ:HASH[:SIG]`: a posted anchor, with its signature when the bot has a signing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub head: Appended,
    pub signature: Option<String>,
}

pub fn main(
    config_path: &Path,
    file: Option<PathBuf>,
    anchor: Option<Anchor>,
    public_key: Option<&str>,
) -> Exit {
    if let Some(Anchor {
        head,
        signature: Some(sig),
    }) = &anchor
    {
        let public = match super::audit_keys::public_key(public_key) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: the anchor is signed: {e}");
                return Exit::Config;
            }
        };
        if !public.verifies(&vncbot::ship::head_message(head), sig) {
            eprintln!("the anchor seq {} is FORGED or copied: its signature does not verify with the public key {}", head.seq, public.to_hex());
            return Exit::Refused;
        }
    }
    let head = anchor.map(|a| a.head);
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
    match verify_file_anchored(&path, head.as_ref()) {
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            Exit::Config
        }
        Ok(Ok(s)) => {
            let anchored = head
                .map(|h| format!("; holds the anchored head seq {}", h.seq))
                .unwrap_or_default();
            println!(
                "{}: intact, {} records (seq 1 to {}), first {}, last {}, {} sealed torn line(s){anchored}; head hash {}",
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

/// Parses `--head SEQ:HASH[:SIG]`, as the bot posts it (the signature when it has a key).
pub fn parse_anchor(value: &str) -> Result<Anchor, String> {
    let mut parts = value.splitn(3, ':');
    let (seq, hash) = (parts.next().unwrap_or(""), parts.next());
    let head = parse_head(&format!("{seq}:{}", hash.unwrap_or(""))).map_err(|e| {
        if hash.is_none() {
            parse_head(value).unwrap_err()
        } else {
            e
        }
    })?;
    let signature = match parts.next() {
        None => None,
        Some(sig) if sig.len() == 128 && sig.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(sig.to_ascii_lowercase())
        }
        Some(_) => {
            return Err(
                "the SIG part is not 128 hex digits (an Ed25519 signature as the bot posts it)"
                    .into(),
            )
        }
    };
    Ok(Anchor { head, signature })
}

/// Parses `--head SEQ:HASH`, as the bot posts it (`journal head: seq N, sha256 HASH`).
pub fn parse_head(value: &str) -> Result<Appended, String> {
    let usage = "expected SEQ:HASH, a record number and its 64-hex-digit sha256, as the bot posts the journal head";
    let (seq, hash) = value.split_once(':').ok_or(usage)?;
    let Ok(seq) = seq.trim().parse::<u64>() else {
        return Err(format!("{usage}; the SEQ part is not a record number"));
    };
    let hash = hash.trim().to_ascii_lowercase();
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{usage}; the HASH part is not 64 hex digits"));
    }
    // Seq 0 is the empty journal's head, as the bot anchors it before the first record: every
    // journal holds it, with the chain's starting hash.
    if seq == 0 && hash != GENESIS {
        return Err(format!(
            "{usage}; the SEQ part 0 is the empty journal, whose hash is {GENESIS}"
        ));
    }
    Ok(Appended { seq, hash })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_parses_and_a_malformed_one_says_which_part_is_wrong() {
        let hash = "AB".repeat(32);
        assert_eq!(
            parse_head(&format!("42:{hash}")).unwrap(),
            Appended {
                seq: 42,
                hash: hash.to_ascii_lowercase()
            }
        );
        assert!(parse_head("42")
            .unwrap_err()
            .starts_with("expected SEQ:HASH"));
        assert!(parse_head(&format!("x:{hash}"))
            .unwrap_err()
            .contains("SEQ part"));
        assert!(parse_head(&format!("0:{hash}"))
            .unwrap_err()
            .contains("SEQ part"));
        assert!(parse_head("42:abc").unwrap_err().contains("HASH part"));
        // The empty journal's head, as the bot anchors it before the first record.
        let empty = vncbot::discord::messages::anchor_line(
            &Appended {
                seq: 0,
                hash: GENESIS.to_owned(),
            },
            None,
        );
        let suggested = empty
            .split("--head ")
            .nth(1)
            .unwrap()
            .trim_end_matches(['`', ')']);
        assert_eq!(
            parse_head(suggested).unwrap(),
            Appended {
                seq: 0,
                hash: GENESIS.to_owned()
            }
        );
    }
}
