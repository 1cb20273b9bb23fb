//! Who may, recorded: changes to the roles the config names (given, taken, changed, deleted) and
//! to the permissions of the bot's own commands, read from the server's audit log and journaled.
//!
//! [`decide`] is pure: from one audit log entry (as the adapter read it, live or backfilled) and
//! the roles the config names, what to record. [`Ledger`] makes each entry recorded once: a live
//! event and the backfill at start may both bring it, and a restart reads the same log again.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use super::{Core, Policy};
use crate::audit::{read_records, Actor, AuditError, Entry, Event};
use crate::tencent::Console;

/// The audit log actions recorded (Discord's `action_type`), and what the backfill asks for.
pub const MEMBER_ROLE_UPDATE: u8 = 25;
pub const ROLE_UPDATE: u8 = 31;
pub const ROLE_DELETE: u8 = 32;
pub const BACKFILLED_ACTIONS: [u8; 3] = [MEMBER_ROLE_UPDATE, ROLE_UPDATE, ROLE_DELETE];

/// Discord's audit log reasons are at most 512 characters; the journal keeps them whole.
const MAX_AUDIT_REASON_CHARS: usize = 512;
/// Role names are at most 100 characters.
const MAX_ROLE_NAME_CHARS: usize = 100;

/// One entry of a server's audit log, as plain data (the adapter reads it from serenity).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditLogEntry {
    pub id: u64,
    pub guild: u64,
    /// `action_type`.
    pub action: u8,
    /// Who acted, and their username when Discord gave it.
    pub user: u64,
    pub user_name: Option<String>,
    /// Whom (a member for action 25) or what (the role, for 31 and 32) it acted on.
    pub target: Option<u64>,
    pub reason: Option<String>,
    pub changes: Vec<Change>,
}

/// One change of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `$add`: roles given, `(id, name)`.
    RolesAdded(Vec<(u64, String)>),
    /// `$remove`: roles taken.
    RolesRemoved(Vec<(u64, String)>),
    /// The role's `name`, before and after.
    Name {
        old: Option<String>,
        new: Option<String>,
    },
    /// Any other key (`permissions`, `color`, …).
    Key(String),
}

impl Change {
    fn key(&self) -> &str {
        match self {
            Change::RolesAdded(_) => "$add",
            Change::RolesRemoved(_) => "$remove",
            Change::Name { .. } => "name",
            Change::Key(k) => k,
        }
    }
}

/// How an entry reached the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `GUILD_AUDIT_LOG_ENTRY_CREATE`, as it happened.
    Gateway,
    /// `GET /guilds/{id}/audit-logs` at start: it happened while the bot was down.
    Backfill,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Gateway => "gateway",
            Via::Backfill => "backfill",
        }
    }
}

/// One record to write for an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleChange {
    pub event: Event,
    pub role: u64,
    pub role_name: Option<String>,
    /// The member, for a role given or taken.
    pub member: Option<u64>,
    /// For a role changed or deleted: the keys that changed.
    pub keys: Vec<String>,
}

/// Every role the config names: in an `[[allow]]` rule's `roles`, `approver_roles` or
/// `break_glass_roles`, or in `[approvals] admin_roles`. A change to any of them changes who may
/// open a console, approve, break the glass or administer the bot.
pub fn watched_roles(policy: &Policy) -> BTreeSet<u64> {
    let rules = policy.rules.iter().flat_map(|r| {
        r.roles
            .iter()
            .chain(&r.gate.approver_roles)
            .chain(&r.gate.break_glass_roles)
    });
    let admins = policy.approvals.iter().flat_map(|a| &a.admin_roles);
    rules.chain(admins).map(|r| r.get()).collect()
}

/// What to record for `entry`: one change per watched role it gives, takes, changes or deletes,
/// in a served server. Everything else (other roles, other actions, other servers) is nothing.
pub fn decide(entry: &AuditLogEntry, watched: &BTreeSet<u64>, guilds: &[u64]) -> Vec<RoleChange> {
    if !guilds.contains(&entry.guild) {
        return Vec::new();
    }
    match entry.action {
        MEMBER_ROLE_UPDATE => entry
            .changes
            .iter()
            .flat_map(|c| {
                let (event, roles) = match c {
                    Change::RolesAdded(r) => (Event::RoleGranted, r.as_slice()),
                    Change::RolesRemoved(r) => (Event::RoleRevoked, r.as_slice()),
                    _ => (Event::RoleGranted, &[][..]),
                };
                roles
                    .iter()
                    .filter(|(id, _)| watched.contains(id))
                    .map(move |(id, name)| RoleChange {
                        event,
                        role: *id,
                        role_name: Some(bounded(name, MAX_ROLE_NAME_CHARS)),
                        member: entry.target,
                        keys: Vec::new(),
                    })
            })
            .collect(),
        ROLE_UPDATE | ROLE_DELETE => {
            let Some(role) = entry.target.filter(|r| watched.contains(r)) else {
                return Vec::new();
            };
            // An update names the role as it is now; a delete as it was.
            let name = entry.changes.iter().find_map(|c| match c {
                Change::Name { old, new } if entry.action == ROLE_UPDATE => {
                    new.clone().or_else(|| old.clone())
                }
                Change::Name { old, .. } => old.clone(),
                _ => None,
            });
            let mut keys: Vec<String> = entry.changes.iter().map(|c| c.key().to_owned()).collect();
            keys.sort();
            keys.dedup();
            vec![RoleChange {
                event: if entry.action == ROLE_UPDATE {
                    Event::RoleUpdated
                } else {
                    Event::RoleDeleted
                },
                role,
                role_name: name.map(|n| bounded(&n, MAX_ROLE_NAME_CHARS)),
                member: None,
                keys,
            }]
        }
        _ => Vec::new(),
    }
}

/// The audit log action a role record came from.
fn action_of(event: Event) -> Option<u8> {
    match event {
        Event::RoleGranted | Event::RoleRevoked => Some(MEMBER_ROLE_UPDATE),
        Event::RoleUpdated => Some(ROLE_UPDATE),
        Event::RoleDeleted => Some(ROLE_DELETE),
        _ => None,
    }
}

/// Text from Discord, bounded and without control characters (it reaches the journal and,
/// escaped, the channel).
fn bounded(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What has been recorded: each (entry, event, role) once, and per server and action the newest
/// entry recorded (where the backfill starts).
#[derive(Default)]
pub(crate) struct Ledger {
    state: Mutex<LedgerState>,
}

#[derive(Default)]
struct LedgerState {
    seen: HashSet<(u64, &'static str, u64)>,
    newest: HashMap<(u64, u8), u64>,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims a record before it is written: `false` when it was (or is being) written already.
    /// The claim is what keeps a live event and the backfill racing on one entry from both
    /// writing it.
    fn claim(&self, entry: u64, event: Event, role: u64) -> bool {
        self.lock().seen.insert((entry, event.into(), role))
    }

    fn unclaim(&self, entry: u64, event: Event, role: u64) {
        self.lock().seen.remove(&(entry, event.into(), role));
    }

    fn note_newest(&self, guild: u64, action: u8, entry: u64) {
        let mut s = self.lock();
        let newest = s.newest.entry((guild, action)).or_default();
        *newest = (*newest).max(entry);
    }
}

impl<C: Console> Core<C> {
    /// Reads what role records the journal holds (at start, before the gateway is up), so that
    /// nothing is recorded twice across restarts and the backfill starts after the newest.
    /// Returns how many it found.
    pub fn resume_role_changes(&self, journal: &Path) -> std::io::Result<usize> {
        let mut found = 0;
        for record in read_records(journal)? {
            let r = record?;
            let (Some(action), Some(entry), Some(guild), Some(role)) = (
                action_of(r.event),
                r.entry.audit_log_entry,
                r.entry.guild,
                r.entry.role,
            ) else {
                continue;
            };
            self.role_changes.claim(entry, r.event, role);
            self.role_changes.note_newest(guild, action, entry);
            found += 1;
        }
        Ok(found)
    }

    /// Where the backfill of `action` in `guild` starts: after the newest entry recorded (0:
    /// none yet, so everything the audit log still holds, which is 45 days).
    pub fn role_backfill_after(&self, guild: u64, action: u8) -> u64 {
        self.role_changes
            .lock()
            .newest
            .get(&(guild, action))
            .copied()
            .unwrap_or(0)
    }

    /// Whether `entry` changes anything the config names (so that it will be recorded, unless it
    /// was already).
    pub fn role_entry_matters(&self, entry: &AuditLogEntry) -> bool {
        let policy = self.policy();
        let guilds: Vec<u64> = policy.guilds.iter().map(|g| g.get()).collect();
        !decide(entry, &watched_roles(&policy), &guilds).is_empty()
    }

    /// Records what `entry` changed about the roles the config names, each change once however
    /// often the entry arrives. Returns how many records were written.
    pub async fn record_role_entry(
        &self,
        entry: &AuditLogEntry,
        via: Via,
    ) -> Result<usize, AuditError> {
        let policy = self.policy();
        let guilds: Vec<u64> = policy.guilds.iter().map(|g| g.get()).collect();
        let changes = decide(entry, &watched_roles(&policy), &guilds);
        let actor = Actor::Discord {
            id: entry.user,
            name: entry.user_name.clone().unwrap_or_default(),
        };
        let reason = entry
            .reason
            .as_deref()
            .map(|r| bounded(r, MAX_AUDIT_REASON_CHARS))
            .filter(|r| !r.trim().is_empty());
        let mut written = 0;
        for c in changes {
            if !self.role_changes.claim(entry.id, c.event, c.role) {
                continue;
            }
            let record = Entry {
                guild: Some(entry.guild),
                reason: reason.clone(),
                target: c.member,
                role: Some(c.role),
                role_name: c.role_name,
                audit_log_entry: Some(entry.id),
                via: Some(via.as_str().to_owned()),
                changed: (!c.keys.is_empty()).then_some(c.keys),
                ..Entry::default()
            };
            if let Err(e) = self.append(c.event, &actor, record).await {
                // Not recorded: the next backfill (or the entry arriving again) may try again.
                self.role_changes.unclaim(entry.id, c.event, c.role);
                return Err(e);
            }
            if let Some(action) = action_of(c.event) {
                self.role_changes.note_newest(entry.guild, action, entry.id);
            }
            written += 1;
        }
        Ok(written)
    }

    /// Records that the permissions of one of the bot's commands changed in `guild`.
    pub async fn record_command_permissions(
        &self,
        guild: u64,
        command: u64,
        permissions: Vec<String>,
    ) -> Result<u64, AuditError> {
        let actor = Actor::Local {
            user: "vncbot".into(),
        };
        let entry = Entry {
            guild: Some(guild),
            command: Some(command),
            permissions: Some(permissions),
            ..Entry::default()
        };
        Ok(self
            .append(Event::CommandPermissionsChanged, &actor, entry)
            .await?
            .seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUILD: u64 = 800;
    const ONCALL: u64 = 555;
    const OTHER: u64 = 556;

    fn watched() -> BTreeSet<u64> {
        [ONCALL].into()
    }

    fn entry(action: u8, target: u64, changes: Vec<Change>) -> AuditLogEntry {
        AuditLogEntry {
            id: 42,
            guild: GUILD,
            action,
            user: 7,
            user_name: Some("admin".into()),
            target: Some(target),
            reason: Some("rota".into()),
            changes,
        }
    }

    #[test]
    fn a_watched_role_given_and_taken_in_one_entry_is_two_changes_and_other_roles_none() {
        let e = entry(
            MEMBER_ROLE_UPDATE,
            9,
            vec![
                Change::RolesAdded(vec![(ONCALL, "oncall".into()), (OTHER, "fun".into())]),
                Change::RolesRemoved(vec![(ONCALL, "oncall".into())]),
            ],
        );
        let got = decide(&e, &watched(), &[GUILD]);
        assert_eq!(
            got.iter()
                .map(|c| (c.event, c.role, c.member))
                .collect::<Vec<_>>(),
            vec![
                (Event::RoleGranted, ONCALL, Some(9)),
                (Event::RoleRevoked, ONCALL, Some(9))
            ]
        );
        assert_eq!(got[0].role_name.as_deref(), Some("oncall"));
        let other = entry(
            MEMBER_ROLE_UPDATE,
            9,
            vec![Change::RolesAdded(vec![(OTHER, "fun".into())])],
        );
        assert_eq!(decide(&other, &watched(), &[GUILD]), vec![]);
    }

    #[test]
    fn another_server_or_another_action_records_nothing() {
        let e = entry(
            MEMBER_ROLE_UPDATE,
            9,
            vec![Change::RolesAdded(vec![(ONCALL, "oncall".into())])],
        );
        assert_eq!(decide(&e, &watched(), &[GUILD + 1]), vec![]);
        let kick = AuditLogEntry { action: 20, ..e };
        assert_eq!(decide(&kick, &watched(), &[GUILD]), vec![]);
    }

    #[test]
    fn a_watched_role_updated_names_its_keys_and_new_name_and_a_delete_its_old_name() {
        let renamed = vec![
            Change::Name {
                old: Some("oncall".into()),
                new: Some("on-call".into()),
            },
            Change::Key("permissions".into()),
        ];
        let up = decide(&entry(ROLE_UPDATE, ONCALL, renamed), &watched(), &[GUILD]);
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].event, Event::RoleUpdated);
        assert_eq!(up[0].keys, vec!["name", "permissions"]);
        assert_eq!(up[0].role_name.as_deref(), Some("on-call"));
        assert_eq!(up[0].member, None);
        let gone = vec![
            Change::Name {
                old: Some("oncall".into()),
                new: None,
            },
            Change::Key("color".into()),
        ];
        let del = decide(&entry(ROLE_DELETE, ONCALL, gone), &watched(), &[GUILD]);
        assert_eq!(del[0].event, Event::RoleDeleted);
        assert_eq!(del[0].role_name.as_deref(), Some("oncall"));
        assert_eq!(del[0].keys, vec!["color", "name"]);
        let unwatched = entry(ROLE_DELETE, OTHER, vec![]);
        assert_eq!(decide(&unwatched, &watched(), &[GUILD]), vec![]);
    }

    #[test]
    fn names_are_bounded_and_lose_control_characters() {
        let e = entry(
            MEMBER_ROLE_UPDATE,
            9,
            vec![Change::RolesAdded(vec![(ONCALL, "a\nb".repeat(80))])],
        );
        let name = decide(&e, &watched(), &[GUILD])[0]
            .role_name
            .clone()
            .unwrap();
        assert_eq!(name.chars().count(), MAX_ROLE_NAME_CHARS);
        assert!(!name.contains('\n'));
    }

    #[test]
    fn the_ledger_claims_once_and_remembers_the_newest_entry_per_server_and_action() {
        let l = Ledger::default();
        assert!(l.claim(42, Event::RoleGranted, ONCALL));
        assert!(!l.claim(42, Event::RoleGranted, ONCALL));
        assert!(
            l.claim(42, Event::RoleRevoked, ONCALL),
            "another change of the entry"
        );
        l.unclaim(42, Event::RoleGranted, ONCALL);
        assert!(
            l.claim(42, Event::RoleGranted, ONCALL),
            "a failed write may be retried"
        );
        l.note_newest(GUILD, MEMBER_ROLE_UPDATE, 50);
        l.note_newest(GUILD, MEMBER_ROLE_UPDATE, 45);
        assert_eq!(l.lock().newest[&(GUILD, MEMBER_ROLE_UPDATE)], 50);
        assert!(!l.lock().newest.contains_key(&(GUILD, ROLE_UPDATE)));
    }

    #[test]
    fn every_role_the_config_names_is_watched() {
        let text = r#"
[discord]
guild_ids = [800000000000000001]
[tencent]
regions = ["ap-guangzhou"]
[[allow]]
roles = [555000000000000001]
instances = ["*"]
regions = ["*"]
[[allow]]
roles = [555000000000000003]
instances = ["*"]
regions = ["*"]
approval = "required"
approver_roles = [555000000000000009]
break_glass_roles = [555000000000000008]
[approvals]
channel_id = 810000000000000003
admin_roles = [555000000000000007]
[audit]
path = "/tmp/x.jsonl"
"#;
        let config = crate::config::Config::parse(text).unwrap();
        let w = watched_roles(&Policy::from_config(&config));
        assert_eq!(
            w.into_iter().collect::<Vec<_>>(),
            vec![
                555000000000000001,
                555000000000000003,
                555000000000000007,
                555000000000000008,
                555000000000000009
            ]
        );
    }
}
