//! Whether the relays a peer holds reservations on still answer, free of I/O.
//!
//! A frozen relay (a stopped process, a hung host) keeps its TCP connections open: the kernel
//! still acknowledges, so neither the connection nor the relay client's reservation notices
//! anything until the reservation's renewal, up to an hour later. The registry therefore asks
//! each relay it holds a reservation on for its record every [`PROBE_INTERVAL`] over the open
//! connection; a relay that leaves [`SILENCES_TO_DROP`] probes in a row unanswered (each bounded
//! by the fetch timeout, a silent one retried after [`PROBE_RETRY`]) is dropped and its
//! reservation replaced. With the defaults a frozen relay is dropped
//! `PROBE_INTERVAL + 3 × fetch_timeout + 2 × PROBE_RETRY` = 27 s after its last answer (plus the
//! registry timer's granularity, a second per step).
//!
//! A loaded relay is not a frozen one: an answer that comes after its probe counted as silent
//! still clears the silences, as long as the relay has not been dropped yet (the request stays
//! open for `SILENCES_TO_DROP × fetch_timeout`). A relay answering a probe within 15 s with the
//! defaults therefore stays.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::PeerId;

/// How often a relay holding one of our reservations is asked for its record.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// How soon a probe left unanswered is repeated.
pub const PROBE_RETRY: Duration = Duration::from_secs(1);
/// Unanswered probes in a row after which the relay is dropped.
pub const SILENCES_TO_DROP: u32 = 3;

#[derive(Debug)]
struct Probe {
    next_at: Instant,
    silences: u32,
    in_flight: bool,
}

/// The probes of the relays a peer holds reservations on.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    probes: HashMap<PeerId, Probe>,
}

/// What an unanswered probe means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Ask again soon.
    Retry,
    /// Too many in a row: the relay is gone.
    Dead,
}

impl Liveness {
    /// The relays of `held` (relays with an accepted reservation) to probe now; they count as
    /// probed until [`answered_current`](Self::answered_current) or [`silent`](Self::silent). Relays no longer
    /// held are forgotten; newly held ones are first probed one interval from now.
    pub(crate) fn due(&mut self, held: &[PeerId], now: Instant) -> Vec<PeerId> {
        self.probes.retain(|relay, _| held.contains(relay));
        let mut due = Vec::new();
        for relay in held {
            let probe = self.probes.entry(*relay).or_insert(Probe {
                next_at: now + PROBE_INTERVAL,
                silences: 0,
                in_flight: false,
            });
            if !probe.in_flight && now >= probe.next_at {
                probe.in_flight = true;
                due.push(*relay);
            }
        }
        due
    }

    /// `relay` answered a probe: the current one, or a late answer to one that already counted
    /// as silent. A late answer clears the silences; the probe in flight, if any, stays so.
    pub(crate) fn answered(&mut self, relay: &PeerId, now: Instant) {
        if let Some(probe) = self.probes.get_mut(relay) {
            probe.silences = 0;
            if !probe.in_flight {
                probe.next_at = now + PROBE_INTERVAL;
            }
        }
    }

    /// The probe of `relay` now in flight was answered.
    pub(crate) fn answered_current(&mut self, relay: &PeerId, now: Instant) {
        if let Some(probe) = self.probes.get_mut(relay) {
            probe.in_flight = false;
        }
        self.answered(relay, now);
    }

    /// `relay` left a probe unanswered (timeout, connection lost).
    pub(crate) fn silent(&mut self, relay: &PeerId, now: Instant) -> Verdict {
        let Some(probe) = self.probes.get_mut(relay) else {
            return Verdict::Retry;
        };
        probe.silences += 1;
        probe.in_flight = false;
        if probe.silences >= SILENCES_TO_DROP {
            self.probes.remove(relay);
            return Verdict::Dead;
        }
        probe.next_at = now + PROBE_RETRY;
        Verdict::Retry
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_held_relay_is_probed_once_per_interval() {
        let mut live = Liveness::default();
        let relay = PeerId::random();
        let t0 = Instant::now();
        assert!(live.due(&[relay], t0).is_empty());
        assert_eq!(live.due(&[relay], t0 + PROBE_INTERVAL), vec![relay]);
        // In flight: not probed twice.
        assert!(live.due(&[relay], t0 + PROBE_INTERVAL * 2).is_empty());
        live.answered_current(&relay, t0 + PROBE_INTERVAL * 2);
        assert!(live.due(&[relay], t0 + PROBE_INTERVAL * 2).is_empty());
        assert_eq!(live.due(&[relay], t0 + PROBE_INTERVAL * 3), vec![relay]);
    }

    #[test]
    fn a_relay_silent_three_times_in_a_row_is_dead_within_the_stated_bound() {
        let mut live = Liveness::default();
        let relay = PeerId::random();
        let fetch_timeout = Duration::from_secs(5);
        let t0 = Instant::now();
        live.due(&[relay], t0);
        // It freezes right after being added: probed one interval later, silent after the
        // fetch timeout, retried, silent again, until the last silence.
        let mut now = t0 + PROBE_INTERVAL;
        assert_eq!(live.due(&[relay], now), vec![relay]);
        for _ in 1..SILENCES_TO_DROP {
            now += fetch_timeout;
            assert_eq!(live.silent(&relay, now), Verdict::Retry);
            now += PROBE_RETRY;
            assert_eq!(live.due(&[relay], now), vec![relay]);
        }
        now += fetch_timeout;
        assert_eq!(live.silent(&relay, now), Verdict::Dead);
        assert_eq!(
            now - t0,
            PROBE_INTERVAL + fetch_timeout * 3 + PROBE_RETRY * 2,
            "the bound the module documents"
        );
    }

    #[test]
    fn a_late_answer_keeps_a_loaded_relay() {
        let mut live = Liveness::default();
        let relay = PeerId::random();
        let fetch_timeout = Duration::from_secs(5);
        let t0 = Instant::now();
        live.due(&[relay], t0);
        let mut now = t0 + PROBE_INTERVAL;
        live.due(&[relay], now);
        now += fetch_timeout;
        assert_eq!(live.silent(&relay, now), Verdict::Retry);
        now += PROBE_RETRY;
        assert_eq!(live.due(&[relay], now), vec![relay]);
        now += fetch_timeout;
        assert_eq!(live.silent(&relay, now), Verdict::Retry);
        // The first probe's answer arrives 12 s late: the relay is slow, not gone, and is next
        // probed one interval later.
        live.answered(&relay, now);
        assert!(live.due(&[relay], now + PROBE_RETRY).is_empty());
        now += PROBE_INTERVAL;
        assert_eq!(live.due(&[relay], now), vec![relay]);
        now += fetch_timeout;
        assert_eq!(live.silent(&relay, now), Verdict::Retry);
    }

    #[test]
    fn an_answer_clears_a_silence() {
        let mut live = Liveness::default();
        let relay = PeerId::random();
        let t0 = Instant::now();
        live.due(&[relay], t0);
        live.due(&[relay], t0 + PROBE_INTERVAL);
        assert_eq!(live.silent(&relay, t0 + PROBE_INTERVAL), Verdict::Retry);
        live.due(&[relay], t0 + PROBE_INTERVAL * 2);
        live.answered_current(&relay, t0 + PROBE_INTERVAL * 2);
        live.due(&[relay], t0 + PROBE_INTERVAL * 3);
        assert_eq!(live.silent(&relay, t0 + PROBE_INTERVAL * 3), Verdict::Retry);
    }

    #[test]
    fn a_relay_no_longer_held_is_forgotten() {
        let mut live = Liveness::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        live.due(&[a, b], t0);
        assert_eq!(live.due(&[b], t0 + PROBE_INTERVAL), vec![b]);
        assert_eq!(live.silent(&a, t0 + PROBE_INTERVAL), Verdict::Retry);
        assert!(!live.probes.contains_key(&a));
    }

    proptest! {
        /// Whatever answers and silences come, a relay is never probed twice at once, is
        /// declared dead only after `SILENCES_TO_DROP` silences with no answer between, and
        /// the probes kept are those of held relays.
        #[test]
        fn probes_follow_answers_and_silences(
            steps in proptest::collection::vec((0u8..3, 0u8..4, 0u64..15), 1..200),
        ) {
            let relays: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
            let mut live = Liveness::default();
            let mut now = Instant::now();
            let mut in_flight = std::collections::HashSet::new();
            let mut silences = HashMap::new();
            for (who, what, wait) in steps {
                now += Duration::from_secs(wait);
                let relay = relays[usize::from(who)];
                match what {
                    0 | 1 => {
                        for due in live.due(&relays, now) {
                            prop_assert!(in_flight.insert(due), "probed twice at once");
                        }
                    }
                    2 if in_flight.remove(&relay) => {
                        live.answered_current(&relay, now);
                        silences.insert(relay, 0);
                    }
                    2 => {
                        // A late answer to an earlier probe.
                        live.answered(&relay, now);
                        silences.insert(relay, 0);
                    }
                    3 if in_flight.remove(&relay) => {
                        let n = silences.entry(relay).or_insert(0);
                        *n += 1;
                        let verdict = live.silent(&relay, now);
                        prop_assert_eq!(verdict == Verdict::Dead, *n >= SILENCES_TO_DROP);
                        if verdict == Verdict::Dead {
                            silences.insert(relay, 0);
                        }
                    }
                    _ => {}
                }
                prop_assert!(live.probes.len() <= relays.len());
            }
        }
    }
}
