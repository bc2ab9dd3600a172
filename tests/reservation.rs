//! Reservation lifecycle: renewal by a new RESERVE, expiry at the TTL, dropped with the
//! connection; and the periodic stats event.
#![cfg(feature = "node")]

mod common;

use common::proto;

use std::time::Duration;

use common::{ClientEvent, TestClient, TestRelay};
use futures::{AsyncReadExt, AsyncWriteExt};
use macula_relay::{Event, ReservationEndReason, HOP_PROTOCOL};
use prost::Message;

async fn raw_reserve(client: &TestClient, relay: libp2p::PeerId) -> proto::HopMessage {
    let mut stream = client
        .control
        .clone()
        .open_stream(relay, HOP_PROTOCOL)
        .await
        .unwrap();
    let reserve = proto::HopMessage {
        r#type: Some(proto::HopMessageType::Reserve as i32),
        ..Default::default()
    };
    stream
        .write_all(&reserve.encode_length_delimited_to_vec())
        .await
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    proto::HopMessage::decode_length_delimited(answer.as_slice()).unwrap()
}

async fn connect(client: &mut TestClient, relay: &TestRelay) {
    let addr = relay.addr.clone();
    let relay_peer = relay.peer_id;
    client.run(move |s| {
        s.dial(addr).unwrap();
    });
    client
        .expect("connected", |e| match e {
            ClientEvent::Connected { peer, .. } if *peer == relay_peer => Some(()),
            _ => None,
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_reserve_renews_and_an_unrenewed_reservation_expires_at_its_ttl() {
    common::init_tracing();
    // Long enough that the renewal and the checks after it happen well within the first
    // reservation's lifetime on a loaded machine; the expiry is then checked against it exactly.
    const TTL: Duration = Duration::from_secs(6);
    let mut relay =
        TestRelay::start(common::test_config().reservation_ttl(TTL).build().unwrap()).await;
    let mut client = TestClient::start().await;
    connect(&mut client, &relay).await;

    let first = raw_reserve(&client, relay.peer_id).await;
    assert_eq!(first.status, Some(macula_relay::Status::Ok as i32));
    let renewing = std::time::Instant::now();
    let renewed = raw_reserve(&client, relay.peer_id).await;
    assert_eq!(renewed.status, Some(macula_relay::Status::Ok as i32));
    let flags: Vec<bool> = vec![
        relay
            .expect("accepted", |e| match e {
                Event::ReservationAccepted { renewed, .. } => Some(*renewed),
                _ => None,
            })
            .await,
        relay
            .expect("renewed", |e| match e {
                Event::ReservationAccepted { renewed, .. } => Some(*renewed),
                _ => None,
            })
            .await,
    ];
    assert_eq!(flags, vec![false, true]);
    assert_eq!(relay.with(|r| r.reservations().len()).await, 1);

    let reason = relay
        .expect("reservation expired", |e| match e {
            Event::ReservationEnded { peer, reason } if *peer == client.peer_id => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, ReservationEndReason::Expired);
    // The renewal restarted the TTL: no expiry before TTL from the renewal request.
    let lived = renewing.elapsed();
    assert!(lived >= TTL, "expired {lived:?} after its renewal");
    let stats = relay.with(|r| r.stats()).await;
    assert_eq!(stats.reservations, 0);
    assert_eq!(
        (
            stats.total_reservations_accepted,
            stats.total_reservations_renewed
        ),
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_is_dropped_when_its_connection_closes() {
    common::init_tracing();
    let mut relay = TestRelay::start(common::test_config().build().unwrap()).await;
    let mut target = TestClient::start().await;
    target.reserve(&relay).await;
    assert_eq!(relay.with(|r| r.stats().reservations).await, 1);
    let relay_peer = relay.peer_id;
    target.run(move |s| {
        let _ = s.disconnect_peer_id(relay_peer);
    });
    let reason = relay
        .expect("reservation ended", |e| match e {
            Event::ReservationEnded { reason, .. } => Some(*reason),
            _ => None,
        })
        .await;
    assert_eq!(reason, ReservationEndReason::ConnectionClosed);
    assert_eq!(relay.with(|r| r.stats().reservations).await, 0);
    // A circuit to the peer is now refused: it has no reservation.
    let mut source = TestClient::start().await;
    let error = source
        .dial_through(&relay, target.peer_id)
        .await
        .unwrap_err();
    assert!(error.contains("NoReservation"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_reports_stats_periodically() {
    common::init_tracing();
    let mut relay = TestRelay::start(
        common::test_config()
            .stats_interval(Some(Duration::from_millis(200)))
            .build()
            .unwrap(),
    )
    .await;
    let mut target = TestClient::start().await;
    target.reserve(&relay).await;
    let stats = relay
        .expect("stats with the reservation", |e| match e {
            Event::Stats(stats) if stats.reservations == 1 => Some(stats.clone()),
            _ => None,
        })
        .await;
    assert!(stats.enabled);
    assert_eq!(stats.max_sessions, 100);
    assert_eq!(stats, relay.with(|r| r.stats()).await);
}
