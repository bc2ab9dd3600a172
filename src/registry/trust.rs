//! What a reader has learned about relays by using them, free of I/O: the providers that served
//! no usable record or never answered (a negative cache with expiry, so that they stop costing
//! reads), and each relay's failed reservations (so that ranking believes what the reader saw
//! over what a record claims). Peer ids are free: every map here is bounded.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::PeerId;

/// How long a provider that failed a read is skipped the first time; each further failure in a
/// row doubles it, up to [`MAX_NEGATIVE_TTL`]. Short at first, so that a relay with a passing
/// problem is read again soon; long for a provider that keeps failing.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// The longest a failing provider is skipped.
pub const MAX_NEGATIVE_TTL: Duration = Duration::from_secs(10 * 60);
/// Most peers remembered in each map.
const MAX_REMEMBERED: usize = 4096;

/// The reader's experience of providers and relays.
#[derive(Debug, Default, Clone)]
pub struct Trust {
    /// Providers to skip: until when, and how many failures in a row.
    bad: HashMap<PeerId, (Instant, u32)>,
    /// Failed reservations per relay since its last success.
    failures: HashMap<PeerId, u32>,
    /// Providers that did not answer once lately, since when: a second silence in
    /// [`MAX_NEGATIVE_TTL`] makes them skipped (one slow answer from a loaded relay does not).
    silent: HashMap<PeerId, Instant>,
    /// Relays that accepted a reservation of this reader: their claims are believed further.
    proven: std::collections::HashSet<PeerId>,
}

impl Trust {
    /// `peer` served no usable record, or did not answer: skip it for [`NEGATIVE_TTL`], twice
    /// as long for each failure in a row, at most [`MAX_NEGATIVE_TTL`].
    pub fn mark_bad(&mut self, peer: PeerId, now: Instant) {
        if self.bad.len() >= MAX_REMEMBERED && !self.bad.contains_key(&peer) {
            self.prune(now);
            if self.bad.len() >= MAX_REMEMBERED {
                // Full of live entries: forget the one that would expire first.
                if let Some(first) = self
                    .bad
                    .iter()
                    .min_by_key(|(_, (until, _))| *until)
                    .map(|(p, _)| *p)
                {
                    self.bad.remove(&first);
                }
            }
        }
        let strikes = self.bad.get(&peer).map_or(0, |(_, n)| *n).saturating_add(1);
        let ttl = NEGATIVE_TTL
            .saturating_mul(1 << (strikes - 1).min(16))
            .min(MAX_NEGATIVE_TTL);
        self.bad.insert(peer, (now + ttl, strikes));
    }

    /// `peer` did not answer a read in time: skipped only if it was silent before, lately.
    pub fn silent(&mut self, peer: PeerId, now: Instant) {
        match self.silent.get(&peer) {
            Some(since) if now.saturating_duration_since(*since) < MAX_NEGATIVE_TTL => {
                self.mark_bad(peer, now)
            }
            _ => {
                if self.silent.len() >= MAX_REMEMBERED {
                    self.silent.retain(|_, since| {
                        now.saturating_duration_since(*since) < MAX_NEGATIVE_TTL
                    });
                    if self.silent.len() >= MAX_REMEMBERED {
                        return;
                    }
                }
                self.silent.insert(peer, now);
            }
        }
    }

    /// `peer` served a valid record: whatever it did before is forgiven.
    pub fn answered(&mut self, peer: &PeerId) {
        self.bad.remove(peer);
        self.silent.remove(peer);
    }

    /// Whether `peer` is skipped at `now`.
    pub fn is_bad(&self, peer: &PeerId, now: Instant) -> bool {
        self.bad.get(peer).is_some_and(|(until, _)| *until > now)
    }

    /// A reservation on `relay` failed (refused, unanswered, or its listener failed).
    pub fn reservation_failed(&mut self, relay: PeerId) {
        if self.failures.len() >= MAX_REMEMBERED && !self.failures.contains_key(&relay) {
            // Forget the relays with the fewest failures first: they matter least.
            if let Some(least) = self
                .failures
                .iter()
                .min_by_key(|(_, n)| **n)
                .map(|(p, _)| *p)
            {
                self.failures.remove(&least);
            }
        }
        *self.failures.entry(relay).or_default() += 1;
    }

    /// A reservation on `relay` was accepted: its record of failures is wiped, and it counts
    /// as proven.
    pub fn reservation_succeeded(&mut self, relay: &PeerId) {
        self.failures.remove(relay);
        self.bad.remove(relay);
        if self.proven.len() < MAX_REMEMBERED {
            self.proven.insert(*relay);
        }
    }

    /// Whether `relay` ever accepted a reservation of this reader.
    pub fn is_proven(&self, relay: &PeerId) -> bool {
        self.proven.contains(relay)
    }

    /// Failed reservations on `relay` since its last success.
    pub fn failures(&self, relay: &PeerId) -> u32 {
        self.failures.get(relay).copied().unwrap_or(0)
    }

    /// Drops the entries that expired long ago (a failure in a row counts for another
    /// [`MAX_NEGATIVE_TTL`] after its skip ends).
    pub fn prune(&mut self, now: Instant) {
        self.bad
            .retain(|_, (until, _)| now.saturating_duration_since(*until) < MAX_NEGATIVE_TTL);
        self.silent
            .retain(|_, since| now.saturating_duration_since(*since) < MAX_NEGATIVE_TTL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_provider_is_skipped_longer_for_each_failure_in_a_row() {
        let t0 = Instant::now();
        let mut trust = Trust::default();
        let peer = PeerId::random();
        trust.mark_bad(peer, t0);
        assert!(trust.is_bad(&peer, t0 + NEGATIVE_TTL - Duration::from_secs(1)));
        assert!(!trust.is_bad(&peer, t0 + NEGATIVE_TTL));
        let t1 = t0 + NEGATIVE_TTL;
        trust.mark_bad(peer, t1);
        assert!(trust.is_bad(&peer, t1 + 2 * NEGATIVE_TTL - Duration::from_secs(1)));
        assert!(!trust.is_bad(&peer, t1 + 2 * NEGATIVE_TTL));
        for _ in 0..20 {
            trust.mark_bad(peer, t1);
        }
        assert!(trust.is_bad(&peer, t1 + MAX_NEGATIVE_TTL - Duration::from_secs(1)));
        assert!(!trust.is_bad(&peer, t1 + MAX_NEGATIVE_TTL));
        trust.prune(t1 + 2 * MAX_NEGATIVE_TTL);
        assert!(trust.bad.is_empty());
    }

    #[test]
    fn one_silence_is_forgiven_a_second_one_is_not_and_an_answer_clears_both() {
        let t0 = Instant::now();
        let mut trust = Trust::default();
        let peer = PeerId::random();
        trust.silent(peer, t0);
        assert!(!trust.is_bad(&peer, t0));
        trust.silent(peer, t0 + Duration::from_secs(5));
        assert!(trust.is_bad(&peer, t0 + Duration::from_secs(5)));
        trust.answered(&peer);
        assert!(!trust.is_bad(&peer, t0 + Duration::from_secs(5)));
        trust.silent(peer, t0 + Duration::from_secs(6));
        assert!(!trust.is_bad(&peer, t0 + Duration::from_secs(6)));
    }

    #[test]
    fn failures_count_until_a_success() {
        let mut trust = Trust::default();
        let relay = PeerId::random();
        trust.reservation_failed(relay);
        trust.reservation_failed(relay);
        assert_eq!(trust.failures(&relay), 2);
        trust.reservation_succeeded(&relay);
        assert_eq!(trust.failures(&relay), 0);
    }

    #[test]
    fn free_peer_ids_cannot_grow_it_without_bound() {
        let t0 = Instant::now();
        let mut trust = Trust::default();
        for _ in 0..(MAX_REMEMBERED + 100) {
            let peer = PeerId::random();
            trust.mark_bad(peer, t0);
            trust.reservation_failed(peer);
        }
        assert!(trust.bad.len() <= MAX_REMEMBERED);
        assert!(trust.failures.len() <= MAX_REMEMBERED);
    }
}
