//! DHT keys of a namespace, free of I/O: the shard keys relays provide, which shard a relay
//! picks, the order a client reads them in, the per-relay record key and the per-peer locator
//! key.
//!
//! Shard keys come in **levels**: level 0 has `shards` keys, each further level
//! [`LEVEL_FANOUT`] times as many. A relay provides one key per level (its peer id's hash
//! modulo the level's key count, so its level-ℓ key refines its level-0 one); a reader starts
//! at the coarsest level and reads a finer one when the keys it read are full, so the fleet it
//! can see grows eightfold per level while a discovery still reads a bounded number of keys.
//! Level 0's keys are the original single-level keys, and adding a level never renames a key:
//! relays and readers that know fewer levels keep working with those that know more.
//!
//! Provider keys are sha2-256 multihashes (what every Kademlia, including go-libp2p's, accepts
//! for `ADD_PROVIDER`); the record key is a `/`-namespaced path, the form custom DHT records take.

use libp2p::{kad::RecordKey, PeerId};
use rand::seq::SliceRandom;
use sha2::{Digest, Sha256};

/// Multihash code of sha2-256 and its digest length.
const SHA2_256: [u8; 2] = [0x12, 0x20];

fn multihash_key(text: &[u8]) -> RecordKey {
    let digest = Sha256::digest(text);
    let mut bytes = SHA2_256.to_vec();
    bytes.extend_from_slice(&digest);
    RecordKey::new(&bytes)
}

/// The provider key of shard `shard`: `sha256("<namespace>/shard/<shard>")` as a multihash.
pub fn shard_key(namespace: &str, shard: u16) -> RecordKey {
    multihash_key(format!("{namespace}/shard/{shard}").as_bytes())
}

/// The shard a relay provides on: its peer id hashed, modulo the shard count. Stable across
/// restarts (a relay never sits in two shards) and uniform over peer ids.
pub fn shard_of(peer: &PeerId, shards: u16) -> u16 {
    (peer_hash(peer) % u64::from(shards.max(1))) as u16
}

fn peer_hash(peer: &PeerId) -> u64 {
    let digest = Sha256::digest(peer.to_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(head)
}

/// How many times as many keys each level has as the one above it.
pub const LEVEL_FANOUT: u32 = 8;

/// The number of shard keys at `level` for `shards` keys at level 0.
pub fn keys_at(shards: u16, level: u8) -> u32 {
    u32::from(shards.max(1)).saturating_mul(LEVEL_FANOUT.saturating_pow(u32::from(level)))
}

/// The provider key of shard `index` at `level`: level 0's are [`shard_key`]s, level ℓ ≥ 1's
/// `sha256("<namespace>/shard/<ℓ>/<index>")` as a multihash.
pub fn level_key(namespace: &str, level: u8, index: u32) -> RecordKey {
    match (level, u16::try_from(index)) {
        (0, Ok(shard)) => shard_key(namespace, shard),
        _ => multihash_key(format!("{namespace}/shard/{level}/{index}").as_bytes()),
    }
}

/// The shard of `peer` at `level` (at level 0, [`shard_of`]).
pub fn level_shard_of(peer: &PeerId, shards: u16, level: u8) -> u32 {
    (peer_hash(peer) % u64::from(keys_at(shards, level))) as u32
}

/// The shards a client reads, in a random order, so that clients spread their reads over all
/// keys (no key is read more often than another).
pub fn read_order(shards: u32, rng: &mut impl rand::Rng) -> Vec<u32> {
    let mut order: Vec<u32> = (0..shards).collect();
    order.shuffle(rng);
    order
}

/// The DHT record key of `peer`'s relay record: `<namespace>/record/<peer id bytes>`.
pub fn record_key(namespace: &str, peer: &PeerId) -> RecordKey {
    let mut bytes = format!("{namespace}/record/").into_bytes();
    bytes.extend_from_slice(&peer.to_bytes());
    RecordKey::new(&bytes)
}

/// The relay a record key names, if the key is a record key of `namespace`.
pub fn peer_of_record_key(namespace: &str, key: &RecordKey) -> Option<PeerId> {
    let prefix = format!("{namespace}/record/");
    let rest = key.as_ref().strip_prefix(prefix.as_bytes())?;
    PeerId::from_bytes(rest).ok()
}

/// Whether `key` is a record key of `namespace` (even a malformed one, which is refused).
pub fn is_record_key(namespace: &str, key: &RecordKey) -> bool {
    key.as_ref()
        .starts_with(format!("{namespace}/record/").as_bytes())
}

/// The provider key under which a peer reachable through relays announces itself:
/// `sha256("<namespace>/peer/<peer id bytes>")`. A peer that knows only the id finds the
/// peer's relayed addresses there.
pub fn locator_key(namespace: &str, peer: &PeerId) -> RecordKey {
    let mut text = format!("{namespace}/peer/").into_bytes();
    text.extend_from_slice(&peer.to_bytes());
    multihash_key(&text)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    const NS: &str = "/macula/relay/1";

    #[test]
    fn shard_keys_are_distinct_sha256_multihashes() {
        let keys: HashSet<_> = (0..8).map(|s| shard_key(NS, s)).collect();
        assert_eq!(keys.len(), 8);
        let key = shard_key(NS, 0);
        assert_eq!(key.as_ref().len(), 34);
        assert_eq!(&key.as_ref()[..2], &[0x12, 0x20]);
        assert_ne!(shard_key("/other/1", 0), key);
    }

    #[test]
    fn a_relay_always_picks_the_same_shard() {
        let peer = PeerId::random();
        assert_eq!(shard_of(&peer, 8), shard_of(&peer, 8));
        assert!(shard_of(&peer, 8) < 8);
        assert_eq!(shard_of(&peer, 1), 0);
    }

    #[test]
    fn relays_spread_evenly_over_shards() {
        let mut counts = [0u32; 8];
        for _ in 0..8000 {
            counts[usize::from(shard_of(&PeerId::random(), 8))] += 1;
        }
        // 1000 expected per shard; 5 standard deviations is about 150.
        assert!(counts.iter().all(|c| (850..1150).contains(c)), "{counts:?}");
    }

    #[test]
    fn a_relays_key_at_each_level_refines_its_level_0_key() {
        for _ in 0..200 {
            let peer = PeerId::random();
            let base = shard_of(&peer, 8);
            assert_eq!(level_shard_of(&peer, 8, 0), u32::from(base));
            for level in 1..4 {
                let index = level_shard_of(&peer, 8, level);
                assert!(index < keys_at(8, level));
                assert_eq!(index % 8, u32::from(base));
                assert_eq!(
                    index % keys_at(8, level - 1),
                    level_shard_of(&peer, 8, level - 1)
                );
            }
        }
        assert_eq!(keys_at(8, 2), 512);
    }

    #[test]
    fn level_0_keys_are_the_single_level_keys_and_levels_never_share_a_key() {
        assert_eq!(level_key(NS, 0, 5), shard_key(NS, 5));
        let keys: HashSet<_> = (0..3u8)
            .flat_map(|level| (0..keys_at(8, level)).map(move |i| level_key(NS, level, i)))
            .collect();
        assert_eq!(keys.len(), 8 + 64 + 512);
    }

    #[test]
    fn read_order_covers_every_shard_once() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut order = read_order(8, &mut rng);
        order.sort_unstable();
        assert_eq!(order, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn record_keys_name_their_relay_and_nothing_else() {
        let peer = PeerId::random();
        let key = record_key(NS, &peer);
        assert_eq!(peer_of_record_key(NS, &key), Some(peer));
        assert!(is_record_key(NS, &key));
        assert_eq!(peer_of_record_key("/other/1", &key), None);
        let junk = RecordKey::new(&format!("{NS}/record/junk"));
        assert!(is_record_key(NS, &junk));
        assert_eq!(peer_of_record_key(NS, &junk), None);
    }

    #[test]
    fn locator_keys_differ_per_peer() {
        let a = PeerId::random();
        assert_ne!(locator_key(NS, &a), locator_key(NS, &PeerId::random()));
        assert_eq!(locator_key(NS, &a), locator_key(NS, &a));
    }
}
