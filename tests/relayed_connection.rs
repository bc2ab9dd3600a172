//! Hop requests that arrive over a relayed connection are refused with PERMISSION_DENIED (the
//! spec: relays should not accept reservations or connects over relayed connections).
#![cfg(feature = "node")]

mod common;

use common::proto;

use std::time::Duration;

use common::{TestClient, TestRelay};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    core::multiaddr::Protocol, noise, relay, swarm::NetworkBehaviour, swarm::SwarmEvent, tcp, yamux,
};
use macula_relay::{DenyReason, Event, Status, HOP_PROTOCOL};
use prost::Message;

/// A second relay that is itself reachable only through the first one.
#[derive(NetworkBehaviour)]
struct RelayBehindRelay {
    client: relay::client::Behaviour,
    relay: macula_relay::Behaviour,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reserve_over_a_relayed_connection_is_refused_with_permission_denied() {
    common::init_tracing();
    let first = TestRelay::start(common::test_config().build().unwrap()).await;

    let config = common::test_config().build().unwrap();
    let mut second = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key, client| RelayBehindRelay {
            client,
            relay: macula_relay::Behaviour::new(key.clone(), config),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let second_id = *second.local_peer_id();
    second.dial(first.addr.clone()).unwrap();
    let connected = async {
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = second.select_next_some().await {
                break;
            }
        }
    };
    tokio::time::timeout(common::WAIT, connected).await.unwrap();
    second
        .listen_on(first.addr.clone().with(Protocol::P2pCircuit))
        .unwrap();
    let reserved = async {
        loop {
            match second.select_next_some().await {
                SwarmEvent::Behaviour(RelayBehindRelayEvent::Client(
                    relay::client::Event::ReservationReqAccepted { .. },
                )) => break,
                SwarmEvent::ListenerClosed { reason, .. } => {
                    panic!("reservation failed: {reason:?}")
                }
                other => tracing::debug!(?other, "second relay"),
            }
        }
    };
    tokio::time::timeout(common::WAIT, reserved)
        .await
        .expect("the second relay reserves on the first");
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(RelayBehindRelayEvent::Relay(e)) =
                second.select_next_some().await
            {
                let _ = events_tx.send(e);
            }
        }
    });

    // A peer reaches the second relay through the first, then asks it for a reservation.
    let mut peer = TestClient::start().await;
    peer.dial_through(&first, second_id).await.unwrap();
    let mut hop = peer
        .control
        .clone()
        .open_stream(second_id, HOP_PROTOCOL)
        .await
        .unwrap();
    let reserve = proto::HopMessage {
        r#type: Some(proto::HopMessageType::Reserve as i32),
        ..Default::default()
    };
    hop.write_all(&reserve.encode_length_delimited_to_vec())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(common::WAIT, hop.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = proto::HopMessage::decode_length_delimited(answer.as_slice()).unwrap();
    assert_eq!(answer.status, Some(Status::PermissionDenied as i32));
    let denied = tokio::time::timeout(common::WAIT, async {
        loop {
            if let Some(Event::ReservationDenied { reason, .. }) = events.recv().await {
                return reason;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(denied, DenyReason::RelayedConnection);
}
