//! Benchmark helper: one relay as its own OS process, for `benches/relay_bench.rs`.
//!
//! ```text
//! bench_relay --impl ours  [--bandwidth BYTES_PER_S] [--total-bandwidth BYTES_PER_S]
//!                          [--listen /ip4/127.0.0.1/tcp/0 [--listen /ip4/127.0.0.1/udp/0/quic-v1]]
//! bench_relay --impl stock [--listen ...]
//! ```
//!
//! * `ours`: the swarm of [`macula_relay::RelayNodeBuilder`] (the one `relay_node` runs: TCP and
//!   QUIC transports, noise, [`macula_relay::node::yamux_config`], identify, ping, our relay),
//!   with every admission limit lifted: no request-rate limits (all benchmark peers share
//!   127.0.0.0/8), no per-peer caps, no session timeout or data cap. Only `--bandwidth` (bytes per
//!   second and direction, 0 = unlimited) and `--total-bandwidth` (the node-wide capacity, bytes
//!   per second over all sessions and both directions, 0 = none) are set. `relay_node` has no
//!   flags for the request-rate limits or the per-peer caps, hence this helper.
//! * `stock`: libp2p 0.57's `libp2p::relay::Behaviour` with its limits lifted
//!   (`max_circuit_bytes` 0, a one-day circuit duration, no rate limiters, 10^6 reservations and
//!   circuits), status forced to `Enable`, in the same swarm shape: the same TCP config
//!   (nodelay), noise, libp2p's default yamux config (what an operator of the stock relay runs),
//!   QUIC and DNS, identify and ping, 60 s idle-connection timeout.
//!
//! Both raise their own `RLIMIT_NOFILE` soft limit (and, as root, the hard limit) to 1,048,576
//! or the most the kernel allows, as a real deployment would with `LimitNOFILE=` or
//! `ulimit -n`. Prints one JSON line `{"event":"ready","impl":..,"pid":..,"nofile":..,
//! "peer_id":..,"addrs":[".../p2p/<id>"]}` on stdout, then runs until killed. No logging unless
//! `RUST_LOG` is set.

#[path = "../benches/support/nofile.rs"]
mod nofile;
use nofile::raise_nofile;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use futures::StreamExt;
use libp2p::{
    core::multiaddr::Protocol, identify, noise, ping, relay, swarm::NetworkBehaviour,
    swarm::SwarmEvent, tcp, yamux, Multiaddr, SwarmBuilder,
};
use macula_relay::{Config, RelayNodeBuilder};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Impl {
    Ours,
    Stock,
}

/// A relay process for the benchmark.
#[derive(Parser, Debug)]
struct Args {
    /// Which relay to run.
    #[arg(long = "impl", value_enum)]
    kind: Impl,
    /// Listen addresses (repeatable; TCP and QUIC, e.g. `/ip4/127.0.0.1/udp/0/quic-v1`). The
    /// `ready` line is printed once every one of them is bound, with all their addresses.
    #[arg(long, default_values = ["/ip4/127.0.0.1/tcp/0"])]
    listen: Vec<Multiaddr>,
    /// Per-session bandwidth, bytes per second and direction, 0 = unlimited (ours only).
    #[arg(long, default_value_t = 0)]
    bandwidth: u64,
    /// Node-wide bandwidth, bytes per second over all sessions and both directions, 0 = none
    /// (ours only).
    #[arg(long, default_value_t = 0)]
    total_bandwidth: u64,
    /// Size of each of a session's two copy buffers (ours only; for profiling). Default:
    /// `macula_relay::DEFAULT_COPY_BUFFER_SIZE`.
    #[arg(long)]
    copy_buffer_size: Option<usize>,
}

#[derive(NetworkBehaviour)]
struct StockBehaviour {
    relay: relay::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
}

fn stock_config() -> relay::Config {
    relay::Config {
        max_reservations: 1_000_000,
        max_reservations_per_peer: 1_000_000,
        reservation_duration: Duration::from_secs(60 * 60),
        reservation_rate_limiters: Vec::new(),
        max_circuits: 1_000_000,
        max_circuits_per_peer: 1_000_000,
        max_circuit_duration: Duration::from_secs(24 * 60 * 60),
        max_circuit_bytes: 0,
        circuit_src_rate_limiters: Vec::new(),
    }
}

fn ours_config(bandwidth: u64, total_bandwidth: u64, copy_buffer_size: Option<usize>) -> Config {
    Config::builder()
        .copy_buffer_size(copy_buffer_size.unwrap_or(macula_relay::DEFAULT_COPY_BUFFER_SIZE))
        .max_sessions(1_000_000)
        .max_sessions_per_peer(1_000_000)
        .max_reservations(1_000_000)
        .max_reservations_per_peer(1_000_000)
        .reservation_ttl(Duration::from_secs(60 * 60))
        .bandwidth((bandwidth > 0).then_some(bandwidth))
        .total_bandwidth((total_bandwidth > 0).then_some(total_bandwidth))
        .session_timeout(None)
        .max_session_bytes(None)
        .request_rate_per_peer(None)
        .request_rate_per_ip(None)
        // Every benchmark client is on this machine: no per-origin caps, connection limits
        // lifted as for the stock relay.
        .exempt_networks(["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()])
        .max_inbound_connections(usize::MAX)
        .max_pending_inbound(usize::MAX)
        .build()
        .expect("valid config")
}

/// Waits until every listener is bound (announcing each address, as `relay_node` does without
/// `--external`), then prints the `ready` line with all of them.
async fn announce_when_bound<B: NetworkBehaviour>(
    swarm: &mut libp2p::Swarm<B>,
    kind: &str,
    listeners: usize,
    nofile: u64,
) -> Vec<Multiaddr> {
    let peer_id = *swarm.local_peer_id();
    let mut addrs = Vec::new();
    while addrs.len() < listeners {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            swarm.add_external_address(address.clone());
            addrs.push(address.with(Protocol::P2p(peer_id)));
        }
    }
    let line = serde_json::json!({
        "event": "ready",
        "impl": kind,
        "pid": std::process::id(),
        "nofile": nofile,
        "peer_id": peer_id.to_string(),
        "addrs": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
    });
    println!("{line}");
    addrs
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.kind == Impl::Ours {
        // As the `macula-relay` binary does, before the runtime's threads exist (the stock relay
        // keeps glibc's defaults, as its operators run it).
        macula_relay::heap::tune_for_relay();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    let nofile = raise_nofile(1 << 20);
    match args.kind {
        Impl::Ours => {
            let mut builder = RelayNodeBuilder::new().config(ours_config(
                args.bandwidth,
                args.total_bandwidth,
                args.copy_buffer_size,
            ));
            // Through the builder: without a listen address it binds the node's default ports.
            for addr in &args.listen {
                builder = builder.listen_on(addr.clone());
            }
            let mut swarm = builder.build()?;
            announce_when_bound(&mut swarm, "ours", args.listen.len(), nofile).await;
            loop {
                swarm.select_next_some().await;
            }
        }
        Impl::Stock => {
            let mut swarm = SwarmBuilder::with_new_identity()
                .with_tokio()
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )?
                .with_quic()
                .with_dns()?
                .with_behaviour(|key| {
                    let mut relay =
                        relay::Behaviour::new(key.public().to_peer_id(), stock_config());
                    relay.set_status(Some(relay::Status::Enable));
                    StockBehaviour {
                        relay,
                        identify: identify::Behaviour::new(identify::Config::new(
                            "/bench-stock-relay/1.0.0".into(),
                            key.public(),
                        )),
                        ping: ping::Behaviour::default(),
                    }
                })?
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
                .build();
            for addr in &args.listen {
                swarm.listen_on(addr.clone())?;
            }
            announce_when_bound(&mut swarm, "stock", args.listen.len(), nofile).await;
            loop {
                swarm.select_next_some().await;
            }
        }
    }
}
