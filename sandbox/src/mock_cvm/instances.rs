//! The instances the mock knows, and how each product describes one.

use serde_json::{json, Value};

/// One instance as the mock knows it (both actions read it).
#[derive(Debug, Clone)]
pub struct MockInstance {
    pub id: String,
    pub region: String,
    pub name: String,
    pub state: String,
    pub private_ips: Vec<String>,
    /// `None` is sent as JSON null, as Tencent does for an instance without a public address.
    pub public_ips: Option<Vec<String>>,
    pub zone: String,
    pub os: String,
    pub tags: Vec<(String, String)>,
}

/// The product a request or an instance belongs to, as the mock tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Cvm,
    Lighthouse,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Cvm => "cvm",
            Service::Lighthouse => "lighthouse",
        }
    }

    pub(super) fn of_version(v: &str) -> Option<Self> {
        match v {
            "2017-03-12" => Some(Service::Cvm),
            "2020-03-24" => Some(Service::Lighthouse),
            _ => None,
        }
    }

    pub(super) fn of_id(id: &str) -> Self {
        if id.starts_with("lhins-") {
            Service::Lighthouse
        } else {
            Service::Cvm
        }
    }
}

/// Regions where the mock serves Lighthouse.
pub const LIGHTHOUSE_REGIONS: &[&str] = &["ap-guangzhou", "ap-singapore"];

impl MockInstance {
    /// A RUNNING instance in ap-guangzhou-3 with a private IP derived from `n`.
    pub fn new(id: &str, name: &str, n: u32) -> Self {
        Self {
            id: id.to_owned(),
            region: "ap-guangzhou".to_owned(),
            name: name.to_owned(),
            state: "RUNNING".to_owned(),
            private_ips: vec![format!(
                "10.{}.{}.{}",
                (n >> 16) & 255,
                (n >> 8) & 255,
                n & 255
            )],
            public_ips: None,
            zone: "ap-guangzhou-3".to_owned(),
            os: "TencentOS Server 3.1 (TK4)".to_owned(),
            tags: Vec::new(),
        }
    }

    pub fn in_region(mut self, region: &str) -> Self {
        self.zone = format!("{region}-1");
        self.region = region.to_owned();
        self
    }

    pub fn state(mut self, state: &str) -> Self {
        self.state = state.to_owned();
        self
    }

    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn public_ip(mut self, ip: &str) -> Self {
        self.public_ips
            .get_or_insert_with(Vec::new)
            .push(ip.to_owned());
        self
    }

    /// The `InstanceSet[]` entry, with the fields Tencent sends besides the ones vncbot reads.
    pub(super) fn to_json(&self) -> Value {
        if Service::of_id(&self.id) == Service::Lighthouse {
            return self.to_lighthouse_json();
        }
        json!({
            "Placement": {"Zone": self.zone, "ProjectId": 0, "HostIds": null, "HostIps": null, "HostId": null},
            "InstanceId": self.id,
            "Uuid": format!("{}-uuid", self.id),
            "InstanceState": self.state,
            "RestrictState": "NORMAL",
            "InstanceName": self.name,
            "InstanceChargeType": "POSTPAID_BY_HOUR",
            "InstanceType": "S5.MEDIUM4",
            "CPU": 2,
            "Memory": 4,
            "SystemDisk": {"DiskType": "CLOUD_PREMIUM", "DiskId": "disk-mock0001", "DiskSize": 50},
            "DataDisks": null,
            "PrivateIpAddresses": self.private_ips,
            "PublicIpAddresses": self.public_ips,
            "InternetAccessible": {"InternetChargeType": "TRAFFIC_POSTPAID_BY_HOUR", "InternetMaxBandwidthOut": 0},
            "VirtualPrivateCloud": {"VpcId": "vpc-mock0001", "SubnetId": "subnet-mock0001", "AsVpcGateway": false},
            "ImageId": "img-mock0001",
            "OsName": self.os,
            "SecurityGroupIds": ["sg-mock0001"],
            "LoginSettings": {"KeyIds": null},
            "Tags": self.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
            "CreatedTime": "2024-01-01T00:00:00Z",
            "ExpiredTime": null,
            "LatestOperation": null,
            "LatestOperationState": null,
            "LatestOperationRequestId": null,
            "IPv6Addresses": null,
            "CamRoleName": "",
            "DisasterRecoverGroupId": "",
            "StopChargingMode": "NOT_APPLICABLE",
        })
    }

    /// Lighthouse's `Instance` shape (2020-03-24): addresses and zone under their own names.
    fn to_lighthouse_json(&self) -> Value {
        json!({
            "InstanceId": self.id,
            "BundleId": "bundle_starter_mc_med2_02",
            "BlueprintId": "lhbp-mock0001",
            "CPU": 2,
            "Memory": 2,
            "InstanceName": self.name,
            "InstanceChargeType": "PREPAID",
            "SystemDisk": {"DiskType": "CLOUD_SSD", "DiskSize": 40, "DiskId": "lhdisk-mock0001"},
            "PrivateAddresses": self.private_ips,
            "PublicAddresses": self.public_ips.clone().unwrap_or_default(),
            "InternetAccessible": {"InternetChargeType": "TRAFFIC_POSTPAID_BY_HOUR", "InternetMaxBandwidthOut": 5, "PublicIpAssigned": true},
            "RenewFlag": "NOTIFY_AND_AUTO_RENEW",
            "LoginSettings": {"KeyIds": []},
            "InstanceState": self.state,
            "Uuid": format!("{}-uuid", self.id),
            "LatestOperation": "StartInstances",
            "LatestOperationState": "SUCCESS",
            "LatestOperationRequestId": "mock-op-0001",
            "IsolatedTime": null,
            "CreatedTime": "2024-01-01T00:00:00Z",
            "ExpiredTime": "2025-01-01T00:00:00Z",
            "PlatformType": "LINUX_UNIX",
            "Platform": "UBUNTU",
            "OsName": self.os,
            "Zone": self.zone,
            "Tags": self.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
            "InstanceRestrictState": "NORMAL",
        })
    }
}
