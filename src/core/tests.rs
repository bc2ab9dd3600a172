//! The relay core with a fake clock: every session transition, close and drain in every state,
//! connections closing under sessions, timers, and a property test over random operation
//! sequences that plays the handlers and checks the core's invariants.

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr},
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant, SystemTime},
};

use libp2p::{swarm::ConnectionId, PeerId};
use proptest::prelude::*;

use super::{Command, Output, RelayCore};
use crate::{
    session::{shared::CloseRequest, SessionState},
    CloseReason, Config, ConfigBuilder, DenyReason, Event, ReservationEndReason, SessionId, Status,
};

fn conn(n: usize) -> ConnectionId {
    ConnectionId::new_unchecked(n)
}

/// A config without request-rate limits or periodic stats, changed by `change`.
fn config_with(change: impl FnOnce(ConfigBuilder) -> ConfigBuilder) -> Config {
    change(
        Config::builder()
            .request_rate_per_peer(None)
            .request_rate_per_ip(None)
            .stats_interval(None),
    )
    .build()
    .unwrap()
}

fn config() -> Config {
    config_with(|c| c)
}

/// One source and one target may hold several sessions at once.
fn several_per_peer() -> Config {
    config_with(|c| c.max_sessions_per_peer(10))
}

/// A core with a target holding a reservation (connection 1) and a source (connection 2).
struct World {
    core: RelayCore,
    now: Instant,
    wall: SystemTime,
    target: PeerId,
    source: PeerId,
}

const TARGET_CONN: usize = 1;
const SOURCE_CONN: usize = 2;

impl World {
    fn new(config: Config) -> World {
        let now = Instant::now();
        let mut core = RelayCore::new(PeerId::random(), config, now);
        let (target, source) = (PeerId::random(), PeerId::random());
        let ip = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        core.on_connection_established(conn(TARGET_CONN), target, false, ip);
        core.on_connection_established(conn(SOURCE_CONN), source, false, ip);
        let mut world = World {
            core,
            now,
            wall: SystemTime::now(),
            target,
            source,
        };
        world
            .core
            .on_reserve(target, conn(TARGET_CONN), now, world.wall)
            .unwrap();
        world.drain();
        world
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.wall += by;
    }

    /// Advances the fake clock to each deadline up to `until`, running what is due.
    fn run_until(&mut self, until: Instant) {
        while let Some(at) = self.core.poll_timeout().filter(|at| *at <= until) {
            let at = at.max(self.now);
            self.wall += at - self.now;
            self.now = at;
            self.core.handle_timeout(at);
        }
        self.wall += until.saturating_duration_since(self.now);
        self.now = self.now.max(until);
    }

    fn drain(&mut self) -> Vec<Output> {
        std::iter::from_fn(|| self.core.poll()).collect()
    }

    fn connect(&mut self) -> SessionId {
        let id = self
            .core
            .on_connect(self.source, conn(SOURCE_CONN), self.target, self.now)
            .unwrap();
        let out = self.drain();
        assert!(
            matches!(out.as_slice(), [Output::Command(Command::OpenStop { session, connection, .. })]
                if *session == id && *connection == conn(TARGET_CONN)),
            "{out:?}"
        );
        id
    }

    /// A session whose target accepted: the source's OK is being written.
    fn accepted(&mut self) -> SessionId {
        let id = self.connect();
        self.core.on_stop_accepted(id);
        let out = self.drain();
        assert!(
            matches!(out.as_slice(), [Output::Command(Command::AcceptConnect { session, connection, .. })]
                if *session == id && *connection == conn(SOURCE_CONN)),
            "{out:?}"
        );
        id
    }

    fn relaying(&mut self) -> SessionId {
        let id = self.accepted();
        self.core.on_circuit_started(id, self.now, self.wall);
        let out = self.drain();
        assert!(
            matches!(out.as_slice(), [Output::Event(Event::SessionOpened { id: opened, .. })] if *opened == id),
            "{out:?}"
        );
        id
    }
}

fn events(out: &[Output]) -> Vec<&Event> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn denied(out: &[Output]) -> Vec<DenyReason> {
    events(out)
        .into_iter()
        .filter_map(|e| match e {
            Event::SessionDenied { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn close_commands(out: &[Output]) -> Vec<CloseRequest> {
    out.iter()
        .filter_map(|o| match o {
            Output::Command(Command::CloseCircuit { why, .. }) => Some(*why),
            _ => None,
        })
        .collect()
}

fn deny_commands(out: &[Output]) -> Vec<(SessionId, Status)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Command(Command::DenyConnect { session, status }) => Some((*session, *status)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_session_goes_through_every_state_and_ends_with_its_bytes_and_duration() {
    let mut w = World::new(config());
    let id = w.connect();
    assert_eq!(w.core.state(&id), Some(SessionState::AwaitingTarget));
    assert_eq!(w.core.stats().pending_sessions, 1);
    w.core.on_stop_accepted(id);
    w.drain();
    assert_eq!(
        w.core.state(&id),
        Some(SessionState::AwaitingSourceAccept { close: None })
    );
    let started = w.now;
    w.core.on_circuit_started(id, w.now, w.wall);
    w.drain();
    assert!(matches!(
        w.core.state(&id),
        Some(SessionState::Relaying { since, .. }) if since == started
    ));
    let shared = w.core.shared(&id).unwrap();
    shared.source_to_target.fetch_add(300, Relaxed);
    shared.target_to_source.fetch_add(200, Relaxed);
    w.advance(Duration::from_secs(7));
    w.core.on_circuit_ended(id, CloseReason::Completed, w.now);
    let out = w.drain();
    let [Event::SessionClosed {
        id: closed,
        reason,
        bytes_source_to_target,
        bytes_target_to_source,
        duration,
        ..
    }] = events(&out)[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        (
            *closed,
            reason,
            *bytes_source_to_target,
            *bytes_target_to_source,
            *duration
        ),
        (
            id,
            &CloseReason::Completed,
            300,
            200,
            Duration::from_secs(7)
        )
    );
    let stats = w.core.stats();
    assert_eq!(
        (
            stats.active_sessions,
            stats.pending_sessions,
            stats.total_sessions_created
        ),
        (0, 0, 1)
    );
    assert_eq!(stats.total_bytes_relayed, 500);
}

#[test]
fn close_while_waiting_for_the_target_refuses_the_connect_and_drops_the_late_stop() {
    let mut w = World::new(config());
    let id = w.connect();
    w.core.close_session(id).unwrap();
    let out = w.drain();
    assert_eq!(deny_commands(&out), vec![(id, Status::ConnectionFailed)]);
    assert_eq!(denied(&out), vec![DenyReason::TargetRefused]);
    assert_eq!(w.core.state(&id), None);
    // The target's answer arrives after all: its stream is dropped, nothing starts.
    w.core.on_stop_accepted(id);
    let out = w.drain();
    assert!(
        matches!(out.as_slice(), [Output::Command(Command::DropTarget { session })] if *session == id),
        "{out:?}"
    );
    assert_eq!(w.core.stats().pending_sessions, 0);
}

#[test]
fn close_while_the_source_is_sent_ok_closes_the_circuit_as_soon_as_it_starts() {
    // The escape: a close between the target's STOP OK and the circuit start used to drop the
    // session from the table while its OK was on the way, leaving a circuit no cap, stat, close
    // or drain reached.
    let mut w = World::new(config());
    let id = w.accepted();
    w.core.close_session(id).unwrap();
    assert!(
        w.drain().is_empty(),
        "nothing to do until the circuit starts"
    );
    assert_eq!(
        w.core.state(&id),
        Some(SessionState::AwaitingSourceAccept {
            close: Some(CloseRequest::Owner)
        })
    );
    assert_eq!(w.core.stats().pending_sessions, 1, "the slot stays taken");
    w.core.on_circuit_started(id, w.now, w.wall);
    let out = w.drain();
    assert_eq!(close_commands(&out), vec![CloseRequest::Owner]);
    assert!(matches!(
        w.core.state(&id),
        Some(SessionState::Closing {
            why: CloseRequest::Owner,
            ..
        })
    ));
    w.core
        .on_circuit_ended(id, CloseReason::ClosedByOwner, w.now);
    let out = w.drain();
    assert!(matches!(
        events(&out)[..],
        [Event::SessionClosed {
            reason: CloseReason::ClosedByOwner,
            ..
        }]
    ));
    assert_eq!(w.core.stats().active_sessions, 0);
}

#[test]
fn close_while_relaying_asks_the_copy_loop_once() {
    let mut w = World::new(config());
    let id = w.relaying();
    w.core.close_session(id).unwrap();
    assert_eq!(close_commands(&w.drain()), vec![CloseRequest::Owner]);
    w.core.close_session(id).unwrap();
    assert!(w.drain().is_empty(), "a second close asks nothing more");
    assert!(w.core.close_session(SessionId::from(7)).is_err());
}

#[test]
fn drain_ends_every_session_in_every_state_and_every_reservation_at_the_deadline() {
    let mut w = World::new(several_per_peer());
    let waiting = w.connect();
    let accepting = w.accepted();
    let relaying = w.relaying();
    w.core.disable_and_drain(Duration::from_secs(30), w.now);
    let out = w.drain();
    assert!(matches!(
        events(&out)[..],
        [Event::StatusChanged { enabled: false }]
    ));
    // Nothing happens before the deadline.
    w.run_until(w.now + Duration::from_secs(29));
    assert!(w.drain().iter().all(|o| !matches!(
        o,
        Output::Event(Event::SessionDenied { .. }) | Output::Command(Command::CloseCircuit { .. })
    )));
    w.run_until(w.now + Duration::from_secs(1));
    let out = w.drain();
    assert_eq!(
        deny_commands(&out),
        vec![(waiting, Status::ResourceLimitExceeded)]
    );
    assert_eq!(denied(&out), vec![DenyReason::Disabled]);
    assert_eq!(close_commands(&out), vec![CloseRequest::Drained]);
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::ReservationEnded {
            reason: ReservationEndReason::Drained,
            ..
        }
    )));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Command(Command::ReservationEnded { .. }))));
    assert_eq!(w.core.stats().reservations, 0);
    // The session being sent its OK closes as soon as it starts.
    assert_eq!(
        w.core.state(&accepting),
        Some(SessionState::AwaitingSourceAccept {
            close: Some(CloseRequest::Drained)
        })
    );
    w.core.on_circuit_started(accepting, w.now, w.wall);
    assert_eq!(close_commands(&w.drain()), vec![CloseRequest::Drained]);
    for id in [accepting, relaying] {
        w.core.on_circuit_ended(id, CloseReason::Drained, w.now);
    }
    let closed = events(&w.drain())
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::SessionClosed {
                    reason: CloseReason::Drained,
                    ..
                }
            )
        })
        .count();
    assert_eq!(closed, 2);
    assert_eq!(w.core.states(), vec![]);
}

#[test]
fn enable_before_the_deadline_cancels_the_drain() {
    let mut w = World::new(config());
    let id = w.relaying();
    w.core.disable_and_drain(Duration::from_secs(5), w.now);
    w.core.enable();
    w.run_until(w.now + Duration::from_secs(60));
    assert!(close_commands(&w.drain()).is_empty());
    assert!(matches!(
        w.core.state(&id),
        Some(SessionState::Relaying { .. })
    ));
    assert!(w.core.is_enabled());
}

#[test]
fn a_zero_grace_drain_ends_sessions_at_once() {
    let mut w = World::new(config());
    w.relaying();
    w.core.disable_and_drain(Duration::ZERO, w.now);
    assert_eq!(close_commands(&w.drain()), vec![CloseRequest::Drained]);
}

#[test]
fn a_refused_stop_refuses_the_connect() {
    let mut w = World::new(config());
    let id = w.connect();
    w.core.on_stop_failed(id, "no");
    let out = w.drain();
    assert_eq!(deny_commands(&out), vec![(id, Status::ConnectionFailed)]);
    assert_eq!(denied(&out), vec![DenyReason::TargetRefused]);
    assert_eq!(
        w.core
            .stats()
            .sessions_denied
            .get(&DenyReason::TargetRefused),
        Some(&1)
    );
}

#[test]
fn an_ok_that_cannot_be_written_ends_the_session_as_refused() {
    let mut w = World::new(config());
    let id = w.accepted();
    w.core.on_circuit_ended(
        id,
        CloseReason::StreamError {
            side: crate::Side::Source,
            error: "reset".into(),
        },
        w.now,
    );
    assert_eq!(denied(&w.drain()), vec![DenyReason::SourceGone]);
    assert_eq!(w.core.stats().total_sessions_created, 0);
}

#[test]
fn the_source_connection_closing_ends_its_sessions_in_every_state() {
    let mut w = World::new(several_per_peer());
    let (waiting, accepting, relaying) = (w.connect(), w.accepted(), w.relaying());
    w.core
        .on_connection_closed(w.source, conn(SOURCE_CONN), w.now);
    let out = w.drain();
    let mut reasons = denied(&out);
    reasons.sort();
    assert_eq!(
        reasons,
        vec![DenyReason::SourceGone, DenyReason::SourceGone]
    );
    assert!(matches!(
        events(&out)
            .iter()
            .find(|e| matches!(e, Event::SessionClosed { .. })),
        Some(Event::SessionClosed { id, reason: CloseReason::ConnectionClosed, .. }) if *id == relaying
    ));
    for id in [waiting, accepting, relaying] {
        assert_eq!(w.core.state(&id), None);
    }
    // The target's late answer for the waiting session is dropped.
    w.core.on_stop_accepted(waiting);
    assert!(matches!(
        w.drain().as_slice(),
        [Output::Command(Command::DropTarget { .. })]
    ));
}

#[test]
fn the_target_connection_closing_refuses_the_sessions_asking_it_and_resets_the_relaying_ones() {
    let mut w = World::new(several_per_peer());
    let (waiting, relaying) = (w.connect(), w.relaying());
    w.core
        .on_connection_closed(w.target, conn(TARGET_CONN), w.now);
    let out = w.drain();
    assert_eq!(
        deny_commands(&out),
        vec![(waiting, Status::ConnectionFailed)]
    );
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::ReservationEnded {
            reason: ReservationEndReason::ConnectionClosed,
            ..
        }
    )));
    // The relaying one is told to reset its circuit: a target that vanished silently leaves
    // its stream pending forever, so the copy loop cannot be trusted to notice.
    assert_eq!(close_commands(&out), vec![CloseRequest::TargetGone]);
    assert!(matches!(
        w.core.state(&relaying),
        Some(SessionState::Closing {
            why: CloseRequest::TargetGone,
            ..
        })
    ));
}

#[test]
fn a_reservation_expires_at_its_ttl_on_the_fake_clock_unless_renewed() {
    let ttl = Duration::from_secs(60);
    let mut w = World::new(config_with(|c| c.reservation_ttl(ttl)));
    w.run_until(w.now + Duration::from_secs(40));
    let renewed = w
        .core
        .on_reserve(w.target, conn(TARGET_CONN), w.now, w.wall)
        .unwrap();
    assert!(renewed.renewed);
    assert_eq!(renewed.expires, w.now + ttl);
    w.run_until(w.now + Duration::from_secs(59));
    assert_eq!(w.core.stats().reservations, 1);
    w.drain();
    w.run_until(w.now + Duration::from_secs(2));
    let out = w.drain();
    assert!(events(&out).iter().any(|e| matches!(
        e,
        Event::ReservationEnded {
            reason: ReservationEndReason::Expired,
            ..
        }
    )));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Command(Command::ReservationEnded { .. }))));
    assert_eq!(w.core.stats().reservations, 0);
}

#[test]
fn stats_are_emitted_at_each_interval_and_the_next_deadline_is_the_earliest() {
    let mut w = World::new(
        Config::builder()
            .request_rate_per_peer(None)
            .request_rate_per_ip(None)
            .stats_interval(Some(Duration::from_secs(10)))
            .build()
            .unwrap(),
    );
    let start = w.now;
    assert!(w.core.poll_timeout().unwrap() <= start + Duration::from_secs(1));
    w.run_until(start + Duration::from_secs(35));
    let stats = events(&w.drain())
        .iter()
        .filter(|e| matches!(e, Event::Stats(_)))
        .count();
    assert_eq!(stats, 3);
}

#[test]
fn a_disabled_relay_refuses_and_re_enabling_restores() {
    let mut w = World::new(config());
    w.core.disable();
    assert_eq!(
        w.core
            .on_connect(w.source, conn(SOURCE_CONN), w.target, w.now),
        Err(DenyReason::Disabled)
    );
    assert_eq!(
        w.core
            .on_reserve(w.source, conn(SOURCE_CONN), w.now, w.wall),
        Err(DenyReason::Disabled)
    );
    w.core.enable();
    w.drain();
    w.connect();
}

// ---- property test ------------------------------------------------------------------------

#[test]
fn node_wide_shares_follow_sessions_and_capacity_changes_and_the_timer_runs_only_when_needed() {
    use crate::{session::fair_share::INTERVAL, Side};
    const MB: u64 = 1_000_000;
    let mut w = World::new(config_with(|c| {
        c.max_sessions_per_peer(10)
            .bandwidth(None)
            .total_bandwidth(Some(MB))
    }));
    // Nothing to share yet: after the first (immediate) round, no timer of its own.
    let now = w.now;
    w.run_until(now);
    assert_eq!(w.core.bandwidth_timer(), None);
    assert_eq!(w.core.poll_timeout(), Some(w.now + Duration::from_secs(1)));

    // A session gets an equal split before its copy loop starts; the shares are recomputed
    // within 10 ms.
    let a = w.relaying();
    assert_eq!(w.core.node_shares(&a), Some((Some(MB / 2), Some(MB / 2))));
    assert!(w.core.bandwidth_timer().unwrap() <= w.now + Duration::from_millis(10));
    let now = w.now + Duration::from_millis(10);
    w.run_until(now);
    assert_eq!(w.core.node_shares(&a), Some((Some(MB / 2), Some(MB / 2))));
    assert_eq!(w.core.bandwidth_timer(), Some(w.now + INTERVAL));

    // A second one: a quarter each at once, everywhere after the next round.
    let b = w.relaying();
    assert_eq!(w.core.node_shares(&b), Some((Some(MB / 4), Some(MB / 4))));
    let now = w.now + Duration::from_millis(10);
    w.run_until(now);
    for id in [a, b] {
        assert_eq!(w.core.node_shares(&id), Some((Some(MB / 4), Some(MB / 4))));
    }

    // a sends from source to target flat out; the other three directions are idle and keep a
    // floor (capacity / 64 / 4 directions): a's source side gets the rest.
    let shared = w.core.shared(&a).unwrap();
    shared.source_to_target.fetch_add(MB / 40, Relaxed);
    shared.record_pause(Side::Source, 1_000);
    let now = w.now + INTERVAL;
    w.run_until(now);
    let floor = MB / 256;
    assert_eq!(
        w.core.node_shares(&a),
        Some((Some(MB - 3 * floor), Some(floor)))
    );
    assert_eq!(w.core.node_shares(&b), Some((Some(floor), Some(floor))));

    // A new capacity applies at once.
    w.core.set_total_bandwidth(Some(2 * MB)).unwrap();
    assert!(w.core.poll_timeout().unwrap() <= w.now);
    let now = w.now;
    w.run_until(now);
    let (up, _) = w.core.node_shares(&a).unwrap();
    assert_eq!(up, Some(2 * MB - 3 * floor));

    // Removed: the shares are lifted at once and the timer stops.
    w.core.set_total_bandwidth(None).unwrap();
    let now = w.now;
    w.run_until(now);
    for id in [a, b] {
        assert_eq!(w.core.node_shares(&id), Some((None, None)));
    }
    assert_eq!(w.core.bandwidth_timer(), None);

    // Set again: everybody starts from an equal split.
    assert_eq!(
        w.core.set_total_bandwidth(Some(0)),
        Err(crate::ConfigError::Zero("total_bandwidth"))
    );
    w.core.set_total_bandwidth(Some(MB)).unwrap();
    let now = w.now;
    w.run_until(now);
    for id in [a, b] {
        assert_eq!(w.core.node_shares(&id), Some((Some(MB / 4), Some(MB / 4))));
    }

    // The sessions end: one more round finds nothing to share and the timer stops.
    for id in [a, b] {
        w.core.on_circuit_ended(id, CloseReason::Completed, w.now);
    }
    w.drain();
    let now = w.now + INTERVAL;
    w.run_until(now);
    assert_eq!(w.core.bandwidth_timer(), None);
}

/// What a handler would do next, or a control call.
#[derive(Clone, Debug)]
enum Op {
    Connect { source: usize, target: usize },
    StopAccept(usize),
    StopFail(usize),
    CircuitStart(usize),
    CircuitEnd(usize),
    Close(usize),
    CloseConnection(usize),
    Reserve(usize),
    Drain(u64),
    Enable,
    Disable,
    Advance(u64),
    Bytes(usize, u64),
    SetMaxSessions(usize),
    SetTotalBandwidth(Option<u64>),
}

const PEERS: usize = 4;

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PEERS, 0..PEERS).prop_map(|(source, target)| Op::Connect { source, target }),
        3 => any::<usize>().prop_map(Op::StopAccept),
        1 => any::<usize>().prop_map(Op::StopFail),
        3 => any::<usize>().prop_map(Op::CircuitStart),
        2 => any::<usize>().prop_map(Op::CircuitEnd),
        1 => any::<usize>().prop_map(Op::Close),
        1 => (0..PEERS).prop_map(Op::CloseConnection),
        2 => (0..PEERS).prop_map(Op::Reserve),
        1 => (0u64..5).prop_map(Op::Drain),
        1 => Just(Op::Enable),
        1 => Just(Op::Disable),
        2 => (0u64..3000).prop_map(Op::Advance),
        2 => (any::<usize>(), 0u64..10_000).prop_map(|(k, n)| Op::Bytes(k, n)),
        1 => (1usize..6).prop_map(Op::SetMaxSessions),
        1 => proptest::option::of(1_000u64..10_000_000).prop_map(Op::SetTotalBandwidth),
    ]
}

/// The handlers' side of the world, played by the test.
#[derive(Default)]
struct Handlers {
    /// Sessions whose target is being asked (STOP in flight).
    asking: BTreeSet<SessionId>,
    /// Sessions whose OK is being written to the source.
    accepting: BTreeSet<SessionId>,
    /// Sessions whose copy loop runs.
    copying: BTreeSet<SessionId>,
    /// Each session's (source connection, target connection).
    connections: HashMap<SessionId, (ConnectionId, ConnectionId)>,
}

impl Handlers {
    fn pick(set: &BTreeSet<SessionId>, k: usize) -> Option<SessionId> {
        (!set.is_empty()).then(|| *set.iter().nth(k % set.len()).unwrap())
    }
}

struct Check {
    admitted: BTreeSet<SessionId>,
    /// Sessions that ended, by the event that ended them.
    ended: HashMap<SessionId, usize>,
    denied_after_admission: usize,
    closed: usize,
    last_created: u64,
    last_bytes: u64,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_keep_the_core_consistent_with_the_handlers(
        ops in proptest::collection::vec(op(), 1..120),
        mut total_bandwidth in proptest::option::of(1_000u64..10_000_000),
    ) {
        let max_sessions = 3;
        let mut config = Config::builder()
            .request_rate_per_peer(None)
            .request_rate_per_ip(None)
            .stats_interval(None)
            .max_sessions(max_sessions)
            .max_sessions_per_peer(2)
            // Peers share addresses (two per IP, all in one /24): the origin caps bind too.
            .reservations_per_origin(crate::OriginLimits { per_ip: 1, per_ipv4_24: 2, per_ipv6_64: 1, per_ipv6_48: 2 })
            .sessions_per_origin(crate::OriginLimits { per_ip: 2, per_ipv4_24: 3, per_ipv6_64: 2, per_ipv6_48: 3 })
            .max_sessions_per_network_to_peer(1)
            .total_bandwidth(total_bandwidth)
            .build()
            .unwrap();
        let mut now = Instant::now();
        let wall = SystemTime::now();
        let mut core = RelayCore::new(PeerId::random(), config.clone(), now);
        let peers: Vec<PeerId> = (0..PEERS).map(|_| PeerId::random()).collect();
        let mut conns: Vec<ConnectionId> = (0..PEERS).map(conn).collect();
        let mut next_conn = PEERS;
        let ip_of = |i: usize| Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, (i % 2) as u8)));
        for (i, (p, c)) in peers.iter().zip(&conns).enumerate() {
            core.on_connection_established(*c, *p, false, ip_of(i));
        }
        let mut h = Handlers::default();
        let mut peers_of: HashMap<SessionId, (usize, usize)> = HashMap::new();
        let mut check = Check {
            admitted: BTreeSet::new(),
            ended: HashMap::new(),
            denied_after_admission: 0,
            closed: 0,
            last_created: 0,
            last_bytes: 0,
        };

        for op in ops {
            match op {
                Op::Connect { source, target } => {
                    let before = core.stats().pending_sessions + core.stats().active_sessions;
                    let involving = |p: usize| core.states().iter()
                        .filter(|(id, _)| { let (s, t) = peers_of[id]; s == p || t == p })
                        .count();
                    let (of_source, of_target) = (involving(source), involving(target));
                    if let Ok(id) = core.on_connect(peers[source], conns[source], peers[target], now) {
                        prop_assert!(before < config.max_sessions, "admitted over the cap");
                        prop_assert!(of_source < 2 && of_target < 2, "admitted over the per-peer cap");
                        peers_of.insert(id, (source, target));
                        check.admitted.insert(id);
                        h.connections.insert(id, (conns[source], conns[target]));
                    } else {
                        // A synchronous refusal is not an admitted session's end.
                        while let Some(o) = core.poll() {
                            let refusal = matches!(o, Output::Event(Event::SessionDenied { .. }));
                            prop_assert!(refusal, "unexpected output of a refused CONNECT: {:?}", o);
                        }
                    }
                }
                Op::StopAccept(k) => if let Some(id) = Handlers::pick(&h.asking, k) {
                    h.asking.remove(&id);
                    core.on_stop_accepted(id);
                },
                Op::StopFail(k) => if let Some(id) = Handlers::pick(&h.asking, k) {
                    h.asking.remove(&id);
                    core.on_stop_failed(id, "refused");
                },
                Op::CircuitStart(k) => if let Some(id) = Handlers::pick(&h.accepting, k) {
                    h.accepting.remove(&id);
                    h.copying.insert(id);
                    core.on_circuit_started(id, now, wall);
                },
                Op::CircuitEnd(k) => {
                    let all: BTreeSet<SessionId> = h.accepting.union(&h.copying).copied().collect();
                    if let Some(id) = Handlers::pick(&all, k) {
                        h.accepting.remove(&id);
                        h.copying.remove(&id);
                        core.on_circuit_ended(id, CloseReason::Completed, now);
                    }
                }
                Op::Close(k) => {
                    let known: BTreeSet<SessionId> = check.admitted.iter().copied().collect();
                    if let Some(id) = Handlers::pick(&known, k) {
                        let live = core.state(&id).is_some();
                        prop_assert_eq!(core.close_session(id).is_ok(), live);
                    }
                }
                Op::CloseConnection(i) => {
                    let closing = conns[i];
                    // Handlers on that connection die with it: the source's OK writer and copy
                    // loops, and the target's STOP in flight.
                    for (id, (source_conn, target_conn)) in &h.connections {
                        if *source_conn == closing {
                            h.accepting.remove(id);
                            h.copying.remove(id);
                        }
                        if *target_conn == closing {
                            h.asking.remove(id);
                        }
                    }
                    core.on_connection_closed(peers[i], closing, now);
                    // Copy loops whose target stream was on it fail and report.
                    let failed: Vec<SessionId> = h.copying.iter()
                        .filter(|id| h.connections[*id].1 == closing)
                        .copied()
                        .collect();
                    for id in failed {
                        h.copying.remove(&id);
                        core.on_circuit_ended(id, CloseReason::ConnectionClosed, now);
                    }
                    conns[i] = conn(next_conn);
                    next_conn += 1;
                    core.on_connection_established(conns[i], peers[i], false, ip_of(i));
                }
                Op::Reserve(i) => { let _ = core.on_reserve(peers[i], conns[i], now, wall); }
                Op::Drain(s) => core.disable_and_drain(Duration::from_secs(s), now),
                Op::Enable => core.enable(),
                Op::Disable => core.disable(),
                Op::Advance(ms) => {
                    let until = now + Duration::from_millis(ms);
                    let mut rounds = 0;
                    while let Some(at) = core.poll_timeout().filter(|at| *at <= until) {
                        now = now.max(at);
                        core.handle_timeout(now);
                        rounds += 1;
                        prop_assert!(rounds < 10_000, "the timers do not advance");
                    }
                    now = until;
                    if Duration::from_millis(ms) >= crate::session::fair_share::INTERVAL {
                        // The node-wide shares were recomputed since the last change: each
                        // started session has them, they add up to no more than the capacity,
                        // and the timer runs only while there is something to share.
                        let started: Vec<SessionId> = core.states().into_iter()
                            .filter(|(_, state)| *state != SessionState::AwaitingTarget)
                            .map(|(id, _)| id)
                            .collect();
                        let mut sum = 0;
                        for id in &started {
                            let (up, down) = core.node_shares(id).unwrap();
                            match total_bandwidth {
                                None => prop_assert_eq!((up, down), (None, None)),
                                Some(_) => {
                                    prop_assert!(up.is_some() && down.is_some());
                                    sum += up.unwrap_or(0) + down.unwrap_or(0);
                                }
                            }
                        }
                        if let Some(capacity) = total_bandwidth {
                            prop_assert!(sum <= capacity, "shares {} over {}", sum, capacity);
                        }
                        let timer = core.bandwidth_timer();
                        prop_assert_eq!(
                            timer.is_some(),
                            total_bandwidth.is_some() && !started.is_empty(),
                            "bandwidth timer {:?}", timer
                        );
                        let interval = crate::session::fair_share::INTERVAL;
                        prop_assert!(timer.is_none_or(|at| at > now && at <= now + interval));
                    }
                }
                Op::Bytes(k, n) => if let Some(id) = Handlers::pick(&h.copying, k) {
                    if let Some(shared) = core.shared(&id) {
                        shared.source_to_target.fetch_add(n, Relaxed);
                        if n % 2 == 1 {
                            shared.record_pause(crate::Side::Source, n);
                        }
                    }
                },
                Op::SetTotalBandwidth(total) => {
                    core.set_total_bandwidth(total).unwrap();
                    total_bandwidth = total;
                }
                Op::SetMaxSessions(n) => {
                    core.set_max_sessions(n).unwrap();
                    config.max_sessions = n;
                }
            }

            // Carry out the core's outputs as the adapter and the handlers would.
            while let Some(output) = core.poll() {
                match output {
                    Output::Command(Command::OpenStop { session, .. }) => {
                        prop_assert!(check.admitted.contains(&session));
                        h.asking.insert(session);
                    }
                    Output::Command(Command::AcceptConnect { session, .. }) => {
                        h.accepting.insert(session);
                    }
                    Output::Command(Command::DenyConnect { session, .. }) => {
                        prop_assert!(!h.accepting.contains(&session) && !h.copying.contains(&session));
                        *check.ended.entry(session).or_default() += 1;
                        check.denied_after_admission += 1;
                    }
                    Output::Command(Command::CloseCircuit { .. }) => {}
                    Output::Command(Command::DropTarget { .. } | Command::ReservationEnded { .. }) => {}
                    // No operation here changes the access policy.
                    Output::Command(Command::CloseConnection { .. }) => {
                        prop_assert!(false, "a connection closed without a policy change");
                    }
                    Output::Event(Event::SessionClosed { id, .. }) => {
                        *check.ended.entry(id).or_default() += 1;
                        check.closed += 1;
                    }
                    Output::Event(_) => {}
                }
            }

            // Invariants.
            let states = core.states();
            let mut in_handlers: BTreeSet<SessionId> = BTreeSet::new();
            let mut asking: BTreeSet<SessionId> = BTreeSet::new();
            for (id, state) in &states {
                match state {
                    SessionState::AwaitingTarget => { asking.insert(*id); }
                    _ => { in_handlers.insert(*id); }
                }
            }
            let handler_held: BTreeSet<SessionId> = h.accepting.union(&h.copying).copied().collect();
            prop_assert_eq!(&in_handlers, &handler_held, "core sessions past the target == circuits in handlers");
            prop_assert!(
                asking.is_subset(&h.asking),
                "every session awaiting its target has a STOP in flight"
            );
            for id in check.ended.keys() {
                prop_assert!(core.state(id).is_none(), "an ended session is still known");
            }
            prop_assert!(check.ended.values().all(|n| *n == 1), "a session ended twice: {:?}", check.ended);
            let stats = core.stats();
            prop_assert!(stats.total_sessions_created >= check.last_created);
            prop_assert!(stats.total_bytes_relayed >= check.last_bytes);
            check.last_created = stats.total_sessions_created;
            check.last_bytes = stats.total_bytes_relayed;
            prop_assert!(states.len() == stats.active_sessions + stats.pending_sessions);
            if let Err(drift) = core.check_origin_counts() {
                prop_assert!(false, "{}", drift);
            }
        }

        // Wind down: every connection closes; every admitted session has ended exactly once.
        for i in 0..PEERS {
            core.on_connection_closed(peers[i], conns[i], now);
        }
        while let Some(output) = core.poll() {
            match output {
                Output::Command(Command::DenyConnect { session, .. }) => {
                    *check.ended.entry(session).or_default() += 1;
                }
                Output::Event(Event::SessionClosed { id, .. }) => {
                    *check.ended.entry(id).or_default() += 1;
                }
                _ => {}
            }
        }
        prop_assert!(core.states().is_empty());
        if let Err(drift) = core.check_origin_counts() {
            prop_assert!(false, "after wind-down: {}", drift);
        }
        for id in &check.admitted {
            prop_assert_eq!(check.ended.get(id).copied(), Some(1), "session {} ended {:?} times", id, check.ended.get(id));
        }
        let _ = (check.denied_after_admission, check.closed);
    }
}

#[test]
fn an_exempt_network_is_not_held_to_the_origin_caps_but_others_are() {
    let caps = crate::OriginLimits {
        per_ip: 1,
        per_ipv4_24: 1,
        per_ipv6_64: 1,
        per_ipv6_48: 1,
    };
    let config = config_with(|c| {
        c.reservations_per_origin(caps)
            .exempt_networks(["10.0.0.0/8".parse().unwrap()])
    });
    let now = Instant::now();
    let mut core = RelayCore::new(PeerId::random(), config, now);
    let mut reserve_from = |n: usize, ip: IpAddr| {
        let peer = PeerId::random();
        core.on_connection_established(conn(n), peer, false, Some(ip));
        core.on_reserve(peer, conn(n), now, SystemTime::now())
    };
    for n in 0..5 {
        reserve_from(n, Ipv4Addr::new(10, 1, 2, 3).into()).expect("exempt network");
    }
    // IPv4-mapped IPv6 of an exempt address is exempt too.
    reserve_from(5, "::ffff:10.1.2.3".parse().unwrap()).expect("exempt, mapped");
    reserve_from(6, Ipv4Addr::new(192, 0, 2, 1).into()).unwrap();
    assert_eq!(
        reserve_from(7, Ipv4Addr::new(192, 0, 2, 1).into()).unwrap_err(),
        DenyReason::OriginReservationsFull
    );
}

#[test]
fn one_origin_holds_at_most_its_connection_cap_until_one_closes() {
    let caps = crate::OriginLimits {
        per_ip: 2,
        per_ipv4_24: 3,
        per_ipv6_64: 2,
        per_ipv6_48: 3,
    };
    let mut core = RelayCore::new(
        PeerId::random(),
        config_with(|c| c.connections_per_origin(caps)),
        Instant::now(),
    );
    let ip = |last: u8| Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)));
    let peer = PeerId::random();
    core.on_inbound_connection(conn(1), peer, false, ip(1))
        .unwrap();
    core.on_inbound_connection(conn(2), peer, false, ip(1))
        .unwrap();
    let full = core
        .on_inbound_connection(conn(3), peer, false, ip(1))
        .unwrap_err();
    assert_eq!(
        full.to_string(),
        "192.0.2.1 holds as many connections as one origin may"
    );
    core.on_inbound_connection(conn(4), peer, false, ip(2))
        .unwrap();
    let net_full = core
        .on_inbound_connection(conn(5), peer, false, ip(3))
        .unwrap_err();
    assert_eq!(
        net_full.to_string(),
        "192.0.2.0/24 holds as many connections as one origin may"
    );
    // Another network, and outbound connections, are not counted against it.
    core.on_inbound_connection(
        conn(6),
        peer,
        false,
        Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1))),
    )
    .unwrap();
    core.on_connection_established(conn(7), peer, false, ip(1));
    core.on_connection_closed(peer, conn(1), Instant::now());
    core.on_inbound_connection(conn(8), peer, false, ip(1))
        .expect("a closed connection frees its slot");
    core.on_connection_refused(conn(8));
    core.on_inbound_connection(conn(9), peer, false, ip(1))
        .expect("a refused connection frees its slot");
}

#[test]
fn connection_counts_forget_peers_that_left() {
    // Peer ids are free: a relay that kept a count per peer it ever saw would grow without
    // bound (libp2p-connection-limits 0.7 does: it keeps an empty set per departed peer).
    let mut core = RelayCore::new(
        PeerId::random(),
        config_with(|c| c.max_connections_per_peer(2).max_inbound_connections(3)),
        Instant::now(),
    );
    let ip = Some(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)));
    for n in 0..1000 {
        let peer = PeerId::random();
        core.on_pending_inbound(conn(n)).unwrap();
        core.on_inbound_connection(conn(n), peer, false, ip)
            .unwrap();
        core.on_connection_closed(peer, conn(n), Instant::now());
    }
    assert_eq!(core.tracked_peers(), 0);
    // The limits themselves.
    let peer = PeerId::random();
    core.on_inbound_connection(conn(2000), peer, false, ip)
        .unwrap();
    core.on_inbound_connection(conn(2001), peer, false, ip)
        .unwrap();
    assert_eq!(
        core.on_inbound_connection(conn(2002), peer, false, ip),
        Err(super::ConnectionRefusal::PerPeer)
    );
    core.on_inbound_connection(conn(2003), PeerId::random(), false, ip)
        .unwrap();
    assert_eq!(
        core.on_inbound_connection(conn(2004), PeerId::random(), false, ip),
        Err(super::ConnectionRefusal::Total)
    );
}

#[test]
fn a_denied_network_cannot_connect_and_a_denied_peer_can() {
    let foe = PeerId::random();
    let mut config = config();
    config.policy.deny_networks = vec!["198.51.100.0/24".parse().unwrap()];
    config.policy.deny.insert(foe);
    let mut core = RelayCore::new(PeerId::random(), config, Instant::now());
    let ip = |a: [u8; 4]| Some(IpAddr::V4(Ipv4Addr::from(a)));
    let refused = core
        .on_inbound_connection(conn(1), PeerId::random(), false, ip([198, 51, 100, 7]))
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "the access policy refuses the connection's network"
    );
    // IPv4-mapped IPv6 is the same address.
    let mapped = "::ffff:198.51.100.7".parse().ok();
    assert!(core
        .on_inbound_connection(conn(2), PeerId::random(), false, mapped)
        .is_err());
    // A denied peer connects, and hears PERMISSION_DENIED when it asks for anything.
    core.on_inbound_connection(conn(3), foe, false, ip([192, 0, 2, 1]))
        .expect("a denied peer id costs nothing to change: refused per request, not here");
    core.on_inbound_connection(conn(4), PeerId::random(), false, ip([192, 0, 2, 1]))
        .expect("anyone else connects");
}

#[test]
fn a_policy_change_closes_the_connections_it_refuses_and_keeps_the_rest() {
    let mut w = World::new(several_per_peer());
    let relaying = w.relaying();
    w.drain();
    let mut next = w.core.config().clone();
    next.policy.deny.insert(w.source);
    w.core.set_config(next).unwrap();
    let closes: Vec<_> = w
        .drain()
        .into_iter()
        .filter_map(|o| match o {
            Output::Command(Command::CloseConnection { peer, connection }) => {
                Some((peer, connection))
            }
            _ => None,
        })
        .collect();
    assert_eq!(closes, [(w.source, conn(SOURCE_CONN))]);
    assert!(
        w.core.shared(&relaying).is_some(),
        "the session ends when its connection closes, not before"
    );
    // Lifting the deny closes nothing more.
    let mut lifted = w.core.config().clone();
    lifted.policy.deny.clear();
    w.core.set_config(lifted).unwrap();
    assert!(w.drain().is_empty());
}

#[test]
fn an_invalid_config_is_refused_whole() {
    let mut w = World::new(config());
    let before = w.core.config().clone();
    let mut bad = before.clone();
    bad.max_sessions = 0;
    bad.policy.deny.insert(w.source);
    assert!(w.core.set_config(bad).is_err());
    assert_eq!(*w.core.config(), before);
    assert!(w.drain().is_empty());
}
