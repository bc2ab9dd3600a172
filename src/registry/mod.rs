//! The relay registry on Kademlia: relays announce themselves in the DHT when enabled and
//! capable, clients discover them ranked by spare capacity, reserve on the best ones and reach
//! peers through them. Design, defaults and composition: `docs/registry.md`.
//!
//! - **Relay side**: [`Behaviour::observe_relay`] reads the relay's status, load and addresses;
//!   when it is enabled and has a confirmed external address it may announce (publicly
//!   routable, or allowed by `allow_private_addrs`), the registry provides one shard
//!   key (of [`RegistryConfig::shards`], picked by [`shard::shard_of`]) and serves a signed
//!   [`RelayRecord`] over `/macula/relay-record/1.0.0` (and, in
//!   [`PublishMode::ProvidersAndRecords`], puts it in the DHT). It republishes before expiry and
//!   on material load changes (rate-limited), and withdraws on disable or loss of capability.
//! - **Reading side**: [`Behaviour::discover_relays`] yields verified, enabled relays, best first.
//! - **Storing side**: kad's record filtering refuses forged, replayed and expired relay records.
//! - **Client side**: [`Behaviour::reserve_on_best`] and [`Behaviour::request_relay`].
//!
//! ## Composition: one DHT per swarm
//!
//! The registry owns the swarm's `kad::Behaviour` (built from the application's `kad::Config`)
//! and shares it: [`Behaviour::kad_mut`] for the application's own queries, whose results come
//! as [`Event::Kad`].
//!
//! ```no_run
//! use libp2p::{identify, kad, noise, swarm::NetworkBehaviour, tcp, yamux, StreamProtocol};
//! use macula_relay::{registry, Config};
//!
//! #[derive(NetworkBehaviour)]
//! struct Node {
//!     relay: macula_relay::Behaviour,
//!     registry: registry::Behaviour,
//!     identify: identify::Behaviour,
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut swarm = libp2p::SwarmBuilder::with_new_identity()
//!     .with_tokio()
//!     .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)?
//!     .with_behaviour(|key| Node {
//!         relay: macula_relay::Behaviour::new(key.clone(), Config::default()),
//!         registry: registry::Behaviour::with_protocol(
//!             key,
//!             StreamProtocol::new("/my-net/kad/1.0.0"),
//!             registry::RegistryConfig::default(),
//!         ),
//!         identify: identify::Behaviour::new(identify::Config::new("/my-net/1".into(), key.public())),
//!     })?
//!     .build();
//! swarm.behaviour_mut().registry.kad_mut().set_mode(Some(kad::Mode::Server));
//! // After every swarm event:
//! let node = swarm.behaviour_mut();
//! node.registry.observe_relay(&node.relay);
//! # Ok(()) }
//! ```

// `RecordError` names the peers involved (two peer ids, ~160 bytes); refused records are rare,
// and an error that says who signed what is worth more than a smaller `Result`.
#![allow(clippy::result_large_err)]

mod advertise;
mod behaviour;
mod client;
mod config;
mod discover;
mod event;
mod failure;
mod fetch;
mod inner;
mod liveness;
mod plan;
mod proto;
mod provider_admission;
mod provider_book;
mod rank;
mod record;
mod schedule;
pub mod shard;
mod storing;
mod trust;
mod verify;

pub use behaviour::{Activity, Behaviour, KNOWN_LIFETIME};
pub use client::UnknownRelaySession;
pub use config::{
    OtherRecords, PublishMode, RegistryConfig, RegistryConfigBuilder, RegistryConfigError,
    DEFAULT_DISCOVERY_TARGET, DEFAULT_DISCOVERY_TIMEOUT, DEFAULT_FETCH_TIMEOUT, DEFAULT_LEVELS,
    DEFAULT_LOAD_CHANGE_PERCENT, DEFAULT_MAX_CLOCK_SKEW, DEFAULT_MAX_RECORD_READS,
    DEFAULT_MIN_REPUBLISH_INTERVAL, DEFAULT_NAMESPACE, DEFAULT_PARALLEL_READS,
    DEFAULT_PROVIDERS_PER_ORIGIN, DEFAULT_RECORD_TTL, DEFAULT_REPROVIDE_INTERVAL,
    DEFAULT_RESERVATIONS, DEFAULT_SHARDS, DEFAULT_SHARDS_PER_ROUND, FULL_KEY_PROVIDERS, MAX_LEVELS,
    MAX_RECORD_ADDRS, MAX_RECORD_BYTES, MAX_RECORD_TTL, SHARD_PROVIDER_RENEWALS,
};
pub use discover::{READ_GRACE, ROUND_PATIENCE};
pub use event::{
    DiscoveryId, DiscoveryStats, Event, RejectedAt, RelayFailure, RelaySessionId, RequestId,
    SessionError,
};
pub use liveness::{PROBE_INTERVAL, PROBE_RETRY, SILENCES_TO_DROP};
pub use plan::{Held, ReservationPlan, RESERVATION_TIMEOUT, RETRY_BACKOFF};
pub use provider_admission::PROVIDERS_PER_KEY;
pub use provider_book::{other_provider_keys, RESERVED_PROVIDER_KEYS};
pub use rank::{rank, rank_by_experience, RelayCandidate, MAX_TRUSTED_SPARE, UNPROVEN_SPARE};
pub use record::{open, unix_ms, OpenError, RelayRecord, RECORD_DOMAIN, RECORD_PAYLOAD_TYPE};
pub use schedule::{Action, RelayState, RepublishReason, Schedule, WithdrawReason};
pub use trust::{Trust, MAX_NEGATIVE_TTL, NEGATIVE_TTL};
pub use verify::{Expectation, Freshness, RecordError};
