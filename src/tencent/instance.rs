//! One instance as `DescribeInstances` lists it: the model both the client (which parses
//! Tencent's answer into it) and the catalog (which keeps and searches it) use.
//!
//! Names, tags, zones and OS names are untrusted text from the cloud account: they are bounded
//! and stripped of control and format characters (bidi overrides, zero-width joiners) when the
//! answer is parsed, before anything else sees them.

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;

use crate::ids::{InstanceId, Product, Region};
use crate::text::{clean, is_invisible, truncate};

/// Longest instance name kept (Tencent allows 128 characters; a longer one is cut).
pub const MAX_NAME_CHARS: usize = 128;
/// Most tags kept per instance (Tencent allows 50 per resource).
pub const MAX_TAGS: usize = 50;
pub const MAX_TAG_KEY_CHARS: usize = 127;
pub const MAX_TAG_VALUE_CHARS: usize = 255;
/// Most addresses of each kind kept per instance.
pub const MAX_IPS: usize = 16;
const MAX_ZONE_CHARS: usize = 64;
const MAX_OS_CHARS: usize = 128;
const MAX_STATE_CHARS: usize = 32;
/// Discord's limit on an autocomplete choice's name.
pub const MAX_LABEL_CHARS: usize = 100;
/// Discord's limit on autocomplete choices.
pub const MAX_CHOICES: usize = 25;

/// An instance's state (`InstanceState`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum State {
    Pending,
    LaunchFailed,
    Running,
    Stopped,
    Starting,
    Stopping,
    Rebooting,
    Shutdown,
    Terminating,
    /// A state this version does not know (bounded, letters, digits and `_` only).
    Other(String),
}

impl State {
    pub fn parse(s: &str) -> Self {
        match s {
            "PENDING" => Self::Pending,
            "LAUNCH_FAILED" => Self::LaunchFailed,
            "RUNNING" => Self::Running,
            "STOPPED" => Self::Stopped,
            "STARTING" => Self::Starting,
            "STOPPING" => Self::Stopping,
            "REBOOTING" => Self::Rebooting,
            "SHUTDOWN" => Self::Shutdown,
            "TERMINATING" => Self::Terminating,
            other => Self::Other(
                other
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .take(MAX_STATE_CHARS)
                    .collect(),
            ),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::Pending => "PENDING",
            Self::LaunchFailed => "LAUNCH_FAILED",
            Self::Running => "RUNNING",
            Self::Stopped => "STOPPED",
            Self::Starting => "STARTING",
            Self::Stopping => "STOPPING",
            Self::Rebooting => "REBOOTING",
            Self::Shutdown => "SHUTDOWN",
            Self::Terminating => "TERMINATING",
            Self::Other(s) if s.is_empty() => "UNKNOWN",
            Self::Other(s) => s,
        }
    }

    /// False for the states that certainly have no console (stopped, being created, failed,
    /// shutting down, starting): refuse before calling Tencent. `REBOOTING` and states this
    /// version does not know are left for Tencent to decide.
    pub fn can_serve_console(&self) -> bool {
        !matches!(
            self,
            Self::Pending
                | Self::LaunchFailed
                | Self::Stopped
                | Self::Starting
                | Self::Stopping
                | Self::Shutdown
                | Self::Terminating
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One instance as the catalog saw it. Every text field is bounded and free of control and
/// format characters; IPs are parsed addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub id: InstanceId,
    /// Not unique; may be empty.
    pub name: String,
    pub state: State,
    pub private_ips: Vec<IpAddr>,
    pub public_ips: Vec<IpAddr>,
    pub zone: String,
    pub os: String,
    /// `(key, value)`, at most `MAX_TAGS` (50). A tag too long or with control or format
    /// characters is dropped: it can never satisfy a rule (fail closed).
    pub tags: Vec<(String, String)>,
    pub region: Region,
    /// Lower-cased name, tag values and IPs, `\0`-separated, for case-insensitive search
    /// without work per query.
    folded: Box<str>,
}

impl Instance {
    /// Builds an instance from already-trusted parts (tests, fakes); text is cleaned as when
    /// parsed from Tencent's answer.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: InstanceId,
        name: &str,
        state: State,
        private_ips: Vec<IpAddr>,
        public_ips: Vec<IpAddr>,
        zone: &str,
        os: &str,
        tags: Vec<(String, String)>,
        region: Region,
    ) -> Self {
        let name = clean(name, MAX_NAME_CHARS);
        let tags: Vec<(String, String)> = tags
            .into_iter()
            .filter_map(|(k, v)| clean_tag(&k, &v))
            .take(MAX_TAGS)
            .collect();
        let mut folded = name.to_lowercase();
        for (_, v) in &tags {
            folded.push('\0');
            folded.push_str(&v.to_lowercase());
        }
        for ip in private_ips.iter().chain(&public_ips) {
            use std::fmt::Write;
            let _ = write!(folded, "\0{ip}");
        }
        Self {
            id,
            name,
            state,
            private_ips,
            public_ips,
            zone: clean(zone, MAX_ZONE_CHARS),
            os: clean(os, MAX_OS_CHARS),
            tags,
            region,
            folded: folded.into_boxed_str(),
        }
    }

    /// CVM or Lighthouse (from the ID's prefix).
    pub fn product(&self) -> Product {
        self.id.product()
    }

    /// The tag's value, if the instance carries it.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// How well `query` (already lower-cased, not empty) matches: 0 exact, 1 prefix,
    /// 2 substring, over ID, name, IPs and tag values; `None` when it does not.
    pub(super) fn rank(&self, query: &str) -> Option<u8> {
        let field_rank = |field: &str| {
            if field == query {
                Some(0)
            } else if field.starts_with(query) {
                Some(1)
            } else if field.contains(query) {
                Some(2)
            } else {
                None
            }
        };
        let mut best = field_rank(self.id.as_str());
        // Most instances do not match at all: one scan tells (the query holds no `\0`, so a
        // match inside `folded` lies within one field).
        if !self.folded.contains(query) {
            return best;
        }
        for part in self.folded.split('\0') {
            best = best.into_iter().chain(field_rank(part)).min();
            if best == Some(0) {
                break;
            }
        }
        best
    }
}

fn clean_tag(k: &str, v: &str) -> Option<(String, String)> {
    let ok = |s: &str, max: usize| s.chars().count() <= max && !s.chars().any(is_invisible);
    (!k.is_empty() && ok(k, MAX_TAG_KEY_CHARS) && ok(v, MAX_TAG_VALUE_CHARS))
        .then(|| (k.to_owned(), v.to_owned()))
}

/// An `InstanceSet[]` entry as Tencent sends it, CVM's shape or Lighthouse's (which names the
/// addresses `PrivateAddresses`/`PublicAddresses` and has `Zone` at the top level); every field
/// optional, so one odd entry cannot fail a whole page.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RawInstance {
    #[serde(rename = "InstanceId")]
    id: Option<String>,
    #[serde(rename = "InstanceName")]
    name: Option<String>,
    #[serde(rename = "InstanceState")]
    state: Option<String>,
    #[serde(rename = "PrivateIpAddresses")]
    private_ips: Option<Vec<String>>,
    #[serde(rename = "PublicIpAddresses")]
    public_ips: Option<Vec<String>>,
    #[serde(rename = "Placement")]
    placement: Option<RawPlacement>,
    #[serde(rename = "PrivateAddresses")]
    private_addresses: Option<Vec<String>>,
    #[serde(rename = "PublicAddresses")]
    public_addresses: Option<Vec<String>>,
    #[serde(rename = "Zone")]
    zone: Option<String>,
    #[serde(rename = "OsName")]
    os: Option<String>,
    #[serde(rename = "Tags")]
    tags: Option<Vec<RawTag>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawPlacement {
    #[serde(rename = "Zone")]
    zone: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RawTag {
    #[serde(rename = "Key")]
    key: Option<String>,
    #[serde(rename = "Value")]
    value: Option<String>,
}

impl RawInstance {
    /// `None` when the entry has no valid instance ID of `product` (the product whose
    /// `DescribeInstances` answered).
    pub(super) fn into_instance(self, region: &Region, product: Product) -> Option<Instance> {
        let id = InstanceId::parse(self.id.as_deref()?).ok()?;
        if id.product() != product {
            return None;
        }
        let ips = |v: Option<Vec<String>>| -> Vec<IpAddr> {
            v.unwrap_or_default()
                .iter()
                .filter_map(|s| s.trim().parse().ok())
                .take(MAX_IPS)
                .collect()
        };
        let tags = self
            .tags
            .unwrap_or_default()
            .into_iter()
            .filter_map(|t| Some((t.key?, t.value.unwrap_or_default())))
            .collect();
        Some(Instance::new(
            id,
            self.name.as_deref().unwrap_or_default(),
            State::parse(self.state.as_deref().unwrap_or_default()),
            ips(self.private_ips.or(self.private_addresses)),
            ips(self.public_ips.or(self.public_addresses)),
            self.placement
                .and_then(|p| p.zone)
                .or(self.zone)
                .as_deref()
                .unwrap_or_default(),
            self.os.as_deref().unwrap_or_default(),
            tags,
            region.clone(),
        ))
    }
}

/// `web-01 · ins-abc12345 · RUNNING · 10.0.0.5 · ap-guangzhou` (a Lighthouse instance ends
/// `· Lighthouse`): at most [`MAX_LABEL_CHARS`] characters; a long name is cut on a character
/// boundary with `…` so the ID stays visible.
pub fn choice_label(i: &Instance) -> String {
    let mut tail = format!(" · {} · {}", i.id, i.state);
    if let Some(ip) = i.private_ips.first().or(i.public_ips.first()) {
        tail.push_str(&format!(" · {ip}"));
    }
    tail.push_str(&format!(" · {}", i.region));
    if i.product() != Product::Cvm {
        tail.push_str(&format!(" · {}", i.product().title()));
    }
    let name: String = i.name.chars().filter(|c| !is_invisible(*c)).collect();
    let name = if name.trim().is_empty() {
        "(no name)"
    } else {
        name.trim()
    };
    let budget = MAX_LABEL_CHARS.saturating_sub(tail.chars().count());
    let label = if name.chars().count() <= budget {
        format!("{name}{tail}")
    } else if budget >= 8 {
        let cut: String = name.chars().take(budget - 1).collect();
        format!("{}…{tail}", cut.trim_end())
    } else {
        format!("{name}{tail}")
    };
    truncate(&label, MAX_LABEL_CHARS)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::tencent) fn inst(
        id: &str,
        name: &str,
        state: &str,
        ip: &str,
        tags: &[(&str, &str)],
    ) -> Instance {
        Instance::new(
            InstanceId::parse(id).unwrap(),
            name,
            State::parse(state),
            vec![ip.parse().unwrap()],
            vec![],
            "ap-guangzhou-3",
            "Ubuntu 22.04",
            tags.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            Region::parse("ap-guangzhou").unwrap(),
        )
    }

    #[test]
    fn labels_are_bounded_and_clean() {
        let i = inst("ins-abc12345", "web-01", "RUNNING", "10.0.0.5", &[]);
        assert_eq!(
            choice_label(&i),
            "web-01 · ins-abc12345 · RUNNING · 10.0.0.5 · ap-guangzhou"
        );
        let long = inst("ins-abc12345", &"é".repeat(120), "RUNNING", "10.0.0.5", &[]);
        let l = choice_label(&long);
        assert_eq!(l.chars().count(), MAX_LABEL_CHARS, "{l}");
        assert!(
            l.ends_with("· ins-abc12345 · RUNNING · 10.0.0.5 · ap-guangzhou"),
            "{l}"
        );
        assert!(l.contains("é… · ins-"), "{l}");
        let hostile = inst(
            "ins-abc12345",
            "a\u{202E}b\u{200B}c\nd\u{0007}",
            "RUNNING",
            "10.0.0.5",
            &[],
        );
        assert_eq!(hostile.name, "abcd");
        assert!(choice_label(&hostile).starts_with("abcd · "));
        let empty = inst("ins-abc12345", " \u{200F} ", "RUNNING", "10.0.0.5", &[]);
        assert!(choice_label(&empty).starts_with("(no name) · "));
    }

    #[test]
    fn states_that_cannot_serve_a_console() {
        for s in [
            "STOPPED",
            "SHUTDOWN",
            "PENDING",
            "LAUNCH_FAILED",
            "TERMINATING",
            "STOPPING",
            "STARTING",
        ] {
            assert!(!State::parse(s).can_serve_console(), "{s}");
            assert_eq!(State::parse(s).as_str(), s);
        }
        for s in ["RUNNING", "REBOOTING", "NEW_STATE"] {
            assert!(State::parse(s).can_serve_console(), "{s}");
        }
        assert_eq!(State::parse("x\u{202E}y <@1>").as_str(), "xy1");
        assert_eq!(State::parse("").as_str(), "UNKNOWN");
    }

    #[test]
    fn raw_entries_are_bounded_and_cleaned() {
        let tags: Vec<serde_json::Value> =
            [serde_json::json!({"Key": "evil", "Value": "a\u{202E}b"})]
                .into_iter()
                .chain((0..80).map(|n| serde_json::json!({"Key": format!("k{n}"), "Value": "v"})))
                .collect();
        let raw: RawInstance = serde_json::from_value(serde_json::json!({
            "InstanceId": "ins-abc12345",
            "InstanceName": "x".repeat(500),
            "InstanceState": "RUNNING",
            "PrivateIpAddresses": ["10.0.0.1", "not an ip"],
            "PublicIpAddresses": null,
            "Placement": {"Zone": "ap-guangzhou-3"},
            "OsName": "Ubuntu",
            "Tags": tags,
        }))
        .unwrap();
        let i = raw
            .into_instance(&Region::parse("ap-guangzhou").unwrap(), Product::Cvm)
            .unwrap();
        assert_eq!(i.name.chars().count(), MAX_NAME_CHARS);
        assert_eq!(i.private_ips.len(), 1);
        assert!(i.public_ips.is_empty());
        assert_eq!(i.tags.len(), MAX_TAGS);
        assert_eq!(i.tag("evil"), None);
        assert_eq!(i.zone, "ap-guangzhou-3");
        let bad: RawInstance =
            serde_json::from_value(serde_json::json!({"InstanceId": "lhins-1"})).unwrap();
        assert!(bad
            .into_instance(&Region::parse("ap-guangzhou").unwrap(), Product::Lighthouse)
            .is_none());
    }

    #[test]
    fn lighthouse_entries_have_their_own_shape() {
        let gz = Region::parse("ap-guangzhou").unwrap();
        let entry = || {
            serde_json::json!({
                "InstanceId": "lhins-abc12345",
                "InstanceName": "blog",
                "InstanceState": "RUNNING",
                "PrivateAddresses": ["10.1.0.7"],
                "PublicAddresses": ["203.0.113.7"],
                "Zone": "ap-guangzhou-3",
                "OsName": "Ubuntu Server 22.04 LTS 64bit",
                "Tags": [{"Key": "env", "Value": "prod"}],
            })
        };
        let raw: RawInstance = serde_json::from_value(entry()).unwrap();
        let i = raw.into_instance(&gz, Product::Lighthouse).unwrap();
        assert_eq!(i.product(), Product::Lighthouse);
        assert_eq!(i.private_ips, vec!["10.1.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(i.public_ips, vec!["203.0.113.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(i.zone, "ap-guangzhou-3");
        assert_eq!(i.tag("env"), Some("prod"));
        assert_eq!(
            choice_label(&i),
            "blog · lhins-abc12345 · RUNNING · 10.1.0.7 · ap-guangzhou · Lighthouse"
        );
        // An answer of one product never files an instance of the other.
        let raw: RawInstance = serde_json::from_value(entry()).unwrap();
        assert!(raw.into_instance(&gz, Product::Cvm).is_none());
    }
}
