//! The node-wide bandwidth capacity, shared among the relaying directions: free of I/O, the
//! caller passes the clock and the counters.
//!
//! Every [`INTERVAL`] the core hands [`FairShare::allocate`] each relaying direction's
//! cumulative counters (bytes delivered, throttle pauses) and its per-session limit. From the
//! change since the last measurement the allocator estimates each direction's demand:
//!
//! * a direction **held back** by its throttle (it paused, or it used at least 90 % of its
//!   share) wants as much as its per-session limit allows;
//! * a direction that used less keeps what it used plus headroom to grow: a quarter more, and
//!   at least a small floor (all floors together are at most 1/64 of the capacity, so idle
//!   directions cost the busy ones little);
//! * a direction seen for the first time is treated as held back: it gets a full fair share at
//!   once instead of growing into it.
//!
//! The capacity is then divided by water-filling (`fill_sorted`): max-min fair (no share can
//! grow without shrinking one that is no larger) and work-conserving (while a direction wants
//! more than it gets, the whole capacity is given out), never above a demand, so never above a
//! per-session limit, and never more than the capacity in total.
//!
//! A held-back direction that then gets a larger share uses it within the interval; one that
//! does not need it shows so at the next measurement and gives it back to the others.

use std::{
    collections::HashMap,
    hash::Hash,
    time::{Duration, Instant},
};

use super::{SessionId, Side};

/// How often the shares are recomputed.
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

/// The earliest a reallocation follows the previous one when a session joins (so a burst of
/// new sessions costs at most one reallocation per this gap).
pub(crate) const JOIN_GAP: Duration = Duration::from_millis(10);

/// Counters over a shorter window than this are too coarse to measure a rate: the directions
/// keep their previous demand and the window grows until the next reallocation.
const MIN_WINDOW: Duration = Duration::from_millis(50);

/// Headroom of a direction that used less than its share: a quarter of what it used.
const HEADROOM_DIVISOR: u128 = 4;

/// The floors of all directions together are at most capacity / this.
const FLOOR_DIVISOR: u64 = 64;

/// A direction that used at least this fraction (numerator / denominator) of its share was
/// held back by it, paused or not.
const HELD_NUMERATOR: u128 = 9;
const HELD_DENOMINATOR: u128 = 10;

/// One direction's counters, as the allocator reads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FlowSample<K> {
    /// Which direction.
    pub(crate) key: K,
    /// Bytes it delivered since it started (cumulative).
    pub(crate) moved: u64,
    /// Times its throttle paused it since it started (cumulative).
    pub(crate) pauses: u64,
    /// Its session's own limit, bytes per second, if any.
    pub(crate) limit: Option<u64>,
}

/// What the allocator remembers of a direction.
#[derive(Clone, Copy, Debug)]
struct Flow {
    /// Counters at the start of the current measurement window.
    moved: u64,
    pauses: u64,
    since: Instant,
    /// The demand and share of the last allocation.
    demand: u64,
    share: u64,
    /// The allocation that last saw it.
    round: u64,
}

/// A direction being allocated.
#[derive(Clone, Copy, Debug)]
struct Entry<K> {
    key: K,
    demand: u64,
    share: u64,
}

/// The node-wide fair-share allocator (see the module documentation).
#[derive(Debug)]
pub(crate) struct FairShare<K> {
    flows: HashMap<K, Flow>,
    round: u64,
    /// Reused between allocations: no allocation per round once warmed up.
    samples: Vec<FlowSample<K>>,
    entries: Vec<Entry<K>>,
    shares: Vec<(K, u64)>,
}

impl<K: Copy + Eq + Hash> Default for FairShare<K> {
    fn default() -> Self {
        FairShare {
            flows: HashMap::new(),
            round: 0,
            samples: Vec::new(),
            entries: Vec::new(),
            shares: Vec::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> FairShare<K> {
    /// An allocator that knows no direction yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Directions seen by the last allocation.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    /// Forgets every direction (the node-wide limit was removed).
    pub(crate) fn clear(&mut self) {
        self.flows.clear();
        self.samples = Vec::new();
        self.entries = Vec::new();
        self.shares = Vec::new();
    }

    /// A share for each of `newcomers` directions about to start, before the next allocation
    /// counts them: an equal split of `capacity` among them and the directions known now.
    pub(crate) fn newcomer_share(&self, capacity: u64, newcomers: usize) -> u64 {
        let n = (self.flows.len() + newcomers).max(1);
        (capacity / u64::try_from(n).unwrap_or(u64::MAX)).max(1)
    }

    /// Divides `capacity` (bytes per second) among the directions of `samples` as of `now`;
    /// returns each one's share. Directions not in `samples` are forgotten.
    pub(crate) fn allocate(
        &mut self,
        now: Instant,
        capacity: u64,
        samples: impl IntoIterator<Item = FlowSample<K>>,
    ) -> &[(K, u64)] {
        self.round += 1;
        let round = self.round;
        let mut entries = std::mem::take(&mut self.entries);
        entries.clear();
        // Collected first: the floor depends on how many directions share it.
        let mut pending = std::mem::take(&mut self.samples);
        pending.clear();
        pending.extend(samples);
        let n = u64::try_from(pending.len()).unwrap_or(u64::MAX).max(1);
        let floor = (capacity / FLOOR_DIVISOR.saturating_mul(n)).max(1);
        for &sample in &pending {
            let demand = self.demand(sample, now, floor, round);
            entries.push(Entry {
                key: sample.key,
                demand,
                share: 0,
            });
        }
        entries.sort_unstable_by_key(|e| e.demand);
        fill_sorted(capacity, &mut entries);
        self.shares.clear();
        for entry in &entries {
            if let Some(flow) = self.flows.get_mut(&entry.key) {
                flow.share = entry.share;
            }
            self.shares.push((entry.key, entry.share));
        }
        self.flows.retain(|_, f| f.round == round);
        self.samples = pending;
        self.entries = entries;
        &self.shares
    }

    /// The demand of one direction, from the change of its counters since its window started;
    /// updates what is remembered of it (except the share, set once allocated).
    fn demand(&mut self, sample: FlowSample<K>, now: Instant, floor: u64, round: u64) -> u64 {
        let cap = sample.limit.unwrap_or(u64::MAX);
        let Some(flow) = self.flows.get_mut(&sample.key) else {
            // New: a full fair share at once.
            self.flows.insert(
                sample.key,
                Flow {
                    moved: sample.moved,
                    pauses: sample.pauses,
                    since: now,
                    demand: cap,
                    share: 0,
                    round,
                },
            );
            return cap;
        };
        flow.round = round;
        let window = now.saturating_duration_since(flow.since);
        if window < MIN_WINDOW {
            // Too short to measure: as before (within a new limit).
            flow.demand = flow.demand.min(cap);
            return flow.demand;
        }
        let moved = sample.moved.saturating_sub(flow.moved);
        let paused = sample.pauses != flow.pauses;
        let rate = u128::from(moved) * 1_000_000_000 / window.as_nanos().max(1);
        let held = paused || rate * HELD_DENOMINATOR >= u128::from(flow.share) * HELD_NUMERATOR;
        let demand = if held {
            cap
        } else {
            let headroom = (rate / HEADROOM_DIVISOR).max(u128::from(floor));
            u64::try_from(rate + headroom).unwrap_or(u64::MAX).min(cap)
        };
        flow.moved = sample.moved;
        flow.pauses = sample.pauses;
        flow.since = now;
        flow.demand = demand;
        demand
    }
}

/// The node-wide bandwidth of the relay core: the allocator over the sessions' directions and
/// its timer, which runs only while a capacity is set and sessions relay.
#[derive(Debug)]
pub(crate) struct NodeBandwidth {
    /// The allocator; a direction is a session and the side it reads from.
    pub(crate) fair: FairShare<(SessionId, Side)>,
    /// The next reallocation, while one is scheduled.
    at: Option<Instant>,
    /// The last reallocation.
    last: Instant,
    /// The capacity the last reallocation applied.
    applied: Option<u64>,
}

impl NodeBandwidth {
    /// No capacity applied yet, as of `now`.
    pub(crate) fn new(now: Instant) -> Self {
        NodeBandwidth {
            fair: FairShare::new(),
            at: None,
            last: now,
            applied: None,
        }
    }

    /// When the next reallocation is due, given the configured `capacity`: at once when it
    /// differs from the one applied last (so a configuration change takes effect whichever way
    /// it came), else as scheduled.
    pub(crate) fn deadline(&self, capacity: Option<u64>) -> Option<Instant> {
        if capacity != self.applied {
            Some(self.last)
        } else {
            self.at
        }
    }

    /// A session joins: reallocate soon ([`JOIN_GAP`] after the last reallocation at the
    /// latest), so it is counted in the shares of the others.
    pub(crate) fn joined(&mut self) {
        let soon = self.last + JOIN_GAP;
        self.at = Some(self.at.map_or(soon, |at| at.min(soon)));
    }

    /// A reallocation of `capacity` ran at `now` over `flows` directions: the next one is due
    /// an [`INTERVAL`] later, unless there is nothing to share or no capacity to share.
    pub(crate) fn ran(&mut self, now: Instant, capacity: Option<u64>, flows: usize) {
        self.last = now;
        self.applied = capacity;
        self.at = (capacity.is_some() && flows > 0).then(|| now + INTERVAL);
    }
}

/// Water-filling of `capacity` among `demands`: the shares, in the order of `demands`.
///
/// Each share is at most its demand; with `level` the largest share, a share below its demand
/// is `level` or `level - 1` (integer division leaves a remainder of at most one byte each);
/// when some demand is not met, the shares add up to `capacity` exactly.
#[cfg(test)]
pub(crate) fn water_fill(capacity: u64, demands: &[u64]) -> Vec<u64> {
    let mut entries: Vec<Entry<usize>> = demands
        .iter()
        .enumerate()
        .map(|(key, &demand)| Entry {
            key,
            demand,
            share: 0,
        })
        .collect();
    entries.sort_unstable_by_key(|e| e.demand);
    fill_sorted(capacity, &mut entries);
    let mut shares = vec![0; demands.len()];
    for e in entries {
        shares[e.key] = e.share;
    }
    shares
}

/// Water-filling over entries sorted by demand, ascending: the smallest demands are met in
/// full while they are below an equal split of what is left; the rest share what is left
/// equally (the remainder of the division goes one byte each to the largest demands).
fn fill_sorted<K>(capacity: u64, entries: &mut [Entry<K>]) {
    let mut left = capacity;
    let n = entries.len();
    for i in 0..n {
        let rest = (n - i) as u64;
        let equal = left / rest;
        if entries[i].demand <= equal {
            entries[i].share = entries[i].demand;
            left -= entries[i].demand;
            continue;
        }
        // Every demand from here on is above `equal`, so above `equal + 1` for the remainder.
        let extra = left % rest;
        for (j, entry) in entries[i..].iter_mut().enumerate() {
            entry.share = equal + u64::from(j as u64 >= rest - extra);
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throttle::TokenBucket;
    use proptest::prelude::*;

    const MB: u64 = 1_000_000;

    fn sample(key: usize, moved: u64, pauses: u64, limit: Option<u64>) -> FlowSample<usize> {
        FlowSample {
            key,
            moved,
            pauses,
            limit,
        }
    }

    fn shares_of(shares: &[(usize, u64)]) -> HashMap<usize, u64> {
        shares.iter().copied().collect()
    }

    #[test]
    fn water_filling_meets_small_demands_and_splits_the_rest_equally() {
        assert_eq!(water_fill(10, &[1, 2, u64::MAX]), vec![1, 2, 7]);
        assert_eq!(water_fill(10, &[u64::MAX, 1, 2]), vec![7, 1, 2]);
        // Demands below an equal split are met; what they leave goes to the others.
        assert_eq!(water_fill(100, &[50, 10, 50]), vec![45, 10, 45]);
        // Everybody satisfied: the rest stays unallocated.
        assert_eq!(water_fill(100, &[20, 30]), vec![20, 30]);
        // The remainder of the division: one byte each, never over a demand.
        let shares = water_fill(10, &[u64::MAX; 3]);
        assert_eq!(shares.iter().sum::<u64>(), 10);
        assert!(shares.iter().all(|s| *s == 3 || *s == 4));
        assert_eq!(water_fill(5, &[]), Vec::<u64>::new());
        assert_eq!(water_fill(2, &[u64::MAX; 4]).iter().sum::<u64>(), 2);
    }

    #[test]
    fn a_new_direction_gets_a_fair_share_at_once() {
        let t0 = Instant::now();
        let mut fair = FairShare::new();
        let shares = fair.allocate(t0, 10 * MB, (0..4).map(|k| sample(k, 0, 0, None)));
        assert!(shares.iter().all(|(_, s)| *s == 10 * MB / 4), "{shares:?}");
        // The four saturate their shares; a fifth arrives: everybody gets a fifth at once.
        let t1 = t0 + INTERVAL;
        let samples = (0..4)
            .map(|k| sample(k, 10 * MB / 40, 3, None))
            .chain([sample(4, 0, 0, None)]);
        let shares = shares_of(fair.allocate(t1, 10 * MB, samples));
        assert_eq!(shares.len(), 5);
        assert!(shares.values().all(|s| *s == 2 * MB), "{shares:?}");
    }

    #[test]
    fn an_idle_direction_keeps_headroom_and_leaves_the_rest_to_the_held_back_ones() {
        let t0 = Instant::now();
        let mut fair = FairShare::new();
        fair.allocate(t0, 10 * MB, [sample(0, 0, 0, None), sample(1, 0, 0, None)]);
        // Over 100 ms: 0 moved 100 kB (1 MB/s, a fifth of its 5 MB/s share, no pause); 1 was
        // held back.
        let t1 = t0 + INTERVAL;
        let shares = shares_of(fair.allocate(
            t1,
            10 * MB,
            [sample(0, 100_000, 0, None), sample(1, 500_000, 4, None)],
        ));
        assert_eq!(shares[&0], 1_250_000, "1 MB/s used plus a quarter");
        assert_eq!(shares[&1], 10 * MB - 1_250_000);
        // 0 goes quiet: it keeps the floor (10 MB/s / 64 / 2 flows).
        let t2 = t1 + INTERVAL;
        let shares = shares_of(fair.allocate(
            t2,
            10 * MB,
            [sample(0, 100_000, 0, None), sample(1, 1_375_000, 9, None)],
        ));
        assert_eq!(shares[&0], 10 * MB / 128);
        assert_eq!(shares[&1], 10 * MB - 10 * MB / 128);
        // 0 wakes up and is held back at its floor: the next round splits equally again.
        let t3 = t2 + INTERVAL;
        let shares = shares_of(fair.allocate(
            t3,
            10 * MB,
            [sample(0, 107_000, 1, None), sample(1, 2_350_000, 13, None)],
        ));
        assert_eq!((shares[&0], shares[&1]), (5 * MB, 5 * MB));
    }

    #[test]
    fn using_nearly_all_of_a_share_counts_as_held_back_even_without_a_pause() {
        let t0 = Instant::now();
        let mut fair = FairShare::new();
        fair.allocate(t0, 10 * MB, [sample(0, 0, 0, None), sample(1, 0, 0, None)]);
        let t1 = t0 + INTERVAL;
        // 0 moved 95 % of its 5 MB/s share; 1 moved nothing.
        let shares = shares_of(fair.allocate(
            t1,
            10 * MB,
            [sample(0, 475_000, 0, None), sample(1, 0, 0, None)],
        ));
        assert_eq!(shares[&0], 10 * MB - 10 * MB / 128);
    }

    #[test]
    fn the_per_session_limit_caps_a_share_and_the_rest_goes_to_the_others() {
        let t0 = Instant::now();
        let mut fair = FairShare::new();
        let shares = shares_of(fair.allocate(
            t0,
            10 * MB,
            [
                sample(0, 0, 0, Some(MB)),
                sample(1, 0, 0, None),
                sample(2, 0, 0, Some(20 * MB)),
            ],
        ));
        assert_eq!(
            (shares[&0], shares[&1], shares[&2]),
            (MB, 9 * MB / 2, 9 * MB / 2)
        );
    }

    #[test]
    fn a_short_window_keeps_the_previous_demands_and_departed_directions_are_forgotten() {
        let t0 = Instant::now();
        let mut fair = FairShare::new();
        fair.allocate(t0, 10 * MB, [sample(0, 0, 0, None), sample(1, 0, 0, None)]);
        let t1 = t0 + INTERVAL;
        fair.allocate(
            t1,
            10 * MB,
            [sample(0, 100_000, 0, None), sample(1, 500_000, 2, None)],
        );
        // 10 ms later a newcomer joins: the others are not measured over 10 ms (0 moved
        // nothing in it, yet keeps its demand), the newcomer gets the fair level.
        let t2 = t1 + JOIN_GAP;
        let shares = shares_of(fair.allocate(
            t2,
            10 * MB,
            [
                sample(0, 100_000, 0, None),
                sample(1, 550_000, 2, None),
                sample(2, 0, 0, None),
            ],
        ));
        assert_eq!(shares[&0], 1_250_000);
        assert_eq!(shares[&1], (10 * MB - 1_250_000) / 2);
        assert_eq!(shares[&2], (10 * MB - 1_250_000) / 2);
        assert_eq!(fair.len(), 3);
        // The window of 0 and 1 runs from t1: at t1 + 100 ms they are measured over 100 ms.
        let t3 = t1 + INTERVAL;
        let shares = shares_of(fair.allocate(t3, 10 * MB, [sample(1, 900_000, 5, None)]));
        assert_eq!(shares[&1], 10 * MB);
        assert_eq!(fair.len(), 1);
        assert_eq!(fair.newcomer_share(10 * MB, 2), 10 * MB / 3);
        fair.clear();
        assert_eq!(fair.len(), 0);
    }

    /// A direction in the simulations: a token bucket at min(limit, share) and a sender.
    struct SimFlow {
        bucket: TokenBucket,
        limit: Option<u64>,
        saturating: bool,
        moved: u64,
        pauses: u64,
        starts: Instant,
    }

    /// Runs `flows` from `t0` for `secs` simulated seconds in 1 ms steps, reallocating
    /// `capacity` with `fair` every [`INTERVAL`]; returns each flow's bytes over the last
    /// `measure_secs`.
    fn simulate(
        fair: &mut FairShare<usize>,
        capacity: u64,
        flows: &mut [SimFlow],
        t0: Instant,
        secs: u64,
        measure_secs: u64,
    ) -> Vec<u64> {
        let end = t0 + Duration::from_secs(secs);
        let measure_from = end - Duration::from_secs(measure_secs);
        let mut at_measure_start: Option<Vec<u64>> = None;
        let mut now = t0;
        let mut next_allocation = t0;
        while now < end {
            if now >= next_allocation {
                next_allocation = now + INTERVAL;
                let samples = flows
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.starts <= now)
                    .map(|(k, f)| sample(k, f.moved, f.pauses, f.limit));
                let shares = fair.allocate(now, capacity, samples).to_vec();
                let total: u64 = shares.iter().map(|(_, s)| s).sum();
                assert!(total <= capacity);
                for (k, share) in shares {
                    let f = &mut flows[k];
                    let rate = f.limit.map_or(share, |l| l.min(share));
                    f.bucket.set_rate(rate, now);
                }
            }
            if now >= measure_from && at_measure_start.is_none() {
                at_measure_start = Some(flows.iter().map(|f| f.moved).collect());
            }
            for f in flows.iter_mut().filter(|f| f.saturating && f.starts <= now) {
                // A sender with more queued than the throttle lets through: takes every token
                // and waits for more.
                let n = f.bucket.available(now);
                f.bucket.consume(n);
                f.moved += n;
                f.pauses += 1;
            }
            now += Duration::from_millis(1);
        }
        let start = at_measure_start.expect("measured");
        flows.iter().zip(start).map(|(f, s)| f.moved - s).collect()
    }

    fn sim_flows(t0: Instant, sessions: usize, busy: usize, limit: Option<u64>) -> Vec<SimFlow> {
        (0..sessions * 2)
            .map(|k| SimFlow {
                bucket: TokenBucket::new(1, t0),
                limit,
                // Session i is flows 2i (source to target) and 2i + 1 (back): the first
                // `busy` sessions send one way.
                saturating: k % 2 == 0 && k / 2 < busy,
                moved: 0,
                pauses: 0,
                // Sessions start staggered.
                starts: t0 + Duration::from_millis(37 * (k / 2) as u64),
            })
            .collect()
    }

    #[test]
    fn twenty_saturating_sessions_converge_to_equal_shares_of_the_capacity() {
        let t0 = Instant::now();
        // The reference's default of 1 MB/s per session: the node limit binds at 0.5 MB/s each.
        let mut flows = sim_flows(t0, 20, 20, Some(MB));
        let moved = simulate(&mut FairShare::new(), 10 * MB, &mut flows, t0, 10, 5);
        let busy: Vec<f64> = moved.iter().step_by(2).map(|b| *b as f64 / 5.0).collect();
        let total: f64 = busy.iter().sum();
        let (min, max) = busy
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
        assert!(max / min <= 1.2, "rates {busy:?}");
        // The idle directions keep their floors: 20 of them, 1/64 of the capacity / 40 each.
        let error = (total - 1e7).abs() / 1e7;
        assert!(error <= 0.03, "total {total} B/s");
        assert!(moved.iter().skip(1).step_by(2).all(|b| *b == 0));
    }

    #[test]
    fn two_saturating_sessions_among_eighteen_idle_ones_get_half_the_capacity_each() {
        let t0 = Instant::now();
        let mut flows = sim_flows(t0, 20, 2, None);
        let moved = simulate(&mut FairShare::new(), 10 * MB, &mut flows, t0, 10, 5);
        for busy in [moved[0], moved[2]] {
            let rate = busy as f64 / 5.0;
            assert!((4.75e6..=5.0e6).contains(&rate), "{rate} B/s");
        }
    }

    #[test]
    fn a_session_that_stops_sending_hands_its_share_to_the_others() {
        let t0 = Instant::now();
        let mut fair = FairShare::new();
        let mut flows = sim_flows(t0, 2, 2, None);
        // Session 1 sends for 2 s only.
        let moved = simulate(&mut fair, 10 * MB, &mut flows, t0, 2, 1);
        assert!((4.8e6..=5.0e6).contains(&(moved[2] as f64)), "{moved:?}");
        flows[2].saturating = false;
        let t1 = t0 + Duration::from_secs(2);
        let moved = simulate(&mut fair, 10 * MB, &mut flows, t1, 3, 2);
        // The three others idle keep a floor of 10 MB/s / 64 / 4 each: close to all of it.
        assert!(moved[0] as f64 / 2.0 > 9.8e6, "{moved:?}");
        assert_eq!(moved[2], 0);
    }

    /// What a direction of the property test wants.
    #[derive(Clone, Copy, Debug)]
    enum Want {
        /// As much as it gets.
        All,
        /// This many bytes per second.
        Rate(u64),
    }

    fn want() -> impl Strategy<Value = Want> {
        prop_oneof![
            2 => Just(Want::All),
            2 => (0u64..20 * MB).prop_map(Want::Rate),
            1 => Just(Want::Rate(0)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn water_filling_is_bounded_work_conserving_and_max_min_fair(
            capacity in 1u64..100 * MB,
            demands in proptest::collection::vec(
                prop_oneof![Just(u64::MAX), 0u64..20 * MB, 0u64..1_000],
                0..40,
            ),
        ) {
            let shares = water_fill(capacity, &demands);
            let total: u64 = shares.iter().sum();
            prop_assert!(total <= capacity);
            for (i, (&share, &demand)) in shares.iter().zip(&demands).enumerate() {
                prop_assert!(share <= demand);
                if share < demand {
                    // Work conserving: someone wants more, so everything is given out.
                    prop_assert_eq!(total, capacity);
                    // Max-min fair: nobody else has more (but for the division's remainder).
                    for (j, &other) in shares.iter().enumerate() {
                        prop_assert!(
                            other <= share + 1,
                            "{} has {} > {} of {}", j, other, share, i
                        );
                    }
                }
            }
        }

        #[test]
        fn allocations_stay_within_capacity_and_limits_and_are_fair_to_held_back_directions(
            capacity in 1_000u64..100 * MB,
            flows in proptest::collection::vec(
                (want(), proptest::option::of(1_000u64..20 * MB), 0usize..5),
                1..30,
            ),
            rounds in 1usize..12,
        ) {
            let t0 = Instant::now();
            let mut fair = FairShare::new();
            // Cumulative counters, and the share each direction runs at.
            let mut moved = vec![0u64; flows.len()];
            let mut pauses = vec![0u64; flows.len()];
            let mut shares: HashMap<usize, u64> = HashMap::new();
            for round in 0..rounds {
                let now = t0 + INTERVAL * round as u32;
                // Directions join at their round, and the one at index 0 leaves after round 6.
                let present: Vec<usize> = (0..flows.len())
                    .filter(|k| flows[*k].2 <= round && !(*k == 0 && round > 6))
                    .collect();
                let samples: Vec<FlowSample<usize>> = present
                    .iter()
                    .map(|&k| sample(k, moved[k], pauses[k], flows[k].1))
                    .collect();
                let new: Vec<bool> = present.iter().map(|k| !shares.contains_key(k)).collect();
                shares = shares_of(fair.allocate(now, capacity, samples));
                prop_assert_eq!(shares.len(), present.len());
                let total: u64 = shares.values().sum();
                prop_assert!(total <= capacity, "{} > {}", total, capacity);
                for (&k, &share) in &shares {
                    prop_assert!(flows[k].1.is_none_or(|l| share <= l), "over its limit");
                }
                // Directions that want all they can get (and new ones, which are presumed to):
                // if one gets less than its limit, the capacity is all given out, and nobody
                // gets more than it.
                for (i, &k) in present.iter().enumerate() {
                    let greedy = matches!(flows[k].0, Want::All) || new[i];
                    let share = shares[&k];
                    let below_limit = flows[k].1.is_none_or(|l| share < l);
                    if greedy && below_limit {
                        prop_assert_eq!(
                            total, capacity,
                            "held back {} at {} yet capacity left", k, share
                        );
                        for (&j, &other) in &shares {
                            prop_assert!(
                                other <= share + 1,
                                "{} has {} > {} of held-back {}", j, other, share, k
                            );
                        }
                    }
                }
                // The interval runs: each direction moves what it wants, up to its share, and
                // pauses if it wanted more.
                for &k in &present {
                    let rate = flows[k].1.map_or(shares[&k], |l| l.min(shares[&k]));
                    let wanted = match flows[k].0 {
                        Want::All => u64::MAX,
                        Want::Rate(r) => r,
                    };
                    moved[k] += rate.min(wanted) / 10;
                    if wanted > rate {
                        pauses[k] += 1;
                    }
                }
            }
        }
    }
}
