//! The registry's [`NetworkBehaviour`]: it owns the swarm's Kademlia (shared with the
//! application through [`Behaviour::kad_mut`]) and the record fetch protocol, and dispatches
//! their events to the relay side ([`advertise`](super::advertise)), the reading side
//! ([`discover`](super::discover)), the storing side ([`storing`](super::storing)) and the client
//! side ([`client`](super::client)).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p::{
    core::{
        transport::{ListenerId, PortUse},
        Endpoint,
    },
    identity::Keypair,
    kad::{self, store::MemoryStore, QueryId, RecordKey},
    request_response::{self, OutboundRequestId, ProtocolSupport},
    swarm::{
        ConnectionDenied, ConnectionId, ExternalAddresses, FromSwarm, NetworkBehaviour, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId, StreamProtocol,
};

use super::{
    client::SessionRequest,
    config::RegistryConfig,
    discover::Discovery,
    event::{DiscoveryId, Event, RequestId},
    fetch::{FetchCodec, FETCH_PROTOCOL},
    inner::{Inner, InnerEvent},
    plan::ReservationPlan,
    rank::RelayCandidate,
    record::RelayRecord,
    schedule::{RelayState, Schedule},
    verify::Freshness,
};

/// How often time-driven decisions (refresh, rate-limited republication, re-providing,
/// reservation retries) are reconsidered.
const TICK: Duration = Duration::from_secs(1);

/// What one of the registry's own kad queries is for.
#[derive(Debug, Clone)]
pub(super) enum Query {
    /// A shard key's `GET_PROVIDERS` in a discovery: its level and index.
    Shard(DiscoveryId, u8, u32),
    /// A relay record's `GET_VALUE` in a discovery (records mode).
    Record(DiscoveryId, PeerId),
    /// The target's locator `GET_PROVIDERS` in a session request.
    Locate(RequestId),
    /// Our shard-key provider announcement.
    ProvideShard,
    /// Our locator-key provider announcement.
    ProvideLocator,
    /// Our record publication (records mode).
    Put,
}

/// How soon a publication that reached no peer (e.g. before the DHT was joined) is retried.
pub(super) const PUBLISH_RETRY: Duration = Duration::from_secs(5);

/// The relay registry. Compose it into the swarm next to the relay (relay side) and/or a
/// `relay::client` (client side); see the [module documentation](super).
pub struct Behaviour {
    pub(super) inner: Inner,
    pub(super) config: RegistryConfig,
    pub(super) local: PeerId,
    pub(super) keypair: Keypair,
    pub(super) external: ExternalAddresses,
    /// Addresses peers announced (identify), for kad peers it cannot route to.
    peer_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    /// kad peers without a known address.
    unroutable: HashSet<PeerId>,
    // Relay side.
    pub(super) relay: Option<RelayState>,
    pub(super) schedule: Schedule,
    pub(super) current: Option<(RelayRecord, Vec<u8>)>,
    /// The shard keys this relay provides, one per level.
    pub(super) provided_shards: Vec<RecordKey>,
    /// The registration record, until its shard-key announcement reached a DHT peer.
    pub(super) announcing: Option<RelayRecord>,
    /// Announcements of the shard key in a row that reached no DHT peer.
    pub(super) announce_failures: u32,
    pub(super) reprovide_at: Option<Instant>,
    pub(super) reput_at: Option<Instant>,
    pub(super) locator_retry_at: Option<Instant>,
    // Reading side.
    pub(super) freshness: Freshness,
    pub(super) discoveries: HashMap<DiscoveryId, Discovery>,
    pub(super) queries: HashMap<QueryId, Query>,
    pub(super) fetches: HashMap<OutboundRequestId, (DiscoveryId, PeerId, Instant)>,
    pub(super) known: HashMap<PeerId, Known>,
    /// The shard level the next discovery starts at (where the last one ended).
    pub(super) read_level: u8,
    /// What this reader saw of providers and relays (negative cache, failed reservations).
    pub(super) trust: super::trust::Trust,
    // Storing side.
    /// Which provider records this node keeps, and where their providers connect from.
    pub(super) providers: super::provider_book::ProviderBook,
    // Client side.
    pub(super) plan: ReservationPlan,
    pub(super) listeners: HashMap<ListenerId, PeerId>,
    pub(super) lost: VecDeque<PeerId>,
    pub(super) reservation_discovery: Option<DiscoveryId>,
    pub(super) rediscover_at: Option<Instant>,
    pub(super) requests: HashMap<RequestId, SessionRequest>,
    pub(super) dials: HashMap<ConnectionId, (RequestId, PeerId)>,
    /// Dials of a relay made before dialing a circuit through it, with the circuit to dial.
    pub(super) relay_dials: HashMap<ConnectionId, (RequestId, PeerId, Multiaddr)>,
    /// The direct (not relayed) connections of each peer.
    pub(super) direct: HashMap<PeerId, HashSet<ConnectionId>>,
    pub(super) sessions: HashMap<ConnectionId, PeerId>,
    /// Whether the relays we hold reservations on still answer.
    pub(super) liveness: super::liveness::Liveness,
    /// Liveness probes in flight: the relay asked, when, and whether the probe already counted
    /// as silent (its answer is then late, but still proof of life).
    pub(super) probes: HashMap<OutboundRequestId, Probe>,
    next_id: u64,
    /// Copies of the Kademlia events, for the owner's metrics, if asked for.
    kad_log: Option<VecDeque<kad::Event>>,
    /// What the registry did, for the operator.
    pub(super) activity: Activity,
    pub(super) queue: VecDeque<ToSwarm<Event, THandlerInEvent<Inner>>>,
    timer: Delay,
    waker: Option<Waker>,
}

impl Behaviour {
    /// A registry for the node with `keypair` (the swarm's identity), running a Kademlia built
    /// from `kad_config` and `store`. The registry turns on kad's record filtering (to validate
    /// relay records before storing them); records outside its namespace are stored or handed
    /// to the application as [`RegistryConfig`]'s `other_records` says.
    pub fn new(
        keypair: &Keypair,
        mut kad_config: kad::Config,
        store: MemoryStore,
        config: RegistryConfig,
    ) -> Self {
        let local = keypair.public().to_peer_id();
        kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
        let kad = kad::Behaviour::with_config(local, store, kad_config);
        let fetch = request_response::Behaviour::with_codec(
            FetchCodec,
            [(FETCH_PROTOCOL, ProtocolSupport::Full)],
            // Reads and probes count as unanswered after `fetch_timeout` on the registry's own
            // clock; the request stays open longer so that a loaded relay's late answer to a
            // probe still proves it alive (see `liveness`).
            request_response::Config::default()
                .with_request_timeout(config.fetch_timeout * super::liveness::SILENCES_TO_DROP),
        );
        Self {
            inner: Inner { kad, fetch },
            schedule: Schedule::new(
                config.record_ttl,
                config.min_republish_interval,
                config.load_change_percent,
            ),
            plan: ReservationPlan::new(0),
            providers: super::provider_book::ProviderBook::new(&config),
            config,
            local,
            keypair: keypair.clone(),
            external: ExternalAddresses::default(),
            peer_addrs: HashMap::new(),
            unroutable: HashSet::new(),
            relay: None,
            current: None,
            provided_shards: Vec::new(),
            announcing: None,
            announce_failures: 0,
            reprovide_at: None,
            reput_at: None,
            locator_retry_at: None,
            freshness: Freshness::default(),
            discoveries: HashMap::new(),
            queries: HashMap::new(),
            fetches: HashMap::new(),
            known: HashMap::new(),
            read_level: 0,
            listeners: HashMap::new(),
            lost: VecDeque::new(),
            reservation_discovery: None,
            rediscover_at: None,
            requests: HashMap::new(),
            dials: HashMap::new(),
            relay_dials: HashMap::new(),
            direct: HashMap::new(),
            sessions: HashMap::new(),
            liveness: Default::default(),
            probes: HashMap::new(),
            next_id: 0,
            trust: Default::default(),
            kad_log: None,
            activity: Activity::default(),
            queue: VecDeque::new(),
            timer: Delay::new(TICK),
            waker: None,
        }
    }

    /// A registry with a [`MemoryStore`] and kad's default configuration (but a per-request
    /// timeout of [`fetch_timeout`](super::RegistryConfigBuilder::fetch_timeout)) under the DHT
    /// protocol name `protocol` (a private network's own, e.g. `/macula/kad/1.0.0`, or
    /// `/ipfs/kad/1.0.0` for the public DHT).
    pub fn with_protocol(
        keypair: &Keypair,
        protocol: StreamProtocol,
        config: RegistryConfig,
    ) -> Self {
        let local = keypair.public().to_peer_id();
        let mut kad_config = kad::Config::new(protocol);
        // A frozen DHT node holds each lookup that asks it for the whole per-request timeout
        // (10 s by default): bound it as a record fetch is.
        kad_config.set_substreams_timeout(config.fetch_timeout);
        // Room for every shard key of the namespace on top of kad's default.
        let store = kad::store::MemoryStoreConfig::default();
        let shard_keys: u32 = (0..config.levels)
            .map(|level| super::shard::keys_at(config.shards, level))
            .sum();
        let store = kad::store::MemoryStoreConfig {
            max_provided_keys: store.max_provided_keys + shard_keys as usize,
            ..store
        };
        Self::new(
            keypair,
            kad_config,
            MemoryStore::with_config(local, store),
            config,
        )
    }

    /// The shared Kademlia: add bootstrap addresses, set the mode, run the application's own
    /// queries (their results come as [`Event::Kad`]).
    pub fn kad(&self) -> &kad::Behaviour<MemoryStore> {
        &self.inner.kad
    }

    /// The shared Kademlia, mutably.
    pub fn kad_mut(&mut self) -> &mut kad::Behaviour<MemoryStore> {
        self.wake();
        &mut self.inner.kad
    }

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The relay's latest signed record (or withdrawal), as served to fetches.
    pub fn current_record(&self) -> Option<&RelayRecord> {
        self.current.as_ref().map(|(r, _)| r)
    }

    /// The latest signed record's envelope bytes.
    pub fn current_envelope(&self) -> Option<&[u8]> {
        self.current.as_ref().map(|(_, b)| b.as_slice())
    }

    /// Whether the relay is registered now: it published an enabled record and its
    /// announcement reached a DHT peer (as [`Event::Registered`] reports).
    pub fn is_registered(&self) -> bool {
        self.schedule.is_registered() && self.announcing.is_none()
    }

    /// What the registry did since it started, for the operator (`ctl registry`, metrics).
    pub fn activity(&self) -> Activity {
        Activity {
            shard: self
                .relay
                .is_some()
                .then(|| super::shard::shard_of(&self.local, self.config.shards)),
            ..self.activity
        }
    }

    /// From now on, keep a copy of every event of the shared Kademlia behaviour (the
    /// registry's own queries too) for [`take_kad_events`](Self::take_kad_events): the owner
    /// records them with `libp2p-metrics`. At most 1024 are kept between two calls (the oldest
    /// are dropped).
    pub fn keep_kad_events(&mut self) {
        self.kad_log.get_or_insert_with(VecDeque::new);
    }

    /// The Kademlia events since the last call (see [`keep_kad_events`](Self::keep_kad_events)).
    pub fn take_kad_events(&mut self) -> impl Iterator<Item = kad::Event> + '_ {
        self.kad_log.iter_mut().flat_map(|log| log.drain(..))
    }

    /// The relays known from the last discoveries, best first by what this reader saw of them
    /// ([`rank_by_experience`](super::rank_by_experience)). A relay leaves this list when a
    /// discovery finds it gone (withdrawn, or its record unreadable), when a reservation on it
    /// fails, or [`KNOWN_LIFETIME`] after a discovery last confirmed it.
    pub fn known_relays(&self) -> Vec<RelayCandidate> {
        let now = Instant::now();
        super::rank::rank_by_experience(
            self.known
                .values()
                .filter(|k| now.saturating_duration_since(k.confirmed) < KNOWN_LIFETIME)
                .map(|k| k.candidate.clone()),
            &self.trust,
        )
    }

    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub(super) fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    pub(super) fn emit(&mut self, event: Event) {
        self.queue.push_back(ToSwarm::GenerateEvent(event));
    }

    fn on_tick(&mut self, now: Instant) {
        self.drive_relay(now);
        self.expire_discoveries(now);
        self.drive_reservations(now);
        self.freshness
            .prune(super::record::unix_ms(std::time::SystemTime::now()));
    }

    fn on_inner(&mut self, event: InnerEvent) {
        match event {
            InnerEvent::Kad(event) => self.on_kad(event),
            InnerEvent::Fetch(event) => self.on_fetch(event),
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        if let Some(log) = self.kad_log.as_mut() {
            if log.len() >= MAX_KAD_LOG {
                log.pop_front();
            }
            log.push_back(event.clone());
        }
        match event {
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
            } if self.queries.contains_key(&id) => {
                let query = self.queries.get(&id).cloned().expect("checked");
                if step.last {
                    self.queries.remove(&id);
                }
                match query {
                    Query::Shard(discovery, level, shard) => {
                        self.on_shard_result(discovery, (level, shard), result, step.last, &stats)
                    }
                    Query::Record(discovery, relay) => {
                        self.on_record_result(discovery, relay, result, step.last, &stats)
                    }
                    Query::Locate(request) => self.on_locate_result(id, request, result, step.last),
                    Query::ProvideShard | Query::ProvideLocator | Query::Put if step.last => {
                        let failed = matches!(
                            result,
                            kad::QueryResult::StartProviding(Err(_))
                                | kad::QueryResult::PutRecord(Err(_))
                        ) || stats.num_successes() == 0;
                        self.on_publication_done(query, failed, stats.num_successes());
                    }
                    _ => {}
                }
            }
            kad::Event::InboundRequest { request } => self.on_inbound_request(request),
            kad::Event::UnroutablePeer { peer } => {
                match self.peer_addrs.remove(&peer) {
                    Some(addrs) => {
                        for addr in addrs {
                            self.inner.kad.add_address(&peer, addr);
                        }
                    }
                    None => {
                        bounded_insert(&mut self.unroutable, peer);
                    }
                }
                self.emit(Event::Kad(Box::new(kad::Event::UnroutablePeer { peer })));
            }
            other => self.emit(Event::Kad(Box::new(other))),
        }
    }
}

/// How long a discovered relay stays in [`Behaviour::known_relays`] without a discovery
/// confirming it again.
pub const KNOWN_LIFETIME: Duration = Duration::from_secs(60);

/// What a registry did since it started (see [`Behaviour::activity`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Activity {
    /// The shard this relay registers in (relay side).
    pub shard: Option<u16>,
    /// When its record or provider announcement last reached the DHT.
    pub last_published: Option<std::time::SystemTime>,
    /// Record fetches it answered with its record (readers' discoveries).
    pub records_served: u64,
    /// Discoveries this node ran.
    pub discoveries: u64,
}

/// A liveness probe in flight.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    pub(super) relay: PeerId,
    pub(super) sent: Instant,
    pub(super) late: bool,
}

/// A relay a discovery found, and when.
#[derive(Debug, Clone)]
pub(super) struct Known {
    pub(super) candidate: RelayCandidate,
    pub(super) confirmed: Instant,
}

/// Most Kademlia events kept for [`Behaviour::take_kad_events`] between two calls.
const MAX_KAD_LOG: usize = 1024;

/// Most peers remembered for address learning.
const MAX_REMEMBERED_PEERS: usize = 1024;

fn bounded_insert(set: &mut HashSet<PeerId>, peer: PeerId) {
    if set.len() >= MAX_REMEMBERED_PEERS {
        set.clear();
    }
    set.insert(peer);
}

impl Behaviour {
    /// A peer's address, as identify (or another behaviour) reported it: kad learns it if kad
    /// found the peer speaking the DHT protocol without a routable address (an inbound
    /// connection), so the application does not have to feed identify into kad.
    fn on_peer_address(&mut self, peer: PeerId, addr: &Multiaddr) {
        if addr
            .iter()
            .any(|p| p == libp2p::core::multiaddr::Protocol::P2pCircuit)
        {
            return;
        }
        if self.unroutable.remove(&peer) {
            self.inner.kad.add_address(&peer, addr.clone());
            return;
        }
        if self.peer_addrs.len() >= MAX_REMEMBERED_PEERS {
            self.peer_addrs.clear();
        }
        let addrs = self.peer_addrs.entry(peer).or_default();
        if !addrs.contains(addr) && addrs.len() < 8 {
            addrs.push(addr.clone());
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = <Inner as NetworkBehaviour>::ConnectionHandler;
    type ToSwarm = Event;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let mut addrs = self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )?;
        if let Some(known) = maybe_peer.and_then(|p| self.known.get(&p)) {
            addrs.extend(known.candidate.addrs().iter().cloned());
        }
        Ok(addrs)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if self.external.on_swarm_event(&event) {
            self.wake();
        }
        match &event {
            FromSwarm::NewExternalAddrOfPeer(e) => self.on_peer_address(e.peer_id, e.addr),
            FromSwarm::ConnectionEstablished(e) => self
                .providers
                .connected(e.peer_id, e.endpoint.get_remote_address()),
            FromSwarm::ConnectionClosed(e) => self.providers.disconnected(e.peer_id),
            _ => {}
        }
        self.on_client_swarm_event(&event);
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event)
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        let now = Instant::now();
        self.drive_relay(now);
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Poll::Ready(event);
            }
            if self.timer.poll_unpin(cx).is_ready() {
                self.timer.reset(TICK);
                self.on_tick(Instant::now());
                continue;
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => self.on_inner(event),
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(|_| unreachable!("events handled above")))
                }
                Poll::Pending => {
                    if !self.queue.is_empty() {
                        continue;
                    }
                    self.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }
    }
}
