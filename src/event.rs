//! What the relay tells its owner: events, and the public records and errors of its control API.

use std::time::{Duration, SystemTime};

use libp2p::{swarm::ConnectionId, Multiaddr, PeerId};

use crate::{CloseReason, DenyReason, RelayStats, SessionId, SessionLimits, Status};

/// Options of [`Behaviour::enable_with`](crate::Behaviour::enable_with) (the reference's `enable/1`).
#[derive(Clone, Debug, Default)]
pub struct EnableOptions {
    /// This node's id; if given, it must be the relay's own peer id.
    pub node_id: Option<PeerId>,
    /// Addresses to announce in reservations (and, with the registry, in relay records).
    /// Empty keeps the current ones.
    pub endpoints: Vec<Multiaddr>,
    /// Maximum concurrent sessions; `None` keeps the current value.
    pub capacity: Option<usize>,
}

/// A reservation held on the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReservationInfo {
    /// The peer holding it.
    pub peer: PeerId,
    /// The connection it is bound to.
    pub connection: ConnectionId,
    /// When it expires unless renewed.
    pub expires_at: SystemTime,
}

/// Why a reservation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservationEndReason {
    /// Its TTL passed without renewal.
    Expired,
    /// The peer's connection closed.
    ConnectionClosed,
    /// The relay was drained (see [`Behaviour::disable_and_drain`](crate::Behaviour::disable_and_drain)).
    Drained,
}

impl ReservationEndReason {
    /// The stable snake_case name (metric label), e.g. `"expired"`.
    pub fn label(self) -> &'static str {
        match self {
            ReservationEndReason::Expired => "expired",
            ReservationEndReason::ConnectionClosed => "connection_closed",
            ReservationEndReason::Drained => "drained",
        }
    }
}

/// `close_session` was given an id that is not a live session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no live session with id {0}")]
pub struct UnknownSession(pub SessionId);

/// Events of the relay, for the swarm owner.
#[derive(Debug, Clone)]
pub enum Event {
    /// A reservation was accepted or renewed.
    ReservationAccepted {
        /// The reserving peer.
        peer: PeerId,
        /// Whether it renewed an existing reservation.
        renewed: bool,
        /// When it expires unless renewed.
        expires_at: SystemTime,
    },
    /// A reservation request was refused.
    ReservationDenied {
        /// The requesting peer.
        peer: PeerId,
        /// Why.
        reason: DenyReason,
        /// The status sent.
        status: Status,
    },
    /// A reservation ended.
    ReservationEnded {
        /// The peer that held it.
        peer: PeerId,
        /// Why.
        reason: ReservationEndReason,
    },
    /// A session started relaying.
    SessionOpened {
        /// The session.
        id: SessionId,
        /// Its source.
        source: PeerId,
        /// Its target.
        target: PeerId,
        /// Its limits.
        limits: SessionLimits,
    },
    /// A session request was refused.
    SessionDenied {
        /// The requesting peer.
        source: PeerId,
        /// The requested target.
        target: PeerId,
        /// Why.
        reason: DenyReason,
        /// The status sent.
        status: Status,
    },
    /// A session ended.
    SessionClosed {
        /// The session.
        id: SessionId,
        /// Its source.
        source: PeerId,
        /// Its target.
        target: PeerId,
        /// Why.
        reason: CloseReason,
        /// Bytes relayed from source to target.
        bytes_source_to_target: u64,
        /// Bytes relayed from target to source.
        bytes_target_to_source: u64,
        /// How long it relayed.
        duration: Duration,
    },
    /// A hop request was rejected before any decision: malformed, of the wrong type, silent
    /// until the stream timeout, or over the per-connection stream limit.
    BadRequest {
        /// The peer that sent it.
        peer: PeerId,
        /// What was wrong.
        error: String,
    },
    /// The relay was enabled or disabled.
    StatusChanged {
        /// Whether it is enabled now.
        enabled: bool,
    },
    /// Periodic statistics (see [`ConfigBuilder::stats_interval`](crate::ConfigBuilder::stats_interval)).
    Stats(RelayStats),
}
