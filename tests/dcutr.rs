//! DCUtR through our relay: two stock rust-libp2p peers (`relay::client` + `dcutr` + `identify`)
//! meet over the relay and upgrade to a direct connection. On loopback no NAT is in the way, so
//! this shows that the DCUtR exchange, which runs over the relayed connection, gets through our
//! relay intact and that the peers then connect directly; not that hole punching works.
#![cfg(feature = "node")]

mod common;
#[path = "common/interop.rs"]
mod interop;

use std::time::Duration;

use common::{TestRelay, WAIT};
use futures::StreamExt;
use interop::{rust_versions, Row};
use libp2p::{
    core::multiaddr::Protocol,
    dcutr, identify, noise, relay,
    swarm::{dial_opts::DialOpts, NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, Swarm,
};
use macula_relay::Event;

#[derive(NetworkBehaviour)]
struct Peer {
    relay: relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
    identify: identify::Behaviour,
}

fn peer() -> Swarm<Peer> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|key, relay| Peer {
            relay,
            dcutr: dcutr::Behaviour::new(key.public().to_peer_id()),
            identify: identify::Behaviour::new(identify::Config::new(
                "/macula-test/1.0.0".into(),
                key.public(),
            )),
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

async fn listen_tcp(swarm: &mut Swarm<Peer>) -> Multiaddr {
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await
    .expect("listening")
}

/// Connects to the relay from a new port and waits until identify has run with it.
async fn connect_to_relay(swarm: &mut Swarm<Peer>, relay: &TestRelay) {
    swarm
        .dial(
            DialOpts::peer_id(relay.peer_id)
                .addresses(vec![relay.addr.clone()])
                .allocate_new_port()
                .build(),
        )
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::Behaviour(PeerEvent::Identify(identify::Event::Received {
                    peer_id,
                    ..
                })) if peer_id == relay.peer_id => break,
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    panic!("dialing the relay failed: {error}")
                }
                _ => {}
            }
        }
    })
    .await
    .expect("connected to the relay and identified it");
}

fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rust_peers_meet_over_the_relay_and_upgrade_to_a_direct_connection() {
    common::init_tracing();
    let versions = rust_versions();
    let mut row = Row::new(
        "dcutr",
        "dcutr-01",
        "rust-libp2p",
        &versions,
        "DCUtR: two peers meet over the relay (in-process) and upgrade to a direct connection",
    );
    let mut relay = TestRelay::start(common::test_config().build().unwrap()).await;

    // The target listens on TCP and connects to the relay from a fresh port; identify translates
    // the relay's view of that connection to the target's listen address: its hole-punch
    // candidate. The source does not listen. Its candidate (the address the relay sees) refuses
    // the target's dial at once, so on loopback the source's dial to the target is the one that
    // connects. (With both peers listening, the two DCUtR dials share one 4-tuple on loopback,
    // and which of them wins is a race.)
    row.step("target connecting to the relay and reserving");
    let mut dst = peer();
    let dst_id = *dst.local_peer_id();
    let dst_tcp = listen_tcp(&mut dst).await;
    connect_to_relay(&mut dst, &relay).await;
    dst.listen_on(relay.addr.clone().with(Protocol::P2pCircuit))
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            match dst.select_next_some().await {
                SwarmEvent::Behaviour(PeerEvent::Relay(
                    relay::client::Event::ReservationReqAccepted { .. },
                )) => break,
                SwarmEvent::ListenerClosed { reason, .. } => {
                    panic!("reservation failed: {reason:?}")
                }
                _ => {}
            }
        }
    })
    .await
    .expect("reservation accepted");

    row.step("source dialing through the relay");
    let mut src = peer();
    let src_id = *src.local_peer_id();
    connect_to_relay(&mut src, &relay).await;
    src.dial(relay.circuit_addr(dst_id)).unwrap();

    let mut relayed_first = false;
    let mut direct: Option<(libp2p::swarm::ConnectionId, Multiaddr)> = None;
    let mut src_upgraded: Option<libp2p::swarm::ConnectionId> = None;
    let mut dst_direct = false;
    tokio::time::timeout(WAIT, async {
        while !(src_upgraded.is_some() && direct.is_some() && dst_direct) {
            tokio::select! {
                event = src.select_next_some() => match event {
                    SwarmEvent::ConnectionEstablished { peer_id, endpoint, connection_id, .. }
                        if peer_id == dst_id =>
                    {
                        let addr = endpoint.get_remote_address().clone();
                        if is_relayed(&addr) {
                            relayed_first = direct.is_none();
                        } else {
                            direct = Some((connection_id, addr));
                        }
                    }
                    SwarmEvent::Behaviour(PeerEvent::Dcutr(dcutr::Event { remote_peer_id, result })) => {
                        assert_eq!(remote_peer_id, dst_id);
                        src_upgraded = Some(result.expect("source: DCUtR upgrade succeeds"));
                    }
                    _ => {}
                },
                event = dst.select_next_some() => {
                    // The target's own DCUtR dials (to the source's candidate, which refuses them)
                    // fail, and its event comes after 3 attempts; it is not awaited. Its side of
                    // the direct connection is.
                    if let SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } = event {
                        if peer_id == src_id && !endpoint.is_relayed() {
                            dst_direct = true;
                        }
                    }
                }
            }
        }
    })
    .await
    .expect("DCUtR upgrade within the wait");

    assert!(relayed_first, "the peers met over the relay first");
    let (direct_id, direct_addr) = direct.unwrap();
    assert_eq!(
        src_upgraded,
        Some(direct_id),
        "the DCUtR event names the direct connection"
    );
    assert!(
        !is_relayed(&direct_addr),
        "direct connection: {direct_addr}"
    );
    let dst_port = dst_tcp.iter().find_map(|p| match p {
        Protocol::Tcp(port) => Some(port),
        _ => None,
    });
    let direct_port = direct_addr.iter().find_map(|p| match p {
        Protocol::Tcp(port) => Some(port),
        _ => None,
    });
    assert_eq!(
        direct_port, dst_port,
        "the source reached the target's own TCP port, {direct_addr}"
    );
    assert!(src.is_connected(&dst_id), "the direct connection is up");
    // The relay carried the circuit the DCUtR exchange ran over.
    relay
        .expect("session through the relay", |e| match e {
            Event::SessionOpened { source, target, .. }
                if *source == src_id && *target == dst_id =>
            {
                Some(())
            }
            _ => None,
        })
        .await;
    row.pass(
        "met over the relay first (relayed connection, our relay carried the DCUtR exchange), then dcutr::Event Ok on the source and a direct TCP connection to the target's listen address on both peers",
    );
}
