//! Request-rate limits per peer and per host (an IPv4 address, an IPv6 /64), free of I/O: the
//! caller passes the clock.

use std::{collections::HashMap, hash::Hash, net::IpAddr, time::Instant};

use libp2p::PeerId;

use super::origin::{self, Block};
use crate::config::RequestRate;

/// One counting bucket per key: `burst` requests, then one per `interval`.
#[derive(Debug)]
struct KeyedBuckets<K> {
    rate: RequestRate,
    /// Per key: tokens left and when they were last topped up.
    buckets: HashMap<K, (u32, Instant)>,
}

impl<K: Hash + Eq + Copy> KeyedBuckets<K> {
    fn new(rate: RequestRate) -> Self {
        Self {
            rate,
            buckets: HashMap::new(),
        }
    }

    fn refill(&self, tokens: u32, since: Instant, now: Instant) -> (u32, Instant) {
        let interval = self.rate.interval.as_nanos().max(1);
        let earned = now.saturating_duration_since(since).as_nanos() / interval;
        if earned == 0 {
            return (tokens, since);
        }
        let tokens = u128::from(tokens) + earned;
        if tokens >= u128::from(self.rate.burst) {
            (self.rate.burst, now)
        } else {
            // Keep the fraction of an interval already earned.
            let used = self.rate.interval * u32::try_from(earned).unwrap_or(u32::MAX);
            (tokens as u32, since + used)
        }
    }

    fn try_take(&mut self, key: K, now: Instant) -> bool {
        let (tokens, since) = match self.buckets.get(&key) {
            Some(&(tokens, since)) => self.refill(tokens, since, now),
            None => (self.rate.burst, now),
        };
        if tokens == 0 {
            self.buckets.insert(key, (0, since));
            return false;
        }
        self.buckets.insert(key, (tokens - 1, since));
        true
    }

    /// Forgets keys whose bucket is full again, so the map does not grow without bound.
    fn prune(&mut self, now: Instant) {
        let burst = self.rate.burst;
        let full: Vec<K> = self
            .buckets
            .iter()
            .filter(|(_, &(tokens, since))| self.refill(tokens, since, now).0 >= burst)
            .map(|(k, _)| *k)
            .collect();
        for key in full {
            self.buckets.remove(&key);
        }
    }
}

/// The relay's request-rate limits: a request passes only if both its peer and its host (IPv4
/// address, IPv6 /64) have budget left.
#[derive(Debug)]
pub(crate) struct RequestLimiter {
    rates: (Option<RequestRate>, Option<RequestRate>),
    per_peer: Option<KeyedBuckets<PeerId>>,
    per_ip: Option<KeyedBuckets<Block>>,
}

impl RequestLimiter {
    pub(crate) fn new(per_peer: Option<RequestRate>, per_ip: Option<RequestRate>) -> Self {
        Self {
            rates: (per_peer, per_ip),
            per_peer: per_peer.map(KeyedBuckets::new),
            per_ip: per_ip.map(KeyedBuckets::new),
        }
    }

    /// Switches to new rates; when they differ from the current ones, every budget starts
    /// full again.
    pub(crate) fn set_rates(&mut self, per_peer: Option<RequestRate>, per_ip: Option<RequestRate>) {
        if self.rates != (per_peer, per_ip) {
            *self = Self::new(per_peer, per_ip);
        }
    }

    /// Charges one request to `peer` and `ip`; `false` if either is over its rate.
    pub(crate) fn try_request(&mut self, peer: PeerId, ip: Option<IpAddr>, now: Instant) -> bool {
        let peer_ok = self.per_peer.as_mut().is_none_or(|b| b.try_take(peer, now));
        let ip_ok = match (ip, self.per_ip.as_mut()) {
            (Some(ip), Some(b)) => b.try_take(origin::host(ip), now),
            _ => true,
        };
        peer_ok && ip_ok
    }

    /// Drops the state of keys that are back to a full budget.
    pub(crate) fn prune(&mut self, now: Instant) {
        if let Some(b) = self.per_peer.as_mut() {
            b.prune(now);
        }
        if let Some(b) = self.per_ip.as_mut() {
            b.prune(now);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.per_peer.as_ref().map_or(0, |b| b.buckets.len())
            + self.per_ip.as_ref().map_or(0, |b| b.buckets.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rate(burst: u32, secs: u64) -> Option<RequestRate> {
        Some(RequestRate {
            burst,
            interval: Duration::from_secs(secs),
        })
    }

    #[test]
    fn peer_gets_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let peer = PeerId::random();
        let mut limiter = RequestLimiter::new(rate(3, 2), None);
        for _ in 0..3 {
            assert!(limiter.try_request(peer, None, t0));
        }
        assert!(!limiter.try_request(peer, None, t0));
        assert!(!limiter.try_request(peer, None, t0 + Duration::from_secs(1)));
        assert!(limiter.try_request(peer, None, t0 + Duration::from_secs(2)));
        assert!(!limiter.try_request(peer, None, t0 + Duration::from_secs(3)));
        assert!(limiter.try_request(peer, None, t0 + Duration::from_secs(4)));
    }

    #[test]
    fn ip_budget_is_shared_by_peers_behind_it() {
        let t0 = Instant::now();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let mut limiter = RequestLimiter::new(None, rate(2, 60));
        assert!(limiter.try_request(PeerId::random(), Some(ip), t0));
        assert!(limiter.try_request(PeerId::random(), Some(ip), t0));
        assert!(!limiter.try_request(PeerId::random(), Some(ip), t0));
        let other: IpAddr = [127, 0, 0, 2].into();
        assert!(limiter.try_request(PeerId::random(), Some(other), t0));
    }

    #[test]
    fn one_ipv6_slash_64_shares_one_budget() {
        let t0 = Instant::now();
        let mut limiter = RequestLimiter::new(None, rate(2, 60));
        for n in 1..=2u16 {
            let ip = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, n]);
            assert!(limiter.try_request(PeerId::random(), Some(ip), t0));
        }
        let same_64 = IpAddr::from([0x2001, 0xdb8, 0, 0, 0xffff, 0, 0, 9]);
        assert!(!limiter.try_request(PeerId::random(), Some(same_64), t0));
        let next_64 = IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, 1]);
        assert!(limiter.try_request(PeerId::random(), Some(next_64), t0));
    }

    #[test]
    fn prune_forgets_refilled_keys() {
        let t0 = Instant::now();
        let mut limiter = RequestLimiter::new(rate(2, 1), None);
        limiter.try_request(PeerId::random(), None, t0);
        assert_eq!(limiter.tracked(), 1);
        limiter.prune(t0);
        assert_eq!(limiter.tracked(), 1);
        limiter.prune(t0 + Duration::from_secs(5));
        assert_eq!(limiter.tracked(), 0);
    }
}
