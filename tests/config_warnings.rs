//! `vncbot check-config` warns about duplicate and overlapping `[[allow]]` rules (the exact
//! definition is in `src/access/overlap.rs`), prints the config's digest, and still exits 0.

mod support;

use std::process::Command;

use support::{config_text, write_config, TempDir, WEB_ROLE};

fn check_offline(cfg: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vncbot"))
        .args(["check-config", "--offline", "--config"])
        .arg(cfg)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap()
}

#[test]
fn overlapping_rules_are_warned_about_and_the_config_still_passes() {
    let dir = TempDir::new("warnings");
    let base = config_text(&dir, "http://127.0.0.1:9", "");
    // allow[2] repeats allow[1]; allow[3] asks for approval on instances allow[1] already opens.
    let text = base.replace(
        "[limits]",
        &format!(
            "[[allow]]\nroles = [{WEB_ROLE}]\ninstances = [\"ins-web*\"]\nregions = [\"ap-guangzhou\"]\n\n\
             [[allow]]\nroles = [{WEB_ROLE}]\ninstances = [\"ins-web0*\"]\nregions = [\"ap-guangzhou\"]\n\
             approval = \"required\"\napprover_roles = [555000000000000009]\n\n\
             [approvals]\nchannel_id = 810000000000000003\n\n[limits]"
        ),
    );
    let out = check_offline(&write_config(&dir, &text));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(
        warnings,
        [
            "warning: allow[2] repeats allow[1] (same roles, instances, regions, tags and terms): remove one of them",
            "warning: allow[3] never applies: allow[1] comes first and admits every request it would, on its own terms, so allow[3]'s approval, break-glass and warning settings never take effect: move allow[3] above allow[1], or remove it",
            "warning: allow[3] never applies: allow[2] comes first and admits every request it would, on its own terms, so allow[3]'s approval, break-glass and warning settings never take effect: move allow[3] above allow[2], or remove it",
        ],
        "{stderr}"
    );
    // The digest every record written under this config carries.
    let digest = stdout
        .lines()
        .find_map(|l| l.strip_prefix("config digest: "))
        .expect("the digest line");
    assert_eq!(digest.len(), 64);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));

    // The base config's rules do not overlap: no warning.
    let out = check_offline(&write_config(&dir, &base));
    assert_eq!(out.status.code(), Some(0));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_example_config_has_no_overlapping_rules() {
    let out = check_offline(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/vncbot.example.toml"
    )));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("warning:"), "{stderr}");
}
