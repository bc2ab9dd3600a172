//! `macula-relay ctl`: which node to talk to (flag, environment, or the node's own config
//! file), and the commands.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    path::PathBuf,
    time::Duration,
};

use clap::{Args, Subcommand};

use crate::{
    admin::{
        ctl::{self, CtlCommand as Command, SettingsChange, SettingsGroup},
        AdminClient, EnableRequest, DEFAULT_ADDR,
    },
    node_config::NodeSettings,
    SessionId,
};

/// Talk to a running node's admin API.
///
/// The node is found from `--admin` (or `MACULA_RELAY_ADMIN`), else from the node's config file
/// (`--config`: its `admin` and `admin_token_file` keys), else at the default address.
#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The node's admin API: `http://IP:PORT`, `http://localhost:PORT` or `IP:PORT`.
    #[arg(long, value_name = "URL", env = "MACULA_RELAY_ADMIN")]
    admin: Option<String>,
    /// File holding the admin API's bearer token.
    #[arg(long, value_name = "PATH", env = "MACULA_RELAY_ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,
    /// The node's config file: `admin` and `admin_token_file` are read from it.
    #[arg(long, value_name = "PATH", env = "MACULA_RELAY_CONFIG")]
    config: Option<PathBuf>,
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
        drain: Option<Duration>,
    },
    /// The Prometheus metrics text.
    Metrics,
    /// The node's whole effective configuration, as TOML.
    Config,
    /// Show the limits (sessions, reservations, bandwidth, per-origin caps, request rates), or
    /// change them live: `ctl limits set total_bandwidth=12500000 request_rate_per_ip=off`.
    Limits {
        #[command(subcommand)]
        action: Option<SetAction>,
    },
    /// Show the access policy (allow/deny lists, tiers, exempt networks), or change it live:
    /// `ctl policy deny <PEER ID | CIDR>`, `ctl policy undeny ...`, `ctl policy set KEY=VALUE`.
    Policy {
        #[command(subcommand)]
        action: Option<PolicyAction>,
    },
    /// The relay registry: whether this node is registered, and the relays it knows.
    Registry,
}

#[derive(Subcommand, Debug)]
enum SetAction {
    /// Set keys (`KEY=VALUE`, the config file's keys and TOML values; a bare word is a string).
    Set {
        #[arg(value_name = "KEY=VALUE", required = true)]
        assignments: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyAction {
    /// Set keys (`KEY=VALUE`).
    Set {
        #[arg(value_name = "KEY=VALUE", required = true)]
        assignments: Vec<String>,
    },
    /// Refuse a peer id or an IP network (CIDR); its live sessions and reservations end.
    Deny {
        /// A peer id or a CIDR network.
        target: String,
    },
    /// Take a peer id or network off the deny list.
    Undeny {
        /// A peer id or a CIDR network.
        target: String,
    },
}

impl CtlArgs {
    /// Runs the command; returns what to print.
    pub async fn run(self) -> Result<String, Box<dyn std::error::Error>> {
        let node_file = self.config.as_deref().map(NodeSettings::load).transpose()?;
        let admin = match (
            &self.admin,
            node_file.as_ref().and_then(|f| f.admin.clone()),
        ) {
            (Some(url), _) => admin_addr(url)?,
            (None, Some(bind)) => loopback_if_unspecified(admin_addr(&bind)?),
            (None, None) => DEFAULT_ADDR.parse()?,
        };
        let token_file = self
            .admin_token_file
            .clone()
            .or_else(|| node_file.and_then(|f| f.admin_token_file));
        let token = match &token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| format!("admin token file {}: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => None,
        };
        let client = AdminClient::new(admin, token);
        let command = match self.command {
            CtlCommand::Health => Command::Health,
            CtlCommand::Stats => Command::Stats,
            CtlCommand::Sessions => Command::Sessions,
            CtlCommand::Reservations => Command::Reservations,
            CtlCommand::Close { id } => Command::Close(id),
            CtlCommand::Enable {
                node_id,
                endpoints,
                capacity,
            } => Command::Enable(EnableRequest {
                node_id,
                endpoints,
                capacity,
            }),
            CtlCommand::Disable { drain } => Command::Disable { drain },
            CtlCommand::Metrics => Command::Metrics,
            CtlCommand::Config => Command::Settings(SettingsGroup::All, None),
            CtlCommand::Limits { action } => Command::Settings(
                SettingsGroup::Limits,
                action
                    .map(|SetAction::Set { assignments }| {
                        ctl::parse_assignments(&assignments)
                            .map(|s| SettingsChange::Set(Box::new(s)))
                    })
                    .transpose()?,
            ),
            CtlCommand::Policy { action } => Command::Settings(
                SettingsGroup::Policy,
                match action {
                    None => None,
                    Some(PolicyAction::Set { assignments }) => Some(SettingsChange::Set(Box::new(
                        ctl::parse_assignments(&assignments)?,
                    ))),
                    Some(PolicyAction::Deny { target }) => Some(SettingsChange::Deny(target)),
                    Some(PolicyAction::Undeny { target }) => Some(SettingsChange::Undeny(target)),
                },
            ),
            CtlCommand::Registry => Command::Registry,
        };
        Ok(ctl::run(&client, command, self.json).await?)
    }
}

/// `http://host:port[/]` or `host:port`, resolved (host names such as `localhost` too).
fn admin_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if url.starts_with("https://") {
        return Err(format!(
            "admin {url:?}: the admin API is plain HTTP (put it on loopback, or behind a TLS \
             proxy and reach it through a tunnel)"
        ));
    } else {
        url
    };
    let host_port = rest.trim_end_matches('/');
    host_port
        .to_socket_addrs()
        .map_err(|e| format!("admin {url:?}: not http://HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("admin {url:?}: {host_port} resolves to no address"))
}

/// A node bound to `0.0.0.0` / `::` is reached on loopback.
fn loopback_if_unspecified(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_urls_with_and_without_scheme_resolve() {
        let expected: SocketAddr = "127.0.0.1:9101".parse().unwrap();
        assert_eq!(admin_addr("http://127.0.0.1:9101").unwrap(), expected);
        assert_eq!(admin_addr("http://127.0.0.1:9101/").unwrap(), expected);
        assert_eq!(admin_addr("127.0.0.1:9101").unwrap(), expected);
        assert!(admin_addr("http://localhost:9101")
            .unwrap()
            .ip()
            .is_loopback());
        assert!(admin_addr("https://127.0.0.1:9101")
            .unwrap_err()
            .contains("plain HTTP"));
        assert!(admin_addr("http://127.0.0.1").is_err());
    }

    #[test]
    fn a_node_bound_to_every_interface_is_reached_on_loopback() {
        assert_eq!(
            loopback_if_unspecified("0.0.0.0:9101".parse().unwrap()),
            "127.0.0.1:9101".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            loopback_if_unspecified("[::]:9101".parse().unwrap()),
            "[::1]:9101".parse::<SocketAddr>().unwrap()
        );
    }
}
