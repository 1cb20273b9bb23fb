//! `vncbot instances`: lists what the catalog sees and which `[[allow]]` rules open each
//! instance, i.e. what a member holding those roles could reach. One fetch, no bot needed.

use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use vncbot::access::Rule;
use vncbot::config::{Config, TencentCredentials};
use vncbot::core::Outcome;
use vncbot::ids::Region;
use vncbot::limits::ApiPacer;
use vncbot::tencent::RetryPolicy;
use vncbot::tencent::{Catalog, Instance, TencentClient, TencentError};
use vncbot::text::{is_invisible, truncate};

use super::Exit;

/// Names longer than this are cut in the table (the catalog keeps up to 128 characters).
const NAME_COLUMN: usize = 40;

pub fn main(config_path: &Path, region: Option<String>) -> Exit {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            super::init_logging("warn", Default::default());
            eprintln!("error: {e}");
            return Exit::Config;
        }
    };
    super::init_logging("warn", config.log.format);
    let regions: Vec<Region> = match region.as_deref() {
        None => config.tencent.regions.clone(),
        Some(r) => match Region::parse(r) {
            Ok(r) if config.tencent.regions.contains(&r) => vec![r],
            Ok(r) => {
                eprintln!(
                    "error: {r} is not one of this bot's regions (tencent.regions): {}",
                    join(&config.tencent.regions)
                );
                return Exit::BadInput;
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Exit::BadInput;
            }
        },
    };
    let creds = match TencentCredentials::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Config;
        }
    };
    if !config.catalog.enabled {
        eprintln!("note: catalog.enabled = false: the bot does not use this list (no names, autocomplete, state checks or tag rules)");
    }
    // The console pacer is unused here; DescribeInstances has its own inside the client.
    let pacer = ApiPacer::new(NonZeroU32::MIN, Duration::ZERO);
    let client = match TencentClient::new(&config.tencent, creds, pacer, RetryPolicy::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot build the HTTP client: {e}");
            return Exit::Config;
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime starts");
    let catalog = Catalog::new(&regions);
    let mut failure: Option<TencentError> = None;
    runtime.block_on(async {
        for r in &regions {
            if let Err(e) = catalog.refresh_region(&client, r).await {
                let reference = e
                    .request_id()
                    .map(|id| format!(" (Tencent RequestId {id})"))
                    .unwrap_or_default();
                let hint = if e.code().starts_with("UnauthorizedOperation") {
                    ": the CAM policy needs cvm:DescribeInstances (and lighthouse:DescribeInstances for Lighthouse)"
                } else {
                    ""
                };
                eprintln!("error: cannot list {r}: {}{reference}{hint}", e.code());
                failure.get_or_insert(e);
            }
        }
    });
    let view = catalog.view();
    let mut instances: Vec<&Instance> = view.instances().collect();
    instances.sort_by(|a, b| (&a.region, &a.name, &a.id).cmp(&(&b.region, &b.name, &b.id)));
    print!("{}", table(&instances, &config.allow));
    println!(
        "{} instance(s) in {} region(s).",
        instances.len(),
        regions.len()
    );
    match failure {
        None => Exit::Ok,
        Some(e) => Outcome::tencent(&e).exit(),
    }
}

fn join(regions: &[Region]) -> String {
    regions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Cloud text made safe for a terminal: no control or invisible characters (the catalog removes
/// them already; this holds even if that changes), bounded.
fn cell(s: &str, max: usize) -> String {
    let clean: String = s
        .chars()
        .flat_map(|c| {
            if is_invisible(c) {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    let clean = if clean.is_empty() {
        "-".to_owned()
    } else {
        clean
    };
    truncate(&clean, max)
}

/// Which rules open `i`, as `[0] roles 555…, 666…; [2] roles …`, or `none`.
fn rules_opening(i: &Instance, rules: &[Rule]) -> String {
    let opening: Vec<String> = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.opens(&i.id, &i.region, Some(&i.tags)))
        .map(|(n, r)| {
            let roles = r
                .roles
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            format!("[{n}] roles {roles}")
        })
        .collect();
    if opening.is_empty() {
        "none".into()
    } else {
        opening.join("; ")
    }
}

fn table(instances: &[&Instance], rules: &[Rule]) -> String {
    let header = [
        "ID",
        "PRODUCT",
        "NAME",
        "STATE",
        "PRIVATE IP",
        "REGION",
        "OPENED BY",
    ];
    let rows: Vec<[String; 7]> = instances
        .iter()
        .map(|i| {
            [
                i.id.to_string(),
                i.product().title().to_owned(),
                cell(&i.name, NAME_COLUMN),
                cell(i.state.as_str(), 32),
                i.private_ips
                    .first()
                    .map_or("-".into(), ToString::to_string),
                i.region.to_string(),
                rules_opening(i, rules),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (n, (c, w)) in cells.iter().zip(widths).enumerate() {
            if n + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c}{}  ", " ".repeat(w - c.chars().count()));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vncbot::ids::{InstanceId, Snowflake};
    use vncbot::tencent::State;

    #[test]
    fn the_table_names_the_rules_that_open_each_instance() {
        let gz = Region::parse("ap-guangzhou").unwrap();
        let inst = |id: &str, name: &str, tags: Vec<(String, String)>| {
            Instance::new(
                InstanceId::parse(id).unwrap(),
                name,
                State::Running,
                vec!["10.0.0.5".parse().unwrap()],
                vec![],
                "ap-guangzhou-3",
                "Ubuntu",
                tags,
                gz.clone(),
            )
        };
        let rules = vec![
            Rule {
                roles: vec![Snowflake::new(11).unwrap(), Snowflake::new(12).unwrap()],
                instances: vec!["ins-web*".into()],
                regions: None,
                tags: vec![],
                gate: Default::default(),
            },
            Rule {
                roles: vec![Snowflake::new(13).unwrap()],
                instances: vec!["*".into()],
                regions: None,
                tags: vec![("env".into(), "staging".into())],
                gate: Default::default(),
            },
        ];
        let web = inst("ins-web00001", "web-01", vec![]);
        let staging = inst(
            "ins-stg00001",
            &"s".repeat(60),
            vec![("env".into(), "staging".into())],
        );
        let db = inst("ins-db000001", "db", vec![]);
        let out = table(&[&web, &staging, &db], &rules);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("ID            PRODUCT  NAME"), "{out}");
        assert!(lines[1].ends_with("[0] roles 11, 12"), "{out}");
        assert!(lines[2].ends_with("[1] roles 13"), "{out}");
        assert!(lines[2].contains(&format!("{}…", "s".repeat(39))), "{out}");
        assert!(lines[3].ends_with("none"), "{out}");
        assert!(lines[1].contains("10.0.0.5") && lines[1].contains("RUNNING"));
        assert_eq!(cell("a\u{202E}b", 40), "a\\u{202e}b");
    }

    #[test]
    fn the_table_shows_each_instances_product() {
        let gz = Region::parse("ap-guangzhou").unwrap();
        let inst = |id: &str| {
            Instance::new(
                InstanceId::parse(id).unwrap(),
                "x",
                State::Running,
                vec!["10.0.0.5".parse().unwrap()],
                vec![],
                "ap-guangzhou-3",
                "Ubuntu",
                vec![],
                gz.clone(),
            )
        };
        let rules = vec![Rule {
            roles: vec![Snowflake::new(21).unwrap()],
            instances: vec!["lhins-*".into()],
            regions: None,
            tags: vec![],
            gate: Default::default(),
        }];
        let (cvm, lh) = (inst("ins-web00001"), inst("lhins-web00001"));
        let out = table(&[&cvm, &lh], &rules);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[1].starts_with("ins-web00001    CVM  "), "{out}");
        assert!(lines[1].ends_with("none"), "{out}");
        assert!(
            lines[2].starts_with("lhins-web00001  Lighthouse  "),
            "{out}"
        );
        assert!(lines[2].ends_with("[0] roles 21"), "{out}");
    }
}
