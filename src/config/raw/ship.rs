//! `[audit.ship]`: where the journal is shipped (see `crate::ship`). Its default is
//! `ship::DEFAULT_SEGMENT_MINUTES`.

use serde::Deserialize;

use super::urls::parse_base_url;
use super::Collector;
use crate::ship::{ShipConfig, DEFAULT_SEGMENT_MINUTES, MAX_SEGMENT_MINUTES};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawShip {
    endpoint: String,
    bucket: String,
    #[serde(default)]
    prefix: String,
    region: String,
    #[serde(default = "default_segment_minutes")]
    segment_minutes: u32,
}

fn default_segment_minutes() -> u32 {
    DEFAULT_SEGMENT_MINUTES
}

impl RawShip {
    pub(super) fn validate(self, p: &mut Collector) -> Option<ShipConfig> {
        let endpoint = parse_base_url(
            p,
            "audit.ship.endpoint",
            &self.endpoint,
            "https://cos.ap-guangzhou.myqcloud.com or https://s3.eu-west-1.amazonaws.com",
        );
        // S3 and COS bucket names: lowercase letters, digits, dots and hyphens (COS adds -APPID).
        let bucket_ok = (3..=63).contains(&self.bucket.len())
            && self
                .bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            p.push(
                "audit.ship.bucket",
                format!(
                    "{:?} is not a bucket name: 3 to 63 lowercase letters, digits, dots or hyphens (on COS, with its -APPID suffix)",
                    crate::text::clean(&self.bucket, 80)
                ),
            );
        }
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            p.push(
                "audit.ship.region",
                "is not a region name such as \"ap-guangzhou\" or \"eu-west-1\" (it is part of each request's signature)",
            );
        }
        if self.prefix.len() > 256
            || self
                .prefix
                .chars()
                .any(|c| c.is_control() || c == '\\' || c.is_whitespace())
        {
            p.push(
                "audit.ship.prefix",
                "use at most 256 characters, no spaces, control characters or backslashes (for example \"vncbot/prod\")",
            );
        }
        let segment_minutes = p
            .in_range(
                "audit.ship.segment_minutes",
                self.segment_minutes,
                MAX_SEGMENT_MINUTES,
                "minutes between uploads of the journal to the bucket",
            )
            .get();
        Some(ShipConfig {
            endpoint: endpoint?,
            bucket: self.bucket,
            prefix: self.prefix,
            region: self.region,
            segment_minutes,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ParseError};

    const BASE: &str =
        "[discord]\nguild_ids = [800000000000000001]\n[tencent]\nregions = [\"ap-guangzhou\"]\n[[allow]]\nroles = [555000000000000001]\ninstances = [\"*\"]\nregions = [\"*\"]\n";

    fn parse(ship: &str) -> Result<Config, ParseError> {
        Config::parse(&format!("{BASE}[audit.ship]\n{ship}"))
    }

    #[test]
    fn a_ship_section_gets_its_default_segment_and_is_optional() {
        let c = parse("endpoint = \"https://cos.ap-guangzhou.myqcloud.com\"\nbucket = \"audit-1250000000\"\nregion = \"ap-guangzhou\"\nprefix = \"vncbot/prod\"").unwrap();
        let s = c.audit.ship.unwrap();
        assert_eq!(s.segment_minutes, 60);
        assert_eq!(s.prefix, "vncbot/prod");
        assert!(Config::parse(BASE).unwrap().audit.ship.is_none());
    }

    #[test]
    fn every_bad_ship_key_is_named() {
        let Err(ParseError::Invalid(problems)) = parse(
            "endpoint = \"http://cos.example.com\"\nbucket = \"Bad_Bucket\"\nregion = \"\"\nprefix = \"a b\"\nsegment_minutes = 0",
        ) else {
            panic!("accepted")
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "audit.ship.endpoint",
                "audit.ship.bucket",
                "audit.ship.region",
                "audit.ship.prefix",
                "audit.ship.segment_minutes"
            ]
        );
        assert!(problems[0].message.contains("not loopback"));
        assert!(parse("bucket = \"b\"").is_err());
    }
}
