//! Ranking relay candidates, free of I/O: enabled relays only, most spare sessions first, then
//! lowest measured round trip, then peer id (a stable order).

use std::time::Duration;

use super::trust::Trust;
use libp2p::{Multiaddr, PeerId};

use super::record::RelayRecord;

/// A verified relay record and what the reader measured about the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayCandidate {
    /// The relay's verified record.
    pub record: RelayRecord,
    /// Round trip of the record fetch, if the record was fetched from the relay itself.
    pub rtt: Option<Duration>,
}

impl RelayCandidate {
    /// The relay.
    pub fn peer(&self) -> PeerId {
        self.record.peer
    }
    /// Its addresses.
    pub fn addrs(&self) -> &[Multiaddr] {
        &self.record.addrs
    }
    /// Session slots free.
    pub fn spare_sessions(&self) -> u32 {
        self.record.spare_sessions()
    }
}

/// Spare sessions a record may claim for ranking: a claim above this ranks as this. A relay's
/// record is signed by the relay itself, so a fake relay can claim anything; past this much
/// room, what the reader has seen of a relay decides ([`rank_by_experience`]).
pub const MAX_TRUSTED_SPARE: u32 = 256;

/// Spare sessions believed of a relay that never accepted a reservation of this reader: a
/// fake claiming `u32::MAX` ranks with genuine relays it has not met either, not above them.
pub const UNPROVEN_SPARE: u32 = 32;

/// Drops withdrawn relays and orders the rest: most spare sessions (claims capped at
/// [`MAX_TRUSTED_SPARE`]), then lowest round trip (unknown last), then peer id.
pub fn rank(candidates: impl IntoIterator<Item = RelayCandidate>) -> Vec<RelayCandidate> {
    order(candidates, |_| 0, |_| MAX_TRUSTED_SPARE)
}

/// [`rank`], with the reader's experience first: relays with fewer failed reservations (since
/// their last success) come before the others, whatever they claim, and the claim of a relay
/// that never accepted a reservation of this reader counts up to [`UNPROVEN_SPARE`].
pub fn rank_by_experience(
    candidates: impl IntoIterator<Item = RelayCandidate>,
    trust: &Trust,
) -> Vec<RelayCandidate> {
    order(
        candidates,
        |peer| trust.failures(peer),
        |peer| {
            if trust.is_proven(peer) {
                MAX_TRUSTED_SPARE
            } else {
                UNPROVEN_SPARE
            }
        },
    )
}

/// Enabled candidates by fewest `failures`, most spare sessions up to `cap`, lowest round
/// trip, peer id.
fn order(
    candidates: impl IntoIterator<Item = RelayCandidate>,
    failures: impl Fn(&PeerId) -> u32,
    cap: impl Fn(&PeerId) -> u32,
) -> Vec<RelayCandidate> {
    let mut ranked: Vec<RelayCandidate> = candidates
        .into_iter()
        .filter(|c| c.record.enabled)
        .collect();
    let spare = |c: &RelayCandidate| c.spare_sessions().min(cap(&c.peer()));
    ranked.sort_by(|a, b| {
        failures(&a.peer())
            .cmp(&failures(&b.peer()))
            .then_with(|| spare(b).cmp(&spare(a)))
            .then_with(|| match (a.rtt, b.rtt) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
            .then_with(|| a.peer().to_bytes().cmp(&b.peer().to_bytes()))
    });
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::record::tests::sample;

    fn candidate(active: u32, rtt_ms: Option<u64>) -> RelayCandidate {
        let mut record = sample(PeerId::random(), 0);
        record.active_sessions = active;
        RelayCandidate {
            record,
            rtt: rtt_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn most_spare_capacity_comes_first() {
        let busy = candidate(90, Some(1));
        let idle = candidate(0, Some(50));
        let half = candidate(50, None);
        let ranked = rank([busy.clone(), idle.clone(), half.clone()]);
        assert_eq!(ranked, vec![idle, half, busy]);
    }

    #[test]
    fn equal_capacity_is_ordered_by_round_trip_unknown_last() {
        let slow = candidate(0, Some(80));
        let fast = candidate(0, Some(5));
        let unknown = candidate(0, None);
        let ranked = rank([unknown.clone(), slow.clone(), fast.clone()]);
        assert_eq!(ranked, vec![fast, slow, unknown]);
    }

    #[test]
    fn a_claim_beyond_the_trusted_spare_buys_nothing_and_failures_demote() {
        let mut liar = candidate(0, Some(40));
        liar.record.max_sessions = u32::MAX;
        let honest = candidate(0, Some(5));
        let mut big = candidate(0, Some(10));
        big.record.max_sessions = 10_000;
        let ranked = rank([liar.clone(), honest.clone(), big.clone()]);
        assert_eq!(ranked, vec![big.clone(), liar.clone(), honest.clone()]);
        let mut trust = Trust::default();
        trust.reservation_failed(big.peer());
        trust.reservation_failed(liar.peer());
        trust.reservation_failed(liar.peer());
        let ranked = rank_by_experience([liar.clone(), honest.clone(), big.clone()], &trust);
        assert_eq!(ranked, vec![honest, big, liar]);
    }

    #[test]
    fn an_unmet_relay_claiming_everything_ranks_no_higher_than_unmet_genuine_ones() {
        // sample records have max_sessions 100: a genuine relay this reader has not used yet.
        let mut liar = candidate(0, Some(50));
        liar.record.max_sessions = u32::MAX;
        let genuine = candidate(0, Some(5));
        let mut trust = Trust::default();
        let ranked = rank_by_experience([liar.clone(), genuine.clone()], &trust);
        assert_eq!(
            ranked,
            vec![genuine.clone(), liar.clone()],
            "equal claims: rtt decides"
        );
        // Once the liar accepted a reservation, its claim counts up to the trusted cap.
        trust.reservation_succeeded(&liar.peer());
        let ranked = rank_by_experience([liar.clone(), genuine.clone()], &trust);
        assert_eq!(ranked, vec![liar, genuine]);
    }

    #[test]
    fn withdrawn_relays_are_dropped() {
        let mut off = candidate(0, None);
        off.record.enabled = false;
        assert!(rank([off]).is_empty());
    }
}
