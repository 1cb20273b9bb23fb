//! Tencent Cloud (CVM and Lighthouse): the settings and credentials the client is given, the
//! signer, the endpoint per region, the typed errors, the client and the catalog of instances.
//!
//! Inside, each file depends only on those below it: `settings`, `credentials`, `sign`,
//! `endpoint`; `error`; `instance` (the model); `query`, `view`; `retry`, `transport`; `client`;
//! `catalog`. The core reaches Tencent only through [`Console`], so it can be tested in-process
//! with a fake; [`TencentClient`] is the implementation that speaks HTTP.

use std::future::Future;

mod catalog;
mod client;
mod credentials;
pub mod endpoint;
mod error;
mod instance;
mod query;
mod retry;
mod settings;
pub mod sign;
mod transport;
mod view;

pub use catalog::{Catalog, InstanceSource, RegionStatus};
pub use client::{TencentClient, VncUrl, CATALOG_PER_SECOND};
pub use credentials::TencentCredentials;
pub use error::{ApiErrorKind, TencentError};
pub(crate) use instance::MAX_CHOICES;
pub use instance::{choice_label, Instance, State, MAX_LABEL_CHARS};
pub use query::{InstancesPage, InstancesQuery};
pub use retry::RetryPolicy;
pub use settings::{Language, NotServed, TencentConfig};
pub(crate) use settings::{DEFAULT_TIMEOUT_SECS, MAX_TIMEOUT_SECS};
pub use transport::api_version;
pub use view::{Resolution, View};

use crate::ids::{InstanceId, Region};

/// Where console URLs come from.
pub trait Console: Send + Sync + 'static {
    /// Mints a fresh, single-use console URL for `instance` in `region`. `still_allowed` is
    /// asked right before each attempt is sent (after any wait for a slot); when it says no,
    /// nothing is sent and the answer is [`TencentError::Withdrawn`].
    fn describe_instance_vnc_url(
        &self,
        region: &Region,
        instance: &InstanceId,
        still_allowed: &(dyn Fn() -> bool + Sync),
    ) -> impl Future<Output = Result<VncUrl, TencentError>> + Send;
}

impl Console for TencentClient {
    fn describe_instance_vnc_url(
        &self,
        region: &Region,
        instance: &InstanceId,
        still_allowed: &(dyn Fn() -> bool + Sync),
    ) -> impl Future<Output = Result<VncUrl, TencentError>> + Send {
        TencentClient::describe_instance_vnc_url_while(self, region, instance, still_allowed)
    }
}
