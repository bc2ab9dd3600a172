//! Network origin: the address blocks a connection comes from, and what each block holds.
//!
//! Peer ids are free; addresses are what a flood costs an attacker. The relay's fairness caps
//! therefore count per address block, not per peer (go-libp2p's relay caps reservations per IP
//! and per ASN for the same reason). An IPv4 address belongs to itself and its /24; an IPv6
//! address to itself, its /64 (what one host or LAN gets) and its /48 (what one site gets).
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) count as the IPv4 address.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
};

use crate::config::OriginLimits;

/// An address block one or more connections come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Block {
    /// One address.
    Ip(IpAddr),
    /// An IPv4 /24 (its network address).
    Ipv4Net24(u32),
    /// An IPv6 /64 (its network address).
    Ipv6Net64(u128),
    /// An IPv6 /48 (its network address).
    Ipv6Net48(u128),
}

impl Block {
    /// The cap `limits` sets on this block.
    pub(crate) fn cap(self, limits: &OriginLimits) -> usize {
        match self {
            Block::Ip(_) => limits.per_ip,
            Block::Ipv4Net24(_) => limits.per_ipv4_24,
            Block::Ipv6Net64(_) => limits.per_ipv6_64,
            Block::Ipv6Net48(_) => limits.per_ipv6_48,
        }
    }
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Block::Ip(ip) => write!(f, "{ip}"),
            Block::Ipv4Net24(net) => write!(f, "{}/24", std::net::Ipv4Addr::from(net)),
            Block::Ipv6Net64(net) => write!(f, "{}/64", Ipv6Addr::from(net)),
            Block::Ipv6Net48(net) => write!(f, "{}/48", Ipv6Addr::from(net)),
        }
    }
}

/// `ip` with IPv4-mapped IPv6 addresses turned into IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The blocks `ip` belongs to, narrowest first.
pub(crate) fn blocks(ip: IpAddr) -> impl Iterator<Item = Block> {
    let ip = canonical(ip);
    let blocks = match ip {
        IpAddr::V4(v4) => [
            Some(Block::Ip(ip)),
            Some(Block::Ipv4Net24(u32::from(v4) & !0xff)),
            None,
        ],
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            [
                Some(Block::Ip(ip)),
                Some(Block::Ipv6Net64(bits & !((1u128 << 64) - 1))),
                Some(Block::Ipv6Net48(bits & !((1u128 << 80) - 1))),
            ]
        }
    };
    blocks.into_iter().flatten()
}

/// The block one host holds: an IPv4 address, or an IPv6 /64. The request-rate limiter keys on
/// it, so that one host with a /64 does not get a budget per address.
pub(crate) fn host(ip: IpAddr) -> Block {
    match canonical(ip) {
        ip @ IpAddr::V4(_) => Block::Ip(ip),
        IpAddr::V6(_) => blocks(ip)
            .find(|b| matches!(b, Block::Ipv6Net64(_)))
            .expect("an IPv6 address has a /64"),
    }
}

/// The block one network holds: an IPv4 /24, or an IPv6 /48. It is what
/// [`max_sessions_per_network_to_peer`](crate::ConfigBuilder::max_sessions_per_network_to_peer)
/// counts.
pub(crate) fn network(ip: IpAddr) -> Block {
    blocks(ip)
        .filter(|b| matches!(b, Block::Ipv4Net24(_) | Block::Ipv6Net48(_)))
        .last()
        .expect("every address has a network block")
}

/// How many reservations or sessions each block holds. Blocks holding nothing are forgotten, so
/// the map is as large as the set of origins with something held.
#[derive(Debug, Default)]
pub(crate) struct BlockCounts(HashMap<Block, usize>);

impl BlockCounts {
    /// The first of `blocks` already at its cap, if any.
    pub(crate) fn full(
        &self,
        blocks: impl IntoIterator<Item = Block>,
        limits: &OriginLimits,
    ) -> Option<Block> {
        blocks.into_iter().find(|b| self.count(b) >= b.cap(limits))
    }

    /// What `block` holds.
    pub(crate) fn count(&self, block: &Block) -> usize {
        self.0.get(block).copied().unwrap_or(0)
    }

    /// Counts one more for each of `blocks`.
    pub(crate) fn add(&mut self, blocks: impl IntoIterator<Item = Block>) {
        for block in blocks {
            *self.0.entry(block).or_default() += 1;
        }
    }

    /// Counts one less for each of `blocks` (each added before).
    pub(crate) fn remove(&mut self, blocks: impl IntoIterator<Item = Block>) {
        for block in blocks {
            if let Some(n) = self.0.get_mut(&block) {
                *n -= 1;
                if *n == 0 {
                    self.0.remove(&block);
                }
            }
        }
    }

    /// Every block's count.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Block, &usize)> {
        self.0.iter()
    }

    /// Drops every count.
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ipv4_address_is_in_itself_and_its_slash_24() {
        let found: Vec<String> = blocks(ip("198.51.100.7")).map(|b| b.to_string()).collect();
        assert_eq!(found, ["198.51.100.7", "198.51.100.0/24"]);
    }

    #[test]
    fn an_ipv6_address_is_in_itself_its_slash_64_and_its_slash_48() {
        let found: Vec<String> = blocks(ip("2001:db8:1:2:3:4:5:6"))
            .map(|b| b.to_string())
            .collect();
        assert_eq!(
            found,
            [
                "2001:db8:1:2:3:4:5:6",
                "2001:db8:1:2::/64",
                "2001:db8:1::/48"
            ]
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_counts_as_the_ipv4_address() {
        assert!(blocks(ip("::ffff:198.51.100.7")).eq(blocks(ip("198.51.100.7"))));
        assert_eq!(host(ip("::ffff:10.0.0.1")), host(ip("10.0.0.1")));
    }

    #[test]
    fn one_slash_64_is_one_host_and_one_slash_48_one_network() {
        assert_eq!(host(ip("2001:db8::1")), host(ip("2001:db8::ffff:1")));
        assert_ne!(host(ip("2001:db8::1")), host(ip("2001:db8:0:1::1")));
        assert_eq!(
            network(ip("2001:db8:0:1::1")),
            network(ip("2001:db8:0:ffff::1"))
        );
        assert_eq!(network(ip("192.0.2.1")), network(ip("192.0.2.200")));
        assert_ne!(network(ip("192.0.2.1")), network(ip("192.0.3.1")));
    }

    #[test]
    fn a_block_is_full_at_its_cap_and_frees_on_removal() {
        let limits = OriginLimits {
            per_ip: 2,
            per_ipv4_24: 3,
            per_ipv6_64: 2,
            per_ipv6_48: 3,
        };
        let mut counts = BlockCounts::default();
        let a = ip("192.0.2.1");
        counts.add(blocks(a));
        assert_eq!(counts.full(blocks(a), &limits), None);
        counts.add(blocks(a));
        assert_eq!(counts.full(blocks(a), &limits), Some(Block::Ip(a)));
        // A neighbour fits once more, then the /24 is full.
        let b = ip("192.0.2.2");
        assert_eq!(counts.full(blocks(b), &limits), None);
        counts.add(blocks(b));
        assert!(matches!(
            counts.full(blocks(ip("192.0.2.3")), &limits),
            Some(Block::Ipv4Net24(_))
        ));
        counts.remove(blocks(a));
        counts.remove(blocks(a));
        counts.remove(blocks(b));
        assert_eq!(counts.iter().count(), 0, "emptied blocks are forgotten");
    }
}
