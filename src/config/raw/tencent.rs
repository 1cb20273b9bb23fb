//! `[tencent]`: the regions, the products and the regions of each, and how to reach the API.

use std::time::Duration;

use serde::Deserialize;

use super::urls::parse_base_url;
use super::Collector;
use crate::ids::{Product, Region};
use crate::tencent::{Language, TencentConfig, DEFAULT_TIMEOUT_SECS, MAX_TIMEOUT_SECS};

/// The products served when `tencent.products` is not set.
const DEFAULT_PRODUCT: Product = Product::Cvm;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTencent {
    regions: Vec<String>,
    products: Option<Vec<String>>,
    lighthouse_regions: Option<Vec<String>>,
    endpoint: Option<String>,
    #[serde(default)]
    language: Language,
    timeout_secs: Option<u64>,
}

impl RawTencent {
    pub(super) fn validate(self, p: &mut Collector) -> TencentConfig {
        let mut regions = Vec::new();
        if self.regions.is_empty() {
            p.push(
                "tencent.regions",
                "is empty: list at least one region, e.g. [\"ap-guangzhou\"]; the first is the default",
            );
        }
        for (i, r) in self.regions.iter().enumerate() {
            match Region::parse(r) {
                Ok(region) if regions.contains(&region) => p.push(
                    format!("tencent.regions[{i}]"),
                    format!("{region} is listed twice: remove the duplicate"),
                ),
                Ok(region) => regions.push(region),
                Err(e) => p.push(format!("tencent.regions[{i}]"), e.to_string()),
            }
        }
        let endpoint = self.endpoint.as_deref().and_then(|s| {
            parse_base_url(p, "tencent.endpoint", s, "https://cvm.tencentcloudapi.com")
        });
        let mut products = Vec::new();
        match &self.products {
            None => products.push(DEFAULT_PRODUCT),
            Some(list) if list.is_empty() => p.push(
                "tencent.products",
                format!("is empty: list the products whose instances the bot opens, e.g. [\"cvm\", \"lighthouse\"] (default [\"{DEFAULT_PRODUCT}\"])"),
            ),
            Some(list) => {
                for (i, name) in list.iter().enumerate() {
                    match Product::parse(name) {
                        Some(product) if products.contains(&product) => p.push(
                            format!("tencent.products[{i}]"),
                            format!("{name:?} is listed twice: remove the duplicate"),
                        ),
                        Some(product) => products.push(product),
                        None => p.push(
                            format!("tencent.products[{i}]"),
                            format!("{name:?} is not a product vncbot serves: use \"cvm\" or \"lighthouse\""),
                        ),
                    }
                }
            }
        }
        let lighthouse = products.contains(&Product::Lighthouse);
        let mut lighthouse_regions = Vec::new();
        match &self.lighthouse_regions {
            Some(_) if !lighthouse => p.push(
                "tencent.lighthouse_regions",
                "is set, but tencent.products does not include \"lighthouse\": add it there or remove this key",
            ),
            Some(list) if list.is_empty() => p.push(
                "tencent.lighthouse_regions",
                "is empty: list the regions where Lighthouse instances run, or remove the key to use every region in tencent.regions",
            ),
            Some(list) => {
                for (i, r) in list.iter().enumerate() {
                    let key = format!("tencent.lighthouse_regions[{i}]");
                    match Region::parse(r) {
                        Ok(region) if lighthouse_regions.contains(&region) => {
                            p.push(key, format!("{region} is listed twice: remove the duplicate"))
                        }
                        Ok(region) if !regions.contains(&region) => p.push(
                            key,
                            format!("{region} is not in tencent.regions: add it there too, or remove it here"),
                        ),
                        Ok(region) if region.is_finance() => p.push(
                            key,
                            format!("{region} is a finance-cloud region: vncbot knows no Lighthouse endpoint for it (only lighthouse.tencentcloudapi.com); remove it"),
                        ),
                        Ok(region) => lighthouse_regions.push(region),
                        Err(e) => p.push(key, e.to_string()),
                    }
                }
            }
            None if lighthouse => {
                lighthouse_regions = regions.iter().filter(|r| !r.is_finance()).cloned().collect();
                if lighthouse_regions.is_empty() && !regions.is_empty() {
                    p.push(
                        "tencent.products",
                        "includes \"lighthouse\", but every region in tencent.regions is a finance-cloud one, where vncbot knows no Lighthouse endpoint: add an ordinary region",
                    );
                }
            }
            None => {}
        }
        let timeout_secs = self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(1..=MAX_TIMEOUT_SECS).contains(&timeout_secs) {
            p.push(
                "tencent.timeout_secs",
                format!(
                    "{timeout_secs} is out of range: use 1 to {MAX_TIMEOUT_SECS} seconds (default {DEFAULT_TIMEOUT_SECS})"
                ),
            );
        }
        TencentConfig {
            regions,
            products,
            lighthouse_regions,
            endpoint,
            language: self.language,
            timeout: Duration::from_secs(timeout_secs),
        }
    }
}
