//! Session limits seen from unmodified `libp2p::relay::client` peers: the session cap, the
//! bandwidth throttle, the session timeout, the data cap, and per-peer limit overrides.

mod common;

use std::time::{Duration, Instant};

use common::{ClientEvent, TestClient, TestRelay};
use macula_relay::{CloseReason, DenyReason, Event, SessionLimits, Status};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_101st_concurrent_session_is_refused_with_resource_limit_exceeded() {
    common::init_tracing();
    // Reference defaults (100 sessions); per-peer cap raised so one source/target pair can
    // hold them all.
    let mut relay = TestRelay::start(
        common::test_config()
            .max_sessions_per_peer(1000)
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
async fn a_256_kib_per_second_session_takes_at_least_four_seconds_for_1_25_mib() {
    common::init_tracing();
    let relay = TestRelay::start(
        common::test_config()
            .bandwidth(Some(256 * 1024))
            .build()
            .unwrap(),
    )
    .await;
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    target.reserve(&relay).await;
    let _served = target.serve_transfers();
    source.dial_through(&relay, target.peer_id).await.unwrap();

    let started = Instant::now();
    let outcome = source
        .transfer(target.peer_id, 1024 * 1024 + 256 * 1024)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert!(outcome.peer_got_what_we_sent);
    // A lower bound only: the rate itself is measured by the benchmark.
    assert!(
        elapsed >= Duration::from_millis(4500),
        "took only {elapsed:?}"
    );
    let sessions = relay.with(|r| r.sessions()).await;
    assert_eq!(sessions[0].limits.bandwidth, Some(256 * 1024));
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
    source.dial_through(&relay, target.peer_id).await.unwrap();
    let started = Instant::now();
    let reason = relay
        .expect("session closed", |e| match e {
            Event::SessionClosed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert_eq!(reason, CloseReason::Timeout);
    assert!(started.elapsed() >= Duration::from_millis(1500));
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
