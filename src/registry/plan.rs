//! Which relays a peer keeps reservations on, free of I/O: good relays it does not hold yet,
//! chosen by the power of two choices (of two random candidates, the better ranked), so that
//! many clients reading the same ranking spread over the good relays instead of herding onto the
//! first; skipping relays that failed recently, until it holds the wanted number. A request that
//! gets no answer within [`RESERVATION_TIMEOUT`] counts as failed.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use libp2p::PeerId;
use rand::Rng;

use super::rank::RelayCandidate;

/// How long a relay whose reservation failed or ended is skipped.
pub const RETRY_BACKOFF: Duration = Duration::from_secs(30);
/// How long a reservation request may stay unanswered before it counts as failed (a frozen
/// relay never answers).
pub const RESERVATION_TIMEOUT: Duration = Duration::from_secs(20);

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
    requested_at: HashMap<PeerId, Instant>,
    backoff: HashMap<PeerId, Instant>,
}

impl ReservationPlan {
    /// A plan holding `want` reservations.
    pub fn new(want: usize) -> Self {
        Self {
            want,
            ..Self::default()
        }
    }

    /// How many reservations it wants.
    pub fn want(&self) -> usize {
        self.want
    }

    /// Changes how many reservations it wants.
    pub fn set_want(&mut self, want: usize) {
        self.want = want;
    }

    /// The relays it holds or asked, and in which state.
    pub fn held(&self) -> impl Iterator<Item = (&PeerId, &Held)> {
        self.held.iter()
    }

    /// Whether it holds (or asked) `relay`.
    pub fn holds(&self, relay: &PeerId) -> bool {
        self.held.contains_key(relay)
    }

    /// The relays to ask now, from `ranked` (best first): not held, not backing off, with a
    /// free reservation slot; each pick the better ranked of two drawn at random.
    pub fn choose(
        &self,
        ranked: &[RelayCandidate],
        now: Instant,
        rng: &mut impl Rng,
    ) -> Vec<PeerId> {
        let missing = self.want.saturating_sub(self.held.len());
        let mut eligible: Vec<PeerId> = ranked
            .iter()
            .filter(|c| !self.held.contains_key(&c.peer()))
            .filter(|c| {
                self.backoff
                    .get(&c.peer())
                    .is_none_or(|until| *until <= now)
            })
            .filter(|c| c.record.spare_reservations() > 0)
            .map(|c| c.peer())
            .collect();
        let mut chosen = Vec::with_capacity(missing);
        while chosen.len() < missing && !eligible.is_empty() {
            let a = rng.gen_range(0..eligible.len());
            let b = rng.gen_range(0..eligible.len());
            chosen.push(eligible.remove(a.min(b)));
        }
        chosen
    }

    /// Whether it holds fewer than it wants.
    pub fn needs_more(&self) -> bool {
        self.held.len() < self.want
    }

    /// A reservation on `relay` was requested at `now`.
    pub fn on_requested(&mut self, relay: PeerId, now: Instant) {
        self.held.insert(relay, Held::Pending);
        self.requested_at.insert(relay, now);
    }

    /// `relay` accepted; `true` if it was pending.
    pub fn on_accepted(&mut self, relay: PeerId) -> bool {
        self.requested_at.remove(&relay);
        self.held.insert(relay, Held::Active) == Some(Held::Pending)
    }

    /// The reservation on `relay` failed or ended: it is skipped for [`RETRY_BACKOFF`].
    /// `true` if it was held.
    pub fn on_lost(&mut self, relay: PeerId, now: Instant) -> bool {
        self.backoff.insert(relay, now + RETRY_BACKOFF);
        self.backoff.retain(|_, until| *until > now);
        self.requested_at.remove(&relay);
        self.held.remove(&relay).is_some()
    }

    /// The requests unanswered for [`RESERVATION_TIMEOUT`] at `now` (still pending: the caller
    /// gives up on them with [`on_lost`](Self::on_lost)).
    pub fn timed_out(&self, now: Instant) -> Vec<PeerId> {
        self.requested_at
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) >= RESERVATION_TIMEOUT)
            .map(|(relay, _)| *relay)
            .collect()
    }

    /// When the oldest pending request times out, if any is pending.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.requested_at
            .values()
            .min()
            .map(|at| *at + RESERVATION_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

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
    fn chooses_distinct_eligible_relays_up_to_the_wanted_number() {
        let ranked = candidates(4);
        let plan = ReservationPlan::new(2);
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..50 {
            let chosen = plan.choose(&ranked, Instant::now(), &mut rng);
            assert_eq!(chosen.len(), 2);
            assert_ne!(chosen[0], chosen[1]);
        }
        assert_eq!(
            plan.choose(&ranked[..2], Instant::now(), &mut rng).len(),
            2,
            "exactly as many as wanted: all of them"
        );
    }

    #[test]
    fn the_power_of_two_choices_spreads_clients_but_favours_the_better_ranked() {
        let ranked = candidates(10);
        let plan = ReservationPlan::new(1);
        let mut rng = StdRng::seed_from_u64(7);
        let mut picks = vec![0usize; ranked.len()];
        for _ in 0..10_000 {
            let chosen = plan.choose(&ranked, Instant::now(), &mut rng)[0];
            picks[ranked.iter().position(|c| c.peer() == chosen).unwrap()] += 1;
        }
        // P(rank i) = ((n-i)^2 - (n-i-1)^2) / n^2: 19 % for the best, 1 % for the worst.
        assert!(picks[0] > 1_600 && picks[0] < 2_200, "{picks:?}");
        assert!(picks[9] > 50 && picks[9] < 200, "{picks:?}");
        assert!(picks.windows(2).all(|w| w[0] + 150 > w[1]), "{picks:?}");
    }

    #[test]
    fn a_lost_relay_is_skipped_for_a_while() {
        let ranked = candidates(3);
        let now = Instant::now();
        let mut rng = StdRng::seed_from_u64(3);
        let mut plan = ReservationPlan::new(3);
        for p in plan.choose(&ranked, now, &mut rng) {
            plan.on_requested(p, now);
        }
        for c in &ranked {
            assert!(plan.on_accepted(c.peer()));
        }
        assert!(!plan.needs_more());
        assert!(plan.on_lost(ranked[0].peer(), now));
        assert!(plan.choose(&ranked, now, &mut rng).is_empty());
        assert_eq!(
            plan.choose(&ranked, now + RETRY_BACKOFF, &mut rng),
            vec![ranked[0].peer()]
        );
    }

    #[test]
    fn an_unanswered_request_times_out() {
        let ranked = candidates(1);
        let now = Instant::now();
        let mut plan = ReservationPlan::new(1);
        plan.on_requested(ranked[0].peer(), now);
        assert_eq!(plan.next_timeout(), Some(now + RESERVATION_TIMEOUT));
        assert!(plan
            .timed_out(now + RESERVATION_TIMEOUT - Duration::from_millis(1))
            .is_empty());
        assert_eq!(
            plan.timed_out(now + RESERVATION_TIMEOUT),
            vec![ranked[0].peer()]
        );
        plan.on_lost(ranked[0].peer(), now + RESERVATION_TIMEOUT);
        assert!(plan.timed_out(now + RESERVATION_TIMEOUT).is_empty());
        assert!(plan.needs_more());
    }

    #[test]
    fn full_relays_are_not_chosen() {
        let mut ranked = candidates(2);
        ranked[0].record.reservations = ranked[0].record.max_reservations;
        let plan = ReservationPlan::new(1);
        let mut rng = StdRng::seed_from_u64(5);
        assert_eq!(
            plan.choose(&ranked, Instant::now(), &mut rng),
            vec![ranked[1].peer()]
        );
    }
}
