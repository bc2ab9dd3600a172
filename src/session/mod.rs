//! Sessions and reservations, free of I/O: ids, the table, admission decisions, rate limits and
//! the public records ([`SessionInfo`], [`RelayStats`]) built from them.

pub(crate) mod fair_share;
mod id;
pub(crate) mod origin;
mod rate_limit;
mod reason;
pub(crate) mod shared;
mod table;

use std::{
    collections::BTreeMap,
    fmt,
    time::{Duration, SystemTime},
};

use libp2p::PeerId;

pub use id::{ParseSessionIdError, SessionId};
pub use reason::{CloseReason, DenyReason};
pub(crate) use table::{Requester, SessionState, SessionTable};

use crate::SessionLimits;

/// One end of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
