//! The client side: reserving on the best relays (and announcing the peer's relayed addresses
//! under its locator key), and `request_relay`, which finds a target's relays and connects to it
//! through the best of them with rust-libp2p's relay client.
//!
//! The swarm must contain a `libp2p::relay::client` (transport and behaviour): the registry
//! asks the swarm to listen on and dial `/p2p-circuit` addresses, which that transport handles.

use std::{collections::VecDeque, time::Instant};

use libp2p::{
    core::{multiaddr::Protocol, transport::ListenerId, Endpoint},
    kad::{GetProvidersOk, QueryId, QueryResult},
    swarm::{
        behaviour::{
            ConnectionClosed, ConnectionEstablished, DialFailure, ListenerClosed, NewListenAddr,
        },
        dial_opts::{DialOpts, PeerCondition},
        CloseConnection, ConnectionId, DialError, FromSwarm, ListenOpts, NetworkBehaviour, ToSwarm,
    },
    Multiaddr, PeerId, TransportError,
};

use super::{
    behaviour::{Behaviour, Query},
    event::{Event, RelayFailure, RelaySessionId, RequestId, SessionError},
    failure::{describe, status_in},
    plan::RETRY_BACKOFF,
    shard::locator_key,
};

/// A `request_relay` in progress.
#[derive(Debug)]
pub(super) struct SessionRequest {
    target: PeerId,
    /// Relays to try, best first, with the circuit address through each.
    candidates: VecDeque<(PeerId, Multiaddr)>,
    failures: Vec<RelayFailure>,
}

/// `close_relay_session` was given an id that is not an open relayed connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no open relay session {0}")]
pub struct UnknownRelaySession(pub RelaySessionId);

/// The relay a `/p2p-circuit` address goes through, and the address up to `/p2p-circuit`.
fn relay_of(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut base = Multiaddr::empty();
    let mut relay = None;
    for protocol in addr.iter() {
        match protocol {
            Protocol::P2pCircuit => return relay.map(|r| (r, base.with(Protocol::P2pCircuit))),
            Protocol::P2p(peer) => {
                relay = Some(peer);
                base.push(protocol);
            }
            other => base.push(other),
        }
    }
    None
}

impl Behaviour {
    /// Keeps reservations on the `n` best relays (discovering relays first if none are known),
    /// so that this peer is reachable through them; replaces a relay whose reservation fails or
    /// ends. Each accepted reservation is announced under the peer's locator key, where
    /// [`request_relay`](Self::request_relay) finds it. `n = 0` stops adding reservations.
    pub fn reserve_on_best(&mut self, n: usize) {
        self.plan.set_want(n);
        self.apply_plan(Instant::now());
        self.wake();
    }

    /// The relays this peer holds (or requested) reservations on.
    pub fn reservations(&self) -> Vec<PeerId> {
        self.plan.held().map(|(p, _)| *p).collect()
    }

    pub(super) fn drive_reservations(&mut self, now: Instant) {
        if self.locator_retry_at.is_some_and(|at| now >= at) {
            self.locator_retry_at = None;
            if self
                .plan
                .held()
                .any(|(_, h)| *h == super::plan::Held::Active)
            {
                self.provide_locator();
            }
        }
        // A relay that never answers (frozen, or a listener the transport never started)
        // does not hold a slot forever.
        for relay in self.plan.timed_out(now) {
            self.drop_relay_listener(relay);
            self.reservation_failed(
                relay,
                None,
                format!(
                    "no answer within {} s",
                    super::plan::RESERVATION_TIMEOUT.as_secs()
                ),
                now,
            );
        }
        self.probe_relays(now);
        if self.plan.needs_more() && self.rediscover_at.is_some_and(|at| now >= at) {
            self.apply_plan(now);
        }
    }

    /// Gives up the reservation listener on `relay`. With a connection to the relay, the
    /// connection is closed and the listener closes with it: removing the listener while the
    /// relay client's handler lives would let a late "reservation accepted" reach
    /// `libp2p-relay`'s client, which panics on a reservation it no longer knows (0.22,
    /// `priv_client.rs` "Relay connection exist"). Without one, no handler can answer, and the
    /// listener is removed.
    fn drop_relay_listener(&mut self, relay: PeerId) {
        let listener = self
            .listeners
            .iter()
            .find(|(_, r)| **r == relay)
            .map(|(l, _)| *l);
        let Some(id) = listener else {
            return;
        };
        self.listeners.remove(&id);
        if self.direct.contains_key(&relay) {
            self.queue.push_back(ToSwarm::CloseConnection {
                peer_id: relay,
                connection: CloseConnection::All,
            });
        } else {
            self.queue.push_back(ToSwarm::RemoveListener { id });
        }
    }

    /// Asks the relays holding our reservations for their record when due (see
    /// [`liveness`](super::liveness)).
    fn probe_relays(&mut self, now: Instant) {
        // A probe unanswered after the fetch timeout is a silence, whatever the transport's
        // own stream timeouts say; its request stays open, and a late answer still counts.
        let timeout = self.config.fetch_timeout;
        let late: Vec<PeerId> = self
            .probes
            .values_mut()
            .filter(|p| !p.late && now.saturating_duration_since(p.sent) >= timeout)
            .map(|p| {
                p.late = true;
                p.relay
            })
            .collect();
        for relay in late {
            self.on_probe_silent(relay, now);
        }
        let active: Vec<PeerId> = self
            .plan
            .held()
            .filter(|(_, h)| **h == super::plan::Held::Active)
            .map(|(relay, _)| *relay)
            .collect();
        for relay in self.liveness.due(&active, now) {
            let request = super::fetch::FetchRequest {
                namespace: self.config.namespace.clone(),
            };
            let id = self.inner.fetch.send_request(&relay, request);
            self.probes.insert(
                id,
                super::behaviour::Probe {
                    relay,
                    sent: now,
                    late: false,
                },
            );
        }
    }

    /// A liveness probe was answered, in time or late.
    pub(super) fn on_probe_answer(&mut self, probe: super::behaviour::Probe) {
        if probe.late {
            self.liveness.answered(&probe.relay, Instant::now());
        } else {
            self.liveness.answered_current(&probe.relay, Instant::now());
        }
    }

    /// A liveness probe of `relay` went unanswered: after
    /// [`SILENCES_TO_DROP`](super::SILENCES_TO_DROP) in a row the relay counts as gone, its
    /// connections are closed and its reservation is replaced.
    pub(super) fn on_probe_silent(&mut self, relay: PeerId, now: Instant) {
        if self.liveness.silent(&relay, now) != super::liveness::Verdict::Dead {
            return;
        }
        self.drop_relay_listener(relay);
        self.trust.mark_bad(relay, now);
        self.reservation_failed(
            relay,
            None,
            format!(
                "stopped answering ({} record requests in a row unanswered)",
                super::liveness::SILENCES_TO_DROP
            ),
            now,
        );
    }

    pub(super) fn apply_plan(&mut self, now: Instant) {
        if !self.plan.needs_more() {
            return;
        }
        let ranked = self.known_relays();
        for relay in self.plan.choose(&ranked, now, &mut rand::thread_rng()) {
            let Some(addr) = self
                .known
                .get(&relay)
                .and_then(|k| k.candidate.addrs().first().cloned())
            else {
                continue;
            };
            let opts = ListenOpts::new(addr.with(Protocol::P2pCircuit));
            self.listeners.insert(opts.listener_id(), relay);
            self.plan.on_requested(relay, now);
            tracing::debug!(%relay, "reserving on relay");
            self.queue.push_back(ToSwarm::ListenOn { opts });
        }
        if self.plan.needs_more() && self.reservation_discovery.is_none() {
            if self.rediscover_at.is_some_and(|at| now < at) {
                return;
            }
            self.rediscover_at = Some(now + RETRY_BACKOFF);
            self.reservation_discovery = Some(self.discover_relays());
        }
    }

    /// Connects to `target` through one of the relays it holds a reservation on (found under
    /// its locator key), trying them best first (most spare capacity among known relays). The
    /// result is [`Event::RelaySessionOpened`] or [`Event::RelaySessionFailed`], whose error
    /// names each relay tried and the status it answered.
    pub fn request_relay(&mut self, target: PeerId) -> RequestId {
        let id = RequestId(self.next_id());
        self.requests.insert(
            id,
            SessionRequest {
                target,
                candidates: VecDeque::new(),
                failures: Vec::new(),
            },
        );
        let query = self
            .inner
            .kad
            .get_providers(locator_key(&self.config.namespace, &target));
        self.queries.insert(query, Query::Locate(id));
        self.wake();
        id
    }

    /// Connects to `target` through the given relay (known from a discovery, or with its
    /// address given).
    pub fn request_relay_via(
        &mut self,
        target: PeerId,
        relay: PeerId,
        relay_addr: Option<Multiaddr>,
    ) -> RequestId {
        let id = RequestId(self.next_id());
        let addr = relay_addr
            .or_else(|| {
                self.known
                    .get(&relay)
                    .and_then(|k| k.candidate.addrs().first().cloned())
            })
            .map(|a| match a.iter().last() {
                Some(Protocol::P2p(_)) => a,
                _ => a.with(Protocol::P2p(relay)),
            });
        let mut request = SessionRequest {
            target,
            candidates: VecDeque::new(),
            failures: Vec::new(),
        };
        match addr {
            Some(a) => request
                .candidates
                .push_back((relay, a.with(Protocol::P2pCircuit))),
            None => request.failures.push(RelayFailure {
                relay,
                status: None,
                error: "no address known for the relay".into(),
            }),
        }
        self.requests.insert(id, request);
        self.dial_next(id);
        self.wake();
        id
    }

    /// Closes a relayed connection opened by `request_relay`; the relay ends the session
    /// and [`Event::RelaySessionClosed`] follows.
    pub fn close_relay_session(
        &mut self,
        session: RelaySessionId,
    ) -> Result<(), UnknownRelaySession> {
        let target = *self
            .sessions
            .get(&session.0)
            .ok_or(UnknownRelaySession(session))?;
        self.queue.push_back(ToSwarm::CloseConnection {
            peer_id: target,
            connection: CloseConnection::One(session.0),
        });
        self.wake();
        Ok(())
    }

    pub(super) fn on_locate_result(
        &mut self,
        query: QueryId,
        id: RequestId,
        result: QueryResult,
        last: bool,
    ) {
        let Some(request) = self.requests.get(&id) else {
            return;
        };
        let target = request.target;
        if let QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) =
            result
        {
            if providers.contains(&target) {
                // The target's addresses live only in the running lookup: take them now.
                let addrs = self
                    .inner
                    .kad
                    .handle_pending_outbound_connection(
                        ConnectionId::new_unchecked(usize::MAX),
                        Some(target),
                        &[],
                        Endpoint::Dialer,
                    )
                    .unwrap_or_default();
                let mut found: Vec<(PeerId, Multiaddr)> = Vec::new();
                for addr in &addrs {
                    if let Some((relay, circuit)) = relay_of(addr) {
                        if !found.iter().any(|(r, _)| *r == relay) {
                            found.push((relay, circuit));
                        }
                    }
                }
                // Known relays by rank first, unknown ones after in the order found.
                let ranked: Vec<PeerId> = self.known_relays().iter().map(|c| c.peer()).collect();
                found
                    .sort_by_key(|(r, _)| ranked.iter().position(|p| p == r).unwrap_or(usize::MAX));
                if !found.is_empty() {
                    let request = self.requests.get_mut(&id).expect("checked");
                    request.candidates.extend(found);
                    if let Some(mut q) = self.inner.kad.query_mut(&query) {
                        q.finish();
                    }
                    self.queries.remove(&query);
                    self.dial_next(id);
                    return;
                }
            }
        }
        if last
            && self
                .requests
                .get(&id)
                .is_some_and(|r| r.candidates.is_empty())
        {
            self.requests.remove(&id);
            self.emit(Event::RelaySessionFailed {
                request: id,
                target,
                error: SessionError::TargetNotFound(target),
            });
        }
    }

    fn dial_next(&mut self, id: RequestId) {
        let Some(request) = self.requests.get_mut(&id) else {
            return;
        };
        let target = request.target;
        let Some((relay, circuit)) = request.candidates.pop_front() else {
            let request = self.requests.remove(&id).expect("present");
            let error = if request.failures.is_empty() {
                SessionError::TargetNotFound(target)
            } else {
                SessionError::RelaysFailed(request.failures)
            };
            self.emit(Event::RelaySessionFailed {
                request: id,
                target,
                error,
            });
            return;
        };
        if self.direct.contains_key(&relay) {
            self.dial_circuit(id, target, relay, circuit);
            return;
        }
        // Connect to the relay first, on a connection of this request's own. Left to the relay
        // client, a circuit dial to an unconnected relay makes it dial the relay only if the
        // swarm is not dialing it already (a DHT lookup may be), and otherwise cancels the
        // circuit dial ("Response from behaviour was canceled").
        let mut relay_addr = Multiaddr::empty();
        for protocol in circuit.iter().take_while(|p| *p != Protocol::P2pCircuit) {
            relay_addr.push(protocol);
        }
        let opts = DialOpts::peer_id(relay)
            .addresses(vec![relay_addr])
            .condition(PeerCondition::Always)
            .build();
        self.relay_dials
            .insert(opts.connection_id(), (id, relay, circuit));
        tracing::debug!(%target, %relay, "connecting to the relay before dialing through it");
        self.queue.push_back(ToSwarm::Dial { opts });
    }

    fn dial_circuit(&mut self, id: RequestId, target: PeerId, relay: PeerId, circuit: Multiaddr) {
        let opts = DialOpts::peer_id(target)
            .addresses(vec![circuit.with(Protocol::P2p(target))])
            .condition(PeerCondition::Always)
            .build();
        self.dials.insert(opts.connection_id(), (id, relay));
        tracing::debug!(%target, %relay, "dialing through relay");
        self.queue.push_back(ToSwarm::Dial { opts });
    }

    pub(super) fn on_client_swarm_event(&mut self, event: &FromSwarm) {
        match event {
            FromSwarm::NewListenAddr(NewListenAddr { listener_id, addr }) => {
                self.on_reservation_accepted(*listener_id, addr)
            }
            FromSwarm::ListenerClosed(ListenerClosed {
                listener_id,
                reason,
            }) => {
                let error = match reason {
                    Ok(()) => None,
                    Err(e) => Some(*e),
                };
                self.on_reservation_closed(*listener_id, error);
            }
            // `listen_on` refused the circuit address (no relay-client transport, an address the
            // transport cannot use): the swarm reports it here, and nothing else follows.
            FromSwarm::ListenerError(libp2p::swarm::ListenerError { listener_id, err }) => {
                if let Some(relay) = self.listeners.remove(listener_id) {
                    self.reservation_failed(
                        relay,
                        None,
                        format!("cannot listen through the relay: {err}"),
                        Instant::now(),
                    );
                }
            }
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            }) => {
                if !endpoint.is_relayed() {
                    self.direct
                        .entry(*peer_id)
                        .or_default()
                        .insert(*connection_id);
                }
                if let Some((request, relay, circuit)) = self.relay_dials.remove(connection_id) {
                    if let Some(target) = self.requests.get(&request).map(|r| r.target) {
                        self.dial_circuit(request, target, relay, circuit);
                        self.wake();
                    }
                }
                if let Some((request, relay)) = self.dials.remove(connection_id) {
                    self.requests.remove(&request);
                    self.sessions.insert(*connection_id, *peer_id);
                    self.emit(Event::RelaySessionOpened {
                        request,
                        session: RelaySessionId(*connection_id),
                        relay,
                        target: *peer_id,
                    });
                    self.wake();
                }
            }
            FromSwarm::DialFailure(DialFailure {
                connection_id,
                error,
                ..
            }) => {
                let failed = self.dials.remove(connection_id).or_else(|| {
                    self.relay_dials
                        .remove(connection_id)
                        .map(|(request, relay, _)| (request, relay))
                });
                if let Some((request, relay)) = failed {
                    let failure = dial_failure(relay, error);
                    tracing::info!(%failure, "relayed dial failed");
                    if let Some(r) = self.requests.get_mut(&request) {
                        r.failures.push(failure);
                    }
                    self.dial_next(request);
                    self.wake();
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                if let Some(connections) = self.direct.get_mut(peer_id) {
                    connections.remove(connection_id);
                    if connections.is_empty() {
                        self.direct.remove(peer_id);
                    }
                }
                if self.sessions.remove(connection_id).is_some() {
                    self.emit(Event::RelaySessionClosed {
                        session: RelaySessionId(*connection_id),
                        target: *peer_id,
                    });
                    self.wake();
                }
            }
            _ => {}
        }
    }

    fn on_reservation_accepted(&mut self, listener: ListenerId, addr: &Multiaddr) {
        let Some(relay) = self.listeners.get(&listener).copied() else {
            return;
        };
        if !self.plan.on_accepted(relay) {
            return;
        }
        self.trust.reservation_succeeded(&relay);
        tracing::info!(%relay, %addr, "reservation accepted");
        self.emit(Event::ReservationAccepted {
            relay,
            addr: addr.clone(),
        });
        if let Some(from) = self.lost.pop_front() {
            self.emit(Event::ReservationMoved { from, to: relay });
        }
        self.provide_locator();
        self.wake();
    }

    fn on_reservation_closed(&mut self, listener: ListenerId, error: Option<&std::io::Error>) {
        let Some(relay) = self.listeners.remove(&listener) else {
            return;
        };
        let status = error.and_then(|e| status_in(e));
        let text = error
            .map(|e| describe(e))
            .unwrap_or_else(|| "reservation ended".into());
        self.reservation_failed(relay, status, text, Instant::now());
    }

    /// A reservation on `relay` was refused, never answered, or ended: the slot is freed, the
    /// relay backs off and counts a failure, [`Event::ReservationLost`] says why, and another
    /// relay is tried.
    fn reservation_failed(
        &mut self,
        relay: PeerId,
        status: Option<crate::Status>,
        error: String,
        now: Instant,
    ) {
        let was_active = self
            .plan
            .held()
            .any(|(r, h)| *r == relay && *h == super::plan::Held::Active);
        self.plan.on_lost(relay, now);
        if !was_active {
            // Refused or failed: ranked last, and skipped by discoveries for a while (longer
            // each time), so that fake relays that relay nothing stop costing attempts.
            self.trust.reservation_failed(relay);
            self.trust.mark_bad(relay, now);
        }
        let failure = RelayFailure {
            relay,
            status,
            error,
        };
        tracing::info!(%failure, "reservation lost");
        self.emit(Event::ReservationLost { failure });
        self.lost.push_back(relay);
        self.known.remove(&relay);
        self.rediscover_at = Some(now);
        self.apply_plan(now);
        self.wake();
    }

    /// Announces (again) this peer's relayed addresses under its locator key. kad sends the
    /// swarm's confirmed external addresses with the provider record, and the relay client
    /// confirms each accepted reservation's `/p2p-circuit` address.
    fn provide_locator(&mut self) {
        let key = locator_key(&self.config.namespace, &self.local);
        match self.inner.kad.start_providing(key) {
            Ok(query) => {
                self.queries.insert(query, Query::ProvideLocator);
            }
            Err(e) => tracing::warn!("cannot announce the locator key: {e}"),
        }
    }
}

fn dial_failure(relay: PeerId, error: &DialError) -> RelayFailure {
    let mut status = None;
    if let DialError::Transport(errors) = error {
        for (_, e) in errors {
            if let TransportError::Other(io) = e {
                status = status.or_else(|| status_in(io));
            }
        }
    }
    RelayFailure {
        relay,
        status,
        error: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_of_a_circuit_address_is_the_peer_before_p2p_circuit() {
        let relay = PeerId::random();
        let target = PeerId::random();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{relay}/p2p-circuit/p2p/{target}")
            .parse()
            .unwrap();
        let (found, base) = relay_of(&addr).unwrap();
        assert_eq!(found, relay);
        assert_eq!(
            base,
            format!("/ip4/127.0.0.1/tcp/1/p2p/{relay}/p2p-circuit")
                .parse::<Multiaddr>()
                .unwrap()
        );
        assert!(relay_of(&"/ip4/127.0.0.1/tcp/1".parse().unwrap()).is_none());
    }
}
