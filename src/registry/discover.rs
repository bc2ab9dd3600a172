//! The reading side: `discover_relays` reads shard keys for relay providers, reads each relay's
//! signed record (fetched from the relay, or looked up in the DHT in records mode), verifies it
//! and ranks the result.

use std::{
    collections::{HashMap, HashSet},
    time::{Instant, SystemTime},
};

use libp2p::{
    core::Endpoint,
    kad::{GetProvidersOk, GetRecordOk, QueryResult, QueryStats},
    request_response::{self, Message},
    swarm::{ConnectionId, NetworkBehaviour},
    PeerId,
};
use rand::thread_rng;

use super::{
    behaviour::{Behaviour, Query},
    event::{DiscoveryId, DiscoveryStats, Event, RejectedAt},
    fetch::{FetchRequest, FetchResponse},
    rank::{rank, RelayCandidate},
    record::unix_ms,
    shard::{read_order, record_key, shard_key},
    verify::{verify, Expectation, RecordError},
    PublishMode,
};

/// One discovery in progress.
#[derive(Debug)]
pub(super) struct Discovery {
    started: Instant,
    /// Shards not read yet, in reading order.
    order: Vec<u16>,
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
        let order = read_order(self.config.shards, &mut thread_rng());
        self.discoveries.insert(
            id,
            Discovery {
                started: Instant::now(),
                order,
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
        let shards: Vec<u16> = discovery.order.drain(..take).collect();
        discovery.shards_in_flight += shards.len();
        discovery.stats.shards_read += shards.len();
        discovery.stats.dht_lookups += shards.len();
        for shard in shards {
            let query = self
                .inner
                .kad
                .get_providers(shard_key(&self.config.namespace, shard));
            self.queries.insert(query, Query::Shard(id));
        }
        self.maybe_finish(id);
    }

    pub(super) fn on_shard_result(
        &mut self,
        id: DiscoveryId,
        result: QueryResult,
        last: bool,
        stats: &QueryStats,
    ) {
        if let QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) =
            result
        {
            for provider in providers {
                self.on_provider(id, provider);
            }
        }
        if last {
            if let Some(d) = self.discoveries.get_mut(&id) {
                d.shards_in_flight -= 1;
                d.stats.dht_requests += stats.num_requests();
            }
            self.maybe_finish(id);
        }
    }

    fn on_provider(&mut self, id: DiscoveryId, provider: PeerId) {
        let max_reads = self.config.max_record_reads;
        let Some(d) = self.discoveries.get_mut(&id) else {
            return;
        };
        if !d.providers.insert(provider) || d.stats.record_reads >= max_reads {
            return;
        }
        if provider == self.local {
            if let Some((record, _)) = self.current.clone() {
                d.results
                    .insert(provider, RelayCandidate { record, rtt: None });
            }
            return;
        }
        d.stats.record_reads += 1;
        d.reads_in_flight += 1;
        match self.config.mode {
            PublishMode::Providers => {
                // The provider's addresses live only in the running lookup: take them now.
                let addrs = self
                    .inner
                    .kad
                    .handle_pending_outbound_connection(
                        ConnectionId::new_unchecked(usize::MAX),
                        Some(provider),
                        &[],
                        Endpoint::Dialer,
                    )
                    .unwrap_or_default();
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
            if let Some(d) = self.discoveries.get_mut(&id) {
                d.reads_in_flight -= 1;
                d.stats.dht_requests += stats.num_requests();
            }
            self.maybe_finish(id);
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
                let Some((id, relay, sent)) = self.fetches.remove(&request_id) else {
                    return;
                };
                match response.envelope {
                    Some(bytes) => self.on_record_bytes(id, relay, peer, &bytes, Some(sent)),
                    None => self.count_rejected(id),
                }
                self.read_done(id);
            }
            request_response::Event::OutboundFailure {
                request_id,
                peer,
                error,
                ..
            } => {
                let Some((id, _, _)) = self.fetches.remove(&request_id) else {
                    return;
                };
                tracing::debug!(%peer, %error, "relay record fetch failed");
                self.count_rejected(id);
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
            Err(error) => self.reject_read(id, from, error),
        }
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
            d.reads_in_flight -= 1;
        }
        self.maybe_finish(id);
    }

    fn maybe_finish(&mut self, id: DiscoveryId) {
        let target = self.config.discovery_target;
        let Some(d) = self.discoveries.get(&id) else {
            return;
        };
        if d.shards_in_flight > 0 || d.reads_in_flight > 0 {
            return;
        }
        let enabled = d.results.values().filter(|c| c.record.enabled).count();
        if enabled < target && !d.order.is_empty() {
            self.next_round(id);
            return;
        }
        let mut d = self.discoveries.remove(&id).expect("present");
        d.stats.elapsed = d.started.elapsed();
        for (peer, candidate) in &d.results {
            if candidate.record.enabled {
                self.known.insert(*peer, candidate.clone());
            } else {
                self.known.remove(peer);
            }
        }
        let relays = rank(d.results.into_values());
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
