//! The storing side of provider records: what a DHT node running the registry keeps.
//!
//! - A shard key of the namespace keeps only relays of that shard (a relay's shard is its peer
//!   id's), shared between network origins by [`admit`], each for
//!   [`shard_provider_ttl`](RegistryConfig::shard_provider_ttl) after its last renewal.
//! - Other keys (other applications', clients' locator keys) may fill at most
//!   [`other_provider_keys`] of the store's keys, so that a relay serving a busy DHT can still
//!   announce itself: kad's `MemoryStore` refuses a new key once it holds its
//!   `max_provided_keys` (1024 by default), our own included. Expired ones are purged when that
//!   share is full.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::{
    kad::{
        store::{MemoryStore, MemoryStoreConfig, RecordStore},
        ProviderRecord, RecordKey,
    },
    Multiaddr, PeerId,
};

use super::{
    provider_admission::{admit, Admission, Origin, Slot, PROVIDERS_PER_KEY},
    shard::{keys_at, level_key, level_shard_of},
    RegistryConfig,
};

/// Keys of kad's default store kept free of other keys' providers: this node's own locator key
/// and room to spare. ([`Behaviour::with_protocol`](super::Behaviour::with_protocol) adds room
/// for every shard key on top of kad's default store size.)
pub const RESERVED_PROVIDER_KEYS: usize = 64;

/// Keys other than the namespace's shard keys a node stores providers for: the provider keys
/// of kad's default `MemoryStoreConfig` (1024) less [`RESERVED_PROVIDER_KEYS`].
pub fn other_provider_keys() -> usize {
    MemoryStoreConfig::default()
        .max_provided_keys
        .saturating_sub(RESERVED_PROVIDER_KEYS)
}

/// Why a provider record was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// The provider's peer id belongs to another shard.
    #[error("provider of a shard it does not belong to")]
    WrongShard,
    /// Every slot of the shard key is held, one per origin.
    #[error("shard key full (one provider per network origin)")]
    KeyFull,
    /// Other keys fill their share of the store.
    #[error("store holds its share of other keys")]
    StoreFull,
    /// The store refused it.
    #[error("store refused it")]
    Store,
}

/// Provider bookkeeping of one node.
#[derive(Debug, Default)]
pub(crate) struct ProviderBook {
    /// The origin of each connected peer and its number of connections.
    connected: HashMap<PeerId, (Origin, usize)>,
    /// The namespace's shard keys of every level, with their level and index.
    shards: HashMap<RecordKey, (u8, u32)>,
    /// Shard keys at level 0.
    base_shards: u16,
    /// Who holds each shard key's slots, oldest first.
    slots: HashMap<RecordKey, Vec<Slot>>,
    /// Other keys stored, with when their latest provider record expires.
    others: HashMap<RecordKey, Instant>,
    /// Slots of a shard key one origin may hold.
    per_origin: usize,
    /// How long a shard-key provider record is kept after its last renewal.
    shard_ttl: Duration,
    /// Most other keys stored ([`other_provider_keys`]).
    other_keys: usize,
}

impl ProviderBook {
    /// A book for the shard keys of `config`'s namespace.
    pub(crate) fn new(config: &RegistryConfig) -> Self {
        Self {
            shards: (0..config.levels)
                .flat_map(|level| {
                    (0..keys_at(config.shards, level)).map(move |index| (level, index))
                })
                .map(|(level, index)| (level_key(&config.namespace, level, index), (level, index)))
                .collect(),
            base_shards: config.shards,
            per_origin: config.providers_per_origin,
            shard_ttl: config.shard_provider_ttl(),
            other_keys: other_provider_keys(),
            ..Self::default()
        }
    }

    /// A connection of `peer` from `addr` was established.
    pub(crate) fn connected(&mut self, peer: PeerId, addr: &Multiaddr) {
        let entry = self
            .connected
            .entry(peer)
            .or_insert((Origin::Peer(peer), 0));
        *entry = (Origin::of(peer, addr), entry.1 + 1);
    }

    /// A connection of `peer` closed.
    pub(crate) fn disconnected(&mut self, peer: PeerId) {
        if let Some(entry) = self.connected.get_mut(&peer) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.connected.remove(&peer);
            }
        }
    }

    /// Stores `record` (announced by its provider over a connection) in `store` if it may be.
    pub(crate) fn add(
        &mut self,
        store: &mut MemoryStore,
        record: ProviderRecord,
        local: PeerId,
        now: Instant,
    ) -> Result<(), Refused> {
        match self.shards.get(&record.key) {
            Some(&(level, index)) => self.add_to_shard(store, record, level, index, local, now),
            None => self.add_other(store, record, now),
        }
    }

    fn add_to_shard(
        &mut self,
        store: &mut MemoryStore,
        mut record: ProviderRecord,
        level: u8,
        index: u32,
        local: PeerId,
        now: Instant,
    ) -> Result<(), Refused> {
        if level_shard_of(&record.provider, self.base_shards, level) != index {
            return Err(Refused::WrongShard);
        }
        let origin = self
            .connected
            .get(&record.provider)
            .map_or(Origin::Peer(record.provider), |(origin, _)| *origin);
        // What the store holds now (records expire, and our own is added by kad directly).
        let stored: Vec<PeerId> = store
            .providers(&record.key)
            .into_iter()
            .filter(|p| !p.is_expired(now))
            .map(|p| p.provider)
            .collect();
        let capacity = PROVIDERS_PER_KEY - usize::from(stored.contains(&local));
        let slots = self.slots.entry(record.key.clone()).or_default();
        slots.retain(|s| stored.contains(&s.provider));
        for provider in stored.iter().filter(|p| **p != local) {
            if !slots.iter().any(|s| s.provider == *provider) {
                slots.insert(
                    0,
                    Slot {
                        provider: *provider,
                        origin: Origin::Peer(*provider),
                    },
                );
            }
        }
        let provider = record.provider;
        let decision = admit(slots, provider, origin, capacity, self.per_origin);
        tracing::trace!(%provider, ?origin, ?decision, held = slots.len(), "shard provider");
        match decision {
            Admission::Full => return Err(Refused::KeyFull),
            Admission::Replace(old) => {
                store.remove_provider(&record.key, &old);
                slots.retain(|s| s.provider != old);
            }
            Admission::Store => {}
        }
        // Expired records of others still count in the store's own cap: drop them first.
        for expired in store
            .providers(&record.key)
            .into_iter()
            .filter(|p| p.is_expired(now) && p.provider != local)
        {
            store.remove_provider(&record.key, &expired.provider);
        }
        let renewal_due = now + self.shard_ttl;
        record.expires = Some(record.expires.map_or(renewal_due, |e| e.min(renewal_due)));
        store.add_provider(record).map_err(|_| Refused::Store)?;
        slots.retain(|s| s.provider != provider);
        slots.push(Slot { provider, origin });
        Ok(())
    }

    fn add_other(
        &mut self,
        store: &mut MemoryStore,
        record: ProviderRecord,
        now: Instant,
    ) -> Result<(), Refused> {
        let expires = record
            .expires
            .unwrap_or(now + Duration::from_secs(48 * 3600));
        if !self.others.contains_key(&record.key) && self.others.len() >= self.other_keys {
            self.purge_expired(store, now);
            if self.others.len() >= self.other_keys {
                return Err(Refused::StoreFull);
            }
        }
        let key = record.key.clone();
        store.add_provider(record).map_err(|_| Refused::Store)?;
        let latest = self.others.entry(key).or_insert(expires);
        *latest = (*latest).max(expires);
        Ok(())
    }

    /// Removes the providers of other keys whose every record has expired.
    fn purge_expired(&mut self, store: &mut MemoryStore, now: Instant) {
        let expired: Vec<RecordKey> = self
            .others
            .iter()
            .filter(|(_, expires)| **expires <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            for record in store.providers(&key) {
                store.remove_provider(&key, &record.provider);
            }
            self.others.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{
        shard::{shard_key, shard_of},
        DEFAULT_PROVIDERS_PER_ORIGIN as PROVIDERS_PER_ORIGIN,
    };

    const NS: &str = "/macula/relay/1";
    const SHARDS: u16 = 8;

    fn book() -> ProviderBook {
        ProviderBook::new(&RegistryConfig::default())
    }

    fn peer_of_shard(shard: u16) -> PeerId {
        loop {
            let peer = PeerId::random();
            if shard_of(&peer, SHARDS) == shard {
                return peer;
            }
        }
    }

    fn announce(
        book: &mut ProviderBook,
        store: &mut MemoryStore,
        key: &RecordKey,
        provider: PeerId,
        from: &str,
        now: Instant,
    ) -> Result<(), Refused> {
        book.connected(provider, &from.parse().unwrap());
        let record = ProviderRecord {
            key: key.clone(),
            provider,
            // What kad gives an inbound provider record.
            expires: Some(now + Duration::from_secs(48 * 3600)),
            addresses: Vec::new(),
        };
        book.add(store, record, store_owner(), now)
    }

    fn store_owner() -> PeerId {
        PeerId::from_bytes(&[0, 2, 8, 0]).unwrap()
    }

    fn held(store: &MemoryStore, key: &RecordKey) -> Vec<PeerId> {
        store
            .providers(key)
            .into_iter()
            .map(|p| p.provider)
            .collect()
    }

    #[test]
    fn a_shard_key_keeps_only_relays_of_its_shard() {
        let mut book = book();
        let mut store = MemoryStore::new(store_owner());
        let key = shard_key(NS, 3);
        let now = Instant::now();
        let wrong = peer_of_shard(4);
        assert_eq!(
            announce(
                &mut book,
                &mut store,
                &key,
                wrong,
                "/ip4/192.0.2.1/tcp/1",
                now
            ),
            Err(Refused::WrongShard)
        );
        let right = peer_of_shard(3);
        announce(
            &mut book,
            &mut store,
            &key,
            right,
            "/ip4/192.0.2.1/tcp/1",
            now,
        )
        .unwrap();
        assert_eq!(held(&store, &key), vec![right]);
        // At a finer level, only relays of that key's shard too.
        let fine = level_shard_of(&right, SHARDS, 2);
        let fine_key = level_key(NS, 2, fine);
        announce(
            &mut book,
            &mut store,
            &fine_key,
            right,
            "/ip4/192.0.2.1/tcp/1",
            now,
        )
        .unwrap();
        let other = level_key(NS, 2, (fine + 8) % keys_at(SHARDS, 2));
        assert_eq!(
            announce(
                &mut book,
                &mut store,
                &other,
                right,
                "/ip4/192.0.2.1/tcp/1",
                now
            ),
            Err(Refused::WrongShard)
        );
    }

    #[test]
    fn a_shard_provider_that_stops_renewing_is_dropped_after_a_few_intervals() {
        let mut book = book();
        let mut store = MemoryStore::new(store_owner());
        let key = shard_key(NS, 5);
        let now = Instant::now();
        let relay = peer_of_shard(5);
        announce(
            &mut book,
            &mut store,
            &key,
            relay,
            "/ip4/192.0.2.1/tcp/1",
            now,
        )
        .unwrap();
        let record = store.providers(&key).pop().unwrap();
        let ttl = RegistryConfig::default().shard_provider_ttl();
        assert_eq!(record.expires, Some(now + ttl));
        assert!(ttl < Duration::from_secs(3 * 3600));
    }

    #[test]
    fn a_flood_from_one_network_leaves_room_for_relays_of_others() {
        let mut book = book();
        let mut store = MemoryStore::new(store_owner());
        let key = shard_key(NS, 0);
        let now = Instant::now();
        for n in 0..200u8 {
            let from = format!("/ip4/198.51.100.{n}/tcp/1");
            let _ = announce(&mut book, &mut store, &key, peer_of_shard(0), &from, now);
        }
        assert_eq!(held(&store, &key).len(), PROVIDERS_PER_ORIGIN);
        let genuine: Vec<PeerId> = (0..PROVIDERS_PER_KEY - PROVIDERS_PER_ORIGIN)
            .map(|_| peer_of_shard(0))
            .collect();
        for (n, relay) in genuine.iter().enumerate() {
            let from = format!("/ip4/203.0.{n}.7/tcp/1");
            announce(&mut book, &mut store, &key, *relay, &from, now).unwrap();
        }
        let now_held = held(&store, &key);
        assert_eq!(now_held.len(), PROVIDERS_PER_KEY);
        assert!(genuine.iter().all(|g| now_held.contains(g)));
    }

    #[test]
    fn other_keys_cannot_take_the_room_the_relay_needs_for_its_own() {
        let owner = store_owner();
        let mut book = book();
        let mut store = MemoryStore::with_config(owner, MemoryStoreConfig::default());
        let now = Instant::now();
        let mut refused = 0;
        let store_keys = MemoryStoreConfig::default().max_provided_keys;
        for n in 0..store_keys + 10 {
            let key = RecordKey::new(&format!("/other/{n}"));
            let peer = PeerId::random();
            if announce(
                &mut book,
                &mut store,
                &key,
                peer,
                "/ip4/192.0.2.9/tcp/1",
                now,
            ) == Err(Refused::StoreFull)
            {
                refused += 1;
            }
        }
        assert_eq!(refused, store_keys + 10 - other_provider_keys());
        // The relay can still announce on its shard key.
        let own = ProviderRecord {
            key: shard_key(NS, shard_of(&owner, SHARDS)),
            provider: owner,
            expires: None,
            addresses: Vec::new(),
        };
        store.add_provider(own).unwrap();
        // Once they expire, other keys get room again.
        let later = now + Duration::from_secs(49 * 3600);
        let key = RecordKey::new(&"/other/new");
        announce(
            &mut book,
            &mut store,
            &key,
            PeerId::random(),
            "/ip4/192.0.2.9/tcp/1",
            later,
        )
        .unwrap();
    }

    #[test]
    fn the_nodes_own_provider_record_is_never_replaced() {
        let owner = peer_of_shard(2);
        let mut book = book();
        let mut store = MemoryStore::new(owner);
        let key = shard_key(NS, 2);
        let now = Instant::now();
        store
            .add_provider(ProviderRecord {
                key: key.clone(),
                provider: owner,
                expires: None,
                addresses: Vec::new(),
            })
            .unwrap();
        for n in 0..100u8 {
            let from = format!("/ip4/10.{n}.0.1/tcp/1");
            let record = ProviderRecord {
                key: key.clone(),
                provider: peer_of_shard(2),
                expires: Some(now + Duration::from_secs(60)),
                addresses: Vec::new(),
            };
            book.connected(record.provider, &from.parse().unwrap());
            let _ = book.add(&mut store, record, owner, now);
        }
        let now_held = held(&store, &key);
        assert_eq!(now_held.len(), PROVIDERS_PER_KEY);
        assert!(now_held.contains(&owner));
    }
}
