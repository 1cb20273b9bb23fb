//! `vncbot demo --keep`: after the tour, the stand-ins stay up, and the demo prints the config the
//! tour's bot ran with and the commands that point `vncbot run`, `vncbot url` and curl at them,
//! each ready to paste (the test in `tests/demo.rs` runs them as printed).

use std::net::SocketAddr;
use std::path::Path;

use vncbot_sandbox::fake_discord::TOKEN;
use vncbot_sandbox::mock_cvm::{SECRET_ID, SECRET_KEY};
use vncbot_sandbox::pagerduty;

use super::show::say;
use super::AUDIT_CHANNEL;

/// Where the printed commands point.
pub struct Kept<'a> {
    pub config: &'a Path,
    pub journal: &'a Path,
    pub admin: SocketAddr,
    pub discord: SocketAddr,
}

/// A word for a POSIX shell: as it is when it needs no quoting, else in single quotes.
fn sh(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@%+".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

pub fn print(k: &Kept<'_>) {
    // The binary that runs now, so the commands work from any directory and any build.
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "vncbot".into());
    let (exe, config) = (sh(&exe), sh(&k.config.display().to_string()));
    let env = format!(
        "export DISCORD_TOKEN={TOKEN} TENCENTCLOUD_SECRET_ID={SECRET_ID} TENCENTCLOUD_SECRET_KEY={SECRET_KEY} PAGERDUTY_TOKEN={} NO_PROXY=127.0.0.1,localhost",
        pagerduty::TOKEN
    );
    say("\nKept running until Ctrl-C: the stand-ins for Discord and Tencent Cloud (the tour's bot has");
    say("stopped), and for PagerDuty. The secrets below are the stand-ins' own; they open nothing real.");
    say(&format!(
        "  config:  {} (the tour's, with an admin endpoint)",
        k.config.display()
    ));
    say(&format!("  journal: {}", k.journal.display()));
    say("Run the bot against them, in another terminal:");
    say(&format!("  $ {env}"));
    say(&format!("  $ {exe} run --config {config}"));
    say("Then, in a third terminal (the same export first):");
    say(&format!("  $ {env}"));
    say(&format!(
        "  $ curl -s http://{}/healthz        # the bot's readiness",
        k.admin
    ));
    say(&format!(
        "  $ curl -s http://{}/metrics        # its metrics",
        k.admin
    ));
    say(&format!(
        "  $ {exe} url ins-web00001 --reason INC-4711 --config {config}   # a fresh link, journaled"
    ));
    say(&format!(
        "  $ curl -s -H {} http://{}/api/v10/channels/{AUDIT_CHANNEL}/messages   # the audit channel: the bot posts the url's record",
        sh(&format!("Authorization: Bot {TOKEN}")),
        k.discord
    ));
    say(&format!(
        "  $ {exe} audit verify --config {config}   # the journal's chain"
    ));
}

#[cfg(test)]
mod tests {
    use super::sh;

    #[test]
    fn words_are_quoted_only_when_a_shell_needs_it() {
        assert_eq!(
            sh("/tmp/vncbot-demo-x1/vncbot.toml"),
            "/tmp/vncbot-demo-x1/vncbot.toml"
        );
        assert_eq!(sh("a b"), "'a b'");
        assert_eq!(sh("it's"), r"'it'\''s'");
        assert_eq!(sh(""), "''");
    }
}
