//! Relay configuration: limits, admission policy and their documented defaults.
//!
//! [`Config::default()`] gives the reference (`macula_relay_node`) defaults: 100 concurrent
//! sessions, 1 MB/s per session and direction, 30-minute session timeout. Build other
//! configurations with [`Config::builder()`]; invalid values are rejected by
//! [`ConfigBuilder::build`] with a [`ConfigError`] naming the setting.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::Duration,
};

use ipnet::IpNet;
use libp2p::{Multiaddr, PeerId};

/// Default maximum number of concurrent sessions (the reference's "max concurrent relay sessions").
pub const DEFAULT_MAX_SESSIONS: usize = 100;
/// Default per-session bandwidth limit, bytes per second and direction (the reference's 1 MB/s).
pub const DEFAULT_BANDWIDTH: u64 = 1_000_000;
/// Default session timeout (the reference's 30 minutes).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Default maximum concurrent sessions in which one peer is source or target.
pub const DEFAULT_MAX_SESSIONS_PER_PEER: usize = 16;
/// Default maximum number of reservations.
pub const DEFAULT_MAX_RESERVATIONS: usize = 128;
/// Default maximum reservations one peer may hold (one per connection).
pub const DEFAULT_MAX_RESERVATIONS_PER_PEER: usize = 4;
/// Default reservation lifetime; clients renew before it ends.
pub const DEFAULT_RESERVATION_TTL: Duration = Duration::from_secs(60 * 60);
/// Default time a hop or stop stream may take to send its message or answer.
pub const DEFAULT_STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// Default number of hop requests one connection may have in progress at once.
pub const DEFAULT_MAX_PENDING_STREAMS_PER_CONNECTION: usize = 16;
/// Default interval of [`Event::Stats`](crate::Event::Stats).
pub const DEFAULT_STATS_INTERVAL: Duration = Duration::from_secs(30);
/// Default size of each of a session's two copy buffers, once a direction has carried its first
/// mebibyte (it starts with at most 4 KiB; see [`ConfigBuilder::copy_buffer_size`]).
pub const DEFAULT_COPY_BUFFER_SIZE: usize = 16 * 1024;
/// Default caps on the reservations one network origin may hold: go-libp2p's relay allows 8 per
/// IP and 32 per ASN; a /24 or a /48 stands in for the ASN here.
pub const DEFAULT_RESERVATIONS_PER_ORIGIN: OriginLimits = OriginLimits {
    per_ip: 8,
    per_ipv4_24: 32,
    per_ipv6_64: 8,
    per_ipv6_48: 32,
};
/// Default caps on the sessions (pending or relaying, as source or as target) one network origin
/// may be part of: one IP as many as one peer ([`DEFAULT_MAX_SESSIONS_PER_PEER`]), one network
/// a third of [`DEFAULT_MAX_SESSIONS`].
pub const DEFAULT_SESSIONS_PER_ORIGIN: OriginLimits = OriginLimits {
    per_ip: DEFAULT_MAX_SESSIONS_PER_PEER,
    per_ipv4_24: 32,
    per_ipv6_64: DEFAULT_MAX_SESSIONS_PER_PEER,
    per_ipv6_48: 32,
};
/// Default caps on the inbound connections one network origin may hold (each connection can
/// hold muxer buffers and handler state; one reservation or session needs one): a NAT's worth
/// of peers per address, a few NATs per network.
pub const DEFAULT_CONNECTIONS_PER_ORIGIN: OriginLimits = OriginLimits {
    per_ip: 64,
    per_ipv4_24: 256,
    per_ipv6_64: 64,
    per_ipv6_48: 256,
};
/// Default maximum inbound connections (each needs a file descriptor).
pub const DEFAULT_MAX_INBOUND_CONNECTIONS: usize = 20_000;
/// Default maximum inbound connections one peer may hold.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 8;
/// Default maximum inbound connections in their handshake at once.
pub const DEFAULT_MAX_PENDING_INBOUND: usize = 256;
/// Default maximum sessions from one network (IPv4 /24, IPv6 /48) to one target: a quarter of
/// [`DEFAULT_MAX_SESSIONS_PER_PEER`], so that locking a target out takes four networks.
pub const DEFAULT_MAX_SESSIONS_PER_NETWORK_TO_PEER: usize = DEFAULT_MAX_SESSIONS_PER_PEER / 4;

/// The limits applied to one session. `None` means unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Bytes per second, in each direction.
    pub bandwidth: Option<u64>,
    /// Maximum session duration; sent to clients as the `Limit.duration`.
    pub duration: Option<Duration>,
    /// Maximum bytes in each direction; sent to clients as the `Limit.data`.
    pub data: Option<u64>,
}

impl Default for SessionLimits {
    /// The reference defaults: 1 MB/s, 30 minutes, no data cap.
    fn default() -> Self {
        Self {
            bandwidth: Some(DEFAULT_BANDWIDTH),
            duration: Some(DEFAULT_SESSION_TIMEOUT),
            data: None,
        }
    }
}

impl SessionLimits {
    /// No limit at all (e.g. for a trusted peer).
    pub const UNLIMITED: SessionLimits = SessionLimits {
        bandwidth: None,
        duration: None,
        data: None,
    };

    /// Per field, the more generous of two limits: a session between a trusted and an ordinary
    /// peer gets the trusted peer's limits.
    pub fn most_generous(self, other: SessionLimits) -> SessionLimits {
        fn max<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
            Some(a?.max(b?))
        }
        SessionLimits {
            bandwidth: max(self.bandwidth, other.bandwidth),
            duration: max(self.duration, other.duration),
            data: max(self.data, other.data),
        }
    }

    /// The part of the limits the spec lets a relay announce (`Limit`).
    pub fn wire(&self) -> crate::protocol::WireLimit {
        crate::protocol::WireLimit {
            duration: self.duration,
            data: self.data,
        }
    }

    fn validate(&self, what: &'static str) -> Result<(), ConfigError> {
        if self.bandwidth == Some(0) {
            return Err(ConfigError::Zero(match what {
                "default" => "bandwidth",
                _ => "peer bandwidth override",
            }));
        }
        if self.data == Some(0) {
            return Err(ConfigError::Zero("max_session_bytes"));
        }
        match self.duration {
            Some(d) if d.is_zero() => Err(ConfigError::Zero("session_timeout")),
            Some(d) if d.as_secs() > u64::from(u32::MAX) => {
                Err(ConfigError::TooLong("session_timeout"))
            }
            _ => Ok(()),
        }
    }
}

/// A request-rate limit: up to `burst` requests at once, then one more every `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestRate {
    /// Requests allowed back to back.
    pub burst: u32,
    /// Time to earn one more request.
    pub interval: Duration,
}

/// Caps on what one network origin may hold at once, per address block. An IPv4 address
/// counts against its own cap and its /24's; an IPv6 address against its own, its /64's and
/// its /48's. IPv4-mapped IPv6 addresses count as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginLimits {
    /// One address (IPv4 or IPv6).
    pub per_ip: usize,
    /// One IPv4 /24.
    pub per_ipv4_24: usize,
    /// One IPv6 /64: what one host or one LAN gets.
    pub per_ipv6_64: usize,
    /// One IPv6 /48: what one site gets.
    pub per_ipv6_48: usize,
}

impl OriginLimits {
    fn validate(&self, name: &'static str) -> Result<(), ConfigError> {
        if [
            self.per_ip,
            self.per_ipv4_24,
            self.per_ipv6_64,
            self.per_ipv6_48,
        ]
        .contains(&0)
        {
            return Err(ConfigError::Zero(name));
        }
        Ok(())
    }
}

/// Who may use the relay, and with which limits. A peer or network the policy does not permit
/// is refused (a network cannot connect, a peer hears `PERMISSION_DENIED`); when the policy
/// changes on a running relay, the connections it now refuses are closed
/// (with them its reservations and sessions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// If set, only these peers may reserve or open sessions.
    pub allow: Option<HashSet<PeerId>>,
    /// These peers are always refused (`PERMISSION_DENIED`).
    pub deny: HashSet<PeerId>,
    /// If set, only connections from these networks are accepted.
    pub allow_networks: Option<Vec<IpNet>>,
    /// Connections from these networks are refused.
    pub deny_networks: Vec<IpNet>,
    /// Limits for particular peers, replacing the default limits for sessions they are part of.
    pub overrides: HashMap<PeerId, SessionLimits>,
}

impl AccessPolicy {
    /// Whether `peer` may use the relay.
    pub fn permits(&self, peer: &PeerId) -> bool {
        !self.deny.contains(peer) && self.allow.as_ref().is_none_or(|a| a.contains(peer))
    }

    /// Whether a connection from `ip` is accepted (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn permits_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        !self.deny_networks.iter().any(|n| n.contains(&ip))
            && self
                .allow_networks
                .as_ref()
                .is_none_or(|a| a.iter().any(|n| n.contains(&ip)))
    }
}

/// An invalid configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A capacity, rate or size that must not be zero is zero.
    #[error("`{0}` must not be zero (use `None` for unlimited where that is allowed)")]
    Zero(&'static str),
    /// A duration does not fit the wire format (u32 seconds).
    #[error("`{0}` is too long: at most u32::MAX seconds")]
    TooLong(&'static str),
    /// A node id given to `enable_with` is not this node's peer id.
    #[error("node id {given} is not this relay's peer id {local}")]
    WrongNodeId {
        /// The id given (base58).
        given: String,
        /// The relay's own id (base58).
        local: String,
    },
}

/// The relay's configuration. See the `DEFAULT_*` constants for the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub(crate) max_sessions: usize,
    pub(crate) max_sessions_per_peer: usize,
    pub(crate) limits: SessionLimits,
    pub(crate) total_bandwidth: Option<u64>,
    pub(crate) max_reservations: usize,
    pub(crate) max_reservations_per_peer: usize,
    pub(crate) reservation_ttl: Duration,
    pub(crate) require_reservation: bool,
    pub(crate) request_rate_per_peer: Option<RequestRate>,
    pub(crate) request_rate_per_ip: Option<RequestRate>,
    pub(crate) policy: AccessPolicy,
    pub(crate) connections_per_origin: OriginLimits,
    pub(crate) max_inbound_connections: usize,
    pub(crate) max_connections_per_peer: usize,
    pub(crate) max_pending_inbound: usize,
    pub(crate) reservations_per_origin: OriginLimits,
    pub(crate) sessions_per_origin: OriginLimits,
    pub(crate) max_sessions_per_network_to_peer: usize,
    pub(crate) exempt_networks: Vec<IpNet>,
    pub(crate) stream_timeout: Duration,
    pub(crate) max_pending_streams_per_connection: usize,
    pub(crate) stats_interval: Option<Duration>,
    pub(crate) copy_buffer_size: usize,
    pub(crate) advertised_addrs: Vec<Multiaddr>,
    pub(crate) allow_private_addrs: bool,
    pub(crate) start_enabled: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_sessions: DEFAULT_MAX_SESSIONS,
            max_sessions_per_peer: DEFAULT_MAX_SESSIONS_PER_PEER,
            limits: SessionLimits::default(),
            total_bandwidth: None,
            max_reservations: DEFAULT_MAX_RESERVATIONS,
            max_reservations_per_peer: DEFAULT_MAX_RESERVATIONS_PER_PEER,
            reservation_ttl: DEFAULT_RESERVATION_TTL,
            require_reservation: true,
            // 30 back to back, then one per second: ample for a client, a wall for a flood.
            request_rate_per_peer: Some(RequestRate {
                burst: 30,
                interval: Duration::from_secs(1),
            }),
            // Peers behind one NAT share an address: a larger budget.
            request_rate_per_ip: Some(RequestRate {
                burst: 120,
                interval: Duration::from_millis(250),
            }),
            policy: AccessPolicy::default(),
            connections_per_origin: DEFAULT_CONNECTIONS_PER_ORIGIN,
            max_inbound_connections: DEFAULT_MAX_INBOUND_CONNECTIONS,
            max_connections_per_peer: DEFAULT_MAX_CONNECTIONS_PER_PEER,
            max_pending_inbound: DEFAULT_MAX_PENDING_INBOUND,
            reservations_per_origin: DEFAULT_RESERVATIONS_PER_ORIGIN,
            sessions_per_origin: DEFAULT_SESSIONS_PER_ORIGIN,
            max_sessions_per_network_to_peer: DEFAULT_MAX_SESSIONS_PER_NETWORK_TO_PEER,
            exempt_networks: Vec::new(),
            stream_timeout: DEFAULT_STREAM_TIMEOUT,
            max_pending_streams_per_connection: DEFAULT_MAX_PENDING_STREAMS_PER_CONNECTION,
            stats_interval: Some(DEFAULT_STATS_INTERVAL),
            copy_buffer_size: DEFAULT_COPY_BUFFER_SIZE,
            advertised_addrs: Vec::new(),
            allow_private_addrs: false,
            start_enabled: true,
        }
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
        }
    }

    /// Maximum concurrent sessions.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }
    /// Maximum concurrent sessions per peer (as source or target).
    pub fn max_sessions_per_peer(&self) -> usize {
        self.max_sessions_per_peer
    }
    /// Default per-session limits.
    pub fn limits(&self) -> SessionLimits {
        self.limits
    }
    /// The node-wide bandwidth capacity, bytes per second summed over all sessions and both
    /// directions (what the relay sends out), if any; `None` = no node-wide limit.
    pub fn total_bandwidth(&self) -> Option<u64> {
        self.total_bandwidth
    }
    /// Maximum reservations.
    pub fn max_reservations(&self) -> usize {
        self.max_reservations
    }
    /// Maximum reservations per peer.
    pub fn max_reservations_per_peer(&self) -> usize {
        self.max_reservations_per_peer
    }
    /// Reservation lifetime.
    pub fn reservation_ttl(&self) -> Duration {
        self.reservation_ttl
    }
    /// Whether a CONNECT needs a reservation by the target.
    pub fn require_reservation(&self) -> bool {
        self.require_reservation
    }
    /// The access policy.
    pub fn policy(&self) -> &AccessPolicy {
        &self.policy
    }
    /// Per-peer request rate limit.
    pub fn request_rate_per_peer(&self) -> Option<RequestRate> {
        self.request_rate_per_peer
    }
    /// Per-IP request rate limit.
    pub fn request_rate_per_ip(&self) -> Option<RequestRate> {
        self.request_rate_per_ip
    }
    /// Caps on inbound connections per network origin.
    pub fn connections_per_origin(&self) -> OriginLimits {
        self.connections_per_origin
    }
    /// Maximum inbound connections.
    pub fn max_inbound_connections(&self) -> usize {
        self.max_inbound_connections
    }
    /// Maximum inbound connections per peer.
    pub fn max_connections_per_peer(&self) -> usize {
        self.max_connections_per_peer
    }
    /// Maximum inbound connections in their handshake at once.
    pub fn max_pending_inbound(&self) -> usize {
        self.max_pending_inbound
    }
    /// Caps on reservations per network origin.
    pub fn reservations_per_origin(&self) -> OriginLimits {
        self.reservations_per_origin
    }
    /// Caps on sessions per network origin.
    pub fn sessions_per_origin(&self) -> OriginLimits {
        self.sessions_per_origin
    }
    /// Maximum sessions from one network (IPv4 /24, IPv6 /48) to one target.
    pub fn max_sessions_per_network_to_peer(&self) -> usize {
        self.max_sessions_per_network_to_peer
    }
    /// Networks exempt from the per-origin caps and the per-IP request rate.
    pub fn exempt_networks(&self) -> &[IpNet] {
        &self.exempt_networks
    }
    /// Whether `ip` is in an exempt network (IPv4-mapped IPv6 counts as IPv4).
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.exempt_networks.iter().any(|net| net.contains(&ip))
    }
    /// Addresses announced in reservations (besides the swarm's external addresses).
    pub fn advertised_addrs(&self) -> &[Multiaddr] {
        &self.advertised_addrs
    }
    /// Whether private (not publicly routable) addresses are announced.
    pub fn allow_private_addrs(&self) -> bool {
        self.allow_private_addrs
    }
    /// Interval of the periodic stats event, if any.
    pub fn stats_interval(&self) -> Option<Duration> {
        self.stats_interval
    }

    /// The limits for a session between `a` and `b`: the default limits, replaced by a peer's
    /// override; with two overrides, the more generous of each field.
    pub fn limits_between(&self, a: &PeerId, b: &PeerId) -> SessionLimits {
        match (self.policy.overrides.get(a), self.policy.overrides.get(b)) {
            (Some(x), Some(y)) => x.most_generous(*y),
            (Some(x), None) | (None, Some(x)) => *x,
            (None, None) => self.limits,
        }
    }

    /// The limits announced to `peer` in its reservation.
    pub fn limits_for(&self, peer: &PeerId) -> SessionLimits {
        self.policy
            .overrides
            .get(peer)
            .copied()
            .unwrap_or(self.limits)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let nonzero = [
            (self.max_sessions, "max_sessions"),
            (self.max_sessions_per_peer, "max_sessions_per_peer"),
            (self.max_reservations, "max_reservations"),
            (self.max_reservations_per_peer, "max_reservations_per_peer"),
            (
                self.max_pending_streams_per_connection,
                "max_pending_streams_per_connection",
            ),
            (self.copy_buffer_size, "copy_buffer_size"),
            (self.max_inbound_connections, "max_inbound_connections"),
            (self.max_connections_per_peer, "max_connections_per_peer"),
            (self.max_pending_inbound, "max_pending_inbound"),
        ];
        if let Some((_, name)) = nonzero.iter().find(|(v, _)| *v == 0) {
            return Err(ConfigError::Zero(name));
        }
        for (d, name) in [
            (self.reservation_ttl, "reservation_ttl"),
            (self.stream_timeout, "stream_timeout"),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.reservation_ttl.as_secs() > u64::from(u32::MAX) {
            return Err(ConfigError::TooLong("reservation_ttl"));
        }
        if self.stats_interval.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::Zero("stats_interval"));
        }
        for (rate, name) in [
            (self.request_rate_per_peer, "request_rate_per_peer"),
            (self.request_rate_per_ip, "request_rate_per_ip"),
        ] {
            if let Some(rate) = rate {
                if rate.burst == 0 || rate.interval.is_zero() {
                    return Err(ConfigError::Zero(name));
                }
            }
        }
        if self.max_sessions_per_network_to_peer == 0 {
            return Err(ConfigError::Zero("max_sessions_per_network_to_peer"));
        }
        self.connections_per_origin
            .validate("connections_per_origin")?;
        self.reservations_per_origin
            .validate("reservations_per_origin")?;
        self.sessions_per_origin.validate("sessions_per_origin")?;
        self.limits.validate("default")?;
        if self.total_bandwidth == Some(0) {
            return Err(ConfigError::Zero("total_bandwidth"));
        }
        for limits in self.policy.overrides.values() {
            limits.validate("override")?;
        }
        Ok(())
    }
}

/// Builds a [`Config`]; [`build`](Self::build) validates it.
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Maximum concurrent sessions (default 100). Must be non-zero.
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.config.max_sessions = n;
        self
    }
    /// Maximum concurrent sessions in which one peer is source or target (default 16).
    pub fn max_sessions_per_peer(mut self, n: usize) -> Self {
        self.config.max_sessions_per_peer = n;
        self
    }
    /// Per-session bandwidth in bytes per second and direction; `None` = unlimited
    /// (default 1 MB/s).
    pub fn bandwidth(mut self, bytes_per_second: Option<u64>) -> Self {
        self.config.limits.bandwidth = bytes_per_second;
        self
    }
    /// Session timeout; `None` = unlimited (default 30 minutes).
    pub fn session_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.limits.duration = timeout;
        self
    }
    /// Per-session data cap, bytes in each direction; `None` = no cap (the default).
    pub fn max_session_bytes(mut self, bytes: Option<u64>) -> Self {
        self.config.limits.data = bytes;
        self
    }
    /// The node-wide bandwidth capacity in bytes per second, summed over all sessions and both
    /// directions (what the relay sends out); `None` = no node-wide limit (the default). The
    /// capacity is shared max-min fairly among the relaying directions, every 100 ms: a
    /// direction that uses less than its share keeps what it uses plus headroom, the rest goes
    /// to the directions held back by their throttles; each direction stays under its
    /// per-session [`bandwidth`](Self::bandwidth) too. Must be non-zero.
    pub fn total_bandwidth(mut self, bytes_per_second: Option<u64>) -> Self {
        self.config.total_bandwidth = bytes_per_second;
        self
    }
    /// All default session limits at once.
    pub fn limits(mut self, limits: SessionLimits) -> Self {
        self.config.limits = limits;
        self
    }
    /// Maximum reservations (default 128).
    pub fn max_reservations(mut self, n: usize) -> Self {
        self.config.max_reservations = n;
        self
    }
    /// Maximum reservations one peer may hold (default 4).
    pub fn max_reservations_per_peer(mut self, n: usize) -> Self {
        self.config.max_reservations_per_peer = n;
        self
    }
    /// Reservation lifetime (default 1 hour).
    pub fn reservation_ttl(mut self, ttl: Duration) -> Self {
        self.config.reservation_ttl = ttl;
        self
    }
    /// Whether a target needs a reservation (default `true`, as the spec). With `false`, the
    /// relay also connects a source to any target it has a direct connection with.
    pub fn require_reservation(mut self, required: bool) -> Self {
        self.config.require_reservation = required;
        self
    }
    /// Per-peer limit on hop requests (reservations and connects); `None` = unlimited.
    pub fn request_rate_per_peer(mut self, rate: Option<RequestRate>) -> Self {
        self.config.request_rate_per_peer = rate;
        self
    }
    /// Per-IP limit on hop requests; `None` = unlimited.
    pub fn request_rate_per_ip(mut self, rate: Option<RequestRate>) -> Self {
        self.config.request_rate_per_ip = rate;
        self
    }
    /// Only these peers may use the relay.
    pub fn allow_only(mut self, peers: impl IntoIterator<Item = PeerId>) -> Self {
        self.config.policy.allow = Some(peers.into_iter().collect());
        self
    }
    /// Refuse this peer.
    pub fn deny(mut self, peer: PeerId) -> Self {
        self.config.policy.deny.insert(peer);
        self
    }
    /// Give `peer` its own limits (e.g. [`SessionLimits::UNLIMITED`] for a trusted peer).
    pub fn peer_limits(mut self, peer: PeerId, limits: SessionLimits) -> Self {
        self.config.policy.overrides.insert(peer, limits);
        self
    }
    /// The whole access policy.
    pub fn policy(mut self, policy: AccessPolicy) -> Self {
        self.config.policy = policy;
        self
    }
    /// Caps on the inbound connections one network origin may hold (default
    /// [`DEFAULT_CONNECTIONS_PER_ORIGIN`]); a connection over the cap is refused when
    /// established, before any handler runs.
    pub fn connections_per_origin(mut self, limits: OriginLimits) -> Self {
        self.config.connections_per_origin = limits;
        self
    }
    /// Maximum inbound connections (default 20,000; each needs a file descriptor); more are
    /// refused when established.
    pub fn max_inbound_connections(mut self, n: usize) -> Self {
        self.config.max_inbound_connections = n;
        self
    }
    /// Maximum inbound connections one peer may hold (default 8).
    pub fn max_connections_per_peer(mut self, n: usize) -> Self {
        self.config.max_connections_per_peer = n;
        self
    }
    /// Maximum inbound connections in their handshake at once (default 256); more are refused
    /// before the handshake.
    pub fn max_pending_inbound(mut self, n: usize) -> Self {
        self.config.max_pending_inbound = n;
        self
    }
    /// Caps on the reservations one network origin may hold (default
    /// [`DEFAULT_RESERVATIONS_PER_ORIGIN`]); a full origin is answered `RESERVATION_REFUSED`.
    pub fn reservations_per_origin(mut self, limits: OriginLimits) -> Self {
        self.config.reservations_per_origin = limits;
        self
    }
    /// Caps on the sessions one network origin may be part of, as source or target, pending or
    /// relaying (default [`DEFAULT_SESSIONS_PER_ORIGIN`]); answered `RESOURCE_LIMIT_EXCEEDED`.
    pub fn sessions_per_origin(mut self, limits: OriginLimits) -> Self {
        self.config.sessions_per_origin = limits;
        self
    }
    /// Maximum sessions from one network (IPv4 /24, IPv6 /48) to one target (default 4), so
    /// that one network cannot fill a target's `max_sessions_per_peer`.
    pub fn max_sessions_per_network_to_peer(mut self, n: usize) -> Self {
        self.config.max_sessions_per_network_to_peer = n;
        self
    }
    /// Networks exempt from the per-origin caps and the per-IP request rate (default none):
    /// e.g. your own clients' network, or a NAT you know many honest peers share.
    pub fn exempt_networks(mut self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        self.config.exempt_networks = networks.into_iter().collect();
        self
    }
    /// Time a hop or stop stream may take to send its request or answer (default 10 s).
    pub fn stream_timeout(mut self, timeout: Duration) -> Self {
        self.config.stream_timeout = timeout;
        self
    }
    /// Hop requests one connection may have in progress at once (default 16); more are dropped.
    pub fn max_pending_streams_per_connection(mut self, n: usize) -> Self {
        self.config.max_pending_streams_per_connection = n;
        self
    }
    /// Interval of [`Event::Stats`](crate::Event::Stats); `None` = no periodic stats (default 30 s).
    pub fn stats_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.stats_interval = interval;
        self
    }
    /// Size of each of the two copy buffers of a session (default 16 KiB). Each direction
    /// starts with at most 4 KiB and gets this size once it has carried 1 MiB, so circuits that
    /// carry little keep small frames and small buffers on both connections.
    pub fn copy_buffer_size(mut self, bytes: usize) -> Self {
        self.config.copy_buffer_size = bytes;
        self
    }
    /// Addresses to announce in reservations, besides the swarm's external addresses.
    pub fn advertised_addrs(mut self, addrs: impl IntoIterator<Item = Multiaddr>) -> Self {
        self.config.advertised_addrs = addrs.into_iter().collect();
        self
    }
    /// Announce private addresses too (loopback, RFC 1918, ULA, link-local, ...): for a relay
    /// serving a LAN, and for tests (default `false`: only publicly routable addresses and
    /// [`advertised_addrs`](Self::advertised_addrs) are announced).
    pub fn allow_private_addrs(mut self, allow: bool) -> Self {
        self.config.allow_private_addrs = allow;
        self
    }
    /// Whether the relay starts enabled (default `true`).
    pub fn start_enabled(mut self, enabled: bool) -> Self {
        self.config.start_enabled = enabled;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<Config, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_reference_defaults() {
        let config = Config::default();
        assert_eq!(config.max_sessions(), 100);
        assert_eq!(config.limits().bandwidth, Some(1_000_000));
        assert_eq!(config.limits().duration, Some(Duration::from_secs(1800)));
        assert!(config.require_reservation());
        config.validate().unwrap();
    }

    #[test]
    fn zero_capacity_is_rejected_with_its_name() {
        let error = Config::builder().max_sessions(0).build().unwrap_err();
        assert_eq!(error, ConfigError::Zero("max_sessions"));
        assert!(error.to_string().contains("max_sessions"));
    }

    #[test]
    fn zero_rate_is_rejected() {
        assert_eq!(
            Config::builder().bandwidth(Some(0)).build().unwrap_err(),
            ConfigError::Zero("bandwidth")
        );
        let flood = RequestRate {
            burst: 0,
            interval: Duration::from_secs(1),
        };
        assert_eq!(
            Config::builder()
                .request_rate_per_ip(Some(flood))
                .build()
                .unwrap_err(),
            ConfigError::Zero("request_rate_per_ip")
        );
    }

    #[test]
    fn zero_timeout_and_cap_are_rejected_but_none_is_unlimited() {
        assert!(Config::builder()
            .session_timeout(Some(Duration::ZERO))
            .build()
            .is_err());
        assert!(Config::builder()
            .max_session_bytes(Some(0))
            .build()
            .is_err());
        let config = Config::builder()
            .bandwidth(None)
            .session_timeout(None)
            .build()
            .unwrap();
        assert_eq!(
            config.limits(),
            SessionLimits {
                data: None,
                ..SessionLimits::UNLIMITED
            }
        );
    }

    #[test]
    fn overlong_timeout_is_rejected() {
        let error = Config::builder()
            .session_timeout(Some(Duration::from_secs(u64::from(u32::MAX) + 1)))
            .build()
            .unwrap_err();
        assert_eq!(error, ConfigError::TooLong("session_timeout"));
    }

    #[test]
    fn trusted_peer_override_wins_for_its_sessions() {
        let trusted = PeerId::random();
        let other = PeerId::random();
        let config = Config::builder()
            .peer_limits(trusted, SessionLimits::UNLIMITED)
            .build()
            .unwrap();
        assert_eq!(
            config.limits_between(&other, &trusted),
            SessionLimits::UNLIMITED
        );
        assert_eq!(config.limits_for(&other), SessionLimits::default());
    }

    #[test]
    fn most_generous_takes_each_field() {
        let a = SessionLimits {
            bandwidth: Some(10),
            duration: None,
            data: Some(5),
        };
        let b = SessionLimits {
            bandwidth: Some(20),
            duration: Some(Duration::from_secs(1)),
            data: Some(1),
        };
        assert_eq!(
            a.most_generous(b),
            SessionLimits {
                bandwidth: Some(20),
                duration: None,
                data: Some(5),
            }
        );
    }

    #[test]
    fn total_bandwidth_is_off_by_default_and_zero_is_rejected() {
        assert_eq!(Config::default().total_bandwidth(), None);
        let config = Config::builder()
            .total_bandwidth(Some(10_000_000))
            .build()
            .unwrap();
        assert_eq!(config.total_bandwidth(), Some(10_000_000));
        assert_eq!(
            Config::builder()
                .total_bandwidth(Some(0))
                .build()
                .unwrap_err(),
            ConfigError::Zero("total_bandwidth")
        );
    }

    #[test]
    fn allow_list_and_deny_list() {
        let friend = PeerId::random();
        let foe = PeerId::random();
        let policy = AccessPolicy {
            allow: Some([friend, foe].into()),
            deny: [foe].into(),
            ..Default::default()
        };
        assert!(policy.permits(&friend));
        assert!(!policy.permits(&foe));
        assert!(!policy.permits(&PeerId::random()));
    }

    #[test]
    fn network_allow_list_and_deny_list() {
        let policy = AccessPolicy {
            allow_networks: Some(vec!["10.0.0.0/8".parse().unwrap()]),
            deny_networks: vec!["10.1.0.0/16".parse().unwrap()],
            ..Default::default()
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(policy.permits_ip(ip("10.2.3.4")));
        assert!(policy.permits_ip(ip("::ffff:10.2.3.4")));
        assert!(!policy.permits_ip(ip("10.1.3.4")));
        assert!(!policy.permits_ip(ip("192.0.2.1")));
        assert!(AccessPolicy::default().permits_ip(ip("2001:db8::1")));
    }
}
