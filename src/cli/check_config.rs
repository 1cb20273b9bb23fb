//! `vncbot check-config`: validates the config file and the environment and prints the effective
//! policy. It makes no network call and creates no file.

use std::fmt::Write as _;
use std::path::Path;

use vncbot::audit::{verify_file, Problem};
use vncbot::config::{self, Config, TencentCredentials};
use vncbot::ids::Product;
use vncbot::limits::ApiPacer;
use vncbot::tencent::api_version;
use vncbot::tencent::endpoint;
use vncbot::text::mask;

use super::Exit;

/// With `offline`, everything that needs no secrets: the environment is not read, so CI can
/// check a config without them.
pub fn main(config_path: &Path, offline: bool) -> Exit {
    super::init_logging("warn", Default::default());
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Config;
        }
    };
    let (report, problems) = report(config_path, &config, offline);
    print!("{report}");
    // What every journal record written under this config names (`config_digest`).
    println!("config digest: {}", config.source.digest());
    // Valid, but probably not what was meant: said, and the exit code stays 0.
    for w in config.warnings() {
        eprintln!("warning: {w}");
    }
    if problems.is_empty() && offline {
        println!("OK: the config is valid (the environment was not checked: --offline).");
        Exit::Ok
    } else if problems.is_empty() {
        println!("OK: the config and environment are valid.");
        Exit::Ok
    } else {
        for p in &problems {
            eprintln!("error: {p}");
        }
        Exit::Config
    }
}

fn report(path: &Path, c: &Config, offline: bool) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut problems = Vec::new();
    let ids = |v: &[vncbot::ids::Snowflake]| {
        v.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out, "config: {}", path.display());
    let _ = writeln!(out, "discord:");
    let _ = writeln!(out, "  guilds: {}", ids(&c.discord.guild_ids));
    let _ = writeln!(
        out,
        "  audit channel: {}",
        c.discord
            .audit_channel_id
            .map_or("none".into(), |i| i.to_string())
    );
    let _ = writeln!(
        out,
        "  REST API: {}",
        c.discord
            .api_base
            .as_ref()
            .map_or("https://discord.com (default)".into(), |u| format!(
                "{u} (serenity's rate limiter off)"
            ))
    );
    let _ = writeln!(
        out,
        "  gateway: {}",
        c.discord
            .gateway_url
            .as_ref()
            .map_or("from Discord (default)".into(), ToString::to_string)
    );
    let _ = writeln!(
        out,
        "tencent: language {}, timeout {}s, products {}",
        c.tencent.language.as_str(),
        c.tencent.timeout.as_secs(),
        c.tencent
            .products
            .iter()
            .map(|p| format!(
                "{} ({}..., version {})",
                p.as_str(),
                p.prefix(),
                api_version(*p)
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (i, r) in c.tencent.regions.iter().enumerate() {
        let _ = writeln!(
            out,
            "  region {r}{}",
            if i == 0 { " (default)" } else { "" }
        );
        for product in Product::ALL {
            let line = if c.tencent.serves_in(product, r) {
                let e = endpoint::resolve_for(product, r, c.tencent.endpoint.as_ref());
                format!("{} (Host {}, signed for service {product})", e.url, e.host)
            } else if c.tencent.products.contains(&product) {
                "not served here (not in tencent.lighthouse_regions)".into()
            } else {
                continue;
            };
            let _ = writeln!(out, "    {:<10} -> {line}", product.as_str());
        }
    }
    let _ = writeln!(out, "allow:");
    for (i, rule) in c.allow.iter().enumerate() {
        let regions = rule
            .regions
            .as_ref()
            .map_or("every configured region".into(), |rs| {
                rs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            });
        let tags = if rule.tags.is_empty() {
            String::new()
        } else {
            format!(
                " carrying tags {} (as the catalog last saw them; an instance it cannot vouch for does not match)",
                rule.tags_text()
            )
        };
        let _ = writeln!(
            out,
            "  [{i}] roles {} may open {} in {regions}{tags}",
            ids(&rule.roles),
            rule.instances.join(", ")
        );
        let g = &rule.gate;
        if g.needs_approval() {
            let _ = writeln!(
                out,
                "      needs {} approval(s) from roles {} within {} min",
                g.approvals_required,
                ids(&g.approver_roles),
                g.request_ttl.as_secs() / 60
            );
        }
        if !g.break_glass_roles.is_empty() {
            let _ = writeln!(
                out,
                "      break-glass: roles {}",
                ids(&g.break_glass_roles)
            );
        }
        if let Some(w) = &g.warning {
            let _ = writeln!(out, "      warning: {w}");
        }
    }
    if let Some(a) = &c.approvals {
        let _ = writeln!(
            out,
            "approvals: posted in channel {} (the bot needs View Channel and Send Messages there; check-config makes no network call, so `vncbot run` checks it at start-up and refuses to start without them when a rule needs approvers or break-glass); break-glass {} min, {} per member a day, acknowledged within {} h; /vncadmin for roles {}",
            a.channel_id,
            a.break_glass_minutes,
            a.break_glass_per_day,
            a.ack_hours,
            if a.admin_roles.is_empty() {
                "none".into()
            } else {
                ids(&a.admin_roles)
            }
        );
    }
    let _ = writeln!(
        out,
        "catalog: {}",
        if c.catalog.enabled {
            format!(
                "on, every region listed every {} s (DescribeInstances at most {}/s per product, apart from console calls; the CAM policy needs {})",
                c.catalog.refresh.as_secs(),
                vncbot::tencent::CATALOG_PER_SECOND,
                c.tencent
                    .products
                    .iter()
                    .map(|p| format!("{p}:DescribeInstances"))
                    .collect::<Vec<_>>()
                    .join(" and ")
            )
        } else {
            "off: instance IDs only (no names, autocomplete, state checks or tag rules)".into()
        }
    );
    let _ = writeln!(
        out,
        "grants: last {} min, at most {} links each",
        c.grants.minutes, c.grants.links_per_grant
    );
    let pacer = ApiPacer::new(c.limits.api_per_second, std::time::Duration::ZERO);
    let _ = writeln!(
        out,
        "limits: {} per member per minute ({} refused), {} per instance per minute, Tencent calls at most {} in any {} ms{}",
        c.limits.per_user_per_minute,
        c.limits.refusals_per_user_per_minute,
        c.limits.per_instance_per_minute,
        pacer.per_window(),
        vncbot::limits::PACER_WINDOW.as_millis(),
        if c.tencent.products.len() > 1 {
            " for each product on its own"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "audit: {} ({}); reason {}",
        c.audit.path.display(),
        audit_state(&c.audit.path, &mut problems),
        if c.audit.require_reason {
            "required"
        } else {
            "optional"
        }
    );
    let _ = writeln!(
        out,
        "  anchor: {}",
        if c.discord.audit_channel_id.is_some() {
            format!(
                "journal head posted to the audit channel every {} min",
                c.audit.anchor_minutes
            )
        } else {
            format!(
                "off: audit.anchor_minutes = {} has no effect until discord.audit_channel_id is set",
                c.audit.anchor_minutes
            )
        }
    );
    let _ = writeln!(
        out,
        "admin: {}",
        c.admin.map_or("off".into(), |a| format!(
            "http://{}/healthz (readiness), /livez (liveness) and /metrics",
            a.listen
        ))
    );
    let _ = writeln!(out, "log: {:?}", c.log.format);
    let _ = writeln!(out, "environment:");
    if offline {
        let _ = writeln!(out, "  not checked (--offline)");
        return (out, problems);
    }
    match TencentCredentials::from_env() {
        Ok(creds) => {
            let _ = writeln!(
                out,
                "  {}: {}; {}: set; {}: {}",
                config::SECRET_ID,
                mask(&creds.secret_id),
                config::SECRET_KEY,
                config::SESSION_TOKEN,
                if creds.session_token.is_some() {
                    "set (temporary credentials)"
                } else {
                    "not set (long-term key)"
                }
            );
        }
        Err(e) => problems.push(e.to_string()),
    }
    match config::discord_token_from_env() {
        Ok(_) => {
            let _ = writeln!(out, "  {}: set", config::DISCORD_TOKEN);
        }
        Err(e) => problems.push(e.to_string()),
    }
    (out, problems)
}

/// Describes the journal without creating or changing anything.
fn audit_state(path: &Path, problems: &mut Vec<String>) -> String {
    if path.exists() {
        match verify_file(path) {
            Ok(Ok(s)) => format!("exists, {} records, chain intact", s.records),
            Ok(Err(e))
                if matches!(
                    e.kind,
                    Problem::TornTail { .. } | Problem::Unterminated { .. }
                ) =>
            {
                format!("exists; {e}")
            }
            Ok(Err(e)) => {
                problems.push(format!(
                    "audit.path: the journal is damaged at {e}; run `vncbot audit verify`"
                ));
                "damaged".into()
            }
            Err(e) => {
                problems.push(format!("audit.path: cannot read {}: {e}", path.display()));
                "unreadable".into()
            }
        }
    } else {
        let mut dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        while let Some(d) = dir {
            if d.exists() {
                break;
            }
            dir = d.parent().filter(|d| !d.as_os_str().is_empty());
        }
        match dir {
            Some(d) if !d.is_dir() => {
                problems.push(format!("audit.path: {} is not a directory", d.display()));
                "cannot be created".into()
            }
            _ => "will be created on first start, mode 0600".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra_discord: &str) -> Config {
        Config::parse(&format!(
            r#"
[discord]
guild_ids = [800000000000000001]
{extra_discord}
[tencent]
regions = ["ap-guangzhou"]
[[allow]]
roles = [555000000000000001]
instances = ["*"]
regions = ["*"]
[[allow]]
roles = [555000000000000002]
instances = ["ins-web*"]
regions = ["*"]
tags = ["env=staging", "team=web"]
[grants]
minutes = 15
links_per_grant = 4
[limits]
refusals_per_user_per_minute = 25
[audit]
path = "/nonexistent-vncbot-check-config/audit.jsonl"
anchor_minutes = 30
"#
        ))
        .unwrap()
    }

    #[test]
    fn shows_the_grant_refusal_and_anchor_settings() {
        let path = Path::new("vncbot.toml");
        let (out, _) = report(
            path,
            &config("audit_channel_id = 810000000000000002"),
            false,
        );
        assert!(
            out.contains("grants: last 15 min, at most 4 links each"),
            "{out}"
        );
        assert!(out.contains("(25 refused)"), "{out}");
        assert!(out.contains("to the audit channel every 30 min"), "{out}");
    }

    #[test]
    fn says_the_anchor_needs_an_audit_channel() {
        let (out, _) = report(Path::new("vncbot.toml"), &config(""), false);
        assert!(
            out.contains("anchor: off: audit.anchor_minutes = 30 has no effect until discord.audit_channel_id is set"),
            "{out}"
        );
    }

    #[test]
    fn shows_each_products_endpoint_per_region() {
        let c = Config::parse(
            r#"
[discord]
guild_ids = [800000000000000001]
[tencent]
regions = ["ap-guangzhou", "ap-shanghai-fsi", "ap-singapore"]
products = ["cvm", "lighthouse"]
lighthouse_regions = ["ap-guangzhou"]
[[allow]]
roles = [555000000000000001]
instances = ["lhins-*"]
regions = ["*"]
[audit]
path = "/nonexistent-vncbot-check-config/audit.jsonl"
"#,
        )
        .unwrap();
        let (out, _) = report(Path::new("vncbot.toml"), &c, false);
        for want in [
            "products cvm (ins-..., version 2017-03-12), lighthouse (lhins-..., version 2020-03-24)",
            "  region ap-guangzhou (default)\n    cvm        -> https://cvm.tencentcloudapi.com/ (Host cvm.tencentcloudapi.com, signed for service cvm)\n    lighthouse -> https://lighthouse.tencentcloudapi.com/ (Host lighthouse.tencentcloudapi.com, signed for service lighthouse)",
            "    cvm        -> https://cvm.ap-shanghai-fsi.tencentcloudapi.com/",
            "  region ap-singapore\n    cvm        -> https://cvm.tencentcloudapi.com/ (Host cvm.tencentcloudapi.com, signed for service cvm)\n    lighthouse -> not served here (not in tencent.lighthouse_regions)",
            "the CAM policy needs cvm:DescribeInstances and lighthouse:DescribeInstances",
            "for each product on its own",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
        // A CVM-only config says nothing about Lighthouse.
        let (out, _) = report(Path::new("vncbot.toml"), &config(""), false);
        assert!(!out.contains("lighthouse"), "{out}");
        assert!(
            out.contains("    cvm        -> https://cvm.tencentcloudapi.com/"),
            "{out}"
        );
    }

    #[test]
    fn shows_approval_rules_and_the_approvals_channel() {
        let c = Config::parse(
            r#"
[discord]
guild_ids = [800000000000000001]
[tencent]
regions = ["ap-guangzhou"]
[[allow]]
roles = [555000000000000001]
instances = ["*"]
regions = ["*"]
approval = "required"
approver_roles = [555000000000000009]
approvals_required = 2
break_glass_roles = [555000000000000008]
warning = "production database"
[approvals]
channel_id = 810000000000000003
admin_roles = [555000000000000007]
[audit]
path = "/nonexistent-vncbot-check-config/audit.jsonl"
"#,
        )
        .unwrap();
        let (out, _) = report(Path::new("vncbot.toml"), &c, false);
        for want in [
            "needs 2 approval(s) from roles 555000000000000009 within 30 min",
            "break-glass: roles 555000000000000008",
            "warning: production database",
            "approvals: posted in channel 810000000000000003",
            "/vncadmin for roles 555000000000000007",
        ] {
            assert!(out.contains(want), "missing {want:?} in\n{out}");
        }
    }

    #[test]
    fn shows_tag_rules_and_the_catalog() {
        let (out, _) = report(Path::new("vncbot.toml"), &config(""), false);
        assert!(
            out.contains("[1] roles 555000000000000002 may open ins-web* in every configured region carrying tags env=staging, team=web"),
            "{out}"
        );
        assert!(
            out.contains("catalog: on, every region listed every 60 s"),
            "{out}"
        );
    }
}
