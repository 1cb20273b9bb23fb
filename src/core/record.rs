//! How the core writes what happened: every record passes through [`Core::append`] (which adds
//! what an auditor needs), an outcome is recorded and counted once in [`Core::note`], and a
//! request's record carries what was asked ([`Core::record`]).

use super::decision;
use super::{Core, Outcome, Request, MAX_REASON_CHARS};
use crate::audit::{Actor, AuditError, Entry, Event};
use crate::ids::{InstanceId, Quoted, Region, Snowflake};
use crate::limits::Limited;
use crate::tencent::Console;

impl<C: Console> Core<C> {
    /// Appends a record, with what an auditor needs beside it: the instance's name where the
    /// catalog knows it, and the role IDs of the rule that decided.
    pub(crate) async fn append(
        &self,
        event: Event,
        actor: &Actor,
        mut entry: Entry,
    ) -> Result<crate::audit::Appended, AuditError> {
        if entry.instance_name.is_none() {
            entry.instance_name = entry
                .instance
                .as_deref()
                .and_then(|i| InstanceId::parse(i).ok())
                .and_then(|i| self.instance_name(&i));
        }
        if let (Some(rule), None) = (entry.rule, &entry.rule_roles) {
            entry.rule_roles = self
                .policy()
                .rules
                .get(rule)
                .map(|r| r.roles.iter().map(ToString::to_string).collect());
        }
        self.journal.append(event, actor, entry).await
    }

    /// Records an outcome (its event, and its code where the event alone does not say it) and
    /// counts it: the one place an outcome becomes a record and a metric.
    pub(crate) async fn note(
        &self,
        outcome: &Outcome,
        actor: &Actor,
        entry: Entry,
    ) -> Result<u64, AuditError> {
        let code = (!matches!(outcome, Outcome::Delivered | Outcome::Granted))
            .then(|| outcome.code().to_owned());
        let appended = self
            .append(outcome.event(), actor, Entry { code, ..entry })
            .await?;
        self.count(outcome);
        Ok(appended.seq)
    }

    /// Counts an outcome whose record was written.
    pub(crate) fn count(&self, outcome: &Outcome) {
        self.metrics.command(outcome.code());
    }

    pub(crate) fn count_limited(&self, l: &Limited) {
        self.metrics.limited(match l {
            Limited::User { .. } => "user",
            Limited::Instance { .. } => "instance",
        });
    }

    pub(crate) async fn record(
        &self,
        event: Event,
        req: &Request,
        instance: Option<&InstanceId>,
        region: Option<&Region>,
        extra: Entry,
    ) -> Result<u64, AuditError> {
        // What the user typed is recorded only once it is known to be well-formed; a malformed ID
        // is recorded as a bounded, escaped quote.
        let instance = match instance {
            Some(i) => i.to_string(),
            None => Quoted::new(&req.instance).to_string(),
        };
        let reason = decision::clean_reason(req.reason.as_deref())
            .map(|r| r.chars().take(MAX_REASON_CHARS).collect());
        let result = self
            .append(
                event,
                &req.actor,
                Entry {
                    guild: req.guild.map(Snowflake::get),
                    channel: req.channel.map(Snowflake::get),
                    instance: Some(instance),
                    region: region.map(Region::to_string),
                    reason,
                    ..extra
                },
            )
            .await;
        match result {
            Ok(a) => Ok(a.seq),
            Err(e) => {
                tracing::error!(error = %e, event = <&str>::from(event), "AUDIT WRITE FAILED: refusing requests until the journal is writable");
                Err(e)
            }
        }
    }
}
