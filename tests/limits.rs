//! Session limits seen from unmodified `libp2p::relay::client` peers: the session cap, the
//! bandwidth throttle, the session timeout, the data cap, and per-peer limit overrides.
#![cfg(feature = "node")]

mod common;

use std::time::{Duration, Instant};

use common::{ClientEvent, TestClient, TestRelay};
use macula_relay::{CloseReason, DenyReason, Event, SessionLimits, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_101st_concurrent_session_is_refused_with_resource_limit_exceeded() {
    common::init_tracing();
    // Reference defaults (100 sessions); per-peer cap raised and loopback exempt from the
    // per-origin caps, so one source/target pair on one address can hold them all.
    let mut relay = TestRelay::start(
        common::test_config()
            .max_sessions_per_peer(1000)
            .exempt_networks(["127.0.0.0/8".parse().unwrap()])
            .build()
            .unwrap(),
    )
    .await;
    assert_eq!(relay.with(|r| r.stats().max_sessions).await, 100);
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    target.reserve(&relay).await;
    let _served = target.serve_transfers();

    for n in 0..100 {
        source
            .dial_through(&relay, target.peer_id)
            .await
            .unwrap_or_else(|e| panic!("circuit {n} refused: {e}"));
    }
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
        (DenyReason::SessionsFull, Status::ResourceLimitExceeded)
    );
    let stats = relay.with(|r| r.stats()).await;
    assert_eq!(stats.active_sessions, 100);
    assert_eq!(
        stats.sessions_denied.get(&DenyReason::SessionsFull),
        Some(&1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_kib_per_second_session_relays_no_faster_than_its_rate() {
    common::init_tracing();
    const RATE: u64 = 256 * 1024;
    // The throttle starts empty and holds at most this many tokens.
    let burst = macula_relay::throttle_burst(RATE);
    const SIZE: u64 = 1024 * 1024 + 256 * 1024;
    let mut relay =
        TestRelay::start(common::test_config().bandwidth(Some(RATE)).build().unwrap()).await;
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    target.reserve(&relay).await;
    let _served = target.serve_transfers();

    // The stopwatch starts before the circuit exists, so it covers the whole session: a correct
    // throttle cannot move SIZE bytes one way in less than (SIZE - burst) / RATE, whatever the
    // load on the machine (load only makes it slower). A lower bound only: the rate itself is
    // measured by the benchmark.
    let started = Instant::now();
    source.dial_through(&relay, target.peer_id).await.unwrap();
    let outcome = source.transfer(target.peer_id, SIZE).await.unwrap();
    let elapsed = started.elapsed();
    assert!(outcome.peer_got_what_we_sent);
    let floor = Duration::from_secs_f64((SIZE - burst) as f64 / RATE as f64);
    assert!(
        elapsed >= floor,
        "{SIZE} B each way took {elapsed:?}, under the {floor:?} that {RATE} B/s allows"
    );
    let sessions = relay.with(|r| r.sessions()).await;
    assert_eq!(sessions[0].limits.bandwidth, Some(RATE));

    // The relay's own account agrees: by its clock the session moved no more than the rate
    // allows in each direction.
    let target_id = target.peer_id;
    source.run(move |s| {
        let _ = s.disconnect_peer_id(target_id);
    });
    let (up, down, duration) = relay
        .expect("session closed", |e| match e {
            Event::SessionClosed {
                bytes_source_to_target,
                bytes_target_to_source,
                duration,
                ..
            } => Some((*bytes_source_to_target, *bytes_target_to_source, *duration)),
            _ => None,
        })
        .await;
    let allowed = burst + (RATE as f64 * duration.as_secs_f64()) as u64;
    assert!(
        up >= SIZE && down >= SIZE && up <= allowed && down <= allowed,
        "relayed {up} / {down} B in {duration:?}; the throttle allows {allowed} B"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_timeout_ends_a_session_and_is_announced() {
    common::init_tracing();
    let mut relay = TestRelay::start(
        common::test_config()
            .session_timeout(Some(Duration::from_secs(2)))
            .build()
            .unwrap(),
    )
    .await;
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    let limit = target.reserve(&relay).await;
    assert_eq!(limit, Some((Some(Duration::from_secs(2)), None)));
    // Started before the circuit exists: the timeout cannot fire sooner than 2 s from here.
    let started = Instant::now();
    source.dial_through(&relay, target.peer_id).await.unwrap();
    let reason = relay
        .expect("session closed", |e| match e {
            Event::SessionClosed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert_eq!(reason, CloseReason::Timeout);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(2),
        "a 2 s session timed out after {elapsed:?}"
    );
    source
        .expect("relayed connection closed", |e| match e {
            ClientEvent::ConnectionClosed { relayed: true, .. } => Some(()),
            _ => None,
        })
        .await;
    assert_eq!(relay.with(|r| r.stats().active_sessions).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_cap_counts_each_direction_and_ends_the_session() {
    common::init_tracing();
    const CAP: u64 = 256 * 1024;
    let mut relay = TestRelay::start(
        common::test_config()
            .bandwidth(None)
            .max_session_bytes(Some(CAP))
            .build()
            .unwrap(),
    )
    .await;
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    let limit = target.reserve(&relay).await;
    assert_eq!(limit, Some((Some(Duration::from_secs(1800)), Some(CAP))));
    let _served = target.serve_transfers();
    source.dial_through(&relay, target.peer_id).await.unwrap();

    // Well under the cap in each direction: fine, even though both directions together are
    // over it (the spec counts each direction; the stock relays count both together).
    let outcome = source.transfer(target.peer_id, CAP * 6 / 10).await.unwrap();
    assert!(outcome.peer_got_what_we_sent);
    // Over the cap: the relay resets the circuit.
    assert!(source.transfer(target.peer_id, CAP).await.is_err());
    let (reason, up, down) = relay
        .expect("session closed", |e| match e {
            Event::SessionClosed {
                reason,
                bytes_source_to_target,
                bytes_target_to_source,
                ..
            } => Some((
                reason.clone(),
                *bytes_source_to_target,
                *bytes_target_to_source,
            )),
            _ => None,
        })
        .await;
    assert_eq!(reason, CloseReason::DataCapReached);
    assert!(
        up <= CAP && down <= CAP,
        "relayed {up} / {down} bytes with a cap of {CAP}"
    );
    assert!(
        up + down > CAP,
        "both directions together exceed the cap: {}",
        up + down
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_peer_gets_its_own_limits_announced_and_applied() {
    common::init_tracing();
    let mut trusted = TestClient::start().await;
    let mut ordinary = TestClient::start().await;
    let relay = TestRelay::start(
        common::test_config()
            .max_session_bytes(Some(1024))
            .peer_limits(trusted.peer_id, SessionLimits::UNLIMITED)
            .build()
            .unwrap(),
    )
    .await;
    // No limit at all: the `Limit` field is omitted.
    assert_eq!(trusted.reserve(&relay).await, None);
    assert_eq!(
        ordinary.reserve(&relay).await,
        Some((Some(Duration::from_secs(1800)), Some(1024)))
    );
    // A session to the trusted peer carries its limits, whoever the source is.
    let _served = trusted.serve_transfers();
    ordinary
        .dial_through(&relay, trusted.peer_id)
        .await
        .unwrap();
    let outcome = ordinary.transfer(trusted.peer_id, 64 * 1024).await.unwrap();
    assert!(outcome.peer_got_what_we_sent);
    let sessions = relay.with(|r| r.sessions()).await;
    assert_eq!(sessions[0].limits, SessionLimits::UNLIMITED);
}
