//! Run-time control: closing one session, disabling and enabling, draining, changing limits
//! and `enable_with` options.
#![cfg(feature = "node")]

mod common;

use std::time::{Duration, Instant};

use common::{ClientEvent, TestClient, TestRelay};
use macula_relay::{
    CloseReason, ConfigError, DenyReason, EnableOptions, Event, SessionId, SessionLimits, Status,
};

async fn opened(relay: &mut TestRelay) -> SessionId {
    relay
        .expect("session opened", |e| match e {
            Event::SessionOpened { id, .. } => Some(*id),
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_session_ends_exactly_that_session() {
    common::init_tracing();
    let mut relay = TestRelay::start(common::test_config().bandwidth(None).build().unwrap()).await;
    let mut target = TestClient::start().await;
    let mut first = TestClient::start().await;
    let mut second = TestClient::start().await;
    target.reserve(&relay).await;
    let _served = target.serve_transfers();
    first.dial_through(&relay, target.peer_id).await.unwrap();
    let first_id = opened(&mut relay).await;
    second.dial_through(&relay, target.peer_id).await.unwrap();
    let second_id = opened(&mut relay).await;

    // Session ids print and parse back, as an operator would pass them around.
    let printed = first_id.to_string();
    let id: SessionId = printed.parse().unwrap();
    relay.with(move |r| r.close_session(id)).await.unwrap();
    let (closed, reason) = relay
        .expect("session closed", |e| match e {
            Event::SessionClosed { id, reason, .. } => Some((*id, reason.clone())),
            _ => None,
        })
        .await;
    assert_eq!((closed, reason), (first_id, CloseReason::ClosedByOwner));
    first
        .expect("first client's relayed connection closed", |e| match e {
            ClientEvent::ConnectionClosed { relayed: true, .. } => Some(()),
            _ => None,
        })
        .await;

    // The other session is untouched and still carries data.
    let outcome = second.transfer(target.peer_id, 256 * 1024).await.unwrap();
    assert!(outcome.peer_got_what_we_sent);
    let live: Vec<SessionId> = relay
        .with(|r| r.sessions())
        .await
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(live, vec![second_id]);
    // Closing it again, or an unknown id, is a clear error.
    assert!(relay
        .with(move |r| r.close_session(first_id))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_refuses_new_work_and_enable_restores_it() {
    common::init_tracing();
    let mut relay = TestRelay::start(common::test_config().bandwidth(None).build().unwrap()).await;
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    target.reserve(&relay).await;
    let _served = target.serve_transfers();
    source.dial_through(&relay, target.peer_id).await.unwrap();
    opened(&mut relay).await;

    relay.with(|r| r.disable()).await;
    assert!(!relay.with(|r| r.is_enabled()).await);
    relay
        .expect("status changed", |e| match e {
            Event::StatusChanged { enabled: false } => Some(()),
            _ => None,
        })
        .await;

    // A new circuit is refused ...
    let error = source
        .dial_through(&relay, target.peer_id)
        .await
        .unwrap_err();
    assert!(error.contains("ResourceLimitExceeded"), "{error}");
    let denied = relay
        .expect("session denied", |e| match e {
            Event::SessionDenied { reason, status, .. } => Some((*reason, *status)),
            _ => None,
        })
        .await;
    assert_eq!(
        denied,
        (DenyReason::Disabled, Status::ResourceLimitExceeded)
    );
    // ... and so is a new reservation.
    let mut late = TestClient::start().await;
    let relay_addr = relay.addr.clone();
    late.run(move |s| {
        s.listen_on(relay_addr.with(libp2p::core::multiaddr::Protocol::P2pCircuit))
            .unwrap();
    });
    let error = late
        .expect("reservation refused", |e| match e {
            ClientEvent::ListenerClosed { error } => Some(error.clone()),
            _ => None,
        })
        .await;
    // The rust client reports RESERVATION_REFUSED as `Reservation(Refused)`.
    assert!(error.contains("Reservation(Refused)"), "{error}");
    // The live session keeps relaying.
    let outcome = source.transfer(target.peer_id, 128 * 1024).await.unwrap();
    assert!(outcome.peer_got_what_we_sent);

    relay.with(|r| r.enable()).await;
    assert!(relay.with(|r| r.is_enabled()).await);
    source.dial_through(&relay, target.peer_id).await.unwrap();
    late.reserve(&relay).await;
    let stats = relay.with(|r| r.stats()).await;
    assert!(stats.enabled);
    assert_eq!(stats.active_sessions, 2);
    assert_eq!(stats.reservations, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_and_drain_closes_live_sessions_after_the_grace_period() {
    common::init_tracing();
    let mut relay = TestRelay::start(common::test_config().build().unwrap()).await;
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    target.reserve(&relay).await;
    source.dial_through(&relay, target.peer_id).await.unwrap();
    opened(&mut relay).await;

    let started = Instant::now();
    relay
        .with(|r| r.disable_and_drain(Duration::from_millis(500)))
        .await;
    let reason = relay
        .expect("session drained", |e| match e {
            Event::SessionClosed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert_eq!(reason, CloseReason::Drained);
    assert!(started.elapsed() >= Duration::from_millis(450));
    let stats = relay.with(|r| r.stats()).await;
    assert_eq!((stats.active_sessions, stats.reservations), (0, 0));
    assert!(!stats.enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_change_reaches_a_live_session() {
    common::init_tracing();
    let mut relay = TestRelay::start(common::test_config().bandwidth(None).build().unwrap()).await;
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    target.reserve(&relay).await;
    let _served = target.serve_transfers();
    source.dial_through(&relay, target.peer_id).await.unwrap();
    opened(&mut relay).await;

    let throttled = SessionLimits {
        bandwidth: Some(100_000),
        ..SessionLimits::default()
    };
    relay.with(move |r| r.set_limits(throttled)).await.unwrap();
    assert_eq!(relay.with(|r| r.sessions()).await[0].limits, throttled);
    let started = Instant::now();
    let outcome = source.transfer(target.peer_id, 300_000).await.unwrap();
    assert!(outcome.peer_got_what_we_sent);
    // 300 kB at 100 kB/s: at least ~3 s (lower bound only).
    assert!(
        started.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // Invalid limits are refused and change nothing.
    let invalid = SessionLimits {
        bandwidth: Some(0),
        ..SessionLimits::default()
    };
    assert_eq!(
        relay.with(move |r| r.set_limits(invalid)).await,
        Err(ConfigError::Zero("bandwidth"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enable_with_checks_the_node_id_and_applies_capacity_and_endpoints() {
    common::init_tracing();
    let relay = TestRelay::start(common::test_config().start_enabled(false).build().unwrap()).await;
    assert!(!relay.with(|r| r.is_enabled()).await);
    let stranger = libp2p::PeerId::random();
    let wrong = relay
        .with(move |r| {
            r.enable_with(EnableOptions {
                node_id: Some(stranger),
                ..Default::default()
            })
        })
        .await;
    assert!(matches!(wrong, Err(ConfigError::WrongNodeId { .. })));
    assert!(!relay.with(|r| r.is_enabled()).await);

    let me = relay.peer_id;
    let endpoint: libp2p::Multiaddr = "/dns4/relay.example.net/tcp/4001".parse().unwrap();
    let announced = endpoint.clone();
    relay
        .with(move |r| {
            r.enable_with(EnableOptions {
                node_id: Some(me),
                endpoints: vec![announced],
                capacity: Some(7),
            })
        })
        .await
        .unwrap();
    let stats = relay.with(|r| r.stats()).await;
    assert!(stats.enabled);
    assert_eq!(stats.max_sessions, 7);
    let addrs = relay.with(|r| r.advertised_addrs()).await;
    assert!(addrs.contains(&endpoint.with(libp2p::core::multiaddr::Protocol::P2p(me))));
}
