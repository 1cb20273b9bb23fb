//! The audit channel's lines, read off the journal's records: the channel is a projection of
//! the journal, so what it says is what was recorded, whichever process recorded it.

use std::collections::{HashMap, VecDeque};

use super::messages::{audit_line, escape, who};
use crate::audit::{Actor, Event, Record};
use crate::core::Outcome;

/// How many presses' `requested` records are remembered to name their grant (a link's
/// `delivered` and a `failed` record refer to the press, not the grant).
const PRESSES_REMEMBERED: usize = 4096;

/// A line for the channel, and how it queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// About access or a link (granted, minted, delivered, lost, ended) or the trail itself:
    /// posted before any refusal, never coalesced.
    Access(String),
    /// A refusal of this member's: their first in a minute is posted, the rest counted.
    Refusal { user: u64, text: String },
    /// A line that already sums up refusals.
    Summary(String),
}

/// Turns records into lines. Keeps just enough memory to name a link's grant.
#[derive(Default)]
pub struct Lines {
    /// A press's `requested` seq → its grant.
    presses: HashMap<u64, u64>,
    order: VecDeque<u64>,
}

impl Lines {
    /// The line for a record, if it gets one.
    pub fn line(&mut self, r: &Record) -> Option<Line> {
        let e = &r.entry;
        let actor = r.actor();
        let say = |text: &str| {
            audit_line(
                &actor,
                e.instance.as_deref().unwrap_or("?"),
                e.region.as_deref(),
                None,
                text,
                e.request_id.as_deref(),
            )
        };
        match r.event {
            Event::Granted => Some(Line::Access(audit_line(
                &actor,
                e.instance.as_deref().unwrap_or("?"),
                e.region.as_deref(),
                e.reason.as_deref(),
                &format!("{} (grant {})", Outcome::Granted.channel_text(), r.seq),
                None,
            ))),
            Event::Requested => {
                if let Some(grant) = e.refers_to {
                    self.remember(r.seq, grant);
                }
                None
            }
            // A link's `delivered` refers to its `issued` record, which refers to the press.
            Event::Issued => {
                if let Some(grant) = e
                    .refers_to
                    .and_then(|press| self.presses.get(&press).copied())
                {
                    self.remember(r.seq, grant);
                }
                None
            }
            // The DM that carries a grant's buttons: the `granted` line said it all.
            Event::Delivered if e.request_id.is_none() => None,
            Event::Delivered | Event::DmFailed | Event::Failed => {
                let outcome = match (r.event, e.code.as_deref()) {
                    (Event::Failed, code) => Outcome::failed(code.unwrap_or("unknown")),
                    (Event::Delivered, _) => Outcome::Delivered,
                    (_, code) => code
                        .and_then(Outcome::from_code)
                        .unwrap_or(Outcome::DmFailed),
                };
                let text = match (&outcome, &actor) {
                    (Outcome::Delivered, Actor::Local { .. }) => "printed to the terminal".into(),
                    _ => outcome.channel_text(),
                };
                Some(Line::Access(say(&self.about_grant(&text, r))))
            }
            Event::Invalid | Event::Denied | Event::Limited => {
                let code = e.code.as_deref()?;
                let outcome = Outcome::from_code(code)?;
                if !outcome.posts_to_channel() {
                    return None;
                }
                if let (Outcome::TooManyRefusals, Some(n)) = (&outcome, e.count) {
                    return Some(Line::Summary(format!(
                        "{n} refused /vnc request(s) from {} in the last minute were answered at once and not recorded one by one (too many refusals)",
                        who(&actor)
                    )));
                }
                let text = self.about_grant(&outcome.channel_text(), r);
                match actor {
                    Actor::Discord { id, .. } => Some(Line::Refusal {
                        user: id,
                        text: say(&text),
                    }),
                    Actor::Local { .. } => Some(Line::Access(say(&text))),
                }
            }
            Event::Ended => {
                let text = match e.code.as_deref() {
                    Some("done") => "ended by the member",
                    Some("expired") => "access ended: window over",
                    // An admin's `/vncadmin revoke`: the admin is the record's actor.
                    Some("revoked") => {
                        return Some(Line::Access(format!(
                            "grant {} revoked by {} (/vncadmin): {} ({})",
                            e.refers_to.unwrap_or_default(),
                            who(&actor),
                            escape(e.instance.as_deref().unwrap_or("?"), 40),
                            escape(e.region.as_deref().unwrap_or("?"), 40)
                        )))
                    }
                    // A lost role or a dropped region: the refused press said so; a failed DM:
                    // its own line did.
                    _ => return None,
                };
                Some(Line::Access(say(&self.about_grant(text, r))))
            }
            Event::Resumed => {
                let until = e
                    .until
                    .as_deref()
                    .and_then(|u| {
                        time::OffsetDateTime::parse(
                            u,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok()
                    })
                    .map_or_else(
                        || "?".to_owned(),
                        |t| format!("<t:{}:f>", t.unix_timestamp()),
                    );
                let grant = e
                    .refers_to
                    .map_or_else(|| "?".to_owned(), |g| g.to_string());
                Some(Line::Access(format!(
                    "grant {grant} rebuilt at start, until {until}: {} ({})",
                    escape(e.instance.as_deref().unwrap_or("?"), 40),
                    escape(e.region.as_deref().unwrap_or("?"), 40)
                )))
            }
            Event::ApprovalRequested => Some(Line::Access(audit_line(
                &actor,
                e.instance.as_deref().unwrap_or("?"),
                e.region.as_deref(),
                e.reason.as_deref(),
                &format!(
                    "asked for approval (request {}, {} approval(s) needed)",
                    r.seq,
                    e.count.unwrap_or(1)
                ),
                None,
            ))),
            Event::ApprovalVote => {
                let choice = match e.code.as_deref() {
                    Some("approve") => "approved",
                    Some("deny") => "denied",
                    _ => return None,
                };
                Some(Line::Access(say(&format!(
                    "{choice} request {}",
                    e.refers_to.unwrap_or_default()
                ))))
            }
            Event::Approved => Some(Line::Access(format!(
                "request {} approved by {}: {} ({})",
                e.refers_to.unwrap_or_default(),
                e.code
                    .as_deref()
                    .unwrap_or("")
                    .split(',')
                    .filter_map(|id| id.parse::<u64>().ok())
                    .map(|id| format!("<@{id}>"))
                    .collect::<Vec<_>>()
                    .join(", "),
                escape(e.instance.as_deref().unwrap_or("?"), 40),
                escape(e.region.as_deref().unwrap_or("?"), 40)
            ))),
            Event::RequestDenied | Event::Expired | Event::Cancelled => {
                let what = match r.event {
                    Event::RequestDenied => "denied",
                    Event::Expired => "expired undecided",
                    _ => "cancelled by the member",
                };
                Some(Line::Access(say(&format!(
                    "request {} {what}",
                    e.refers_to.unwrap_or_default()
                ))))
            }
            Event::Sealed => Some(Line::Access(format!(
                "audit journal: a torn last line (a crash mid-write) was sealed at seq {}",
                r.seq
            ))),
            Event::ConfigReloaded => Some(Line::Access(format!(
                "config reloaded (digest {}): {}",
                escape(e.config_digest.as_deref().unwrap_or("?"), 12),
                match e.changed.as_deref() {
                    Some([]) | None => "no key changed".to_owned(),
                    Some(keys) => escape(&keys.join(", "), 300),
                }
            ))),
            Event::BreakGlass => Some(Line::Access(audit_line(
                &actor,
                e.instance.as_deref().unwrap_or("?"),
                e.region.as_deref(),
                e.reason.as_deref(),
                &format!(
                    "BREAK-GLASS: access without approval (use {}, {} in 24 h)",
                    r.seq,
                    e.count.unwrap_or(1)
                ),
                None,
            ))),
            Event::Acknowledged | Event::Flagged => {
                let what = if r.event == Event::Acknowledged {
                    "acknowledged"
                } else {
                    "FLAGGED"
                };
                Some(Line::Access(say(&format!(
                    "{what} break-glass use {}",
                    e.refers_to.unwrap_or_default()
                ))))
            }
            Event::AckOverdue => Some(Line::Access(format!(
                "break-glass use {} was neither acknowledged nor flagged in time (ack overdue): {} ({})",
                e.refers_to.unwrap_or_default(),
                escape(e.instance.as_deref().unwrap_or("?"), 40),
                escape(e.region.as_deref().unwrap_or("?"), 40)
            ))),
            Event::RoleGranted
            | Event::RoleRevoked
            | Event::RoleUpdated
            | Event::RoleDeleted
            | Event::CommandPermissionsChanged => super::role_changes::line(r).map(Line::Access),
            Event::Extended => {
                let t = |v: Option<&str>| {
                    v.and_then(crate::core::grants::parse_rfc3339).map_or_else(
                        || "?".to_owned(),
                        |t| format!("<t:{}:f>", super::messages::unix(t)),
                    )
                };
                Some(Line::Access(format!(
                    "grant {} extended by {} from {} to {}: {} ({})",
                    e.refers_to.unwrap_or_default(),
                    who(&actor),
                    t(e.previous_until.as_deref()),
                    t(e.until.as_deref()),
                    escape(e.instance.as_deref().unwrap_or("?"), 40),
                    escape(e.region.as_deref().unwrap_or("?"), 40)
                )))
            }
        }
    }

    fn remember(&mut self, press: u64, grant: u64) {
        if self.order.len() >= PRESSES_REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.presses.remove(&old);
            }
        }
        self.presses.insert(press, grant);
        self.order.push_back(press);
    }

    /// `text (grant N)` when the record belongs to a grant: it refers to the grant, or to a
    /// press of it.
    fn about_grant(&self, text: &str, r: &Record) -> String {
        let grant = r.entry.refers_to.and_then(|seq| match r.event {
            Event::Delivered | Event::DmFailed | Event::Failed => {
                self.presses.get(&seq).copied().or(Some(seq))
            }
            _ => Some(seq),
        });
        match grant {
            Some(g) => format!("{text} (grant {g})"),
            None => text.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Entry;

    fn record(seq: u64, event: Event, actor: &str, entry: Entry) -> Record {
        Record {
            seq,
            time: "2026-12-03T08:00:00.000Z".into(),
            event,
            actor_id: actor.into(),
            actor_name: "m".into(),
            entry,
            torn_sha256: None,
            torn_bytes: None,
            prev: String::new(),
            hash: String::new(),
        }
    }

    fn at(instance: &str) -> Entry {
        Entry {
            instance: Some(instance.into()),
            region: Some("ap-guangzhou".into()),
            ..Entry::default()
        }
    }

    fn text(l: Option<Line>) -> String {
        match l.expect("a line") {
            Line::Access(t) | Line::Summary(t) => t,
            Line::Refusal { text, .. } => text,
        }
    }

    #[test]
    fn a_grant_its_press_and_its_link_read_as_lines_naming_the_grant() {
        let mut lines = Lines::default();
        let granted = lines.line(&record(
            5,
            Event::Granted,
            "901",
            Entry {
                reason: Some("INC-1".into()),
                ..at("ins-running1")
            },
        ));
        let g = text(granted);
        assert!(
            g.contains("<@901>") && g.contains("granted \\(grant 5\\)") && g.contains("INC-1"),
            "{g}"
        );
        // The grant's DM: no line of its own.
        let dm = Entry {
            refers_to: Some(5),
            channel: Some(1),
            message: Some(2),
            ..at("ins-running1")
        };
        assert_eq!(lines.line(&record(6, Event::Delivered, "901", dm)), None);
        let press = Entry {
            refers_to: Some(5),
            ..at("ins-running1")
        };
        assert_eq!(lines.line(&record(7, Event::Requested, "901", press)), None);
        let link = Entry {
            refers_to: Some(7),
            request_id: Some("rid-1".into()),
            ..at("ins-running1")
        };
        assert_eq!(
            lines.line(&record(8, Event::Issued, "901", link.clone())),
            None
        );
        let delivered = Entry {
            refers_to: Some(8),
            ..link.clone()
        };
        let d = text(lines.line(&record(9, Event::Delivered, "901", delivered)));
        assert!(
            d.contains("delivered by DM \\(grant 5\\)") && d.contains("RequestId rid-1"),
            "{d}"
        );
        let f = text(lines.line(&record(
            10,
            Event::Failed,
            "901",
            Entry {
                code: Some("InternalError".into()),
                ..link
            },
        )));
        assert!(
            f.contains("Tencent failed: InternalError \\(grant 5\\)"),
            "{f}"
        );
        let ended = text(lines.line(&record(
            11,
            Event::Ended,
            "local",
            Entry {
                code: Some("expired".into()),
                refers_to: Some(5),
                ..at("ins-running1")
            },
        )));
        assert!(ended.contains("window over \\(grant 5\\)"), "{ended}");
    }

    #[test]
    fn refusals_queue_as_refusals_and_outsiders_get_no_line() {
        let mut lines = Lines::default();
        let denied = lines.line(&record(
            1,
            Event::Denied,
            "902",
            Entry {
                code: Some("denied".into()),
                ..at("ins-running1")
            },
        ));
        assert!(
            matches!(&denied, Some(Line::Refusal { user: 902, text }) if text.contains("**denied**"))
        );
        let outsider = record(
            2,
            Event::Invalid,
            "903",
            Entry {
                code: Some("other_guild".into()),
                ..at("ins-running1")
            },
        );
        assert_eq!(lines.line(&outsider), None);
        let summary = lines.line(&record(
            3,
            Event::Limited,
            "904",
            Entry {
                code: Some("too_many_refusals".into()),
                count: Some(7),
                ..Entry::default()
            },
        ));
        assert!(matches!(summary, Some(Line::Summary(t)) if t.starts_with("7 refused")));
    }

    #[test]
    fn a_break_glass_use_and_its_answers_read_as_loud_lines() {
        let mut lines = Lines::default();
        let used = text(lines.line(&record(
            5,
            Event::BreakGlass,
            "901",
            Entry {
                reason: Some("INC-9 the primary is down".into()),
                count: Some(2),
                ..at("ins-running1")
            },
        )));
        assert!(
            used.contains("<@901>")
                && used.contains("BREAK-GLASS: access without approval \\(use 5, 2 in 24 h\\)")
                && used.contains("INC-9"),
            "{used}"
        );
        let answer = |event, seq| {
            record(
                seq,
                event,
                "902",
                Entry {
                    refers_to: Some(5),
                    ..at("ins-running1")
                },
            )
        };
        let ack = text(lines.line(&answer(Event::Acknowledged, 7)));
        assert!(
            ack.contains("<@902>") && ack.contains("acknowledged break-glass use 5"),
            "{ack}"
        );
        let flag = text(lines.line(&answer(Event::Flagged, 8)));
        assert!(flag.contains("FLAGGED break-glass use 5"), "{flag}");
        let overdue = text(lines.line(&record(
            9,
            Event::AckOverdue,
            "local",
            Entry {
                refers_to: Some(5),
                ..at("ins-running1")
            },
        )));
        assert!(
            overdue.starts_with("break-glass use 5 was neither"),
            "{overdue}"
        );
        // A refused break-glass is a refusal line, in the outcome's words.
        let refused = lines.line(&record(
            10,
            Event::Limited,
            "901",
            Entry {
                code: Some("break_glass_over_cap".into()),
                ..at("ins-running1")
            },
        ));
        assert!(
            matches!(&refused, Some(Line::Refusal { user: 901, text }) if text.contains("break-glass daily cap")),
            "{refused:?}"
        );
    }

    #[test]
    fn a_terminal_users_link_names_them_escaped() {
        let mut lines = Lines::default();
        let mut r = record(
            1,
            Event::Delivered,
            "local",
            Entry {
                request_id: Some("rid".into()),
                ..at("ins-running1")
            },
        );
        r.actor_name = "uid 0 (USER=**x** <@1>)".into();
        let t = text(lines.line(&r));
        assert!(
            t.contains("printed to the terminal") && !t.contains("<@1>"),
            "{t}"
        );
    }

    #[test]
    fn an_extension_and_a_revoke_read_as_lines() {
        let mut lines = Lines::default();
        let t = text(lines.line(&record(
            9,
            Event::Extended,
            "901",
            Entry {
                refers_to: Some(5),
                until: Some("2026-12-03T08:20:00Z".into()),
                previous_until: Some("2026-12-03T08:10:00Z".into()),
                ..at("ins-running1")
            },
        )));
        assert_eq!(
            t,
            "grant 5 extended by <@901> from <t:1796285400:f> to <t:1796286000:f>: ins-running1 (ap-guangzhou)"
        );
        let t = text(lines.line(&record(
            10,
            Event::Ended,
            "7100",
            Entry {
                code: Some("revoked".into()),
                refers_to: Some(5),
                ..at("ins-running1")
            },
        )));
        assert!(
            t == "grant 5 revoked by <@7100> (/vncadmin): ins-running1 (ap-guangzhou)",
            "{t}"
        );
    }
}
