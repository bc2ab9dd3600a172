//! Which addresses the relay announces (in reservations, and through them in registry records):
//! only addresses a peer elsewhere on the internet can use, each ending in the relay's own
//! `/p2p/<id>`. Sans I/O: a pure function of the relay's configured, confirmed and listen
//! addresses.
//!
//! - Configured addresses ([`ConfigBuilder::advertised_addrs`](crate::ConfigBuilder::advertised_addrs),
//!   `--external`) are the operator's word, and the swarm's confirmed external addresses were
//!   confirmed (by the swarm owner, or by AutoNAT's dial-back): both are announced.
//! - Without any of those, listen addresses are announced when publicly routable: not loopback,
//!   private (RFC 1918, ULA), link-local, shared (100.64.0.0/10), documentation, benchmarking or
//!   otherwise reserved. DNS names are taken as public, except `localhost`.
//! - [`ConfigBuilder::allow_private_addrs`](crate::ConfigBuilder::allow_private_addrs) announces
//!   private ones too, for LANs and tests.
//! - Relayed addresses (`/p2p-circuit`) and addresses ending in another peer's `/p2p` are never
//!   announced.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use libp2p::{multiaddr::Protocol, Multiaddr, PeerId};

/// Why an address is not announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skipped {
    /// Not publicly routable (and private addresses are not allowed).
    NotPublic,
    /// An unspecified address (`0.0.0.0`, `::`): a listen address, not a reachable one.
    Unspecified,
    /// A relayed address.
    Relayed,
    /// It ends in another peer's `/p2p`.
    OtherPeer,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Skipped::NotPublic => {
                "not publicly routable (announce it with --external, or allow private addresses)"
            }
            Skipped::Unspecified => "unspecified address",
            Skipped::Relayed => "relayed address",
            Skipped::OtherPeer => "ends in another peer's /p2p",
        })
    }
}

/// The relay's announcement: the addresses, and the ones left out with why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Announcement {
    /// Announced, each ending in the relay's `/p2p`.
    pub addrs: Vec<Multiaddr>,
    /// Left out, and why.
    pub skipped: Vec<(Multiaddr, Skipped)>,
}

/// Decides what the relay `local` announces.
pub(crate) fn announce<'a>(
    local: PeerId,
    configured: impl IntoIterator<Item = &'a Multiaddr>,
    confirmed: impl IntoIterator<Item = &'a Multiaddr>,
    listen: impl IntoIterator<Item = &'a Multiaddr>,
    allow_private: bool,
) -> Announcement {
    let mut out = Announcement::default();
    let consider = |addr: &Multiaddr, trusted: bool, out: &mut Announcement| {
        let verdict = own(addr, local).and_then(|addr| {
            if !trusted && !allow_private {
                match is_public(&addr) {
                    Some(true) => {}
                    Some(false) => return Err(Skipped::NotPublic),
                    None => return Err(Skipped::Unspecified),
                }
            } else if is_public(&addr).is_none() {
                return Err(Skipped::Unspecified);
            }
            Ok(addr)
        });
        match verdict {
            Ok(addr) if !out.addrs.contains(&addr) => out.addrs.push(addr),
            Ok(_) => {}
            Err(why) => out.skipped.push((addr.clone(), why)),
        }
    };
    for addr in configured {
        consider(addr, true, &mut out);
    }
    for addr in confirmed {
        consider(addr, true, &mut out);
    }
    if out.addrs.is_empty() {
        for addr in listen {
            consider(addr, false, &mut out);
        }
    }
    out
}

/// `addr` ending in `/p2p/<local>`, or why it cannot be.
fn own(addr: &Multiaddr, local: PeerId) -> Result<Multiaddr, Skipped> {
    if addr.iter().any(|p| p == Protocol::P2pCircuit) {
        return Err(Skipped::Relayed);
    }
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) if peer == local => Ok(addr.clone()),
        Some(Protocol::P2p(_)) => Err(Skipped::OtherPeer),
        _ => Ok(addr.clone().with(Protocol::P2p(local))),
    }
}

/// Whether the host part of `addr` is publicly routable; `None` for an unspecified address.
pub(crate) fn is_public(addr: &Multiaddr) -> Option<bool> {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => (!ip.is_unspecified()).then(|| is_public_ip(ip.into())),
        Some(Protocol::Ip6(ip)) => (!ip.is_unspecified()).then(|| is_public_ip(ip.into())),
        Some(Protocol::Dns(name) | Protocol::Dns4(name) | Protocol::Dns6(name))
        | Some(Protocol::Dnsaddr(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            Some(name != "localhost" && !name.ends_with(".localhost") && !name.ends_with(".local"))
        }
        _ => Some(false),
    }
}

/// Whether `ip` is globally routable (the IANA special-purpose registries, in short).
pub(crate) fn is_public_ip(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only
        || (s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 1)) // local-use IPv4/IPv6 translation
        && (s[0] & 0xe000) == 0x2000 // global unicast
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<Multiaddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn public_and_private_addresses_are_told_apart() {
        for public in [
            "/ip4/8.8.8.8/tcp/1",
            "/ip6/2a00:1450::1/tcp/1",
            "/dns4/relay.example.com/tcp/1",
            "/ip6/::ffff:8.8.8.8/tcp/1",
        ] {
            assert_eq!(is_public(&public.parse().unwrap()), Some(true), "{public}");
        }
        for private in [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/10.1.2.3/tcp/1",
            "/ip4/172.16.0.1/tcp/1",
            "/ip4/192.168.1.1/tcp/1",
            "/ip4/169.254.1.1/tcp/1",
            "/ip4/100.64.0.1/tcp/1",
            "/ip4/198.18.0.1/tcp/1",
            "/ip4/203.0.113.1/tcp/1",
            "/ip4/240.0.0.1/tcp/1",
            "/ip6/::1/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
            "/ip6/2001:db8::1/tcp/1",
            "/ip6/::ffff:10.0.0.1/tcp/1",
            "/dns/localhost/tcp/1",
            "/dns4/printer.local/tcp/1",
        ] {
            assert_eq!(
                is_public(&private.parse().unwrap()),
                Some(false),
                "{private}"
            );
        }
        assert_eq!(is_public(&"/ip4/0.0.0.0/tcp/1".parse().unwrap()), None);
    }

    #[test]
    fn a_relay_on_a_lan_announces_nothing_unless_private_addresses_are_allowed() {
        let local = PeerId::random();
        let listen = addrs(&["/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.5/tcp/4001"]);
        let none = announce(local, &[], &[], &listen, false);
        assert!(none.addrs.is_empty());
        assert!(none
            .skipped
            .iter()
            .all(|(_, why)| *why == Skipped::NotPublic));
        let lan = announce(local, &[], &[], &listen, true);
        assert_eq!(lan.addrs.len(), 2);
        assert!(lan
            .addrs
            .iter()
            .all(|a| a.iter().last() == Some(Protocol::P2p(local))));
    }

    #[test]
    fn configured_and_confirmed_addresses_are_trusted_and_listen_ones_a_fallback() {
        let local = PeerId::random();
        let configured = addrs(&["/ip4/10.0.0.1/tcp/4001"]);
        let confirmed = addrs(&["/ip4/8.8.8.8/tcp/4001", "/ip4/192.168.1.5/tcp/4001"]);
        let listen = addrs(&["/ip4/127.0.0.1/tcp/4001", "/ip4/9.9.9.9/tcp/4001"]);
        let a = announce(local, &configured, &confirmed, &listen, false);
        let expected: Vec<Multiaddr> = [
            "/ip4/10.0.0.1/tcp/4001",
            "/ip4/8.8.8.8/tcp/4001",
            "/ip4/192.168.1.5/tcp/4001",
        ]
        .iter()
        .map(|s| s.parse::<Multiaddr>().unwrap().with(Protocol::P2p(local)))
        .collect();
        assert_eq!(a.addrs, expected);
        assert!(a.skipped.is_empty(), "listen addresses are a fallback only");
        let fallback = announce(local, &[], &[], &listen, false);
        assert_eq!(
            fallback.addrs,
            vec!["/ip4/9.9.9.9/tcp/4001"
                .parse::<Multiaddr>()
                .unwrap()
                .with(Protocol::P2p(local))]
        );
    }

    #[test]
    fn another_peer_s_address_and_relayed_addresses_are_never_announced() {
        let local = PeerId::random();
        let other = PeerId::random();
        let configured = vec![
            "/ip4/8.8.8.8/tcp/1"
                .parse::<Multiaddr>()
                .unwrap()
                .with(Protocol::P2p(other)),
            "/ip4/8.8.4.4/tcp/1"
                .parse::<Multiaddr>()
                .unwrap()
                .with(Protocol::P2p(local)),
            "/ip4/8.8.8.8/tcp/1/p2p-circuit".parse().unwrap(),
            "/ip4/0.0.0.0/tcp/1".parse().unwrap(),
        ];
        let a = announce(local, &configured, &[], &[], true);
        assert_eq!(a.addrs, vec![configured[1].clone()]);
        let reasons: Vec<Skipped> = a.skipped.iter().map(|(_, why)| *why).collect();
        assert_eq!(
            reasons,
            [Skipped::OtherPeer, Skipped::Relayed, Skipped::Unspecified]
        );
    }
}
