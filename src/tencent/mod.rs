//! Tencent Cloud CVM: the signer, the endpoint per region, the typed errors and the client.

pub mod client;
pub mod endpoint;
pub mod error;
pub mod sign;

pub use client::{CvmClient, VncUrl};
pub use error::{ApiErrorKind, TencentError};
