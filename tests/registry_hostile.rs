//! The registry among hostile and dead peers: fake identities providing every shard key are
//! ignored where they do not belong to the shard and cost at most a read each elsewhere, every
//! discovery ends within its deadline, genuine relays are still found and reserved on; a relay
//! that died leaves the known relays at the next discovery.
#![cfg(feature = "registry")]

#[path = "common/registry_net.rs"]
mod registry_net;

use std::{collections::HashSet, time::Duration};

use libp2p::{identity::Keypair, PeerId};
use macula_relay::{
    registry::{
        self,
        shard::{shard_key, shard_of},
        RelayState,
    },
    Config, OriginLimits,
};
use registry_net::{peers, NetPeer, NodeEvent, PeerSpec};
use tokio::time::Instant;

/// Every peer here connects from 127.0.0.1: the relays' per-address caps would refuse the
/// honest client once the fakes hold their share.
fn relay_config() -> Config {
    let unlimited = OriginLimits {
        per_ip: 100_000,
        per_ipv4_24: 100_000,
        per_ipv6_64: 100_000,
        per_ipv6_48: 100_000,
    };
    registry_net::relay_config()
        .connections_per_origin(unlimited)
        .build()
        .unwrap()
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
        relay.registered().await;
        registered_relays.push(relay);
    }
    (boot, nodes, registered_relays)
}

/// An identity whose peer id belongs to `shard` (what an attacker grinds for: ids are free).
fn identity_of_shard(shard: u16) -> Keypair {
    loop {
        let keypair = Keypair::generate_ed25519();
        if shard_of(&keypair.public().to_peer_id(), registry::DEFAULT_SHARDS) == shard {
            return keypair;
        }
    }
}

/// The providers each honest DHT node stores for each shard key.
async fn stored_providers(nodes: &[&NetPeer], ns: &str) -> Vec<(u16, Vec<PeerId>)> {
    let mut stored = Vec::new();
    for node in nodes {
        for shard in 0..registry::DEFAULT_SHARDS {
            let providers = node.stored_providers(shard_key(ns, shard)).await;
            stored.push((shard, providers));
        }
    }
    stored
}

/// Waits until `target` holds `count` reservations, all on `genuine` relays; returns how many
/// attempts failed on the way.
async fn reserve_on_genuine(
    target: &mut NetPeer,
    count: usize,
    fakes: &HashSet<PeerId>,
    genuine: &HashSet<PeerId>,
) -> usize {
    target
        .with(move |s| s.behaviour_mut().registry.reserve_on_best(count))
        .await;
    let mut held = HashSet::new();
    let mut failed = 0;
    while held.len() < count {
        match target
            .expect("reservations on genuine relays", |e| match e {
                NodeEvent::Registry(registry::Event::ReservationAccepted { relay, .. }) => {
                    Some(Ok(relay))
                }
                NodeEvent::Registry(registry::Event::ReservationLost { failure }) => {
                    Some(Err(failure))
                }
                _ => None,
            })
            .await
        {
            Ok(relay) => {
                assert!(!fakes.contains(&relay), "reserved on a fake relay");
                held.insert(relay);
            }
            Err(failure) => {
                println!("reservation attempt failed: {failure}");
                failed += 1;
            }
        }
    }
    assert!(held.is_subset(genuine));
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_providers_of_every_shard_cost_bounded_reads_and_genuine_relays_are_still_used() {
    registry_net::init_tracing();
    let reg = registry::RegistryConfig::default();
    let ns = reg.namespace().to_owned();
    let (boot, dht, relays) = fleet(&reg, 5, 3).await;
    // 20 fake identities provide every shard key; asked for a record, they have none.
    const FAKES: usize = 20;
    let mut fakes = Vec::new();
    for _ in 0..FAKES {
        let fake = NetPeer::start(PeerSpec::dht(reg.clone()), Some(boot.boot())).await;
        let namespace = ns.clone();
        fake.with(move |s| {
            for shard in 0..registry::DEFAULT_SHARDS {
                let key = shard_key(&namespace, shard);
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

    let mut client = NetPeer::start(PeerSpec::client(reg.clone()), Some(boot.boot())).await;
    let (found, first, took) = client
        .discover_until(20, Duration::from_millis(300), |r| {
            peers(r).into_iter().collect::<HashSet<_>>() == genuine
        })
        .await;
    println!("first complete discovery after {took:?}: {first:?}");
    assert_eq!(peers(&found).into_iter().collect::<HashSet<_>>(), genuine);
    assert!(
        first.record_reads <= genuine.len() + FAKES,
        "each fake costs at most one read: {first:?}"
    );
    assert!(
        first.elapsed < reg.discovery_timeout() + Duration::from_secs(2),
        "{first:?}"
    );
    // The honest DHT nodes keep no fake as a provider of a shard it does not belong to, and
    // every peer here comes from one network (127.0.0.0/24): at most its share per key.
    let mut honest: Vec<&NetPeer> = dht.iter().collect();
    honest.push(&boot);
    for (shard, providers) in stored_providers(&honest, &ns).await {
        assert!(
            providers
                .iter()
                .all(|p| shard_of(p, registry::DEFAULT_SHARDS) == shard),
            "a provider stored under a shard it does not belong to"
        );
        assert!(
            providers.len() <= reg.providers_per_origin(),
            "{providers:?}"
        );
    }

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
    reserve_on_genuine(&mut target, 2, &fake_ids, &genuine).await;
}

/// 200 fake identities ground into every shard, from the genuine relays' own network (the
/// worst case: an attacker sharing their /24): 150 provide their shard key and serve no
/// record, 50 register valid self-signed records claiming `u32::MAX` capacity but relay
/// nothing. They come after the genuine relays, which keep their slots; the fakes get what is
/// left of the network's share of each key. (Shares between networks are tested on the
/// provider book: on loopback every connection's source address is 127.0.0.1.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_fake_relays_do_not_keep_clients_from_genuine_relays() {
    registry_net::init_tracing();
    let reg = registry::RegistryConfig::default();
    let ns = reg.namespace().to_owned();
    let (boot, dht, relays) = fleet(&reg, 5, 3).await;
    let genuine: HashSet<_> = relays.iter().map(|r| r.peer_id).collect();
    const FAKES: usize = 200;
    const LIARS: usize = 50;
    let started = Instant::now();
    let mut fakes = Vec::new();
    for batch in (0..FAKES).collect::<Vec<_>>().chunks(20) {
        let starting = batch.iter().map(|&n| {
            let shard = (n % usize::from(registry::DEFAULT_SHARDS)) as u16;
            let spec = PeerSpec {
                keypair: Some(identity_of_shard(shard)),
                identify: false,
                // Their provider records carry their address, so readers try them.
                external: true,
                ..PeerSpec::client(reg.clone())
            };
            let (boot, key) = (boot.boot(), shard_key(&ns, shard));
            async move {
                let fake = NetPeer::start(spec, Some(boot)).await;
                let addr = fake.addr.clone();
                let liar = n < LIARS;
                fake.with(move |s| {
                    let registry = &mut s.behaviour_mut().registry;
                    if liar {
                        registry.set_relay_state(RelayState {
                            enabled: true,
                            capable: true,
                            addrs: vec![addr],
                            max_sessions: u32::MAX,
                            active_sessions: 0,
                            reservations: 0,
                            max_reservations: u32::MAX,
                            bandwidth: None,
                            session_timeout: None,
                            max_session_bytes: None,
                        });
                    } else {
                        registry.kad_mut().start_providing(key).unwrap();
                    }
                })
                .await;
                fake
            }
        });
        fakes.extend(futures::future::join_all(starting).await);
    }
    let fake_ids: HashSet<_> = fakes.iter().map(|f| f.peer_id).collect();
    // Their 200 start-ups (noise handshakes, lookups) keep a debug build busy for a while;
    // the clocks below start once that has settled.
    let settled = registry_net::settle(Duration::from_secs(180)).await;
    println!(
        "{FAKES} fakes started in {:?}, settled after {settled:?} more",
        started.elapsed()
    );

    let mut honest: Vec<&NetPeer> = dht.iter().collect();
    honest.push(&boot);
    let stored = stored_providers(&honest, &ns).await;
    let stored_fakes: usize = stored
        .iter()
        .map(|(_, p)| p.iter().filter(|p| fake_ids.contains(p)).count())
        .sum();
    println!(
        "fake provider entries on the 6 honest nodes: {stored_fakes} (of {FAKES} × 6 offered)"
    );
    for relay in &genuine {
        let shard = shard_of(relay, registry::DEFAULT_SHARDS);
        let kept = stored
            .iter()
            .filter(|(s, p)| *s == shard && p.contains(relay))
            .count();
        assert!(kept > 0, "a genuine relay lost its slot to the fakes");
    }

    // A fresh client finds every genuine relay within 60 s.
    let mut client = NetPeer::start(PeerSpec::client(reg.clone()), Some(boot.boot())).await;
    let started = Instant::now();
    let mut seen = HashSet::new();
    let mut discoveries = 0;
    while !genuine.is_subset(&seen) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "genuine relays not all found in 60 s: {} of {} ({discoveries} discoveries)",
            seen.intersection(&genuine).count(),
            genuine.len()
        );
        let (found, stats) = client.discover().await;
        discoveries += 1;
        println!("discovery {discoveries}: {} relays, {stats:?}", found.len());
        seen.extend(peers(&found));
    }
    println!(
        "every genuine relay found after {:?} ({discoveries} discoveries)",
        started.elapsed()
    );

    // A target holds two reservations on genuine relays within 60 s.
    let mut target = NetPeer::start(PeerSpec::client(reg.clone()), Some(boot.boot())).await;
    let started = Instant::now();
    let failed = tokio::time::timeout(
        Duration::from_secs(60),
        reserve_on_genuine(&mut target, 2, &fake_ids, &genuine),
    )
    .await
    .expect("two reservations on genuine relays within 60 s");
    println!(
        "two reservations on genuine relays after {:?}, {failed} failed attempts on fakes",
        started.elapsed()
    );
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
    let known = client.known_relays().await.len();
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
    let known = client.known_relays().await;
    assert!(!known.contains(&dead_id), "dead relay still known");
    assert_eq!(known.len(), 2);
    assert!(
        took < registry::KNOWN_LIFETIME,
        "gone from discovery within the liveness bound"
    );
}
