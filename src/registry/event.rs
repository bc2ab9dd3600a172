//! The registry's events, ids and errors.

use std::{fmt, time::Duration};

use libp2p::{kad, swarm::ConnectionId, Multiaddr, PeerId};

use super::{
    rank::RelayCandidate,
    record::RelayRecord,
    schedule::{RepublishReason, WithdrawReason},
    verify::RecordError,
};
use crate::Status;

/// Identifies one [`discover_relays`](super::Behaviour::discover_relays) call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiscoveryId(pub(crate) u64);

/// Identifies one [`request_relay`](super::Behaviour::request_relay) call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub(crate) u64);

/// A relayed connection opened by [`request_relay`](super::Behaviour::request_relay); close it
/// with [`close_relay_session`](super::Behaviour::close_relay_session).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RelaySessionId(pub ConnectionId);

impl fmt::Display for RelaySessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "relay-session-{}", self.0)
    }
}

/// What one discovery cost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiscoveryStats {
    /// Shard keys read (one `GET_PROVIDERS` lookup each).
    pub shards_read: usize,
    /// Kademlia lookups started: shard lookups plus record lookups.
    pub dht_lookups: usize,
    /// Kademlia requests sent by those lookups (as kad counts them).
    pub dht_requests: u32,
    /// Records fetched from relays or looked up in the DHT.
    pub record_reads: usize,
    /// Records refused (forged, replayed, expired, malformed) or reads that failed.
    pub rejected: usize,
    /// Providers not read: they failed a read in the last
    /// [`NEGATIVE_TTL`](super::NEGATIVE_TTL) (negative cache).
    pub skipped_bad: usize,
    /// Providers of a shard key they do not belong to (a relay provides only its own shard):
    /// ignored.
    pub wrong_shard: usize,
    /// Shard levels it descended because the keys it read were full (see
    /// [`shard`](super::shard)).
    pub levels_descended: usize,
    /// Whether the discovery's deadline passed before every read finished (the result holds
    /// what was read by then).
    pub timed_out: bool,
    /// Time from the call to the result.
    pub elapsed: Duration,
}

/// Where a refused record came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectedAt {
    /// A record this node read (discovery).
    Reading,
    /// A record another peer asked this node to store (kad record filtering).
    Storing,
}

/// One relay's failure to reserve or to connect.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("relay {relay}: {}", status.map(|s| s.to_string()).unwrap_or_else(|| error.clone()))]
pub struct RelayFailure {
    /// The relay.
    pub relay: PeerId,
    /// The spec status it answered, if it answered one.
    pub status: Option<Status>,
    /// The error as reported.
    pub error: String,
}

/// Why [`request_relay`](super::Behaviour::request_relay) failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No relay address of the target was found (it holds no reservation, or it is unknown).
    #[error("no relay of {0} found")]
    TargetNotFound(PeerId),
    /// Every relay tried failed.
    #[error("every relay failed: {}", .0.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; "))]
    RelaysFailed(Vec<RelayFailure>),
}

/// Events of the registry.
#[derive(Debug)]
pub enum Event {
    /// The relay registered: it became enabled and capable, and its shard-key announcement
    /// reached at least one DHT peer (until then it retries every few seconds, and logs a
    /// warning once).
    Registered {
        /// The record announced.
        record: RelayRecord,
    },
    /// The relay published a new record.
    Republished {
        /// The record.
        record: RelayRecord,
        /// Why.
        reason: RepublishReason,
    },
    /// The relay withdrew: it published a disabled record (served to fetches and, in
    /// records mode, put in the DHT) and stopped providing its shard key.
    Withdrawn {
        /// Why.
        reason: WithdrawReason,
        /// The withdrawal record.
        record: RelayRecord,
    },
    /// A discovery finished.
    RelaysDiscovered {
        /// The call.
        id: DiscoveryId,
        /// Verified, enabled relays, best first.
        relays: Vec<RelayCandidate>,
        /// What it cost.
        stats: DiscoveryStats,
    },
    /// A record was refused.
    RecordRejected {
        /// Reading or storing side.
        at: RejectedAt,
        /// The peer that sent it.
        from: PeerId,
        /// Why.
        error: RecordError,
    },
    /// A reservation was accepted.
    ReservationAccepted {
        /// The relay.
        relay: PeerId,
        /// The relayed address now reachable.
        addr: Multiaddr,
    },
    /// A reservation failed or ended.
    ReservationLost {
        /// What happened.
        failure: RelayFailure,
    },
    /// A reservation replaced one that was lost.
    ReservationMoved {
        /// The relay lost.
        from: PeerId,
        /// The relay reserved on instead.
        to: PeerId,
    },
    /// A relayed connection asked for with `request_relay` is open.
    RelaySessionOpened {
        /// The call.
        request: RequestId,
        /// The session, to close it.
        session: RelaySessionId,
        /// The relay it goes through.
        relay: PeerId,
        /// The target.
        target: PeerId,
    },
    /// `request_relay` failed.
    RelaySessionFailed {
        /// The call.
        request: RequestId,
        /// The target.
        target: PeerId,
        /// Why, naming each relay tried and its answer.
        error: SessionError,
    },
    /// A relayed connection opened with `request_relay` closed.
    RelaySessionClosed {
        /// The session.
        session: RelaySessionId,
        /// The target.
        target: PeerId,
    },
    /// An event of the shared Kademlia behaviour about the application's own use of it
    /// (its queries, routing updates, and inbound requests outside the registry).
    Kad(Box<kad::Event>),
}
