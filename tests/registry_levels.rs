//! Shard levels: a fleet larger than a key holds (24 relays on one level-0 key, which DHT nodes
//! cap at 20 providers) is read one level deeper, where every relay is visible; the next
//! discovery starts at that level. In-memory transport, real Kademlia, noise and yamux.
#![cfg(feature = "registry")]

#[path = "common/registry_net.rs"]
mod registry_net;

use std::{collections::HashSet, time::Duration};

use macula_relay::{
    registry::{self, shard::level_key, PROVIDERS_PER_KEY},
    Config,
};
use registry_net::{peers, NetPeer, PeerSpec};

const RELAYS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_larger_than_a_key_is_read_one_level_deeper_where_every_relay_is_visible() {
    registry_net::init_tracing();
    // One key at level 0, eight at level 1.
    let reg = registry::RegistryConfig::builder()
        .shards(1)
        .levels(2)
        .build()
        .unwrap();
    let memory = |spec: PeerSpec| PeerSpec {
        memory: true,
        identify: false,
        ..spec
    };
    let boot = NetPeer::start(memory(PeerSpec::dht(reg.clone())), None).await;
    let mut dht = Vec::new();
    for _ in 0..3 {
        dht.push(NetPeer::start(memory(PeerSpec::dht(reg.clone())), Some(boot.boot())).await);
    }
    let relay_config = Config::builder().stats_interval(None).build().unwrap();
    let mut relays = Vec::new();
    for _ in 0..RELAYS {
        let spec = memory(PeerSpec::relay(reg.clone(), relay_config.clone(), true));
        relays.push(NetPeer::start(spec, Some(boot.boot())).await);
    }
    for relay in &mut relays {
        relay.registered().await;
    }
    let settled = registry_net::settle(Duration::from_secs(120)).await;
    println!("fleet of {RELAYS} relays registered, settled after {settled:?}");
    let all: HashSet<_> = relays.iter().map(|r| r.peer_id).collect();
    // The level-0 key holds at most 20 of them on any node.
    let key = level_key(reg.namespace(), 0, 0);
    let held = boot.stored_providers(key).await.len();
    assert!(held <= PROVIDERS_PER_KEY, "{held}");

    let mut client = NetPeer::start(memory(PeerSpec::client(reg.clone())), Some(boot.boot())).await;
    let (found, first) = client.discover().await;
    println!("first discovery: {} relays, {first:?}", found.len());
    assert_eq!(first.levels_descended, 1, "{first:?}");
    assert!(found.len() >= reg.discovery_target(), "{first:?}");
    assert!(
        first.record_reads <= found.len() + 4,
        "the full level-0 key's relays are not fetched: {first:?}"
    );
    let mut seen: HashSet<_> = peers(&found).into_iter().collect();
    let mut discoveries = 1;
    while seen != all && discoveries < 20 {
        let (found, stats) = client.discover().await;
        discoveries += 1;
        assert_eq!(stats.levels_descended, 0, "starts at level 1: {stats:?}");
        seen.extend(peers(&found));
    }
    println!("all {RELAYS} relays seen after {discoveries} discoveries");
    assert_eq!(seen, all, "every relay is visible at level 1");
}
