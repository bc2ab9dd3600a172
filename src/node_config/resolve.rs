//! From settings to the configuration the node runs with: every value checked (an error names
//! the key), every absent key defaulted; and back ([`NodeConfig::to_settings`]), so that the
//! printed configuration reads back as the same.

use std::{
    collections::HashSet,
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use libp2p::{Multiaddr, PeerId, StreamProtocol};

use super::{
    values::{OriginCaps, RateSetting, TierSetting},
    LogFormat, NodeConfigError, NodeSettings, DEFAULT_DRAIN_TIMEOUT, TOML_MAX,
};
use crate::{
    admin::AdminSettings,
    node::{bootstrap_peers, check_websocket_tls, WebsocketTls, KAD_PROTOCOL},
    AccessPolicy, Config, ConfigError, NodeError, RelayNodeBuilder, SessionLimits,
};

/// The name of the identity key file in the data directory.
pub const KEY_FILE_NAME: &str = "identity.key";

/// Where the node's identity comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A key file, created on first start and reused after.
    KeyFile(PathBuf),
    /// A new key at every start (`ephemeral_identity`).
    Ephemeral,
}

/// The node's configuration, every value checked and defaulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Listen addresses.
    pub listen: Vec<Multiaddr>,
    /// Addresses to announce, trusted; empty = the public listen addresses and those AutoNAT
    /// confirms.
    pub external: Vec<Multiaddr>,
    /// The node's state directory.
    pub data_dir: PathBuf,
    /// The node's identity.
    pub identity: Identity,
    /// How long a stopping node waits for live sessions.
    pub drain_timeout: Duration,
    /// Admin API address, if on.
    pub admin: Option<SocketAddr>,
    /// File holding the admin token, if any.
    pub admin_token_file: Option<PathBuf>,
    /// The read-only metrics listener's address, if on.
    pub metrics: Option<SocketAddr>,
    /// The log format.
    pub log_format: LogFormat,
    /// TLS certificate chain for secure WebSocket, if any (always with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// TLS private key, if any (always with `tls_cert`).
    pub tls_key: Option<PathBuf>,
    /// Whether the relay registry runs.
    pub registry: bool,
    /// DHT peers to join through.
    pub bootstrap: Vec<Multiaddr>,
    /// The DHT protocol of the registry's Kademlia.
    pub kad_protocol: StreamProtocol,
    /// The limit tiers as written (their peers' limits are in `relay`'s policy).
    pub tiers: Vec<TierSetting>,
    /// The relay's configuration: limits, caps, rates and policy.
    pub relay: Config,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeSettings::default()
            .resolve()
            .expect("the defaults are valid")
    }
}

/// The default data directory: `$STATE_DIRECTORY` (the first, if systemd gives several), else
/// `$XDG_DATA_HOME/macula-relay`, else `$HOME/.local/share/macula-relay`, else
/// `./macula-relay`.
pub fn default_data_dir() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dirs) = env("STATE_DIRECTORY") {
        if let Some(first) = std::env::split_paths(&dirs).next() {
            return first;
        }
    }
    if let Some(data) = env("XDG_DATA_HOME") {
        return PathBuf::from(data).join("macula-relay");
    }
    if let Some(home) = env("HOME") {
        return PathBuf::from(home).join(".local/share/macula-relay");
    }
    PathBuf::from("macula-relay")
}

impl NodeSettings {
    /// Checks every value and fills in the defaults.
    pub fn resolve(self) -> Result<NodeConfig, NodeConfigError> {
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
            ("total_bandwidth", self.total_bandwidth),
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
        let admin = socket_addr("admin", self.admin)?;
        if let Some(addr) = admin {
            if !addr.ip().is_loopback() && self.admin_token_file.is_none() {
                return Err(NodeConfigError::key(
                    "admin_token_file",
                    format!("required: the admin API address {addr} is not loopback"),
                ));
            }
        }
        let metrics = socket_addr("metrics", self.metrics)?;
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
        let data_dir = self.data_dir.unwrap_or_else(default_data_dir);
        let identity = match (self.ephemeral_identity.unwrap_or(false), self.key_file) {
            (true, Some(_)) => {
                return Err(NodeConfigError::key(
                    "ephemeral_identity",
                    "conflicts with key_file: an ephemeral identity is stored nowhere",
                ))
            }
            (true, None) => Identity::Ephemeral,
            (false, Some(path)) => Identity::KeyFile(path),
            (false, None) => Identity::KeyFile(data_dir.join(KEY_FILE_NAME)),
        };
        let registry = self.registry.unwrap_or(true);
        let bootstrap = bootstrap_addrs(&self.bootstrap.unwrap_or_default())?;
        if !registry && !bootstrap.is_empty() {
            return Err(NodeConfigError::key("bootstrap", "needs registry = true"));
        }
        let kad_protocol = kad_protocol(self.kad_protocol)?;
        if !registry && kad_protocol != KAD_PROTOCOL {
            return Err(NodeConfigError::key(
                "kad_protocol",
                "needs registry = true",
            ));
        }
        let tiers = self.tiers.unwrap_or_default();
        let relay = relay_config(RelaySettings {
            max_sessions: self.max_sessions,
            bandwidth: self.bandwidth,
            session_timeout: self.session_timeout,
            max_session_bytes: self.max_session_bytes,
            max_reservations: self.max_reservations,
            reservation_ttl: self.reservation_ttl,
            total_bandwidth: self.total_bandwidth,
            max_sessions_per_peer: self.max_sessions_per_peer,
            max_reservations_per_peer: self.max_reservations_per_peer,
            max_sessions_per_network_to_peer: self.max_sessions_per_network_to_peer,
            connections_per_origin: self.connections_per_origin,
            reservations_per_origin: self.reservations_per_origin,
            sessions_per_origin: self.sessions_per_origin,
            request_rate_per_peer: self.request_rate_per_peer,
            request_rate_per_ip: self.request_rate_per_ip,
            max_inbound_connections: self.max_inbound_connections,
            max_connections_per_peer: self.max_connections_per_peer,
            max_pending_inbound: self.max_pending_inbound,
            allow_private_addrs: self.allow_private_addrs,
            exempt_networks: self.exempt_networks,
            allow_peers: self.allow_peers,
            deny_peers: self.deny_peers,
            allow_networks: self.allow_networks,
            deny_networks: self.deny_networks,
            tiers: &tiers,
        })?;
        Ok(NodeConfig {
            listen,
            external,
            data_dir,
            identity,
            drain_timeout,
            admin,
            admin_token_file: self.admin_token_file,
            metrics,
            log_format: self.log_format.unwrap_or_default(),
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            registry,
            bootstrap,
            kad_protocol,
            tiers,
            relay,
        })
    }
}

/// The settings that make up the relay's [`Config`].
struct RelaySettings<'a> {
    max_sessions: Option<usize>,
    bandwidth: Option<u64>,
    session_timeout: Option<u64>,
    max_session_bytes: Option<u64>,
    max_reservations: Option<usize>,
    reservation_ttl: Option<u64>,
    total_bandwidth: Option<u64>,
    max_sessions_per_peer: Option<usize>,
    max_reservations_per_peer: Option<usize>,
    max_sessions_per_network_to_peer: Option<usize>,
    connections_per_origin: Option<OriginCaps>,
    reservations_per_origin: Option<OriginCaps>,
    sessions_per_origin: Option<OriginCaps>,
    request_rate_per_peer: Option<RateSetting>,
    request_rate_per_ip: Option<RateSetting>,
    max_inbound_connections: Option<usize>,
    max_connections_per_peer: Option<usize>,
    max_pending_inbound: Option<usize>,
    allow_private_addrs: Option<bool>,
    exempt_networks: Option<Vec<String>>,
    allow_peers: Option<Vec<String>>,
    deny_peers: Option<Vec<String>>,
    allow_networks: Option<Vec<String>>,
    deny_networks: Option<Vec<String>>,
    tiers: &'a [TierSetting],
}

fn relay_config(s: RelaySettings<'_>) -> Result<Config, NodeConfigError> {
    let d = Config::default();
    let default_limits = SessionLimits {
        bandwidth: nonzero(s.bandwidth, d.limits().bandwidth),
        duration: nonzero(s.session_timeout, d.limits().duration.map(|t| t.as_secs()))
            .map(Duration::from_secs),
        data: nonzero(s.max_session_bytes, d.limits().data),
    };
    let caps = |key: &str, caps: Option<OriginCaps>, default| match caps {
        None => Ok(default),
        Some(c) => c.limits(default).map_err(|e| NodeConfigError::key(key, e)),
    };
    let rate = |r: Option<RateSetting>, default| r.map_or(default, |RateSetting(r)| r);
    let mut overrides = std::collections::HashMap::new();
    for tier in s.tiers {
        let limits = SessionLimits {
            bandwidth: nonzero(tier.bandwidth, default_limits.bandwidth),
            duration: nonzero(
                tier.session_timeout,
                default_limits.duration.map(|t| t.as_secs()),
            )
            .map(Duration::from_secs),
            data: nonzero(tier.max_session_bytes, default_limits.data),
        };
        for peer in peer_ids("tiers", &tier.peers)? {
            if overrides.insert(peer, limits).is_some() {
                return Err(NodeConfigError::key(
                    "tiers",
                    format!("peer {peer} is in more than one tier"),
                ));
            }
        }
    }
    let policy = AccessPolicy {
        allow: s
            .allow_peers
            .map(|p| peer_ids("allow_peers", &p))
            .transpose()?
            .map(|p| p.into_iter().collect()),
        deny: peer_ids("deny_peers", &s.deny_peers.unwrap_or_default())?
            .into_iter()
            .collect::<HashSet<_>>(),
        allow_networks: s
            .allow_networks
            .map(|n| networks("allow_networks", &n))
            .transpose()?,
        deny_networks: networks("deny_networks", &s.deny_networks.unwrap_or_default())?,
        overrides,
    };
    Config::builder()
        .max_sessions(s.max_sessions.unwrap_or(d.max_sessions()))
        .limits(default_limits)
        .max_reservations(s.max_reservations.unwrap_or(d.max_reservations()))
        .reservation_ttl(
            s.reservation_ttl
                .map(Duration::from_secs)
                .unwrap_or(d.reservation_ttl()),
        )
        .total_bandwidth(nonzero(s.total_bandwidth, d.total_bandwidth()))
        .max_sessions_per_peer(s.max_sessions_per_peer.unwrap_or(d.max_sessions_per_peer()))
        .max_reservations_per_peer(
            s.max_reservations_per_peer
                .unwrap_or(d.max_reservations_per_peer()),
        )
        .max_sessions_per_network_to_peer(match s.max_sessions_per_network_to_peer {
            Some(0) => usize::MAX,
            Some(n) => n,
            None => d.max_sessions_per_network_to_peer(),
        })
        .connections_per_origin(caps(
            "connections_per_origin",
            s.connections_per_origin,
            d.connections_per_origin(),
        )?)
        .reservations_per_origin(caps(
            "reservations_per_origin",
            s.reservations_per_origin,
            d.reservations_per_origin(),
        )?)
        .sessions_per_origin(caps(
            "sessions_per_origin",
            s.sessions_per_origin,
            d.sessions_per_origin(),
        )?)
        .request_rate_per_peer(rate(s.request_rate_per_peer, d.request_rate_per_peer()))
        .request_rate_per_ip(rate(s.request_rate_per_ip, d.request_rate_per_ip()))
        .max_inbound_connections(
            s.max_inbound_connections
                .unwrap_or(d.max_inbound_connections()),
        )
        .max_connections_per_peer(
            s.max_connections_per_peer
                .unwrap_or(d.max_connections_per_peer()),
        )
        .max_pending_inbound(s.max_pending_inbound.unwrap_or(d.max_pending_inbound()))
        .allow_private_addrs(s.allow_private_addrs.unwrap_or(false))
        .exempt_networks(networks(
            "exempt_networks",
            &s.exempt_networks.unwrap_or_default(),
        )?)
        .policy(policy)
        .build()
        .map_err(|e| match e {
            ConfigError::Zero(key) => NodeConfigError::key(key, "must not be zero"),
            ConfigError::TooLong(key) => {
                NodeConfigError::key(key, format!("at most {} seconds", u32::MAX))
            }
            e => NodeConfigError::key("relay", e),
        })
}

impl NodeConfig {
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
        let nets = |v: &[IpNet]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        let peers = |v: &mut dyn Iterator<Item = &PeerId>| {
            let mut list: Vec<String> = v.map(|p| p.to_string()).collect();
            list.sort();
            list
        };
        let r = &self.relay;
        let policy = r.policy();
        NodeSettings {
            listen: Some(strings(&self.listen)),
            external: Some(strings(&self.external)),
            allow_private_addrs: Some(r.allow_private_addrs()),
            exempt_networks: Some(nets(r.exempt_networks())),
            data_dir: Some(self.data_dir.clone()),
            key_file: match &self.identity {
                Identity::KeyFile(path) => Some(path.clone()),
                Identity::Ephemeral => None,
            },
            ephemeral_identity: Some(self.identity == Identity::Ephemeral),
            max_sessions: Some(r.max_sessions()),
            bandwidth: Some(r.limits().bandwidth.unwrap_or(0)),
            session_timeout: Some(r.limits().duration.map_or(0, |d| d.as_secs())),
            max_session_bytes: Some(r.limits().data.unwrap_or(0)),
            max_reservations: Some(r.max_reservations()),
            reservation_ttl: Some(r.reservation_ttl().as_secs()),
            total_bandwidth: Some(r.total_bandwidth().unwrap_or(0)),
            max_sessions_per_peer: Some(r.max_sessions_per_peer()),
            max_reservations_per_peer: Some(r.max_reservations_per_peer()),
            max_sessions_per_network_to_peer: Some(match r.max_sessions_per_network_to_peer() {
                usize::MAX => 0,
                n => n,
            }),
            connections_per_origin: Some(OriginCaps::of(r.connections_per_origin())),
            reservations_per_origin: Some(OriginCaps::of(r.reservations_per_origin())),
            sessions_per_origin: Some(OriginCaps::of(r.sessions_per_origin())),
            request_rate_per_peer: Some(RateSetting(r.request_rate_per_peer())),
            request_rate_per_ip: Some(RateSetting(r.request_rate_per_ip())),
            max_inbound_connections: Some(r.max_inbound_connections()),
            max_connections_per_peer: Some(r.max_connections_per_peer()),
            max_pending_inbound: Some(r.max_pending_inbound()),
            allow_peers: policy.allow.as_ref().map(|a| peers(&mut a.iter())),
            deny_peers: Some(peers(&mut policy.deny.iter())),
            allow_networks: policy.allow_networks.as_deref().map(nets),
            deny_networks: Some(nets(&policy.deny_networks)),
            tiers: Some(self.tiers.clone()),
            drain_timeout: Some(self.drain_timeout.as_secs()),
            admin: self.admin.map(|a| a.to_string()),
            admin_token_file: self.admin_token_file.clone(),
            metrics: self.metrics.map(|a| a.to_string()),
            log_format: Some(self.log_format),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            registry: Some(self.registry),
            bootstrap: Some(strings(&self.bootstrap)),
            kad_protocol: Some(self.kad_protocol.to_string()),
        }
    }

    /// The configuration as a config file (`--print-config`); reading it back gives `self`.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(&self.to_settings())
            .unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"));
        format!("# effective relay node configuration\n{body}")
    }

    /// The keys whose change `next` makes but a running node cannot apply (listen addresses,
    /// identity, admin and metrics listeners, log format, registry and its DHT): a reload keeps their
    /// current values, and the log names them.
    pub fn restart_keys(&self, next: &NodeConfig) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |key, changed: bool| {
            if changed {
                keys.push(key);
            }
        };
        check("listen", self.listen != next.listen);
        check("external", self.external != next.external);
        check("data_dir", self.data_dir != next.data_dir);
        check("key_file", self.identity != next.identity);
        check("admin", self.admin != next.admin);
        check(
            "admin_token_file",
            self.admin_token_file != next.admin_token_file,
        );
        check("metrics", self.metrics != next.metrics);
        check("log_format", self.log_format != next.log_format);
        check("registry", self.registry != next.registry);
        check("bootstrap", self.bootstrap != next.bootstrap);
        check("kad_protocol", self.kad_protocol != next.kad_protocol);
        check(
            "tls_cert",
            self.tls_cert.is_some() != next.tls_cert.is_some(),
        );
        keys
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

fn socket_addr(key: &str, value: Option<String>) -> Result<Option<SocketAddr>, NodeConfigError> {
    value
        .map(|a| {
            a.parse::<SocketAddr>()
                .map_err(|e| NodeConfigError::key(key, format!("{a:?} is not ip:port: {e}")))
        })
        .transpose()
}

/// The DHT protocol: a protocol name, `/` and a name without spaces (default [`KAD_PROTOCOL`]).
fn kad_protocol(value: Option<String>) -> Result<StreamProtocol, NodeConfigError> {
    match value {
        None => Ok(KAD_PROTOCOL),
        Some(name)
            if !name.starts_with('/')
                || name.len() < 2
                || name.chars().any(|c| c.is_whitespace() || c.is_control()) =>
        {
            Err(NodeConfigError::key(
                "kad_protocol",
                format!(
                    "{name:?} is not a protocol name: `/` and a name without spaces, e.g. \
                     /ipfs/kad/1.0.0"
                ),
            ))
        }
        Some(name) => StreamProtocol::try_from_owned(name)
            .map_err(|e| NodeConfigError::key("kad_protocol", e)),
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

fn peer_ids(key: &str, list: &[String]) -> Result<Vec<PeerId>, NodeConfigError> {
    list.iter()
        .map(|p| {
            p.parse()
                .map_err(|e| NodeConfigError::key(key, format!("{p:?} is not a peer id: {e}")))
        })
        .collect()
}

fn networks(key: &str, list: &[String]) -> Result<Vec<IpNet>, NodeConfigError> {
    list.iter()
        .map(|n| {
            n.parse::<IpNet>()
                .map_err(|e| NodeConfigError::key(key, format!("{n:?} is not a CIDR network: {e}")))
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
