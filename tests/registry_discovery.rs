//! The registry on a real Kademlia of 20 peers over 127.0.0.1 TCP (providers mode, the
//! default): exactly the capable relays are discovered with their capacity and load, the
//! ranking follows the load, and a disabled relay drops out of discovery within seconds.
#![cfg(feature = "registry")]

#[path = "common/registry_net.rs"]
mod registry_net;

use std::{collections::HashSet, time::Duration};

use macula_relay::{registry, Config};
use registry_net::{peers, NetPeer, NodeEvent, PeerSpec};

const CAPACITY: usize = 8;

fn relay_config() -> Config {
    registry_net::relay_config()
        .max_sessions(CAPACITY)
        .build()
        .unwrap()
}

fn registry_config() -> registry::RegistryConfig {
    // Republish on any change, at most once a second, so that load shows up quickly.
    registry::RegistryConfig::builder()
        .min_republish_interval(Duration::from_secs(1))
        .load_change_percent(0)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_finds_exactly_the_capable_relays_ranked_by_load_and_drops_a_disabled_one() {
    registry_net::init_tracing();
    let reg = registry_config();
    let boot = NetPeer::start(PeerSpec::dht(reg.clone()), None).await;
    let mut plain = Vec::new();
    for _ in 0..12 {
        plain.push(NetPeer::start(PeerSpec::dht(reg.clone()), Some(boot.boot())).await);
    }
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(
            NetPeer::start(
                PeerSpec::relay(reg.clone(), relay_config(), true),
                Some(boot.boot()),
            )
            .await,
        );
    }
    let incapable = NetPeer::start(
        PeerSpec::relay(reg.clone(), relay_config(), false),
        Some(boot.boot()),
    )
    .await;
    let target = NetPeer::start(PeerSpec::client(reg.clone()), Some(boot.boot())).await;
    let mut source = NetPeer::start(PeerSpec::client(reg.clone()), Some(boot.boot())).await;
    let mut client = NetPeer::start(PeerSpec::client(reg.clone()), Some(boot.boot())).await;
    println!("network: {} peers", 1 + plain.len() + relays.len() + 1 + 3);

    for relay in &mut relays {
        relay.registered().await;
    }
    let capable: HashSet<_> = relays.iter().map(|r| r.peer_id).collect();

    // Exactly the three capable relays, with their capacity and (zero) load.
    let (found, stats, took) = client
        .discover_until(120, Duration::from_millis(500), |r| r.len() >= 3)
        .await;
    println!("first complete discovery after {took:?}: {stats:?}");
    assert_eq!(peers(&found).into_iter().collect::<HashSet<_>>(), capable);
    assert!(!peers(&found).contains(&incapable.peer_id));
    let incapable_state = incapable
        .with(|s| {
            let r = &s.behaviour().registry;
            (r.is_registered(), r.current_record().is_some())
        })
        .await;
    assert_eq!(
        incapable_state,
        (false, false),
        "a relay without external address registers"
    );
    for candidate in &found {
        let record = &candidate.record;
        assert!(record.enabled);
        assert_eq!(record.max_sessions as usize, CAPACITY);
        assert_eq!((record.active_sessions, record.reservations), (0, 0));
        assert_eq!(record.bandwidth, Some(macula_relay::DEFAULT_BANDWIDTH));
        let relay = relays
            .iter()
            .find(|r| r.peer_id == candidate.peer())
            .unwrap();
        assert!(record.addrs.contains(&relay.addr), "{:?}", record.addrs);
        assert!(
            candidate.rtt.is_some(),
            "fetched records carry a round trip"
        );
    }
    assert_eq!(stats.shards_read, registry::DEFAULT_SHARDS as usize);

    // Load: the target reserves on relays 0 and 1; the source opens two sessions through
    // relay 0 and one through relay 1. Spare sessions become 6, 7 and 8.
    for relay in &relays[..2] {
        let circuit = relay
            .addr
            .clone()
            .with(libp2p::core::multiaddr::Protocol::P2pCircuit);
        target
            .with(move |s| s.listen_on(circuit).map(|_| ()))
            .await
            .unwrap();
    }
    for relay in &mut relays[..2] {
        let t = target.peer_id;
        relay
            .expect("reservation accepted", |e| match e {
                NodeEvent::Relay(macula_relay::Event::ReservationAccepted { peer, .. })
                    if peer == t =>
                {
                    Some(())
                }
                _ => None,
            })
            .await;
    }
    for relay in [&relays[0], &relays[0], &relays[1]] {
        let (t, r, a) = (target.peer_id, relay.peer_id, relay.addr.clone());
        source
            .with(move |s| s.behaviour_mut().registry.request_relay_via(t, r, Some(a)))
            .await;
        source
            .expect("relayed session opened", |e| match e {
                NodeEvent::Registry(registry::Event::RelaySessionOpened { .. }) => Some(()),
                NodeEvent::Registry(registry::Event::RelaySessionFailed { error, .. }) => {
                    panic!("session failed: {error}")
                }
                _ => None,
            })
            .await;
    }
    let expected = vec![relays[2].peer_id, relays[1].peer_id, relays[0].peer_id];
    let (ranked, _, took) = client
        .discover_until(40, Duration::from_millis(500), |r| {
            peers(r) == expected && r.iter().map(|c| c.record.active_sessions).sum::<u32>() == 3
        })
        .await;
    println!("load visible in discovery after {took:?}");
    assert_eq!(peers(&ranked), expected, "ranking follows spare capacity");
    let loads: Vec<_> = ranked
        .iter()
        .map(|c| {
            (
                c.record.active_sessions,
                c.record.reservations,
                c.spare_sessions(),
            )
        })
        .collect();
    assert_eq!(loads, vec![(0, 0, 8), (1, 1, 7), (2, 1, 6)]);

    // Disable the best relay: it withdraws, and discovery stops returning it.
    let gone = relays[2].peer_id;
    let started = std::time::Instant::now();
    relays[2]
        .with(|s| s.behaviour_mut().relay.as_mut().unwrap().disable())
        .await;
    relays[2]
        .expect("withdrawn", |e| match e {
            NodeEvent::Registry(registry::Event::Withdrawn { reason, record }) => {
                Some((reason, record))
            }
            _ => None,
        })
        .await;
    let withdrawn_after = started.elapsed();
    let (after, stats, _) = client
        .discover_until(40, Duration::from_millis(100), |r| {
            !peers(r).contains(&gone)
        })
        .await;
    let seen_after = started.elapsed();
    println!(
        "disable -> withdrawal published after {withdrawn_after:?}; discovery stopped returning the \
         relay after {seen_after:?} (record TTL {:?}, kad provider TTL 48 h); last discovery: {stats:?}",
        registry::DEFAULT_RECORD_TTL
    );
    assert!(!peers(&after).contains(&gone));
    assert_eq!(peers(&after), vec![relays[1].peer_id, relays[0].peer_id]);
    assert!(
        seen_after < registry::DEFAULT_RECORD_TTL / 10,
        "withdrawal took {seen_after:?}"
    );
}
