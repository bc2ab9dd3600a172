//! Benchmark helper: the client peers of `benches/relay_bench.rs`, as their own OS process.
//!
//! Every peer is an unmodified rust-libp2p 0.57 peer (its own identity and [`Swarm`]: TCP +
//! noise + yamux with [`macula_relay::node::yamux_config`], QUIC, `relay::client`,
//! `libp2p-stream`); one process runs many of them on a 2-thread tokio runtime. Each peer's TCP
//! connections leave from its own loopback address in 127.1.0.0 - 127.250.255.255 (the relay
//! sees distinct hosts, as it would in a deployment, and js-libp2p's per-host inbound connection
//! limit of 5/s does not serialize the set-up). Without `--relay` the peers connect directly (the
//! baseline).
//!
//! Transports: targets reach the relay over `--relay`, sources over `--source-relay` (default:
//! `--relay`); either may be a TCP or a QUIC (`/udp/PORT/quic-v1`) address of the relay, so
//! `--relay <quic> --source-relay <tcp>` is the mixed case (the target reserved over QUIC, the
//! source dials the relay over TCP). Without a relay, `--direct-quic` makes the targets listen
//! on QUIC instead of TCP. Whenever QUIC is in use, every peer first binds a QUIC listener on
//! its own loopback address, which its QUIC dials then leave from.
//!
//! Modes (`bench_client [--relay ADDR] MODE ...`); each prints JSON lines on stdout:
//! * `transfer --sessions S`: S targets (reserved on the relay, or listening) and S sources,
//!   one circuit each; prints `ready`. Then on each stdin line `go BYTES [RATE]`, every source
//!   sends BYTES to its target at once over a new stream (paced at RATE bytes/s if given); the target answers with the count it
//!   received (receiver-confirmed); prints a `round` line with the time until the last
//!   confirmation. `quit` or end of stdin ends the process.
//! * `setup --targets T --sources S --sequential N --concurrent M --concurrency C`: T targets,
//!   S sources already connected to the relay; N circuits one after another from one source
//!   (each closed once up), timed from `dial` to `ConnectionEstablished` (relay CONNECT, STOP,
//!   noise and yamux over the circuit); then M circuits with C in flight per source, for
//!   circuits per second. Direct: the same over new TCP connections.
//! * `reserve --count R [--deadline-secs D]`: R peers each connect to the relay and reserve
//!   (none started after D seconds); prints `reserved` and holds them until stdin ends.
//! * `idle --targets T --sources S --per-source K`: T targets reserve, S sources connect;
//!   prints `connected`; on `go`, opens S*K circuits (source i to targets i..i+K mod T, no data),
//!   prints `sessions` and holds them until stdin ends.
//! * `flood --connections N --streams K`: N fresh peers all from one address connect to the
//!   relay; each that got through opens K hop streams and stays silent; prints `flooded` (how
//!   many connections and streams got through) and holds them until stdin ends.
//! * `churn --count N [--deadline-secs D]`: N times, a fresh peer (addresses from the pool)
//!   connects, reserves and disconnects, `--setup-concurrency` at a time; prints `churned`.
//! * `share --sessions N --busy K [--warmup-secs W] [--secs S]`: N circuits (N targets, N
//!   sources); the first K sources send to their targets as fast as the circuit takes it, the
//!   others stay connected and silent. After W seconds, the bytes each target receives over S
//!   seconds; prints `share` with the total rate, the slowest and fastest session's rate and
//!   their ratio (for the relay's node-wide bandwidth limit: `bench_relay --total-bandwidth`).
//! * `slow --sessions N --read-rate R [--max-secs M]`: N targets, N sources; prints `connected`
//!   once the targets reserved and the sources connected to the relay. On `go`, opens N circuits;
//!   each source writes to its target as fast as the circuit accepts, each target reads at R
//!   bytes/s (slow readers: the relay's buffers fill); prints `sessions`. On `stats`, prints
//!   `stats` (bytes sent by all sources, bytes read by all targets). Every load stops by itself
//!   after M seconds (default 300); `quit` or the end of stdin ends the process.
//!
//! The process raises its own RLIMIT_NOFILE like `bench_relay` does.

#[path = "../benches/support/nofile.rs"]
mod nofile;
use nofile::raise_nofile;
use std::{
    collections::HashMap,
    io::BufRead,
    net::{Ipv4Addr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use clap::{Parser, Subcommand};
use futures::{future::BoxFuture, stream, AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use libp2p::{
    core::{
        multiaddr::Protocol,
        transport::{DialOpts as TransportDialOpts, ListenerId, TransportError, TransportEvent},
        upgrade::Version,
        Transport,
    },
    identity::Keypair,
    noise, relay,
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        NetworkBehaviour, SwarmEvent,
    },
    tcp, Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder,
};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

const PROTOCOL: StreamProtocol = StreamProtocol::new("/macula-bench/transfer/1");
/// `share` mode: an endless stream, counted by the target.
const SHARE_PROTOCOL: StreamProtocol = StreamProtocol::new("/macula-bench/share/1");
/// `slow` mode: a stream the source fills as fast as it can and the target reads slowly.
const SLOW_PROTOCOL: StreamProtocol = StreamProtocol::new("/macula-bench/slow/1");
const CHUNK: usize = 256 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

#[derive(Parser, Debug)]
struct Args {
    /// The relay, `/ip4/127.0.0.1/tcp/PORT/p2p/ID` or `/ip4/127.0.0.1/udp/PORT/quic-v1/p2p/ID`,
    /// as the targets reach it (and the sources, without `--source-relay`). Without it peers
    /// connect directly.
    #[arg(long)]
    relay: Option<Multiaddr>,
    /// The relay address the sources connect over (default: `--relay`), e.g. its TCP address
    /// while the targets reserve over QUIC.
    #[arg(long, requires = "relay")]
    source_relay: Option<Multiaddr>,
    /// Without a relay: targets listen on QUIC instead of TCP.
    #[arg(long, conflicts_with = "relay")]
    direct_quic: bool,
    /// First index into the source-address pool (another client process should use others).
    #[arg(long, default_value_t = 0)]
    ip_offset: u32,
    /// Peers (or circuits) set up at once.
    #[arg(long, default_value_t = 64)]
    setup_concurrency: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    Transfer {
        #[arg(long, default_value_t = 1)]
        sessions: usize,
    },
    Setup {
        #[arg(long, default_value_t = 8)]
        targets: usize,
        /// Sources (each with its own relay connection) for the concurrent phase.
        #[arg(long, default_value_t = 4)]
        sources: usize,
        #[arg(long, default_value_t = 200)]
        sequential: usize,
        #[arg(long, default_value_t = 400)]
        concurrent: usize,
        /// Circuits in flight per source.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    Reserve {
        #[arg(long)]
        count: usize,
        /// Start no new reservation after this many seconds (0 = no deadline).
        #[arg(long, default_value_t = 0)]
        deadline_secs: u64,
    },
    Idle {
        #[arg(long)]
        targets: usize,
        #[arg(long)]
        sources: usize,
        #[arg(long)]
        per_source: usize,
    },
    Flood {
        /// Connections, each a fresh peer, all from one address (the pool's `--ip-offset`-th).
        #[arg(long)]
        connections: usize,
        /// Silent hop streams opened on each connection that got through.
        #[arg(long, default_value_t = 0)]
        streams: usize,
    },
    Churn {
        /// Reservations made, each by a fresh peer that then disconnects.
        #[arg(long)]
        count: usize,
        /// Stop starting new ones after this many seconds (0 = none).
        #[arg(long, default_value_t = 0)]
        deadline_secs: u64,
    },
    Share {
        /// Circuits, each between its own source and target.
        #[arg(long, default_value_t = 20)]
        sessions: usize,
        /// How many of them send as fast as they can (the others stay silent).
        #[arg(long, default_value_t = 20)]
        busy: usize,
        /// Seconds of sending before the measurement.
        #[arg(long, default_value_t = 3.0)]
        warmup_secs: f64,
        /// Seconds measured.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
    },
    Slow {
        /// Circuits, each between its own source and target.
        #[arg(long, default_value_t = 50)]
        sessions: usize,
        /// Bytes per second each target reads.
        #[arg(long, default_value_t = 1000)]
        read_rate: u64,
        /// Every source and target stops after this many seconds.
        #[arg(long, default_value_t = 300)]
        max_secs: u64,
    },
}

// ---------------------------------------------------------------------------------------------
// Transport: TCP whose outgoing sockets are bound to a chosen loopback address.

/// `libp2p::tcp` for listening; dials bind to `bind_ip` first.
struct BoundTcp {
    inner: tcp::tokio::Transport,
    bind_ip: Ipv4Addr,
}

fn tcp_socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut iter = addr.iter();
    let ip = match iter.next()? {
        Protocol::Ip4(ip) => ip,
        _ => return None,
    };
    let port = match iter.next()? {
        Protocol::Tcp(port) => port,
        _ => return None,
    };
    match iter.next() {
        None | Some(Protocol::P2p(_)) => Some(SocketAddr::new(ip.into(), port)),
        _ => None,
    }
}

impl Transport for BoundTcp {
    type Output = tcp::tokio::TcpStream;
    type Error = std::io::Error;
    type ListenerUpgrade = <tcp::tokio::Transport as Transport>::ListenerUpgrade;
    type Dial = BoxFuture<'static, Result<Self::Output, Self::Error>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: TransportDialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some(remote) = tcp_socket_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        let bind_ip = self.bind_ip;
        Ok(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(bind_ip.into(), 0))?;
            let stream = socket.connect(remote).await?;
            stream.set_nodelay(true)?;
            Ok(tcp::tokio::TcpStream(stream))
        }
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

/// The `i`-th address of the pool 127.1.0.1 .. 127.250.255.250 (no .0 / .255 octets).
fn pool_ip(i: u32) -> Ipv4Addr {
    let a = 1 + (i / 62_500) % 250;
    let rest = i % 62_500;
    Ipv4Addr::new(127, a as u8, (rest / 250) as u8, (rest % 250 + 1) as u8)
}

// ---------------------------------------------------------------------------------------------
// A peer: a swarm in its own task, driven by commands.

#[derive(NetworkBehaviour)]
struct PeerBehaviour {
    relay: relay::client::Behaviour,
    stream: libp2p_stream::Behaviour,
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

enum Command {
    /// Dial; answer with the time from `dial` to `ConnectionEstablished`.
    Dial {
        opts: DialOpts,
        close_after: bool,
        reply: Reply<Duration>,
    },
    /// Listen: on a relay (answer when the reservation is accepted) or on TCP (answer with the
    /// listen address).
    Listen {
        addr: Multiaddr,
        reply: Reply<Multiaddr>,
    },
}

struct Peer {
    id: PeerId,
    ip: Ipv4Addr,
    control: libp2p_stream::Control,
    commands: mpsc::UnboundedSender<Command>,
    /// The peer's QUIC listen address (on its own loopback address), once bound.
    quic: std::sync::OnceLock<Multiaddr>,
}

impl Peer {
    fn spawn(ip: Ipv4Addr) -> Peer {
        let keypair = Keypair::generate_ed25519();
        let swarm = SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_quic()
            .with_other_transport(|key| {
                let tcp = BoundTcp {
                    inner: tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)),
                    bind_ip: ip,
                };
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    tcp.upgrade(Version::V1Lazy)
                        .authenticate(noise::Config::new(key)?)
                        .multiplex(macula_relay::node::yamux_config())
                        .timeout(Duration::from_secs(30)),
                )
            })
            .expect("transport")
            .with_relay_client(noise::Config::new, macula_relay::node::yamux_config)
            .expect("relay client")
            .with_behaviour(|_, relay| PeerBehaviour {
                relay,
                stream: libp2p_stream::Behaviour::new(),
            })
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        let id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let (commands, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(swarm, rx));
        Peer {
            id,
            ip,
            control,
            commands,
            quic: std::sync::OnceLock::new(),
        }
    }

    /// Listens on QUIC at the peer's own loopback address (once): its QUIC dials then leave from
    /// that socket, and a direct QUIC target is reachable there.
    async fn bind_quic(&self) -> Result<Multiaddr, String> {
        if let Some(addr) = self.quic.get() {
            return Ok(addr.clone());
        }
        let addr = self
            .listen(format!("/ip4/{}/udp/0/quic-v1", self.ip).parse().unwrap())
            .await?;
        Ok(self.quic.get_or_init(|| addr).clone())
    }

    async fn dial(&self, opts: DialOpts, close_after: bool) -> Result<Duration, String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Dial {
                opts,
                close_after,
                reply,
            })
            .map_err(|_| "peer task gone".to_string())?;
        rx.await.map_err(|_| "peer task gone".to_string())?
    }

    async fn listen(&self, addr: Multiaddr) -> Result<Multiaddr, String> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Listen { addr, reply })
            .map_err(|_| "peer task gone".to_string())?;
        rx.await.map_err(|_| "peer task gone".to_string())?
    }

    /// Connects to the relay (no reservation).
    async fn connect_relay(&self, relay: &Multiaddr) -> Result<Duration, String> {
        let relay_id = peer_of(relay).ok_or("relay address without /p2p")?;
        let opts = DialOpts::peer_id(relay_id)
            .addresses(vec![relay.clone()])
            .build();
        self.dial(opts, false).await
    }

    /// Becomes reachable: reserves on the relay (returns the circuit address) or listens on its
    /// own address (returns it, with `/p2p`): its QUIC address if it has bound one, else TCP.
    async fn become_target(&self, relay: Option<&Multiaddr>) -> Result<Multiaddr, String> {
        match relay {
            Some(relay) => {
                self.connect_relay(relay).await?;
                self.listen(relay.clone().with(Protocol::P2pCircuit))
                    .await?;
                Ok(relay
                    .clone()
                    .with(Protocol::P2pCircuit)
                    .with(Protocol::P2p(self.id)))
            }
            None => {
                let addr = match self.quic.get() {
                    Some(quic) => quic.clone(),
                    None => {
                        self.listen(format!("/ip4/{}/tcp/0", self.ip).parse().unwrap())
                            .await?
                    }
                };
                Ok(addr.with(Protocol::P2p(self.id)))
            }
        }
    }

    /// Opens a new connection (a circuit through the relay, or a direct one) to `target`.
    async fn connect_to(&self, target: &Multiaddr, close_after: bool) -> Result<Duration, String> {
        let target_id = peer_of(target).ok_or("target address without /p2p")?;
        let opts = DialOpts::peer_id(target_id)
            .addresses(vec![target.clone()])
            .condition(PeerCondition::Always)
            .build();
        self.dial(opts, close_after).await
    }

    /// Serves the transfer protocol on every inbound stream.
    fn serve(&self) {
        let mut incoming = self
            .control
            .clone()
            .accept(PROTOCOL)
            .expect("protocol registered once");
        tokio::spawn(async move {
            while let Some((_, stream)) = incoming.next().await {
                tokio::spawn(async move {
                    let _ = receive(stream).await;
                });
            }
        });
    }
}

/// `share` mode, target side: counts every byte received on [`SHARE_PROTOCOL`] streams.
fn count_incoming(peer: &Peer) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut incoming = peer
        .control
        .clone()
        .accept(SHARE_PROTOCOL)
        .expect("protocol registered once");
    let total = counter.clone();
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let total = total.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; CHUNK];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    total.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    counter
}

/// `share` mode, source side: sends to `target` as fast as the stream takes it, until the
/// process ends.
async fn send_forever(mut control: libp2p_stream::Control, target: PeerId) -> String {
    let mut stream = match control.open_stream(target, SHARE_PROTOCOL).await {
        Ok(stream) => stream,
        Err(e) => return format!("open stream: {e}"),
    };
    loop {
        if let Err(e) = stream.write_all(&ZEROS).await {
            return format!("send: {e}");
        }
    }
}

/// Chunk of a paced sender.
const PACED_CHUNK: u64 = 16 * 1024;

/// Sends `n` bytes to `target` on a new stream (at `rate` bytes/s if given, else as fast as
/// the connection takes them); returns once the target confirmed them.
async fn send(
    mut control: libp2p_stream::Control,
    target: PeerId,
    n: u64,
    rate: Option<u64>,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = control
        .open_stream(target, PROTOCOL)
        .await
        .map_err(|e| format!("open stream: {e}"))?;
    let io = async {
        stream.write_all(&n.to_be_bytes()).await?;
        let mut left = n;
        let paced_from = tokio::time::Instant::now();
        while left > 0 {
            let chunk = if rate.is_some() {
                PACED_CHUNK
            } else {
                CHUNK as u64
            };
            let len = left.min(chunk) as usize;
            if let Some(rate) = rate {
                let sent = n - left;
                let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                tokio::time::sleep_until(paced_from + due).await;
            }
            stream.write_all(&ZEROS[..len]).await?;
            left -= len as u64;
        }
        stream.flush().await?;
        let mut ack = [0u8; 8];
        stream.read_exact(&mut ack).await?;
        let _ = stream.close().await;
        Ok::<u64, std::io::Error>(u64::from_be_bytes(ack))
    };
    let got = io.await.map_err(|e| format!("transfer: {e}"))?;
    if got != n {
        return Err(format!("target confirmed {got} of {n} bytes"));
    }
    Ok(started.elapsed())
}

/// The target's side of a transfer: read the length, then that many bytes, then confirm.
async fn receive(mut stream: libp2p::Stream) -> std::io::Result<()> {
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await?;
    let n = u64::from_be_bytes(header);
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    while got < n {
        let want = (n - got).min(CHUNK as u64) as usize;
        let read = stream.read(&mut buf[..want]).await?;
        if read == 0 {
            break;
        }
        got += read as u64;
    }
    stream.write_all(&got.to_be_bytes()).await?;
    stream.flush().await?;
    let _ = stream.close().await;
    Ok(())
}

fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    match addr.iter().last()? {
        Protocol::P2p(id) => Some(id),
        _ => None,
    }
}

async fn drive(mut swarm: Swarm<PeerBehaviour>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut dials: HashMap<_, (Instant, bool, Reply<Duration>)> = HashMap::new();
    let mut listening: Option<(ListenerId, bool, Reply<Multiaddr>)> = None;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => break,
                Some(Command::Dial { opts, close_after, reply }) => {
                    let id = opts.connection_id();
                    let started = Instant::now();
                    match swarm.dial(opts) {
                        Ok(()) => {
                            dials.insert(id, (started, close_after, reply));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
                Some(Command::Listen { addr, reply }) => {
                    let relayed = addr.iter().any(|p| p == Protocol::P2pCircuit);
                    match swarm.listen_on(addr) {
                        Ok(id) => listening = Some((id, relayed, reply)),
                        Err(e) => {
                            let _ = reply.send(Err(e.to_string()));
                        }
                    }
                }
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { connection_id, .. } => {
                    if let Some((started, close_after, reply)) = dials.remove(&connection_id) {
                        let _ = reply.send(Ok(started.elapsed()));
                        if close_after {
                            swarm.close_connection(connection_id);
                        }
                    }
                }
                SwarmEvent::OutgoingConnectionError { connection_id, error, .. } => {
                    if let Some((_, _, reply)) = dials.remove(&connection_id) {
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    if matches!(&listening, Some((id, false, _)) if *id == listener_id) {
                        let (_, _, reply) = listening.take().expect("matched");
                        let _ = reply.send(Ok(address));
                    }
                }
                SwarmEvent::Behaviour(PeerBehaviourEvent::Relay(
                    relay::client::Event::ReservationReqAccepted { renewal: false, .. },
                )) => {
                    if matches!(&listening, Some((_, true, _))) {
                        let (_, _, reply) = listening.take().expect("matched");
                        let _ = reply.send(Ok(Multiaddr::empty()));
                    }
                }
                SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                    if matches!(&listening, Some((id, _, _)) if *id == listener_id) {
                        let (_, _, reply) = listening.take().expect("matched");
                        let _ = reply.send(Err(format!("listener closed: {reason:?}")));
                    }
                }
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn emit(value: serde_json::Value) {
    println!("{value}");
}

/// Stdin lines, read on a thread; the channel ends with stdin.
fn stdin_lines() -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim().to_string()).is_err() {
                break;
            }
        }
    });
    rx
}

/// Spawns `n` peers with pool addresses starting at `first`.
fn spawn_peers(first: u32, n: usize) -> Vec<Peer> {
    (0..n as u32)
        .map(|i| Peer::spawn(pool_ip(first + i)))
        .collect()
}

/// [`spawn_peers`], then (if `quic`) binds each one's QUIC listener; exits on an error.
async fn ready_peers(first: u32, n: usize, quic: bool, concurrency: usize) -> Vec<Peer> {
    let peers = spawn_peers(first, n);
    if quic {
        let errors: Vec<String> = stream::iter(peers.iter())
            .map(Peer::bind_quic)
            .buffer_unordered(concurrency.max(1))
            .filter_map(|r| async move { r.err() })
            .collect()
            .await;
        if !errors.is_empty() {
            fail("quic listen", &errors);
        }
    }
    peers
}

fn is_quic(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::QuicV1))
}

/// `slow` mode, target side: reads every [`SLOW_PROTOCOL`] stream at `rate` bytes/s until
/// `deadline`, counting the bytes into `total`.
fn read_slowly(
    peer: &Peer,
    rate: u64,
    deadline: tokio::time::Instant,
    total: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let mut incoming = peer
        .control
        .clone()
        .accept(SLOW_PROTOCOL)
        .expect("protocol registered once");
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let total = total.clone();
            tokio::spawn(async move {
                // A tenth of a second's worth at a time.
                let step = (rate / 10).max(1) as usize;
                let mut buf = vec![0u8; step];
                let from = tokio::time::Instant::now();
                let mut got = 0u64;
                let read = async {
                    loop {
                        let due = Duration::from_secs_f64(got as f64 / rate.max(1) as f64);
                        tokio::time::sleep_until(from + due).await;
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                got += n as u64;
                                total.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                };
                let _ = tokio::time::timeout_at(deadline, read).await;
            });
        }
    });
}

/// `slow` mode, source side: writes to `target` as fast as the stream accepts until `deadline`,
/// counting the bytes into `total`; returns the error that stopped it, if any.
async fn send_until(
    mut control: libp2p_stream::Control,
    target: PeerId,
    deadline: tokio::time::Instant,
    total: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Option<String> {
    let write = async {
        let mut stream = control
            .open_stream(target, SLOW_PROTOCOL)
            .await
            .map_err(|e| format!("open stream: {e}"))?;
        loop {
            let chunk = &ZEROS[..PACED_CHUNK as usize];
            stream
                .write_all(chunk)
                .await
                .map_err(|e| format!("send: {e}"))?;
            total.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    };
    match tokio::time::timeout_at(deadline, write).await {
        Ok(Err(e)) => Some(e),
        Ok(Ok(())) | Err(_) => None,
    }
}

/// Makes every peer a target; returns their addresses (in order) and the errors.
async fn become_targets(
    peers: &[Peer],
    relay: Option<&Multiaddr>,
    concurrency: usize,
) -> (Vec<Option<Multiaddr>>, Vec<String>) {
    let results: Vec<_> = stream::iter(peers.iter())
        .map(|p| async move {
            let r = p.become_target(relay).await;
            if r.is_ok() {
                p.serve();
            }
            r
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;
    let errors = results.iter().filter_map(|r| r.clone().err()).collect();
    (results.into_iter().map(Result::ok).collect(), errors)
}

async fn connect_sources(
    peers: &[Peer],
    relay: Option<&Multiaddr>,
    concurrency: usize,
) -> Vec<String> {
    let Some(relay) = relay else {
        return Vec::new();
    };
    stream::iter(peers.iter())
        .map(|p| p.connect_relay(relay))
        .buffer_unordered(concurrency.max(1))
        .filter_map(|r| async move { r.err() })
        .collect()
        .await
}

/// The peers of `sessions` circuits: targets reserved on `relay` (listening, without one) and
/// sources connected to `source_relay`, with each target's address; exits on any failure.
async fn session_peers(
    first: u32,
    sessions: usize,
    quic: bool,
    concurrency: usize,
    relay: Option<&Multiaddr>,
    source_relay: Option<&Multiaddr>,
) -> (Vec<Peer>, Vec<Peer>, Vec<Option<Multiaddr>>) {
    let targets = ready_peers(first, sessions, quic, concurrency).await;
    let sources = ready_peers(first + sessions as u32, sessions, quic, concurrency).await;
    let (addrs, errors) = become_targets(&targets, relay, concurrency).await;
    if !errors.is_empty() {
        fail("target", &errors);
    }
    let errors = connect_sources(&sources, source_relay, concurrency).await;
    if !errors.is_empty() {
        fail("source connect", &errors);
    }
    (targets, sources, addrs)
}

fn fail(what: &str, errors: &[String]) -> ! {
    emit(json!({"event": "error", "what": what, "count": errors.len(), "first": errors.first()}));
    std::process::exit(2);
}

fn main() {
    let args = Args::parse();
    let nofile = raise_nofile(1 << 20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run(args, nofile));
    // Don't wait for thousands of swarm tasks to wind down.
    std::process::exit(0);
}

async fn run(args: Args, nofile: u64) {
    let relay = args.relay.as_ref();
    // Sources reach the relay over this address.
    let src_relay = args.source_relay.as_ref().or(relay);
    let quic = args.direct_quic || relay.is_some_and(is_quic) || src_relay.is_some_and(is_quic);
    let conc = args.setup_concurrency;
    let base = args.ip_offset;
    match args.mode {
        Mode::Transfer { sessions } => {
            let started = Instant::now();
            let (targets, sources, addrs) =
                session_peers(base, sessions, quic, conc, relay, src_relay).await;
            let results: Vec<_> = stream::iter(sources.iter().zip(addrs.iter()))
                .map(|(s, a)| s.connect_to(a.as_ref().expect("target up"), false))
                .buffer_unordered(conc.max(1))
                .collect()
                .await;
            let errors: Vec<_> = results.into_iter().filter_map(Result::err).collect();
            if !errors.is_empty() {
                fail("circuit", &errors);
            }
            emit(
                json!({"event": "ready", "sessions": sessions, "nofile": nofile,
                        "setup_secs": started.elapsed().as_secs_f64()}),
            );
            let mut lines = stdin_lines();
            while let Some(line) = lines.recv().await {
                let mut words = line.split_whitespace();
                match (
                    words.next(),
                    words.next().and_then(|w| w.parse::<u64>().ok()),
                ) {
                    (Some("go"), Some(bytes)) => {
                        let rate = words.next().and_then(|w| w.parse::<u64>().ok());
                        let started = Instant::now();
                        let runs = sources
                            .iter()
                            .zip(targets.iter())
                            .map(|(s, t)| tokio::spawn(send(s.control.clone(), t.id, bytes, rate)));
                        let results = futures::future::join_all(runs).await;
                        let secs = started.elapsed().as_secs_f64();
                        let mut per: Vec<f64> = Vec::new();
                        let mut errors = Vec::new();
                        for r in results {
                            match r {
                                Ok(Ok(d)) => per.push(d.as_secs_f64()),
                                Ok(Err(e)) => errors.push(e),
                                Err(e) => errors.push(e.to_string()),
                            }
                        }
                        per.sort_by(f64::total_cmp);
                        emit(
                            json!({"event": "round", "sessions": sessions, "bytes_per_session": bytes,
                                    "ok": per.len(), "total_bytes": bytes * per.len() as u64, "secs": secs,
                                    "session_secs_min": per.first(), "session_secs_max": per.last(),
                                    "errors": errors.len(), "first_error": errors.first()}),
                        );
                    }
                    (Some("quit"), _) => break,
                    _ => emit(json!({"event": "error", "what": "bad command", "line": line})),
                }
            }
        }
        Mode::Setup {
            targets,
            sources,
            sequential,
            concurrent,
            concurrency,
        } => {
            let target_peers = ready_peers(base, targets, quic, conc).await;
            let source_peers = ready_peers(base + targets as u32, sources.max(1), quic, conc).await;
            let (addrs, errors) = become_targets(&target_peers, relay, conc).await;
            if !errors.is_empty() {
                fail("target", &errors);
            }
            let addrs: Vec<Multiaddr> = addrs.into_iter().flatten().collect();
            let errors = connect_sources(&source_peers, src_relay, conc).await;
            if !errors.is_empty() {
                fail("source connect", &errors);
            }
            // Sequential, from one source: latency.
            let source = &source_peers[0];
            let mut samples = Vec::with_capacity(sequential);
            let mut errors = Vec::new();
            for i in 0..sequential {
                match source.connect_to(&addrs[i % addrs.len()], true).await {
                    Ok(d) => samples.push(d.as_micros() as u64),
                    Err(e) => errors.push(e),
                }
            }
            emit(
                json!({"event": "sequential", "samples_us": samples, "errors": errors.len(),
                        "first_error": errors.first()}),
            );
            // Concurrent, `concurrency` in flight per source: rate. (The rust relay client
            // allows 10 CONNECTs in flight per relay connection, and a target 10 inbound
            // STOPs: keep both below that.)
            let started = Instant::now();
            let n_sources = source_peers.len();
            let per_source = (0..n_sources).map(|s| {
                let addrs = &addrs;
                let source = &source_peers[s];
                stream::iter((s..concurrent).step_by(n_sources))
                    .map(move |i| source.connect_to(&addrs[i % addrs.len()], true))
                    .buffer_unordered(concurrency.max(1))
                    .collect::<Vec<_>>()
            });
            let results: Vec<_> = futures::future::join_all(per_source)
                .await
                .into_iter()
                .flatten()
                .collect();
            let secs = started.elapsed().as_secs_f64();
            let errors: Vec<_> = results.iter().filter_map(|r| r.clone().err()).collect();
            emit(
                json!({"event": "concurrent", "circuits": concurrent, "ok": concurrent - errors.len(),
                        "in_flight": concurrency * n_sources, "secs": secs, "errors": errors.len(),
                        "first_error": errors.first()}),
            );
        }
        Mode::Reserve {
            count,
            deadline_secs,
        } => {
            let started = Instant::now();
            let peers = spawn_peers(base, count);
            let deadline =
                (deadline_secs > 0).then(|| started + Duration::from_secs(deadline_secs));
            let attempted = std::sync::atomic::AtomicUsize::new(0);
            let results: Vec<_> = stream::iter(peers.iter())
                .take_while(|_| futures::future::ready(deadline.is_none_or(|d| Instant::now() < d)))
                .map(|p| {
                    attempted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    p.become_target(relay)
                })
                .buffer_unordered(conc.max(1))
                .collect()
                .await;
            let errors: Vec<_> = results.into_iter().filter_map(Result::err).collect();
            let attempted = attempted.into_inner();
            emit(
                json!({"event": "reserved", "count": attempted - errors.len(), "failed": errors.len(),
                        "requested": count, "deadline_hit": attempted < count,
                        "first_error": errors.first(), "nofile": nofile,
                        "secs": started.elapsed().as_secs_f64()}),
            );
            let mut lines = stdin_lines();
            while let Some(line) = lines.recv().await {
                if line == "quit" {
                    break;
                }
            }
            drop(peers);
        }
        Mode::Flood {
            connections,
            streams,
        } => {
            let relay = relay.expect("flood needs --relay");
            let relay_id = peer_of(relay).expect("relay address with /p2p");
            let started = Instant::now();
            let ip = pool_ip(base);
            let peers: Vec<Peer> = (0..connections).map(|_| Peer::spawn(ip)).collect();
            let connected: Vec<bool> = stream::iter(peers.iter())
                .map(|p| async move { p.connect_relay(relay).await.is_ok() })
                .buffered(conc.max(1))
                .collect()
                .await;
            let through: Vec<&Peer> = peers
                .iter()
                .zip(&connected)
                .filter_map(|(p, ok)| ok.then_some(p))
                .collect();
            let mut held = Vec::new();
            let mut refused_streams = 0usize;
            // A connection the relay refused once established is gone by its first stream.
            let mut held_connections = 0usize;
            for peer in &through {
                let before = held.len();
                for _ in 0..streams.max(1) {
                    match peer
                        .control
                        .clone()
                        .open_stream(relay_id, macula_relay::HOP_PROTOCOL)
                        .await
                    {
                        Ok(stream) => held.push(stream),
                        Err(_) => refused_streams += 1,
                    }
                }
                held_connections += usize::from(held.len() > before);
            }
            emit(
                json!({"event": "flooded", "from": ip.to_string(), "connections": connections,
                        "handshaken": through.len(), "held": held_connections,
                        "streams_opened": held.len(),
                        "streams_refused": refused_streams, "nofile": nofile,
                        "secs": started.elapsed().as_secs_f64()}),
            );
            let mut lines = stdin_lines();
            while let Some(line) = lines.recv().await {
                if line == "quit" {
                    break;
                }
            }
            drop(held);
        }
        Mode::Churn {
            count,
            deadline_secs,
        } => {
            let started = Instant::now();
            let deadline =
                (deadline_secs > 0).then(|| started + Duration::from_secs(deadline_secs));
            let results: Vec<Result<(), String>> = stream::iter(0..count as u32)
                .take_while(|_| futures::future::ready(deadline.is_none_or(|d| Instant::now() < d)))
                .map(|i| async move {
                    // A fresh peer: reserves, then its swarm (and connection) is dropped.
                    let peer = Peer::spawn(pool_ip(base + i % 50_000));
                    peer.become_target(relay).await.map(drop)
                })
                .buffer_unordered(conc.max(1))
                .collect()
                .await;
            let errors: Vec<_> = results.iter().filter_map(|r| r.clone().err()).collect();
            emit(
                json!({"event": "churned", "reservations": results.len() - errors.len(),
                        "failed": errors.len(), "first_error": errors.first(),
                        "secs": started.elapsed().as_secs_f64()}),
            );
        }
        Mode::Share {
            sessions,
            busy,
            warmup_secs,
            secs,
        } => {
            let started = Instant::now();
            let (targets, sources, addrs) =
                session_peers(base, sessions, quic, conc, relay, src_relay).await;
            let counters: Vec<_> = targets.iter().map(count_incoming).collect();
            let results: Vec<_> = stream::iter(sources.iter().zip(addrs.iter()))
                .map(|(s, a)| s.connect_to(a.as_ref().expect("target up"), false))
                .buffer_unordered(conc.max(1))
                .collect()
                .await;
            let errors: Vec<_> = results.into_iter().filter_map(Result::err).collect();
            if !errors.is_empty() {
                fail("circuit", &errors);
            }
            let setup_secs = started.elapsed().as_secs_f64();
            let busy = busy.min(sessions);
            let (failed_tx, mut failed_rx) = mpsc::unbounded_channel();
            for (s, t) in sources.iter().zip(targets.iter()).take(busy) {
                let failed = failed_tx.clone();
                let send = send_forever(s.control.clone(), t.id);
                tokio::spawn(async move {
                    let _ = failed.send(send.await);
                });
            }
            let snapshot = || -> Vec<u64> {
                counters
                    .iter()
                    .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
                    .collect()
            };
            tokio::time::sleep(Duration::from_secs_f64(warmup_secs)).await;
            let (before, from) = (snapshot(), Instant::now());
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            let (after, window) = (snapshot(), from.elapsed().as_secs_f64());
            let rates: Vec<f64> = after
                .iter()
                .zip(&before)
                .map(|(a, b)| (a - b) as f64 / window)
                .collect();
            let busy_rates = &rates[..busy];
            let total: f64 = rates.iter().sum();
            let min = busy_rates.iter().copied().fold(f64::INFINITY, f64::min);
            let max = busy_rates.iter().copied().fold(0.0, f64::max);
            let idle_bytes: u64 = after[busy..].iter().sum();
            failed_rx.close();
            let mut errors = Vec::new();
            while let Ok(e) = failed_rx.try_recv() {
                errors.push(e);
            }
            emit(json!({
                "event": "share", "sessions": sessions, "busy": busy, "secs": window,
                "setup_secs": setup_secs,
                "total_rate": total, "min_rate": min, "max_rate": max,
                "max_over_min": max / min, "idle_bytes": idle_bytes,
                "rates": busy_rates, "errors": errors.len(), "first_error": errors.first(),
            }));
        }
        Mode::Idle {
            targets,
            sources,
            per_source,
        } => {
            let started = Instant::now();
            let target_peers = ready_peers(base, targets, quic, conc).await;
            let source_peers = ready_peers(base + targets as u32, sources, quic, conc).await;
            let (addrs, errors) = become_targets(&target_peers, relay, conc).await;
            if !errors.is_empty() {
                fail("target", &errors);
            }
            let addrs: Vec<Multiaddr> = addrs.into_iter().flatten().collect();
            let errors = connect_sources(&source_peers, src_relay, conc).await;
            if !errors.is_empty() {
                fail("source connect", &errors);
            }
            emit(
                json!({"event": "connected", "targets": targets, "sources": sources,
                        "nofile": nofile, "secs": started.elapsed().as_secs_f64()}),
            );
            let mut lines = stdin_lines();
            while let Some(line) = lines.recv().await {
                match line.as_str() {
                    "go" => {
                        let started = Instant::now();
                        // Round k: every source opens its k-th circuit, so circuits in flight
                        // spread over many sources and targets (a rust relay client allows
                        // 10 CONNECTs / STOPs in flight per connection).
                        let n_targets = addrs.len();
                        let pairs: Vec<(usize, usize)> = (0..per_source)
                            .flat_map(|k| (0..sources).map(move |s| (s, (s + k) % n_targets)))
                            .collect();
                        let results: Vec<_> = stream::iter(pairs)
                            .map(|(s, t)| source_peers[s].connect_to(&addrs[t], false))
                            .buffer_unordered(conc.max(1))
                            .collect()
                            .await;
                        let errors: Vec<_> =
                            results.iter().filter_map(|r| r.clone().err()).collect();
                        emit(
                            json!({"event": "sessions", "open": results.len() - errors.len(),
                                    "failed": errors.len(), "first_error": errors.first(),
                                    "secs": started.elapsed().as_secs_f64()}),
                        );
                    }
                    "quit" => break,
                    _ => {}
                }
            }
        }
        Mode::Slow {
            sessions,
            read_rate,
            max_secs,
        } => {
            use std::sync::{atomic::AtomicU64, atomic::Ordering::Relaxed, Arc};
            let started = Instant::now();
            let (targets, sources, addrs) =
                session_peers(base, sessions, quic, conc, relay, src_relay).await;
            let (sent, read) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(max_secs);
            for target in &targets {
                read_slowly(target, read_rate, deadline, read.clone());
            }
            emit(
                json!({"event": "connected", "sessions": sessions, "nofile": nofile,
                        "secs": started.elapsed().as_secs_f64()}),
            );
            let (failed_tx, mut failed_rx) = mpsc::unbounded_channel();
            let mut lines = stdin_lines();
            let mut opened = false;
            // Sources that stopped with an error, so far.
            let mut errors: Vec<String> = Vec::new();
            while let Some(line) = lines.recv().await {
                match line.as_str() {
                    "go" if !opened => {
                        opened = true;
                        let started = Instant::now();
                        let results: Vec<_> = stream::iter(sources.iter().zip(addrs.iter()))
                            .map(|(s, a)| s.connect_to(a.as_ref().expect("target up"), false))
                            .buffer_unordered(conc.max(1))
                            .collect()
                            .await;
                        let failed: Vec<_> = results.into_iter().filter_map(Result::err).collect();
                        for (s, t) in sources.iter().zip(targets.iter()) {
                            let failed = failed_tx.clone();
                            let send = send_until(s.control.clone(), t.id, deadline, sent.clone());
                            tokio::spawn(async move {
                                if let Some(e) = send.await {
                                    let _ = failed.send(e);
                                }
                            });
                        }
                        emit(json!({"event": "sessions", "open": sessions - failed.len(),
                                    "failed": failed.len(), "first_error": failed.first(),
                                    "secs": started.elapsed().as_secs_f64()}));
                    }
                    "stats" => {
                        while let Ok(e) = failed_rx.try_recv() {
                            errors.push(e);
                        }
                        emit(json!({"event": "stats", "sent": sent.load(Relaxed),
                                    "read": read.load(Relaxed), "errors": errors.len(),
                                    "first_error": errors.first(),
                                    "secs_left": deadline
                                        .saturating_duration_since(tokio::time::Instant::now())
                                        .as_secs_f64()}));
                    }
                    "quit" => break,
                    _ => emit(json!({"event": "error", "what": "bad command", "line": line})),
                }
            }
        }
    }
}
