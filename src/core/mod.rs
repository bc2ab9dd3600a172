//! The relay core, sans I/O: every decision the relay makes (admission, reservations, session
//! states, close, drain, limits, timers) with the clock passed in. It reads no clock, owns no
//! timer, holds no stream and touches no socket (the model is quinn-proto's `Connection`).
//!
//! The adapter ([`crate::Behaviour`]) feeds it what happened (`on_*` methods), carries out what
//! it asks ([`Command`]s from [`RelayCore::poll`]), hands its [`Event`]s to the swarm owner, and
//! calls [`RelayCore::handle_timeout`] at [`RelayCore::poll_timeout`].

mod log_limit;
#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, HashSet, VecDeque},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use libp2p::{swarm::ConnectionId, PeerId};

use self::log_limit::{LogLimiter, Noise, LOG_WINDOW};
use crate::session::fair_share::{FlowSample, NodeBandwidth};
use crate::session::origin::{self, Block, BlockCounts};
use crate::{
    event::{EnableOptions, Event, ReservationEndReason, ReservationInfo, UnknownSession},
    protocol::{Status, WireLimit},
    session::{
        shared::{CloseRequest, SessionShared},
        Requester, SessionState, SessionTable,
    },
    CloseReason, Config, ConfigError, DenyReason, RelayStats, SessionId, SessionInfo,
    SessionLimits,
};

/// How often reservations are checked for expiry and rate-limit state is pruned.
pub(crate) const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Why an inbound connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnectionRefusal {
    /// Too many connections in their handshake.
    Pending,
    /// The relay holds its maximum of inbound connections.
    Total,
    /// The peer holds its maximum of inbound connections.
    PerPeer,
    /// The connection's network origin holds its cap.
    Origin(Block),
    /// The access policy refuses the connection's network.
    Denied,
}

impl std::fmt::Display for ConnectionRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionRefusal::Pending => {
                f.write_str("too many inbound connections in their handshake")
            }
            ConnectionRefusal::Total => {
                f.write_str("the relay holds its maximum of inbound connections")
            }
            ConnectionRefusal::PerPeer => f.write_str("the peer holds its maximum of connections"),
            ConnectionRefusal::Origin(block) => {
                write!(f, "{block} holds as many connections as one origin may")
            }
            ConnectionRefusal::Denied => {
                f.write_str("the access policy refuses the connection's network")
            }
        }
    }
}

impl std::error::Error for ConnectionRefusal {}

/// What the core asks the adapter to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Ask the target, over `connection`, to accept a circuit from `source` (a STOP stream).
    OpenStop {
        session: SessionId,
        target: PeerId,
        connection: ConnectionId,
        source: PeerId,
        limit: WireLimit,
    },
    /// Refuse the source's CONNECT of `session` with `status`.
    DenyConnect { session: SessionId, status: Status },
    /// The target accepted: answer the source's CONNECT with OK, then relay with `shared`.
    AcceptConnect {
        session: SessionId,
        source: PeerId,
        connection: ConnectionId,
        limit: WireLimit,
        shared: Arc<SessionShared>,
    },
    /// The target accepted a session that has ended meanwhile: drop (reset) its stream.
    DropTarget { session: SessionId },
    /// Ask a relaying session's copy loop to end.
    CloseCircuit {
        shared: Arc<SessionShared>,
        why: CloseRequest,
    },
    /// The reservation `peer` held over `connection` ended.
    ReservationEnded {
        peer: PeerId,
        connection: ConnectionId,
    },
    /// Close the connection: the access policy no longer permits its peer or network.
    CloseConnection {
        peer: PeerId,
        connection: ConnectionId,
    },
}

/// An output of the core.
#[derive(Debug)]
pub(crate) enum Output {
    Command(Command),
    Event(Event),
}

/// An accepted reservation, for the adapter to answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grant {
    /// Whether it renewed a reservation on the same connection.
    pub(crate) renewed: bool,
    /// When it expires unless renewed.
    pub(crate) expires: Instant,
    /// The same instant on the wall clock.
    pub(crate) expires_at: SystemTime,
    /// The limit to announce.
    pub(crate) limit: WireLimit,
}

#[derive(Debug, Clone, Copy)]
struct ConnectionInfo {
    peer: PeerId,
    relayed: bool,
    /// The remote address's IP, if known.
    ip: Option<IpAddr>,
    /// The remote address's IP as an origin: canonical (IPv4-mapped as IPv4), `None` when
    /// unknown or in an exempt network.
    origin: Option<IpAddr>,
    /// Whether it counts against its origin's connection cap (inbound connections do).
    counted: bool,
}

/// The relay's state machine.
#[derive(Debug)]
pub(crate) struct RelayCore {
    local_peer: PeerId,
    config: Config,
    enabled: bool,
    table: SessionTable,
    connections: HashMap<ConnectionId, ConnectionInfo>,
    /// Inbound connections per origin block.
    connection_origins: BlockCounts,
    /// Inbound connections in their handshake.
    pending_inbound: HashSet<ConnectionId>,
    /// Inbound connections established, and per peer (peers with none are forgotten).
    inbound_count: usize,
    inbound_per_peer: HashMap<PeerId, usize>,
    housekeeping_at: Instant,
    stats_at: Option<Instant>,
    drain_at: Option<Instant>,
    /// The node-wide bandwidth capacity's allocator and timer.
    bandwidth: NodeBandwidth,
    /// Time the copy loops of ended sessions spent waiting for their throttles.
    throttled_ended: Duration,
    /// Peer-caused log lines, rate-limited.
    log_limit: LogLimiter,
    out: VecDeque<Output>,
}

impl RelayCore {
    /// A core for the relay `local_peer`, started at `now`.
    pub(crate) fn new(local_peer: PeerId, config: Config, now: Instant) -> Self {
        RelayCore {
            local_peer,
            enabled: config.start_enabled,
            table: SessionTable::new(&config),
            connections: HashMap::new(),
            connection_origins: BlockCounts::default(),
            pending_inbound: HashSet::new(),
            inbound_count: 0,
            inbound_per_peer: HashMap::new(),
            housekeeping_at: now + HOUSEKEEPING_INTERVAL,
            stats_at: config.stats_interval.map(|i| now + i),
            drain_at: None,
            bandwidth: NodeBandwidth::new(now),
            throttled_ended: Duration::ZERO,
            log_limit: LogLimiter::new(now),
            out: VecDeque::new(),
            config,
        }
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The next output, if any.
    pub(crate) fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        [
            Some(self.housekeeping_at),
            self.stats_at,
            self.drain_at,
            self.bandwidth_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs what is due at `now`: reservation expiry, periodic stats, the drain deadline, the
    /// node-wide bandwidth shares.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.bandwidth_deadline().is_some_and(|at| now >= at) {
            self.share_bandwidth(now);
        }
        if now >= self.housekeeping_at {
            self.housekeeping_at = now + HOUSEKEEPING_INTERVAL;
            for (peer, connection) in self.table.expire_reservations(now) {
                tracing::debug!(%peer, "reservation expired");
                self.command(Command::ReservationEnded { peer, connection });
                self.emit(Event::ReservationEnded {
                    peer,
                    reason: ReservationEndReason::Expired,
                });
            }
            self.table.prune(now);
            for (kind, left_out) in self.log_limit.roll(now) {
                tracing::warn!(
                    left_out,
                    window_secs = LOG_WINDOW.as_secs(),
                    "{left_out} more {} not logged in the last window (see the metrics)",
                    kind.describe()
                );
            }
        }
        if let (Some(at), Some(interval)) = (self.stats_at, self.config.stats_interval) {
            if now >= at {
                self.stats_at = Some(now + interval);
                self.emit(Event::Stats(self.stats()));
            }
        }
        if self.drain_at.is_some_and(|at| now >= at) {
            self.drain_at = None;
            self.drain_now();
        }
    }

    // ---- connections ----------------------------------------------------------------------

    /// A connection was established (`relayed`: it runs over a circuit of another relay).
    pub(crate) fn on_connection_established(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        relayed: bool,
        ip: Option<IpAddr>,
    ) {
        let origin = self.origin_of(ip);
        self.connections.insert(
            connection,
            ConnectionInfo {
                peer,
                relayed,
                ip,
                origin,
                counted: false,
            },
        );
    }

    /// An inbound connection starts its handshake: refused when too many already are.
    pub(crate) fn on_pending_inbound(
        &mut self,
        connection: ConnectionId,
    ) -> Result<(), ConnectionRefusal> {
        if self.pending_inbound.len() >= self.config.max_pending_inbound {
            return Err(ConnectionRefusal::Pending);
        }
        self.pending_inbound.insert(connection);
        Ok(())
    }

    /// An inbound connection from `ip` was established. Refused when the relay holds its
    /// maximum of inbound connections, the peer its maximum, or the connection's network origin
    /// its cap; otherwise recorded, counting against those until it closes.
    pub(crate) fn on_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        relayed: bool,
        ip: Option<IpAddr>,
    ) -> Result<(), ConnectionRefusal> {
        self.pending_inbound.remove(&connection);
        // A refused network cannot connect at all; a refused peer can, and hears
        // PERMISSION_DENIED for what it asks (the spec's answer).
        if ip.is_some_and(|ip| !self.config.policy.permits_ip(ip)) {
            return Err(ConnectionRefusal::Denied);
        }
        if self.inbound_count >= self.config.max_inbound_connections {
            return Err(ConnectionRefusal::Total);
        }
        if self.inbound_per_peer.get(&peer).copied().unwrap_or(0)
            >= self.config.max_connections_per_peer
        {
            return Err(ConnectionRefusal::PerPeer);
        }
        let origin = self.origin_of(ip);
        let blocks = || origin.into_iter().flat_map(origin::blocks);
        if let Some(block) = self
            .connection_origins
            .full(blocks(), &self.config.connections_per_origin)
        {
            return Err(ConnectionRefusal::Origin(block));
        }
        self.connection_origins.add(blocks());
        self.inbound_count += 1;
        *self.inbound_per_peer.entry(peer).or_default() += 1;
        self.on_connection_established(connection, peer, relayed, ip);
        if let Some(info) = self.connections.get_mut(&connection) {
            info.counted = true;
        }
        Ok(())
    }

    /// Whether the access policy permits `peer`, connected from `ip`.
    fn permits(&self, peer: &PeerId, ip: Option<IpAddr>) -> bool {
        let policy = &self.config.policy;
        policy.permits(peer) && ip.is_none_or(|ip| policy.permits_ip(ip))
    }

    /// `ip` as an origin: canonical, `None` in an exempt network.
    fn origin_of(&self, ip: Option<IpAddr>) -> Option<IpAddr> {
        ip.map(|ip| ip.to_canonical())
            .filter(|ip| !self.config.is_exempt(*ip))
    }

    /// Forgets a connection, and its counts.
    fn forget_connection(&mut self, connection: ConnectionId) {
        self.pending_inbound.remove(&connection);
        let Some(info) = self.connections.remove(&connection) else {
            return;
        };
        if !info.counted {
            return;
        }
        self.connection_origins
            .remove(info.origin.into_iter().flat_map(origin::blocks));
        self.inbound_count -= 1;
        if let Some(n) = self.inbound_per_peer.get_mut(&info.peer) {
            *n -= 1;
            if *n == 0 {
                self.inbound_per_peer.remove(&info.peer);
            }
        }
    }

    /// How many peers the core keeps connection counts for (for tests of its memory).
    #[cfg(test)]
    pub(crate) fn tracked_peers(&self) -> usize {
        self.inbound_per_peer.len()
    }

    /// A connection the core was told about was refused after all (another behaviour denied it).
    pub(crate) fn on_connection_refused(&mut self, connection: ConnectionId) {
        self.forget_connection(connection);
    }

    /// A connection closed: its reservation ends, and so does every session it carried.
    pub(crate) fn on_connection_closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        now: Instant,
    ) {
        self.forget_connection(connection);
        if self.table.remove_reservation(&peer, connection) {
            tracing::debug!(%peer, "reservation dropped: connection closed");
            self.emit(Event::ReservationEnded {
                peer,
                reason: ReservationEndReason::ConnectionClosed,
            });
        }
        for session in self.table.sessions_on(connection) {
            let Some(entry) = self.table.session(&session) else {
                continue;
            };
            let source_side = entry.source_connection == connection;
            match (entry.state, source_side) {
                // The source's handler, and with it the CONNECT or the copy loop, is gone.
                (SessionState::AwaitingTarget, true)
                | (SessionState::AwaitingSourceAccept { .. }, true) => {
                    self.end_denied(session, DenyReason::SourceGone)
                }
                (SessionState::Relaying { .. } | SessionState::Closing { .. }, true) => {
                    self.end_closed(session, CloseReason::ConnectionClosed, now)
                }
                // The target's connection died while it was being asked.
                (SessionState::AwaitingTarget, false) => {
                    self.end_denied(session, DenyReason::TargetRefused)
                }
                // The target's stream is already with the source's handler. Its copy loop may
                // never see the stream fail (a target that vanished silently leaves it pending
                // when its connection is closed), so it is told to reset the circuit.
                (
                    SessionState::Relaying { .. } | SessionState::AwaitingSourceAccept { .. },
                    false,
                ) => self.close(session, CloseRequest::TargetGone),
                (SessionState::Closing { .. }, false) => {}
            }
        }
    }

    fn requester(&self, peer: PeerId, connection: ConnectionId) -> Requester {
        let info = self.connections.get(&connection);
        Requester {
            peer,
            connection,
            relayed: info.is_some_and(|i| i.relayed),
            ip: info.and_then(|i| i.origin),
        }
    }

    /// A direct (not relayed) connection to `peer`.
    fn direct_connection(&self, peer: &PeerId) -> Option<ConnectionId> {
        self.connections
            .iter()
            .find(|(_, i)| i.peer == *peer && !i.relayed)
            .map(|(c, _)| *c)
    }

    // ---- hop requests ---------------------------------------------------------------------

    /// A RESERVE from `peer` over `connection`. On `Ok` the adapter answers with the grant; on
    /// `Err` with the reason's [`reserve_status`](DenyReason::reserve_status).
    pub(crate) fn on_reserve(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        now: Instant,
        wall: SystemTime,
    ) -> Result<Grant, DenyReason> {
        let who = self.requester(peer, connection);
        match self
            .table
            .admit_reservation(&self.config, self.enabled, &who, now)
        {
            Ok(renewed) => {
                let ttl = self.config.reservation_ttl;
                let grant = Grant {
                    renewed,
                    expires: now + ttl,
                    expires_at: wall + ttl,
                    limit: self.config.limits_for(&peer).wire(),
                };
                tracing::debug!(%peer, renewed, "reservation accepted");
                self.emit(Event::ReservationAccepted {
                    peer,
                    renewed,
                    expires_at: grant.expires_at,
                });
                Ok(grant)
            }
            Err(reason) => {
                let status = reason.reserve_status();
                self.log_denial(Noise::ReservationRefused, &peer, None, reason, status);
                self.emit(Event::ReservationDenied {
                    peer,
                    reason,
                    status,
                });
                Err(reason)
            }
        }
    }

    /// A CONNECT from `source` over `connection` to `target`. On `Ok` the session is admitted
    /// and the target is asked ([`Command::OpenStop`]); the adapter keeps the request until a
    /// [`Command::AcceptConnect`] or [`Command::DenyConnect`] for the session. On `Err` the
    /// adapter answers with the reason's [`connect_status`](DenyReason::connect_status).
    pub(crate) fn on_connect(
        &mut self,
        source: PeerId,
        connection: ConnectionId,
        target: PeerId,
        now: Instant,
    ) -> Result<SessionId, DenyReason> {
        let who = self.requester(source, connection);
        let target_connection = self.table.reservation_connection(&target).or_else(|| {
            (!self.config.require_reservation)
                .then(|| self.direct_connection(&target))
                .flatten()
        });
        let target_at =
            target_connection.map(|c| (c, self.connections.get(&c).and_then(|i| i.origin)));
        match self.table.admit_session(
            &self.config,
            self.enabled,
            &who,
            self.local_peer,
            target,
            target_at,
            now,
        ) {
            Ok((session, shared)) => {
                let connection = target_connection.expect("admitted with a connection");
                tracing::debug!(%session, %source, %target, "session admitted, asking target");
                self.command(Command::OpenStop {
                    session,
                    target,
                    connection,
                    source,
                    limit: shared.limits().wire(),
                });
                Ok(session)
            }
            Err(reason) => {
                let status = reason.connect_status();
                self.log_denial(
                    Noise::SessionRefused,
                    &source,
                    Some(&target),
                    reason,
                    status,
                );
                self.emit(Event::SessionDenied {
                    source,
                    target,
                    reason,
                    status,
                });
                Err(reason)
            }
        }
    }

    /// A hop request rejected before any decision (malformed, silent, too many).
    pub(crate) fn on_bad_request(&mut self, peer: PeerId, error: String) {
        if self.log_limit.allow(Noise::BadRequest) {
            tracing::info!(%peer, %error, "bad hop request");
        }
        self.table.record_bad_request();
        self.emit(Event::BadRequest { peer, error });
    }

    // ---- session lifecycle ----------------------------------------------------------------

    /// The target accepted the circuit. The adapter keeps the target's stream until
    /// [`Command::AcceptConnect`] (hand it to the source's handler) or [`Command::DropTarget`].
    pub(crate) fn on_stop_accepted(&mut self, session: SessionId) {
        let Some(entry) = self.table.session_mut(&session) else {
            tracing::debug!(%session, "target accepted a session that has ended");
            self.command(Command::DropTarget { session });
            return;
        };
        if entry.state != SessionState::AwaitingTarget {
            tracing::warn!(%session, state = ?entry.state, "unexpected STOP answer");
            self.command(Command::DropTarget { session });
            return;
        }
        entry.state = SessionState::AwaitingSourceAccept { close: None };
        let command = Command::AcceptConnect {
            session,
            source: entry.source,
            connection: entry.source_connection,
            limit: entry.shared.limits().wire(),
            shared: entry.shared.clone(),
        };
        self.command(command);
        self.bandwidth_newcomer(session);
    }

    /// The target refused the circuit or could not be asked.
    pub(crate) fn on_stop_failed(&mut self, session: SessionId, error: &str) {
        match self.table.session(&session).map(|e| e.state) {
            Some(SessionState::AwaitingTarget) => {
                tracing::info!(%session, %error, "target did not accept the circuit");
                self.end_denied(session, DenyReason::TargetRefused);
            }
            Some(state) => tracing::warn!(%session, ?state, "unexpected STOP failure"),
            None => tracing::debug!(%session, "STOP failed for a session that has ended"),
        }
    }

    /// The source got its OK and the copy loop runs.
    pub(crate) fn on_circuit_started(
        &mut self,
        session: SessionId,
        now: Instant,
        wall: SystemTime,
    ) {
        let Some(entry) = self.table.session_mut(&session) else {
            tracing::warn!(%session, "a circuit started for an unknown session");
            return;
        };
        let SessionState::AwaitingSourceAccept { close } = entry.state else {
            tracing::warn!(%session, state = ?entry.state, "unexpected circuit start");
            return;
        };
        entry.state = match close {
            None => SessionState::Relaying {
                since: now,
                since_wall: wall,
            },
            Some(why) => SessionState::Closing {
                since: now,
                since_wall: wall,
                why,
            },
        };
        let (source, target, shared) = (entry.source, entry.target, entry.shared.clone());
        self.table.count_created();
        let limits = shared.limits();
        tracing::info!(%session, %source, %target, ?limits, "session opened");
        self.emit(Event::SessionOpened {
            id: session,
            source,
            target,
            limits,
        });
        if let Some(why) = close {
            self.command(Command::CloseCircuit { shared, why });
        }
    }

    /// The copy loop ended (or the OK could not be written to the source).
    pub(crate) fn on_circuit_ended(
        &mut self,
        session: SessionId,
        reason: CloseReason,
        now: Instant,
    ) {
        match self.table.session(&session).map(|e| e.state) {
            Some(SessionState::AwaitingSourceAccept { .. }) => {
                tracing::info!(%session, %reason, "the circuit could not start");
                self.end_denied(session, DenyReason::SourceGone);
            }
            Some(SessionState::Relaying { .. } | SessionState::Closing { .. }) => {
                self.end_closed(session, reason, now)
            }
            Some(SessionState::AwaitingTarget) => {
                tracing::warn!(%session, "a circuit ended before its target answered")
            }
            None => tracing::debug!(%session, %reason, "an ended session reported its end"),
        }
    }

    /// Ends a session that never relayed: frees its slot, counts and announces the refusal, and
    /// refuses the source's CONNECT if it still waits for an answer (the adapter knows whether it
    /// does: it holds the request until then).
    fn end_denied(&mut self, session: SessionId, reason: DenyReason) {
        let Some(entry) = self.table.remove_session(&session) else {
            return;
        };
        self.table.record_session_denied(reason);
        let status = reason.connect_status();
        self.command(Command::DenyConnect { session, status });
        self.log_denial(
            Noise::SessionRefused,
            &entry.source,
            Some(&entry.target),
            reason,
            status,
        );
        self.emit(Event::SessionDenied {
            source: entry.source,
            target: entry.target,
            reason,
            status,
        });
    }

    /// Ends a session that relayed: frees its slot and announces it with its bytes.
    fn end_closed(&mut self, session: SessionId, reason: CloseReason, now: Instant) {
        let Some(entry) = self.table.remove_session(&session) else {
            return;
        };
        let Some((since, _)) = entry.state.relaying_since() else {
            return;
        };
        let (up, down) = entry.shared.bytes();
        let duration = now.saturating_duration_since(since);
        self.throttled_ended += entry.shared.throttled();
        tracing::info!(
            %session, source = %entry.source, target = %entry.target, %reason,
            bytes_source_to_target = up, bytes_target_to_source = down,
            duration_ms = duration.as_millis() as u64, "session closed"
        );
        self.emit(Event::SessionClosed {
            id: session,
            source: entry.source,
            target: entry.target,
            reason,
            bytes_source_to_target: up,
            bytes_target_to_source: down,
            duration,
        });
    }

    /// Asks a session to end for `why`, whatever its state (see [`SessionState`]).
    fn close(&mut self, session: SessionId, why: CloseRequest) {
        let Some(entry) = self.table.session_mut(&session) else {
            return;
        };
        match entry.state {
            SessionState::AwaitingTarget => {
                let reason = match why {
                    CloseRequest::Owner | CloseRequest::TargetGone => DenyReason::TargetRefused,
                    CloseRequest::Drained => DenyReason::Disabled,
                };
                self.end_denied(session, reason);
            }
            SessionState::AwaitingSourceAccept { ref mut close } => {
                close.get_or_insert(why);
            }
            SessionState::Relaying { since, since_wall } => {
                entry.state = SessionState::Closing {
                    since,
                    since_wall,
                    why,
                };
                let shared = entry.shared.clone();
                self.command(Command::CloseCircuit { shared, why });
            }
            SessionState::Closing { .. } => {}
        }
    }

    // ---- control --------------------------------------------------------------------------

    /// Ends one session (reference: `close_relay/1`).
    pub(crate) fn close_session(&mut self, id: SessionId) -> Result<(), UnknownSession> {
        if self.table.session(&id).is_none() {
            return Err(UnknownSession(id));
        }
        self.close(id, CloseRequest::Owner);
        Ok(())
    }

    /// Accept new reservations and sessions; cancels a drain.
    pub(crate) fn enable(&mut self) {
        self.drain_at = None;
        self.set_enabled(true);
    }

    /// [`enable`](Self::enable) with options (reference: `enable/1`).
    pub(crate) fn enable_with(&mut self, options: EnableOptions) -> Result<(), ConfigError> {
        if let Some(given) = options.node_id {
            if given != self.local_peer {
                return Err(ConfigError::WrongNodeId {
                    given: given.to_string(),
                    local: self.local_peer.to_string(),
                });
            }
        }
        if options.capacity == Some(0) {
            return Err(ConfigError::Zero("capacity"));
        }
        if let Some(capacity) = options.capacity {
            self.config.max_sessions = capacity;
        }
        if !options.endpoints.is_empty() {
            self.config.advertised_addrs = options.endpoints;
        }
        self.enable();
        Ok(())
    }

    /// Refuse new reservations and sessions; live ones continue.
    pub(crate) fn disable(&mut self) {
        self.set_enabled(false);
    }

    /// Disable, and at `now + grace` end every session and reservation.
    pub(crate) fn disable_and_drain(&mut self, grace: Duration, now: Instant) {
        self.disable();
        self.drain_at = Some(now + grace);
        if grace.is_zero() {
            self.handle_timeout(now);
        }
    }

    /// Whether the relay accepts new reservations and sessions.
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn set_enabled(&mut self, enabled: bool) {
        if self.enabled != enabled {
            self.enabled = enabled;
            tracing::info!(enabled, "relay status changed");
            self.emit(Event::StatusChanged { enabled });
        }
    }

    fn drain_now(&mut self) {
        let ids: Vec<SessionId> = self.table.session_ids().map(|(id, _)| *id).collect();
        tracing::info!(
            sessions = ids.len(),
            "drain deadline passed: closing sessions"
        );
        for id in ids {
            self.close(id, CloseRequest::Drained);
        }
        for (peer, connection) in self.table.clear_reservations() {
            self.command(Command::ReservationEnded { peer, connection });
            self.emit(Event::ReservationEnded {
                peer,
                reason: ReservationEndReason::Drained,
            });
        }
    }

    /// Applies a new configuration (validated first): live sessions get the new limits, and
    /// the connections of peers and networks the policy no longer permits are closed.
    fn reconfigure(&mut self, change: impl FnOnce(&mut Config)) -> Result<(), ConfigError> {
        let mut config = self.config.clone();
        change(&mut config);
        config.validate()?;
        self.config = config;
        self.table.reconfigure(&self.config);
        self.disconnect_unpermitted();
        Ok(())
    }

    /// Replaces the whole configuration (validated first), as [`reconfigure`](Self::reconfigure)
    /// applies it.
    pub(crate) fn set_config(&mut self, config: Config) -> Result<(), ConfigError> {
        self.reconfigure(|c| *c = config)
    }

    /// Asks the adapter to close every connection the access policy does not permit.
    fn disconnect_unpermitted(&mut self) {
        let refused: Vec<(ConnectionId, PeerId)> = self
            .connections
            .iter()
            .filter(|(_, info)| !self.permits(&info.peer, info.ip))
            .map(|(connection, info)| (*connection, info.peer))
            .collect();
        for (connection, peer) in refused {
            tracing::info!(%peer, ?connection, "closing a connection the access policy refuses");
            self.command(Command::CloseConnection { peer, connection });
        }
    }

    /// Replaces the default session limits.
    pub(crate) fn set_limits(&mut self, limits: SessionLimits) -> Result<(), ConfigError> {
        self.reconfigure(|c| c.limits = limits)
    }

    /// Sets or removes a peer's own limits.
    pub(crate) fn set_peer_limits(
        &mut self,
        peer: PeerId,
        limits: Option<SessionLimits>,
    ) -> Result<(), ConfigError> {
        self.reconfigure(|c| {
            match limits {
                Some(l) => c.policy.overrides.insert(peer, l),
                None => c.policy.overrides.remove(&peer),
            };
        })
    }

    /// Changes the maximum number of concurrent sessions.
    pub(crate) fn set_max_sessions(&mut self, max_sessions: usize) -> Result<(), ConfigError> {
        if max_sessions == 0 {
            return Err(ConfigError::Zero("max_sessions"));
        }
        self.config.max_sessions = max_sessions;
        Ok(())
    }

    /// Adds `peer` to the deny list (closing its connections) or removes it.
    pub(crate) fn set_denied(&mut self, peer: PeerId, denied: bool) {
        let _ = self.reconfigure(|c| {
            if denied {
                c.policy.deny.insert(peer);
            } else {
                c.policy.deny.remove(&peer);
            }
        });
    }

    // ---- node-wide bandwidth --------------------------------------------------------------

    /// Sets (or with `None` removes) the node-wide bandwidth capacity; the shares follow at the
    /// next [`handle_timeout`](Self::handle_timeout), due at once.
    pub(crate) fn set_total_bandwidth(
        &mut self,
        bytes_per_second: Option<u64>,
    ) -> Result<(), ConfigError> {
        if bytes_per_second == Some(0) {
            return Err(ConfigError::Zero("total_bandwidth"));
        }
        self.config.total_bandwidth = bytes_per_second;
        Ok(())
    }

    /// When the node-wide shares are next recomputed: every interval while a capacity is set
    /// and sessions relay, at once after the capacity changed, never otherwise.
    fn bandwidth_deadline(&self) -> Option<Instant> {
        self.bandwidth.deadline(self.config.total_bandwidth)
    }

    /// Recomputes each relaying direction's share of the node-wide capacity (read from the
    /// configuration now, so a change applies) and hands it to its copy loop; with no capacity,
    /// lifts the shares.
    fn share_bandwidth(&mut self, now: Instant) {
        let capacity = self.config.total_bandwidth;
        let sides = [crate::Side::Source, crate::Side::Target];
        // Sessions whose copy loop runs or is about to (past their target's answer).
        let started = self
            .table
            .session_ids()
            .filter(|(_, e)| e.state != SessionState::AwaitingTarget);
        let Some(capacity) = capacity else {
            for (_, entry) in started {
                for side in sides {
                    entry.shared.set_node_share(side, None);
                }
            }
            self.bandwidth.fair.clear();
            self.bandwidth.ran(now, None, 0);
            return;
        };
        let samples = started.flat_map(|(id, entry)| {
            let limit = entry.shared.bandwidth();
            sides.map(|side| FlowSample {
                key: (*id, side),
                moved: entry.shared.moved(side),
                pauses: entry.shared.pauses(side),
                limit,
            })
        });
        let shares = self.bandwidth.fair.allocate(now, capacity, samples);
        for &((id, side), share) in shares {
            if let Some(entry) = self.table.session(&id) {
                entry.shared.set_node_share(side, Some(share));
            }
        }
        let flows = shares.len();
        self.bandwidth.ran(now, Some(capacity), flows);
    }

    /// `session` is about to relay: with a node-wide capacity, its directions get an equal
    /// split of it before its copy loop starts, and the shares are recomputed soon with it.
    fn bandwidth_newcomer(&mut self, session: SessionId) {
        let Some(capacity) = self.config.total_bandwidth else {
            return;
        };
        let Some(entry) = self.table.session(&session) else {
            return;
        };
        let share = self.bandwidth.fair.newcomer_share(capacity, 2);
        for side in [crate::Side::Source, crate::Side::Target] {
            entry.shared.set_node_share(side, Some(share));
        }
        self.bandwidth.joined();
    }

    /// The node-wide shares of a session's directions (source to target, target to source).
    #[cfg(test)]
    pub(crate) fn node_shares(&self, id: &SessionId) -> Option<(Option<u64>, Option<u64>)> {
        let shared = &self.table.session(id)?.shared;
        Some((
            shared.node_share(crate::Side::Source),
            shared.node_share(crate::Side::Target),
        ))
    }

    /// When the node-wide shares are next recomputed (for tests of the timer).
    #[cfg(test)]
    pub(crate) fn bandwidth_timer(&self) -> Option<Instant> {
        self.bandwidth_deadline()
    }

    // ---- queries --------------------------------------------------------------------------

    /// The relaying sessions, as of `now`.
    pub(crate) fn sessions(&self, now: Instant) -> Vec<SessionInfo> {
        self.table.infos(now)
    }

    /// The statistics.
    pub(crate) fn stats(&self) -> RelayStats {
        self.table.stats(&self.config, self.enabled)
    }

    /// Time all sessions, live and ended, spent waiting for their throttles.
    pub(crate) fn total_throttled(&self, now: Instant) -> Duration {
        self.throttled_ended
            + self
                .sessions(now)
                .iter()
                .map(|s| s.throttled)
                .sum::<Duration>()
    }

    /// The reservations held, with their expiry on the wall clock.
    pub(crate) fn reservations(&self, now: Instant, wall: SystemTime) -> Vec<ReservationInfo> {
        let mut list: Vec<_> = self
            .table
            .reservations()
            .map(|(peer, connection, expires)| ReservationInfo {
                peer,
                connection,
                expires_at: wall + expires.saturating_duration_since(now),
            })
            .collect();
        list.sort_by_key(|r| r.expires_at);
        list
    }

    /// The state of a session, if it is known.
    #[cfg(test)]
    pub(crate) fn state(&self, id: &SessionId) -> Option<SessionState> {
        self.table.session(id).map(|e| e.state)
    }

    /// Every known session with its state.
    #[cfg(test)]
    pub(crate) fn check_origin_counts(&self) -> Result<(), String> {
        self.table.check_origin_counts(&self.config)
    }

    #[cfg(test)]
    pub(crate) fn states(&self) -> Vec<(SessionId, SessionState)> {
        self.table
            .session_ids()
            .map(|(id, e)| (*id, e.state))
            .collect()
    }

    /// A session's shared counters (for tests that play the copy loop).
    #[cfg(test)]
    pub(crate) fn shared(&self, id: &SessionId) -> Option<Arc<SessionShared>> {
        self.table.session(id).map(|e| e.shared.clone())
    }

    fn command(&mut self, command: Command) {
        self.out.push_back(Output::Command(command));
    }

    fn emit(&mut self, event: Event) {
        self.out.push_back(Output::Event(event));
    }
}

impl RelayCore {
    /// Logs a refusal, within the log budget of its kind.
    fn log_denial(
        &mut self,
        kind: Noise,
        peer: &PeerId,
        target: Option<&PeerId>,
        reason: DenyReason,
        status: Status,
    ) {
        if self.log_limit.allow(kind) {
            tracing::info!(%peer, ?target, %reason, %status, "{} refused", match kind {
                Noise::ReservationRefused => "reservation",
                _ => "session",
            });
        }
    }
}
