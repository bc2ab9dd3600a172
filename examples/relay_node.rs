//! The macula relay node: a Circuit Relay v2 relay with the reference defaults, and `ctl` to
//! control a running one.
//!
//! ```text
//! cargo run --example relay_node
//! cargo run --example relay_node -- --listen /ip4/0.0.0.0/tcp/4001 \
//!     --external /ip4/203.0.113.7/tcp/4001 --key-file relay.key --bandwidth 0 \
//!     --admin 127.0.0.1:9101
//! cargo run --example relay_node -- --config relay.toml --print-config
//! cargo run --example relay_node -- --listen /ip4/0.0.0.0/tcp/4001 \
//!     --listen /ip4/0.0.0.0/tcp/4002/ws --listen /ip4/0.0.0.0/tcp/4003/tls/ws \
//!     --tls-cert fullchain.pem --tls-key privkey.pem      # browsers: docs/browsers.md
//! cargo run --example relay_node -- ctl stats
//! cargo run --example relay_node -- ctl --json sessions
//! cargo run --example relay_node -- ctl disable --drain 60s
//! ```
//!
//! Prints each listen address (with `/p2p/<peer id>`) on its own line of stdout and nothing
//! else; logs to stderr (`RUST_LOG` sets the level, default `info`). SIGTERM or Ctrl-C stop new
//! reservations and sessions, wait up to `--drain-timeout` for live sessions, close the rest
//! and exit; a second signal exits at once. See `docs/operating.md`.

use std::{io::IsTerminal, net::SocketAddr, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use macula_relay::{
    admin::{ctl, AdminClient, EnableRequest},
    node_config::{NodeConfig, NodeSettings},
    runner, SessionId,
};

/// Run a Circuit Relay v2 relay node, or control one (`ctl`).
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_long_help = defaults_help()
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Control a running node through its admin API.
    Ctl(CtlArgs),
}

/// Flags of the node: `--config` and `--print-config`, then one flag per config-file key
/// (`NodeSettings`, the one definition of the node's settings); a flag overrides the file.
#[derive(Args, Debug)]
struct RunArgs {
    /// Config file (TOML).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the effective configuration (file, then flags, then defaults) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    settings: NodeSettings,
}

impl RunArgs {
    fn node_config(&self) -> Result<NodeConfig, Box<dyn std::error::Error>> {
        let file = match &self.config {
            Some(path) => NodeSettings::load(path)?,
            None => NodeSettings::default(),
        };
        Ok(file.overridden_by(self.settings.clone()).resolve()?)
    }
}

#[derive(Args, Debug)]
struct CtlArgs {
    /// The node's admin API address.
    #[arg(long, value_name = "IP:PORT", default_value = macula_relay::admin::DEFAULT_ADDR)]
    admin: SocketAddr,
    /// File holding the admin API's bearer token.
    #[arg(long, value_name = "PATH")]
    admin_token_file: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// Whether the node answers.
    Health,
    /// The relay's statistics.
    Stats,
    /// The live sessions.
    Sessions,
    /// The reservations.
    Reservations,
    /// Close one session.
    Close {
        /// The session id (as `sessions` lists it).
        id: SessionId,
    },
    /// Accept new reservations and sessions again.
    Enable {
        /// This node's peer id (refused if it is another's).
        #[arg(long)]
        node_id: Option<String>,
        /// Address to announce in reservations (repeatable).
        #[arg(long = "endpoint", value_name = "MULTIADDR")]
        endpoints: Vec<String>,
        /// Maximum concurrent sessions.
        #[arg(long)]
        capacity: Option<usize>,
    },
    /// Refuse new reservations and sessions.
    Disable {
        /// Close live sessions and drop reservations after this grace period (e.g. 60s).
        #[arg(long, value_name = "DURATION", value_parser = ctl::parse_duration)]
        drain: Option<std::time::Duration>,
    },
    /// The Prometheus metrics text.
    Metrics,
}

impl CtlArgs {
    async fn run(self) -> Result<String, Box<dyn std::error::Error>> {
        let token = match &self.admin_token_file {
            Some(path) => Some(std::fs::read_to_string(path)?.trim().to_owned()),
            None => None,
        };
        let client = AdminClient::new(self.admin, token);
        let command = match self.command {
            CtlCommand::Health => ctl::CtlCommand::Health,
            CtlCommand::Stats => ctl::CtlCommand::Stats,
            CtlCommand::Sessions => ctl::CtlCommand::Sessions,
            CtlCommand::Reservations => ctl::CtlCommand::Reservations,
            CtlCommand::Close { id } => ctl::CtlCommand::Close(id),
            CtlCommand::Enable {
                node_id,
                endpoints,
                capacity,
            } => ctl::CtlCommand::Enable(EnableRequest {
                node_id,
                endpoints,
                capacity,
            }),
            CtlCommand::Disable { drain } => ctl::CtlCommand::Disable { drain },
            CtlCommand::Metrics => ctl::CtlCommand::Metrics,
        };
        Ok(ctl::run(&client, command, self.json).await?)
    }
}

/// The defaults, as `--print-config` prints them with no file and no flags.
fn defaults_help() -> String {
    format!(
        "Defaults (a config file takes the same keys):\n\n{}",
        NodeConfig::default().to_toml()
    )
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Ctl(ctl)) => ctl.run().await.map(|out| print!("{out}")),
        None => run_node(cli.run).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("relay_node: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run_node(args: RunArgs) -> Result<(), Box<dyn std::error::Error>> {
    let config = args.node_config()?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    let stop = runner::stop_signals()?;
    runner::run(config, |addr| println!("{addr}"), stop).await?;
    Ok(())
}
