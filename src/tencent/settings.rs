//! What the Tencent client is told: the products and regions it serves, where it sends, how it
//! speaks. The config ([`crate::config`]) fills these from the file; tests build them directly.

use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::ids::{InstanceId, Product, Region};

/// Longest Tencent timeout the config accepts: the console URL is only useful for 15 s after the
/// call.
pub const MAX_TIMEOUT_SECS: u64 = 60;
/// `tencent.timeout_secs` when the config does not say.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;

#[derive(Debug, Clone)]
pub struct TencentConfig {
    /// Configured regions; the first is the default.
    pub regions: Vec<Region>,
    /// Products whose instances this bot opens (`tencent.products`, default CVM only).
    pub products: Vec<Product>,
    /// Regions where Lighthouse instances are opened and listed (`tencent.lighthouse_regions`,
    /// default every configured region that is not a finance-cloud one); empty unless
    /// Lighthouse is among `products`.
    pub lighthouse_regions: Vec<Region>,
    /// `http://` only to a loopback address. Serves every product (tests, a private gateway).
    pub endpoint: Option<Url>,
    pub language: Language,
    pub timeout: Duration,
}

impl TencentConfig {
    pub fn default_region(&self) -> &Region {
        &self.regions[0]
    }

    /// Whether `product`'s instances are opened and listed in `region`. CVM's regions are
    /// `tencent.regions`, which the core checks for every request; Lighthouse's are the subset
    /// `tencent.lighthouse_regions`.
    pub fn serves_in(&self, product: Product, region: &Region) -> bool {
        self.products.contains(&product)
            && match product {
                Product::Cvm => true,
                Product::Lighthouse => self.lighthouse_regions.contains(region),
            }
    }

    /// The regions where `product` is served, in config order.
    pub fn regions_for(&self, product: Product) -> Vec<Region> {
        self.regions
            .iter()
            .filter(|r| self.serves_in(product, r))
            .cloned()
            .collect()
    }

    /// Checks, before any call to Tencent, that this config serves `instance`'s product in
    /// `region`; the error is the sentence the user sees.
    pub fn check_serves(&self, instance: &InstanceId, region: &Region) -> Result<(), NotServed> {
        let product = instance.product();
        if !self.products.contains(&product) {
            return Err(NotServed::Product {
                instance: instance.clone(),
                product,
            });
        }
        if !self.serves_in(product, region) {
            return Err(NotServed::Region {
                product,
                region: region.clone(),
                served: self.regions_for(product),
            });
        }
        Ok(())
    }
}

/// A request this config does not serve: refused before any call to Tencent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotServed {
    #[error("{instance} is a {} instance, and this bot does not serve {} instances (tencent.products). Ask an admin to add \"{product}\" to tencent.products if it should.", product.title(), product.title())]
    Product {
        instance: InstanceId,
        product: Product,
    },
    #[error("this bot does not serve {} instances in {region}; it serves them in: {}. Try again with one of those regions, or ask an admin to add {region} to tencent.{}.", product.title(), join_regions(served), if *product == Product::Lighthouse { "lighthouse_regions" } else { "regions" })]
    Region {
        product: Product,
        region: Region,
        served: Vec<Region>,
    },
}

fn join_regions(regions: &[Region]) -> String {
    if regions.is_empty() {
        return "none".into();
    }
    regions
        .iter()
        .map(Region::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The language of Tencent's error messages (`X-TC-Language`); English unless the config says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Language {
    #[default]
    #[serde(rename = "en-US")]
    EnUs,
    #[serde(rename = "zh-CN")]
    ZhCn,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::EnUs => "en-US",
            Language::ZhCn => "zh-CN",
        }
    }
}
