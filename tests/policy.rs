//! Admission policy seen from unmodified clients: deny and allow lists, request-rate limits,
//! and relaying to a connected target without a reservation when configured so.
#![cfg(feature = "node")]

mod common;
/// The spec's messages, from the same prost definitions the relay uses (its protocol module is private).
#[allow(dead_code)]
#[path = "../src/protocol/proto.rs"]
mod proto;

use std::time::Duration;

use common::{ClientEvent, TestClient, TestRelay};
use futures::StreamExt;
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

/// A peer with no relay client: only raw streams (the rust relay client refuses circuits from a
/// relay it holds no reservation on, so the no-reservation mode is checked at the wire level).
async fn plain_peer(relay: &TestRelay) -> (libp2p::PeerId, libp2p_stream::Control) {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let peer = *swarm.local_peer_id();
    let control = swarm.behaviour().new_control();
    swarm.dial(relay.addr.clone()).unwrap();
    loop {
        if let libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } =
            swarm.select_next_some().await
        {
            break;
        }
    }
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (peer, control)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_reservation_requirement_a_connected_target_is_reachable() {
    use futures::{AsyncReadExt, AsyncWriteExt};
    use macula_relay::STOP_PROTOCOL;
    use prost::Message;

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
    let (target, target_control) = plain_peer(&relay).await;
    let mut incoming = target_control.clone().accept(STOP_PROTOCOL).unwrap();
    let (source_id, source_control) = plain_peer(&relay).await;
    let target_side = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.unwrap();
        let mut len = [0u8; 1];
        stream.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; len[0] as usize];
        stream.read_exact(&mut body).await.unwrap();
        let connect = proto::StopMessage::decode(body.as_slice()).unwrap();
        let ok = proto::StopMessage {
            r#type: Some(proto::StopMessageType::Status as i32),
            status: Some(macula_relay::Status::Ok as i32),
            ..Default::default()
        };
        stream
            .write_all(&ok.encode_length_delimited_to_vec())
            .await
            .unwrap();
        // Echo what comes through the circuit.
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.unwrap();
        stream.write_all(&buf).await.unwrap();
        stream.flush().await.unwrap();
        connect
    });
    let mut hop = source_control
        .clone()
        .open_stream(relay.peer_id, macula_relay::HOP_PROTOCOL)
        .await
        .unwrap();
    let request = proto::HopMessage {
        r#type: Some(proto::HopMessageType::Connect as i32),
        peer: Some(proto::Peer {
            id: Some(target.to_bytes()),
            addrs: vec![],
        }),
        ..Default::default()
    };
    hop.write_all(&request.encode_length_delimited_to_vec())
        .await
        .unwrap();
    let mut len = [0u8; 1];
    hop.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; len[0] as usize];
    hop.read_exact(&mut body).await.unwrap();
    let answer = proto::HopMessage::decode(body.as_slice()).unwrap();
    assert_eq!(answer.status, Some(macula_relay::Status::Ok as i32));
    hop.write_all(b"hello").await.unwrap();
    let mut echo = [0u8; 5];
    hop.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"hello");
    let connect = target_side.await.unwrap();
    assert_eq!(
        connect.peer.and_then(|p| p.id),
        Some(source_id.to_bytes()),
        "the STOP request names the source"
    );
    assert_eq!(relay.with(|r| r.stats().reservations).await, 0);
    assert_eq!(relay.with(|r| r.stats().active_sessions).await, 1);
}
