//! Admission policy seen from unmodified clients: deny and allow lists, request-rate limits,
//! and relaying to a connected target without a reservation when configured so.
#![cfg(feature = "node")]

mod common;

use std::time::Duration;

use common::{ClientEvent, TestClient, TestRelay};
use libp2p::core::multiaddr::Protocol;
use macula_relay::{DenyReason, Event, RequestRate, Status};

async fn reservation_error(client: &mut TestClient, relay: &TestRelay) -> String {
    let listen = relay.addr.clone().with(Protocol::P2pCircuit);
    client.run(move |s| {
        s.listen_on(listen).unwrap();
    });
    client
        .expect("reservation refused", |e| match e {
            ClientEvent::ListenerClosed { error } => Some(error.clone()),
            ClientEvent::ReservationAccepted { .. } => Some("accepted".into()),
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_peer_gets_permission_denied_for_reservations_and_sessions() {
    common::init_tracing();
    let mut foe = TestClient::start().await;
    let mut target = TestClient::start().await;
    let mut relay =
        TestRelay::start(common::test_config().deny(foe.peer_id).build().unwrap()).await;
    let error = reservation_error(&mut foe, &relay).await;
    // The rust client has no variant for PERMISSION_DENIED on RESERVE; it reports the status.
    assert!(error.contains("PERMISSION_DENIED"), "{error}");
    let (reason, status) = relay
        .expect("reservation denied", |e| match e {
            Event::ReservationDenied { reason, status, .. } => Some((*reason, *status)),
            _ => None,
        })
        .await;
    assert_eq!(
        (reason, status),
        (DenyReason::NotAllowed, Status::PermissionDenied)
    );

    target.reserve(&relay).await;
    let error = foe.dial_through(&relay, target.peer_id).await.unwrap_err();
    assert!(error.contains("PermissionDenied"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_allow_list_only_listed_peers_are_served() {
    common::init_tracing();
    let mut friend = TestClient::start().await;
    let mut stranger = TestClient::start().await;
    let relay = TestRelay::start(
        common::test_config()
            .allow_only([friend.peer_id])
            .build()
            .unwrap(),
    )
    .await;
    friend.reserve(&relay).await;
    let error = reservation_error(&mut stranger, &relay).await;
    assert!(error.contains("PERMISSION_DENIED"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_request_rate_is_refused_until_it_earns_budget() {
    common::init_tracing();
    let relay = TestRelay::start(
        common::test_config()
            .request_rate_per_peer(Some(RequestRate {
                burst: 2,
                interval: Duration::from_secs(3600),
            }))
            .max_sessions_per_peer(100)
            .build()
            .unwrap(),
    )
    .await;
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    target.reserve(&relay).await;
    source.dial_through(&relay, target.peer_id).await.unwrap();
    source.dial_through(&relay, target.peer_id).await.unwrap();
    let error = source
        .dial_through(&relay, target.peer_id)
        .await
        .unwrap_err();
    assert!(error.contains("ResourceLimitExceeded"), "{error}");
    let stats = relay.with(|r| r.stats()).await;
    assert_eq!(
        stats.sessions_denied.get(&DenyReason::RateLimited),
        Some(&1)
    );
    assert_eq!(stats.active_sessions, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_reservation_requirement_a_connected_target_is_reachable() {
    use futures::{AsyncReadExt, AsyncWriteExt};

    common::init_tracing();
    let relay = TestRelay::start(
        common::test_config()
            .require_reservation(false)
            .bandwidth(None)
            .build()
            .unwrap(),
    )
    .await;
    let mut source = TestClient::start().await;

    // Not connected at all: the relay cannot reach it.
    let absent = libp2p::PeerId::random();
    let error = source.dial_through(&relay, absent).await.unwrap_err();
    assert!(error.contains("ConnectionFailed"), "{error}");

    // Connected without a reservation: the relay uses that connection for the STOP request.
    let common::RawCircuit {
        mut source,
        mut target,
        source_id,
        connect,
    } = common::raw_circuit(&relay).await;
    assert_eq!(
        connect.peer.and_then(|p| p.id),
        Some(source_id.to_bytes()),
        "the STOP request names the source"
    );
    source.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    target.read_exact(&mut got).await.unwrap();
    target.write_all(&got).await.unwrap();
    let mut echo = [0u8; 5];
    source.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"hello");
    assert_eq!(relay.with(|r| r.stats().reservations).await, 0);
    assert_eq!(relay.with(|r| r.stats().active_sessions).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denying_a_reserved_peer_on_a_running_relay_closes_its_connection_and_frees_its_slot() {
    common::init_tracing();
    let mut foe = TestClient::start().await;
    let mut friend = TestClient::start().await;
    let mut relay = TestRelay::start(common::test_config().build().unwrap()).await;
    foe.reserve(&relay).await;
    friend.reserve(&relay).await;
    let foe_id = foe.peer_id;
    let relay_id = relay.peer_id;
    relay
        .with(move |r| {
            let denying = common::test_config().deny(foe_id).build().unwrap();
            r.set_config(denying).unwrap();
        })
        .await;
    foe.expect(
        "the relay to close the denied peer's connection",
        |e| match e {
            ClientEvent::ConnectionClosed {
                peer,
                relayed: false,
            } if *peer == relay_id => Some(()),
            _ => None,
        },
    )
    .await;
    relay
        .expect("the denied peer's reservation to end", |e| match e {
            Event::ReservationEnded { peer, .. } if *peer == foe_id => Some(()),
            _ => None,
        })
        .await;
    let held: Vec<_> = relay.with(|r| r.reservations()).await;
    assert_eq!(held.len(), 1, "the other peer keeps its reservation");
    assert_eq!(held[0].peer, friend.peer_id);
}
