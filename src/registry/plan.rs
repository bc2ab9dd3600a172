//! Which relays a peer keeps reservations on, free of I/O: relays it does not hold yet, chosen by
//! the power of two choices (of two random candidates, the one whose record shows the smaller
//! share of its reservation slots taken, then the one markedly closer, else either at random),
//! so that many clients reading the same records spread over the fleet instead of herding onto
//! the relay every one of them ranks first; skipping relays that failed recently, until it holds
//! the wanted number. A request that gets no answer within [`RESERVATION_TIMEOUT`] counts as
//! failed.

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

/// Steps in which a relay's reservation load is compared: records are republished only when
/// the load moved by `load_change_percent`, so finer steps would compare stale noise.
pub const LOAD_STEPS: u64 = 8;

/// How a candidate compares when two are drawn, smaller first: the share of its reservation
/// slots taken (in [`LOAD_STEPS`]), then its round trip's power of two in milliseconds (a
/// relay at half the round trip is preferred; unknown last). Equal values are a tie, broken at
/// random, so that an order every reader shares (peer ids, a relay a millisecond closer to all)
/// does not decide.
pub fn preference(candidate: &RelayCandidate) -> (u64, u32) {
    let record = &candidate.record;
    let load =
        u64::from(record.reservations) * LOAD_STEPS / u64::from(record.max_reservations.max(1));
    let rtt_class = candidate.rtt.map_or(u32::MAX, |rtt| {
        let ms = u64::try_from(rtt.as_millis()).unwrap_or(u64::MAX).max(1);
        u64::BITS - ms.leading_zeros()
    });
    (load, rtt_class)
}

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
    /// free reservation slot; each pick the preferred of two drawn at random (the smaller share
    /// of its reservation slots taken, then the one at half the round trip), the first drawn
    /// when neither is preferred.
    pub fn choose(
        &self,
        ranked: &[RelayCandidate],
        now: Instant,
        rng: &mut impl Rng,
    ) -> Vec<PeerId> {
        let missing = self.want.saturating_sub(self.held.len());
        let mut eligible: Vec<&RelayCandidate> = ranked
            .iter()
            .filter(|c| !self.held.contains_key(&c.peer()))
            .filter(|c| {
                self.backoff
                    .get(&c.peer())
                    .is_none_or(|until| *until <= now)
            })
            .filter(|c| c.record.spare_reservations() > 0)
            .collect();
        let mut chosen = Vec::with_capacity(missing);
        while chosen.len() < missing && !eligible.is_empty() {
            let a = rng.gen_range(0..eligible.len());
            let b = rng.gen_range(0..eligible.len());
            let pick = if preference(eligible[b]) < preference(eligible[a]) {
                b
            } else {
                a
            };
            chosen.push(eligible.remove(pick).peer());
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

    fn picks_of(ranked: &[RelayCandidate], seed: u64) -> Vec<usize> {
        let plan = ReservationPlan::new(1);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut picks = vec![0usize; ranked.len()];
        for _ in 0..10_000 {
            let chosen = plan.choose(ranked, Instant::now(), &mut rng)[0];
            picks[ranked.iter().position(|c| c.peer() == chosen).unwrap()] += 1;
        }
        picks
    }

    #[test]
    fn relays_alike_are_chosen_evenly_whatever_their_rank() {
        // Ten relays with the same load and round trip class: the rank every reader shares
        // (here, the order of the list) must not herd them onto the first.
        let mut ranked = candidates(10);
        for (i, c) in ranked.iter_mut().enumerate() {
            c.rtt = Some(Duration::from_micros(4_000 + 100 * i as u64));
        }
        let picks = picks_of(&ranked, 7);
        assert!(
            picks.iter().all(|&p| (800..1_200).contains(&p)),
            "about 1,000 each: {picks:?}"
        );
    }

    #[test]
    fn the_power_of_two_choices_prefers_less_loaded_then_closer_relays() {
        let mut ranked = candidates(3);
        ranked[0].record.max_reservations = 100;
        ranked[0].record.reservations = 90;
        ranked[1].record.max_reservations = 100;
        ranked[1].record.reservations = 10;
        ranked[1].rtt = Some(Duration::from_millis(40));
        ranked[2].record.max_reservations = 100;
        ranked[2].record.reservations = 10;
        ranked[2].rtt = Some(Duration::from_millis(5));
        let picks = picks_of(&ranked, 9);
        // The loaded relay wins only when drawn twice (1/9), the far one when drawn with
        // itself or the loaded one (3/9), the near one otherwise (5/9).
        assert!((900..1_350).contains(&picks[0]), "{picks:?}");
        assert!((3_000..3_700).contains(&picks[1]), "{picks:?}");
        assert!((5_200..5_900).contains(&picks[2]), "{picks:?}");
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
