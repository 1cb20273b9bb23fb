//! Tencent Cloud CVM: the signer, the endpoint per region, the typed errors and the client.

pub mod client;
pub mod endpoint;
pub mod error;
pub mod sign;

pub use client::{CvmClient, VncUrl};
pub use error::{ApiErrorKind, TencentError};

use std::future::Future;

use crate::ids::{InstanceId, Region};

/// Where the core meets Tencent: one call, so the core can be tested without HTTP.
pub trait Console: Send + Sync + 'static {
    fn describe_instance_vnc_url(
        &self,
        region: &Region,
        instance: &InstanceId,
    ) -> impl Future<Output = Result<VncUrl, TencentError>> + Send;
}

impl Console for CvmClient {
    fn describe_instance_vnc_url(
        &self,
        region: &Region,
        instance: &InstanceId,
    ) -> impl Future<Output = Result<VncUrl, TencentError>> + Send {
        CvmClient::describe_instance_vnc_url(self, region, instance)
    }
}
