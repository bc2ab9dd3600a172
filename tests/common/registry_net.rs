//! Test harness for the relay registry: DHT peers (plain, relays, clients), each a swarm in its
//! own task with the registry, a relay client, identify and a stream protocol, on 127.0.0.1 TCP
//! or libp2p's in-memory transport. Used by `tests/registry*.rs` through `#[path]`.
#![allow(dead_code)]

#[path = "swarm_task.rs"]
mod swarm_task;

use std::time::{Duration, Instant};

use libp2p::{
    core::{multiaddr::Protocol, transport::MemoryTransport, upgrade::Version},
    identify,
    identity::Keypair,
    kad, noise, relay,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm, Transport,
};
use macula_relay::registry::{self, DiscoveryStats, RegistryConfig, RelayCandidate};
pub use swarm_task::init_tracing;
use swarm_task::{first_listen_addr, SwarmTask};

/// The DHT protocol of the test network.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/macula-test/kad/1.0.0");
/// How long a test waits for any one expected event.
pub const WAIT: Duration = Duration::from_secs(60);

#[derive(NetworkBehaviour)]
pub struct NetNode {
    pub relay: Toggle<macula_relay::Behaviour>,
    pub relay_client: relay::client::Behaviour,
    pub registry: registry::Behaviour,
    pub identify: Toggle<identify::Behaviour>,
    pub stream: libp2p_stream::Behaviour,
}

/// What a peer reports to the test.
#[derive(Debug)]
pub enum NodeEvent {
    Registry(registry::Event),
    Relay(macula_relay::Event),
}

/// How to start a peer.
#[derive(Clone)]
pub struct PeerSpec {
    /// Run a relay with this configuration.
    pub relay: Option<macula_relay::Config>,
    /// Confirm the listen address as external (what makes a relay capable).
    pub external: bool,
    /// Kademlia mode.
    pub mode: kad::Mode,
    /// Registry configuration.
    pub registry: RegistryConfig,
    /// In-memory transport instead of TCP.
    pub memory: bool,
    /// Identity (a fresh one if `None`).
    pub keypair: Option<Keypair>,
    /// Run identify (its signed peer records cost two signatures per connection).
    pub identify: bool,
    /// The DHT protocol.
    pub kad_protocol: StreamProtocol,
}

impl PeerSpec {
    pub fn dht(registry: RegistryConfig) -> Self {
        Self {
            relay: None,
            external: true,
            mode: kad::Mode::Server,
            registry,
            memory: false,
            keypair: None,
            identify: true,
            kad_protocol: KAD_PROTOCOL,
        }
    }

    pub fn relay(registry: RegistryConfig, config: macula_relay::Config, external: bool) -> Self {
        Self {
            relay: Some(config),
            external,
            ..Self::dht(registry)
        }
    }

    pub fn client(registry: RegistryConfig) -> Self {
        Self {
            external: false,
            mode: kad::Mode::Client,
            ..Self::dht(registry)
        }
    }
}

/// A peer running in its own task.
pub struct NetPeer {
    pub peer_id: PeerId,
    /// Listen address with `/p2p/<peer>`.
    pub addr: Multiaddr,
    pub control: libp2p_stream::Control,
    task: SwarmTask<NetNode, NodeEvent>,
    /// Records refused while reading, with the peer that sent them.
    pub rejected: Vec<(PeerId, registry::RecordError)>,
}

fn build(spec: &PeerSpec) -> Swarm<NetNode> {
    let keypair = spec
        .keypair
        .clone()
        .unwrap_or_else(Keypair::generate_ed25519);
    let behaviour = |key: &Keypair, relay_client| NetNode {
        relay: spec
            .relay
            .clone()
            .map(|c| macula_relay::Behaviour::new(key.clone(), c))
            .into(),
        relay_client,
        registry: registry::Behaviour::with_protocol(
            key,
            spec.kad_protocol.clone(),
            spec.registry.clone(),
        ),
        identify: spec
            .identify
            .then(|| {
                identify::Behaviour::new(identify::Config::new(
                    "/macula-test/1.0.0".into(),
                    key.public(),
                ))
            })
            .into(),
        stream: libp2p_stream::Behaviour::new(),
    };
    let idle = |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(300));
    if spec.memory {
        libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|key| {
                MemoryTransport::default()
                    .upgrade(Version::V1)
                    // Plaintext: hundreds of peers' handshakes in a debug build would
                    // otherwise spend the whole test in X25519.
                    .authenticate(libp2p::plaintext::Config::new(key))
                    .multiplex(yamux::Config::default())
            })
            .unwrap()
            .with_relay_client(
                |key: &Keypair| {
                    Ok::<_, std::convert::Infallible>(libp2p::plaintext::Config::new(key))
                },
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(behaviour)
            .unwrap()
            .with_swarm_config(idle)
            .build()
    } else {
        libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(behaviour)
            .unwrap()
            .with_swarm_config(idle)
            .build()
    }
}

fn observe(swarm: &mut Swarm<NetNode>) {
    let node = swarm.behaviour_mut();
    if let Some(relay) = node.relay.as_ref() {
        node.registry.observe_relay(relay);
    }
}

impl NetPeer {
    /// Starts a peer; if `bootstrap` is given, joins the DHT through it.
    pub async fn start(spec: PeerSpec, bootstrap: Option<(PeerId, Multiaddr)>) -> Self {
        let mut swarm = build(&spec);
        let peer_id = *swarm.local_peer_id();
        let listen: Multiaddr = if spec.memory {
            Multiaddr::empty().with(Protocol::Memory(rand::random::<u64>() >> 1))
        } else {
            "/ip4/127.0.0.1/tcp/0".parse().unwrap()
        };
        swarm.listen_on(listen).unwrap();
        let addr = first_listen_addr(&mut swarm, WAIT).await;
        if spec.external {
            swarm.add_external_address(addr.clone());
        }
        swarm
            .behaviour_mut()
            .registry
            .kad_mut()
            .set_mode(Some(spec.mode));
        if let Some((boot, boot_addr)) = bootstrap {
            let kad = swarm.behaviour_mut().registry.kad_mut();
            kad.add_address(&boot, boot_addr);
            let _ = kad.bootstrap();
        }
        observe(&mut swarm);
        let control = swarm.behaviour().stream.new_control();
        let task = SwarmTask::spawn("peer", WAIT, swarm, |swarm, event| {
            observe(swarm);
            match event {
                // The DHT's own events are not needed by the tests.
                SwarmEvent::Behaviour(NetNodeEvent::Registry(registry::Event::Kad(_))) => None,
                SwarmEvent::Behaviour(NetNodeEvent::Registry(e)) => Some(NodeEvent::Registry(e)),
                SwarmEvent::Behaviour(NetNodeEvent::Relay(e)) => Some(NodeEvent::Relay(e)),
                // No identify -> kad glue: the registry feeds kad the addresses identify
                // reports for DHT peers it cannot route to.
                _ => None,
            }
        });
        NetPeer {
            peer_id,
            addr: addr.with(Protocol::P2p(peer_id)),
            control,
            task,
            rejected: Vec::new(),
        }
    }

    /// Runs `f` on the swarm inside the peer's task and returns its result.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<NetNode>) -> R + Send + 'static,
    ) -> R {
        self.task
            .with(|s| {
                let result = f(s);
                observe(s);
                result
            })
            .await
    }

    /// Adds `peers` to this peer's routing table (no lookups: a prepared DHT).
    pub async fn add_peers(&self, peers: Vec<(PeerId, Multiaddr)>) {
        self.with(move |s| {
            let kad = s.behaviour_mut().registry.kad_mut();
            for (peer, addr) in peers {
                kad.add_address(&peer, addr);
            }
        })
        .await
    }

    /// The relays its registry knows (`known_relays()`), best first.
    pub async fn known_relays(&self) -> Vec<PeerId> {
        self.with(|s| {
            s.behaviour()
                .registry
                .known_relays()
                .iter()
                .map(|c| c.peer())
                .collect()
        })
        .await
    }

    /// The providers this peer's DHT store holds for `key`.
    pub async fn stored_providers(&self, key: kad::RecordKey) -> Vec<PeerId> {
        self.with(move |s| {
            use kad::store::RecordStore;
            s.behaviour_mut()
                .registry
                .kad_mut()
                .store_mut()
                .providers(&key)
                .into_iter()
                .map(|p| p.provider)
                .collect()
        })
        .await
    }

    /// The bootstrap handle of this peer.
    pub fn boot(&self) -> (PeerId, Multiaddr) {
        (self.peer_id, self.addr.clone())
    }

    /// Waits for the first event for which `f` returns `Some`, skipping others.
    pub async fn expect<T>(&mut self, what: &str, f: impl FnMut(NodeEvent) -> Option<T>) -> T {
        self.task.expect(what, f).await
    }

    /// Waits until its relay registered (its announcement reached a DHT peer).
    pub async fn registered(&mut self) {
        self.expect("relay registered", |e| match e {
            NodeEvent::Registry(registry::Event::Registered { .. }) => Some(()),
            _ => None,
        })
        .await;
    }

    /// Drops queued events.
    pub fn drain(&mut self) {
        self.task.drain();
    }

    /// Runs one discovery and returns its result; the reading-side rejections seen meanwhile
    /// are appended to [`rejected`](Self::rejected).
    pub async fn discover(&mut self) -> (Vec<RelayCandidate>, DiscoveryStats) {
        let id = self
            .with(|s| s.behaviour_mut().registry.discover_relays())
            .await;
        let mut rejected = Vec::new();
        let result = self
            .expect("discovery result", |e| match e {
                NodeEvent::Registry(registry::Event::RelaysDiscovered {
                    id: got,
                    relays,
                    stats,
                }) if got == id => Some((relays, stats)),
                NodeEvent::Registry(registry::Event::RecordRejected { from, error, .. }) => {
                    rejected.push((from, error));
                    None
                }
                _ => None,
            })
            .await;
        self.rejected.extend(rejected);
        result
    }

    /// Discovers until `done` holds for the result (at most `tries` times, `pause` apart);
    /// returns the last result and how long it took.
    /// Asks its registry for one reservation on the best relay, up to `tries` times `pause`
    /// apart while discoveries come back empty (the fleet still registering); the relay and
    /// the circuit address, or `None` if every try found no relay.
    pub async fn reserve_on_best_relay(
        &mut self,
        tries: usize,
        pause: Duration,
    ) -> Option<(PeerId, Multiaddr)> {
        for _ in 0..tries {
            self.with(|s| s.behaviour_mut().registry.reserve_on_best(1))
                .await;
            let reserved = self
                .expect("a reservation or an empty discovery", |e| match e {
                    NodeEvent::Registry(registry::Event::ReservationAccepted { relay, addr }) => {
                        Some(Some((relay, addr)))
                    }
                    NodeEvent::Registry(registry::Event::RelaysDiscovered { relays, .. })
                        if relays.is_empty() =>
                    {
                        Some(None)
                    }
                    _ => None,
                })
                .await;
            if reserved.is_some() {
                return reserved;
            }
            self.with(|s| s.behaviour_mut().registry.reserve_on_best(0))
                .await;
            tokio::time::sleep(pause).await;
        }
        None
    }

    pub async fn discover_until(
        &mut self,
        tries: usize,
        pause: Duration,
        mut done: impl FnMut(&[RelayCandidate]) -> bool,
    ) -> (Vec<RelayCandidate>, DiscoveryStats, Duration) {
        let start = Instant::now();
        let mut last = None;
        for _ in 0..tries {
            let (relays, stats) = self.discover().await;
            if done(&relays) {
                return (relays, stats, start.elapsed());
            }
            last = Some((relays, stats));
            tokio::time::sleep(pause).await;
        }
        let (relays, stats) = last.expect("tried at least once");
        (relays, stats, start.elapsed())
    }
}

/// A relay config for tests on loopback: no request-rate limits (every peer is 127.0.0.1), no
/// periodic stats.
pub fn relay_config() -> macula_relay::ConfigBuilder {
    macula_relay::Config::builder()
        .request_rate_per_peer(None)
        .request_rate_per_ip(None)
        .stats_interval(None)
}

/// Peer ids of candidates, in rank order.
pub fn peers(relays: &[RelayCandidate]) -> Vec<PeerId> {
    relays.iter().map(|c| c.peer()).collect()
}

/// This process's CPU time (user + system), if the platform tells.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Waits (at most `limit`) until the process uses under 20 % of a core over 2 s: many
/// in-process peers set up in a debug build keep both cores busy for a while.
pub async fn settle(limit: Duration) -> Duration {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        let (Some(before), pause) = (cpu_time(), Duration::from_secs(2)) else {
            tokio::time::sleep(Duration::from_secs(30)).await;
            break;
        };
        tokio::time::sleep(pause).await;
        if cpu_time().is_some_and(|after| after - before < pause / 5) {
            break;
        }
    }
    start.elapsed()
}
