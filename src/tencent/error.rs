//! What can go wrong calling Tencent, typed by error-code family, with the sentence a user sees.
//! Source of the codes: <https://www.tencentcloud.com/document/api/213/15739> (CVM's
//! DescribeInstanceVncUrl), <https://www.tencentcloud.com/document/api/1103/42499> and
//! <https://cloud.tencent.com/document/api/1207/55553> (Lighthouse's; its code list is in the
//! official SDK's `lighthouse/v20200324/errorcodes.py`) and
//! <https://www.tencentcloud.com/document/api/213/33281> (common error codes). Both products'
//! codes map to the same families, so a member hears the same sentence for either.

use std::time::Duration;

use super::settings::NotServed;
use crate::ids::{InstanceId, Region};

/// Families of Tencent error codes. We branch on `Code`, never on `Message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// `InvalidInstanceId.Malformed`, `InvalidParameterValue.InstanceIdMalformed` (both).
    MalformedId,
    /// `InvalidInstanceId.NotFound` (CVM); `ResourceNotFound.InstanceIdNotFound`,
    /// `ResourceNotFound.InstanceNotFound` (Lighthouse).
    NotFound,
    /// `InvalidInstanceState`, `UnsupportedOperation.InstanceState*` (CVM);
    /// `UnsupportedOperation.InvalidInstanceState`, `UnsupportedOperation.InstanceExpired`,
    /// `OperationDenied.InstanceCreating` (Lighthouse).
    InstanceState,
    /// `OperationDenied.InstanceOperationInProgress` (both);
    /// `UnsupportedOperation.LatestOperationUnfinished` (Lighthouse).
    Busy,
    /// `AuthFailure.*`, `UnauthorizedOperation*`: our credentials, clock or CAM policy.
    Credentials,
    /// `RequestLimitExceeded*`.
    RateLimited,
    /// `InternalError*`, `ServiceUnavailable*`; Lighthouse's
    /// `FailedOperation.DescribeInstanceStatus` and `UnsupportedOperation.SystemBusy`.
    ServerSide,
    /// Anything else (`InvalidParameter`, `UnknownParameter`, ...): a bug on our side.
    Other,
}

impl ApiErrorKind {
    pub fn classify(code: &str) -> Self {
        let family = |prefix: &str| code == prefix || code.starts_with(&format!("{prefix}."));
        if matches!(
            code,
            "InvalidInstanceId.Malformed" | "InvalidParameterValue.InstanceIdMalformed"
        ) {
            Self::MalformedId
        } else if matches!(
            code,
            "InvalidInstanceId.NotFound"
                | "ResourceNotFound.InstanceIdNotFound"
                | "ResourceNotFound.InstanceNotFound"
        ) {
            Self::NotFound
        } else if code == "InvalidInstanceState"
            || code.starts_with("UnsupportedOperation.InstanceState")
            || matches!(
                code,
                "UnsupportedOperation.InvalidInstanceState"
                    | "UnsupportedOperation.InstanceExpired"
                    | "OperationDenied.InstanceCreating"
            )
        {
            Self::InstanceState
        } else if matches!(
            code,
            "OperationDenied.InstanceOperationInProgress"
                | "UnsupportedOperation.LatestOperationUnfinished"
        ) {
            Self::Busy
        } else if family("AuthFailure") || code.starts_with("UnauthorizedOperation") {
            Self::Credentials
        } else if code.starts_with("RequestLimitExceeded") {
            Self::RateLimited
        } else if family("InternalError")
            || family("ServiceUnavailable")
            || matches!(
                code,
                "FailedOperation.DescribeInstanceStatus" | "UnsupportedOperation.SystemBusy"
            )
        {
            Self::ServerSide
        } else {
            Self::Other
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TencentError {
    /// Tencent processed the request and answered with an error.
    #[error("Tencent error {code} (RequestId {request_id}): {message}")]
    Api {
        kind: ApiErrorKind,
        code: String,
        message: String,
        request_id: String,
    },
    /// A non-200 status: a gateway or network failure in front of the API.
    #[error("HTTP status {status} from the Tencent Cloud endpoint")]
    Status {
        status: u16,
        request_id: Option<String>,
    },
    /// A 3xx: something between us and Tencent (a gateway, a proxy, a wrong `tencent.endpoint`)
    /// wants the request elsewhere. Never followed, never retried.
    #[error(
        "the Tencent Cloud endpoint answered HTTP {status} redirecting to {}; vncbot never follows redirects (they would carry the signed request and session token elsewhere): check tencent.endpoint and any proxy",
        location_host.as_deref().unwrap_or("an unreadable Location")
    )]
    Redirected {
        status: u16,
        /// Only the host of the `Location`: the rest is not ours to log.
        location_host: Option<String>,
    },
    #[error("no answer from the Tencent Cloud endpoint within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect to the Tencent Cloud endpoint: {0}")]
    Connect(String),
    #[error("the connection to the Tencent Cloud endpoint failed: {0}")]
    Transport(String),
    /// HTTP 200 with a body we cannot use (including a success without `InstanceVncUrl`).
    #[error("unusable answer from the Tencent Cloud endpoint: {detail}")]
    InvalidResponse {
        detail: String,
        request_id: Option<String>,
    },
    /// Our own pacer's queue is longer than a caller may wait.
    #[error("too many Tencent calls queued; retry in {retry_after:?}")]
    QueueFull { retry_after: Duration },
    /// The request could not be built (a clock before 1970, say).
    #[error("cannot sign the request: {0}")]
    Signing(String),
    /// The caller's check, made after the wait for a slot and before sending, said no (a config
    /// reload removed the rule while the request queued). Nothing was sent.
    #[error("withdrawn before sending: the request is no longer allowed")]
    Withdrawn,
    /// The config does not serve the instance's product, or not in that region. Nothing was
    /// sent.
    #[error("not served: {0}")]
    NotServed(NotServed),
}

impl TencentError {
    /// Worth another attempt: the same request may well succeed in a moment.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Api { kind, .. } => {
                matches!(kind, ApiErrorKind::RateLimited | ApiErrorKind::ServerSide)
            }
            Self::Status { status, .. } => *status >= 500 || *status == 429,
            Self::Timeout(_) | Self::Connect(_) | Self::Transport(_) => true,
            Self::Redirected { .. }
            | Self::InvalidResponse { .. }
            | Self::QueueFull { .. }
            | Self::Signing(_)
            | Self::Withdrawn
            | Self::NotServed(_) => false,
        }
    }

    /// True when the admins, not the user, must act (credentials, CAM policy, clock, a bug).
    pub fn needs_admin(&self) -> bool {
        matches!(
            self,
            Self::Api {
                kind: ApiErrorKind::Credentials | ApiErrorKind::Other,
                ..
            } | Self::Redirected { .. }
                | Self::InvalidResponse { .. }
                | Self::Signing(_)
        )
    }

    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Api { request_id, .. } => Some(request_id),
            Self::Status { request_id, .. } | Self::InvalidResponse { request_id, .. } => {
                request_id.as_deref()
            }
            _ => None,
        }
    }

    /// A short machine-readable code for logs, metrics and the audit journal.
    pub fn code(&self) -> String {
        match self {
            Self::Api { code, .. } => code.clone(),
            Self::Status { status, .. } => format!("http_{status}"),
            Self::Redirected { .. } => "redirect".into(),
            Self::Timeout(_) => "timeout".into(),
            Self::Connect(_) => "connect".into(),
            Self::Transport(_) => "transport".into(),
            Self::InvalidResponse { .. } => "invalid_response".into(),
            Self::QueueFull { .. } => "queue_full".into(),
            Self::Signing(_) => "signing".into(),
            Self::Withdrawn => "withdrawn".into(),
            Self::NotServed(NotServed::Product { .. }) => "product_not_served".into(),
            Self::NotServed(NotServed::Region { .. }) => "region_not_served".into(),
        }
    }

    /// What the person who asked is told: what happened and what to do next. Never Tencent's
    /// message text (it may be in Chinese, or reveal account details) and never a secret.
    pub fn user_message(&self, instance: &InstanceId, region: &Region) -> String {
        let reference = self
            .request_id()
            .map(|id| format!(" (Tencent RequestId {id})"))
            .unwrap_or_default();
        match self {
            Self::Api { kind, .. } => match kind {
                ApiErrorKind::MalformedId => format!(
                    "Tencent Cloud says {instance} is not a valid instance ID. Copy the ID from the {} console and try again.",
                    instance.product().title()
                ),
                ApiErrorKind::NotFound => format!(
                    "There is no instance {instance} in {region}. If it runs in another region, ask again naming that region."
                ),
                ApiErrorKind::InstanceState => format!(
                    "{instance} is in a state that does not allow a console (stopped, starting or being created). Start it or wait until it is running, then try again."
                ),
                ApiErrorKind::Busy => format!(
                    "{instance} is busy with another operation. Try again in a minute."
                ),
                ApiErrorKind::Credentials => format!(
                    "The bot is misconfigured: Tencent Cloud refused its request{reference}. The admins have been told; this is not something you can fix."
                ),
                // A code we do not know: name it, so the admins can look it up.
                ApiErrorKind::Other => format!(
                    "Tencent Cloud refused the request with {}{reference}, which the bot does not know how to handle. The admins have been told.",
                    self.code()
                ),
                ApiErrorKind::RateLimited | ApiErrorKind::ServerSide => format!(
                    "Tencent Cloud is busy or failing right now{reference}. Try again in a minute."
                ),
            },
            Self::Redirected { .. } => "Tencent Cloud could not be reached: the bot's connection to it is misconfigured. The admins have been told; this is not something you can fix.".into(),
            Self::Status { .. } | Self::Timeout(_) | Self::Connect(_) | Self::Transport(_) => format!(
                "Tencent Cloud could not be reached{reference}. Try again in a minute; if it keeps failing, tell the admins."
            ),
            Self::InvalidResponse { .. } | Self::Signing(_) => format!(
                "Tencent Cloud's answer could not be used{reference}. Try again; if it keeps happening, tell the admins."
            ),
            Self::QueueFull { retry_after } => format!(
                "Too many console requests are waiting for Tencent Cloud. Try again in {} seconds.",
                retry_after.as_secs().max(1)
            ),
            Self::Withdrawn => "Your access changed while the request waited, so no console was opened. Ask an admin if you need it.".into(),
            Self::NotServed(n) => n.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fall_into_families() {
        use ApiErrorKind::*;
        for (code, kind) in [
            ("InvalidInstanceId.Malformed", MalformedId),
            ("InvalidParameterValue.InstanceIdMalformed", MalformedId),
            ("InvalidInstanceId.NotFound", NotFound),
            ("InvalidInstanceState", InstanceState),
            ("UnsupportedOperation.InstanceStateStopped", InstanceState),
            ("UnsupportedOperation.InstanceStatePending", InstanceState),
            ("OperationDenied.InstanceOperationInProgress", Busy),
            ("AuthFailure.SignatureFailure", Credentials),
            ("AuthFailure", Credentials),
            ("UnauthorizedOperation", Credentials),
            ("UnauthorizedOperation.CamNoAuth", Credentials),
            ("RequestLimitExceeded", RateLimited),
            ("RequestLimitExceeded.UinLimitExceeded", RateLimited),
            ("InternalError", ServerSide),
            ("InternalError.Unknown", ServerSide),
            ("ServiceUnavailable", ServerSide),
            ("UnknownParameter", Other),
            ("AuthFailureX", Other),
            // Lighthouse's codes for the same situations.
            ("ResourceNotFound.InstanceIdNotFound", NotFound),
            ("ResourceNotFound.InstanceNotFound", NotFound),
            ("UnsupportedOperation.InvalidInstanceState", InstanceState),
            ("UnsupportedOperation.InstanceExpired", InstanceState),
            ("OperationDenied.InstanceCreating", InstanceState),
            ("UnsupportedOperation.LatestOperationUnfinished", Busy),
            ("FailedOperation.DescribeInstanceStatus", ServerSide),
            ("UnsupportedOperation.SystemBusy", ServerSide),
            ("UnauthorizedOperation.NoPermission", Credentials),
            ("AuthFailure.InvalidRegion", Credentials),
            ("ResourceNotFound.DiskNotFound", Other),
        ] {
            assert_eq!(ApiErrorKind::classify(code), kind, "{code}");
        }
    }

    #[test]
    fn unknown_codes_are_named_with_the_request_id() {
        let e = TencentError::Api {
            kind: ApiErrorKind::classify("FailedOperation.SomethingNew"),
            code: "FailedOperation.SomethingNew".into(),
            message: "detail that may be in Chinese".into(),
            request_id: "req-123".into(),
        };
        let i = InstanceId::parse("lhins-a1b2c3d4").unwrap();
        let r = Region::parse("ap-guangzhou").unwrap();
        let m = e.user_message(&i, &r);
        assert!(
            m.contains("FailedOperation.SomethingNew") && m.contains("RequestId req-123"),
            "{m}"
        );
        assert!(!m.contains("Chinese"), "{m}");
    }
}
