//! The relay node's settings: a TOML config file and command-line flags, one key per flag.
//!
//! [`NodeSettings`] is one layer (the file, or the flags), every key optional;
//! [`NodeSettings::overridden_by`] puts the flags over the file, and [`NodeSettings::resolve`]
//! checks every value and fills in the defaults, giving the [`NodeConfig`] the node runs with.
//! Nothing starts until `resolve` has succeeded, so a bad value never leaves a node half
//! configured. [`NodeConfig::to_toml`] prints the effective configuration (`--print-config`), and
//! reading that text back gives the same configuration.
//!
//! ```toml
//! listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
//! external = ["/ip4/203.0.113.7/tcp/4001"]
//! allow_private_addrs = false  # announce loopback / LAN addresses too (LANs, tests)
//! exempt_networks = ["10.0.0.0/8"]  # no per-origin caps for these clients
//! key_file = "/var/lib/macula-relay/relay.key"
//! max_sessions = 100
//! bandwidth = 1000000        # bytes per second and direction, 0 = unlimited
//! session_timeout = 1800     # seconds, 0 = unlimited
//! max_session_bytes = 0      # bytes per direction, 0 = no cap
//! max_reservations = 128
//! reservation_ttl = 3600     # seconds
//! drain_timeout = 30         # seconds, on SIGTERM / Ctrl-C
//! admin = "127.0.0.1:9101"   # admin API; absent = off
//! admin_token_file = "/etc/macula-relay/admin.token"
//! tls_cert = "/etc/macula-relay/fullchain.pem"  # for /tls/ws (/wss) listen addresses
//! tls_key = "/etc/macula-relay/privkey.pem"
//! registry = true            # relay registry on Kademlia (docs/registry.md)
//! bootstrap = ["/ip4/203.0.113.1/tcp/4001/p2p/12D3KooW..."]  # DHT peers to join through
//! ```

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::{
    admin::AdminSettings,
    node::{bootstrap_peers, check_websocket_tls, WebsocketTls},
    Config, ConfigError, NodeError, RelayNodeBuilder,
};

/// Default time a stopping node waits for live sessions to end (`drain_timeout`).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest number a TOML file can hold.
const TOML_MAX: u64 = i64::MAX as u64;

/// One layer of settings (the config file, or the command-line flags); absent keys are `None`.
/// Numbers are seconds for durations, 0 for "unlimited".
///
/// This struct is the one definition of the node's settings: each field is a config-file key
/// (`max_sessions`) and a flag (`--max-sessions`), and its doc comment is the flag's help.
/// [`overridden_by`](Self::overridden_by) puts one layer over another, key by key, and
/// [`resolve`](Self::resolve) checks every value and fills in the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct NodeSettings {
    /// Listen address (repeatable). Default: TCP and QUIC on all IPv4 interfaces, port 4001.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long = "listen", value_name = "MULTIADDR")]
    pub listen: Option<Vec<String>>,
    /// Publicly reachable address to announce (repeatable), always trusted. Without any, the
    /// node announces its publicly routable listen addresses and those AutoNAT confirms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long = "external", value_name = "MULTIADDR")]
    pub external: Option<Vec<String>>,
    /// Announce private addresses too (loopback, RFC 1918, ULA, link-local, ...): for a relay
    /// serving a LAN, and for tests. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(
        long = "allow-private-addrs",
        num_args = 0,
        default_missing_value = "true"
    )]
    pub allow_private_addrs: Option<bool>,
    /// IP network exempt from the per-origin caps and the per-IP request rate (CIDR, e.g.
    /// `10.0.0.0/8`; repeatable): your own clients, or a NAT many honest peers share.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long = "exempt-network", value_name = "CIDR")]
    pub exempt_networks: Option<Vec<String>>,
    /// Key file: created on first run, reused after, so the peer id stays the same. Without
    /// one, the node has a new identity every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Maximum concurrent sessions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Per-session bandwidth, bytes per second and direction; 0 = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "BYTES")]
    pub bandwidth: Option<u64>,
    /// Session timeout, seconds; 0 = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "SECS")]
    pub session_timeout: Option<u64>,
    /// Per-session data cap, bytes in each direction; 0 = no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "BYTES")]
    pub max_session_bytes: Option<u64>,
    /// Maximum reservations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "N")]
    pub max_reservations: Option<usize>,
    /// Reservation lifetime, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "SECS")]
    pub reservation_ttl: Option<u64>,
    /// On SIGTERM / Ctrl-C, seconds to wait for live sessions before closing them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<u64>,
    /// Serve the admin API (JSON over HTTP) on this address, e.g. 127.0.0.1:9101; absent = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "IP:PORT")]
    pub admin: Option<String>,
    /// File holding the admin API's bearer token (required for a non-loopback `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) for secure WebSocket (`/tls/ws`, `/wss`) listen addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "PATH")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "PATH")]
    pub tls_key: Option<PathBuf>,
    /// Run the relay registry on Kademlia (default true): register when enabled and capable,
    /// serve as a DHT node. `--no-registry` sets it to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long = "no-registry", num_args = 0, default_missing_value = "false")]
    pub registry: Option<bool>,
    /// Join the relay registry's DHT through this peer (`/…/p2p/<peer id>`; repeatable). Without
    /// any, the node is a DHT (bootstrap) node others join through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    pub bootstrap: Option<Vec<String>>,
}

/// A config file or value the node refuses. The message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeConfigError {
    /// The config file could not be read.
    #[error("config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        error: String,
    },
    /// The file is not TOML.
    #[error("config file {path}: {error}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        error: String,
    },
    /// A key is unknown, or its value is of the wrong type or out of range.
    #[error("setting `{key}`: {error}")]
    Key {
        /// The key.
        key: String,
        /// What is wrong.
        error: String,
    },
}

impl NodeConfigError {
    fn key(key: &str, error: impl ToString) -> Self {
        NodeConfigError::Key {
            key: key.to_owned(),
            error: error.to_string(),
        }
    }
}

impl NodeSettings {
    /// Reads a TOML config file.
    pub fn load(path: &Path) -> Result<Self, NodeConfigError> {
        let text = fs::read_to_string(path).map_err(|e| NodeConfigError::Read {
            path: path.to_owned(),
            error: e.to_string(),
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            NodeConfigError::Syntax { error, .. } => NodeConfigError::Syntax {
                path: path.to_owned(),
                error,
            },
            e => e,
        })
    }

    /// Parses TOML text. An unknown key, or a value of the wrong type, is an error naming it.
    pub fn from_toml(text: &str) -> Result<Self, NodeConfigError> {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| NodeConfigError::Syntax {
                    path: PathBuf::new(),
                    error: e.to_string().trim_end().to_owned(),
                })?;
        // Key by key first, so the error names the key whatever the parser's message says.
        for (key, value) in &table {
            let mut single = toml::Table::new();
            single.insert(key.clone(), value.clone());
            NodeSettings::deserialize(single)
                .map_err(|e| NodeConfigError::key(key, e.message()))?;
        }
        NodeSettings::deserialize(table).map_err(|e| NodeConfigError::Syntax {
            path: PathBuf::new(),
            error: e.message().to_owned(),
        })
    }

    /// These settings with every key that `over` sets replaced by its value (the flags over
    /// the file).
    pub fn overridden_by(self, over: NodeSettings) -> NodeSettings {
        let object = |settings: &NodeSettings| match serde_json::to_value(settings) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => unreachable!("settings serialize to an object"),
        };
        let mut merged = object(&self);
        merged.extend(object(&over));
        serde_json::from_value(serde_json::Value::Object(merged))
            .expect("merged settings deserialize")
    }

    /// Checks every value and fills in the defaults.
    pub fn resolve(self) -> Result<NodeConfig, NodeConfigError> {
        let defaults = Config::default();
        let listen = match self.listen {
            None => RelayNodeBuilder::default_listen_addrs(),
            Some(list) if list.is_empty() => {
                return Err(NodeConfigError::key("listen", "needs at least one address"))
            }
            Some(list) => multiaddrs("listen", &list)?,
        };
        let external = multiaddrs("external", &self.external.unwrap_or_default())?;
        for (key, value) in [
            ("bandwidth", self.bandwidth),
            ("session_timeout", self.session_timeout),
            ("max_session_bytes", self.max_session_bytes),
            ("reservation_ttl", self.reservation_ttl),
            ("drain_timeout", self.drain_timeout),
        ] {
            if value.is_some_and(|v| v > TOML_MAX) {
                return Err(NodeConfigError::key(key, format!("at most {TOML_MAX}")));
            }
        }
        let drain_timeout = self
            .drain_timeout
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_DRAIN_TIMEOUT);
        if drain_timeout.as_secs() > u64::from(u32::MAX) {
            return Err(NodeConfigError::key(
                "drain_timeout",
                "at most u32::MAX seconds",
            ));
        }
        let admin = self
            .admin
            .map(|a| {
                a.parse::<SocketAddr>().map_err(|e| {
                    NodeConfigError::key("admin", format!("{a:?} is not ip:port: {e}"))
                })
            })
            .transpose()?;
        if let Some(addr) = admin {
            if !addr.ip().is_loopback() && self.admin_token_file.is_none() {
                return Err(NodeConfigError::key(
                    "admin_token_file",
                    format!("required: the admin API address {addr} is not loopback"),
                ));
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => {
                return Err(NodeConfigError::key("tls_key", "required with tls_cert"))
            }
            (None, Some(_)) => {
                return Err(NodeConfigError::key("tls_cert", "required with tls_key"))
            }
            (cert, _) => check_websocket_tls(&listen, cert.is_some())
                .map_err(|e| NodeConfigError::key("tls_cert", e))?,
        }
        let exempt_networks = self
            .exempt_networks
            .unwrap_or_default()
            .iter()
            .map(|n| {
                n.parse::<IpNet>().map_err(|e| {
                    NodeConfigError::key(
                        "exempt_networks",
                        format!("{n:?} is not a CIDR network: {e}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = NodeConfig {
            listen,
            external,
            allow_private_addrs: self.allow_private_addrs.unwrap_or(false),
            exempt_networks,
            key_file: self.key_file,
            max_sessions: self.max_sessions.unwrap_or(defaults.max_sessions()),
            bandwidth: nonzero(self.bandwidth, defaults.limits().bandwidth),
            session_timeout: nonzero(
                self.session_timeout,
                defaults.limits().duration.map(|d| d.as_secs()),
            )
            .map(Duration::from_secs),
            max_session_bytes: nonzero(self.max_session_bytes, defaults.limits().data),
            max_reservations: self.max_reservations.unwrap_or(defaults.max_reservations()),
            reservation_ttl: self
                .reservation_ttl
                .map(Duration::from_secs)
                .unwrap_or(defaults.reservation_ttl()),
            drain_timeout,
            admin,
            admin_token_file: self.admin_token_file,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            registry: self.registry.unwrap_or(true),
            bootstrap: bootstrap_addrs(&self.bootstrap.unwrap_or_default())?,
        };
        if !config.registry && !config.bootstrap.is_empty() {
            return Err(NodeConfigError::key("bootstrap", "needs registry = true"));
        }
        config.relay_config()?;
        Ok(config)
    }
}

/// The node's configuration, every value checked and defaulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Addresses to announce, trusted; empty = the public listen addresses and those AutoNAT
    /// confirms.
    pub external: Vec<Multiaddr>,
    /// Whether private addresses are announced too.
    pub allow_private_addrs: bool,
    /// Networks exempt from the per-origin caps and the per-IP request rate.
    pub exempt_networks: Vec<IpNet>,
    /// Key file, if any.
    pub key_file: Option<PathBuf>,
    /// Maximum concurrent sessions.
    pub max_sessions: usize,
    /// Per-session bandwidth; `None` = unlimited.
    pub bandwidth: Option<u64>,
    /// Session timeout; `None` = unlimited.
    pub session_timeout: Option<Duration>,
    /// Per-session data cap; `None` = no cap.
    pub max_session_bytes: Option<u64>,
    /// Maximum reservations.
    pub max_reservations: usize,
    /// Reservation lifetime.
    pub reservation_ttl: Duration,
    /// How long a stopping node waits for live sessions.
    pub drain_timeout: Duration,
    /// Admin API address, if on.
    pub admin: Option<SocketAddr>,
    /// File holding the admin token, if any.
    pub admin_token_file: Option<PathBuf>,
    /// TLS certificate chain for secure WebSocket, if any (always with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key, if any (always with `tls_cert`).
    pub tls_key: Option<PathBuf>,
    /// Whether the relay registry runs.
    pub registry: bool,
    /// DHT peers to join through.
    pub bootstrap: Vec<Multiaddr>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeSettings::default()
            .resolve()
            .expect("the defaults are valid")
    }
}

impl NodeConfig {
    /// The relay's [`Config`].
    pub fn relay_config(&self) -> Result<Config, NodeConfigError> {
        Config::builder()
            .max_sessions(self.max_sessions)
            .bandwidth(self.bandwidth)
            .session_timeout(self.session_timeout)
            .max_session_bytes(self.max_session_bytes)
            .max_reservations(self.max_reservations)
            .reservation_ttl(self.reservation_ttl)
            .allow_private_addrs(self.allow_private_addrs)
            .exempt_networks(self.exempt_networks.iter().copied())
            .build()
            .map_err(|e| match e {
                ConfigError::Zero(key) => NodeConfigError::key(key, "must not be zero"),
                ConfigError::TooLong(key) => {
                    NodeConfigError::key(key, format!("at most {} seconds", u32::MAX))
                }
                e => NodeConfigError::key("relay", e),
            })
    }

    /// The admin API settings, reading the token file; `None` if the admin API is off.
    pub fn admin_settings(&self) -> Result<Option<AdminSettings>, NodeConfigError> {
        let Some(bind) = self.admin else {
            return Ok(None);
        };
        let token = self
            .admin_token_file
            .as_ref()
            .map(|path| {
                warn_if_readable_by_others(path);
                fs::read_to_string(path)
                    .map(|t| t.trim().to_owned())
                    .map_err(|e| {
                        NodeConfigError::key("admin_token_file", format!("{}: {e}", path.display()))
                    })
            })
            .transpose()?;
        let settings = AdminSettings { bind, token };
        settings
            .validate()
            .map_err(|e| NodeConfigError::key("admin_token_file", e))?;
        Ok(Some(settings))
    }

    /// The certificate and key for secure WebSocket, read from `tls_cert` and `tls_key`;
    /// `None` if they are not set.
    pub fn websocket_tls(&self) -> Result<Option<WebsocketTls>, NodeError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => WebsocketTls::from_pem_files(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    /// Every key with its value, as the config file takes them.
    pub fn to_settings(&self) -> NodeSettings {
        let strings = |v: &[Multiaddr]| v.iter().map(|a| a.to_string()).collect();
        NodeSettings {
            listen: Some(strings(&self.listen)),
            external: Some(strings(&self.external)),
            allow_private_addrs: Some(self.allow_private_addrs),
            exempt_networks: Some(self.exempt_networks.iter().map(|n| n.to_string()).collect()),
            key_file: self.key_file.clone(),
            max_sessions: Some(self.max_sessions),
            bandwidth: Some(self.bandwidth.unwrap_or(0)),
            session_timeout: Some(self.session_timeout.map_or(0, |d| d.as_secs())),
            max_session_bytes: Some(self.max_session_bytes.unwrap_or(0)),
            max_reservations: Some(self.max_reservations),
            reservation_ttl: Some(self.reservation_ttl.as_secs()),
            drain_timeout: Some(self.drain_timeout.as_secs()),
            admin: self.admin.map(|a| a.to_string()),
            admin_token_file: self.admin_token_file.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            registry: Some(self.registry),
            bootstrap: Some(strings(&self.bootstrap)),
        }
    }

    /// The configuration as a config file (`--print-config`); reading it back gives `self`.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(&self.to_settings())
            .unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"));
        format!("# effective relay node configuration\n{body}")
    }
}

/// Warns when a secret file can be read by users other than its owner (unix).
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format!("{:o}", mode & 0o777),
                    "the admin token file is readable by other users: chmod 600 it"
                );
            }
        }
    }
}

/// Bootstrap addresses: multiaddrs ending with `/p2p/<peer id>`.
fn bootstrap_addrs(list: &[String]) -> Result<Vec<Multiaddr>, NodeConfigError> {
    let addrs = multiaddrs("bootstrap", list)?;
    bootstrap_peers(&addrs).map_err(|e| NodeConfigError::key("bootstrap", e))?;
    Ok(addrs)
}

fn multiaddrs(key: &str, list: &[String]) -> Result<Vec<Multiaddr>, NodeConfigError> {
    list.iter()
        .map(|a| {
            a.parse()
                .map_err(|e| NodeConfigError::key(key, format!("{a:?} is not a multiaddr: {e}")))
        })
        .collect()
}

/// A value where 0 means "none", defaulting to `default`.
fn nonzero(value: Option<u64>, default: Option<u64>) -> Option<u64> {
    match value {
        Some(0) => None,
        Some(v) => Some(v),
        None => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_settings_give_the_reference_defaults() {
        let config = NodeSettings::default().resolve().unwrap();
        assert_eq!(config.max_sessions, crate::DEFAULT_MAX_SESSIONS);
        assert_eq!(config.bandwidth, Some(crate::DEFAULT_BANDWIDTH));
        assert_eq!(config.session_timeout, Some(crate::DEFAULT_SESSION_TIMEOUT));
        assert_eq!(config.listen, RelayNodeBuilder::default_listen_addrs());
        assert_eq!(config.admin, None);
        assert_eq!(config.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    }

    #[test]
    fn zero_means_unlimited_where_the_flags_say_so() {
        let config = NodeSettings {
            bandwidth: Some(0),
            session_timeout: Some(0),
            max_session_bytes: Some(0),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(
            (
                config.bandwidth,
                config.session_timeout,
                config.max_session_bytes
            ),
            (None, None, None)
        );
    }
}
