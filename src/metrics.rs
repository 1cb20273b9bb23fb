//! Prometheus metrics: ours prefixed `vncbot_`, and the standard `process_*` ones. Each [`Metrics`] is its own registry: the process
//! makes one in `app::build_core` and hands it to what counts (the core, the journal, the Tencent
//! clients, the catalog, the Discord adapter) and to the admin endpoint that serves it. So two
//! cores in one process (the tests) never count into each other, and a test can assert exact
//! counts.

mod process;

use std::sync::{Arc, Mutex};

use crate::ids::Product;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
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
    /// Approval requests waiting for an approver, read from the core at each scrape.
    approvals_pending: Sampled,
    /// Config reloads (SIGHUP) that failed; the config in force was kept.
    pub config_reload_failures: Counter,
    /// When the config in force was last loaded (start-up or reload), in Unix seconds.
    pub config_last_reload_success: Gauge,
    /// Grants live now, read from the core at each scrape.
    grants_live: Sampled,
    /// Break-glass uses neither acknowledged nor flagged yet (overdue ones included).
    pub break_glass_unacknowledged: Gauge,
}

/// The labels of `vncbot_limited_total`: a per-member limit, a per-instance limit, or refusals
/// past a member's refusal budget.
pub const LIMITED: [&str; 3] = ["user", "instance", "refusals"];

/// The version label of `vncbot_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Version {
    version: String,
}

/// A gauge read at scrape time from whoever holds the number (0 until someone does), so it
/// cannot drift from the state it counts.
#[derive(Clone)]
struct Sampled {
    name: &'static str,
    help: &'static str,
    sample: Arc<Mutex<Option<Sample>>>,
}

impl Sampled {
    fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            sample: Arc::default(),
        }
    }

    fn set(&self, sample: Sample) {
        *self.sample.lock().unwrap_or_else(|e| e.into_inner()) = Some(sample);
    }
}

type Sample = Arc<dyn Fn() -> i64 + Send + Sync>;

impl std::fmt::Debug for Sampled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let sample = self
            .sample
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let gauge = ConstGauge::new(sample.map_or(0, |f| f()));
        let metric = encoder.encode_descriptor(self.name, self.help, None, gauge.metric_type())?;
        gauge.encode(metric)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry of its own, every metric at its start value.
    pub fn new() -> Self {
        // The process's own metrics keep their standard names (`process_*`); ours are `vncbot_`.
        let mut root = Registry::default();
        root.register_collector(Box::new(process::Process));
        let registry = root.sub_registry_with_prefix("vncbot");
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
            approvals_pending: Sampled::new(
                "approvals_pending",
                "Approval requests waiting for an approver",
            ),
            config_reload_failures: Counter::default(),
            config_last_reload_success: Gauge::default(),
            grants_live: Sampled::new("grants_live", "Grants whose window is open now"),
            break_glass_unacknowledged: Gauge::default(),
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
            "Audit records that could not be written, and each time the journal file was found moved, deleted or replaced",
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
        registry.register_collector(Box::new(m.approvals_pending.clone()));
        registry.register(
            "config_reload_failures",
            "Config reloads (SIGHUP) that failed; the config in force was kept",
            m.config_reload_failures.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "When the config in force was loaded (start-up or the last successful reload), in Unix seconds",
            m.config_last_reload_success.clone(),
        );
        registry.register_collector(Box::new(m.grants_live.clone()));
        let build: Family<Version, Gauge> = Family::default();
        build
            .get_or_create(&Version {
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
            .set(1);
        registry.register("build_info", "The running build: always 1", build);
        registry.register(
            "audit_ship_lag_seconds",
            "Age of the oldest journal record not yet shipped to object storage",
            m.audit_ship_lag.clone(),
        );
        registry.register(
            "break_glass_unacknowledged",
            "Break-glass uses that no approver has acknowledged or flagged yet",
            m.break_glass_unacknowledged.clone(),
        );
        // Labels known from the start are exported at 0, so an alert on a rate sees a series
        // before the first event instead of no data.
        for which in LIMITED {
            m.limited
                .get_or_create(&Outcome {
                    outcome: which.to_owned(),
                })
                .inc_by(0);
        }
        Metrics {
            registry: root,
            ..m
        }
    }

    /// Exports each of these command outcomes at 0 until it first happens.
    pub fn know_outcomes<'a>(&self, codes: impl IntoIterator<Item = &'a str>) {
        for code in codes {
            self.commands
                .get_or_create(&Outcome {
                    outcome: code.to_owned(),
                })
                .inc_by(0);
        }
    }

    /// Exports the series of each product listed in each region at 0 until it first counts:
    /// catalog refresh failures, and the successful Tencent calls of each action.
    pub fn know_lists<'a>(&self, lists: impl IntoIterator<Item = (Product, &'a str)>) {
        for (product, region) in lists {
            self.catalog_refresh_failures
                .get_or_create(&RegionLabel {
                    region: region.to_owned(),
                    product,
                })
                .inc_by(0);
            for action in ["DescribeInstanceVncUrl", "DescribeInstances"] {
                self.tencent_calls
                    .get_or_create(&CallLabel {
                        product: product.as_str().to_owned(),
                        action: action.to_owned(),
                        result: "ok".to_owned(),
                    })
                    .inc_by(0);
            }
        }
    }

    /// Where `vncbot_grants_live` is read from at each scrape.
    pub fn sample_grants_live(&self, live: impl Fn() -> i64 + Send + Sync + 'static) {
        self.grants_live.set(Arc::new(live));
    }

    /// Where `vncbot_approvals_pending` is read from at each scrape.
    pub fn sample_approvals_pending(&self, pending: impl Fn() -> i64 + Send + Sync + 'static) {
        self.approvals_pending.set(Arc::new(pending));
    }

    /// The config in force was loaded now (at start-up, or by a successful reload).
    pub fn config_loaded(&self, at: std::time::SystemTime) {
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.config_last_reload_success
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
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

    /// How many commands ended with `outcome` so far (for tests and the demo's tour).
    pub fn commands_with(&self, outcome: &str) -> u64 {
        self.commands
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .get()
    }

    /// `n` commands with one outcome (refusals counted, not recorded one by one).
    pub fn command_n(&self, outcome: &str, n: u64) {
        self.commands
            .get_or_create(&Outcome {
                outcome: outcome.to_owned(),
            })
            .inc_by(n);
    }

    /// A request refused by a limit: `user`, `instance` or `refusals`.
    pub fn limited(&self, which: &str) {
        debug_assert!(LIMITED.contains(&which), "{which} is not in LIMITED");
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
    fn known_series_build_info_and_the_process_are_exported_from_the_start() {
        let m = Metrics::new();
        m.know_outcomes(["granted", "denied"]);
        m.know_lists([
            (Product::Cvm, "ap-guangzhou"),
            (Product::Lighthouse, "ap-guangzhou"),
        ]);
        let out = m.render();
        for expect in [
            "vncbot_commands_total{outcome=\"granted\"} 0\n",
            "vncbot_commands_total{outcome=\"denied\"} 0\n",
            "vncbot_limited_total{outcome=\"user\"} 0\n",
            "vncbot_limited_total{outcome=\"instance\"} 0\n",
            "vncbot_limited_total{outcome=\"refusals\"} 0\n",
            "vncbot_catalog_refresh_failures_total{region=\"ap-guangzhou\"} 0\n",
            "vncbot_catalog_refresh_failures_total{region=\"ap-guangzhou\",product=\"lighthouse\"} 0\n",
            "vncbot_tencent_calls_total{product=\"lighthouse\",action=\"DescribeInstanceVncUrl\",result=\"ok\"} 0\n",
            "vncbot_dm_failures_total 0\n",
            "vncbot_audit_write_failures_total 0\n",
            "vncbot_config_reload_failures_total 0\n",
            "vncbot_grants_live 0\n",
            "vncbot_approvals_pending 0\n",
            "# TYPE process_cpu_seconds counter\n",
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "process_max_fds ",
        ] {
            assert!(out.contains(expect), "missing {expect:?} in\n{out}");
        }
        let build = format!(
            "vncbot_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        assert!(out.contains(&build), "{out}");
        assert!(!out.contains("vncbot_process"), "{out}");
        // The start time is this process's, within the last hour.
        let started: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            started <= now + 1.0 && started > now - 3600.0,
            "{started} vs {now}"
        );
        m.sample_grants_live(|| 3);
        m.sample_approvals_pending(|| 2);
        let out = m.render();
        assert!(out.contains("vncbot_grants_live 3\n"), "{out}");
        assert!(out.contains("vncbot_approvals_pending 2\n"), "{out}");
    }

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
