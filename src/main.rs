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
    CheckConfig,
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
        /// Leave the stand-ins and the bot running after the tour, until Ctrl-C
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
        /// record SEQ with this sha256, which shows truncation and rewrites
        #[arg(long, value_name = "SEQ:HASH", value_parser = cli::audit_verify::parse_head)]
        head: Option<vncbot::audit::Appended>,
        file: Option<PathBuf>,
    },
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
        Command::CheckConfig => cli::check_config::main(&args.config),
        Command::Instances { region } => cli::instances::main(&args.config, region),
        #[cfg(feature = "demo")]
        Command::Demo { keep } => cli::demo::main(keep),
        Command::Audit {
            command: AuditCommand::Verify { head, file },
        } => cli::audit_verify::main(&args.config, file, head),
    };
    ExitCode::from(code as u8)
}
