//! The relay side: reads the relay's state, follows the [`Schedule`](super::schedule::Schedule)
//! and turns its decisions into DHT operations and served records.

use std::time::{Instant, SystemTime};

use libp2p::{
    core::multiaddr::Protocol,
    kad::{Quorum, Record},
};

use super::{
    behaviour::{Behaviour, Query},
    event::Event,
    record::{unix_ms, RelayRecord},
    schedule::{Action, RelayState},
    shard::{level_key, level_shard_of, record_key, shard_of},
    PublishMode,
};

fn clamp(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Behaviour {
    /// Reads the relay's status, load, limits and addresses. Call it after every swarm event
    /// (it is cheap): the registry then registers, republishes or withdraws as needed, e.g.
    /// within one poll of [`crate::Behaviour::disable`].
    pub fn observe_relay(&mut self, relay: &crate::Behaviour) {
        let stats = relay.stats();
        let config = relay.config();
        let limits = config.limits();
        // Capable: a confirmed external address or operator-set endpoints, and something the
        // relay's address hygiene lets it announce.
        let mut addrs = relay.advertised_addrs();
        // Readers refuse a record with more addresses than this: the signer keeps the first.
        addrs.truncate(super::config::MAX_RECORD_ADDRS);
        let capable = !addrs.is_empty()
            && (self
                .external
                .iter()
                .any(|a| !a.iter().any(|p| p == Protocol::P2pCircuit))
                || !config.advertised_addrs().is_empty());
        self.set_relay_state(RelayState {
            enabled: relay.is_enabled(),
            capable,
            addrs: if capable { addrs } else { Vec::new() },
            max_sessions: clamp(stats.max_sessions),
            active_sessions: clamp(stats.active_sessions + stats.pending_sessions),
            reservations: clamp(stats.reservations),
            max_reservations: clamp(stats.max_reservations),
            bandwidth: limits.bandwidth,
            session_timeout: limits.duration,
            max_session_bytes: limits.data,
        });
    }

    /// Sets the relay's state directly (for a relay other than [`crate::Behaviour`]); the
    /// registry acts on it at its next poll.
    pub fn set_relay_state(&mut self, state: RelayState) {
        if self.relay.as_ref() != Some(&state) {
            self.relay = Some(state);
            self.wake();
        }
    }

    pub(super) fn drive_relay(&mut self, now: Instant) {
        let Some(state) = self.relay.clone() else {
            return;
        };
        match self.schedule.decide(&state, now) {
            Some(Action::Register) => {
                let record = self.sign(&state, true);
                self.schedule.on_published(state, now);
                self.provide(now);
                self.put(&record);
                tracing::debug!(
                    shard = shard_of(&self.local, self.config.shards),
                    "relay registering"
                );
                // `Registered` once the announcement reached a DHT peer.
                self.announcing = Some(record);
            }
            Some(Action::Republish(reason)) => {
                let record = self.sign(&state, true);
                self.schedule.on_published(state, now);
                self.put(&record);
                tracing::debug!(?reason, "relay record republished");
                self.emit(Event::Republished { record, reason });
            }
            Some(Action::Withdraw(reason)) => {
                let record = self.sign(&state, false);
                self.schedule.on_withdrawn();
                self.announcing = None;
                for key in std::mem::take(&mut self.provided_shards) {
                    self.inner.kad.stop_providing(&key);
                }
                self.reprovide_at = None;
                self.reput_at = None;
                self.put(&record);
                tracing::info!(?reason, "relay withdrawn from the registry");
                self.emit(Event::Withdrawn { reason, record });
            }
            None => {}
        }
        if self.reprovide_at.is_some_and(|at| now >= at) {
            self.provide(now);
        }
        if self.reput_at.is_some_and(|at| now >= at) {
            self.reput_at = None;
            if let Some((record, _)) = self.current.clone() {
                self.put(&record);
            }
        }
    }

    /// A publication query finished: a registration is reported once its shard-key
    /// announcement reached a DHT peer; one that reached none is retried soon.
    pub(super) fn on_publication_done(&mut self, query: Query, failed: bool, peers: u32) {
        tracing::debug!(?query, failed, peers, "registry publication done");
        if !failed && matches!(query, Query::ProvideShard | Query::Put) {
            self.activity.last_published = Some(SystemTime::now());
        }
        if !failed && matches!(query, Query::ProvideShard) {
            self.announce_failures = 0;
            if let Some(record) = self.announcing.take() {
                tracing::info!(
                    shard = shard_of(&self.local, self.config.shards),
                    peers,
                    "relay registered"
                );
                self.emit(Event::Registered { record });
            }
        }
        if failed {
            let retry = Some(Instant::now() + super::behaviour::PUBLISH_RETRY);
            match query {
                Query::ProvideShard => {
                    self.reprovide_at = retry;
                    self.announce_failures += 1;
                    if self.announce_failures == 1 && self.announcing.is_some() {
                        tracing::warn!(
                            "relay not registered yet: its announcement reached no DHT peer \
                             (is a bootstrap node reachable?); retrying every {:?}",
                            super::behaviour::PUBLISH_RETRY
                        );
                    }
                }
                Query::ProvideLocator => self.locator_retry_at = retry,
                _ => self.reput_at = retry,
            }
        }
    }

    fn sign(&mut self, state: &RelayState, enabled: bool) -> RelayRecord {
        let (issued_at_ms, expires_at_ms) = self.schedule.stamp(unix_ms(SystemTime::now()));
        let record = RelayRecord {
            peer: self.local,
            addrs: state.addrs.clone(),
            max_sessions: state.max_sessions,
            active_sessions: state.active_sessions,
            reservations: state.reservations,
            max_reservations: state.max_reservations,
            bandwidth: state.bandwidth,
            session_timeout: state.session_timeout,
            max_session_bytes: state.max_session_bytes,
            enabled,
            issued_at_ms,
            expires_at_ms,
            namespace: self.config.namespace.clone(),
        };
        match record.sign(&self.keypair) {
            Ok(bytes) => self.current = Some((record.clone(), bytes)),
            Err(e) => tracing::error!("signing the relay record failed: {e}"),
        }
        record
    }

    /// Announces the relay on its shard key of every level (again).
    fn provide(&mut self, now: Instant) {
        self.provided_shards = self.own_shard_keys();
        self.reprovide_at = Some(now + self.config.reprovide_interval);
        for key in self.provided_shards.clone() {
            match self.inner.kad.start_providing(key) {
                Ok(query) => {
                    self.queries.insert(query, Query::ProvideShard);
                }
                Err(e) => {
                    // The local provider store is full (other peers' records): try again soon
                    // rather than at the next renewal.
                    tracing::warn!("cannot provide a shard key: {e}; retrying");
                    self.reprovide_at = Some(now + super::behaviour::PUBLISH_RETRY);
                }
            }
        }
    }

    /// This relay's shard key at each level.
    fn own_shard_keys(&self) -> Vec<libp2p::kad::RecordKey> {
        (0..self.config.levels)
            .map(|level| {
                let index = level_shard_of(&self.local, self.config.shards, level);
                level_key(&self.config.namespace, level, index)
            })
            .collect()
    }

    /// In records mode, puts the signed record (or withdrawal) under the relay's record key.
    fn put(&mut self, record: &RelayRecord) {
        if self.config.mode != PublishMode::ProvidersAndRecords {
            return;
        }
        let Some((_, bytes)) = &self.current else {
            return;
        };
        let lifetime = record
            .expires_at()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let mut dht_record = Record::new(
            record_key(&self.config.namespace, &self.local),
            bytes.clone(),
        );
        dht_record.expires = Some(Instant::now() + lifetime);
        match self.inner.kad.put_record(dht_record, Quorum::One) {
            Ok(query) => {
                self.queries.insert(query, Query::Put);
            }
            Err(e) => tracing::warn!("cannot store the relay record: {e}"),
        }
    }

    /// Answers a record fetch with the current record, if any.
    pub(super) fn on_fetch_request(
        &mut self,
        request: super::fetch::FetchRequest,
        channel: libp2p::request_response::ResponseChannel<super::fetch::FetchResponse>,
    ) {
        let envelope = (request.namespace == self.config.namespace)
            .then(|| self.current.as_ref().map(|(_, b)| b.clone()))
            .flatten();
        if envelope.is_some() {
            self.activity.records_served += 1;
        }
        let _ = self
            .inner
            .fetch
            .send_response(channel, super::fetch::FetchResponse { envelope });
    }
}
