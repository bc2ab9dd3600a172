//! Scale: 200 DHT peers and 32 relays in one process (libp2p's in-memory transport, real
//! Kademlia, noise and yamux). Relays spread over the shard keys so that no key holds more than
//! the relays that hash to it (and none reaches kad's 20-providers-per-key limit, which one key
//! for 32 relays would exceed); discovery latency and lookups per discovery are reported.
#![cfg(feature = "registry")]

#[path = "common/registry_net.rs"]
mod registry_net;

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use libp2p::{
    identity::Keypair,
    kad::{store::RecordStore, KBucketKey},
    PeerId,
};
use macula_relay::{
    registry::{
        self,
        shard::{shard_key, shard_of},
    },
    Config,
};
use registry_net::{NetPeer, PeerSpec};

const DHT_PEERS: usize = 200;
const RELAYS: usize = 32;
const CLIENTS: usize = 8;

fn key(seed: u8, kind: u8) -> Keypair {
    let mut bytes = [seed; 32];
    bytes[0] = kind;
    Keypair::ed25519_from_bytes(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "heavy: 240 peers keep both cores busy for minutes in a debug build; run with --ignored"]
async fn relays_spread_over_shards_and_discovery_cost_is_bounded_at_scale() {
    registry_net::init_tracing();
    let reg = registry::RegistryConfig::default();
    let shards = reg.shards();
    let spec = |keypair: Option<Keypair>| PeerSpec {
        memory: true,
        identify: false,
        keypair,
        ..PeerSpec::dht(reg.clone())
    };

    let started = std::time::Instant::now();
    let mut dht: Vec<NetPeer> = Vec::new();
    for _ in 0..DHT_PEERS {
        dht.push(NetPeer::start(spec(None), None).await);
    }
    println!("dht peers started after {:?}", started.elapsed());
    let relay_config = Config::builder().stats_interval(None).build().unwrap();
    let mut relays = Vec::new();
    for i in 0..RELAYS {
        let relay_spec = PeerSpec {
            relay: Some(relay_config.clone()),
            ..spec(Some(key(i as u8, 1)))
        };
        relays.push(NetPeer::start(relay_spec, None).await);
    }
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let client_spec = PeerSpec {
            memory: true,
            identify: false,
            ..PeerSpec::client(reg.clone())
        };
        clients.push(NetPeer::start(client_spec, None).await);
    }
    println!("all started after {:?}", started.elapsed());
    // A prepared DHT: every peer knows its 16 XOR-closest servers and 16 others. (Letting 240
    // peers bootstrap through lookups at once keeps a debug build busy for minutes.)
    let servers: Vec<(PeerId, libp2p::Multiaddr)> =
        dht.iter().chain(relays.iter()).map(|p| p.boot()).collect();
    for (i, peer) in dht
        .iter()
        .chain(relays.iter())
        .chain(clients.iter())
        .enumerate()
    {
        let me = KBucketKey::from(peer.peer_id);
        let mut others: Vec<_> = servers
            .iter()
            .filter(|(p, _)| *p != peer.peer_id)
            .cloned()
            .collect();
        others.sort_by_cached_key(|(p, _)| me.distance(&KBucketKey::from(*p)));
        let mut table: Vec<_> = others.iter().take(16).cloned().collect();
        table.extend(
            others
                .iter()
                .skip(16)
                .skip(i % 7)
                .step_by(others.len() / 16)
                .take(16)
                .cloned(),
        );
        peer.add_peers(table).await;
        if i % 40 == 0 {
            println!("  {i} tables filled after {:?}", started.elapsed());
        }
    }
    println!("routing tables filled after {:?}", started.elapsed());
    // Each peer's first routing-table entries start one kad bootstrap (self lookup plus one
    // lookup per bucket): about 60 000 requests for 240 peers, minutes of CPU in a debug build.
    // Measure discovery once that has settled.
    let settled = registry_net::settle(Duration::from_secs(420)).await;
    println!("DHT settled (process CPU below 20 %) after {:?}", settled);
    for relay in &mut relays {
        relay.registered().await;
    }
    println!(
        "{} DHT peers, {RELAYS} relays, {CLIENTS} clients up in {:?}",
        DHT_PEERS,
        started.elapsed()
    );

    // Where the relays went: one shard each, by peer id.
    let mut expected: HashMap<u16, HashSet<PeerId>> = HashMap::new();
    for relay in &relays {
        expected
            .entry(shard_of(&relay.peer_id, shards))
            .or_default()
            .insert(relay.peer_id);
    }
    let sizes: Vec<usize> = (0..shards)
        .map(|s| expected.get(&s).map_or(0, |p| p.len()))
        .collect();
    println!("relays per shard: {sizes:?}");

    // The first discovery from each client (providers may still be on their way: retry).
    let mut latencies = Vec::new();
    let mut lookups = Vec::new();
    for client in &mut clients {
        let (found, stats, _) = client
            .discover_until(30, Duration::from_millis(500), |r| {
                r.len() >= reg.discovery_target()
            })
            .await;
        assert!(
            found.len() >= reg.discovery_target(),
            "found {} relays",
            found.len()
        );
        let all: HashSet<PeerId> = relays.iter().map(|r| r.peer_id).collect();
        assert!(found.iter().all(|c| all.contains(&c.peer())));
        latencies.push(stats.elapsed);
        lookups.push((
            stats.shards_read,
            stats.dht_lookups,
            stats.dht_requests,
            stats.record_reads,
        ));
    }
    // A second round, once the network has settled.
    for client in &mut clients {
        let (found, stats) = client.discover().await;
        assert!(found.len() >= reg.discovery_target());
        latencies.push(stats.elapsed);
        lookups.push((
            stats.shards_read,
            stats.dht_lookups,
            stats.dht_requests,
            stats.record_reads,
        ));
    }
    latencies.sort();
    let mean = latencies.iter().sum::<Duration>() / latencies.len() as u32;
    let per = |f: fn(&(usize, usize, u32, usize)) -> f64| {
        lookups.iter().map(f).sum::<f64>() / lookups.len() as f64
    };
    println!(
        "discovery ({} runs): latency mean {mean:?}, median {:?}, max {:?}; per discovery: \
         {:.1} shard lookups, {:.1} kad requests, {:.1} record fetches",
        latencies.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        per(|l| l.0 as f64),
        per(|l| f64::from(l.2)),
        per(|l| l.3 as f64),
    );

    // What a discovery costs is bounded by the registry's design, not by the size of the
    // network: at most every shard key read once, one lookup per shard (providers mode: records
    // are fetched from the relays, not looked up), at most the configured number of record reads,
    // and a Kademlia lookup's requests bounded by kad's replication factor (20) times its
    // parallelism (3) per lookup.
    for (i, &(shards_read, dht_lookups, dht_requests, record_reads)) in lookups.iter().enumerate() {
        let cost = format!(
            "discovery {i}: {shards_read} shards, {dht_lookups} lookups, {dht_requests} kad requests, \
             {record_reads} record reads"
        );
        assert!(
            shards_read >= 1 && shards_read <= usize::from(shards),
            "{cost}"
        );
        assert_eq!(dht_lookups, shards_read, "{cost}");
        assert!(record_reads <= registry::DEFAULT_MAX_RECORD_READS, "{cost}");
        assert!(dht_requests as usize <= dht_lookups * 20 * 3, "{cost}");
    }

    // Provider records per shard key, as stored across the DHT.
    let mut stored: HashMap<u16, HashSet<PeerId>> = HashMap::new();
    let mut max_per_node: HashMap<u16, usize> = HashMap::new();
    let mut holders: HashMap<u16, usize> = HashMap::new();
    for peer in dht.iter().chain(relays.iter()) {
        let counts = peer
            .with(move |s| {
                let store = s.behaviour_mut().registry.kad_mut().store_mut();
                (0..shards)
                    .map(|shard| {
                        let providers: Vec<PeerId> = store
                            .providers(&shard_key(registry::DEFAULT_NAMESPACE, shard))
                            .into_iter()
                            .map(|p| p.provider)
                            .collect();
                        (shard, providers)
                    })
                    .collect::<Vec<_>>()
            })
            .await;
        for (shard, providers) in counts {
            if providers.is_empty() {
                continue;
            }
            *holders.entry(shard).or_default() += 1;
            let max = max_per_node.entry(shard).or_default();
            *max = (*max).max(providers.len());
            stored.entry(shard).or_default().extend(providers);
        }
    }
    for shard in 0..shards {
        let want = expected.get(&shard).cloned().unwrap_or_default();
        let have = stored.get(&shard).cloned().unwrap_or_default();
        println!(
            "shard {shard}: {} relays hash to it, {} distinct providers stored on {} peers, at most {} on one peer",
            want.len(),
            have.len(),
            holders.get(&shard).copied().unwrap_or(0),
            max_per_node.get(&shard).copied().unwrap_or(0),
        );
        assert_eq!(
            have, want,
            "shard {shard} holds exactly the relays that hash to it"
        );
        assert!(
            max_per_node.get(&shard).copied().unwrap_or(0) < 20,
            "a shard key is full"
        );
    }
    let largest = *sizes.iter().max().unwrap();
    let mean_share = RELAYS as f64 / f64::from(shards);
    println!(
        "largest shard holds {largest} providers (mean {mean_share}); one key for all {RELAYS} relays \
         would exceed kad's 20 providers per key"
    );
    assert!(
        (largest as f64) <= 2.5 * mean_share,
        "shards unbalanced: {sizes:?}"
    );
}
