//! The relay's [`NetworkBehaviour`]: a thin adapter between the swarm and the sans-IO
//! [`RelayCore`](crate::core::RelayCore). It feeds the core what the swarm and the handlers
//! report, carries out the core's commands (messages to handlers), keeps the streams the core
//! must not hold, arms one timer at the core's next deadline, and surfaces the core's events.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    task::{Context, Poll, Waker},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
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
    addresses::{self, Announcement},
    core::{Command, Output, RelayCore},
    event::{EnableOptions, Event, ReservationInfo, UnknownSession},
    handler::{self, Handler, HandlerConfig, In},
    protocol::{
        inbound_hop::{ConnectRequest, ReserveRequest},
        proto,
        voucher::Voucher,
    },
    CloseReason, Config, ConfigError, RelayStats, SessionId, SessionInfo, SessionLimits, Side,
};

/// The relay. Compose it into a swarm's behaviour; control it through its methods.
pub struct Behaviour {
    local_peer: PeerId,
    keypair: Keypair,
    core: RelayCore,
    /// CONNECT requests waiting for the core's answer, with their source and connection.
    pending_connects: HashMap<SessionId, (PeerId, ConnectionId, ConnectRequest<Stream>)>,
    /// Targets' accepted STOP streams (and the bytes they sent early), on their way to the
    /// source's handler.
    accepted_targets: HashMap<SessionId, (Stream, Bytes)>,
    external_addresses: ExternalAddresses,
    listen_addresses: ListenAddresses,
    /// The announcement last logged.
    last_announcement: Announcement,
    queued: VecDeque<ToSwarm<Event, In>>,
    /// Fires at the core's next deadline (`armed_for`).
    timer: Delay,
    armed_for: Option<Instant>,
    waker: Option<Waker>,
}

impl Behaviour {
    /// A relay signing its vouchers with `keypair` (the swarm's identity).
    pub fn new(keypair: Keypair, config: Config) -> Self {
        let local_peer = keypair.public().to_peer_id();
        Behaviour {
            core: RelayCore::new(local_peer, config, Instant::now()),
            local_peer,
            keypair,
            pending_connects: HashMap::new(),
            accepted_targets: HashMap::new(),
            external_addresses: ExternalAddresses::default(),
            listen_addresses: ListenAddresses::default(),
            last_announcement: Announcement::default(),
            queued: VecDeque::new(),
            timer: Delay::new(Duration::ZERO),
            armed_for: None,
            waker: None,
        }
    }

    /// The relay's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        self.core.config()
    }

    /// Accept new reservations and sessions (reference: `enable/0`). Cancels a drain.
    pub fn enable(&mut self) {
        self.core.enable();
        self.pump();
    }

    /// Enable with options (reference: `enable/1`): node id (checked against the relay's own),
    /// advertised endpoints, capacity (max sessions).
    pub fn enable_with(&mut self, options: EnableOptions) -> Result<(), ConfigError> {
        let result = self.core.enable_with(options);
        self.pump();
        result
    }

    /// Refuse new reservations (`RESERVATION_REFUSED`, renewals too) and sessions
    /// (`RESOURCE_LIMIT_EXCEEDED`) (reference: `disable/0`). Live sessions keep relaying until
    /// they end by themselves (limits, close, [`close_session`](Self::close_session));
    /// reservations stay until they expire. Use [`disable_and_drain`](Self::disable_and_drain)
    /// to also end them after a grace period.
    pub fn disable(&mut self) {
        self.core.disable();
        self.pump();
    }

    /// [`disable`](Self::disable), then after `grace` close every session, relaying or about to
    /// ([`CloseReason::Drained`]), and drop every reservation. A zero `grace` closes at once.
    /// [`enable`](Self::enable) before the deadline cancels the drain.
    pub fn disable_and_drain(&mut self, grace: Duration) {
        self.core.disable_and_drain(grace, Instant::now());
        self.pump();
    }

    /// Whether the relay accepts new reservations and sessions (reference: `is_enabled/0`).
    pub fn is_enabled(&self) -> bool {
        self.core.is_enabled()
    }

    /// The live sessions (reference: `get_sessions/0`).
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.core.sessions(Instant::now())
    }

    /// One live session.
    pub fn session(&self, id: SessionId) -> Option<SessionInfo> {
        self.sessions().into_iter().find(|s| s.id == id)
    }

    /// The relay's statistics (reference: `get_stats/0`).
    pub fn stats(&self) -> RelayStats {
        self.core.stats()
    }

    /// Time all sessions, live and ended, have spent waiting for their bandwidth throttles
    /// (the sum of [`SessionInfo::throttled`] over every session since start).
    pub fn total_throttled(&self) -> Duration {
        self.core.total_throttled(Instant::now())
    }

    /// The reservations held now.
    pub fn reservations(&self) -> Vec<ReservationInfo> {
        self.core.reservations(Instant::now(), SystemTime::now())
    }

    /// Ends one session (reference: `close_relay/1`), in whatever state it is: a session still
    /// waiting for its target is refused; one relaying (or about to) has both of its streams
    /// reset and its slot freed as soon as the connection task carrying it runs, and an
    /// [`Event::SessionClosed`] with [`CloseReason::ClosedByOwner`] follows.
    pub fn close_session(&mut self, id: SessionId) -> Result<(), UnknownSession> {
        let result = self.core.close_session(id);
        self.pump();
        result
    }

    /// Replaces the default session limits; live sessions get the new limits at once (their
    /// throttles, caps and timeouts follow).
    pub fn set_limits(&mut self, limits: SessionLimits) -> Result<(), ConfigError> {
        self.core.set_limits(limits)
    }

    /// Sets (or with `None` removes) the node-wide bandwidth capacity, bytes per second summed
    /// over all sessions and both directions (see
    /// [`ConfigBuilder::total_bandwidth`](crate::ConfigBuilder::total_bandwidth)). Live
    /// sessions follow at once: their shares are recomputed at the next poll.
    pub fn set_total_bandwidth(
        &mut self,
        bytes_per_second: Option<u64>,
    ) -> Result<(), ConfigError> {
        let result = self.core.set_total_bandwidth(bytes_per_second);
        self.pump();
        result
    }

    /// Sets (or with `None` removes) a peer's own limits; live sessions follow.
    pub fn set_peer_limits(
        &mut self,
        peer: PeerId,
        limits: Option<SessionLimits>,
    ) -> Result<(), ConfigError> {
        self.core.set_peer_limits(peer, limits)
    }

    /// Changes the maximum number of concurrent sessions; live sessions over it keep running.
    pub fn set_max_sessions(&mut self, max_sessions: usize) -> Result<(), ConfigError> {
        self.core.set_max_sessions(max_sessions)
    }

    /// Adds `peer` to the deny list (or removes it); a denied peer's connections are closed,
    /// ending its reservations and sessions.
    pub fn set_denied(&mut self, peer: PeerId, denied: bool) {
        self.core.set_denied(peer, denied);
        self.pump();
    }

    /// Replaces the whole configuration on the running relay (the config file reloaded, say):
    /// live sessions get the new limits at once, the connections of peers and networks the
    /// new access policy refuses are closed, and new requests meet the new caps. Refused, with
    /// nothing changed, if `config` is invalid.
    pub fn set_config(&mut self, config: Config) -> Result<(), ConfigError> {
        let result = self.core.set_config(config);
        self.pump();
        result
    }

    /// The addresses announced in reservations: the configured endpoints, the swarm's
    /// confirmed external addresses and, without any of those, its publicly routable listen
    /// addresses (private ones too with
    /// [`ConfigBuilder::allow_private_addrs`](crate::ConfigBuilder::allow_private_addrs)); each
    /// ends with `/p2p/<relay id>`.
    pub fn advertised_addrs(&self) -> Vec<Multiaddr> {
        self.announcement().addrs
    }

    /// What the relay announces and what it leaves out, with why (see
    /// [`advertised_addrs`](Self::advertised_addrs)).
    pub fn announcement(&self) -> Announcement {
        let config = self.core.config();
        addresses::announce(
            self.local_peer,
            &config.advertised_addrs,
            self.external_addresses.iter(),
            self.listen_addresses.iter(),
            config.allow_private_addrs,
        )
    }

    /// Logs the announcement when it changed: what is announced, and what is not and why.
    fn log_announcement(&mut self) {
        let announcement = self.announcement();
        if announcement == self.last_announcement {
            return;
        }
        if announcement.addrs.is_empty() {
            tracing::warn!(
                "announcing no address: reservations carry none and the relay does not register; \
                 set an external address (--external) or allow private addresses"
            );
        } else {
            tracing::info!(addrs = ?announcement.addrs, "announcing relay addresses");
        }
        for (addr, why) in &announcement.skipped {
            tracing::info!(%addr, "not announced: {why}");
        }
        self.last_announcement = announcement;
    }

    fn notify(&mut self, peer: PeerId, connection: ConnectionId, event: In) {
        self.queued.push_back(ToSwarm::NotifyHandler {
            peer_id: peer,
            handler: NotifyHandler::One(connection),
            event,
        });
    }

    /// Carries out the core's outputs, then wakes the swarm's task to deliver them.
    fn pump(&mut self) {
        while let Some(output) = self.core.poll() {
            match output {
                Output::Event(event) => self.queued.push_back(ToSwarm::GenerateEvent(event)),
                Output::Command(command) => self.execute(command),
            }
        }
        if !self.queued.is_empty() || self.armed_for != self.core.poll_timeout() {
            if let Some(waker) = self.waker.take() {
                waker.wake();
            }
        }
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::OpenStop {
                session,
                target,
                connection,
                source,
                limit,
            } => self.notify(
                target,
                connection,
                In::OpenStop {
                    session,
                    source,
                    limit,
                },
            ),
            Command::DenyConnect { session, status } => {
                self.accepted_targets.remove(&session);
                if let Some((source, connection, request)) = self.pending_connects.remove(&session)
                {
                    self.notify(source, connection, In::DenyConnect { request, status });
                }
            }
            Command::AcceptConnect {
                session,
                source,
                connection,
                limit,
                shared,
            } => {
                let request = self.pending_connects.remove(&session);
                let target = self.accepted_targets.remove(&session);
                let (Some((_, _, request)), Some((target, target_pending))) = (request, target)
                else {
                    // Not reachable: the core asks only for sessions whose request and target
                    // stream it was given. Keep the books right if it happens.
                    self.core.on_circuit_ended(
                        session,
                        CloseReason::StreamError {
                            side: Side::Source,
                            error: "the relay lost the session's streams".into(),
                        },
                        Instant::now(),
                    );
                    return;
                };
                self.notify(
                    source,
                    connection,
                    In::AcceptConnect {
                        session,
                        request,
                        limit,
                        target,
                        target_pending,
                        shared,
                    },
                );
            }
            Command::DropTarget { session } => {
                self.accepted_targets.remove(&session);
            }
            Command::CloseCircuit { shared, why } => shared.request_close(why),
            Command::ReservationEnded { peer, connection } => {
                self.notify(peer, connection, In::ReservationEnded)
            }
            Command::CloseConnection { peer, connection } => {
                self.queued.push_back(ToSwarm::CloseConnection {
                    peer_id: peer,
                    connection: libp2p::swarm::CloseConnection::One(connection),
                })
            }
        }
    }

    fn on_reserve(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: ReserveRequest<Stream>,
    ) {
        match self
            .core
            .on_reserve(peer, connection, Instant::now(), SystemTime::now())
        {
            Ok(grant) => {
                let expire = unix_secs(grant.expires_at);
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
                self.notify(
                    peer,
                    connection,
                    In::AcceptReservation {
                        request,
                        reservation,
                        limit: grant.limit,
                        expires: grant.expires,
                    },
                );
            }
            Err(reason) => {
                let status = reason.reserve_status();
                self.notify(peer, connection, In::DenyReservation { request, status });
            }
        }
    }

    fn on_connect(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: ConnectRequest<Stream>,
    ) {
        match self
            .core
            .on_connect(peer, connection, request.target(), Instant::now())
        {
            Ok(session) => {
                self.pending_connects
                    .insert(session, (peer, connection, request));
            }
            Err(reason) => {
                let status = reason.connect_status();
                self.notify(peer, connection, In::DenyConnect { request, status });
            }
        }
    }

    fn handler_config(&self) -> HandlerConfig {
        let config = self.core.config();
        HandlerConfig {
            stream_timeout: config.stream_timeout,
            max_pending_streams: config.max_pending_streams_per_connection,
            copy_buffer_size: config.copy_buffer_size,
        }
    }

    fn new_handler(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        relayed: bool,
    ) -> Handler {
        self.core
            .on_connection_established(connection, peer, relayed, ip_of(addr));
        Handler::new(self.handler_config())
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

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection: ConnectionId,
        _local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.core
            .on_pending_inbound(connection)
            .map_err(ConnectionDenied::new)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        let relayed = local_addr.iter().any(|p| p == Protocol::P2pCircuit);
        self.core
            .on_inbound_connection(connection, peer, relayed, ip_of(remote_addr))
            .map_err(ConnectionDenied::new)?;
        Ok(Handler::new(self.handler_config()))
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
        let addresses_changed = self.external_addresses.on_swarm_event(&event)
            | self.listen_addresses.on_swarm_event(&event);
        if addresses_changed {
            self.log_announcement();
        }
        match event {
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                self.core
                    .on_connection_closed(peer_id, connection_id, Instant::now());
                self.pump();
            }
            // Another behaviour refused a connection we had already seen: forget it.
            FromSwarm::DialFailure(DialFailure { connection_id, .. })
            | FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                self.core.on_connection_refused(connection_id);
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
            handler::Event::BadRequest(error) => self.core.on_bad_request(peer, error),
            handler::Event::StopAccepted {
                session,
                stream,
                pending,
            } => {
                self.accepted_targets.insert(session, (stream, pending));
                self.core.on_stop_accepted(session);
            }
            handler::Event::StopFailed { session, error } => {
                self.core.on_stop_failed(session, &error)
            }
            handler::Event::SessionStarted(session) => {
                self.core
                    .on_circuit_started(session, Instant::now(), SystemTime::now())
            }
            handler::Event::SessionEnded { session, reason } => {
                self.core.on_circuit_ended(session, reason, Instant::now())
            }
        }
        self.pump();
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Poll::Ready(event);
            }
            let Some(deadline) = self.core.poll_timeout() else {
                break;
            };
            let now = Instant::now();
            if deadline <= now {
                self.core.handle_timeout(now);
                self.pump();
                continue;
            }
            if self.armed_for != Some(deadline) {
                self.timer.reset(deadline - now);
                self.armed_for = Some(deadline);
            }
            if self.timer.poll_unpin(cx).is_pending() {
                break;
            }
            // The timer fired: the deadline has passed (checked at the top of the loop).
            self.armed_for = None;
        }
        self.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}
