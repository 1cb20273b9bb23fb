//! The `vncbot` command line. Each command lives in its own file under `src/cli/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

#[derive(Parser)]
#[command(
    name = "vncbot",
    version,
    about = "Audited on-call access to Tencent Cloud CVM consoles from Discord"
)]
struct Args {
    /// Config file
    #[arg(long, global = true, env = "VNCBOT_CONFIG", default_value = vncbot::config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Discord bot until SIGINT or SIGTERM
    Run,
    /// Fetch one fresh console link and print it alone on stdout
    Url {
        /// The instance: an ID like ins-a1b2c3d4, or a name the catalog resolves to one instance
        instance_id: String,
        /// Region (default: the first in tencent.regions)
        #[arg(long)]
        region: Option<String>,
        /// Why you need the console (recorded in the audit journal)
        #[arg(long)]
        reason: Option<String>,
    },
    /// Validate the config and the environment and print the effective policy
    CheckConfig {
        /// Check everything that needs no secrets (for CI): the environment is not read
        #[arg(long)]
        offline: bool,
    },
    /// List the instances the catalog sees and which [[allow]] rules open each
    Instances {
        /// Only this region (default: every region in tencent.regions)
        #[arg(long)]
        region: Option<String>,
    },
    /// Play the whole flow on loopback with built-in stand-ins for Discord and Tencent Cloud:
    /// no accounts, no config, no network
    // Only with the default `demo` feature: deploy builds (`--no-default-features`) carry no
    // stand-in code, and clap answers `demo` there as an unknown subcommand.
    #[cfg(feature = "demo")]
    Demo {
        /// After the tour, keep the stand-ins running until Ctrl-C and print a ready config and the
        /// commands that point `vncbot run`, `vncbot url` and curl at them
        #[arg(long)]
        keep: bool,
    },
    /// Audit journal tools
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the journal's hash chain (default file: audit.path from the config)
    Verify {
        /// A head anchored outside the file (as the bot posts it): the journal must still hold
        /// record SEQ with this sha256, which shows truncation and rewrites; a signed anchor's
        /// SIG is checked with --public-key
        #[arg(long, value_name = "SEQ:HASH[:SIG]", value_parser = cli::audit_verify::parse_anchor)]
        head: Option<cli::audit_verify::Anchor>,
        /// Check the digests and segments shipped to [audit.ship]'s bucket, then the journal
        /// against them
        #[arg(long)]
        remote: bool,
        /// The bot's Ed25519 public key (hex, from `vncbot audit pubkey`)
        #[arg(long, value_name = "KEY")]
        public_key: Option<String>,
        file: Option<PathBuf>,
    },
    /// Print a new Ed25519 key pair for signing digests and anchors
    Keygen,
    /// Print the public key of VNCBOT_AUDIT_SIGNING_KEY
    Pubkey,
    /// One row per grant: who, which instance, why, how it was allowed, when and how long, links
    /// minted and presses refused; says whether the chain verified (exit 1 when not)
    Report {
        #[command(flatten)]
        pick: AuditPick,
        #[arg(long, value_enum, default_value = "table")]
        format: cli::audit_report::Format,
        file: Option<PathBuf>,
    },
    /// The journal's records as written, filtered; text from members and Tencent escaped
    Query {
        #[command(flatten)]
        pick: AuditPick,
        /// Only records of this event (granted, requested, issued, ended, denied, …); repeatable
        #[arg(long = "event", value_name = "EVENT", value_parser = cli::audit_query::parse_event)]
        events: Vec<String>,
        /// Only the records of this grant (the seq of its `granted` record) and its presses
        #[arg(long, value_name = "SEQ")]
        grant: Option<u64>,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: cli::audit_query::Format,
        file: Option<PathBuf>,
    },
}

/// What `audit report` and `audit query` select.
#[derive(clap::Args)]
struct AuditPick {
    /// From: an RFC 3339 time, a date (2026-12-01, from its start) or a duration back (7d, 12h, 30m)
    #[arg(long, value_name = "WHEN", value_parser = cli::audit_report::select::parse_when)]
    since: Option<cli::audit_report::select::When>,
    /// To: an RFC 3339 time, a date (through its end) or a duration back (7d, 12h, 30m)
    #[arg(long, value_name = "WHEN", value_parser = cli::audit_report::select::parse_when)]
    until: Option<cli::audit_report::select::When>,
    /// A member: Discord user ID or name
    #[arg(long, value_name = "ID|NAME")]
    member: Option<String>,
    /// An instance: ID or name
    #[arg(long, value_name = "ID|NAME")]
    instance: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let code = match args.command {
        Command::Run => cli::run::main(&args.config),
        Command::Url {
            instance_id,
            region,
            reason,
        } => cli::url::main(&args.config, instance_id, region, reason),
        Command::CheckConfig { offline } => cli::check_config::main(&args.config, offline),
        Command::Instances { region } => cli::instances::main(&args.config, region),
        #[cfg(feature = "demo")]
        Command::Demo { keep } => cli::demo::main(keep),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    remote: true,
                    public_key,
                    file,
                    ..
                },
        } => cli::audit_remote::main(&args.config, file, public_key.as_deref()),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    head,
                    public_key,
                    file,
                    ..
                },
        } => cli::audit_verify::main(&args.config, file, head, public_key.as_deref()),
        Command::Audit {
            command: AuditCommand::Keygen,
        } => cli::audit_keys::keygen(),
        Command::Audit {
            command: AuditCommand::Pubkey,
        } => cli::audit_keys::pubkey(),
        Command::Audit {
            command: AuditCommand::Report { pick, format, file },
        } => cli::audit_report::main(
            &args.config,
            cli::audit_report::Options {
                since: pick.since,
                until: pick.until,
                member: pick.member,
                instance: pick.instance,
                format,
                file,
            },
        ),
        Command::Audit {
            command:
                AuditCommand::Query {
                    pick,
                    events,
                    grant,
                    format,
                    file,
                },
        } => cli::audit_query::main(
            &args.config,
            cli::audit_query::Options {
                since: pick.since,
                until: pick.until,
                member: pick.member,
                instance: pick.instance,
                events,
                grant,
                format,
                file,
            },
        ),
    };
    ExitCode::from(code as u8)
}
