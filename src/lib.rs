//! # macula-relay
//!
//! A [Circuit Relay v2](https://github.com/libp2p/specs/blob/master/relay/circuit-v2.md) relay
//! for rust-libp2p, as a [`NetworkBehaviour`](libp2p::swarm::NetworkBehaviour): peers behind
//! NATs reserve a slot on it, other peers reach them through it. Wire-compatible with the
//! stock relay clients (rust, js, go, py), it adds what the stock `libp2p::relay::Behaviour`
//! lacks: a per-session bandwidth limit, byte accounting, live session listing and closing,
//! run-time enable / disable / drain, limits changed at run time, per-peer tiers, spec-exact
//! limits and statuses, signed reservation vouchers, and events with bytes and durations.
//!
//! The API follows the `macula_relay_node` reference: [`Behaviour::enable`],
//! [`Behaviour::enable_with`], [`Behaviour::disable`], [`Behaviour::is_enabled`],
//! [`Behaviour::sessions`], [`Behaviour::stats`], [`Behaviour::close_session`], and (cargo
//! feature `node`) `RelayNodeBuilder` to start a relay node in one call.
//!
//! ## Cargo features
//!
//! With `default-features = false` the crate is the relay behaviour alone, on libp2p-swarm:
//! the sans-IO relay core (every decision, with an explicit clock), the libp2p adapter
//! ([`Behaviour`]), the per-connection handler, the wire protocol and the copy loop. On top:
//! - `node`: the relay node in one call (`RelayNodeBuilder`: TCP, QUIC, WebSocket, noise, yamux,
//!   identify, ping on tokio);
//! - `registry`: the relay registry on Kademlia (`registry`);
//! - `admin` (implies `node`): the admin HTTP API, Prometheus metrics, the TOML node config and
//!   the runner with graceful drain.
//!
//! All three are on by default.
//!
//! ## Composing the relay into your own swarm
//!
//! ```no_run
//! use libp2p::{identify, noise, swarm::NetworkBehaviour, tcp, yamux};
//! use macula_relay::{Config, Behaviour as Relay};
//!
//! #[derive(NetworkBehaviour)]
//! struct MyBehaviour {
//!     relay: Relay,
//!     identify: identify::Behaviour,
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::builder()
//!     .max_sessions(500)
//!     .bandwidth(Some(4_000_000)) // bytes per second and direction
//!     .build()?;
//! let mut swarm = libp2p::SwarmBuilder::with_new_identity()
//!     .with_tokio()
//!     .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)?
//!     .with_behaviour(|key| MyBehaviour {
//!         relay: Relay::new(key.clone(), config),
//!         identify: identify::Behaviour::new(identify::Config::new(
//!             "/my-app/1.0.0".into(),
//!             key.public(),
//!         )),
//!     })?
//!     .build();
//! swarm.listen_on("/ip4/0.0.0.0/tcp/4001".parse()?)?;
//! // ... drive the swarm; call swarm.behaviour_mut().relay.stats(), .sessions(), ...
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod addresses;
mod behaviour;
#[cfg(feature = "node")]
pub mod boxed_handler;
mod config;
mod copy;
mod core;
mod event;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
mod handler;
#[cfg(feature = "node")]
pub mod heap;
#[cfg(feature = "node")]
pub mod node;
mod protocol;
#[cfg(feature = "registry")]
pub mod registry;
#[cfg(feature = "node")]
mod secure_websocket;
mod session;
#[cfg(feature = "node")]
pub mod stream_liveness;
mod throttle;
#[cfg(feature = "webrtc")]
pub mod webrtc_direct;

// Operating the relay node (feature `admin`, on by default).
#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "admin")]
pub mod metrics;
#[cfg(feature = "admin")]
pub mod node_config;
#[cfg(feature = "admin")]
pub mod runner;
// The `macula-relay` binary's command line (feature `cli`, on by default).
#[cfg(feature = "cli")]
pub mod cli;

pub use addresses::{Announcement, Skipped};
pub use behaviour::Behaviour;
pub use config::{
    AccessPolicy, Config, ConfigBuilder, ConfigError, OriginLimits, RequestRate, SessionLimits,
    DEFAULT_BANDWIDTH, DEFAULT_CONNECTIONS_PER_ORIGIN, DEFAULT_COPY_BUFFER_SIZE,
    DEFAULT_MAX_CONNECTIONS_PER_PEER, DEFAULT_MAX_INBOUND_CONNECTIONS, DEFAULT_MAX_PENDING_INBOUND,
    DEFAULT_MAX_PENDING_STREAMS_PER_CONNECTION, DEFAULT_MAX_RESERVATIONS,
    DEFAULT_MAX_RESERVATIONS_PER_PEER, DEFAULT_MAX_SESSIONS,
    DEFAULT_MAX_SESSIONS_PER_NETWORK_TO_PEER, DEFAULT_MAX_SESSIONS_PER_PEER,
    DEFAULT_RESERVATIONS_PER_ORIGIN, DEFAULT_RESERVATION_TTL, DEFAULT_SESSIONS_PER_ORIGIN,
    DEFAULT_SESSION_TIMEOUT, DEFAULT_STATS_INTERVAL, DEFAULT_STREAM_TIMEOUT,
};
pub use event::{EnableOptions, Event, ReservationEndReason, ReservationInfo, UnknownSession};
/// IP networks (`"10.0.0.0/8".parse::<IpNet>()`), as taken by
/// [`ConfigBuilder::exempt_networks`].
pub use ipnet::IpNet;
#[cfg(feature = "node")]
pub use node::{
    load_or_create_keypair, NodeError, RelayNodeBehaviour, RelayNodeBuilder, RelayNodeEvent,
    WebsocketTls,
};
pub use protocol::{Status, WireLimit, HOP_PROTOCOL, MAX_MESSAGE_SIZE, STOP_PROTOCOL};
pub use session::{
    CloseReason, DenyReason, ParseSessionIdError, RelayStats, SessionId, SessionInfo, Side,
};
pub use throttle::throttle_burst;
