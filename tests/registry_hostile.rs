//! The registry among hostile and dead peers: fake identities providing every shard key are
//! ignored where they do not belong to the shard and cost at most a read each elsewhere, every
//! discovery ends within its deadline, genuine relays are still found and reserved on; a relay
//! that died leaves the known relays at the next discovery.
#![cfg(feature = "registry")]

#[path = "common/registry_net.rs"]
mod registry_net;

use std::{collections::HashSet, time::Duration};

use macula_relay::{registry, Config};
use registry_net::{peers, NetPeer, NodeEvent, PeerSpec};

fn relay_config() -> Config {
    Config::builder()
        .request_rate_per_peer(None)
        .request_rate_per_ip(None)
        .stats_interval(None)
        .build()
        .unwrap()
}

async fn registered(relay: &mut NetPeer) {
    relay
        .expect("relay registered", |e| match e {
            NodeEvent::Registry(registry::Event::Registered { .. }) => Some(()),
            _ => None,
        })
        .await;
}

/// A boot node, `dht` more DHT nodes and `relays` registered relays.
async fn fleet(
    reg: &registry::RegistryConfig,
    dht: usize,
    relays: usize,
) -> (NetPeer, Vec<NetPeer>, Vec<NetPeer>) {
    let boot = NetPeer::start(PeerSpec::dht(reg.clone()), None).await;
    let mut nodes = Vec::new();
    for _ in 0..dht {
        nodes.push(NetPeer::start(PeerSpec::dht(reg.clone()), Some(boot.boot())).await);
    }
    let mut registered_relays = Vec::new();
    for _ in 0..relays {
        let mut relay = NetPeer::start(
            PeerSpec::relay(reg.clone(), relay_config(), true),
            Some(boot.boot()),
        )
        .await;
        registered(&mut relay).await;
        registered_relays.push(relay);
    }
    (boot, nodes, registered_relays)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "open bug: under load, in about 1 run of 10, one genuine relay stays missing from \
            discoveries for over 39 s (passes 6/6 alone); run with --ignored while fixing it"]
async fn fake_providers_of_every_shard_cost_bounded_reads_and_genuine_relays_are_still_used() {
    registry_net::init_tracing();
    let reg = registry::RegistryConfig::default();
    let ns = reg.namespace().to_owned();
    let (boot, _dht, relays) = fleet(&reg, 5, 3).await;
    // 20 fake identities provide every shard key; asked for a record, they have none.
    const FAKES: usize = 20;
    let mut fakes = Vec::new();
    for _ in 0..FAKES {
        let fake = NetPeer::start(PeerSpec::dht(reg.clone()), Some(boot.boot())).await;
        let namespace = ns.clone();
        fake.with(move |s| {
            for shard in 0..registry::DEFAULT_SHARDS {
                let key = registry::shard::shard_key(&namespace, shard);
                s.behaviour_mut()
                    .registry
                    .kad_mut()
                    .start_providing(key)
                    .unwrap();
            }
        })
        .await;
        fakes.push(fake);
    }
    let fake_ids: HashSet<_> = fakes.iter().map(|f| f.peer_id).collect();
    let genuine: HashSet<_> = relays.iter().map(|r| r.peer_id).collect();
    // Let the fakes' provider records spread.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut client = NetPeer::start(PeerSpec::client(reg.clone()), Some(boot.boot())).await;
    let (found, first, took) = client
        .discover_until(20, Duration::from_millis(300), |r| {
            peers(r).into_iter().collect::<HashSet<_>>() == genuine
        })
        .await;
    println!("first complete discovery after {took:?}: {first:?}");
    assert_eq!(peers(&found).into_iter().collect::<HashSet<_>>(), genuine);
    assert!(
        first.wrong_shard > 0,
        "providers of shards they do not belong to are ignored: {first:?}"
    );
    assert!(
        first.record_reads <= genuine.len() + FAKES,
        "each fake costs at most one read: {first:?}"
    );
    assert!(
        first.elapsed < reg.discovery_timeout() + Duration::from_secs(2),
        "{first:?}"
    );

    // The next discovery: the same genuine relays, within its deadline (fakes that answered
    // without a record are skipped now: `skipped_bad`).
    let (found, second) = client.discover().await;
    println!("next discovery: {second:?}");
    assert_eq!(peers(&found).into_iter().collect::<HashSet<_>>(), genuine);
    assert!(
        second.elapsed < reg.discovery_timeout() + Duration::from_secs(2),
        "{second:?}"
    );

    // A target reserves on genuine relays only.
    let mut target = NetPeer::start(PeerSpec::client(reg.clone()), Some(boot.boot())).await;
    target
        .with(|s| s.behaviour_mut().registry.reserve_on_best(2))
        .await;
    let mut held = HashSet::new();
    while held.len() < 2 {
        let relay = target
            .expect("reservations on genuine relays", |e| match e {
                NodeEvent::Registry(registry::Event::ReservationAccepted { relay, .. }) => {
                    Some(relay)
                }
                _ => None,
            })
            .await;
        assert!(!fake_ids.contains(&relay));
        held.insert(relay);
    }
    assert!(held.is_subset(&genuine));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_died_leaves_the_known_relays_at_the_next_discovery() {
    registry_net::init_tracing();
    let reg = registry::RegistryConfig::default();
    let (boot, _dht, mut relays) = fleet(&reg, 3, 3).await;
    let mut client = NetPeer::start(PeerSpec::client(reg.clone()), Some(boot.boot())).await;
    let (found, _, _) = client
        .discover_until(20, Duration::from_millis(300), |r| r.len() == 3)
        .await;
    assert_eq!(found.len(), 3);
    // The operator's view: the client counts its discoveries, each relay the records it served.
    let ran = client
        .with(|s| s.behaviour().registry.activity().discoveries)
        .await;
    assert!(ran >= 1);
    for relay in &relays {
        let activity = relay.with(|s| s.behaviour().registry.activity()).await;
        assert!(activity.records_served >= 1, "{activity:?}");
        assert!(activity.shard.is_some() && activity.last_published.is_some());
    }
    let known = client
        .with(|s| s.behaviour().registry.known_relays().len())
        .await;
    assert_eq!(known, 3);

    // One dies without withdrawing: its provider record stays in the DHT.
    let dead = relays.remove(0);
    let dead_id = dead.peer_id;
    drop(dead);
    let started = std::time::Instant::now();
    let (found, stats) = client.discover().await;
    let took = started.elapsed();
    println!("discovery after the relay died: {took:?}, {stats:?}");
    assert!(!peers(&found).contains(&dead_id));
    let known = client
        .with(|s| {
            s.behaviour()
                .registry
                .known_relays()
                .iter()
                .map(|c| c.peer())
                .collect::<Vec<_>>()
        })
        .await;
    assert!(!known.contains(&dead_id), "dead relay still known");
    assert_eq!(known.len(), 2);
    assert!(
        took < registry::KNOWN_LIFETIME,
        "gone from discovery within the liveness bound"
    );
}
