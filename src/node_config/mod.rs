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
//! data_dir = "/var/lib/macula-relay"  # the identity key lives here
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
//! kad_protocol = "/macula/kad/1.0.0"  # the DHT's protocol; "/ipfs/kad/1.0.0" for the IPFS DHT
//! total_bandwidth = 12500000  # the whole node, bytes per second; 0 = unlimited
//! deny_networks = ["198.51.100.0/24"]
//! request_rate_per_ip = "120/250ms"  # or "off"
//! connections_per_origin = { ip = 64, ipv4_24 = 256 }  # or "off"
//!
//! [[tiers]]
//! name = "trusted"
//! peers = ["12D3KooW..."]
//! bandwidth = 0              # unlimited
//! ```
//!
//! Every key is described in `docs/operating.md`, which is generated from this module
//! ([`keys_reference`]).

mod reference;
mod resolve;
mod values;

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub use reference::keys_reference;
pub use resolve::{default_data_dir, Identity, NodeConfig, KEY_FILE_NAME};
pub use values::{BlockCaps, LogFormat, Off, OriginCaps, RateSetting, TierSetting};

#[cfg(test)]
use crate::RelayNodeBuilder;

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
    /// Directory of the node's state: its identity key (`identity.key`, created mode 0600 on
    /// first start and reused after, so the peer id stays the same). Default:
    /// `$STATE_DIRECTORY` (systemd's `StateDirectory=`), else `$XDG_DATA_HOME/macula-relay`,
    /// else `~/.local/share/macula-relay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<PathBuf>,
    /// Key file, instead of `<data_dir>/identity.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// A new identity (peer id) at every start, stored nowhere: for tests. Clients that stored
    /// the relay's address cannot reach it after a restart. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(
        long = "ephemeral-identity",
        num_args = 0,
        default_missing_value = "true"
    )]
    pub ephemeral_identity: Option<bool>,
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
    /// All sessions together, bytes per second (both directions summed), shared fairly among
    /// the busy sessions; 0 = unlimited (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "BYTES")]
    pub total_bandwidth: Option<u64>,
    /// Maximum sessions one peer may be part of (as source or target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "N")]
    pub max_sessions_per_peer: Option<usize>,
    /// Maximum reservations one peer may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "N")]
    pub max_reservations_per_peer: Option<usize>,
    /// Maximum sessions from one network (IPv4 /24, IPv6 /48) to one target; 0 = no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "N")]
    pub max_sessions_per_network_to_peer: Option<usize>,
    /// Inbound connections one network origin may hold (`off`, or caps per block:
    /// `ip=64,ipv4_24=256,ipv6_64=64,ipv6_48=256`; an absent block keeps its default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "CAPS")]
    pub connections_per_origin: Option<OriginCaps>,
    /// Reservations one network origin may hold (`off` or caps per block, as above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "CAPS")]
    pub reservations_per_origin: Option<OriginCaps>,
    /// Sessions one network origin may be part of (`off` or caps per block, as above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "CAPS")]
    pub sessions_per_origin: Option<OriginCaps>,
    /// Requests (RESERVE, CONNECT) one peer may make: `BURST/INTERVAL` (e.g. `30/1s`) or `off`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "RATE")]
    pub request_rate_per_peer: Option<RateSetting>,
    /// Requests one host (IPv4 address, IPv6 /64) may make: `BURST/INTERVAL` or `off` (`off` for
    /// a load test from one host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "RATE")]
    pub request_rate_per_ip: Option<RateSetting>,
    /// Maximum inbound connections (each needs a file descriptor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "N")]
    pub max_inbound_connections: Option<usize>,
    /// Maximum inbound connections one peer may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "N")]
    pub max_connections_per_peer: Option<usize>,
    /// Maximum inbound connections in their handshake at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "N")]
    pub max_pending_inbound: Option<usize>,
    /// Only these peers may use the relay (repeatable); absent = every peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long = "allow-peer", value_name = "PEER_ID")]
    pub allow_peers: Option<Vec<String>>,
    /// Peers refused (repeatable); their connections are closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long = "deny-peer", value_name = "PEER_ID")]
    pub deny_peers: Option<Vec<String>>,
    /// Only connections from these networks are accepted (CIDR, repeatable); absent = all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long = "allow-network", value_name = "CIDR")]
    pub allow_networks: Option<Vec<String>>,
    /// Connections from these networks are refused (CIDR, repeatable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long = "deny-network", value_name = "CIDR")]
    pub deny_networks: Option<Vec<String>>,
    /// A limit tier: peers with their own session limits (repeatable;
    /// `NAME:peers=ID+ID,bandwidth=N,session_timeout=SECS,max_session_bytes=N`, 0 =
    /// unlimited, absent = the default; in the file a `[[tiers]]` table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long = "tier", value_name = "TIER")]
    pub tiers: Option<Vec<TierSetting>>,
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
    /// Serve `/metrics` (Prometheus), `/healthz` and `/readyz` read-only, without a token, on
    /// this address (e.g. 0.0.0.0:9102); absent = off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "IP:PORT")]
    pub metrics: Option<String>,
    /// Log format on stderr: `text` (default) or `json` (one object per line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
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
    /// The DHT protocol of the registry's Kademlia (default `/macula/kad/1.0.0`, the relay
    /// fleet's own DHT). Every peer of one DHT speaks the same one: `/ipfs/kad/1.0.0` joins the
    /// IPFS DHT, or another implementation's DHT speaking it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[arg(long, value_name = "PROTOCOL")]
    pub kad_protocol: Option<String>,
}

/// The keys `ctl limits` shows and sets: how much the relay takes on.
pub const LIMIT_KEYS: &[&str] = &[
    "max_sessions",
    "bandwidth",
    "session_timeout",
    "max_session_bytes",
    "max_reservations",
    "reservation_ttl",
    "total_bandwidth",
    "max_sessions_per_peer",
    "max_reservations_per_peer",
    "max_sessions_per_network_to_peer",
    "connections_per_origin",
    "reservations_per_origin",
    "sessions_per_origin",
    "request_rate_per_peer",
    "request_rate_per_ip",
    "max_inbound_connections",
    "max_connections_per_peer",
    "max_pending_inbound",
];

/// The keys `ctl policy` shows and sets: who may use the relay, and with which limits.
pub const POLICY_KEYS: &[&str] = &[
    "allow_peers",
    "deny_peers",
    "allow_networks",
    "deny_networks",
    "exempt_networks",
    "tiers",
];

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_settings_give_the_reference_defaults() {
        let config = NodeSettings::default().resolve().unwrap();
        assert_eq!(config.relay, crate::Config::default());
        assert_eq!(config.listen, RelayNodeBuilder::default_listen_addrs());
        assert_eq!(config.admin, None);
        assert_eq!(config.drain_timeout, DEFAULT_DRAIN_TIMEOUT);
    }

    #[test]
    fn the_dht_protocol_defaults_to_ours_and_needs_a_restart_to_change() {
        let ours = NodeSettings::default().resolve().unwrap();
        assert_eq!(ours.kad_protocol, crate::node::KAD_PROTOCOL);
        let ipfs = NodeSettings {
            kad_protocol: Some("/ipfs/kad/1.0.0".into()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(ipfs.kad_protocol.as_ref(), "/ipfs/kad/1.0.0");
        assert_eq!(ours.restart_keys(&ipfs), vec!["kad_protocol"]);
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
        assert_eq!(config.relay.limits(), crate::SessionLimits::UNLIMITED);
    }
}
