//! Sessions and reservations, free of I/O: ids, the table, admission decisions, rate limits and
//! the public records ([`SessionInfo`], [`RelayStats`]) built from them.

mod id;
mod rate_limit;
pub(crate) mod shared;
mod table;

use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, SystemTime},
};

use libp2p::PeerId;

pub use id::{ParseSessionIdError, SessionId};
pub(crate) use table::{Requester, SessionState, SessionTable};

use crate::{protocol::Status, SessionLimits};

/// Why a reservation or a session was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DenyReason {
    /// The relay is disabled.
    Disabled,
    /// The request came over a relayed connection (the spec: relays should not accept those).
    RelayedConnection,
    /// The access policy refuses the peer.
    NotAllowed,
    /// The peer or its IP address sent requests faster than the configured rate.
    RateLimited,
    /// The reservation table is full.
    ReservationsFull,
    /// The peer holds as many reservations as it may.
    PeerReservationsFull,
    /// The target has no reservation.
    NoReservation,
    /// No connection to the target (when reservations are not required).
    TargetUnreachable,
    /// The target is the relay itself or the requester.
    InvalidTarget,
    /// The relay is at its maximum number of sessions.
    SessionsFull,
    /// The source or the target is in as many sessions as a peer may be.
    PeerSessionsFull,
    /// The target refused, or did not answer, the relay's STOP request.
    TargetRefused,
    /// The source's connection or stream went away before its circuit started.
    SourceGone,
}

impl DenyReason {
    /// The status answered to a RESERVE refused for this reason.
    pub fn reserve_status(self) -> Status {
        match self {
            DenyReason::NotAllowed | DenyReason::RelayedConnection => Status::PermissionDenied,
            DenyReason::RateLimited => Status::ResourceLimitExceeded,
            _ => Status::ReservationRefused,
        }
    }

    /// The status answered to a CONNECT refused for this reason.
    pub fn connect_status(self) -> Status {
        match self {
            DenyReason::NotAllowed | DenyReason::RelayedConnection | DenyReason::InvalidTarget => {
                Status::PermissionDenied
            }
            DenyReason::NoReservation => Status::NoReservation,
            DenyReason::TargetUnreachable | DenyReason::TargetRefused | DenyReason::SourceGone => {
                Status::ConnectionFailed
            }
            DenyReason::Disabled
            | DenyReason::RateLimited
            | DenyReason::SessionsFull
            | DenyReason::PeerSessionsFull
            | DenyReason::ReservationsFull
            | DenyReason::PeerReservationsFull => Status::ResourceLimitExceeded,
        }
    }
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DenyReason::Disabled => "relay disabled",
            DenyReason::RelayedConnection => "request over a relayed connection",
            DenyReason::NotAllowed => "refused by access policy",
            DenyReason::RateLimited => "request rate limit",
            DenyReason::ReservationsFull => "reservation table full",
            DenyReason::PeerReservationsFull => "peer reservation limit",
            DenyReason::NoReservation => "target has no reservation",
            DenyReason::TargetUnreachable => "no connection to target",
            DenyReason::InvalidTarget => "target is the relay or the requester",
            DenyReason::SessionsFull => "session limit reached",
            DenyReason::PeerSessionsFull => "peer session limit reached",
            DenyReason::TargetRefused => "target refused or did not answer",
            DenyReason::SourceGone => "source left before the circuit started",
        })
    }
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides closed their direction cleanly.
    Completed,
    /// A side reset its stream or its connection failed.
    StreamError {
        /// Which side's stream failed.
        side: Side,
        /// The error.
        error: String,
    },
    /// The connection carrying the session (source side) closed.
    ConnectionClosed,
    /// The session timeout passed.
    Timeout,
    /// A direction exceeded the data cap.
    DataCapReached,
    /// [`Behaviour::close_session`](crate::Behaviour::close_session).
    ClosedByOwner,
    /// The drain deadline after [`Behaviour::disable_and_drain`](crate::Behaviour::disable_and_drain).
    Drained,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Completed => f.write_str("completed"),
            CloseReason::StreamError { side, error } => write!(f, "{side} stream error: {error}"),
            CloseReason::ConnectionClosed => f.write_str("connection closed"),
            CloseReason::Timeout => f.write_str("session timeout"),
            CloseReason::DataCapReached => f.write_str("data cap reached"),
            CloseReason::ClosedByOwner => f.write_str("closed by owner"),
            CloseReason::Drained => f.write_str("drained"),
        }
    }
}

/// One end of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The peer that asked for the circuit.
    Source,
    /// The peer the circuit goes to.
    Target,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

/// A live session, as listed by [`Behaviour::sessions`](crate::Behaviour::sessions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's id.
    pub id: SessionId,
    /// The peer that asked for the circuit.
    pub source: PeerId,
    /// The peer the circuit goes to.
    pub target: PeerId,
    /// When the session started relaying.
    pub started_at: SystemTime,
    /// How long it has been relaying.
    pub duration: Duration,
    /// Bytes relayed from source to target.
    pub bytes_source_to_target: u64,
    /// Bytes relayed from target to source.
    pub bytes_target_to_source: u64,
    /// The limits applied to it now.
    pub limits: SessionLimits,
    /// Time its copy loop has spent waiting for the bandwidth throttle (both directions).
    pub throttled: Duration,
}

/// The relay's statistics, as returned by [`Behaviour::stats`](crate::Behaviour::stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Whether the relay accepts new reservations and sessions.
    pub enabled: bool,
    /// Maximum concurrent sessions.
    pub max_sessions: usize,
    /// Sessions relaying now.
    pub active_sessions: usize,
    /// Sessions admitted and waiting for the target's answer.
    pub pending_sessions: usize,
    /// Bytes relayed by all sessions, live and ended, both directions.
    pub total_bytes_relayed: u64,
    /// Bytes relayed from sources to targets, live and ended sessions.
    pub total_bytes_source_to_target: u64,
    /// Bytes relayed from targets to sources, live and ended sessions.
    pub total_bytes_target_to_source: u64,
    /// Sessions that started relaying since the relay started.
    pub total_sessions_created: u64,
    /// Reservations held now.
    pub reservations: usize,
    /// Maximum reservations.
    pub max_reservations: usize,
    /// Reservations accepted (new, not renewals) since start.
    pub total_reservations_accepted: u64,
    /// Reservations renewed since start.
    pub total_reservations_renewed: u64,
    /// Refused reservation requests, by reason.
    pub reservations_denied: BTreeMap<DenyReason, u64>,
    /// Refused session requests, by reason.
    pub sessions_denied: BTreeMap<DenyReason, u64>,
    /// Hop requests that were malformed, of the wrong type, timed out or over the per-connection
    /// stream limit.
    pub bad_requests: u64,
}
