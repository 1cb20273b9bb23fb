//! The Tencent client as the tests build it: against the mock (or any local endpoint), with
//! short retries, so a test names only what it changes.

use std::num::NonZeroU32;
use std::time::Duration;

use vncbot::ids::{Product, Region};
use vncbot::limits::ApiPacer;
use vncbot::tencent::{Language, RetryPolicy, TencentClient, TencentConfig, TencentCredentials};
use vncbot_sandbox::mock_cvm::{self, MockCvm};

/// Credentials as the environment would give them.
pub fn creds(id: &str, key: &str, token: Option<&str>) -> TencentCredentials {
    TencentCredentials {
        secret_id: id.into(),
        secret_key: key.to_string().into(),
        session_token: token.map(|t| t.to_string().into()),
    }
}

/// The key the mock accepts.
pub fn mock_creds() -> TencentCredentials {
    creds(mock_cvm::SECRET_ID, mock_cvm::SECRET_KEY, None)
}

/// A [`TencentClient`] to build. By default: CVM only, in ap-guangzhou, the mock's key, a 2 s
/// timeout, 10 console calls a second (a caller waits up to 60 s), and 3 attempts from 20 ms
/// with 1.1 s after a rate limit.
pub struct ClientBuilder {
    config: TencentConfig,
    creds: TencentCredentials,
    pacer_wait: Duration,
    retry: RetryPolicy,
}

impl ClientBuilder {
    /// A client of `endpoint` (`http://127.0.0.1:PORT`).
    pub fn at(endpoint: &str) -> Self {
        Self {
            config: TencentConfig {
                regions: vec![Region::parse("ap-guangzhou").unwrap()],
                products: vec![Product::Cvm],
                lighthouse_regions: vec![],
                endpoint: Some(endpoint.parse().unwrap()),
                language: Language::EnUs,
                timeout: Duration::from_secs(2),
            },
            creds: mock_creds(),
            pacer_wait: Duration::from_secs(60),
            retry: RetryPolicy {
                attempts: 3,
                base: Duration::from_millis(20),
                rate_limited_floor: Duration::from_millis(1100),
            },
        }
    }

    pub fn mock(mock: &MockCvm) -> Self {
        Self::at(&mock.endpoint())
    }

    /// The configured regions; the first is the default.
    pub fn regions(mut self, regions: &[&str]) -> Self {
        self.config.regions = parse_regions(regions);
        self
    }

    pub fn products(mut self, products: &[Product]) -> Self {
        self.config.products = products.to_vec();
        self
    }

    pub fn lighthouse_regions(mut self, regions: &[&str]) -> Self {
        self.config.lighthouse_regions = parse_regions(regions);
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    pub fn creds(mut self, creds: TencentCredentials) -> Self {
        self.creds = creds;
        self
    }

    /// How long a console call may wait for its slot.
    pub fn pacer_wait(mut self, wait: Duration) -> Self {
        self.pacer_wait = wait;
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn build(self) -> TencentClient {
        let pacer = ApiPacer::new(NonZeroU32::new(10).unwrap(), self.pacer_wait);
        TencentClient::new(&self.config, self.creds, pacer, self.retry).unwrap()
    }
}

fn parse_regions(regions: &[&str]) -> Vec<Region> {
    regions.iter().map(|r| Region::parse(r).unwrap()).collect()
}
