//! Which host serves a product in a region.

use reqwest::Url;

use crate::ids::{Product, Region};

/// Where a request goes and the `Host` value it is signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: Url,
    /// `host[:port]`, exactly as sent in the `Host` header (and signed).
    pub host: String,
}

/// The endpoint for `product` in `region`. CVM: the nearest-access domain for ordinary regions;
/// finance-cloud regions (`*-fsi`) are reachable only at `cvm.<region>.tencentcloudapi.com`, which
/// Tencent's own SDK does not pick for you. Lighthouse has one documented
/// host, `lighthouse.tencentcloudapi.com`, for every region (the region goes in `X-TC-Region`);
/// the config refuses Lighthouse in finance-cloud regions. An `override_url` serves every product:
/// the service is told apart by the credential scope and `X-TC-Version`, not the host; it wins
/// over the hosts above (private links, tests).
pub fn resolve_for(product: Product, region: &Region, override_url: Option<&Url>) -> Endpoint {
    let url = match (product, override_url) {
        (_, Some(u)) => u.clone(),
        (Product::Lighthouse, None) => {
            Url::parse("https://lighthouse.tencentcloudapi.com/").expect("constant URL")
        }
        (Product::Cvm, None) => cvm_url(region),
    };
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => unreachable!("config validation only accepts URLs with a host"),
    };
    Endpoint { url, host }
}

fn cvm_url(region: &Region) -> Url {
    if region.is_finance() {
        Url::parse(&format!("https://cvm.{region}.tencentcloudapi.com/"))
            .expect("a known region makes a valid host name")
    } else {
        Url::parse("https://cvm.tencentcloudapi.com/").expect("constant URL")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Region {
        Region::parse(s).unwrap()
    }

    /// CVM's endpoint.
    fn resolve(region: &Region, override_url: Option<&Url>) -> Endpoint {
        resolve_for(Product::Cvm, region, override_url)
    }

    #[test]
    fn ordinary_and_finance_regions() {
        let e = resolve(&r("ap-guangzhou"), None);
        assert_eq!(e.host, "cvm.tencentcloudapi.com");
        assert_eq!(e.url.as_str(), "https://cvm.tencentcloudapi.com/");
        let e = resolve(&r("ap-shanghai-fsi"), None);
        assert_eq!(e.host, "cvm.ap-shanghai-fsi.tencentcloudapi.com");
        assert_eq!(
            e.url.as_str(),
            "https://cvm.ap-shanghai-fsi.tencentcloudapi.com/"
        );
    }

    #[test]
    fn lighthouse_has_one_host() {
        for region in ["ap-guangzhou", "ap-singapore"] {
            let e = resolve_for(Product::Lighthouse, &r(region), None);
            assert_eq!(e.host, "lighthouse.tencentcloudapi.com");
            assert_eq!(e.url.as_str(), "https://lighthouse.tencentcloudapi.com/");
        }
        assert_eq!(
            resolve_for(Product::Cvm, &r("ap-shanghai-fsi"), None),
            resolve(&r("ap-shanghai-fsi"), None)
        );
        let o = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            resolve_for(Product::Lighthouse, &r("ap-guangzhou"), Some(&o)).host,
            "127.0.0.1:8080"
        );
    }

    #[test]
    fn override_keeps_its_port_in_the_host() {
        let o = Url::parse("http://127.0.0.1:8080").unwrap();
        let e = resolve(&r("ap-shanghai-fsi"), Some(&o));
        assert_eq!(e.host, "127.0.0.1:8080");
        let o = Url::parse("https://cvm.internal.example").unwrap();
        assert_eq!(
            resolve(&r("ap-guangzhou"), Some(&o)).host,
            "cvm.internal.example"
        );
    }
}
