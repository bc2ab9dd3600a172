//! The relay's [`NetworkBehaviour`]: swarm-wide state, the public control API and events.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p::{
    core::{multiaddr::Protocol, transport::PortUse, Endpoint},
    identity::Keypair,
    swarm::{
        behaviour::{ConnectionClosed, DialFailure, ListenFailure},
        ConnectionDenied, ConnectionId, ExternalAddresses, FromSwarm, ListenAddresses,
        NetworkBehaviour, NotifyHandler, Stream, THandler, THandlerInEvent, THandlerOutEvent,
        ToSwarm,
    },
    Multiaddr, PeerId,
};

use crate::{
    handler::{self, Handler, HandlerConfig, In},
    protocol::{inbound_hop::ConnectRequest, proto, voucher::Voucher, Status},
    session::{shared::CloseRequest, Requester, SessionTable},
    CloseReason, Config, ConfigError, DenyReason, RelayStats, SessionId, SessionInfo,
    SessionLimits,
};

/// How often reservations are checked for expiry and rate-limit state is pruned.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_secs(1);

/// Options of [`Behaviour::enable_with`] (the reference's `enable/1`).
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
    /// The relay was drained (see [`Behaviour::disable_and_drain`]).
    Drained,
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

#[derive(Debug, Clone, Copy)]
struct ConnectionInfo {
    peer: PeerId,
    relayed: bool,
    ip: Option<IpAddr>,
}

/// The relay. Compose it into a swarm's behaviour; control it through its methods.
pub struct Behaviour {
    local_peer: PeerId,
    keypair: Keypair,
    config: Config,
    enabled: bool,
    table: SessionTable,
    connections: HashMap<ConnectionId, ConnectionInfo>,
    /// CONNECT requests waiting for the target's answer, by session.
    pending_connects: HashMap<SessionId, ConnectRequest<Stream>>,
    external_addresses: ExternalAddresses,
    listen_addresses: ListenAddresses,
    queued: VecDeque<ToSwarm<Event, In>>,
    housekeeping: Delay,
    stats_timer: Option<Delay>,
    drain_deadline: Option<Delay>,
    /// Time the copy loops of ended sessions spent waiting for their throttles.
    throttled_ended: Duration,
}

impl Behaviour {
    /// A relay signing its vouchers with `keypair` (the swarm's identity).
    pub fn new(keypair: Keypair, config: Config) -> Self {
        Behaviour {
            local_peer: keypair.public().to_peer_id(),
            keypair,
            enabled: config.start_enabled,
            table: SessionTable::new(&config),
            stats_timer: config.stats_interval.map(Delay::new),
            config,
            connections: HashMap::new(),
            pending_connects: HashMap::new(),
            external_addresses: ExternalAddresses::default(),
            listen_addresses: ListenAddresses::default(),
            queued: VecDeque::new(),
            housekeeping: Delay::new(HOUSEKEEPING_INTERVAL),
            drain_deadline: None,
            throttled_ended: Duration::ZERO,
        }
    }

    /// The relay's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Accept new reservations and sessions (reference: `enable/0`).
    pub fn enable(&mut self) {
        self.drain_deadline = None;
        self.set_enabled(true);
    }

    /// Enable with options (reference: `enable/1`): node id (checked against the relay's own),
    /// advertised endpoints, capacity (max sessions).
    pub fn enable_with(&mut self, options: EnableOptions) -> Result<(), ConfigError> {
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

    /// Refuse new reservations (`RESERVATION_REFUSED`, renewals too) and sessions
    /// (`RESOURCE_LIMIT_EXCEEDED`) (reference: `disable/0`). Live sessions keep relaying until
    /// they end by themselves (limits, close, [`close_session`](Self::close_session));
    /// reservations stay until they expire. Use [`disable_and_drain`](Self::disable_and_drain)
    /// to also end them after a grace period.
    pub fn disable(&mut self) {
        self.set_enabled(false);
    }

    /// [`disable`](Self::disable), then after `grace` close every session still relaying
    /// ([`CloseReason::Drained`]) and drop every reservation. A zero `grace` closes at once.
    /// [`enable`](Self::enable) before the deadline cancels the drain.
    pub fn disable_and_drain(&mut self, grace: Duration) {
        self.disable();
        self.drain_deadline = Some(Delay::new(grace));
    }

    /// Whether the relay accepts new reservations and sessions (reference: `is_enabled/0`).
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    fn set_enabled(&mut self, enabled: bool) {
        if self.enabled != enabled {
            self.enabled = enabled;
            tracing::info!(enabled, "relay status changed");
            self.queued
                .push_back(ToSwarm::GenerateEvent(Event::StatusChanged { enabled }));
        }
    }

    /// The live sessions (reference: `get_sessions/0`).
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.table.infos(Instant::now())
    }

    /// One live session.
    pub fn session(&self, id: SessionId) -> Option<SessionInfo> {
        self.sessions().into_iter().find(|s| s.id == id)
    }

    /// The relay's statistics (reference: `get_stats/0`).
    pub fn stats(&self) -> RelayStats {
        self.table.stats(&self.config, self.enabled)
    }

    /// Time all sessions, live and ended, have spent waiting for their bandwidth throttles
    /// (the sum of [`SessionInfo::throttled`] over every session since start).
    pub fn total_throttled(&self) -> Duration {
        self.throttled_ended
            + self
                .sessions()
                .iter()
                .map(|s| s.throttled)
                .sum::<Duration>()
    }

    /// The reservations held now.
    pub fn reservations(&self) -> Vec<ReservationInfo> {
        let now = Instant::now();
        let wall = SystemTime::now();
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

    /// Ends one session (reference: `close_relay/1`). Both of its streams are reset and its
    /// slot freed as soon as the connection task carrying it runs; an
    /// [`Event::SessionClosed`] with [`CloseReason::ClosedByOwner`] follows.
    pub fn close_session(&mut self, id: SessionId) -> Result<(), UnknownSession> {
        let Some(entry) = self.table.session(&id) else {
            return Err(UnknownSession(id));
        };
        if entry.started.is_some() {
            entry.shared.request_close(CloseRequest::Owner);
        } else {
            // Not relaying yet: refuse the pending CONNECT now.
            self.fail_pending(id, DenyReason::TargetRefused);
        }
        Ok(())
    }

    /// Replaces the default session limits; live sessions get the new limits at once (their
    /// throttles, caps and timeouts follow).
    pub fn set_limits(&mut self, limits: SessionLimits) -> Result<(), ConfigError> {
        let mut config = self.config.clone();
        config.limits = limits;
        config.validate()?;
        self.config = config;
        self.table.apply_limits(&self.config);
        Ok(())
    }

    /// Sets (or with `None` removes) a peer's own limits; live sessions follow.
    pub fn set_peer_limits(
        &mut self,
        peer: PeerId,
        limits: Option<SessionLimits>,
    ) -> Result<(), ConfigError> {
        let mut config = self.config.clone();
        match limits {
            Some(l) => config.policy.overrides.insert(peer, l),
            None => config.policy.overrides.remove(&peer),
        };
        config.validate()?;
        self.config = config;
        self.table.apply_limits(&self.config);
        Ok(())
    }

    /// Changes the maximum number of concurrent sessions; live sessions over it keep running.
    pub fn set_max_sessions(&mut self, max_sessions: usize) -> Result<(), ConfigError> {
        if max_sessions == 0 {
            return Err(ConfigError::Zero("max_sessions"));
        }
        self.config.max_sessions = max_sessions;
        Ok(())
    }

    /// Adds `peer` to the deny list (or removes it); existing sessions are not affected.
    pub fn set_denied(&mut self, peer: PeerId, denied: bool) {
        if denied {
            self.config.policy.deny.insert(peer);
        } else {
            self.config.policy.deny.remove(&peer);
        }
    }

    /// The addresses announced in reservations: the configured endpoints and the swarm's
    /// confirmed external addresses or, without any, its listen addresses; each ends with
    /// `/p2p/<relay id>`.
    pub fn advertised_addrs(&self) -> Vec<Multiaddr> {
        let mut addrs: Vec<Multiaddr> = self.config.advertised_addrs.clone();
        addrs.extend(self.external_addresses.iter().cloned());
        if addrs.is_empty() {
            addrs.extend(
                self.listen_addresses
                    .iter()
                    .filter(|a| !is_unspecified(a))
                    .cloned(),
            );
        }
        let mut out: Vec<Multiaddr> = Vec::new();
        for addr in addrs {
            if addr.iter().any(|p| p == Protocol::P2pCircuit) {
                continue;
            }
            let addr = match addr.iter().last() {
                Some(Protocol::P2p(_)) => addr,
                _ => addr.with(Protocol::P2p(self.local_peer)),
            };
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        out
    }

    fn requester(&self, peer: PeerId, connection: ConnectionId) -> Requester {
        let info = self.connections.get(&connection);
        Requester {
            peer,
            connection,
            relayed: info.is_some_and(|i| i.relayed),
            ip: info.and_then(|i| i.ip),
        }
    }

    fn notify(&mut self, peer: PeerId, connection: ConnectionId, event: In) {
        self.queued.push_back(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(connection),
            event,
        });
    }

    fn emit(&mut self, event: Event) {
        self.queued.push_back(ToSwarm::GenerateEvent(event));
    }

    fn on_reserve(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: crate::protocol::inbound_hop::ReserveRequest<Stream>,
    ) {
        let who = self.requester(peer, connection);
        let now = Instant::now();
        match self
            .table
            .admit_reservation(&self.config, self.enabled, &who, now)
        {
            Ok(renewed) => {
                let ttl = self.config.reservation_ttl;
                let expires_at = SystemTime::now() + ttl;
                let expire = unix_secs(expires_at);
                let voucher = Voucher {
                    relay: self.local_peer,
                    peer,
                    expiration: expire,
                }
                .sign(&self.keypair)
                .map_err(|e| tracing::error!("signing a reservation voucher failed: {e}"))
                .ok();
                let reservation = proto::Reservation {
                    expire: Some(expire),
                    addrs: self.advertised_addrs().iter().map(|a| a.to_vec()).collect(),
                    voucher,
                };
                let limit = self.config.limits_for(&peer).wire();
                tracing::debug!(%peer, renewed, "reservation accepted");
                self.notify(
                    peer,
                    connection,
                    In::AcceptReservation {
                        request,
                        reservation,
                        limit,
                        expires: now + ttl,
                    },
                );
                self.emit(Event::ReservationAccepted {
                    peer,
                    renewed,
                    expires_at,
                });
            }
            Err(reason) => {
                let status = reason.reserve_status();
                log_denial("reservation", &peer, None, reason, status);
                self.notify(peer, connection, In::DenyReservation { request, status });
                self.emit(Event::ReservationDenied {
                    peer,
                    reason,
                    status,
                });
            }
        }
    }

    fn on_connect(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: ConnectRequest<Stream>,
    ) {
        let who = self.requester(peer, connection);
        let target = request.target();
        let target_connection = self.table.reservation_connection(&target).or_else(|| {
            (!self.config.require_reservation)
                .then(|| self.direct_connection(&target))
                .flatten()
        });
        let admitted = self.table.admit_session(
            &self.config,
            self.enabled,
            &who,
            self.local_peer,
            target,
            target_connection,
            Instant::now(),
        );
        match admitted {
            Ok((session, shared)) => {
                let target_connection = target_connection.expect("admitted with a connection");
                tracing::debug!(%session, source = %peer, %target, "session admitted, asking target");
                self.pending_connects.insert(session, request);
                self.notify(
                    target,
                    target_connection,
                    In::OpenStop {
                        session,
                        source: peer,
                        limit: shared.limits().wire(),
                    },
                );
            }
            Err(reason) => {
                let status = reason.connect_status();
                log_denial("session", &peer, Some(&target), reason, status);
                self.notify(peer, connection, In::DenyConnect { request, status });
                self.emit(Event::SessionDenied {
                    source: peer,
                    target,
                    reason,
                    status,
                });
            }
        }
    }

    fn direct_connection(&self, peer: &PeerId) -> Option<ConnectionId> {
        self.connections
            .iter()
            .find(|(_, i)| i.peer == *peer && !i.relayed)
            .map(|(c, _)| *c)
    }

    /// Refuses a pending session's CONNECT and frees its slot.
    fn fail_pending(&mut self, session: SessionId, reason: DenyReason) {
        let Some(entry) = self.table.remove_session(&session) else {
            return;
        };
        self.table.record_session_denied(reason);
        let status = reason.connect_status();
        if let Some(request) = self.pending_connects.remove(&session) {
            self.notify(
                entry.source,
                entry.source_connection,
                In::DenyConnect { request, status },
            );
        }
        log_denial(
            "session",
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

    fn on_session_ended(&mut self, session: SessionId, reason: CloseReason) {
        self.pending_connects.remove(&session);
        let Some(entry) = self.table.remove_session(&session) else {
            return;
        };
        let Some((started, _)) = entry.started else {
            tracing::debug!(%session, %reason, "session ended before it started");
            return;
        };
        let (up, down) = entry.shared.bytes();
        let duration = started.elapsed();
        self.throttled_ended += Duration::from_nanos(
            entry
                .shared
                .throttled_nanos
                .load(std::sync::atomic::Ordering::Relaxed),
        );
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

    fn on_connection_closed(&mut self, peer: PeerId, connection: ConnectionId) {
        self.connections.remove(&connection);
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
            let started = entry.started.is_some();
            if entry.source_connection == connection {
                // The handler running (or about to run) the copy loop is gone.
                self.on_session_ended(session, CloseReason::ConnectionClosed);
            } else if !started {
                // The target's connection died while it was being asked.
                self.fail_pending(session, DenyReason::TargetRefused);
            }
            // A started session whose target connection closed ends through its copy loop.
        }
    }

    fn drain_now(&mut self) {
        let ids: Vec<(SessionId, bool)> = self
            .table
            .session_ids()
            .map(|(id, e)| (*id, e.started.is_some()))
            .collect();
        tracing::info!(
            sessions = ids.len(),
            "drain deadline passed: closing sessions"
        );
        for (id, started) in ids {
            if started {
                if let Some(e) = self.table.session(&id) {
                    e.shared.request_close(CloseRequest::Drained);
                }
            } else {
                self.fail_pending(id, DenyReason::Disabled);
            }
        }
        for (peer, connection) in self.table.clear_reservations() {
            self.notify(peer, connection, In::ReservationEnded);
            self.emit(Event::ReservationEnded {
                peer,
                reason: ReservationEndReason::Drained,
            });
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        for (peer, connection) in self.table.expire_reservations(now) {
            tracing::debug!(%peer, "reservation expired");
            self.notify(peer, connection, In::ReservationEnded);
            self.emit(Event::ReservationEnded {
                peer,
                reason: ReservationEndReason::Expired,
            });
        }
        self.table.prune(now);
    }

    fn handler_config(&self) -> HandlerConfig {
        HandlerConfig {
            stream_timeout: self.config.stream_timeout,
            max_pending_streams: self.config.max_pending_streams_per_connection,
            copy_buffer_size: self.config.copy_buffer_size,
        }
    }

    fn new_handler(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        relayed: bool,
    ) -> Handler {
        self.connections.insert(
            connection,
            ConnectionInfo {
                peer,
                relayed,
                ip: ip_of(addr),
            },
        );
        Handler::new(self.handler_config())
    }
}

fn log_denial(
    what: &str,
    peer: &PeerId,
    target: Option<&PeerId>,
    reason: DenyReason,
    status: Status,
) {
    match reason {
        DenyReason::RateLimited => {
            tracing::debug!(%peer, ?target, %reason, %status, "{what} refused")
        }
        _ => tracing::info!(%peer, ?target, %reason, %status, "{what} refused"),
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

fn is_unspecified(addr: &Multiaddr) -> bool {
    ip_of(addr).is_some_and(|ip| ip.is_unspecified())
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let relayed = local_addr.iter().any(|p| p == Protocol::P2pCircuit);
        Ok(self.new_handler(connection, peer, remote_addr, relayed))
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let relayed = addr.iter().any(|p| p == Protocol::P2pCircuit);
        Ok(self.new_handler(connection, peer, addr, relayed))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.external_addresses.on_swarm_event(&event);
        self.listen_addresses.on_swarm_event(&event);
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => self.on_connection_closed(peer_id, connection_id),
            // Another behaviour refused a connection we had already seen: forget it.
            FromSwarm::DialFailure(DialFailure { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.connections.remove(&connection_id);
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            handler::Event::ReserveRequested(request) => self.on_reserve(peer, connection, request),
            handler::Event::ConnectRequested(request) => self.on_connect(peer, connection, request),
            handler::Event::BadRequest(error) => {
                tracing::info!(%peer, %error, "bad hop request");
                self.table.record_bad_request();
                self.emit(Event::BadRequest { peer, error });
            }
            handler::Event::StopAccepted {
                session,
                stream,
                pending,
            } => {
                let Some(request) = self.pending_connects.remove(&session) else {
                    tracing::debug!(%session, "target accepted a session whose source is gone");
                    return;
                };
                let Some(entry) = self.table.session(&session) else {
                    return;
                };
                let (source, source_connection, shared) =
                    (entry.source, entry.source_connection, entry.shared.clone());
                self.notify(
                    source,
                    source_connection,
                    In::AcceptConnect {
                        session,
                        request,
                        limit: shared.limits().wire(),
                        target: stream,
                        target_pending: pending,
                        shared,
                    },
                );
            }
            handler::Event::StopFailed { session, error } => {
                tracing::info!(%session, target = %peer, %error, "target did not accept the circuit");
                self.fail_pending(session, DenyReason::TargetRefused);
            }
            handler::Event::SessionStarted(session) => {
                let Some(entry) = self.table.start_session(session, Instant::now()) else {
                    return;
                };
                let (source, target, limits) = (entry.source, entry.target, entry.shared.limits());
                tracing::info!(%session, %source, %target, ?limits, "session opened");
                self.emit(Event::SessionOpened {
                    id: session,
                    source,
                    target,
                    limits,
                });
            }
            handler::Event::SessionEnded { session, reason } => {
                self.on_session_ended(session, reason)
            }
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        if let Some(event) = self.queued.pop_front() {
            return Poll::Ready(event);
        }
        if self.housekeeping.poll_unpin(cx).is_ready() {
            self.housekeeping.reset(HOUSEKEEPING_INTERVAL);
            self.housekeeping();
        }
        if let Some(interval) = self.config.stats_interval {
            let timer = self.stats_timer.get_or_insert_with(|| Delay::new(interval));
            if timer.poll_unpin(cx).is_ready() {
                timer.reset(interval);
                let stats = self.stats();
                self.emit(Event::Stats(stats));
            }
        }
        if let Some(deadline) = self.drain_deadline.as_mut() {
            if deadline.poll_unpin(cx).is_ready() {
                self.drain_deadline = None;
                self.drain_now();
            }
        }
        if let Some(event) = self.queued.pop_front() {
            return Poll::Ready(event);
        }
        // Re-register the timers that were just reset.
        let _ = self.housekeeping.poll_unpin(cx);
        if let Some(timer) = self.stats_timer.as_mut() {
            let _ = timer.poll_unpin(cx);
        }
        Poll::Pending
    }
}
