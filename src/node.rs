//! "Start the relay node server" in one call: a ready swarm (TCP, QUIC and WebSocket, noise,
//! yamux, identify, ping and the relay) for users who do not compose their own.
//!
//! Browsers cannot dial TCP or QUIC; they reach the relay over WebSocket: listen on
//! `/ip4/0.0.0.0/tcp/<port>/ws`, and, with a certificate ([`WebsocketTls`]), on
//! `/ip4/0.0.0.0/tcp/<port>/tls/ws` (also written `/wss`), or, with the `webrtc` feature, over
//! WebRTC-direct with no CA certificate at all: `/ip4/0.0.0.0/udp/<port>/webrtc-direct` (see
//! [`crate::webrtc_direct`]). See `docs/browsers.md`.

use std::{fs, io, path::Path, time::Duration};

use libp2p::{
    autonat,
    core::{multiaddr::Protocol, muxing::StreamMuxerBox, upgrade::Version},
    identify,
    identity::Keypair,
    memory_connection_limits, noise, ping,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour},
    tcp, websocket, yamux, Multiaddr, Swarm, SwarmBuilder, Transport,
};

use crate::{boxed_handler::Boxed, Behaviour, Config};

/// How often the node pings each connection's peer.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);
/// How long a ping may go unanswered before it counts as failed.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How long libp2p's ping waits for a new ping stream to be negotiated (the substream upgrade
/// timeout of its handler; not configurable).
const PING_STREAM_NEGOTIATION: Duration = Duration::from_secs(10);

/// Within this long a peer that vanished silently (its packets dropped, no FIN or RST) is
/// detected and its connection closed, freeing its reservation and sessions: 25 s. libp2p's
/// ping reports the second failure in a row (the first is forgiven): the first comes
/// [`PING_INTERVAL`] + [`PING_TIMEOUT`] after the last answer, the second one interval later
/// plus the time a new ping stream may take to negotiate. The runner closes a connection whose
/// ping fails; a swarm owner driving the node's swarm itself should do the same on
/// [`RelayNodeEvent::Ping`] timeouts. WebRTC-direct connections, whose new streams stall rather
/// than fail when the peer is gone, are closed by [`RelayNodeBehaviour::liveness`] within
/// [`PROBE_INTERVAL`](crate::stream_liveness::PROBE_INTERVAL) +
/// [`PROBE_TIMEOUT`](crate::stream_liveness::PROBE_TIMEOUT).
pub const DEAD_PEER_BOUND: Duration = Duration::from_secs(
    2 * PING_INTERVAL.as_secs() + PING_TIMEOUT.as_secs() + PING_STREAM_NEGOTIATION.as_secs(),
);

/// Default share of the machine's physical memory the node may use before it refuses new
/// connections.
pub const DEFAULT_MAX_MEMORY_SHARE: f64 = 0.8;

/// Protocol version announced by identify.
pub const IDENTIFY_PROTOCOL_VERSION: &str = "/macula-relay/1.0.0";

/// The behaviour of a relay node: the relay, plus identify (so clients learn their observed
/// address and the relay's protocols), ping (keeps idle connections measured) and AutoNAT v2
/// (the node confirms its own external addresses with its peers' help, and helps them confirm
/// theirs).
///
/// Every behaviour with a sizeable connection handler is [`Boxed`]: each connection's task then
/// holds a pointer per behaviour instead of the handlers themselves (a 552-byte handler instead
/// of 5.6 kB, and 36.6 instead of 46.1 KiB of relay memory per held reservation). The fields
/// dereference to the behaviours.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "RelayNodeEvent")]
pub struct RelayNodeBehaviour {
    /// Refuses new connections while the process uses more memory than allowed.
    pub memory: memory_connection_limits::Behaviour,
    /// The relay.
    pub relay: Boxed<Behaviour>,
    /// Identify.
    pub identify: Boxed<identify::Behaviour>,
    /// Closes WebRTC-direct connections whose peer stopped answering.
    pub liveness: crate::stream_liveness::Behaviour,
    /// Ping.
    pub ping: Boxed<ping::Behaviour>,
    /// AutoNAT v2 client: tests the node's candidate external addresses (from identify's
    /// observations) by asking peers to dial them back; a confirmed one becomes an external
    /// address.
    pub autonat: Boxed<autonat::v2::client::Behaviour>,
    /// AutoNAT v2 server: dials back the addresses peers ask it to test.
    pub autonat_server: Boxed<autonat::v2::server::Behaviour>,
    /// The relay registry with the node's Kademlia, if enabled with
    /// [`RelayNodeBuilder::registry`]; call [`sync_registry`](Self::sync_registry) after every
    /// swarm event.
    pub registry: Boxed<Toggle<NodeRegistry>>,
}

/// The registry behaviour of a relay node ([`crate::registry::Behaviour`] with the `registry`
/// feature).
#[cfg(feature = "registry")]
pub type NodeRegistry = crate::registry::Behaviour;
/// The registry behaviour of a relay node (none without the `registry` feature).
#[cfg(not(feature = "registry"))]
pub type NodeRegistry = libp2p::swarm::dummy::Behaviour;

/// The default DHT protocol of relay nodes' Kademlia (the relay fleet's own DHT);
/// [`RelayNodeBuilder::kad_protocol`] picks another, e.g. `/ipfs/kad/1.0.0` to join a DHT of
/// other implementations.
pub const KAD_PROTOCOL: libp2p::StreamProtocol = libp2p::StreamProtocol::new("/macula/kad/1.0.0");

impl RelayNodeBehaviour {
    /// Lets the registry read the relay's status, load and addresses (it registers, republishes
    /// or withdraws accordingly). Call it after every swarm event; it is cheap.
    pub fn sync_registry(&mut self) {
        #[cfg(feature = "registry")]
        if let Some(registry) = self.registry.as_mut() {
            registry.observe_relay(&self.relay);
        }
    }
}

/// Events of a [`RelayNodeBehaviour`].
#[derive(Debug)]
pub enum RelayNodeEvent {
    /// From the relay.
    Relay(crate::Event),
    /// From identify.
    Identify(Box<identify::Event>),
    /// From ping.
    Ping(ping::Event),
    /// From the AutoNAT v2 client: the result of testing one of the node's addresses.
    Autonat(autonat::v2::client::Event),
    /// From the AutoNAT v2 server: the result of a dial-back for a peer.
    AutonatServer(autonat::v2::server::Event),
    /// From the registry.
    #[cfg(feature = "registry")]
    Registry(Box<crate::registry::Event>),
}

#[cfg(feature = "registry")]
impl From<crate::registry::Event> for RelayNodeEvent {
    fn from(event: crate::registry::Event) -> Self {
        RelayNodeEvent::Registry(Box::new(event))
    }
}

impl From<std::convert::Infallible> for RelayNodeEvent {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl From<crate::Event> for RelayNodeEvent {
    fn from(event: crate::Event) -> Self {
        RelayNodeEvent::Relay(event)
    }
}

impl From<identify::Event> for RelayNodeEvent {
    fn from(event: identify::Event) -> Self {
        RelayNodeEvent::Identify(Box::new(event))
    }
}

impl From<ping::Event> for RelayNodeEvent {
    fn from(event: ping::Event) -> Self {
        RelayNodeEvent::Ping(event)
    }
}

impl From<autonat::v2::client::Event> for RelayNodeEvent {
    fn from(event: autonat::v2::client::Event) -> Self {
        RelayNodeEvent::Autonat(event)
    }
}

impl From<autonat::v2::server::Event> for RelayNodeEvent {
    fn from(event: autonat::v2::server::Event) -> Self {
        RelayNodeEvent::AutonatServer(event)
    }
}

/// The peer ids of bootstrap addresses, which must end with `/p2p/<peer id>`.
pub(crate) fn bootstrap_peers(
    addrs: &[Multiaddr],
) -> Result<Vec<(libp2p::PeerId, Multiaddr)>, NodeError> {
    addrs
        .iter()
        .map(|addr| match addr.iter().last() {
            Some(Protocol::P2p(peer)) => Ok((peer, addr.clone())),
            _ => Err(NodeError::Bootstrap {
                addr: addr.clone(),
                error: "a bootstrap address must end with /p2p/<peer id>".into(),
            }),
        })
        .collect()
}

/// Why a relay node could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A bootstrap address is unusable.
    #[error("bootstrap address {addr}: {error}")]
    Bootstrap {
        /// The address.
        addr: Multiaddr,
        /// What is wrong.
        error: String,
    },
    /// A transport could not be set up.
    #[error("transport setup failed: {0}")]
    Transport(String),
    /// Listening on an address failed.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// The error.
        error: String,
    },
    /// The key file could not be read or written.
    #[error("key file {path}: {error}")]
    KeyFile {
        /// The file.
        path: String,
        /// The error.
        error: String,
    },
    /// The TLS certificate or key for `/tls/ws` could not be read or used.
    #[error("TLS certificate / key {path}: {error}")]
    Tls {
        /// The file (or files).
        path: String,
        /// The error.
        error: String,
    },
}

/// The certificate chain and private key a relay node serves secure WebSocket (`/tls/ws`,
/// `/wss`) with. Browsers on `https://` pages can only dial secure WebSockets, and only with a
/// certificate they trust for the address they dial (a domain name, in practice: `/dns4/<name>/
/// tcp/<port>/tls/ws`).
///
/// The certificate can be replaced while the node runs ([`reload`](Self::reload),
/// [`reload_from_pem_files`](Self::reload_from_pem_files)), as when it is renewed: clones
/// share it, so keep a clone of the one given to [`RelayNodeBuilder::websocket_tls`] and reload
/// that. TLS handshakes after the reload present the new certificate; established connections
/// are not touched.
#[derive(Clone)]
pub struct WebsocketTls {
    tls: crate::secure_websocket::ReloadableTls,
}

impl std::fmt::Debug for WebsocketTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebsocketTls")
    }
}

impl WebsocketTls {
    /// From PEM text: `cert_chain` holds the certificate then any intermediates (`CERTIFICATE`
    /// blocks), `key` its private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`).
    /// A key that does not belong to the first certificate is refused.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, String> {
        crate::secure_websocket::ReloadableTls::from_pem(cert_chain, key)
            .map(|tls| WebsocketTls { tls })
    }

    /// From PEM files (see [`from_pem`](Self::from_pem)).
    pub fn from_pem_files(cert_chain: &Path, key: &Path) -> Result<Self, NodeError> {
        let (cert_pem, key_pem) = Self::read_pem_files(cert_chain, key)?;
        Self::from_pem(&cert_pem, &key_pem)
            .map_err(|error| Self::files_error(cert_chain, key, error))
    }

    /// Serves `cert_chain` and `key` (PEM text, as in [`from_pem`](Self::from_pem)) from the
    /// next TLS handshake on, on every listener of every node built with this `WebsocketTls` or
    /// a clone. Established connections keep going. A pair that cannot be used is refused with
    /// the reason, and the current certificate stays.
    pub fn reload(&self, cert_chain: &[u8], key: &[u8]) -> Result<(), String> {
        self.tls.reload(cert_chain, key)
    }

    /// [`reload`](Self::reload) from PEM files; a file that cannot be read is refused like an
    /// unusable pair, and the current certificate stays.
    pub fn reload_from_pem_files(&self, cert_chain: &Path, key: &Path) -> Result<(), NodeError> {
        let (cert_pem, key_pem) = Self::read_pem_files(cert_chain, key)?;
        self.reload(&cert_pem, &key_pem)
            .map_err(|error| Self::files_error(cert_chain, key, error))
    }

    fn read_pem_files(cert_chain: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), NodeError> {
        let read = |path: &Path| {
            fs::read(path).map_err(|e| NodeError::Tls {
                path: path.display().to_string(),
                error: e.to_string(),
            })
        };
        Ok((read(cert_chain)?, read(key)?))
    }

    fn files_error(cert_chain: &Path, key: &Path, error: String) -> NodeError {
        NodeError::Tls {
            path: format!("{} / {}", cert_chain.display(), key.display()),
            error,
        }
    }
}

/// Whether `addr` is a WebSocket address (`/ws`, `/wss` or `/tls/ws`).
pub fn is_websocket(addr: &Multiaddr) -> bool {
    addr.iter()
        .any(|p| matches!(p, Protocol::Ws(_) | Protocol::Wss(_)))
}

/// Refuses a secure WebSocket listen address without a certificate and key.
pub(crate) fn check_websocket_tls(listen: &[Multiaddr], has_tls: bool) -> Result<(), NodeError> {
    match listen.iter().find(|a| is_secure_websocket(a)) {
        Some(addr) if !has_tls => Err(NodeError::Listen {
            addr: addr.clone(),
            error: "a secure WebSocket listen address needs a TLS certificate and key \
                    (WebsocketTls; node settings tls_cert and tls_key)"
                .into(),
        }),
        _ => Ok(()),
    }
}

/// Whether `addr` is a WebRTC-direct address (`…/udp/<port>/webrtc-direct…`).
pub fn is_webrtc_direct(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::WebRTCDirect))
}

/// WebRTC-direct listen addresses need the `webrtc` feature.
pub(crate) fn check_webrtc_direct(listen: &[Multiaddr]) -> Result<(), NodeError> {
    match listen.iter().find(|a| is_webrtc_direct(a)) {
        Some(addr) if !cfg!(feature = "webrtc") => Err(NodeError::Listen {
            addr: addr.clone(),
            error: "WebRTC-direct needs the `webrtc` feature (build with `--features webrtc`)"
                .into(),
        }),
        _ => Ok(()),
    }
}

/// Whether `addr` is a secure WebSocket address (`/wss` or `/tls/ws`), which needs a
/// [`WebsocketTls`] to listen on.
pub fn is_secure_websocket(addr: &Multiaddr) -> bool {
    let mut tls = false;
    for p in addr.iter() {
        match p {
            Protocol::Wss(_) => return true,
            Protocol::Tls => tls = true,
            Protocol::Ws(_) if tls => return true,
            _ => {}
        }
    }
    false
}

/// Builds a relay node swarm. Call [`build`](Self::build) inside a tokio runtime.
#[derive(Debug, Clone)]
pub struct RelayNodeBuilder {
    keypair: Option<Keypair>,
    config: Config,
    listen: Vec<Multiaddr>,
    external: Vec<Multiaddr>,
    idle_connection_timeout: Duration,
    max_memory_bytes: Option<usize>,
    websocket_tls: Option<WebsocketTls>,
    #[cfg(feature = "webrtc")]
    webrtc_certificate: Option<crate::webrtc_direct::Certificate>,
    #[cfg(feature = "registry")]
    registry: Option<crate::registry::RegistryConfig>,
    #[cfg(feature = "registry")]
    kad_protocol: libp2p::StreamProtocol,
    bootstrap: Vec<Multiaddr>,
}

impl Default for RelayNodeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RelayNodeBuilder {
    /// Defaults: a fresh ed25519 key, [`Config::default`], listening on TCP and QUIC port 4001 on
    /// all IPv4 interfaces, idle connections closed after 60 s.
    pub fn new() -> Self {
        Self {
            keypair: None,
            config: Config::default(),
            listen: Vec::new(),
            external: Vec::new(),
            idle_connection_timeout: Duration::from_secs(60),
            max_memory_bytes: None,
            websocket_tls: None,
            #[cfg(feature = "webrtc")]
            webrtc_certificate: None,
            #[cfg(feature = "registry")]
            registry: None,
            #[cfg(feature = "registry")]
            kad_protocol: KAD_PROTOCOL,
            bootstrap: Vec::new(),
        }
    }

    /// Refuse new connections while the process uses more than `bytes` of memory (default
    /// [`DEFAULT_MAX_MEMORY_SHARE`] of the machine's physical memory).
    pub fn max_memory_bytes(mut self, bytes: usize) -> Self {
        self.max_memory_bytes = Some(bytes);
        self
    }

    /// Runs the relay registry (and Kademlia, protocol [`kad_protocol`](Self::kad_protocol))
    /// with this configuration: the node registers as a relay when enabled and capable, and serves as a
    /// DHT (bootstrap) node. Off by default.
    #[cfg(feature = "registry")]
    pub fn registry(mut self, config: crate::registry::RegistryConfig) -> Self {
        self.registry = Some(config);
        self
    }

    /// The DHT protocol of the registry's Kademlia (default [`KAD_PROTOCOL`],
    /// `/macula/kad/1.0.0`); every peer of one DHT speaks the same one. `/ipfs/kad/1.0.0` joins
    /// the IPFS DHT, or any DHT of other implementations speaking it (the registry's default
    /// `PublishMode::Providers` needs only provider records there). Does not turn the registry
    /// on.
    #[cfg(feature = "registry")]
    pub fn kad_protocol(mut self, protocol: libp2p::StreamProtocol) -> Self {
        self.kad_protocol = protocol;
        self
    }

    /// Joins the DHT through this peer (`/…/p2p/<peer id>`; repeatable). Turns the registry on
    /// with its defaults if [`registry`](Self::registry) was not called.
    #[cfg(feature = "registry")]
    pub fn bootstrap(mut self, addr: Multiaddr) -> Self {
        self.registry.get_or_insert_with(Default::default);
        self.bootstrap.push(addr);
        self
    }

    /// The node's identity.
    pub fn keypair(mut self, keypair: Keypair) -> Self {
        self.keypair = Some(keypair);
        self
    }

    /// The relay configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Listen on `addr` (repeatable; replaces the default listen addresses): TCP
    /// (`/ip4/…/tcp/<port>`), QUIC (`/ip4/…/udp/<port>/quic-v1`), WebSocket
    /// (`/ip4/…/tcp/<port>/ws`) or secure WebSocket (`/ip4/…/tcp/<port>/tls/ws`, needs
    /// [`websocket_tls`](Self::websocket_tls)), or, with the `webrtc` feature, WebRTC-direct
    /// (`/ip4/…/udp/<port>/webrtc-direct`, see
    /// [`webrtc_certificate`](Self::webrtc_certificate)). TCP and WebSocket need different
    /// ports, and so do QUIC and WebRTC-direct.
    pub fn listen_on(mut self, addr: Multiaddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Announce `addr` as an external address (repeatable).
    pub fn external_address(mut self, addr: Multiaddr) -> Self {
        self.external.push(addr);
        self
    }

    /// The certificate and key for secure WebSocket (`/tls/ws`, `/wss`) listen addresses.
    pub fn websocket_tls(mut self, tls: WebsocketTls) -> Self {
        self.websocket_tls = Some(tls);
        self
    }

    /// The DTLS certificate for WebRTC-direct listen addresses; its hash is part of the
    /// addresses (`/certhash/…`), so keep it across restarts
    /// ([`crate::webrtc_direct::load_or_create_certificate`]). Default: a new one at every
    /// build.
    #[cfg(feature = "webrtc")]
    pub fn webrtc_certificate(mut self, certificate: crate::webrtc_direct::Certificate) -> Self {
        self.webrtc_certificate = Some(certificate);
        self
    }

    /// How long a connection with no reservation, session or stream stays open.
    pub fn idle_connection_timeout(mut self, timeout: Duration) -> Self {
        self.idle_connection_timeout = timeout;
        self
    }

    /// The default listen addresses: TCP and QUIC on port 4001, all IPv4 interfaces.
    pub fn default_listen_addrs() -> Vec<Multiaddr> {
        vec![
            "/ip4/0.0.0.0/tcp/4001".parse().expect("valid multiaddr"),
            "/ip4/0.0.0.0/udp/4001/quic-v1"
                .parse()
                .expect("valid multiaddr"),
        ]
    }

    /// Builds the swarm, starts listening and adds the external addresses.
    pub fn build(self) -> Result<Swarm<RelayNodeBehaviour>, NodeError> {
        self.build_inner(None)
    }

    /// [`build`](Self::build), with libp2p's bandwidth metrics (bytes in and out per transport
    /// protocol stack) on `registry`; record the swarm's events with
    /// [`libp2p::metrics::Metrics`] for the rest of libp2p's metrics.
    pub fn build_with_metrics(
        self,
        registry: &mut libp2p::metrics::Registry,
    ) -> Result<Swarm<RelayNodeBehaviour>, NodeError> {
        self.build_inner(Some(registry))
    }

    fn build_inner(
        self,
        metrics: Option<&mut libp2p::metrics::Registry>,
    ) -> Result<Swarm<RelayNodeBehaviour>, NodeError> {
        let listen = if self.listen.is_empty() {
            Self::default_listen_addrs()
        } else {
            self.listen
        };
        check_websocket_tls(&listen, self.websocket_tls.is_some())?;
        check_webrtc_direct(&listen)?;
        let bootstrap = bootstrap_peers(&self.bootstrap)?;
        let keypair = self.keypair.unwrap_or_else(Keypair::generate_ed25519);
        let config = self.config;
        #[cfg(feature = "registry")]
        let (registry_config, kad_protocol) = (self.registry, self.kad_protocol);
        let max_memory_bytes = self.max_memory_bytes;
        let transport = |e: &dyn std::fmt::Display| NodeError::Transport(e.to_string());
        let websocket = websocket_transport(
            noise::Config::new(&keypair).map_err(|e| transport(&e))?,
            self.websocket_tls,
        )
        .boxed();
        #[cfg(feature = "webrtc")]
        let websocket = {
            let certificate = self
                .webrtc_certificate
                .unwrap_or_else(crate::webrtc_direct::generate_certificate);
            websocket
                .or_transport(crate::webrtc_direct::transport(&keypair, certificate))
                .map(|either, _| either.into_inner())
                .boxed()
        };
        let builder = SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux_config,
            )
            .map_err(|e| transport(&e))?
            .with_quic()
            .with_other_transport(|_| websocket)
            .map_err(|e| transport(&e))?
            .with_dns()
            .map_err(|e| transport(&e))?;
        let idle_timeout = self.idle_connection_timeout;
        let behaviour = |key: &Keypair| RelayNodeBehaviour {
            memory: match max_memory_bytes {
                Some(bytes) => memory_connection_limits::Behaviour::with_max_bytes(bytes),
                None => memory_connection_limits::Behaviour::with_max_percentage(
                    DEFAULT_MAX_MEMORY_SHARE,
                ),
            },
            identify: identify::Behaviour::new(
                identify::Config::new(IDENTIFY_PROTOCOL_VERSION.to_owned(), key.public())
                    .with_agent_version(format!("macula-relay/{}", env!("CARGO_PKG_VERSION")))
                    // Peers learn the external addresses only (which the node confirmed or
                    // was given), unless private addresses are allowed.
                    .with_hide_listen_addrs(!config.allow_private_addrs()),
            )
            .into(),
            relay: Boxed(Behaviour::new(key.clone(), config)),
            liveness: Default::default(),
            ping: ping::Behaviour::new(
                ping::Config::new()
                    .with_interval(PING_INTERVAL)
                    .with_timeout(PING_TIMEOUT),
            )
            .into(),
            autonat: Boxed::default(),
            autonat_server: Boxed::default(),
            #[cfg(feature = "registry")]
            registry: Boxed(
                registry_config
                    .map(|c| {
                        crate::registry::Behaviour::with_protocol(key, kad_protocol.clone(), c)
                    })
                    .into(),
            ),
            #[cfg(not(feature = "registry"))]
            registry: Boxed(None.into()),
        };
        let mut swarm = match metrics {
            Some(registry) => builder
                .with_bandwidth_metrics(registry)
                .with_behaviour(behaviour)
                .map_err(|e| transport(&e))?
                .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
                .build(),
            None => builder
                .with_behaviour(behaviour)
                .map_err(|e| transport(&e))?
                .with_swarm_config(|c| c.with_idle_connection_timeout(idle_timeout))
                .build(),
        };

        for addr in listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NodeError::Listen {
                    addr,
                    error: e.to_string(),
                })?;
        }
        for addr in self.external {
            swarm.add_external_address(addr);
        }
        #[cfg(feature = "registry")]
        if let Some(registry) = swarm.behaviour_mut().registry.as_mut() {
            let kad = registry.kad_mut();
            for (peer, addr) in &bootstrap {
                kad.add_address(peer, addr.clone());
            }
            if !bootstrap.is_empty() {
                let _ = kad.bootstrap();
            }
        }
        #[cfg(not(feature = "registry"))]
        let _ = bootstrap;
        swarm.behaviour_mut().sync_registry();
        Ok(swarm)
    }
}

/// WebSocket over TCP (and TLS, given a certificate), upgraded with noise and
/// [`yamux_config`], like the TCP transport. Secure WebSocket listeners (`/tls/ws`, `/wss`) are
/// served by `secure_websocket::SecureWebsocket`, whose certificate [`WebsocketTls::reload`]
/// replaces; plain `/ws` listeners and every dial (`/ws`, and `/tls/ws` with the web PKI roots)
/// by libp2p-websocket as it comes.
fn websocket_transport(
    noise: noise::Config,
    tls: Option<WebsocketTls>,
) -> impl Transport<
    Output = (libp2p::PeerId, StreamMuxerBox),
    Error: Send + Sync,
    Dial: Send,
    ListenerUpgrade: Send,
> + Send
       + Unpin
       + 'static {
    use crate::secure_websocket::SecureWebsocket;
    use libp2p::core::transport::OptionalTransport;
    let new_tcp = || tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let secure = match tls {
        Some(tls) => OptionalTransport::some(SecureWebsocket::new(new_tcp(), &tls.tls)),
        None => OptionalTransport::none(),
    };
    secure
        .or_transport(websocket::Config::new(new_tcp()))
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux_config())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
}

/// The relay node's yamux settings.
///
/// js-libp2p's yamux (8.x) sends DATA frames as large as the receive window it was granted, and
/// rust-yamux refuses frames over 1 MiB (closing the whole connection). Rust-yamux grows a
/// stream's window by auto-tuning within a per-connection budget of
/// `1 GiB - max_num_streams × 256 KiB`; with 4093 streams that budget is 768 KiB, so no window
/// exceeds 1 MiB and js peers can move any amount of data through the relay. It also lets one
/// connection carry up to 4093 concurrent circuits (the default is 512).
pub fn yamux_config() -> yamux::Config {
    let mut config = yamux::Config::default();
    config.set_max_num_streams(JS_SAFE_YAMUX_STREAMS);
    config
}

/// See [`yamux_config`].
const JS_SAFE_YAMUX_STREAMS: usize = 4093;

/// Loads the node's key from `path` (protobuf-encoded, as libp2p writes keys), or creates an
/// ed25519 key there (mode 0600 on Unix) if the file does not exist, so the peer id is stable
/// across restarts.
pub fn load_or_create_keypair(path: &Path) -> Result<Keypair, NodeError> {
    let error = |e: &dyn std::fmt::Display| NodeError::KeyFile {
        path: path.display().to_string(),
        error: e.to_string(),
    };
    match fs::read(path) {
        Ok(bytes) => Keypair::from_protobuf_encoding(&bytes).map_err(|e| error(&e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair.to_protobuf_encoding().map_err(|e| error(&e))?;
            write_private_file(path, &bytes).map_err(|e| error(&e))?;
            Ok(keypair)
        }
        Err(e) => Err(error(&e)),
    }
}

/// Writes `bytes` to a new file at `path`, readable by its owner only (mode 0600 on Unix).
pub(crate) fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_webrtc_direct_addresses_count_as_webrtc_direct() {
        let yes: Multiaddr = "/ip4/127.0.0.1/udp/4002/webrtc-direct".parse().unwrap();
        let no: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        assert!(is_webrtc_direct(&yes));
        assert!(!is_webrtc_direct(&no));
    }

    #[cfg(not(feature = "webrtc"))]
    #[test]
    fn webrtc_direct_listen_addresses_without_the_feature_are_refused_with_the_reason() {
        let addr: Multiaddr = "/ip4/127.0.0.1/udp/4002/webrtc-direct".parse().unwrap();
        let error = check_webrtc_direct(&[addr]).unwrap_err().to_string();
        assert!(error.contains("`webrtc` feature"), "{error}");
    }

    #[test]
    fn key_file_is_created_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.key");
        let first = load_or_create_keypair(&path).unwrap();
        let second = load_or_create_keypair(&path).unwrap();
        assert_eq!(first.public(), second.public());
    }

    #[test]
    fn websocket_addresses_are_told_apart() {
        let cases = [
            ("/ip4/127.0.0.1/tcp/1", false, false),
            ("/ip4/127.0.0.1/udp/1/quic-v1", false, false),
            ("/ip4/127.0.0.1/tcp/1/ws", true, false),
            ("/ip4/127.0.0.1/tcp/1/tls/ws", true, true),
            ("/ip4/127.0.0.1/tcp/1/wss", true, true),
            (
                "/dns4/relay.example.net/tcp/443/tls/sni/relay.example.net/ws",
                true,
                true,
            ),
            ("/ip4/127.0.0.1/tcp/1/tls", false, false),
        ];
        for (addr, ws, secure) in cases {
            let addr: Multiaddr = addr.parse().unwrap();
            assert_eq!(is_websocket(&addr), ws, "{addr}");
            assert_eq!(is_secure_websocket(&addr), secure, "{addr}");
        }
    }

    #[test]
    fn a_secure_websocket_address_without_a_certificate_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let Err(error) = RelayNodeBuilder::new()
            .listen_on("/ip4/127.0.0.1/tcp/0/tls/ws".parse().unwrap())
            .build()
        else {
            panic!("built without a certificate");
        };
        assert!(error.to_string().contains("tls_cert"), "{error}");
        RelayNodeBuilder::new()
            .listen_on("/ip4/127.0.0.1/tcp/0/ws".parse().unwrap())
            .build()
            .expect("plain WebSocket needs no certificate");
    }

    #[test]
    fn corrupt_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.key");
        fs::write(&path, b"junk").unwrap();
        let error = load_or_create_keypair(&path).unwrap_err();
        assert!(error.to_string().contains("relay.key"), "{error}");
    }
}
