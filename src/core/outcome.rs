//! One vocabulary of outcomes. The journal code, the metric label, the audit channel's text and
//! the CLI's exit code are all derived here, never re-typed as strings elsewhere.

use std::borrow::Cow;

use crate::audit::Event;
use crate::tencent::{ApiErrorKind, TencentError};

/// Exit codes of the command line, documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    /// Tencent refused (not found, instance state, busy), or the audit chain is damaged.
    Refused = 1,
    /// Bad input: usage, instance ID, region, reason (clap also uses 2).
    BadInput = 2,
    /// The config, the environment or the credentials are wrong: an admin must act.
    Config = 3,
    /// Denied or rate limited by our own policy.
    Denied = 4,
    /// A temporary failure (network, Tencent busy): try again.
    Temporary = 5,
    /// The audit journal cannot be written: fail closed.
    Audit = 6,
}

/// What a Tencent failure means for whoever asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailureKind {
    /// Tencent says the ID is malformed (we validate first, so this is rare).
    MalformedId,
    NotFound,
    /// Stopped, starting, being created: no console in this state.
    InstanceState,
    /// Another operation is in progress on the instance.
    Busy,
    /// Our credentials or CAM policy: an admin must act.
    Credentials,
    /// An answer we cannot use, or a request we could not build: an admin must look.
    Misconfigured,
    /// Network, gateway, rate limit or Tencent's own failure: try again.
    #[default]
    Transient,
}

impl FailureKind {
    pub fn of(e: &TencentError) -> Self {
        match e {
            TencentError::Api { kind, .. } => match kind {
                ApiErrorKind::MalformedId => Self::MalformedId,
                ApiErrorKind::NotFound => Self::NotFound,
                ApiErrorKind::InstanceState => Self::InstanceState,
                ApiErrorKind::Busy => Self::Busy,
                ApiErrorKind::Credentials => Self::Credentials,
                ApiErrorKind::Other => Self::Misconfigured,
                ApiErrorKind::RateLimited | ApiErrorKind::ServerSide => Self::Transient,
            },
            // Only a refusal of ours can withdraw a call; the core reports it as `denied`.
            TencentError::Withdrawn => Self::Misconfigured,
            // Checked before the journal by the core; should the client refuse, an admin looks.
            TencentError::NotServed(_) => Self::Misconfigured,
            TencentError::InvalidResponse { .. }
            | TencentError::Signing(_)
            | TencentError::Redirected { .. } => Self::Misconfigured,
            _ if e.is_transient() => Self::Transient,
            // Our own queue is full: come back in a moment.
            _ => Self::Transient,
        }
    }
}

/// How one request ended. Its journal code and metric label is its name in snake case (Tencent's
/// failures carry Tencent's own code).
#[derive(Debug, Clone, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter)]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    /// `/vnc` outside any server (a DM).
    NotInGuild,
    /// `/vnc` in a server this bot does not serve.
    OtherGuild,
    BadInstance,
    BadRegion,
    BadReason,
    Denied,
    LimitedUser,
    LimitedInstance,
    /// Too many refused requests from one member: answered at once, recorded as one count.
    TooManyRefusals,
    AuditUnavailable,
    /// Tencent or the network failed; `code` is Tencent's error code or ours (`timeout`, ...).
    Tencent {
        code: String,
        kind: FailureKind,
    },
    /// A press on a button that belongs to no grant (forged, foreign or forgotten).
    BadButton,
    /// A press after the grant ended.
    GrantEnded,
    /// A press by someone other than the grant's holder (a forwarded message).
    NotHolder,
    /// A press past `links_per_grant`.
    LinksUsed,
    /// A press while the grant's previous press is still minting.
    PressInProgress,
    /// Discord did not give the member's current roles: never mint on stale ones.
    RolesUnavailable,
    /// The member's roles no longer allow the instance: the grant ends.
    RoleRemoved,
    /// No instance the actor may open carries the name.
    UnknownName,
    /// Several instances the actor may open carry the name.
    AmbiguousName,
    /// The catalog (re-read) says the instance cannot serve a console: refused before Tencent.
    InstanceNotReady,
    /// `/vnc` granted a window.
    Granted,
    /// The link reached the member (the DM, or the terminal for `vncbot url`).
    Delivered,
    /// The member does not accept DMs from the server; the link was discarded.
    DmsClosed,
    /// Discord did not take the DM; the link was discarded.
    DmFailed,
    /// `vncbot url` could not print the link (stdout closed); it was discarded.
    NotPrinted,
    /// Break-glass asked on a rule that offers none (no `break_glass_roles`).
    BreakGlassNotOffered,
    /// Break-glass asked by a member holding none of the rule's `break_glass_roles`.
    BreakGlassNotAllowed,
    /// Break-glass asked with a reason under 20 characters.
    BreakGlassReasonShort,
    /// Break-glass asked past `break_glass_per_day` in the last 24 hours.
    BreakGlassOverCap,
}

impl Outcome {
    /// Every outcome but Tencent's (whose code is Tencent's own).
    pub fn ours() -> impl Iterator<Item = Outcome> {
        <Self as strum::IntoEnumIterator>::iter().filter(|o| !matches!(o, Self::Tencent { .. }))
    }

    /// The outcome a record's `code` names (read back from the journal). A `failed` record's
    /// code is Tencent's, or ours for a network failure: read it with [`Outcome::failed`].
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ours().find(|o| o.code() == code)
    }

    /// A `failed` record's outcome, as read back (the failure's kind is not recorded).
    pub fn failed(code: &str) -> Self {
        Self::Tencent {
            code: code.to_owned(),
            kind: FailureKind::Transient,
        }
    }

    pub fn tencent(e: &TencentError) -> Self {
        Self::Tencent {
            code: e.code(),
            kind: FailureKind::of(e),
        }
    }

    /// The code in the journal's `code` field and the metric label.
    pub fn code(&self) -> &str {
        match self {
            Self::Tencent { code, .. } => code,
            other => other.into(),
        }
    }

    /// How the outcome reads in the audit channel.
    pub fn channel_text(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Self::Delivered => "delivered by DM",
            Self::BadButton => "refused: a button of no known grant",
            Self::GrantEnded => "refused: the grant had ended",
            Self::NotHolder => "refused: pressed by someone other than the holder",
            Self::LinksUsed => "limited: the grant used all its links",
            Self::PressInProgress => "refused: a link was already being made",
            Self::RolesUnavailable => "refused: Discord did not give the member's roles",
            Self::RoleRemoved => "denied: the member's role was removed; grant ended",
            Self::Granted => "granted",
            Self::UnknownName => "refused: no such instance name",
            Self::AmbiguousName => "refused: several instances carry that name",
            Self::InstanceNotReady => "refused: the instance is not running",
            Self::DmsClosed => "not delivered: DMs closed, link discarded",
            Self::DmFailed => "not delivered: DM failed, link discarded",
            Self::NotPrinted => "not delivered: the terminal went away, link discarded",
            Self::BreakGlassNotOffered => "refused: break-glass is not offered on that rule",
            Self::BreakGlassNotAllowed => "denied: break-glass without a break-glass role",
            Self::BreakGlassReasonShort => "refused: break-glass reason under 20 characters",
            Self::BreakGlassOverCap => "limited: break-glass daily cap reached",
            Self::NotInGuild => "refused: not in a server",
            Self::OtherGuild => "refused: another server",
            Self::BadInstance => "refused: malformed instance",
            Self::BadRegion => "refused: region not served",
            Self::BadReason => "refused: reason missing or malformed",
            Self::Denied => "denied",
            Self::LimitedUser => "limited: member over the limit",
            Self::LimitedInstance => "limited: instance over the limit",
            Self::TooManyRefusals => "limited: too many refused requests",
            Self::AuditUnavailable => "refused: audit journal unwritable",
            Self::Tencent { code, .. } => return Cow::Owned(format!("Tencent failed: {code}")),
        })
    }

    /// The journal event that records this outcome.
    pub fn event(&self) -> Event {
        match self {
            Self::NotInGuild
            | Self::OtherGuild
            | Self::BadInstance
            | Self::BadRegion
            | Self::BadReason
            | Self::AuditUnavailable
            | Self::BadButton
            | Self::GrantEnded
            | Self::RolesUnavailable
            | Self::UnknownName
            | Self::AmbiguousName
            | Self::InstanceNotReady => Event::Invalid,
            Self::Denied | Self::NotHolder | Self::RoleRemoved => Event::Denied,
            Self::LimitedUser
            | Self::LimitedInstance
            | Self::TooManyRefusals
            | Self::LinksUsed
            | Self::PressInProgress => Event::Limited,
            Self::Granted => Event::Granted,
            Self::Tencent { .. } => Event::Failed,
            Self::Delivered => Event::Delivered,
            Self::DmsClosed | Self::DmFailed | Self::NotPrinted => Event::DmFailed,
            Self::BreakGlassNotOffered | Self::BreakGlassReasonShort => Event::Invalid,
            Self::BreakGlassNotAllowed => Event::Denied,
            Self::BreakGlassOverCap => Event::Limited,
        }
    }

    /// A line about a link (minted, delivered or lost) or about the audit trail itself: the audit
    /// channel posts these before any refusal and never coalesces them.
    pub fn is_link_line(&self) -> bool {
        matches!(
            self,
            Self::Delivered
                | Self::DmsClosed
                | Self::DmFailed
                | Self::NotPrinted
                | Self::Tencent { .. }
                | Self::AuditUnavailable
        )
    }

    /// Whether the audit channel gets a line: not for requests from outside the served servers.
    pub fn posts_to_channel(&self) -> bool {
        !matches!(self, Self::NotInGuild | Self::OtherGuild)
    }

    /// The exit code of `vncbot url` for this outcome.
    pub fn exit(&self) -> Exit {
        match self {
            Self::Delivered | Self::Granted => Exit::Ok,
            Self::BadButton
            | Self::GrantEnded
            | Self::RolesUnavailable
            | Self::UnknownName
            | Self::AmbiguousName => Exit::BadInput,
            Self::InstanceNotReady => Exit::Refused,
            Self::NotHolder | Self::RoleRemoved | Self::LinksUsed | Self::PressInProgress => {
                Exit::Denied
            }
            Self::NotInGuild
            | Self::OtherGuild
            | Self::BadInstance
            | Self::BadRegion
            | Self::BadReason => Exit::BadInput,
            Self::Denied | Self::LimitedUser | Self::LimitedInstance | Self::TooManyRefusals => {
                Exit::Denied
            }
            Self::AuditUnavailable => Exit::Audit,
            Self::Tencent { kind, .. } => match kind {
                FailureKind::MalformedId
                | FailureKind::NotFound
                | FailureKind::InstanceState
                | FailureKind::Busy => Exit::Refused,
                FailureKind::Credentials | FailureKind::Misconfigured => Exit::Config,
                FailureKind::Transient => Exit::Temporary,
            },
            Self::DmsClosed | Self::DmFailed | Self::NotPrinted => Exit::Temporary,
            Self::BreakGlassNotOffered | Self::BreakGlassReasonShort => Exit::BadInput,
            Self::BreakGlassNotAllowed | Self::BreakGlassOverCap => Exit::Denied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_its_outcome() {
        for o in Outcome::ours() {
            assert_eq!(Outcome::from_code(o.code()), Some(o.clone()), "{o:?}");
        }
        assert_eq!(Outcome::from_code("InvalidInstanceId.NotFound"), None);
        let codes: std::collections::HashSet<String> =
            Outcome::ours().map(|o| o.code().to_owned()).collect();
        assert_eq!(codes.len(), Outcome::ours().count(), "codes are distinct");
        // 25, and break-glass's four refusals.
        assert_eq!(Outcome::ours().count(), 25 + 4);
    }

    fn api(code: &str) -> TencentError {
        TencentError::Api {
            kind: ApiErrorKind::classify(code),
            code: code.into(),
            message: "m".into(),
            request_id: "rid".into(),
        }
    }

    /// The mapping users, dashboards and scripts rely on: a change here is a change of interface.
    #[test]
    fn every_outcome_has_one_code_label_text_and_exit() {
        let table: Vec<(Outcome, &str, Exit)> = vec![
            (Outcome::NotInGuild, "not_in_guild", Exit::BadInput),
            (Outcome::OtherGuild, "other_guild", Exit::BadInput),
            (Outcome::BadInstance, "bad_instance", Exit::BadInput),
            (Outcome::BadRegion, "bad_region", Exit::BadInput),
            (Outcome::BadReason, "bad_reason", Exit::BadInput),
            (Outcome::Denied, "denied", Exit::Denied),
            (Outcome::LimitedUser, "limited_user", Exit::Denied),
            (Outcome::LimitedInstance, "limited_instance", Exit::Denied),
            (Outcome::TooManyRefusals, "too_many_refusals", Exit::Denied),
            (Outcome::AuditUnavailable, "audit_unavailable", Exit::Audit),
            (Outcome::Delivered, "delivered", Exit::Ok),
            (Outcome::DmsClosed, "dms_closed", Exit::Temporary),
            (Outcome::DmFailed, "dm_failed", Exit::Temporary),
            (Outcome::NotPrinted, "not_printed", Exit::Temporary),
            (Outcome::Granted, "granted", Exit::Ok),
            (Outcome::BadButton, "bad_button", Exit::BadInput),
            (Outcome::GrantEnded, "grant_ended", Exit::BadInput),
            (Outcome::NotHolder, "not_holder", Exit::Denied),
            (Outcome::LinksUsed, "links_used", Exit::Denied),
            (Outcome::PressInProgress, "press_in_progress", Exit::Denied),
            (
                Outcome::RolesUnavailable,
                "roles_unavailable",
                Exit::BadInput,
            ),
            (Outcome::RoleRemoved, "role_removed", Exit::Denied),
            (Outcome::UnknownName, "unknown_name", Exit::BadInput),
            (Outcome::AmbiguousName, "ambiguous_name", Exit::BadInput),
            (
                Outcome::InstanceNotReady,
                "instance_not_ready",
                Exit::Refused,
            ),
            (
                Outcome::BreakGlassNotOffered,
                "break_glass_not_offered",
                Exit::BadInput,
            ),
            (
                Outcome::BreakGlassNotAllowed,
                "break_glass_not_allowed",
                Exit::Denied,
            ),
            (
                Outcome::BreakGlassReasonShort,
                "break_glass_reason_short",
                Exit::BadInput,
            ),
            (
                Outcome::BreakGlassOverCap,
                "break_glass_over_cap",
                Exit::Denied,
            ),
            (
                Outcome::tencent(&api("InvalidInstanceId.NotFound")),
                "InvalidInstanceId.NotFound",
                Exit::Refused,
            ),
            (
                Outcome::tencent(&api("UnsupportedOperation.InstanceStateStopped")),
                "UnsupportedOperation.InstanceStateStopped",
                Exit::Refused,
            ),
            (
                Outcome::tencent(&api("OperationDenied.InstanceOperationInProgress")),
                "OperationDenied.InstanceOperationInProgress",
                Exit::Refused,
            ),
            (
                Outcome::tencent(&api("AuthFailure.SignatureFailure")),
                "AuthFailure.SignatureFailure",
                Exit::Config,
            ),
            (
                Outcome::tencent(&api("UnknownParameter")),
                "UnknownParameter",
                Exit::Config,
            ),
            (
                Outcome::tencent(&api("RequestLimitExceeded")),
                "RequestLimitExceeded",
                Exit::Temporary,
            ),
            (
                Outcome::tencent(&TencentError::Status {
                    status: 502,
                    request_id: None,
                }),
                "http_502",
                Exit::Temporary,
            ),
            (
                Outcome::tencent(&TencentError::Timeout(std::time::Duration::from_secs(2))),
                "timeout",
                Exit::Temporary,
            ),
            (
                Outcome::tencent(&TencentError::QueueFull {
                    retry_after: std::time::Duration::from_secs(1),
                }),
                "queue_full",
                Exit::Temporary,
            ),
            // A redirect is refused (it would carry our token elsewhere): an admin must look.
            (
                Outcome::tencent(&TencentError::Redirected {
                    status: 302,
                    location_host: Some("elsewhere.example".into()),
                }),
                "redirect",
                Exit::Config,
            ),
            // An answer we cannot use needs an admin, not a retry by the user.
            (
                Outcome::tencent(&TencentError::InvalidResponse {
                    detail: "no InstanceVncUrl".into(),
                    request_id: None,
                }),
                "invalid_response",
                Exit::Config,
            ),
        ];
        for (outcome, code, exit) in table {
            assert_eq!(outcome.code(), code, "{outcome:?}");
            assert_eq!(outcome.exit(), exit, "{outcome:?}");
            assert!(!outcome.channel_text().is_empty());
        }
        assert_eq!(Outcome::Delivered.channel_text(), "delivered by DM");
        assert!(!Outcome::OtherGuild.posts_to_channel());
        for link in [
            Outcome::Delivered,
            Outcome::DmsClosed,
            Outcome::DmFailed,
            Outcome::AuditUnavailable,
        ] {
            assert!(link.is_link_line(), "{link:?}");
        }
        assert!(!Outcome::Denied.is_link_line());
        assert!(Outcome::Denied.posts_to_channel());
    }
}
