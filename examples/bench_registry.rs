//! Benchmark of the relay registry at fleet scale: `--relays` relays (default 1,000) and
//! `--clients` clients (default 10,000) in one process, every peer a swarm in its own tokio task
//! on libp2p's in-memory transport (`MemoryTransport` with noise and yamux), real Kademlia.
//!
//! ```text
//! export MACULA_REQUIRE_INTEROP=1
//! cargo run --release --example bench_registry --features node,registry -- \
//!     --relays 1000 --clients 10000
//! # small, for development:
//! cargo run --release --example bench_registry --features node,registry -- \
//!     --relays 100 --clients 1000 --wave 250
//! ```
//!
//! What it does, in phases (each bounded by a timeout that names what it waited for):
//!
//! 1. **Relays join the DHT** in batches of `--relay-batch`: each is a `macula_relay::Behaviour`
//!    (request-rate limits and stats off, `max_reservations` = clients × reservations, so no
//!    relay limit shapes the result), the registry (`RegistryConfig::default()`, Kademlia server
//!    on [`KAD_PROTOCOL`]) and identify (which teaches kad the addresses of peers that dialed
//!    in, as on a real relay node); it bootstraps from `--bootstrap-peers` random relays started
//!    before it. With `--rebootstrap` every relay then bootstraps once more. Kademlia's periodic
//!    bootstrap is off unless `--kad-periodic-bootstrap-secs` is set: on separate machines it
//!    is cheap, in one process its cost grows with peers × peers.
//! 2. **Relays register**: each gets its memory address as a confirmed external address
//!    (what makes it capable), in batches; the phase ends when every relay reported
//!    `Event::Registered`. With `--register-while-joining` relays are capable from the start
//!    instead and register while the fleet grows. The process CPU then settles.
//! 3. **Clients arrive** in waves of `--wave`: each is a `libp2p::relay::client` and the registry
//!    (Kademlia client), bootstraps from random relays, runs one `discover_relays()`, then
//!    `reserve_on_best(--reservations)`; a wave ends when each of its clients holds that many
//!    accepted reservations (or after `--wave-timeout-secs`).
//! 4. **Measurements**: the fraction of registered relays discoverable (union of all clients'
//!    first discoveries / relays registered), per discovery the DHT lookups and requests, record
//!    reads and latency (`registry::DiscoveryStats`), reservations per relay (each relay's own
//!    count; target max/mean ≤ 2), shard-key providers stored in the DHT per shard.
//! 5. **Kill**: the relay holding the most reservations is dropped (its task aborted, which
//!    closes its connections); measured from then until every client that held a reservation on
//!    it got a new `ReservationAccepted` on another relay.
//!
//! Prints the parameters and the results as markdown tables, with wall time and peak RSS
//! (`VmHWM`), then exits. Progress goes to stderr.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use clap::Parser;
use futures::StreamExt;
use libp2p::{
    core::{
        multiaddr::Protocol,
        muxing::StreamMuxerBox,
        transport::{Boxed, MemoryTransport},
        upgrade::Version,
    },
    identify,
    identity::Keypair,
    kad::{
        self,
        store::{MemoryStore, RecordStore},
    },
    noise, relay,
    swarm::{NetworkBehaviour, SwarmEvent},
    yamux, Multiaddr, PeerId, Swarm, Transport,
};
use macula_relay::{
    node::KAD_PROTOCOL,
    registry::{self, shard::shard_key, DiscoveryStats, RegistryConfig},
    Config,
};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};
use tokio::sync::{mpsc, oneshot};

/// Relay registry benchmark: relays and clients in one process on the in-memory transport.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Relays in the fleet.
    #[arg(long, default_value_t = 1000)]
    relays: usize,
    /// Clients (each discovers once and reserves on `--reservations` relays).
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Clients started at once.
    #[arg(long, default_value_t = 500)]
    wave: usize,
    /// Relays started at once.
    #[arg(long, default_value_t = 50)]
    relay_batch: usize,
    /// Relays each new peer bootstraps from.
    #[arg(long, default_value_t = 3)]
    bootstrap_peers: usize,
    /// Seed of identities, memory ports and bootstrap choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Reservations each client keeps (`reserve_on_best(n)`).
    #[arg(long, default_value_t = 2)]
    reservations: usize,
    /// Each relay's `max_reservations` (default: clients × reservations, i.e. never the limit).
    #[arg(long)]
    max_reservations: Option<usize>,
    /// Idle-connection timeout of clients, seconds.
    #[arg(long, default_value_t = 5)]
    client_idle_secs: u64,
    /// Idle-connection timeout of relays, seconds.
    #[arg(long, default_value_t = 10)]
    relay_idle_secs: u64,
    /// Kademlia's periodic bootstrap interval of every peer, seconds; 0 = off (the default:
    /// in one process its cost grows with peers × peers, kad's default is 300).
    #[arg(long, default_value_t = 0)]
    kad_periodic_bootstrap_secs: u64,
    /// Longest wait for one relay batch to bootstrap or register, seconds.
    #[arg(long, default_value_t = 120)]
    batch_timeout_secs: u64,
    /// Longest wait for one client wave, seconds.
    #[arg(long, default_value_t = 120)]
    wave_timeout_secs: u64,
    /// Longest wait for the killed relay's clients to move, seconds.
    #[arg(long, default_value_t = 180)]
    move_timeout_secs: u64,
    /// Longest wait for the process CPU to settle between phases, seconds.
    #[arg(long, default_value_t = 300)]
    settle_limit_secs: u64,
    /// Relays are capable (have their external address) from the start and register while the
    /// fleet grows, instead of once all have joined the DHT.
    #[arg(long)]
    register_while_joining: bool,
    /// Bootstrap every relay a second time once all have joined.
    #[arg(long)]
    rebootstrap: bool,
    /// Skip the kill phase.
    #[arg(long)]
    no_kill: bool,
    /// Time budget, seconds (0 = none): once spent, no more relays or clients are started and
    /// the benchmark measures and reports what it has.
    #[arg(long, default_value_t = 0)]
    budget_secs: u64,
    /// Watch the idle fleet this long after the clients (logging connections every 5 s),
    /// seconds.
    #[arg(long, default_value_t = 0)]
    observe_secs: u64,
}

#[derive(NetworkBehaviour)]
struct BenchRelay {
    relay: macula_relay::Behaviour,
    registry: registry::Behaviour,
    identify: identify::Behaviour,
}

#[derive(NetworkBehaviour)]
struct BenchClient {
    relay_client: relay::client::Behaviour,
    registry: registry::Behaviour,
}

/// What the peers' tasks tell the driver.
enum Report {
    Bootstrapped {
        relay: usize,
    },
    Registered {
        relay: usize,
    },
    Discovered {
        client: usize,
        first: bool,
        relays: Vec<PeerId>,
        stats: DiscoveryStats,
    },
    Accepted {
        client: usize,
        relay: PeerId,
        at: Instant,
    },
    Lost {
        client: usize,
        relay: PeerId,
        error: String,
    },
}

type RelayCommand = Box<dyn FnOnce(&mut Swarm<BenchRelay>) + Send>;

/// Open connections of relays and of clients (each in-process connection counts on both sides).
static RELAY_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
static CLIENT_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// Connections relays and clients dialed since the start.
static RELAY_DIALS: AtomicUsize = AtomicUsize::new(0);
static CLIENT_DIALS: AtomicUsize = AtomicUsize::new(0);

/// Kademlia queries the clients' applications saw finish (not the registry's own), by kind:
/// bootstrap, closest peers, other.
static CLIENT_KAD_QUERIES: [AtomicUsize; 3] = [
    AtomicUsize::new(0),
    AtomicUsize::new(0),
    AtomicUsize::new(0),
];

/// Counts a swarm event's effect on the open connections.
fn count_connections<E>(counter: &AtomicUsize, dials: &AtomicUsize, event: &SwarmEvent<E>) {
    match event {
        SwarmEvent::ConnectionEstablished { endpoint, .. } => {
            counter.fetch_add(1, Ordering::Relaxed);
            if endpoint.is_dialer() {
                dials.fetch_add(1, Ordering::Relaxed);
            }
        }
        SwarmEvent::ConnectionClosed { .. } => {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

fn connections() -> String {
    format!(
        "connections open: relays {}, clients {}; dialed so far: by relays {}, by clients {}; \
         clients' own kad queries: {} bootstraps, {} closest-peers, {} other",
        RELAY_CONNECTIONS.load(Ordering::Relaxed),
        CLIENT_CONNECTIONS.load(Ordering::Relaxed),
        RELAY_DIALS.load(Ordering::Relaxed),
        CLIENT_DIALS.load(Ordering::Relaxed),
        CLIENT_KAD_QUERIES[0].load(Ordering::Relaxed),
        CLIENT_KAD_QUERIES[1].load(Ordering::Relaxed),
        CLIENT_KAD_QUERIES[2].load(Ordering::Relaxed),
    )
}

/// libp2p's in-memory transport with noise and yamux.
fn memory_transport(key: &Keypair) -> Boxed<(PeerId, StreamMuxerBox)> {
    MemoryTransport::default()
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(key).expect("noise keys from an ed25519 identity"))
        .multiplex(yamux::Config::default())
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed()
}

/// The registry with `RegistryConfig::default()` on [`KAD_PROTOCOL`]: what
/// `registry::Behaviour::with_protocol` builds, with kad's periodic bootstrap set by
/// `--kad-periodic-bootstrap-secs`.
fn registry_behaviour(key: &Keypair, periodic_bootstrap: Option<Duration>) -> registry::Behaviour {
    let mut kad_config = kad::Config::new(KAD_PROTOCOL);
    kad_config.set_periodic_bootstrap_interval(periodic_bootstrap);
    registry::Behaviour::new(
        key,
        kad_config,
        MemoryStore::new(key.public().to_peer_id()),
        RegistryConfig::default(),
    )
}

fn build_relay(
    keypair: Keypair,
    config: Config,
    periodic_bootstrap: Option<Duration>,
    idle: Duration,
) -> Swarm<BenchRelay> {
    libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(memory_transport)
        .expect("memory transport with noise and yamux")
        .with_behaviour(|key| BenchRelay {
            relay: macula_relay::Behaviour::new(key.clone(), config),
            registry: registry_behaviour(key, periodic_bootstrap),
            identify: identify::Behaviour::new(identify::Config::new(
                "/macula-bench/1.0.0".into(),
                key.public(),
            )),
        })
        .expect("relay behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build()
}

fn build_client(
    keypair: Keypair,
    periodic_bootstrap: Option<Duration>,
    idle: Duration,
) -> Swarm<BenchClient> {
    libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_other_transport(memory_transport)
        .expect("memory transport with noise and yamux")
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .expect("relay client transport")
        .with_behaviour(|key, relay_client| BenchClient {
            relay_client,
            registry: registry_behaviour(key, periodic_bootstrap),
        })
        .expect("client behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build()
}

/// Runs a relay's swarm until its command channel closes or its task is aborted (the kill).
fn spawn_relay(
    index: usize,
    mut swarm: Swarm<BenchRelay>,
    reports: mpsc::UnboundedSender<Report>,
) -> (
    mpsc::UnboundedSender<RelayCommand>,
    tokio::task::JoinHandle<()>,
) {
    let (commands, mut command_rx) = mpsc::unbounded_channel::<RelayCommand>();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                command = command_rx.recv() => match command {
                    Some(command) => command(&mut swarm),
                    None => break,
                },
                event = swarm.select_next_some() => {
                    count_connections(&RELAY_CONNECTIONS, &RELAY_DIALS, &event);
                    if let SwarmEvent::Behaviour(BenchRelayEvent::Registry(event)) = event {
                        match event {
                            registry::Event::Registered { .. } => {
                                let _ = reports.send(Report::Registered { relay: index });
                            }
                            registry::Event::Kad(event) => {
                                if let kad::Event::OutboundQueryProgressed {
                                    result: kad::QueryResult::Bootstrap(_),
                                    step,
                                    ..
                                } = *event
                                {
                                    if step.last {
                                        let _ = reports.send(Report::Bootstrapped { relay: index });
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            let node = swarm.behaviour_mut();
            node.registry.observe_relay(&node.relay);
        }
    });
    (commands, task)
}

/// Runs a client: one discovery, then reservations on the best relays, reporting both.
async fn run_client(
    index: usize,
    keypair: Keypair,
    boot: Vec<(PeerId, Multiaddr)>,
    reservations: usize,
    periodic_bootstrap: Option<Duration>,
    idle: Duration,
    reports: mpsc::UnboundedSender<Report>,
) {
    let mut swarm = build_client(keypair, periodic_bootstrap, idle);
    let kad = swarm.behaviour_mut().registry.kad_mut();
    kad.set_mode(Some(kad::Mode::Client));
    for (peer, addr) in boot {
        kad.add_address(&peer, addr);
    }
    let _ = kad.bootstrap();
    let first = swarm.behaviour_mut().registry.discover_relays();
    loop {
        let event = swarm.select_next_some().await;
        count_connections(&CLIENT_CONNECTIONS, &CLIENT_DIALS, &event);
        let SwarmEvent::Behaviour(BenchClientEvent::Registry(event)) = event else {
            continue;
        };
        let report = match event {
            registry::Event::RelaysDiscovered { id, relays, stats } => {
                if id == first {
                    swarm.behaviour_mut().registry.reserve_on_best(reservations);
                }
                Report::Discovered {
                    client: index,
                    first: id == first,
                    relays: relays.iter().map(|c| c.peer()).collect(),
                    stats,
                }
            }
            registry::Event::ReservationAccepted { relay, .. } => Report::Accepted {
                client: index,
                relay,
                at: Instant::now(),
            },
            registry::Event::ReservationLost { failure } => Report::Lost {
                client: index,
                relay: failure.relay,
                error: failure.error,
            },
            registry::Event::Kad(event) => {
                if let kad::Event::OutboundQueryProgressed { result, step, .. } = *event {
                    if step.last {
                        let kind = match result {
                            kad::QueryResult::Bootstrap(_) => 0,
                            kad::QueryResult::GetClosestPeers(_) => 1,
                            _ => 2,
                        };
                        CLIENT_KAD_QUERIES[kind].fetch_add(1, Ordering::Relaxed);
                    }
                }
                continue;
            }
            _ => continue,
        };
        if reports.send(report).is_err() {
            return;
        }
    }
}

struct RelayHandle {
    peer: PeerId,
    /// Listen address with `/p2p/<peer>`.
    addr: Multiaddr,
    commands: mpsc::UnboundedSender<RelayCommand>,
    task: tokio::task::JoinHandle<()>,
    registered: bool,
    alive: bool,
}

#[derive(Default)]
struct ClientState {
    started: Option<Instant>,
    discovery: Option<(Vec<PeerId>, DiscoveryStats)>,
    /// Discoveries after the first (the registry's own, to replace relays).
    rediscoveries: usize,
    held: HashSet<PeerId>,
    /// When it first held all its reservations.
    full_at: Option<Instant>,
    accepted: usize,
    lost: usize,
}

/// What a relay reports when asked.
struct RelayInfo {
    reservations: usize,
    records_served: u64,
    shard: Option<u16>,
    /// Providers this node stores per shard key.
    stored: Vec<(u16, Vec<PeerId>)>,
}

struct Bench {
    args: Args,
    rng: StdRng,
    registry: RegistryConfig,
    relay_config: Config,
    relays: Vec<RelayHandle>,
    relay_index: HashMap<PeerId, usize>,
    clients: Vec<ClientState>,
    reports: mpsc::UnboundedSender<Report>,
    rx: mpsc::UnboundedReceiver<Report>,
    /// Relays whose (re)bootstrap is awaited.
    pending_boot: HashSet<usize>,
    /// Relays whose registration is awaited.
    pending_registration: HashSet<usize>,
    /// Clients awaited to hold all their reservations.
    pending_full: HashSet<usize>,
    /// After the kill: the killed relay, when, and its clients yet to move.
    kill: Option<(PeerId, Instant)>,
    pending_move: HashSet<usize>,
    moved: Vec<Duration>,
    /// Why reservations were lost, with counts.
    lost_reasons: BTreeMap<String, usize>,
    started: Instant,
    log: Vec<String>,
}

impl Bench {
    fn handle(&mut self, report: Report) {
        match report {
            Report::Bootstrapped { relay } => {
                self.pending_boot.remove(&relay);
            }
            Report::Registered { relay } => {
                self.relays[relay].registered = true;
                self.pending_registration.remove(&relay);
            }
            Report::Discovered {
                client,
                first,
                relays,
                stats,
            } => {
                let state = &mut self.clients[client];
                if first {
                    state.discovery = Some((relays, stats));
                } else {
                    state.rediscoveries += 1;
                }
            }
            Report::Accepted { client, relay, at } => {
                let want = self.args.reservations;
                let state = &mut self.clients[client];
                state.accepted += 1;
                state.held.insert(relay);
                if state.held.len() >= want && state.full_at.is_none() {
                    state.full_at = Some(at);
                    self.pending_full.remove(&client);
                }
                if let Some((killed, when)) = self.kill {
                    if relay != killed && self.pending_move.remove(&client) {
                        self.moved.push(at.saturating_duration_since(when));
                    }
                }
            }
            Report::Lost {
                client,
                relay,
                error,
            } => {
                let state = &mut self.clients[client];
                state.lost += 1;
                state.held.remove(&relay);
                // Errors name peers: keep the first words as the reason.
                let reason: String = error
                    .split([':', '('])
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take(80)
                    .collect();
                *self.lost_reasons.entry(reason).or_default() += 1;
            }
        }
    }

    /// Handles reports until `done` holds (true) or `limit` passes (false).
    async fn pump_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            while let Ok(report) = self.rx.try_recv() {
                self.handle(report);
            }
            if done(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(report)) => self.handle(report),
                Ok(None) => return false,
                Err(_) => return false,
            }
        }
    }

    fn note(&mut self, line: String) {
        eprintln!("[{:>7.1} s] {line}", self.started.elapsed().as_secs_f64());
        self.log.push(line);
    }

    fn random_relays(&mut self, among: usize, n: usize) -> Vec<(PeerId, Multiaddr)> {
        let alive: Vec<usize> = (0..among).filter(|i| self.relays[*i].alive).collect();
        alive
            .choose_multiple(&mut self.rng, n)
            .map(|i| (self.relays[*i].peer, self.relays[*i].addr.clone()))
            .collect()
    }

    fn start_relay(&mut self, port: u64) {
        let index = self.relays.len();
        let keypair = Keypair::ed25519_from_bytes(self.rng.gen::<[u8; 32]>()).expect("32 bytes");
        let peer = keypair.public().to_peer_id();
        let mut swarm = build_relay(
            keypair,
            self.relay_config.clone(),
            self.periodic_bootstrap(),
            Duration::from_secs(self.args.relay_idle_secs),
        );
        let listen = Multiaddr::empty().with(Protocol::Memory(port));
        swarm
            .listen_on(listen.clone())
            .expect("listen on a memory port");
        if self.args.register_while_joining {
            swarm.add_external_address(listen.clone());
        }
        let boot = self.random_relays(index, self.args.bootstrap_peers);
        let kad = swarm.behaviour_mut().registry.kad_mut();
        kad.set_mode(Some(kad::Mode::Server));
        for (p, a) in &boot {
            kad.add_address(p, a.clone());
        }
        let booting = kad.bootstrap().is_ok();
        {
            let node = swarm.behaviour_mut();
            node.registry.observe_relay(&node.relay);
        }
        let (commands, task) = spawn_relay(index, swarm, self.reports.clone());
        if booting {
            self.pending_boot.insert(index);
        }
        if self.args.register_while_joining {
            self.pending_registration.insert(index);
        }
        self.relay_index.insert(peer, index);
        self.relays.push(RelayHandle {
            peer,
            addr: listen.with(Protocol::P2p(peer)),
            commands,
            task,
            registered: false,
            alive: true,
        });
    }

    fn periodic_bootstrap(&self) -> Option<Duration> {
        (self.args.kad_periodic_bootstrap_secs > 0)
            .then(|| Duration::from_secs(self.args.kad_periodic_bootstrap_secs))
    }

    fn command(&self, relay: usize, f: impl FnOnce(&mut Swarm<BenchRelay>) + Send + 'static) {
        let _ = self.relays[relay].commands.send(Box::new(f));
    }

    async fn relay_info(&self, relay: usize) -> Option<RelayInfo> {
        if !self.relays[relay].alive {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let namespace = self.registry.namespace().to_owned();
        let shards = self.registry.shards();
        self.command(relay, move |swarm| {
            let node = swarm.behaviour_mut();
            let reservations = node.relay.stats().reservations;
            let activity = node.registry.activity();
            let store = node.registry.kad_mut().store_mut();
            let stored = (0..shards)
                .map(|shard| {
                    let providers = store
                        .providers(&shard_key(&namespace, shard))
                        .into_iter()
                        .map(|p| p.provider)
                        .collect::<Vec<_>>();
                    (shard, providers)
                })
                .filter(|(_, p)| !p.is_empty())
                .collect();
            let _ = tx.send(RelayInfo {
                reservations,
                records_served: activity.records_served,
                shard: activity.shard,
                stored,
            });
        });
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .ok()
            .and_then(Result::ok)
    }

    async fn all_relay_info(&self) -> Vec<Option<RelayInfo>> {
        let mut out = Vec::with_capacity(self.relays.len());
        for chunk in (0..self.relays.len()).collect::<Vec<_>>().chunks(100) {
            out.extend(futures::future::join_all(chunk.iter().map(|i| self.relay_info(*i))).await);
        }
        out
    }
}

/// This process's CPU time (user + system), if the platform tells.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// A `/proc/self/status` field in MiB (`VmRSS`, `VmHWM`).
fn status_mib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

fn rss() -> String {
    format!(
        "RSS {} MiB (peak {} MiB), {}",
        status_mib("VmRSS:").unwrap_or(0),
        status_mib("VmHWM:").unwrap_or(0),
        connections()
    )
}

/// Handles reports while waiting (at most `limit`) until the process uses under 20 % of a core
/// over 2 s; returns how long it took and whether it settled.
async fn settle(bench: &mut Bench, limit: Duration) -> (Duration, bool) {
    let start = Instant::now();
    let mut round = 0u32;
    while start.elapsed() < limit {
        let Some(before) = cpu_time() else {
            return (start.elapsed(), false);
        };
        let pause = Duration::from_secs(2);
        bench.pump_until(pause, |_| false).await;
        let busy = cpu_time().map(|after| after - before);
        if busy.is_some_and(|busy| busy < pause / 5) {
            return (start.elapsed(), true);
        }
        round += 1;
        if round % 10 == 0 {
            let line = format!(
                "  settling: CPU {:.0} % of a core; {}",
                100.0 * busy.unwrap_or_default().as_secs_f64() / pause.as_secs_f64(),
                rss()
            );
            bench.note(line);
        }
    }
    (start.elapsed(), false)
}

/// The `p`-th percentile (nearest rank) of sorted `values`.
fn pct<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = runtime.block_on(run(args));
    println!("{report}");
    // Dropping 11,000 swarms takes a while and measures nothing.
    std::process::exit(0);
}

async fn run(args: Args) -> String {
    let started = Instant::now();
    let registry_config = RegistryConfig::default();
    let max_reservations = args
        .max_reservations
        .unwrap_or((args.clients * args.reservations).max(128));
    let relay_config = Config::builder()
        .request_rate_per_peer(None)
        .request_rate_per_ip(None)
        .stats_interval(None)
        .max_reservations(max_reservations)
        .max_pending_inbound(4096)
        .build()
        .expect("relay config");
    let (reports, rx) = mpsc::unbounded_channel();
    let mut bench = Bench {
        rng: StdRng::seed_from_u64(args.seed),
        args: args.clone(),
        registry: registry_config.clone(),
        relay_config,
        relays: Vec::new(),
        relay_index: HashMap::new(),
        clients: Vec::new(),
        reports,
        rx,
        pending_boot: HashSet::new(),
        pending_registration: HashSet::new(),
        pending_full: HashSet::new(),
        kill: None,
        pending_move: HashSet::new(),
        moved: Vec::new(),
        lost_reasons: BTreeMap::new(),
        started,
        log: Vec::new(),
    };
    let batch_timeout = Duration::from_secs(args.batch_timeout_secs);
    let mut phases: Vec<(&str, Duration)> = Vec::new();

    // Phase 1: relays join the DHT.
    let phase = Instant::now();
    let base_port: u64 = bench.rng.gen_range(1 << 20..1 << 40);
    let mut next = 0usize;
    let over_budget =
        |started: Instant| args.budget_secs > 0 && started.elapsed().as_secs() >= args.budget_secs;
    while next < args.relays {
        if over_budget(started) {
            bench.note(format!(
                "time budget of {} s spent: {next} of {} relays started",
                args.budget_secs, args.relays
            ));
            break;
        }
        // The first relay alone: the others need someone to bootstrap from.
        let size = if next == 0 {
            1
        } else {
            args.relay_batch.max(1)
        };
        let end = (next + size).min(args.relays);
        for i in next..end {
            bench.start_relay(base_port + i as u64);
        }
        let ok = bench
            .pump_until(batch_timeout, |b| b.pending_boot.is_empty())
            .await;
        if !ok {
            let missing = bench.pending_boot.len();
            bench.note(format!(
                "timed out after {batch_timeout:?} waiting for relays {next}..{end} to finish \
                 their bootstrap: {missing} still running"
            ));
            bench.pending_boot.clear();
        }
        next = end;
        if end % 200 < size || end == args.relays {
            let line = format!("{end} relays joined; {}", rss());
            bench.note(line);
        }
    }
    let n_relays = bench.relays.len();
    if args.rebootstrap {
        for start in (0..n_relays).step_by(args.relay_batch.max(1)) {
            let end = (start + args.relay_batch.max(1)).min(n_relays);
            for i in start..end {
                bench.pending_boot.insert(i);
                let reports = bench.reports.clone();
                bench.command(i, move |swarm| {
                    if swarm
                        .behaviour_mut()
                        .registry
                        .kad_mut()
                        .bootstrap()
                        .is_err()
                    {
                        let _ = reports.send(Report::Bootstrapped { relay: i });
                    }
                });
            }
            if !bench
                .pump_until(batch_timeout, |b| b.pending_boot.is_empty())
                .await
            {
                let missing = bench.pending_boot.len();
                bench.note(format!(
                    "timed out after {batch_timeout:?} waiting for relays {start}..{end} to \
                     finish their second bootstrap: {missing} still running"
                ));
                bench.pending_boot.clear();
            }
        }
        bench.note(format!("all relays bootstrapped again; {}", rss()));
    }
    phases.push(("relays join the DHT", phase.elapsed()));

    // Phase 2: relays register.
    let phase = Instant::now();
    if !args.register_while_joining {
        for start in (0..n_relays).step_by(args.relay_batch.max(1)) {
            let end = (start + args.relay_batch.max(1)).min(n_relays);
            for i in start..end {
                bench.pending_registration.insert(i);
                let addr = bench.relays[i].addr.clone();
                bench.command(i, move |swarm| {
                    let addr: Multiaddr = addr
                        .iter()
                        .filter(|p| !matches!(p, Protocol::P2p(_)))
                        .collect();
                    swarm.add_external_address(addr);
                });
            }
            if !bench
                .pump_until(batch_timeout, |b| b.pending_registration.is_empty())
                .await
            {
                let missing = bench.pending_registration.len();
                bench.note(format!(
                    "timed out after {batch_timeout:?} waiting for relays {start}..{end} to \
                     register: {missing} not registered"
                ));
                bench.pending_registration.clear();
            }
        }
    } else if !bench
        .pump_until(batch_timeout, |b| b.pending_registration.is_empty())
        .await
    {
        let missing = bench.pending_registration.len();
        bench.note(format!(
            "timed out after {batch_timeout:?} waiting for every relay to register: \
             {missing} not registered"
        ));
    }
    let registered = bench.relays.iter().filter(|r| r.registered).count();
    bench.note(format!(
        "{registered}/{n_relays} relays registered; {}",
        rss()
    ));
    let (took, settled) = settle(&mut bench, Duration::from_secs(args.settle_limit_secs)).await;
    bench.note(format!(
        "CPU {} after {took:?}; {}",
        if settled { "settled" } else { "still busy" },
        rss()
    ));
    phases.push(("relays register (and CPU settles)", phase.elapsed()));
    let rss_relays = status_mib("VmRSS:").unwrap_or(0);

    // Phase 3: clients in waves.
    let phase = Instant::now();
    let wave_timeout = Duration::from_secs(args.wave_timeout_secs);
    let mut next = 0usize;
    while next < args.clients {
        if over_budget(started) {
            bench.note(format!(
                "time budget of {} s spent: {next} of {} clients started",
                args.budget_secs, args.clients
            ));
            break;
        }
        let end = (next + args.wave.max(1)).min(args.clients);
        let wave_started = Instant::now();
        for i in next..end {
            let keypair =
                Keypair::ed25519_from_bytes(bench.rng.gen::<[u8; 32]>()).expect("32 bytes");
            let boot = bench.random_relays(bench.relays.len(), args.bootstrap_peers);
            bench.clients.push(ClientState {
                started: Some(Instant::now()),
                ..ClientState::default()
            });
            bench.pending_full.insert(i);
            tokio::spawn(run_client(
                i,
                keypair,
                boot,
                args.reservations,
                bench.periodic_bootstrap(),
                Duration::from_secs(args.client_idle_secs),
                bench.reports.clone(),
            ));
        }
        let ok = bench
            .pump_until(wave_timeout, |b| b.pending_full.is_empty())
            .await;
        let took = wave_started.elapsed();
        let discovered = bench.clients[next..end]
            .iter()
            .filter(|c| c.discovery.is_some())
            .count();
        let line = format!(
            "clients {next}..{end}: {}/{} discovered, {}/{} hold {} reservations after {:.1} s{}; {}",
            discovered,
            end - next,
            end - next - bench.pending_full.len(),
            end - next,
            args.reservations,
            took.as_secs_f64(),
            if ok {
                String::new()
            } else {
                format!(" (timed out after {wave_timeout:?} waiting for the wave's reservations)")
            },
            rss()
        );
        bench.note(line);
        if !bench.lost_reasons.is_empty() {
            let reasons = format!("  reservations lost so far: {:?}", bench.lost_reasons);
            bench.note(reasons);
        }
        bench.pending_full.clear();
        next = end;
    }
    phases.push(("clients discover and reserve", phase.elapsed()));
    let rss_clients = status_mib("VmRSS:").unwrap_or(0);
    let (took, settled) = settle(&mut bench, Duration::from_secs(args.settle_limit_secs)).await;
    bench.note(format!(
        "CPU {} after {took:?}; {}",
        if settled { "settled" } else { "still busy" },
        rss()
    ));

    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(args.observe_secs) {
        bench.pump_until(Duration::from_secs(5), |_| false).await;
        let line = format!("  idle fleet: {}", rss());
        bench.note(line);
    }

    // Phase 4: measurements.
    let info = bench.all_relay_info().await;
    let steady_lost: usize = bench.clients.iter().map(|c| c.lost).sum();
    let steady_reasons = bench.lost_reasons.clone();

    // Phase 5: the kill.
    let mut kill_lines: Vec<(String, String)> = Vec::new();
    if !args.no_kill {
        let hottest = info
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().map(|r| (i, r.reservations)))
            .max_by_key(|(_, n)| *n);
        if let Some((victim, count)) = hottest {
            let peer = bench.relays[victim].peer;
            let holders: HashSet<usize> = bench
                .clients
                .iter()
                .enumerate()
                .filter(|(_, c)| c.held.contains(&peer))
                .map(|(i, _)| i)
                .collect();
            let phase = Instant::now();
            bench.note(format!(
                "killing relay #{victim} {peer}: {count} reservations on it, {} clients \
                 hold one by their own count",
                holders.len()
            ));
            bench.pending_move = holders.clone();
            bench.kill = Some((peer, Instant::now()));
            bench.relays[victim].task.abort();
            bench.relays[victim].alive = false;
            let limit = Duration::from_secs(args.move_timeout_secs);
            let ok = bench.pump_until(limit, |b| b.pending_move.is_empty()).await;
            let all_moved = phase.elapsed();
            let mut moved = bench.moved.clone();
            moved.sort();
            kill_lines.push((
                "killed relay: reservations (relay's count)".into(),
                count.to_string(),
            ));
            kill_lines.push((
                "killed relay: clients holding one (clients' count)".into(),
                holders.len().to_string(),
            ));
            kill_lines.push((
                "clients moved to another relay".into(),
                format!(
                    "{}/{}{}",
                    moved.len(),
                    holders.len(),
                    if ok {
                        String::new()
                    } else {
                        format!(" (timed out after {limit:?})")
                    }
                ),
            ));
            kill_lines.push((
                "move time p50 / p99 / max".into(),
                format!(
                    "{} / {} / {}",
                    ms(pct(&moved, 50.0)),
                    ms(pct(&moved, 99.0)),
                    ms(pct(&moved, 100.0))
                ),
            ));
            kill_lines.push((
                "time until all moved".into(),
                if ok {
                    ms(all_moved)
                } else {
                    "not all moved".into()
                },
            ));
            phases.push(("kill: clients move", all_moved));
        }
    }

    // The report.
    let registered_peers: HashSet<PeerId> = bench
        .relays
        .iter()
        .filter(|r| r.registered)
        .map(|r| r.peer)
        .collect();
    let mut found_count: HashMap<PeerId, usize> = HashMap::new();
    let mut stats: Vec<&DiscoveryStats> = Vec::new();
    let mut found_per_discovery: Vec<usize> = Vec::new();
    for c in &bench.clients {
        if let Some((relays, s)) = &c.discovery {
            for r in relays {
                *found_count.entry(*r).or_default() += 1;
            }
            stats.push(s);
            found_per_discovery.push(relays.len());
        }
    }
    found_per_discovery.sort_unstable();
    let union: HashSet<PeerId> = found_count.keys().copied().collect();
    let discoverable = union.intersection(&registered_peers).count();
    let mut latency: Vec<Duration> = stats.iter().map(|s| s.elapsed).collect();
    latency.sort();
    let mut lookups: Vec<usize> = stats.iter().map(|s| s.dht_lookups).collect();
    lookups.sort_unstable();
    let mut requests: Vec<u32> = stats.iter().map(|s| s.dht_requests).collect();
    requests.sort_unstable();
    let mut reads: Vec<usize> = stats.iter().map(|s| s.record_reads).collect();
    reads.sort_unstable();
    let timed_out = stats.iter().filter(|s| s.timed_out).count();
    let rejected: usize = stats.iter().map(|s| s.rejected).sum();
    let wrong_shard: usize = stats.iter().map(|s| s.wrong_shard).sum();
    let full = bench.clients.iter().filter(|c| c.full_at.is_some()).count();
    let mut time_to_full: Vec<Duration> = bench
        .clients
        .iter()
        .filter_map(|c| Some(c.full_at?.saturating_duration_since(c.started?)))
        .collect();
    time_to_full.sort();
    let rediscoveries: usize = bench.clients.iter().map(|c| c.rediscoveries).sum();
    let accepted: usize = bench.clients.iter().map(|c| c.accepted).sum();

    // Reservations per relay, each relay's own count, before the kill.
    let mut per_relay: Vec<usize> = info.iter().flatten().map(|r| r.reservations).collect();
    per_relay.sort_unstable();
    let total_res: usize = per_relay.iter().sum();
    let relays_counted = per_relay.len().max(1);
    let res_mean = total_res as f64 / relays_counted as f64;
    let res_max = per_relay.last().copied().unwrap_or(0);
    let holding = per_relay.iter().filter(|n| **n > 0).count();
    let res_mean_holding = total_res as f64 / holding.max(1) as f64;
    let mut served: Vec<u64> = info.iter().flatten().map(|r| r.records_served).collect();
    served.sort_unstable();

    // Per shard: relays, providers stored in the DHT, relays discovered.
    let shards = bench.registry.shards();
    let mut shard_rows: BTreeMap<u16, (usize, HashSet<PeerId>, usize, usize, usize)> =
        BTreeMap::new();
    for (i, r) in info.iter().enumerate() {
        let Some(r) = r else { continue };
        if let Some(shard) = r.shard {
            let row = shard_rows.entry(shard).or_default();
            row.0 += 1;
            if union.contains(&bench.relays[i].peer) {
                row.2 += 1;
            }
            row.4 += r.reservations;
        }
        for (shard, providers) in &r.stored {
            let row = shard_rows.entry(*shard).or_default();
            row.1.extend(providers.iter().copied());
            row.3 = row.3.max(providers.len());
        }
    }

    let fsecs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    let mut out = String::new();
    let _ = writeln!(out, "\n## Relay registry benchmark\n");
    let _ = writeln!(out, "| parameter | value |\n|---|---|");
    for (k, v) in [
        ("relays", args.relays.to_string()),
        ("clients", args.clients.to_string()),
        ("client wave", args.wave.to_string()),
        ("relay batch", args.relay_batch.to_string()),
        (
            "bootstrap peers per new peer",
            args.bootstrap_peers.to_string(),
        ),
        ("seed", args.seed.to_string()),
        ("tokio worker threads", args.threads.to_string()),
        ("reservations per client", args.reservations.to_string()),
        ("relay max_reservations", max_reservations.to_string()),
        (
            "relays register",
            if args.register_while_joining {
                "while the fleet joins".into()
            } else {
                "once all joined the DHT".to_string()
            },
        ),
        ("second bootstrap of relays", args.rebootstrap.to_string()),
        (
            "kad periodic bootstrap",
            match args.kad_periodic_bootstrap_secs {
                0 => "off".to_string(),
                n => format!("every {n} s"),
            },
        ),
        (
            "idle connection timeout (clients / relays)",
            format!("{} s / {} s", args.client_idle_secs, args.relay_idle_secs),
        ),
        (
            "registry config",
            format!(
                "default: {} shards, discovery target {}, discovery timeout {:?}",
                shards,
                bench.registry.discovery_target(),
                bench.registry.discovery_timeout()
            ),
        ),
        (
            "transport",
            "MemoryTransport + noise + yamux; relays: relay + registry (kad server) + identify; \
             clients: relay client + registry (kad client)"
                .into(),
        ),
        (
            "build",
            if cfg!(debug_assertions) {
                "debug".into()
            } else {
                "release".to_string()
            },
        ),
    ] {
        let _ = writeln!(out, "| {k} | {v} |");
    }

    let _ = writeln!(out, "\n| result | value |\n|---|---|");
    let mut rows: Vec<(String, String)> = vec![
        (
            "relays registered".into(),
            format!(
                "{}/{n_relays} started ({} asked for)",
                registered_peers.len(),
                args.relays
            ),
        ),
        (
            "**relays discoverable** (union of first discoveries / registered)".into(),
            format!(
                "{discoverable}/{} = {:.1} %",
                registered_peers.len(),
                100.0 * discoverable as f64 / registered_peers.len().max(1) as f64
            ),
        ),
        (
            "discoveries completed / clients started (asked for)".into(),
            format!("{}/{} ({})", stats.len(), bench.clients.len(), args.clients),
        ),
        (
            "relays per discovery p50 / min / max".into(),
            format!(
                "{} / {} / {}",
                pct(&found_per_discovery, 50.0),
                found_per_discovery.first().copied().unwrap_or(0),
                pct(&found_per_discovery, 100.0)
            ),
        ),
        (
            "**discovery latency** p50 / p99 / max".into(),
            format!(
                "{} / {} / {}",
                ms(pct(&latency, 50.0)),
                ms(pct(&latency, 99.0)),
                ms(pct(&latency, 100.0))
            ),
        ),
        (
            "**DHT lookups per discovery** mean / p50 / p99 / max".into(),
            format!(
                "{:.2} / {} / {} / {}",
                mean(lookups.iter().map(|v| *v as f64)),
                pct(&lookups, 50.0),
                pct(&lookups, 99.0),
                pct(&lookups, 100.0)
            ),
        ),
        (
            "**DHT requests per discovery** mean / p50 / p99 / max".into(),
            format!(
                "{:.1} / {} / {} / {}",
                mean(requests.iter().map(|v| f64::from(*v))),
                pct(&requests, 50.0),
                pct(&requests, 99.0),
                pct(&requests, 100.0)
            ),
        ),
        (
            "record reads per discovery mean / p99".into(),
            format!(
                "{:.1} / {}",
                mean(reads.iter().map(|v| *v as f64)),
                pct(&reads, 99.0)
            ),
        ),
        (
            "discoveries timed out".into(),
            format!("{timed_out}/{}", stats.len()),
        ),
        (
            "reads rejected or failed / providers in wrong shard (all discoveries)".into(),
            format!("{rejected} / {wrong_shard}"),
        ),
        (
            "times a relay was found, max / mean over found relays".into(),
            format!(
                "{} / {:.1}",
                found_count.values().max().copied().unwrap_or(0),
                mean(found_count.values().map(|v| *v as f64))
            ),
        ),
        (
            "clients holding all reservations (at least once)".into(),
            format!("{full}/{}", bench.clients.len()),
        ),
        (
            "time from client start to all reservations p50 / p99 / max".into(),
            format!(
                "{} / {} / {}",
                ms(pct(&time_to_full, 50.0)),
                ms(pct(&time_to_full, 99.0)),
                ms(pct(&time_to_full, 100.0))
            ),
        ),
        (
            "**reservations per relay** max / mean (all relays) = ratio".into(),
            format!(
                "{res_max} / {res_mean:.1} = **{:.1}** (target ≤ 2)",
                res_max as f64 / res_mean.max(f64::MIN_POSITIVE)
            ),
        ),
        (
            "relays holding any reservation; mean over those".into(),
            format!("{holding}/{}; {res_mean_holding:.1}", per_relay.len()),
        ),
        (
            "reservations per relay p50 / p90 / p99".into(),
            format!(
                "{} / {} / {}",
                pct(&per_relay, 50.0),
                pct(&per_relay, 90.0),
                pct(&per_relay, 99.0)
            ),
        ),
        (
            "reservations held (relays' count)".into(),
            total_res.to_string(),
        ),
        (
            "record fetches served per relay max / mean".into(),
            format!(
                "{} / {:.1}",
                served.last().copied().unwrap_or(0),
                mean(served.iter().map(|v| *v as f64))
            ),
        ),
        (
            "reservations accepted (all events, kill included)".into(),
            accepted.to_string(),
        ),
        (
            "reservations lost before the kill; rediscoveries".into(),
            format!("{steady_lost}; {rediscoveries}"),
        ),
    ];
    rows.extend(kill_lines);
    rows.push((
        "peak RSS (VmHWM)".into(),
        format!("{} MiB", status_mib("VmHWM:").unwrap_or(0)),
    ));
    rows.push((
        "RSS after relays / after clients".into(),
        format!("{rss_relays} MiB / {rss_clients} MiB"),
    ));
    rows.push(("wall time".into(), fsecs(started.elapsed())));
    rows.push((
        "process CPU time".into(),
        cpu_time().map(fsecs).unwrap_or_default(),
    ));
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {v} |");
    }

    let _ = writeln!(out, "\n| phase | wall time |\n|---|---|");
    for (k, v) in &phases {
        let _ = writeln!(out, "| {k} | {} |", fsecs(*v));
    }

    let _ = writeln!(
        out,
        "\n| shard | relays | distinct providers stored in the DHT | most on one node | \
         relays discovered | reservations on its relays |\n|---|---|---|---|---|---|"
    );
    for shard in 0..shards {
        let (relays, stored, found, most, res) = shard_rows.remove(&shard).unwrap_or_default();
        let _ = writeln!(
            out,
            "| {shard} | {relays} | {} | {most} | {found} | {res} |",
            stored.len()
        );
    }

    // The hottest relays.
    let mut hot: Vec<(usize, &RelayInfo)> = info
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().map(|r| (i, r)))
        .collect();
    hot.sort_by_key(|(_, r)| std::cmp::Reverse(r.reservations));
    let _ = writeln!(
        out,
        "\n| hottest relays (#start order) | shard | reservations | record fetches served | found in discoveries |\n|---|---|---|---|---|"
    );
    for (i, r) in hot.iter().take(5) {
        let _ = writeln!(
            out,
            "| #{i} | {} | {} | {} | {} |",
            r.shard.map(|s| s.to_string()).unwrap_or_default(),
            r.reservations,
            r.records_served,
            found_count
                .get(&bench.relays[*i].peer)
                .copied()
                .unwrap_or(0)
        );
    }

    // Discoverability by start order (early relays vs late ones).
    let deciles = 10.min(n_relays.max(1));
    let _ = writeln!(
        out,
        "\n| relays by start order | registered | discovered |\n|---|---|---|"
    );
    for d in 0..deciles {
        let from = d * n_relays / deciles;
        let to = (d + 1) * n_relays / deciles;
        let reg = bench.relays[from..to]
            .iter()
            .filter(|r| r.registered)
            .count();
        let found = bench.relays[from..to]
            .iter()
            .filter(|r| union.contains(&r.peer))
            .count();
        let _ = writeln!(out, "| #{from}..#{to} | {reg} | {found} |");
    }

    let lost_all = &bench.lost_reasons;
    if !lost_all.is_empty() {
        let _ = writeln!(
            out,
            "\n| reservation lost because (before the kill / total) | count |\n|---|---|"
        );
        for (reason, n) in lost_all {
            let before = steady_reasons.get(reason).copied().unwrap_or(0);
            let _ = writeln!(out, "| {reason} | {before} / {n} |");
        }
    }

    let _ = writeln!(out, "\n### Progress\n\n```text");
    for line in &bench.log {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "```");
    out
}
