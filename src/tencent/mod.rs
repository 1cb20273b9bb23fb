//! Tencent Cloud CVM: the signer, the endpoint per region, the typed errors, the client and the
//! catalog of instances.
//!
//! The core reaches Tencent only through [`Console`], so it can be tested in-process with a fake;
//! [`CvmClient`] is the implementation that speaks HTTP.

use std::future::Future;

pub mod catalog;
pub mod client;
pub mod endpoint;
pub mod error;
pub mod sign;

pub use catalog::{
    choice_label, Catalog, Instance, InstanceSource, RegionStatus, Resolution, State, View,
};
pub use client::{CvmClient, InstancesPage, InstancesQuery, VncUrl};
pub use error::{ApiErrorKind, TencentError};

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

impl Console for CvmClient {
    fn describe_instance_vnc_url(
        &self,
        region: &Region,
        instance: &InstanceId,
        still_allowed: &(dyn Fn() -> bool + Sync),
    ) -> impl Future<Output = Result<VncUrl, TencentError>> + Send {
        CvmClient::describe_instance_vnc_url_while(self, region, instance, still_allowed)
    }
}
