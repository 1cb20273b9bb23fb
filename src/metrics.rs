//! Prometheus metrics, all prefixed `vncbot_`. One process-wide registry, as metrics libraries
//! conventionally keep: every layer records where the event happens without threading a handle
//! through the core.

use std::sync::LazyLock;

use crate::ids::Product;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

/// A catalog list: a region, and the product when it is not CVM. CVM's series keep the one
/// `region` label they had before Lighthouse (dashboards and alerts keep working); Lighthouse's
/// add `product="lighthouse"`. Never an instance ID: that would be a series per instance.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RegionLabel {
    pub region: String,
    pub product: Product,
}

impl EncodeLabelSet for RegionLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("region", self.region.as_str()).encode(encoder.encode_label())?;
        if self.product != Product::Cvm {
            ("product", self.product.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// One Tencent call: the product, the action and how it ended (`ok` or the error code).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabel {
    pub product: String,
    pub action: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Code {
    pub code: String,
}

pub struct Metrics {
    registry: Registry,
    /// Commands by outcome (`delivered`, `denied`, `bad_instance`, an error code, ...).
    pub commands: Family<Outcome, Counter>,
    /// Seconds per Tencent attempt, success or not.
    pub tencent_latency: Histogram,
    /// Tencent failures by code (`InvalidInstanceId.NotFound`, `timeout`, `http_502`, ...).
    pub tencent_errors: Family<Code, Counter>,
    /// Tencent calls (each attempt) by product, action and result (`ok` or the code).
    pub tencent_calls: Family<CallLabel, Counter>,
    /// Seconds a call waited for its slot under `api_per_second`.
    pub limiter_wait: Histogram,
    /// Requests refused by the per-member or per-instance limit.
    pub limited: Family<Outcome, Counter>,
    /// DMs that could not be sent (the link was discarded).
    pub dm_failures: Counter,
    /// Seconds from queueing an audit record to its fsync.
    pub audit_write: Histogram,
    /// Audit records that could not be written.
    pub audit_failures: Counter,
    /// 1 while connected to the Discord gateway.
    pub gateway_connected: Gauge,
    /// Seconds since each region's catalog list was last fetched successfully.
    pub catalog_age: Family<RegionLabel, Gauge>,
    /// Instances in each region's catalog list.
    pub catalog_instances: Family<RegionLabel, Gauge>,
    /// Catalog refreshes that failed (the last good list was kept).
    pub catalog_refresh_failures: Family<RegionLabel, Counter>,
    /// Age in seconds of the oldest journal record not yet shipped to object storage (0 when
    /// all are, or when shipping is off).
    pub audit_ship_lag: Gauge,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("vncbot");
        let m = Metrics {
            commands: Family::default(),
            tencent_latency: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            tencent_errors: Family::default(),
            tencent_calls: Family::default(),
            limiter_wait: Histogram::new(exponential_buckets(0.001, 4.0, 10)),
            limited: Family::default(),
            dm_failures: Counter::default(),
            audit_write: Histogram::new(exponential_buckets(0.0001, 4.0, 10)),
            audit_failures: Counter::default(),
            gateway_connected: Gauge::default(),
            catalog_age: Family::default(),
            catalog_instances: Family::default(),
            catalog_refresh_failures: Family::default(),
            audit_ship_lag: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("commands", "Commands by outcome", m.commands.clone());
        registry.register(
            "tencent_request_duration_seconds",
            "Duration of each DescribeInstanceVncUrl attempt",
            m.tencent_latency.clone(),
        );
        registry.register(
            "tencent_errors",
            "Tencent call failures by code",
            m.tencent_errors.clone(),
        );
        registry.register(
            "tencent_calls",
            "Tencent call attempts by product (cvm, lighthouse), action and result (ok or the error code)",
            m.tencent_calls.clone(),
        );
        registry.register(
            "tencent_queue_wait_seconds",
            "Time a call waited for its slot under limits.api_per_second",
            m.limiter_wait.clone(),
        );
        registry.register(
            "limited",
            "Requests refused by a per-member or per-instance limit",
            m.limited.clone(),
        );
        registry.register(
            "dm_failures",
            "DMs with a link that could not be sent",
            m.dm_failures.clone(),
        );
        registry.register(
            "audit_write_duration_seconds",
            "Time from queueing an audit record to its fsync",
            m.audit_write.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Audit records that could not be written",
            m.audit_failures.clone(),
        );
        registry.register(
            "gateway_connected",
            "1 while connected to the Discord gateway",
            m.gateway_connected.clone(),
        );
        registry.register(
            "catalog_age_seconds",
            "Seconds since the region's instance list was last fetched successfully",
            m.catalog_age.clone(),
        );
        registry.register(
            "catalog_instances",
            "Instances in the region's catalog list",
            m.catalog_instances.clone(),
        );
        registry.register(
            "catalog_refresh_failures",
            "Catalog refreshes that failed; the last good list was kept",
            m.catalog_refresh_failures.clone(),
        );
        registry.register(
            "audit_ship_lag_seconds",
            "Age of the oldest journal record not yet shipped to object storage",
            m.audit_ship_lag.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The Prometheus/OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn command(&self, outcome: &str) {
        self.commands
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A request refused by a limit: `user`, `instance` or `refusals`.
    /// `n` commands with one outcome (refusals counted, not recorded one by one).
    pub fn command_n(&self, outcome: &str, n: u64) {
        self.commands
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc_by(n);
    }

    pub fn limited(&self, which: &str) {
        self.limited
            .get_or_create(&Outcome {
                outcome: which.to_owned(),
            })
            .inc();
    }

    pub fn catalog_age(&self, product: Product, region: &str, secs: i64) {
        self.catalog_age
            .get_or_create(&RegionLabel {
                region: region.to_owned(),
                product,
            })
            .set(secs);
    }

    pub fn catalog_instances(&self, product: Product, region: &str, n: i64) {
        self.catalog_instances
            .get_or_create(&RegionLabel {
                region: region.to_owned(),
                product,
            })
            .set(n);
    }

    pub fn catalog_refresh_failure(&self, product: Product, region: &str) {
        self.catalog_refresh_failures
            .get_or_create(&RegionLabel {
                region: region.to_owned(),
                product,
            })
            .inc();
    }

    /// One Tencent call attempt: `Ok(())` or the error's code.
    pub fn tencent_call(&self, product: Product, action: &str, result: Result<(), String>) {
        self.tencent_calls
            .get_or_create(&CallLabel {
                product: product.as_str().to_owned(),
                action: action.to_owned(),
                result: result.err().unwrap_or_else(|| "ok".to_owned()),
            })
            .inc();
    }

    pub fn tencent_error(&self, code: &str) {
        self.tencent_errors
            .get_or_create(&Code {
                code: code.to_owned(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_series_carry_the_product_only_when_not_cvm() {
        let m = Metrics::new();
        m.catalog_instances(Product::Cvm, "ap-guangzhou", 3);
        m.catalog_instances(Product::Lighthouse, "ap-guangzhou", 2);
        m.tencent_call(Product::Lighthouse, "DescribeInstanceVncUrl", Ok(()));
        m.tencent_call(
            Product::Cvm,
            "DescribeInstanceVncUrl",
            Err("InvalidInstanceId.NotFound".into()),
        );
        let out = m.render();
        assert!(
            out.contains("vncbot_catalog_instances{region=\"ap-guangzhou\"} 3"),
            "{out}"
        );
        assert!(
            out.contains(
                "vncbot_catalog_instances{region=\"ap-guangzhou\",product=\"lighthouse\"} 2"
            ),
            "{out}"
        );
        assert!(out.contains("vncbot_tencent_calls_total{product=\"lighthouse\",action=\"DescribeInstanceVncUrl\",result=\"ok\"} 1"), "{out}");
        assert!(out.contains("vncbot_tencent_calls_total{product=\"cvm\",action=\"DescribeInstanceVncUrl\",result=\"InvalidInstanceId.NotFound\"} 1"), "{out}");
    }
}
