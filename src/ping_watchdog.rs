//! Dead peers on transports whose streams stall instead of failing.
//!
//! libp2p's ping reports a failure when a ping goes unanswered or its stream cannot be
//! negotiated, and the node closes such a connection. But its timeout covers only the
//! negotiation: when the transport never hands over a new stream, no ping is sent, none fails,
//! and the connection stays. WebRTC-direct does that when the browser vanishes (a closed tab, a
//! lost network): `libp2p-webrtc` waits forever for the new data channel to open and does not
//! close the connection when ICE fails. Its reservation and sessions would stay with it.
//!
//! [`PingWatchdog`] closes the gap: it keeps the time of each connection's last answered ping,
//! and names the connections whose peer once answered and then stayed silent longer than the
//! bound, so that the swarm owner closes them.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use libp2p::{ping, swarm::ConnectionId};

/// Tracks answered pings per connection and names the connections silent for too long.
#[derive(Debug, Clone)]
pub struct PingWatchdog {
    bound: Duration,
    last_answer: HashMap<ConnectionId, Instant>,
}

impl PingWatchdog {
    /// A watchdog that names a connection `bound` after its last answered ping.
    pub fn new(bound: Duration) -> Self {
        Self {
            bound,
            last_answer: HashMap::new(),
        }
    }

    /// Records a ping result: an answer restarts its connection's clock. Failures change
    /// nothing here (the swarm owner closes on them).
    pub fn on_ping(&mut self, event: &ping::Event, now: Instant) {
        if event.result.is_ok() {
            self.last_answer.insert(event.connection, now);
        }
    }

    /// Forgets a closed connection.
    pub fn on_connection_closed(&mut self, connection: ConnectionId) {
        self.last_answer.remove(&connection);
    }

    /// The connections whose last answer is more than the bound before `now`, each named once
    /// (forgotten here): close them. Peers that never answered a ping are not named.
    pub fn overdue(&mut self, now: Instant) -> Vec<ConnectionId> {
        let bound = self.bound;
        let overdue: Vec<ConnectionId> = self
            .last_answer
            .iter()
            .filter(|(_, at)| now.saturating_duration_since(**at) > bound)
            .map(|(c, _)| *c)
            .collect();
        for c in &overdue {
            self.last_answer.remove(c);
        }
        overdue
    }

    /// How many connections are watched.
    pub fn len(&self) -> usize {
        self.last_answer.len()
    }

    /// Whether no connection is watched.
    pub fn is_empty(&self) -> bool {
        self.last_answer.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::PeerId;
    use proptest::prelude::*;

    const BOUND: Duration = Duration::from_secs(25);

    fn answer(connection: ConnectionId) -> ping::Event {
        ping::Event {
            peer: PeerId::random(),
            connection,
            result: Ok(Duration::from_millis(3)),
        }
    }

    fn failure(connection: ConnectionId) -> ping::Event {
        ping::Event {
            peer: PeerId::random(),
            connection,
            result: Err(ping::Failure::Timeout),
        }
    }

    #[test]
    fn a_connection_silent_past_the_bound_is_named_once() {
        let t0 = Instant::now();
        let c = ConnectionId::new_unchecked(1);
        let mut watchdog = PingWatchdog::new(BOUND);
        watchdog.on_ping(&answer(c), t0);
        assert!(
            watchdog.overdue(t0 + BOUND).is_empty(),
            "at the bound: not yet"
        );
        assert_eq!(
            watchdog.overdue(t0 + BOUND + Duration::from_secs(1)),
            vec![c]
        );
        assert!(watchdog.overdue(t0 + BOUND * 4).is_empty(), "named once");
    }

    #[test]
    fn each_answer_restarts_the_clock() {
        let t0 = Instant::now();
        let c = ConnectionId::new_unchecked(1);
        let mut watchdog = PingWatchdog::new(BOUND);
        watchdog.on_ping(&answer(c), t0);
        watchdog.on_ping(&answer(c), t0 + Duration::from_secs(20));
        assert!(watchdog.overdue(t0 + Duration::from_secs(40)).is_empty());
        assert_eq!(watchdog.overdue(t0 + Duration::from_secs(46)), vec![c]);
    }

    #[test]
    fn failures_and_peers_that_never_answered_are_left_to_the_ping_failure_path() {
        let t0 = Instant::now();
        let mut watchdog = PingWatchdog::new(BOUND);
        watchdog.on_ping(&failure(ConnectionId::new_unchecked(2)), t0);
        assert!(watchdog.is_empty());
        assert!(watchdog.overdue(t0 + BOUND * 10).is_empty());
    }

    #[test]
    fn a_closed_connection_is_forgotten() {
        let t0 = Instant::now();
        let c = ConnectionId::new_unchecked(3);
        let mut watchdog = PingWatchdog::new(BOUND);
        watchdog.on_ping(&answer(c), t0);
        watchdog.on_connection_closed(c);
        assert!(watchdog.overdue(t0 + BOUND * 2).is_empty());
        assert_eq!(watchdog.len(), 0);
    }

    proptest! {
        /// Over random answers, closes and checks: a connection is named only if its last
        /// answer is more than the bound before the check, it is open, and it was not named
        /// since that answer.
        #[test]
        fn names_exactly_the_open_connections_silent_past_the_bound(
            ops in proptest::collection::vec((0u8..3, 0usize..4, 0u64..40), 1..60)
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut watchdog = PingWatchdog::new(BOUND);
            // the model: last answer not yet named, per open connection
            let mut model: HashMap<usize, Instant> = HashMap::new();
            for (op, c, dt) in ops {
                now += Duration::from_secs(dt);
                let id = ConnectionId::new_unchecked(c);
                match op {
                    0 => {
                        watchdog.on_ping(&answer(id), now);
                        model.insert(c, now);
                    }
                    1 => {
                        watchdog.on_connection_closed(id);
                        model.remove(&c);
                    }
                    _ => {
                        let mut named: Vec<usize> = watchdog
                            .overdue(now)
                            .into_iter()
                            .map(|id| (0..4).find(|i| ConnectionId::new_unchecked(*i) == id).unwrap())
                            .collect();
                        named.sort();
                        let mut expected: Vec<usize> = model
                            .iter()
                            .filter(|(_, at)| now.duration_since(**at) > BOUND)
                            .map(|(c, _)| *c)
                            .collect();
                        expected.sort();
                        for c in &expected {
                            model.remove(c);
                        }
                        prop_assert_eq!(named, expected);
                    }
                }
            }
        }
    }
}
