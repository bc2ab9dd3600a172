//! The reading side: `discover_relays` reads shard keys for relay providers, reads each relay's
//! signed record (fetched from the relay, or looked up in the DHT in records mode), verifies it
//! and ranks the result.
//!
//! Hostile providers cost little: a provider of a shard it does not belong to is ignored (a
//! relay's shard is its peer id's), one that failed a read is skipped for
//! [`NEGATIVE_TTL`](super::NEGATIVE_TTL), reads run a bounded number at a time in a random order,
//! and the discovery reports what it has at its deadline whatever is still outstanding.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::{Instant, SystemTime},
};

use libp2p::{
    core::Endpoint,
    kad::{GetProvidersOk, GetRecordOk, QueryResult, QueryStats},
    request_response::{self, Message},
    swarm::{ConnectionId, NetworkBehaviour},
    Multiaddr, PeerId,
};
use rand::{seq::SliceRandom, thread_rng};

use super::{
    behaviour::{Behaviour, Known, Query, KNOWN_LIFETIME},
    config::FULL_KEY_PROVIDERS,
    event::{DiscoveryId, DiscoveryStats, Event, RejectedAt},
    fetch::{FetchRequest, FetchResponse},
    rank::{rank_by_experience, RelayCandidate},
    record::unix_ms,
    shard::{keys_at, level_key, level_shard_of, read_order, record_key, LEVEL_FANOUT},
    verify::{verify, Expectation, RecordError},
    PublishMode,
};

/// How long record reads above the finest shard level wait for the round's lookups before
/// they start with the providers found so far.
pub const READ_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a round of shard lookups may run before the next round starts beside it (while
/// the discovery still lacks candidates): a lookup held by a peer that never answers must not
/// hold the discovery.
pub const ROUND_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// One discovery in progress.
#[derive(Debug)]
pub(super) struct Discovery {
    started: Instant,
    /// When it reports, whatever is outstanding.
    deadline: Instant,
    /// Providers found and not read yet, with the addresses the lookup gave for them (they live
    /// only as long as the lookup runs).
    queue: VecDeque<(PeerId, Vec<Multiaddr>)>,
    /// Providers whose read failed in this discovery.
    failed: HashSet<PeerId>,
    /// The shard level being read.
    level: u8,
    /// Shards of that level not read yet, in reading order.
    order: Vec<u32>,
    /// The providers each key of that level returned.
    key_providers: HashMap<u32, HashSet<PeerId>>,
    /// Whether a key of that level returned [`FULL_KEY_PROVIDERS`] or more: its relays are
    /// the first-come part of a larger set, and the next level is read instead.
    full: bool,
    /// When the current round of lookups started.
    round_started: Instant,
    shards_in_flight: usize,
    reads_in_flight: usize,
    providers: HashSet<PeerId>,
    results: HashMap<PeerId, RelayCandidate>,
    stats: DiscoveryStats,
}

impl Behaviour {
    /// Looks for relays: reads shard keys (a random order, a few at a time) until it has
    /// [`discovery_target`](super::RegistryConfigBuilder::discovery_target) verified relays or
    /// has read every shard, reads and verifies each relay's record, and reports the enabled
    /// ones, most spare capacity first, as [`Event::RelaysDiscovered`].
    pub fn discover_relays(&mut self) -> DiscoveryId {
        let id = DiscoveryId(self.next_id());
        self.activity.discoveries += 1;
        let level = self.read_level.min(self.config.levels.saturating_sub(1));
        let order = read_order(keys_at(self.config.shards, level), &mut thread_rng());
        self.discoveries.insert(
            id,
            Discovery {
                started: Instant::now(),
                deadline: Instant::now() + self.config.discovery_timeout,
                queue: VecDeque::new(),
                failed: HashSet::new(),
                level,
                order,
                key_providers: HashMap::new(),
                full: false,
                round_started: Instant::now(),
                shards_in_flight: 0,
                reads_in_flight: 0,
                providers: HashSet::new(),
                results: HashMap::new(),
                stats: DiscoveryStats::default(),
            },
        );
        self.next_round(id);
        self.wake();
        id
    }

    fn next_round(&mut self, id: DiscoveryId) {
        let per_round = self.config.shards_per_round;
        let Some(discovery) = self.discoveries.get_mut(&id) else {
            return;
        };
        let take = per_round.min(discovery.order.len());
        let shards: Vec<u32> = discovery.order.drain(..take).collect();
        let level = discovery.level;
        discovery.round_started = Instant::now();
        discovery.shards_in_flight += shards.len();
        discovery.stats.shards_read += shards.len();
        discovery.stats.dht_lookups += shards.len();
        for shard in shards {
            let query =
                self.inner
                    .kad
                    .get_providers(level_key(&self.config.namespace, level, shard));
            self.queries.insert(query, Query::Shard(id, level, shard));
        }
        self.maybe_finish(id);
    }

    pub(super) fn on_shard_result(
        &mut self,
        id: DiscoveryId,
        (level, shard): (u8, u32),
        result: QueryResult,
        last: bool,
        stats: &QueryStats,
    ) {
        if let QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) =
            result
        {
            let mut providers: Vec<PeerId> = providers.into_iter().collect();
            providers.shuffle(&mut thread_rng());
            for provider in providers {
                self.on_provider(id, (level, shard), provider);
            }
            self.pump_reads(id);
        }
        if last {
            if let Some(d) = self.discoveries.get_mut(&id) {
                d.shards_in_flight -= 1;
                d.stats.dht_requests += stats.num_requests();
                if d.level == level {
                    let returned = d.key_providers.entry(shard).or_default().len();
                    d.full |= returned >= FULL_KEY_PROVIDERS;
                }
            }
            self.maybe_finish(id);
        }
    }

    /// A provider of `shard` at `level` found: queued for a read unless it cannot be a relay
    /// of that shard, failed a read lately, or was seen already.
    fn on_provider(&mut self, id: DiscoveryId, (level, shard): (u8, u32), provider: PeerId) {
        let shards = self.config.shards;
        let bad = self.trust.is_bad(&provider, Instant::now());
        let Some(d) = self.discoveries.get_mut(&id) else {
            return;
        };
        if d.level != level {
            // A lookup of a level left behind.
            return;
        }
        let in_shard = level_shard_of(&provider, shards, level) == shard;
        if in_shard {
            let of_key = d.key_providers.entry(shard).or_default();
            of_key.insert(provider);
            d.full |= of_key.len() >= FULL_KEY_PROVIDERS;
        }
        if !d.providers.insert(provider) {
            return;
        }
        if !in_shard {
            d.stats.wrong_shard += 1;
            return;
        }
        if provider == self.local {
            if let Some((record, _)) = self.current.clone() {
                d.results
                    .insert(provider, RelayCandidate { record, rtt: None });
            }
            return;
        }
        if bad {
            d.stats.skipped_bad += 1;
            return;
        }
        // The provider's addresses live only in the running lookup: take them now.
        let addrs = match self.config.mode {
            PublishMode::Providers => self
                .inner
                .kad
                .handle_pending_outbound_connection(
                    ConnectionId::new_unchecked(usize::MAX),
                    Some(provider),
                    &[],
                    Endpoint::Dialer,
                )
                .unwrap_or_default(),
            PublishMode::ProvidersAndRecords => Vec::new(),
        };
        if let Some(d) = self.discoveries.get_mut(&id) {
            d.queue.push_back((provider, addrs));
        }
    }

    /// Starts reads from the queue while fewer than
    /// [`parallel_reads`](super::RegistryConfigBuilder::parallel_reads) are in flight and the
    /// discovery has reads left.
    fn pump_reads(&mut self, id: DiscoveryId) {
        let (parallel, max_reads) = (self.config.parallel_reads, self.config.max_record_reads);
        let levels = self.config.levels;
        loop {
            let Some(d) = self.discoveries.get_mut(&id) else {
                return;
            };
            if d.reads_in_flight >= parallel || d.stats.record_reads >= max_reads {
                return;
            }
            // Above the finest level, reads wait for the round's lookups (at most
            // `READ_GRACE`: one peer that never answers must not hold them): if a key turns
            // out full, the next level is read instead, and the first-come relays of a large
            // fleet are not fetched by every client.
            let waiting = d.shards_in_flight > 0 && d.round_started.elapsed() < READ_GRACE;
            if d.level + 1 < levels && (waiting || d.full) {
                return;
            }
            let Some((provider, addrs)) = d.queue.pop_front() else {
                return;
            };
            self.start_read(id, provider, addrs);
        }
    }

    fn start_read(&mut self, id: DiscoveryId, provider: PeerId, addrs: Vec<Multiaddr>) {
        let Some(d) = self.discoveries.get_mut(&id) else {
            return;
        };
        d.stats.record_reads += 1;
        d.reads_in_flight += 1;
        match self.config.mode {
            PublishMode::Providers => {
                let request = FetchRequest {
                    namespace: self.config.namespace.clone(),
                };
                let request_id = self
                    .inner
                    .fetch
                    .send_request_with_addresses(&provider, request, addrs);
                self.fetches
                    .insert(request_id, (id, provider, Instant::now()));
            }
            PublishMode::ProvidersAndRecords => {
                d.stats.dht_lookups += 1;
                let query = self
                    .inner
                    .kad
                    .get_record(record_key(&self.config.namespace, &provider));
                self.queries.insert(query, Query::Record(id, provider));
            }
        }
    }

    pub(super) fn on_record_result(
        &mut self,
        id: DiscoveryId,
        relay: PeerId,
        result: QueryResult,
        last: bool,
        stats: &QueryStats,
    ) {
        if let QueryResult::GetRecord(Ok(GetRecordOk::FoundRecord(found))) = result {
            let from = found.peer.unwrap_or(self.local);
            self.on_record_bytes(id, relay, from, &found.record.value, None);
        }
        if last {
            let found = self
                .discoveries
                .get(&id)
                .is_some_and(|d| d.results.contains_key(&relay));
            if !found {
                // Not in the DHT (yet, or any more): no usable record, but no proof that the
                // relay itself misbehaves, so it is not skipped later.
                if let Some(d) = self.discoveries.get_mut(&id) {
                    d.failed.insert(relay);
                }
            }
            if let Some(d) = self.discoveries.get_mut(&id) {
                d.stats.dht_requests += stats.num_requests();
            }
            self.read_done(id);
        }
    }

    pub(super) fn on_fetch(&mut self, event: request_response::Event<FetchRequest, FetchResponse>) {
        match event {
            request_response::Event::Message {
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.on_fetch_request(request, channel),
            request_response::Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(probe) = self.probes.remove(&request_id) {
                    self.on_probe_answer(probe);
                    return;
                }
                let Some((id, relay, sent)) = self.fetches.remove(&request_id) else {
                    return;
                };
                match response.envelope {
                    Some(bytes) => self.on_record_bytes(id, relay, peer, &bytes, Some(sent)),
                    None => {
                        self.count_rejected(id);
                        self.read_failed(id, relay);
                    }
                }
                self.read_done(id);
            }
            request_response::Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            } => {
                if let Some(probe) = self.probes.remove(&request_id) {
                    match error {
                        // Alive, just not serving records: nothing to judge.
                        request_response::OutboundFailure::UnsupportedProtocols => {
                            self.on_probe_answer(probe)
                        }
                        // Already counted as silent when it ran late.
                        _ if probe.late => {}
                        _ => self.on_probe_silent(probe.relay, Instant::now()),
                    }
                    return;
                }
                let Some((id, relay, _)) = self.fetches.remove(&request_id) else {
                    return;
                };
                tracing::debug!(%peer, %error, "relay record fetch failed");
                self.count_rejected(id);
                match error {
                    // Unreachable or silent (dead, frozen, no address known yet, or loaded):
                    // once may be bad luck; twice lately, it is skipped, so that dead
                    // providers whose records outlive them stop costing reads.
                    request_response::OutboundFailure::DialFailure
                    | request_response::OutboundFailure::Timeout
                    | request_response::OutboundFailure::ConnectionClosed
                    | request_response::OutboundFailure::Io(_) => {
                        self.trust.silent(relay, Instant::now());
                        if let Some(d) = self.discoveries.get_mut(&id) {
                            d.failed.insert(relay);
                        }
                    }
                    // It answered, but does not serve records: skipped.
                    _ => self.read_failed(id, relay),
                }
                self.read_done(id);
            }
            _ => {}
        }
    }

    fn on_record_bytes(
        &mut self,
        id: DiscoveryId,
        relay: PeerId,
        from: PeerId,
        bytes: &[u8],
        sent: Option<Instant>,
    ) {
        let namespace = self.config.namespace.clone();
        let expect = Expectation {
            namespace: &namespace,
            peer: Some(relay),
            now_ms: unix_ms(SystemTime::now()),
            max_skew: self.config.max_clock_skew,
        };
        let checked = verify(bytes, &expect).and_then(|record| {
            self.freshness.admit(&record)?;
            Ok(record)
        });
        match checked {
            Ok(record) => {
                if from == relay {
                    self.trust.answered(&relay);
                }
                let candidate = RelayCandidate {
                    record,
                    rtt: sent.map(|s| s.elapsed()),
                };
                if let Some(d) = self.discoveries.get_mut(&id) {
                    let newer = d
                        .results
                        .get(&relay)
                        .is_none_or(|c| c.record.issued_at_ms <= candidate.record.issued_at_ms);
                    if newer {
                        d.results.insert(relay, candidate);
                    }
                }
            }
            Err(error) => {
                self.reject_read(id, from, error);
                // Skipped later only if the relay served it itself: a DHT node serving a forgery
                // must not get a genuine relay skipped.
                if from == relay {
                    self.read_failed(id, relay);
                }
            }
        }
    }

    /// A read of `relay`'s record failed: it is skipped for a while, and leaves the known
    /// relays when the discovery reports.
    fn read_failed(&mut self, id: DiscoveryId, relay: PeerId) {
        self.trust.mark_bad(relay, Instant::now());
        if let Some(d) = self.discoveries.get_mut(&id) {
            d.failed.insert(relay);
        }
    }

    /// Reports every discovery whose deadline has passed, with what it has read. A record
    /// fetch unanswered after the fetch timeout is a silence, whatever the transport's own
    /// (longer) stream timeouts say: a frozen relay costs a read its timeout, not the
    /// discovery its deadline.
    pub(super) fn expire_discoveries(&mut self, now: Instant) {
        let timeout = self.config.fetch_timeout;
        let late: Vec<_> = self
            .fetches
            .iter()
            .filter(|(_, (_, _, sent))| now.saturating_duration_since(*sent) >= timeout)
            .map(|(request, (id, relay, _))| (*request, *id, *relay))
            .collect();
        // Reads held back for a round's lookups start once `READ_GRACE` has passed; a round
        // running past `ROUND_PATIENCE` gets the next one beside it.
        let target = self.config.discovery_target;
        let running: Vec<DiscoveryId> = self.discoveries.keys().copied().collect();
        for id in running {
            self.pump_reads(id);
            let slow = self.discoveries.get(&id).is_some_and(|d| {
                d.shards_in_flight > 0
                    && !d.order.is_empty()
                    && d.round_started.elapsed() >= ROUND_PATIENCE
                    && d.results.values().filter(|c| c.record.enabled).count() < target
            });
            if slow {
                self.next_round(id);
            }
        }
        for (request, id, relay) in late {
            self.fetches.remove(&request);
            tracing::debug!(%relay, "relay record fetch unanswered");
            self.count_rejected(id);
            self.trust.silent(relay, now);
            if let Some(d) = self.discoveries.get_mut(&id) {
                d.failed.insert(relay);
            }
            self.read_done(id);
        }
        let late: Vec<DiscoveryId> = self
            .discoveries
            .iter()
            .filter(|(_, d)| d.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(d) = self.discoveries.get_mut(&id) {
                d.stats.timed_out = true;
            }
            self.finish(id);
        }
        self.trust.prune(now);
    }

    fn reject_read(&mut self, id: DiscoveryId, from: PeerId, error: RecordError) {
        tracing::info!(%from, %error, "relay record refused");
        self.count_rejected(id);
        self.emit(Event::RecordRejected {
            at: RejectedAt::Reading,
            from,
            error,
        });
    }

    fn count_rejected(&mut self, id: DiscoveryId) {
        if let Some(d) = self.discoveries.get_mut(&id) {
            d.stats.rejected += 1;
        }
    }

    fn read_done(&mut self, id: DiscoveryId) {
        if let Some(d) = self.discoveries.get_mut(&id) {
            d.reads_in_flight = d.reads_in_flight.saturating_sub(1);
        }
        self.pump_reads(id);
        self.maybe_finish(id);
    }

    fn maybe_finish(&mut self, id: DiscoveryId) {
        let target = self.config.discovery_target;
        let levels = self.config.levels;
        let Some(d) = self.discoveries.get_mut(&id) else {
            return;
        };
        if d.full && d.level + 1 < levels {
            self.abandon_lookups(id);
            let Some(d) = self.discoveries.get_mut(&id) else {
                return;
            };
            // This level's keys are full: what they hold is the first-come part of the fleet.
            // Read the next level, whose keys hold an eighth as many, and keep only what it
            // gives, so that clients spread over the whole fleet.
            d.level += 1;
            d.full = false;
            d.order = read_order(keys_at(self.config.shards, d.level), &mut thread_rng());
            d.key_providers.clear();
            d.results.clear();
            d.queue.clear();
            d.providers.clear();
            d.stats.levels_descended += 1;
            self.read_level = d.level;
            self.next_round(id);
            return;
        }
        if d.shards_in_flight > 0 {
            // Reads held back while the round's lookups run start after `READ_GRACE`.
            self.pump_reads(id);
            return;
        }
        // Reads held back while the round's lookups ran.
        self.pump_reads(id);
        let Some(d) = self.discoveries.get(&id) else {
            return;
        };
        let reads_left = d.stats.record_reads < self.config.max_record_reads;
        if d.reads_in_flight > 0 || (reads_left && !d.queue.is_empty()) {
            return;
        }
        let enabled = d.results.values().filter(|c| c.record.enabled).count();
        if enabled < target && !d.order.is_empty() {
            self.next_round(id);
            return;
        }
        self.finish(id);
    }

    /// Stops discovery `id`'s lookups still running (a deadline passed, or their level was
    /// left for the next).
    fn abandon_lookups(&mut self, id: DiscoveryId) {
        let outstanding: Vec<_> = self
            .queries
            .iter()
            .filter(|(_, q)| matches!(q, Query::Shard(of, ..) | Query::Record(of, _) if *of == id))
            .map(|(query, _)| *query)
            .collect();
        for query in outstanding {
            let shard = matches!(self.queries.remove(&query), Some(Query::Shard(..)));
            let requests = self.inner.kad.query_mut(&query).map_or(0, |mut running| {
                running.finish();
                running.stats().num_requests()
            });
            if let Some(d) = self.discoveries.get_mut(&id) {
                // What it cost so far counts too.
                d.stats.dht_requests += requests;
                if shard {
                    d.shards_in_flight = d.shards_in_flight.saturating_sub(1);
                }
            }
        }
    }

    /// Reports discovery `id` with what it has: known relays follow (found ones confirmed,
    /// withdrawn and unreadable ones dropped, stale ones expired).
    fn finish(&mut self, id: DiscoveryId) {
        // Its lookups still running (a deadline passed) are of no use any more.
        self.abandon_lookups(id);
        let Some(mut d) = self.discoveries.remove(&id) else {
            return;
        };
        self.read_level = next_read_level(&d);
        let now = Instant::now();
        d.stats.elapsed = d.started.elapsed();
        for (peer, candidate) in &d.results {
            if candidate.record.enabled {
                self.known.insert(
                    *peer,
                    Known {
                        candidate: candidate.clone(),
                        confirmed: now,
                    },
                );
            } else {
                self.known.remove(peer);
            }
        }
        for peer in &d.failed {
            if !d.results.contains_key(peer) {
                self.known.remove(peer);
            }
        }
        self.known
            .retain(|_, k| now.saturating_duration_since(k.confirmed) < KNOWN_LIFETIME);
        let relays = rank_by_experience(d.results.into_values(), &self.trust);
        tracing::debug!(relays = relays.len(), stats = ?d.stats, "discovery finished");
        self.emit(Event::RelaysDiscovered {
            id,
            relays,
            stats: d.stats,
        });
        if self.reservation_discovery == Some(id) {
            self.reservation_discovery = None;
            self.apply_plan(Instant::now());
        }
    }
}

/// The level the next discovery starts at: the one this discovery ended at, or the one above
/// when that would not be full either (the fleet shrank): the keys read here held so few
/// relays that [`LEVEL_FANOUT`] of them together stay under [`FULL_KEY_PROVIDERS`].
fn next_read_level(d: &Discovery) -> u8 {
    if d.level == 0 || d.full || d.key_providers.is_empty() {
        return d.level;
    }
    let read = d.key_providers.len();
    let found: usize = d.key_providers.values().map(HashSet::len).sum();
    let per_coarser_key = found * LEVEL_FANOUT as usize / read;
    if per_coarser_key < FULL_KEY_PROVIDERS {
        d.level - 1
    } else {
        d.level
    }
}
