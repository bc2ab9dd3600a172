//! Which relays a peer keeps reservations on, free of I/O: the best ranked relays it does not
//! hold yet, skipping relays that failed recently, until it holds the wanted number.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use libp2p::PeerId;

use super::rank::RelayCandidate;

/// How long a relay whose reservation failed or ended is skipped.
pub const RETRY_BACKOFF: Duration = Duration::from_secs(30);

/// The state of one reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Requested, not answered yet.
    Pending,
    /// Accepted (and renewed by the relay client).
    Active,
}

/// The reservation set of a peer reachable through relays.
#[derive(Clone, Debug, Default)]
pub struct ReservationPlan {
    want: usize,
    held: BTreeMap<PeerId, Held>,
    backoff: HashMap<PeerId, Instant>,
}

impl ReservationPlan {
    /// A plan that keeps `want` reservations.
    pub fn new(want: usize) -> Self {
        Self {
            want,
            ..Self::default()
        }
    }

    /// Reservations wanted.
    pub fn want(&self) -> usize {
        self.want
    }

    /// Changes the number of reservations wanted (0 = none).
    pub fn set_want(&mut self, want: usize) {
        self.want = want;
    }

    /// The relays held or requested.
    pub fn held(&self) -> impl Iterator<Item = (&PeerId, &Held)> {
        self.held.iter()
    }

    /// Whether `relay` is held or requested.
    pub fn holds(&self, relay: &PeerId) -> bool {
        self.held.contains_key(relay)
    }

    /// The relays to reserve on now, best first, from `ranked` (best first).
    pub fn choose(&self, ranked: &[RelayCandidate], now: Instant) -> Vec<PeerId> {
        let missing = self.want.saturating_sub(self.held.len());
        ranked
            .iter()
            .filter(|c| !self.held.contains_key(&c.peer()))
            .filter(|c| {
                self.backoff
                    .get(&c.peer())
                    .is_none_or(|until| *until <= now)
            })
            .filter(|c| c.record.spare_reservations() > 0)
            .map(|c| c.peer())
            .take(missing)
            .collect()
    }

    /// Whether fewer relays are held or requested than wanted.
    pub fn needs_more(&self) -> bool {
        self.held.len() < self.want
    }

    /// A reservation on `relay` was requested.
    pub fn on_requested(&mut self, relay: PeerId) {
        self.held.insert(relay, Held::Pending);
    }

    /// `relay` accepted; returns whether it was pending (a new reservation).
    pub fn on_accepted(&mut self, relay: PeerId) -> bool {
        self.held.insert(relay, Held::Active) == Some(Held::Pending)
    }

    /// The reservation on `relay` failed or ended; it is skipped for [`RETRY_BACKOFF`].
    /// Returns whether it was held.
    pub fn on_lost(&mut self, relay: PeerId, now: Instant) -> bool {
        self.backoff.insert(relay, now + RETRY_BACKOFF);
        self.backoff.retain(|_, until| *until > now);
        self.held.remove(&relay).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::record::tests::sample;

    fn candidates(n: usize) -> Vec<RelayCandidate> {
        (0..n)
            .map(|_| RelayCandidate {
                record: sample(PeerId::random(), 0),
                rtt: None,
            })
            .collect()
    }

    #[test]
    fn chooses_the_best_relays_up_to_the_wanted_number() {
        let ranked = candidates(4);
        let plan = ReservationPlan::new(2);
        assert_eq!(
            plan.choose(&ranked, Instant::now()),
            vec![ranked[0].peer(), ranked[1].peer()]
        );
    }

    #[test]
    fn a_lost_relay_is_replaced_by_the_next_best_and_skipped_for_a_while() {
        let ranked = candidates(3);
        let now = Instant::now();
        let mut plan = ReservationPlan::new(2);
        for p in plan.choose(&ranked, now) {
            plan.on_requested(p);
        }
        assert!(plan.on_accepted(ranked[0].peer()));
        assert!(plan.on_accepted(ranked[1].peer()));
        assert!(!plan.needs_more());
        assert!(plan.on_lost(ranked[0].peer(), now));
        assert_eq!(plan.choose(&ranked, now), vec![ranked[2].peer()]);
        assert_eq!(
            plan.choose(&ranked[..2], now + RETRY_BACKOFF),
            vec![ranked[0].peer()]
        );
    }

    #[test]
    fn full_relays_are_not_chosen() {
        let mut ranked = candidates(2);
        ranked[0].record.reservations = ranked[0].record.max_reservations;
        let plan = ReservationPlan::new(1);
        assert_eq!(plan.choose(&ranked, Instant::now()), vec![ranked[1].peer()]);
    }
}
