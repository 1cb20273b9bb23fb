//! `vncbot demo`: the whole flow on loopback, with the built-in stand-ins for Discord and
//! Tencent Cloud (the `vncbot-sandbox` crate, built with the default `demo` feature), a temporary
//! config and journal, and the real bot (the same code path as `vncbot run`, from the config file
//! the demo writes). Prints what each member sees, scene by scene with what the journal recorded,
//! then the audit channel, the journal and its verification.
//!
//! [`scenes`] plays the tour, [`show`] renders what members see, [`keep`] prints how to point
//! `vncbot run`, `vncbot url` and curl at the stand-ins after it (`--keep`).

mod keep;
mod scenes;
mod show;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use vncbot::clock::Clock;
use vncbot::config::{Config, TencentCredentials};
use vncbot_sandbox::fake_discord::{FakeDiscord, TOKEN};
use vncbot_sandbox::mock_cvm::{MockCvm, MockInstance, SECRET_ID, SECRET_KEY};
use vncbot_sandbox::pagerduty::{self, MockPagerDuty};
use vncbot_sandbox::{GUILD, ONCALL_ROLE};

use self::scenes::Stage;
use self::show::{render, say, step};
use super::Exit;

const ALICE: u64 = 100000000000000001;
const BOB: u64 = 100000000000000002;
/// An approver: she may vote on requests for the production database.
const CAROL: u64 = 100000000000000003;
/// On call in the PagerDuty stand-in's rota (as `PDAVE01`).
const DAVE: u64 = 100000000000000004;
/// An admin of the server: she gives Dave the on-call role.
const ERIN: u64 = 100000000000000005;
const APPROVER_ROLE: u64 = 555000000000000009;
/// The PagerDuty stand-in's escalation policy, and Dave's user there.
const PD_POLICY: &str = "PDEMO01";
const PD_DAVE: &str = "PDAVE01";
const AUDIT_CHANNEL: u64 = 810000000000000002;
const APPROVALS_CHANNEL: u64 = 810000000000000003;

pub fn main(keep: bool) -> Exit {
    // A stand-in that times out says so in one line (its full record holds the demo's links).
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unexpected failure");
        let what = what.split("; calls:").next().unwrap_or(what);
        eprintln!(
            "error: the demo did not go as scripted: {}",
            what.chars().take(200).collect::<String>()
        );
    }));
    let dir = match tempfile::Builder::new().prefix("vncbot-demo-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: cannot create a temporary directory: {e}");
            return Exit::Config;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return Exit::Config;
        }
    };
    let path = dir.path().to_owned();
    let exit = match runtime.block_on(async move { tokio::spawn(tour(keep, path)).await }) {
        Ok(exit) => exit,
        Err(_) => Exit::Temporary,
    };
    // The stand-ins stop with the runtime, before their directory goes.
    drop(runtime);
    drop(dir);
    exit
}

/// A free loopback port for the admin endpoint of the bot `--keep` suggests.
fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The demo's config: on-call members open any instance themselves, except the production
/// database, whose rule (first, so it decides for that instance) needs an approver. With
/// `admin`, the admin endpoint listens there (the tour's bot has none: its server would hold the
/// port after the bot stops).
fn config_text(
    discord: &FakeDiscord,
    tencent: &MockCvm,
    rota: &MockPagerDuty,
    journal: &Path,
    admin: Option<SocketAddr>,
) -> String {
    // Quoted and escaped as a TOML string, whatever the temporary path holds.
    let journal = format!("{:?}", journal.display().to_string());
    format!(
        r#"# Written by `vncbot demo`: the bot against the built-in stand-ins on loopback.
[discord]
guild_ids = [{GUILD}]
audit_channel_id = {AUDIT_CHANNEL}
{discord}

[tencent]
regions = ["ap-guangzhou"]
endpoint = "{endpoint}"

# The production database: members with the role ask and an approver decides, unless PagerDuty
# says they are on call now.
[[allow]]
roles = [{ONCALL_ROLE}]
instances = ["ins-dbprod01"]
regions = ["*"]
approval = "required"
approver_roles = [{APPROVER_ROLE}]
on_call_skips_approval = true
warning = "production database"

# Everything else: on-call members open it themselves.
[[allow]]
roles = [{ONCALL_ROLE}]
instances = ["*"]
regions = ["*"]

[approvals]
channel_id = {APPROVALS_CHANNEL}

# Who is on call: the PagerDuty stand-in's rota (key from PAGERDUTY_TOKEN).
[oncall]
provider = "pagerduty"
api_base = "{pagerduty}"
escalation_policy_ids = ["{PD_POLICY}"]

[oncall.users]
"{DAVE}" = "{PD_DAVE}"

[audit]
path = {journal}
{admin}"#,
        discord = discord.config_lines(),
        endpoint = tencent.endpoint(),
        pagerduty = rota.api_base(),
        admin = admin
            .map(|a| format!("\n[admin]\nlisten = \"{a}\"\n"))
            .unwrap_or_default(),
    )
}

async fn tour(keep: bool, dir: std::path::PathBuf) -> Exit {
    let discord = FakeDiscord::start().await;
    let tencent = MockCvm::start().await;
    tencent.set_instances(
        "ap-guangzhou",
        [
            MockInstance::new("ins-web00001", "web-01", 5).tag("env", "prod"),
            MockInstance::new("ins-web00002", "web-02", 6).tag("env", "prod"),
            MockInstance::new("ins-stopped1", "db-01", 9).state("STOPPED"),
            MockInstance::new("ins-dbprod01", "db-prod", 10).tag("env", "prod"),
        ],
    );
    let rota = MockPagerDuty::start_with_rota(PD_POLICY, &[(PD_DAVE, "Dave", 1)]).await;
    let journal = dir.join("audit.jsonl");
    let config_path = dir.join("vncbot.toml");
    let text = config_text(&discord, &tencent, &rota, &journal, None);
    // The tour's bot runs from the file, as `vncbot run --config` would.
    let config = match std::fs::write(&config_path, text).map(|()| Config::load(&config_path)) {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            eprintln!("error: the demo's own config is invalid (a bug): {e}");
            return Exit::Config;
        }
        Err(e) => {
            eprintln!("error: cannot write the demo's config: {e}");
            return Exit::Config;
        }
    };
    let creds = TencentCredentials {
        secret_id: SECRET_ID.into(),
        secret_key: SECRET_KEY.to_string().into(),
        session_token: None,
    };
    say("vncbot demo: the whole flow on loopback, against built-in stand-ins for Discord and");
    say("Tencent Cloud that check what the real services check (signatures, timestamps, fields).");
    say(&format!(
        "  Discord stand-in: {}   Tencent Cloud stand-in: {}\n  config: {}\n  journal: {}",
        discord.rest,
        tencent.endpoint(),
        config_path.display(),
        journal.display()
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let bot = tokio::spawn(async move {
        let until = async {
            let _ = stopped.await;
        };
        let key = Some(pagerduty::TOKEN.to_owned().into());
        if let Err(e) =
            vncbot::app::run_until_oncall(config, None, TOKEN, creds, Clock::system(), until, key)
                .await
        {
            eprintln!("error: the bot stopped: {e}");
        }
    });
    discord.wait_ready().await;
    // The catalog's first listing runs in the background at start.
    for _ in 0..100 {
        let t = discord.autocomplete(ALICE, vec![ONCALL_ROLE], "web");
        if !discord.choices(&t).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    discord.set_roles(ALICE, vec![ONCALL_ROLE]);
    discord.set_roles(BOB, vec![]);

    let mut stage = Stage::new(discord.clone(), tencent.clone(), journal.clone());
    if let Err(why) = scenes::play(&mut stage).await {
        eprintln!("error: the demo did not go as scripted: {why}");
        return Exit::Temporary;
    }
    // The tour's bot shuts down as `vncbot run` does at SIGTERM: the last journal head is
    // posted, and its port is free for the bot `--keep` suggests.
    let _ = stop.send(());
    if tokio::time::timeout(Duration::from_secs(60), bot)
        .await
        .is_err()
    {
        eprintln!("error: the tour's bot did not stop within 60 s");
        return Exit::Temporary;
    }

    step("The audit channel (a line per event, never the link)");
    let path = format!("/api/v10/channels/{AUDIT_CHANNEL}/messages");
    // What the bot posted there (its reads of the channel, at start, are no lines).
    for c in discord
        .calls()
        .iter()
        .filter(|c| c.method == "POST" && c.path == path)
    {
        say(&format!(
            "   {}",
            render(c.body["content"].as_str().unwrap_or_default())
        ));
    }

    step("The audit journal (hash-chained, fsynced; never the link)");
    let records = std::fs::read_to_string(&journal).unwrap_or_default();
    for r in scenes::records(&journal) {
        say(&format!(
            "   seq {:>2} {:<18} {:<8} {:<14} {}{}",
            r["seq"],
            r["event"].as_str().unwrap_or("?"),
            r["actor_name"].as_str().unwrap_or("?"),
            r["instance"].as_str().unwrap_or(""),
            r["code"].as_str().unwrap_or(""),
            r["refers_to"]
                .as_u64()
                .map(|s| format!(" (refers to {s})"))
                .unwrap_or_default(),
        ));
    }
    let leaked = tencent
        .issued()
        .iter()
        .any(|v| records.contains(v.as_str()));

    step("vncbot audit verify");
    let verdict = match vncbot::audit::verify_file(&journal) {
        Ok(Ok(s)) => {
            say(&format!(
                "   {}: intact, {} records, head seq {} sha256 {}",
                journal.display(),
                s.records,
                s.last_seq,
                s.last_hash
            ));
            Exit::Ok
        }
        Ok(Err(e)) => {
            say(&format!("   DAMAGED at {e}"));
            Exit::Refused
        }
        Err(e) => {
            say(&format!("   cannot read the journal: {e}"));
            Exit::Audit
        }
    };
    if leaked {
        say("   error: a console link is in the journal");
        return Exit::Refused;
    }
    if keep {
        // The same config, with an admin endpoint for curl to read.
        let admin = match free_port() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: no free loopback port for the admin endpoint: {e}");
                return Exit::Temporary;
            }
        };
        let text = config_text(&discord, &tencent, &rota, &journal, Some(admin));
        if let Err(e) = std::fs::write(&config_path, text) {
            eprintln!("error: cannot write the demo's config: {e}");
            return Exit::Config;
        }
        keep::print(&keep::Kept {
            config: &config_path,
            journal: &journal,
            admin,
            discord: discord.rest,
        });
        let _ = tokio::signal::ctrl_c().await;
    }
    say("\nThe tour is over.");
    verdict
}
