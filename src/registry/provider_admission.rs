//! Which relays a DHT node keeps as providers of a shard key, free of I/O.
//!
//! Kademlia keeps at most [`PROVIDERS_PER_KEY`] providers per key and ignores the rest, so the
//! first 20 identities to announce on a key own it; peer ids are free, so a flood of fake ones
//! would lock genuine relays out. Network origin is what a flood costs an attacker, so a node
//! running the registry shares a shard key's slots between origins (an IPv4 /24, an IPv6 /48,
//! or the relay a relayed connection comes through):
//! - one origin holds at most `per_origin` slots
//!   ([`DEFAULT_PROVIDERS_PER_ORIGIN`](super::DEFAULT_PROVIDERS_PER_ORIGIN)); the first to
//!   announce keep them while they renew, so that an attacker sharing a relay's network cannot
//!   churn it out;
//! - when the key is full, a newcomer takes a slot from the origin holding the most, if that
//!   origin would still hold more than the newcomer's; an origin's only slot is never taken by
//!   another origin. The key is refused only when every origin holds one slot (the key is then
//!   shared by [`PROVIDERS_PER_KEY`] different networks).

use std::net::IpAddr;

use libp2p::{core::multiaddr::Protocol, Multiaddr, PeerId};

use crate::session::origin::{network, Block};

/// Providers a node keeps per key: Kademlia's replication factor, which is also what
/// `MemoryStore` keeps by default (and go-libp2p's providers manager).
pub const PROVIDERS_PER_KEY: usize = libp2p::kad::K_VALUE.get();

/// Where a provider announced itself from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Origin {
    /// An IPv4 /24 or an IPv6 /48.
    Network(Block),
    /// Through this relay (a `/p2p-circuit` connection).
    Relayed(PeerId),
    /// No network address known (e.g. an in-memory transport): the peer counts as its own.
    Peer(PeerId),
}

impl Origin {
    /// The origin of `peer` connected from `addr`.
    pub(crate) fn of(peer: PeerId, addr: &Multiaddr) -> Self {
        let mut relay = None;
        for protocol in addr.iter() {
            match protocol {
                Protocol::P2p(id) => relay = Some(id),
                Protocol::P2pCircuit => return relay.map_or(Origin::Peer(peer), Origin::Relayed),
                _ => {}
            }
        }
        let ip = addr.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        });
        ip.map_or(Origin::Peer(peer), |ip| Origin::Network(network(ip)))
    }
}

/// A provider a node holds for a key, oldest first in the slice given to [`admit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) provider: PeerId,
    pub(crate) origin: Origin,
}

/// What to do with a provider announcement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Store it (it is new, or renews its own slot).
    Store,
    /// Remove this provider, then store the new one.
    Replace(PeerId),
    /// Refuse it: its origin holds its share, or the key is full with one slot per origin.
    Full,
}

/// Decides on `provider` from `origin` announcing on a key that holds `held` (oldest first),
/// out of `capacity` slots, `per_origin` at most per origin. A provider renewing its slot from the same origin is stored; one
/// announcing from another origin is decided on as a newcomer (the caller drops its old slot
/// if the new one is stored).
pub(crate) fn admit(
    held: &[Slot],
    provider: PeerId,
    origin: Origin,
    capacity: usize,
    per_origin: usize,
) -> Admission {
    match held.iter().find(|s| s.provider == provider) {
        Some(slot) if slot.origin == origin => return Admission::Store,
        Some(_) => {
            let others: Vec<Slot> = held
                .iter()
                .copied()
                .filter(|s| s.provider != provider)
                .collect();
            return admit(&others, provider, origin, capacity, per_origin);
        }
        None => {}
    }
    let of_origin = |o: Origin| held.iter().filter(|s| s.origin == o).count();
    let own = of_origin(origin);
    if own >= per_origin {
        return Admission::Full;
    }
    if held.len() < capacity {
        return Admission::Store;
    }
    // Full: take the newest slot of the origin holding the most, if that is fairer.
    let Some(largest) = held.iter().map(|s| s.origin).max_by_key(|o| of_origin(*o)) else {
        return Admission::Full;
    };
    if of_origin(largest) > own + 1 {
        let newest = held.iter().rev().find(|s| s.origin == largest);
        return newest.map_or(Admission::Full, |s| Admission::Replace(s.provider));
    }
    Admission::Full
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    const PROVIDERS_PER_ORIGIN: usize = crate::registry::DEFAULT_PROVIDERS_PER_ORIGIN;

    fn net(n: u8) -> Origin {
        Origin::Network(network(IpAddr::from([10, 0, n, 1])))
    }

    /// Applies `admit` to a key's slots as the store does.
    fn offer(held: &mut Vec<Slot>, provider: PeerId, origin: Origin, capacity: usize) -> Admission {
        let decision = admit(held, provider, origin, capacity, PROVIDERS_PER_ORIGIN);
        match decision {
            Admission::Store | Admission::Replace(_) => {
                if let Admission::Replace(old) = decision {
                    held.retain(|s| s.provider != old);
                }
                match held.iter_mut().find(|s| s.provider == provider) {
                    Some(slot) => slot.origin = origin,
                    None => held.push(Slot { provider, origin }),
                }
            }
            Admission::Full => {}
        }
        decision
    }

    #[test]
    fn the_origin_of_an_ipv4_peer_is_its_24_and_of_an_ipv6_peer_its_48() {
        let peer = PeerId::random();
        let v4: Multiaddr = "/ip4/192.0.2.77/tcp/4001".parse().unwrap();
        assert_eq!(
            Origin::of(peer, &v4),
            Origin::Network(network(IpAddr::from([192, 0, 2, 1])))
        );
        let v6: Multiaddr = "/ip6/2001:db8:1:2::5/udp/1/quic-v1".parse().unwrap();
        assert_eq!(
            Origin::of(peer, &v6),
            Origin::Network(network("2001:db8:1:ffff::1".parse().unwrap()))
        );
        let memory: Multiaddr = "/memory/5".parse().unwrap();
        assert_eq!(Origin::of(peer, &memory), Origin::Peer(peer));
    }

    #[test]
    fn peers_behind_one_relay_share_its_origin() {
        let relay = PeerId::random();
        let addr: Multiaddr = format!("/ip4/192.0.2.1/tcp/1/p2p/{relay}/p2p-circuit")
            .parse()
            .unwrap();
        assert_eq!(Origin::of(PeerId::random(), &addr), Origin::Relayed(relay));
    }

    #[test]
    fn one_origin_holds_at_most_its_share_and_the_first_keep_it_while_they_renew() {
        let mut held = Vec::new();
        let first: Vec<PeerId> = (0..PROVIDERS_PER_ORIGIN)
            .map(|_| PeerId::random())
            .collect();
        for p in &first {
            assert_eq!(offer(&mut held, *p, net(1), 20), Admission::Store);
        }
        assert_eq!(
            offer(&mut held, PeerId::random(), net(1), 20),
            Admission::Full
        );
        assert_eq!(offer(&mut held, first[0], net(1), 20), Admission::Store);
        assert_eq!(held.len(), PROVIDERS_PER_ORIGIN);
    }

    #[test]
    fn a_newcomer_takes_a_slot_of_the_largest_origin_when_the_key_is_full() {
        let mut held = Vec::new();
        for n in 0..5 {
            for _ in 0..PROVIDERS_PER_ORIGIN {
                offer(&mut held, PeerId::random(), net(n), 20);
            }
        }
        assert_eq!(held.len(), 20);
        let genuine = PeerId::random();
        assert!(matches!(
            offer(&mut held, genuine, net(9), 20),
            Admission::Replace(_)
        ));
        assert!(held.iter().any(|s| s.provider == genuine));
    }

    #[test]
    fn a_key_shared_by_as_many_origins_as_slots_refuses_newcomers() {
        let mut held = Vec::new();
        for n in 0..20 {
            offer(&mut held, PeerId::random(), net(n), 20);
        }
        assert_eq!(
            offer(&mut held, PeerId::random(), net(99), 20),
            Admission::Full
        );
        let renewing = held[3].provider;
        assert_eq!(offer(&mut held, renewing, net(3), 20), Admission::Store);
    }

    #[test]
    fn a_provider_announcing_from_a_new_origin_is_decided_on_as_a_newcomer() {
        let mut held = Vec::new();
        let moving = PeerId::random();
        offer(&mut held, moving, net(1), 20);
        for _ in 0..PROVIDERS_PER_ORIGIN {
            offer(&mut held, PeerId::random(), net(2), 20);
        }
        // Its new network holds its share: it keeps its slot from the old one.
        assert_eq!(offer(&mut held, moving, net(2), 20), Admission::Full);
        assert!(held
            .iter()
            .any(|s| s.provider == moving && s.origin == net(1)));
        // From a third network it moves there.
        assert_eq!(offer(&mut held, moving, net(3), 20), Admission::Store);
        assert!(held
            .iter()
            .any(|s| s.provider == moving && s.origin == net(3)));
        assert!(held.iter().all(|s| s.origin != net(1)));
    }

    proptest! {
        /// Whatever the announcements, a key never holds more than its capacity nor an origin
        /// more than its share, and no origin loses its only slot to another: as many origins
        /// hold a slot as announced, up to the capacity.
        #[test]
        fn slots_are_shared_between_origins(
            origin_of in proptest::collection::vec(0u8..30, 40),
            offers in proptest::collection::vec(0usize..40, 1..300),
            capacity in 1usize..25,
        ) {
            let ids: Vec<PeerId> = (0..40).map(|_| PeerId::random()).collect();
            let mut held: Vec<Slot> = Vec::new();
            let mut offered: HashSet<u8> = HashSet::new();
            for who in offers {
                offered.insert(origin_of[who]);
                offer(&mut held, ids[who], net(origin_of[who]), capacity);
                let mut per_origin: HashMap<Origin, usize> = HashMap::new();
                for slot in &held {
                    *per_origin.entry(slot.origin).or_default() += 1;
                }
                prop_assert!(held.len() <= capacity);
                prop_assert!(per_origin.values().all(|n| *n <= PROVIDERS_PER_ORIGIN));
                prop_assert_eq!(per_origin.len(), offered.len().min(capacity));
            }
        }
    }
}
