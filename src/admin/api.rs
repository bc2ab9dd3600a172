//! The admin API's JSON bodies, shared by the server and [`AdminClient`](super::AdminClient).
//! Peer ids, multiaddrs and session ids are strings; durations are seconds; times are Unix
//! seconds; reasons are the snake_case labels of [`crate::CloseReason`] and [`crate::DenyReason`].

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use crate::{RelayStats, ReservationInfo, SessionInfo, SessionLimits};

/// `GET /stats`, and the answer of `POST /enable` and `POST /disable`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatsView {
    /// The relay's peer id.
    pub peer_id: String,
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
    /// Bytes relayed from sources to targets.
    pub total_bytes_source_to_target: u64,
    /// Bytes relayed from targets to sources.
    pub total_bytes_target_to_source: u64,
    /// Sessions that started relaying since the relay started.
    pub total_sessions_created: u64,
    /// Reservations held now.
    pub reservations: usize,
    /// Maximum reservations.
    pub max_reservations: usize,
    /// New reservations accepted since start.
    pub total_reservations_accepted: u64,
    /// Reservations renewed since start.
    pub total_reservations_renewed: u64,
    /// Refused reservation requests, by reason.
    pub reservations_denied: BTreeMap<String, u64>,
    /// Refused session requests, by reason.
    pub sessions_denied: BTreeMap<String, u64>,
    /// Malformed or timed-out hop requests.
    pub bad_requests: u64,
    /// Time all sessions spent waiting for their bandwidth throttle, seconds.
    pub throttled_secs: f64,
}

impl StatsView {
    /// The view of `stats` of the relay `peer_id`, with `throttled` in total.
    pub fn new(peer_id: String, stats: &RelayStats, throttled: Duration) -> Self {
        let by_reason = |m: &BTreeMap<crate::DenyReason, u64>| {
            m.iter().map(|(r, n)| (r.label().to_owned(), *n)).collect()
        };
        StatsView {
            peer_id,
            enabled: stats.enabled,
            max_sessions: stats.max_sessions,
            active_sessions: stats.active_sessions,
            pending_sessions: stats.pending_sessions,
            total_bytes_relayed: stats.total_bytes_relayed,
            total_bytes_source_to_target: stats.total_bytes_source_to_target,
            total_bytes_target_to_source: stats.total_bytes_target_to_source,
            total_sessions_created: stats.total_sessions_created,
            reservations: stats.reservations,
            max_reservations: stats.max_reservations,
            total_reservations_accepted: stats.total_reservations_accepted,
            total_reservations_renewed: stats.total_reservations_renewed,
            reservations_denied: by_reason(&stats.reservations_denied),
            sessions_denied: by_reason(&stats.sessions_denied),
            bad_requests: stats.bad_requests,
            throttled_secs: throttled.as_secs_f64(),
        }
    }
}

/// A session's limits; `null` = unlimited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsView {
    /// Bytes per second and direction.
    pub bandwidth: Option<u64>,
    /// Maximum duration, seconds.
    pub duration_secs: Option<u64>,
    /// Maximum bytes per direction.
    pub data: Option<u64>,
}

impl From<SessionLimits> for LimitsView {
    fn from(l: SessionLimits) -> Self {
        LimitsView {
            bandwidth: l.bandwidth,
            duration_secs: l.duration.map(|d| d.as_secs()),
            data: l.data,
        }
    }
}

/// One live session, in `GET /sessions` and `GET /sessions/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    /// The session id (16 hex digits), as `DELETE /sessions/{id}` takes it.
    pub id: String,
    /// The peer that asked for the circuit.
    pub source: String,
    /// The peer the circuit goes to.
    pub target: String,
    /// When it started relaying, Unix seconds.
    pub started_at: u64,
    /// How long it has been relaying, seconds.
    pub duration_secs: f64,
    /// Bytes relayed from source to target.
    pub bytes_source_to_target: u64,
    /// Bytes relayed from target to source.
    pub bytes_target_to_source: u64,
    /// Its limits now.
    pub limits: LimitsView,
    /// Time it spent waiting for its bandwidth throttle, seconds.
    pub throttled_secs: f64,
}

impl From<&SessionInfo> for SessionView {
    fn from(s: &SessionInfo) -> Self {
        SessionView {
            id: s.id.to_string(),
            source: s.source.to_string(),
            target: s.target.to_string(),
            started_at: unix_secs(s.started_at),
            duration_secs: s.duration.as_secs_f64(),
            bytes_source_to_target: s.bytes_source_to_target,
            bytes_target_to_source: s.bytes_target_to_source,
            limits: s.limits.into(),
            throttled_secs: s.throttled.as_secs_f64(),
        }
    }
}

/// One reservation, in `GET /reservations`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationView {
    /// The peer holding it.
    pub peer: String,
    /// When it expires unless renewed, Unix seconds.
    pub expires_at: u64,
}

impl From<&ReservationInfo> for ReservationView {
    fn from(r: &ReservationInfo) -> Self {
        ReservationView {
            peer: r.peer.to_string(),
            expires_at: unix_secs(r.expires_at),
        }
    }
}

/// `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthView {
    /// Always `"ok"`: the node's event loop answered.
    pub status: String,
    /// Whether the relay accepts new reservations and sessions.
    pub enabled: bool,
}

/// `GET /registry`: the relay registry as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryView {
    /// Whether the node runs the registry (`registry` setting).
    pub running: bool,
    /// Whether this relay's record is published now.
    pub registered: bool,
    /// The addresses the published record carries.
    pub addrs: Vec<String>,
    /// Relays this node has found (their peer ids).
    pub known_relays: Vec<String>,
    /// The shard this relay registers in.
    #[serde(default)]
    pub shard: Option<u16>,
    /// When its record last reached the DHT, Unix seconds.
    #[serde(default)]
    pub last_published: Option<u64>,
    /// Record fetches it answered with its record (other nodes' discoveries).
    #[serde(default)]
    pub records_served: u64,
    /// Discoveries this node ran.
    #[serde(default)]
    pub discoveries: u64,
}

/// The answer of `DELETE /sessions/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedView {
    /// The session asked to close. It ends as soon as its connection task runs.
    pub closed: String,
}

/// The body of `POST /enable` (every field optional; an empty body is `{}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnableRequest {
    /// This node's peer id; refused if it is another peer's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// Addresses to announce in reservations (multiaddrs); empty keeps the current ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Maximum concurrent sessions; absent keeps the current value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<usize>,
}

/// The body of `POST /disable` (an empty body is `{}`: disable without draining).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisableRequest {
    /// If given, live sessions are closed and reservations dropped after this many seconds
    /// (0 = at once); otherwise they keep running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_secs: Option<f64>,
}

/// The body of every error answer (4xx, 5xx).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    /// What was wrong.
    pub error: String,
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
