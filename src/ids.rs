//! Validated identifiers. Everything that reaches Tencent or the allowlist has passed through one
//! of these constructors, so a malformed ID can never be sent or matched.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Longest user-supplied string we echo back in an error message; longer input is summarised.
const ECHO_LIMIT: usize = 40;

/// The Tencent Cloud product an instance belongs to; its ID's prefix says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Product {
    /// Cloud Virtual Machine: `ins-` IDs.
    Cvm,
    /// Lighthouse (lightweight application servers): `lhins-` IDs.
    Lighthouse,
}

impl Product {
    pub const ALL: [Product; 2] = [Product::Cvm, Product::Lighthouse];

    /// The name used in config files, metrics labels and the journal: `cvm`, `lighthouse`.
    /// It is also the TC3 service name (part of the credential scope).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cvm => "cvm",
            Self::Lighthouse => "lighthouse",
        }
    }

    /// How people write it: `CVM`, `Lighthouse`.
    pub fn title(self) -> &'static str {
        match self {
            Self::Cvm => "CVM",
            Self::Lighthouse => "Lighthouse",
        }
    }

    /// The ID prefix, dash included.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Cvm => "ins-",
            Self::Lighthouse => "lhins-",
        }
    }

    /// An example ID, for messages.
    pub fn example(self) -> &'static str {
        match self {
            Self::Cvm => "ins-a1b2c3d4",
            Self::Lighthouse => "lhins-a1b2c3d4",
        }
    }

    /// `cvm` or `lighthouse`.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// The product whose prefix `id` starts with (case-sensitively).
    fn of_prefix(id: &str) -> Option<Self> {
        // `lhins-` first: it does not start with `ins-`, but be explicit about the order.
        [Self::Lighthouse, Self::Cvm]
            .into_iter()
            .find(|p| id.starts_with(p.prefix()))
    }
}

impl fmt::Display for Product {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An instance ID: `ins-` (CVM) or `lhins-` (Lighthouse) followed by eight lower-case letters or
/// digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

/// Why a string is not an instance ID; the `Display` text is what the user sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInstanceId {
    #[error(
        "no instance ID was given: pass one like ins-a1b2c3d4 (CVM) or lhins-a1b2c3d4 (Lighthouse)"
    )]
    Empty,
    #[error("the instance ID is {0} characters long; a CVM instance ID is 12, like ins-a1b2c3d4 (a Lighthouse one is 14, like lhins-a1b2c3d4)")]
    WrongLength(usize),
    #[error("the Lighthouse instance ID is {0} characters long; it must be 14: `lhins-` and 8 lower-case letters or digits, like lhins-a1b2c3d4")]
    LighthouseWrongLength(usize),
    #[error("{0} contains characters that cannot be in an instance ID (only a-z and 0-9 after `ins-` or `lhins-`, like ins-a1b2c3d4)")]
    BadCharacters(Quoted),
    #[error("{0} has upper-case letters: instance IDs are lower case, try {1}")]
    UpperCase(Quoted, String),
    #[error("{0} does not start with `ins-` or `lhins-`; a CVM instance ID looks like ins-a1b2c3d4, a Lighthouse one like lhins-a1b2c3d4")]
    BadPrefix(Quoted),
}

impl InstanceId {
    /// Validates `^ins-[a-z0-9]{8}$` (CVM) or `^lhins-[a-z0-9]{8}$` (Lighthouse), saying
    /// precisely what is wrong otherwise.
    pub fn parse(input: &str) -> Result<Self, InvalidInstanceId> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(InvalidInstanceId::Empty);
        }
        let chars = trimmed.chars().count();
        let lower = trimmed.to_ascii_lowercase();
        match Product::of_prefix(&lower) {
            Some(Product::Lighthouse) if chars != 14 => {
                return Err(InvalidInstanceId::LighthouseWrongLength(chars))
            }
            Some(Product::Cvm) if chars != 12 => return Err(InvalidInstanceId::WrongLength(chars)),
            None if chars != 12 && chars != 14 => {
                return Err(InvalidInstanceId::WrongLength(chars))
            }
            None => return Err(InvalidInstanceId::BadPrefix(Quoted::new(trimmed))),
            Some(_) => {}
        }
        let valid = |s: &str| {
            Product::of_prefix(s).is_some_and(|p| {
                let rest = &s[p.prefix().len()..];
                rest.len() == 8
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            })
        };
        if valid(trimmed) {
            return Ok(Self(trimmed.to_owned()));
        }
        if valid(&lower) {
            return Err(InvalidInstanceId::UpperCase(Quoted::new(trimmed), lower));
        }
        Err(InvalidInstanceId::BadCharacters(Quoted::new(trimmed)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Which product the instance belongs to, from its prefix.
    pub fn product(&self) -> Product {
        Product::of_prefix(&self.0).expect("a parsed ID has a known prefix")
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A Tencent Cloud region name such as `ap-guangzhou`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(String);

/// Regions where CVM runs. A config naming anything else is almost always a typo, and a typo here
/// would only surface as a failed call during an incident.
/// Source: <https://www.tencentcloud.com/document/api/213/15692> (region list).
pub const KNOWN_REGIONS: &[&str] = &[
    "ap-bangkok",
    "ap-beijing",
    "ap-beijing-fsi",
    "ap-chengdu",
    "ap-chongqing",
    "ap-guangzhou",
    "ap-hongkong",
    "ap-jakarta",
    "ap-mumbai",
    "ap-nanjing",
    "ap-qingyuan",
    "ap-seoul",
    "ap-shanghai",
    "ap-shanghai-fsi",
    "ap-shenzhen-fsi",
    "ap-singapore",
    "ap-taipei",
    "ap-tokyo",
    "eu-frankfurt",
    "eu-moscow",
    "na-ashburn",
    "na-siliconvalley",
    "na-toronto",
    "sa-saopaulo",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRegion {
    #[error("no region was given")]
    Empty,
    /// The name, and ` (did you mean …?)` when a known region is close.
    #[error("{0} is not a Tencent Cloud region{1} (they look like ap-guangzhou)")]
    Malformed(Quoted, String),
    #[error("{0} is not a Tencent Cloud region this bot knows{1}; known regions: {known}", known = KNOWN_REGIONS.join(", "))]
    Unknown(Quoted, String),
}

impl Region {
    /// Accepts only the names in [`KNOWN_REGIONS`].
    pub fn parse(input: &str) -> Result<Self, InvalidRegion> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(InvalidRegion::Empty);
        }
        if let Some(known) = KNOWN_REGIONS.iter().find(|r| **r == trimmed) {
            return Ok(Self((*known).to_owned()));
        }
        let well_formed = trimmed.len() <= 32
            && trimmed
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && trimmed.contains('-');
        let hint = crate::suggest::did_you_mean(trimmed, KNOWN_REGIONS.iter().copied());
        if well_formed {
            Err(InvalidRegion::Unknown(Quoted::new(trimmed), hint))
        } else {
            Err(InvalidRegion::Malformed(Quoted::new(trimmed), hint))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Finance-cloud regions (`ap-shanghai-fsi`, ...) are served only at their own domain.
    pub fn is_finance(&self) -> bool {
        self.0.ends_with("-fsi")
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// A Discord snowflake (user, guild, channel or role ID). Config files may write it as an integer
/// or as a string, since many tools copy IDs as strings to dodge float precision loss.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Snowflake(u64);

impl Snowflake {
    pub fn new(id: u64) -> Option<Self> {
        (id != 0).then_some(Self(id))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Snowflake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Snowflake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Why a string is not a Discord ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a Discord ID (a positive number such as 800000000000000001)")]
pub struct InvalidSnowflake(pub Quoted);

impl std::str::FromStr for Snowflake {
    type Err = InvalidSnowflake;

    fn from_str(s: &str) -> Result<Self, InvalidSnowflake> {
        s.trim()
            .parse::<u64>()
            .ok()
            .and_then(Snowflake::new)
            .ok_or_else(|| InvalidSnowflake(Quoted::new(s)))
    }
}

impl<'de> Deserialize<'de> for Snowflake {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Snowflake;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Discord ID: a number like 800000000000000001, or the same in quotes")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Snowflake, E> {
                Snowflake::new(v).ok_or_else(|| E::custom("a Discord ID cannot be 0"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Snowflake, E> {
                u64::try_from(v)
                    .ok()
                    .and_then(Snowflake::new)
                    .ok_or_else(|| E::custom("a Discord ID must be a positive number"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Snowflake, E> {
                v.parse().map_err(|e| {
                    if v.chars().any(char::is_alphabetic) {
                        E::custom(format!(
                            "{} is a name, not a Discord ID (an ID stays the same when the role, server or channel is renamed). \
                             To copy one: in Discord, turn on User Settings → Advanced → Developer Mode, then right-click the role \
                             (Server Settings → Roles), the server or the channel and choose Copy ID",
                            Quoted::new(v)
                        ))
                    } else {
                        E::custom(e)
                    }
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// User input made safe to quote in a message: bounded, control and direction characters escaped,
/// in backticks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted(String);

impl Quoted {
    pub fn new(input: &str) -> Self {
        let total = input.chars().count();
        let mut out = String::with_capacity(ECHO_LIMIT + 16);
        for c in input.chars().take(ECHO_LIMIT) {
            match c {
                '`' => out.push('\''),
                c if crate::text::is_hidden(c) => out.extend(c.escape_default()),
                c => out.push(c),
            }
        }
        if total > ECHO_LIMIT {
            out.push_str(&format!("… ({total} characters)"));
        }
        Self(out)
    }
}

impl fmt::Display for Quoted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids() {
        assert!(InstanceId::parse("ins-a1b2c3d4").is_ok());
        assert_eq!(
            InstanceId::parse(" ins-a1b2c3d4 ").unwrap().as_str(),
            "ins-a1b2c3d4"
        );
        assert_eq!(InstanceId::parse(""), Err(InvalidInstanceId::Empty));
        assert_eq!(
            InstanceId::parse("ins-1122"),
            Err(InvalidInstanceId::WrongLength(8))
        );
        assert!(matches!(
            InstanceId::parse("INS-A1B2C3D4"),
            Err(InvalidInstanceId::UpperCase(_, s)) if s == "ins-a1b2c3d4"
        ));
        assert!(matches!(
            InstanceId::parse("ins-a1b2 3d4"),
            Err(InvalidInstanceId::BadCharacters(_))
        ));
        // Was `BadPrefix` before Lighthouse IDs were valid: now a Lighthouse ID of the wrong
        // length, and a prefix nobody uses is still a bad prefix.
        assert_eq!(
            InstanceId::parse("lhins-a1b2c3"),
            Err(InvalidInstanceId::LighthouseWrongLength(12))
        );
        assert!(matches!(
            InstanceId::parse("xyz-a1b2c3d4"),
            Err(InvalidInstanceId::BadPrefix(_))
        ));
        assert!(matches!(
            InstanceId::parse("ins-a1b2c3dé"),
            Err(InvalidInstanceId::BadCharacters(_))
        ));
        let huge = "x".repeat(10_000);
        let err = InstanceId::parse(&huge).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn lighthouse_instance_ids() {
        let id = InstanceId::parse(" lhins-a1b2c3d4 ").unwrap();
        assert_eq!(id.as_str(), "lhins-a1b2c3d4");
        assert_eq!(id.product(), Product::Lighthouse);
        assert_eq!(
            InstanceId::parse("ins-a1b2c3d4").unwrap().product(),
            Product::Cvm
        );
        for (input, len) in [
            ("lhins-a1b2c3d", 13),
            ("lhins-a1b2c3d4e", 15),
            ("lhins-", 6),
        ] {
            let err = InstanceId::parse(input).unwrap_err();
            assert_eq!(
                err,
                InvalidInstanceId::LighthouseWrongLength(len),
                "{input}"
            );
            let text = err.to_string();
            assert!(
                text.contains(&format!("{len} characters")) && text.contains("must be 14"),
                "{text}"
            );
        }
        for upper in ["LHINS-A1B2C3D4", "lhins-A1b2c3d4", "LhIns-a1b2c3d4"] {
            let err = InstanceId::parse(upper).unwrap_err();
            assert_eq!(
                err,
                InvalidInstanceId::UpperCase(Quoted::new(upper), "lhins-a1b2c3d4".into())
            );
            assert!(err.to_string().contains("try lhins-a1b2c3d4"), "{err}");
        }
        assert!(matches!(
            InstanceId::parse("lhins-a1b2_3d4"),
            Err(InvalidInstanceId::BadCharacters(_))
        ));
        // 14 characters that are neither product's ID.
        assert!(matches!(
            InstanceId::parse("lhinz-a1b2c3d4"),
            Err(InvalidInstanceId::BadPrefix(_))
        ));
        assert_eq!(Product::parse("lighthouse"), Some(Product::Lighthouse));
        assert_eq!(Product::parse("CVM"), None);
        assert_eq!(Product::Lighthouse.to_string(), "lighthouse");
    }

    #[test]
    fn regions() {
        assert!(Region::parse("ap-guangzhou").is_ok());
        let typo = Region::parse("ap-guangzou").unwrap_err().to_string();
        assert!(typo.contains("(did you mean `ap-guangzhou`?)"), "{typo}");
        let typo = Region::parse("ap_shanghai").unwrap_err().to_string();
        assert!(typo.contains("(did you mean `ap-shanghai`?)"), "{typo}");
        assert!(Region::parse("ap-shanghai-fsi").unwrap().is_finance());
        assert!(!Region::parse("ap-guangzhou").unwrap().is_finance());
        assert!(matches!(
            Region::parse("ap-guangzho"),
            Err(InvalidRegion::Unknown(..))
        ));
        assert!(matches!(
            Region::parse("AP GZ"),
            Err(InvalidRegion::Malformed(..))
        ));
        assert_eq!(Region::parse("  "), Err(InvalidRegion::Empty));
    }

    #[test]
    fn quoting_escapes_controls_and_bounds_length() {
        assert_eq!(Quoted::new("a\nb`c").to_string(), "`a\\nb'c`");
        assert_eq!(Quoted::new("a\u{202E}b").to_string(), "`a\\u{202e}b`");
        let q = Quoted::new(&"y".repeat(500)).to_string();
        assert!(q.contains("(500 characters)") && q.len() < 70, "{q}");
    }

    #[test]
    fn snowflakes_from_ints_and_strings() {
        #[derive(Deserialize)]
        struct T {
            a: Snowflake,
            b: Snowflake,
        }
        let t: T = toml::from_str("a = 5\nb = \"800000000000000001\"").unwrap();
        assert_eq!((t.a.get(), t.b.get()), (5, 800000000000000001));
        assert!(toml::from_str::<T>("a = 0\nb = 1").is_err());
        assert!(toml::from_str::<T>("a = -3\nb = 1").is_err());
        assert!(toml::from_str::<T>("a = \"abc\"\nb = 1").is_err());
        assert_eq!(
            "0".parse::<Snowflake>(),
            Err(InvalidSnowflake(Quoted::new("0")))
        );
        assert!("x"
            .parse::<Snowflake>()
            .unwrap_err()
            .to_string()
            .contains("not a Discord ID"));
    }
}
