//! At start, the journal is held against the head the bot last witnessed in the audit channel
//! (its own most recent `journal head` line): a journal truncated, rewritten or replaced since
//! no longer holds that seq with that hash, and the bot refuses to start on it (exit 6) unless
//! `[audit] on_anchor_mismatch = "warn"`.
//!
//! What it guarantees: a journal that lost or changed records up to the last anchor is caught at
//! the next start, before new records reuse its sequence numbers. What it does not: records
//! after the last anchor are not witnessed; someone who can also post as the bot (its token)
//! can post a matching anchor; and when Discord cannot be read at start the check is skipped
//! with a warning (the bot still starts).

use serenity::all::{ChannelId, GetMessages, Http, MessageId};

use crate::audit::Journal;
use crate::config::OnAnchorMismatch;

/// How far back the audit channel is searched for the bot's last anchor.
const PAGES: usize = 10;
const PAGE: u8 = 100;

/// The journal does not hold the head last anchored in the audit channel.
#[derive(Debug, thiserror::Error)]
#[error("the audit journal does not match the last head anchored in the audit channel: expected seq {seq} with sha256 {hash}, found {found}. Inspect it with `vncbot audit verify --head {seq}:{hash}`; if the journal was restored on purpose, set [audit] on_anchor_mismatch = \"warn\" to start anyway")]
pub struct AnchorMismatch {
    pub seq: u64,
    pub hash: String,
    pub found: String,
}

/// `journal head: seq N, sha256 H…` → (N, H).
pub fn parse_anchor(text: &str) -> Option<(u64, String)> {
    let rest = text.strip_prefix("journal head: seq ")?;
    let (seq, rest) = rest.split_once(", sha256 ")?;
    let hash: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    (hash.len() == 64).then_some((seq.parse().ok()?, hash))
}

/// The bot's own most recent anchor in `channel`, if any.
async fn last_anchor(http: &Http, channel: u64) -> serenity::Result<Option<(u64, String)>> {
    let me = http.get_current_user().await?.id;
    let channel = ChannelId::new(channel);
    let mut before: Option<MessageId> = None;
    for _ in 0..PAGES {
        let mut ask = GetMessages::new().limit(PAGE);
        if let Some(b) = before {
            ask = ask.before(b);
        }
        let page = channel.messages(http, ask).await?;
        // Newest first: the first of the bot's anchors is its last.
        if let Some(found) = page
            .iter()
            .filter(|m| m.author.id == me)
            .find_map(|m| parse_anchor(&m.content))
        {
            return Ok(Some(found));
        }
        match page.last() {
            Some(oldest) if page.len() == usize::from(PAGE) => before = Some(oldest.id),
            _ => break,
        }
    }
    Ok(None)
}

/// Whether the journal still holds `seq` with `hash`; what it holds instead if not.
pub fn check(journal: &Journal, seq: u64, hash: &str) -> Result<(), String> {
    // The head of an empty journal: every journal begins there.
    if seq == 0 {
        return if hash == crate::audit::GENESIS {
            Ok(())
        } else {
            Err(format!("seq 0 is the genesis {}", crate::audit::GENESIS))
        };
    }
    let head = journal.head();
    if head.seq < seq {
        return Err(format!(
            "the journal ends at seq {} (sha256 {}): truncated or replaced",
            head.seq, head.hash
        ));
    }
    if seq == head.seq {
        return if head.hash == hash {
            Ok(())
        } else {
            Err(format!("seq {seq} has sha256 {}", head.hash))
        };
    }
    match journal.records_after(seq.saturating_sub(1)) {
        Ok(records) => match records.first() {
            Some(r) if r.seq == seq && r.hash == hash => Ok(()),
            Some(r) if r.seq == seq => Err(format!("seq {seq} has sha256 {}", r.hash)),
            _ => Err(format!("no record with seq {seq}")),
        },
        Err(e) => Err(format!("seq {seq} could not be read back: {e}")),
    }
}

/// The check at start. Discord unreadable: a warning, and the bot starts.
pub async fn check_at_start(
    http: &Http,
    channel: u64,
    journal: &Journal,
    on_mismatch: OnAnchorMismatch,
) -> Result<(), AnchorMismatch> {
    let (seq, hash) = match last_anchor(http, channel).await {
        Ok(Some(anchor)) => anchor,
        Ok(None) => {
            tracing::info!("no journal head anchored in the audit channel yet; nothing to check");
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read the last journal head anchored in the audit channel; the journal was not checked against it");
            return Ok(());
        }
    };
    match check(journal, seq, &hash) {
        Ok(()) => {
            tracing::info!(
                seq,
                "the journal holds the head last anchored in the audit channel"
            );
            Ok(())
        }
        Err(found) => {
            let mismatch = AnchorMismatch { seq, hash, found };
            match on_mismatch {
                OnAnchorMismatch::Refuse => Err(mismatch),
                OnAnchorMismatch::Warn => {
                    tracing::error!(%mismatch, "STARTING ANYWAY (audit.on_anchor_mismatch = \"warn\")");
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, Entry, Event};

    #[test]
    fn anchors_parse_with_or_without_a_suffix() {
        let h = "a".repeat(64);
        assert_eq!(
            parse_anchor(&format!(
                "journal head: seq 12, sha256 {h} (check with `vncbot audit verify --head 12:{h}`)"
            )),
            Some((12, h.clone()))
        );
        assert_eq!(
            parse_anchor(&format!("journal head: seq x, sha256 {h}")),
            None
        );
        assert_eq!(parse_anchor("journal head: seq 1, sha256 abc"), None);
        assert_eq!(
            parse_anchor(&format!("/vnc by x: journal head: seq 1, sha256 {h}")),
            None
        );
    }

    #[test]
    fn a_truncated_or_rewritten_journal_does_not_hold_the_anchor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let (journal, _) = Journal::open(&path).unwrap();
        let actor = Actor::Local { user: "t".into() };
        let mut heads = Vec::new();
        for _ in 0..3 {
            heads.push(
                journal
                    .append_blocking(Event::Invalid, &actor, Entry::default())
                    .unwrap(),
            );
        }
        for h in &heads {
            assert_eq!(check(&journal, h.seq, &h.hash), Ok(()));
        }
        assert!(check(&journal, 2, &"0".repeat(64))
            .unwrap_err()
            .contains("seq 2 has"));
        assert!(check(&journal, 9, &heads[2].hash)
            .unwrap_err()
            .contains("ends at seq 3"));
        assert_eq!(check(&journal, 0, crate::audit::GENESIS), Ok(()));
        drop(journal);
        // Truncated to its first record, then written on: seq 2 and 3 are other records now.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{}\n", text.lines().next().unwrap())).unwrap();
        let (journal, _) = Journal::open(&path).unwrap();
        for _ in 0..2 {
            journal
                .append_blocking(Event::Denied, &actor, Entry::default())
                .unwrap();
        }
        assert!(check(&journal, heads[2].seq, &heads[2].hash).is_err());
        assert_eq!(check(&journal, heads[0].seq, &heads[0].hash), Ok(()));
    }
}
