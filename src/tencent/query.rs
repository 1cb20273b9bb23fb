//! `DescribeInstances` in Tencent's shapes: what one call asks for (the JSON body) and what it
//! answers (a page of [`Instance`]s). The same for CVM and Lighthouse; only the entries differ,
//! and [`RawInstance`] reads both.

use serde::Deserialize;

use super::error::TencentError;
use super::instance::{Instance, RawInstance};
use crate::ids::{InstanceId, Product, Region};

/// Tencent's page size limit for DescribeInstances (default 20).
pub const MAX_PAGE: u32 = 100;
/// Tencent's bounds on `Filters`.
pub const MAX_FILTERS: usize = 10;
pub const MAX_FILTER_VALUES: usize = 5;

/// What one DescribeInstances call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstancesQuery {
    /// `{"Offset":…,"Limit":…}`; `limit` is clamped to 1..=`MAX_PAGE` (100).
    Page { offset: u32, limit: u32 },
    /// `{"InstanceIds":[…]}`: chosen instances, at most `MAX_PAGE` (100) (more are an error).
    Ids(Vec<InstanceId>),
    /// `{"Filters":[{"Name":…,"Values":[…]}],"Offset":…,"Limit":…}`: e.g. `instance-name`,
    /// `instance-state`, `private-ip-address`, `tag:KEY`. Tencent allows at most
    /// `MAX_FILTERS` (10) filters of `MAX_FILTER_VALUES` (5) values each (more are an error).
    Filtered {
        filters: Vec<(String, Vec<String>)>,
        offset: u32,
        limit: u32,
    },
}

impl InstancesQuery {
    /// The request body for `product`'s DescribeInstances, serialised once (every attempt signs
    /// and sends these bytes). A query Tencent would refuse is an error here, before anything is
    /// sent: too many IDs or filters, or an ID of another product.
    pub(super) fn body(&self, product: Product) -> Result<Vec<u8>, TencentError> {
        let value = match self {
            Self::Page { offset, limit } => {
                serde_json::json!({ "Offset": offset, "Limit": (*limit).clamp(1, MAX_PAGE) })
            }
            Self::Ids(ids) => {
                if ids.is_empty() || ids.len() > MAX_PAGE as usize {
                    return Err(TencentError::Signing(format!(
                        "DescribeInstances takes 1 to {MAX_PAGE} InstanceIds, not {}",
                        ids.len()
                    )));
                }
                if let Some(other) = ids.iter().find(|i| i.product() != product) {
                    return Err(TencentError::Signing(format!(
                        "{other} is not a {} instance: list it with its own product",
                        product.title()
                    )));
                }
                let ids: Vec<&str> = ids.iter().map(InstanceId::as_str).collect();
                serde_json::json!({ "InstanceIds": ids })
            }
            Self::Filtered {
                filters,
                offset,
                limit,
            } => {
                if filters.len() > MAX_FILTERS
                    || filters
                        .iter()
                        .any(|(_, v)| v.is_empty() || v.len() > MAX_FILTER_VALUES)
                {
                    return Err(TencentError::Signing(format!(
                        "DescribeInstances takes at most {MAX_FILTERS} filters of 1 to {MAX_FILTER_VALUES} values"
                    )));
                }
                let filters: Vec<serde_json::Value> = filters
                    .iter()
                    .map(|(name, values)| serde_json::json!({ "Name": name, "Values": values }))
                    .collect();
                serde_json::json!({
                    "Filters": filters,
                    "Offset": offset,
                    "Limit": (*limit).clamp(1, MAX_PAGE),
                })
            }
        };
        Ok(serde_json::to_vec(&value).expect("a JSON object serialises"))
    }
}

/// One DescribeInstances answer.
#[derive(Debug, Clone)]
pub struct InstancesPage {
    /// `TotalCount`: how many instances match in the region, over all pages.
    pub total: u64,
    /// Entries that parsed; bounded and cleaned (see [`Instance`]).
    pub instances: Vec<Instance>,
    /// Entries dropped because their `InstanceId` is not an ID of the product asked.
    pub skipped: usize,
    pub request_id: String,
}

/// A successful answer's payload, as Tencent sends it.
#[derive(Deserialize)]
pub(super) struct InstancesPayload {
    #[serde(rename = "TotalCount")]
    total_count: Option<u64>,
    #[serde(rename = "InstanceSet")]
    instance_set: Option<Vec<RawInstance>>,
}

impl InstancesPayload {
    /// The page `product`'s DescribeInstances answered for `region`; entries of another product
    /// are skipped, and an answer without `TotalCount` is not Tencent's.
    pub(super) fn into_page(
        self,
        region: &Region,
        product: Product,
        request_id: String,
    ) -> Result<InstancesPage, TencentError> {
        let raw = self.instance_set.unwrap_or_default();
        let count = raw.len();
        let instances: Vec<Instance> = raw
            .into_iter()
            .filter_map(|r| r.into_instance(region, product))
            .collect();
        let Some(total) = self.total_count else {
            return Err(TencentError::InvalidResponse {
                detail: "DescribeInstances success without TotalCount".into(),
                request_id: Some(request_id),
            });
        };
        Ok(InstancesPage {
            total,
            skipped: count - instances.len(),
            instances,
            request_id,
        })
    }
}
