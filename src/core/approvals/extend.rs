//! An extension that needs approvers: Extend on a grant whose rule has `approval = "required"`
//! opens a request like `/vnc` does, and its approval extends that grant instead of starting a
//! new one. The request's record says so (`code = "extend"`, `refers_to` the grant), so a restart
//! rebuilds the link both ways.
//!
//! The request never outlives the grant: it expires at the grant's end at the latest, and a
//! grant that ends (Done, revoked, a lost role) expires its pending extension.

use super::{ApprovalRequest, Closing, Standing};
use crate::access::Gate;
use crate::audit::{AuditError, Entry, Event};
use crate::core::grants::{bot, parse_rfc3339, rfc3339, Extension};
use crate::core::{Core, Grant};
use crate::tencent::Console;

/// The `code` of an `approval_requested` record that asks to extend a grant.
pub const EXTEND_CODE: &str = "extend";

impl<C: Console> Core<C> {
    /// Records a request to extend `g` (its holder asked) and schedules its expiry.
    pub(crate) async fn ask_extension(
        &self,
        g: &Grant,
        rule: Option<usize>,
        gate: Gate,
    ) -> Result<ApprovalRequest, AuditError> {
        let now = self.clock.now();
        let expires = (now + gate.request_ttl).min(g.until);
        let expires = parse_rfc3339(&rfc3339(expires)).unwrap_or(expires);
        let appended = self
            .append(
                Event::ApprovalRequested,
                &g.holder(),
                Entry {
                    guild: Some(g.guild.get()),
                    instance: Some(g.instance.to_string()),
                    region: Some(g.region.to_string()),
                    reason: g.reason.clone(),
                    rule,
                    code: Some(EXTEND_CODE.to_owned()),
                    refers_to: Some(g.id),
                    until: Some(rfc3339(expires)),
                    count: Some(u64::from(gate.approvals_required)),
                    ..Entry::default()
                },
            )
            .await;
        let id = match appended {
            Ok(a) => a.seq,
            Err(e) => {
                // Fail closed: the claim on the extension stays (nothing was asked).
                tracing::error!(error = %e, grant = g.id, "AUDIT WRITE FAILED for an extension request");
                return Err(e);
            }
        };
        let request = ApprovalRequest {
            id,
            user: g.user,
            name: g.name.clone(),
            guild: g.guild,
            channel: None,
            instance: g.instance.clone(),
            region: g.region.clone(),
            reason: g.reason.clone(),
            rule,
            gate,
            window: self.policy().grant_for,
            expires,
            votes: Vec::new(),
            standing: Standing::Pending,
            posts: Vec::new(),
        };
        self.approvals.slots().insert(id, request.clone());
        if let Some(s) = self.grants.slots().get_mut(&g.id) {
            s.extension = Extension::Asked { request: id };
        }
        self.schedule_request(&request);
        Ok(request)
    }

    /// The grant a request asks to extend, when it is an extension.
    pub fn extension_target(&self, request: u64) -> Option<u64> {
        self.grants
            .slots()
            .iter()
            .find(|(_, s)| s.extension == Extension::Asked { request })
            .map(|(id, _)| *id)
    }

    /// The grant ended: its extension still waiting for approvers expires (nothing is left
    /// to extend).
    pub(crate) async fn withdraw_extension(&self, grant: u64) {
        let asked = self.grants.slots().get_mut(&grant).and_then(|s| {
            let Extension::Asked { request } = s.extension else {
                return None;
            };
            s.extension = Extension::Used;
            Some(request)
        });
        if let Some(request) = asked {
            if let Err(e) = self.close_request(request, &bot(), Closing::Expired).await {
                tracing::debug!(request, refusal = ?e, "an extension request was closed already");
            }
        }
    }

    /// Requests still waiting for approvers, oldest first (for `/vncadmin grants`).
    pub fn pending_requests(&self) -> Vec<ApprovalRequest> {
        let mut pending: Vec<ApprovalRequest> = self
            .approvals
            .slots()
            .values()
            .filter(|r| r.is_pending())
            .cloned()
            .collect();
        pending.sort_by_key(|r| r.id);
        pending
    }
}
