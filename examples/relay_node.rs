//! The macula relay node: a Circuit Relay v2 relay with the reference defaults.
//!
//! ```text
//! cargo run --release --example relay_node
//! cargo run --release --example relay_node -- --listen /ip4/0.0.0.0/tcp/4001 \
//!     --external /ip4/203.0.113.7/tcp/4001 --key-file relay.key --bandwidth 0
//! ```
//!
//! Prints each listen address (with `/p2p/<peer id>`) on its own line of stdout; logs to stderr
//! (`RUST_LOG` sets the level, default `info`). Ctrl-C (or SIGTERM) stops it.

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use futures::StreamExt;
use libp2p::{core::multiaddr::Protocol, swarm::SwarmEvent, Multiaddr};
use macula_relay::{load_or_create_keypair, Config, RelayNodeBuilder, RelayNodeEvent};

/// Run a Circuit Relay v2 relay node.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Listen address (repeatable). Default: TCP and QUIC on all interfaces, port 4001.
    #[arg(long = "listen", value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Publicly reachable address to announce (repeatable). Without any, the listen addresses
    /// are announced, so a relay on loopback or a LAN works as is.
    #[arg(long = "external", value_name = "MULTIADDR")]
    external: Vec<Multiaddr>,
    /// Key file: created on first run, reused after, so the peer id stays the same.
    #[arg(long, value_name = "PATH")]
    key_file: Option<PathBuf>,
    /// Maximum concurrent sessions.
    #[arg(long, default_value_t = macula_relay::DEFAULT_MAX_SESSIONS)]
    max_sessions: usize,
    /// Per-session bandwidth, bytes per second and direction (0 = unlimited).
    #[arg(long, default_value_t = macula_relay::DEFAULT_BANDWIDTH)]
    bandwidth: u64,
    /// Session timeout in seconds (0 = unlimited).
    #[arg(long, default_value_t = macula_relay::DEFAULT_SESSION_TIMEOUT.as_secs())]
    session_timeout: u64,
    /// Per-session data cap in bytes, each direction (0 = no cap).
    #[arg(long, default_value_t = 0)]
    max_session_bytes: u64,
    /// Maximum reservations.
    #[arg(long, default_value_t = macula_relay::DEFAULT_MAX_RESERVATIONS)]
    max_reservations: usize,
    /// Reservation lifetime in seconds.
    #[arg(long, default_value_t = macula_relay::DEFAULT_RESERVATION_TTL.as_secs())]
    reservation_ttl: u64,
}

fn nonzero(v: u64) -> Option<u64> {
    (v > 0).then_some(v)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();

    let config = Config::builder()
        .max_sessions(args.max_sessions)
        .bandwidth(nonzero(args.bandwidth))
        .session_timeout(nonzero(args.session_timeout).map(Duration::from_secs))
        .max_session_bytes(nonzero(args.max_session_bytes))
        .max_reservations(args.max_reservations)
        .reservation_ttl(Duration::from_secs(args.reservation_ttl))
        .build()?;

    let mut builder = RelayNodeBuilder::new().config(config);
    if let Some(path) = &args.key_file {
        builder = builder.keypair(load_or_create_keypair(path)?);
    }
    for addr in &args.listen {
        builder = builder.listen_on(addr.clone());
    }
    for addr in &args.external {
        builder = builder.external_address(addr.clone());
    }
    let mut swarm = builder.build()?;
    let peer_id = *swarm.local_peer_id();
    tracing::info!(%peer_id, "relay node started");

    let mut terminate = terminate_signal()?;
    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    println!("{}", address.clone().with(Protocol::P2p(peer_id)));
                    if args.external.is_empty() {
                        swarm.add_external_address(address);
                    }
                }
                SwarmEvent::ExpiredListenAddr { address, .. } if args.external.is_empty() => {
                    swarm.remove_external_address(&address);
                }
                SwarmEvent::Behaviour(RelayNodeEvent::Relay(event)) => {
                    tracing::info!(?event, "relay");
                }
                SwarmEvent::ListenerError { error, .. } => {
                    tracing::warn!(%error, "listener error");
                }
                _ => {}
            },
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    let stats = swarm.behaviour().relay.stats();
    tracing::info!(?stats, "relay node stopped");
    Ok(())
}

#[cfg(unix)]
fn terminate_signal() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
}
