//! The `macula-relay` command line: run a relay node, or control a running one (`ctl`).
//!
//! ```text
//! macula-relay                                   # TCP and QUIC on port 4001, reference limits
//! macula-relay --config /etc/macula-relay/relay.toml
//! macula-relay --listen /ip4/0.0.0.0/tcp/4001 --external /ip4/203.0.113.7/tcp/4001 \
//!     --admin 127.0.0.1:9101 --metrics 0.0.0.0:9102 --log-format json
//! macula-relay --print-config                    # the effective configuration, as TOML
//! macula-relay ctl stats
//! macula-relay ctl --config /etc/macula-relay/relay.toml limits set total_bandwidth=12500000
//! macula-relay ctl policy deny 198.51.100.0/24
//! ```
//!
//! The node prints each listen address (with `/p2p/<peer id>`) on its own line of stdout and
//! nothing else; it logs to stderr. SIGTERM or Ctrl-C drain and stop it (a second signal stops
//! at once); SIGHUP reloads the config file. See `docs/operating.md` and `docs/deploy.md`.
//! `cargo run --example relay_node` runs this same code.

mod ctl_args;
pub mod logging;
pub mod nofile;

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;

use crate::{
    node_config::{LogFormat, NodeConfig, NodeConfigError, NodeSettings},
    runner,
};

pub use ctl_args::CtlArgs;

/// Run a Circuit Relay v2 relay node, or control one (`ctl`).
#[derive(Parser, Debug)]
#[command(
    name = "macula-relay",
    version,
    about,
    args_conflicts_with_subcommands = true,
    after_long_help = defaults_help()
)]
pub struct Cli {
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
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Config file (TOML). SIGHUP reads it again.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the effective configuration (file, then flags, then defaults) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(flatten)]
    settings: NodeSettings,
}

impl RunArgs {
    /// The configuration: the file (if any), then the flags over it, checked and defaulted.
    fn node_config(&self) -> Result<NodeConfig, NodeConfigError> {
        let file = match &self.config {
            Some(path) => NodeSettings::load(path)?,
            None => NodeSettings::default(),
        };
        file.overridden_by(self.settings.clone()).resolve()
    }
}

/// The defaults, as `--print-config` prints them with no file and no flags.
fn defaults_help() -> String {
    format!(
        "Defaults (a config file takes the same keys):\n\n{}",
        NodeConfig::default().to_toml()
    )
}

/// Runs the command line of `std::env::args` to its end: the `macula-relay` binary's `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::heap::tune_for_relay();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("macula-relay: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Ctl(ctl)) => {
                logging::init(LogFormat::Text);
                ctl.run().await.map(|out| print!("{out}"))
            }
            None => run_node(cli.run).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("macula-relay: {error}");
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
    logging::init(config.log_format);
    match nofile::raise() {
        Ok(limit) => tracing::info!(
            before = limit.before,
            soft = limit.soft,
            hard = limit.hard,
            "open-file limit (each connection needs one; raise the hard limit with LimitNOFILE= \
             or ulimit -Hn)"
        ),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
    let stop = runner::stop_signals()?;
    let reload = reloads(args)?;
    runner::run_reloadable(config, |addr| println!("{addr}"), stop, reload).await?;
    Ok(())
}

/// The configurations to switch to: the config file and the flags read again on every SIGHUP
/// (Unix). A file that does not parse or resolve comes as the error naming the key.
fn reloads(
    args: RunArgs,
) -> std::io::Result<impl futures::Stream<Item = Result<NodeConfig, NodeConfigError>> + Unpin> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let hangups = signal(SignalKind::hangup())?;
        let stream = tokio_stream_of(hangups);
        Ok(stream
            .map(move |()| {
                tracing::info!("SIGHUP received: reloading the configuration");
                args.node_config()
            })
            .boxed())
    }
    #[cfg(not(unix))]
    {
        let _ = args;
        Ok(futures::stream::pending().boxed())
    }
}

#[cfg(unix)]
fn tokio_stream_of(
    mut signal: tokio::signal::unix::Signal,
) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::poll_fn(move |cx| signal.poll_recv(cx))
}
