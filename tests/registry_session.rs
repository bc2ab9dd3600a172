//! End to end: a peer that knows only a bootstrap peer discovers a relay and reserves on it; a
//! second peer that knows only the first one's id and the bootstrap peer reaches it through the
//! relay with `request_relay`, exchanges data both ways and closes the session by its id.
#![cfg(feature = "registry")]

#[path = "common/registry_net.rs"]
mod registry_net;

use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::StreamProtocol;
use macula_relay::{registry, Event as RelayEvent};
use registry_net::{NetPeer, NodeEvent, PeerSpec};

const ECHO: StreamProtocol = StreamProtocol::new("/macula-test/greet/1.0.0");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_found_by_id_is_reached_through_a_discovered_relay_and_the_session_closes_by_id() {
    registry_net::init_tracing();
    let reg = registry::RegistryConfig::default();
    let boot = NetPeer::start(PeerSpec::dht(reg.clone()), None).await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(NetPeer::start(PeerSpec::dht(reg.clone()), Some(boot.boot())).await);
    }
    let relay_config = registry_net::relay_config().build().unwrap();
    let mut relay = NetPeer::start(
        PeerSpec::relay(reg.clone(), relay_config, true),
        Some(boot.boot()),
    )
    .await;
    relay.registered().await;

    // The target knows only the bootstrap peer: it discovers the relay and reserves on it.
    let mut target = NetPeer::start(PeerSpec::client(reg.clone()), Some(boot.boot())).await;
    let reserved = target
        .reserve_on_best_relay(20, Duration::from_millis(500))
        .await;
    let (reserved_on, circuit_addr) = reserved.expect("target reserved on a relay");
    assert_eq!(reserved_on, relay.peer_id);
    println!("target reachable at {circuit_addr}");

    let mut incoming = target.control.clone().accept(ECHO).unwrap();
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"hello from the source");
            stream.write_all(b"hello from the target").await.unwrap();
            stream.close().await.unwrap();
        }
    });

    // The source knows only the bootstrap peer and the target's id.
    let mut source = NetPeer::start(PeerSpec::client(reg.clone()), Some(boot.boot())).await;
    let target_id = target.peer_id;
    let mut opened = None;
    for _ in 0..20 {
        source
            .with(move |s| s.behaviour_mut().registry.request_relay(target_id))
            .await;
        let outcome = source
            .expect("relay session outcome", |e| match e {
                NodeEvent::Registry(registry::Event::RelaySessionOpened {
                    session,
                    relay,
                    target,
                    ..
                }) => Some(Ok((session, relay, target))),
                NodeEvent::Registry(registry::Event::RelaySessionFailed { error, .. }) => {
                    Some(Err(error))
                }
                _ => None,
            })
            .await;
        match outcome {
            Ok(o) => {
                opened = Some(o);
                break;
            }
            // The target's locator record may still be on its way.
            Err(registry::SessionError::TargetNotFound(_)) => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Err(e) => panic!("request_relay failed: {e}"),
        }
    }
    let (session, via, reached) = opened.expect("request_relay connected");
    assert_eq!((via, reached), (relay.peer_id, target_id));
    let relay_session = relay
        .expect("relay session opened", |e| match e {
            NodeEvent::Relay(RelayEvent::SessionOpened {
                id,
                source: s,
                target: t,
                ..
            }) => Some((id, s, t)),
            _ => None,
        })
        .await;
    assert_eq!(
        (relay_session.1, relay_session.2),
        (source.peer_id, target_id)
    );

    // Data both ways over the relayed connection.
    let mut stream = source
        .control
        .clone()
        .open_stream(target_id, ECHO)
        .await
        .unwrap();
    stream.write_all(b"hello from the source").await.unwrap();
    stream.close().await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"hello from the target");

    // Close by id: the source's connection closes and the relay ends the session.
    source
        .with(move |s| s.behaviour_mut().registry.close_relay_session(session))
        .await
        .unwrap();
    source
        .expect("relay session closed", |e| match e {
            NodeEvent::Registry(registry::Event::RelaySessionClosed { session: s, .. })
                if s == session =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    let (closed_id, bytes_up, bytes_down) = relay
        .expect("relay session closed", |e| match e {
            NodeEvent::Relay(RelayEvent::SessionClosed {
                id,
                bytes_source_to_target,
                bytes_target_to_source,
                ..
            }) => Some((id, bytes_source_to_target, bytes_target_to_source)),
            _ => None,
        })
        .await;
    assert_eq!(closed_id, relay_session.0);
    assert!(bytes_up > 21 && bytes_down > 21);
    println!("session {session} via {via}: {bytes_up} B up, {bytes_down} B down, closed by id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_moves_to_the_next_best_relay_when_its_relay_disappears() {
    registry_net::init_tracing();
    let reg = registry::RegistryConfig::default();
    let boot = NetPeer::start(PeerSpec::dht(reg.clone()), None).await;
    let mut others = Vec::new();
    for _ in 0..3 {
        others.push(NetPeer::start(PeerSpec::dht(reg.clone()), Some(boot.boot())).await);
    }
    let relay_config = registry_net::relay_config().build().unwrap();
    let mut relays = Vec::new();
    for _ in 0..3 {
        let mut relay = NetPeer::start(
            PeerSpec::relay(reg.clone(), relay_config.clone(), true),
            Some(boot.boot()),
        )
        .await;
        relay.registered().await;
        relays.push(relay);
    }

    // The target discovers all three relays, then keeps two reservations.
    let mut target = NetPeer::start(PeerSpec::client(reg.clone()), Some(boot.boot())).await;
    let (found, _, _) = target
        .discover_until(40, Duration::from_millis(500), |r| r.len() == 3)
        .await;
    assert_eq!(found.len(), 3);
    target
        .with(|s| s.behaviour_mut().registry.reserve_on_best(2))
        .await;
    let mut held = Vec::new();
    while held.len() < 2 {
        let relay = target
            .expect("reservation accepted", |e| match e {
                NodeEvent::Registry(registry::Event::ReservationAccepted { relay, .. }) => {
                    Some(relay)
                }
                _ => None,
            })
            .await;
        held.push(relay);
    }

    // One of them goes away: the reservation is lost and moves to the third relay.
    let gone = held[0];
    let spare = relays
        .iter()
        .map(|r| r.peer_id)
        .find(|p| !held.contains(p))
        .unwrap();
    let index = relays.iter().position(|r| r.peer_id == gone).unwrap();
    drop(relays.remove(index));
    let lost = target
        .expect("reservation lost", |e| match e {
            NodeEvent::Registry(registry::Event::ReservationLost { failure }) => Some(failure),
            _ => None,
        })
        .await;
    assert_eq!(lost.relay, gone);
    let (from, to) = target
        .expect("reservation moved", |e| match e {
            NodeEvent::Registry(registry::Event::ReservationMoved { from, to }) => Some((from, to)),
            _ => None,
        })
        .await;
    assert_eq!((from, to), (gone, spare));
    let mut now_held = target.with(|s| s.behaviour().registry.reservations()).await;
    now_held.sort();
    let mut expected = vec![held[1], spare];
    expected.sort();
    assert_eq!(now_held, expected);
    println!("reservation on {gone} lost ({lost}); moved to {spare}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_request_names_the_relay_and_the_status_it_answered() {
    registry_net::init_tracing();
    let reg = registry::RegistryConfig::default();
    let relay_config = registry_net::relay_config().build().unwrap();
    let relay = NetPeer::start(PeerSpec::relay(reg.clone(), relay_config, true), None).await;
    let target = NetPeer::start(PeerSpec::client(reg.clone()), None).await;
    let mut source = NetPeer::start(PeerSpec::client(reg), None).await;

    // The target holds no reservation on the relay.
    let (t, r, a) = (target.peer_id, relay.peer_id, relay.addr.clone());
    source
        .with(move |s| s.behaviour_mut().registry.request_relay_via(t, r, Some(a)))
        .await;
    let error = source
        .expect("request failed", |e| match e {
            NodeEvent::Registry(registry::Event::RelaySessionFailed { error, .. }) => Some(error),
            NodeEvent::Registry(registry::Event::RelaySessionOpened { .. }) => {
                panic!("connected without a reservation")
            }
            _ => None,
        })
        .await;
    println!("{error}");
    let registry::SessionError::RelaysFailed(failures) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].relay, relay.peer_id);
    assert_eq!(
        failures[0].status,
        Some(macula_relay::Status::NoReservation)
    );
    assert!(error.to_string().contains("NO_RESERVATION"), "{error}");
    assert!(
        error.to_string().contains(&relay.peer_id.to_string()),
        "{error}"
    );
}

/// `request_relay` while the swarm is already dialing the relay (a DHT lookup contacting it, say):
/// the relay client's own dial of the relay is refused by the swarm (the peer is being dialed),
/// which used to cancel the circuit dial ("Response from behaviour was canceled").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_relay_succeeds_while_the_relay_is_already_being_dialed() {
    registry_net::init_tracing();
    let reg = registry::RegistryConfig::default();
    let relay_config = registry_net::relay_config().build().unwrap();
    let mut relay = NetPeer::start(PeerSpec::relay(reg.clone(), relay_config, true), None).await;
    let mut target = NetPeer::start(PeerSpec::client(reg.clone()), None).await;
    let mut source = NetPeer::start(PeerSpec::client(reg), None).await;

    let circuit = relay
        .addr
        .clone()
        .with(libp2p::multiaddr::Protocol::P2pCircuit);
    target
        .with(move |s| s.listen_on(circuit).map(|_| ()))
        .await
        .expect("listen on the relay");
    let reserved = relay
        .expect("the target's reservation on the relay", |e| match e {
            NodeEvent::Relay(RelayEvent::ReservationAccepted { peer, .. }) => Some(peer),
            _ => None,
        })
        .await;
    assert_eq!(reserved, target.peer_id);

    for attempt in 0..5 {
        let (t, r, a) = (target.peer_id, relay.peer_id, relay.addr.clone());
        source
            .with(move |s| {
                // Another part of the swarm starts dialing the relay first.
                s.dial(a.clone()).expect("dial the relay");
                s.behaviour_mut().registry.request_relay_via(t, r, Some(a))
            })
            .await;
        let outcome = source
            .expect("relay session outcome", |e| match e {
                NodeEvent::Registry(registry::Event::RelaySessionOpened { session, .. }) => {
                    Some(Ok(session))
                }
                NodeEvent::Registry(registry::Event::RelaySessionFailed { error, .. }) => {
                    Some(Err(error))
                }
                _ => None,
            })
            .await;
        let session = outcome.unwrap_or_else(|e| panic!("attempt {attempt}: {e}"));
        source
            .with(move |s| s.behaviour_mut().registry.close_relay_session(session))
            .await
            .unwrap();
        source
            .expect("relay session closed", |e| match e {
                NodeEvent::Registry(registry::Event::RelaySessionClosed { session: s, .. })
                    if s == session =>
                {
                    Some(())
                }
                _ => None,
            })
            .await;
        // Start the next attempt with no connection to the relay.
        let r = relay.peer_id;
        source.with(move |s| s.disconnect_peer_id(r)).await.ok();
        tokio::time::sleep(Duration::from_millis(100)).await;
        target.drain();
    }
}
