//! The relay registry on another implementation's DHT: a Kademlia DHT of unmodified js-libp2p
//! `@libp2p/kad-dht` servers (`interop/js/dht-nodes.mjs`: 4 nodes on 127.0.0.1 speaking
//! `/ipfs/kad/1.0.0` with kad-dht's default validators and selectors, which accept no custom
//! records). Two relay node processes (`macula-relay --kad-protocol /ipfs/kad/1.0.0 --bootstrap
//! <js node>`) join it and register in the default `PublishMode::Providers`: a provider record
//! on their shard key, stored by the js nodes. Rust clients built on the registry's public API,
//! bootstrapped from the js nodes only, discover both relays; a target reserves on the best one
//! (`reserve_on_best`), and a source that knows only the target's id reaches it
//! (`request_relay`) and moves data both ways, hash-checked.
//!
//! Needs `interop/js/node_modules` (`npm ci`); see `common::interop`. Adds rows to the interop
//! matrix (`interop/README.md`).
#![cfg(all(feature = "registry", feature = "cli"))]

/// The parts of `common` this test needs (`common/mod.rs` would load `swarm_task.rs` a second
/// time, next to `registry_net`'s copy).
mod common {
    #[allow(dead_code)]
    pub mod process;
    #[allow(dead_code)]
    pub mod transfer;
}
#[path = "common/interop.rs"]
mod interop;
#[path = "common/registry_net.rs"]
mod registry_net;

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use common::{
    process::RelayProcess,
    transfer::{self, TRANSFER_PROTOCOL},
};
use futures::StreamExt;
use interop::{rust_source_transfer, rust_target_transfer, size, Js, Peer, Row, READY_WAIT};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use macula_relay::registry::{
    self, shard, RegistryConfig, SessionError, DEFAULT_NAMESPACE, DEFAULT_SHARDS,
};
use registry_net::{peers, NetPeer, NodeEvent, PeerSpec};
use serde_json::Value;

const SUITE: &str = "registry_js";
/// The IPFS DHT's protocol, kad-dht's default.
const IPFS_KAD_NAME: &str = "/ipfs/kad/1.0.0";
const IPFS_KAD: StreamProtocol = StreamProtocol::new(IPFS_KAD_NAME);
/// js DHT servers.
const JS_NODES: usize = 4;
/// Bytes moved each way between the source and the target.
const BYTES: u64 = 1 << 20;
/// How long the test waits for the js DHT to store a provider record.
const STORE_WAIT: Duration = Duration::from_secs(60);
/// Attempts (500 ms apart) at discovering, reserving and reaching the target.
const TRIES: usize = 40;
const PAUSE: Duration = Duration::from_millis(500);

/// The js nodes that reported `event` for `key` naming `provider` (`provider_added`: stored it;
/// `providers_served`: sent it in a GET_PROVIDERS answer), from the lines read so far.
fn js_nodes_that(dht: &Peer, event: &str, key: &[u8], provider: PeerId) -> HashSet<String> {
    let key = interop::hex(key);
    let (id, bytes) = (provider.to_string(), interop::hex(&provider.to_bytes()));
    dht.seen
        .iter()
        .filter(|v| v["event"] == event && v["key"] == key.as_str())
        .filter(|v| {
            v["provider"] == id.as_str()
                || v["providers"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["id"] == bytes.as_str()))
        })
        .filter_map(|v| v["node"].as_str().map(str::to_owned))
        .collect()
}

/// The js DHT's lines read so far about provider records, for failure messages.
fn js_provider_lines(dht: &Peer) -> Vec<String> {
    dht.seen
        .iter()
        .filter(|v| v["event"] != "ready")
        .map(|v| v.to_string())
        .collect()
}

/// Reads the js DHT's lines until `want` of its nodes reported `event` for `key` naming
/// `provider`; panics, naming `what`, after [`STORE_WAIT`]. Returns how long it waited.
async fn wait_js(
    dht: &mut Peer,
    event: &str,
    key: &[u8],
    provider: PeerId,
    want: usize,
    what: &str,
) -> Duration {
    let start = Instant::now();
    let deadline = start + STORE_WAIT;
    loop {
        let held = js_nodes_that(dht, event, key, provider).len();
        if held >= want {
            return start.elapsed();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match dht.next_within(left).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!(
                "the js DHT exited while waiting for {what}; stderr: {}",
                dht.stderr_tail()
            ),
            Err(()) => panic!(
                "{what}: {held} of the {JS_NODES} js DHT nodes within {STORE_WAIT:?}, {want} \
                 wanted; what the js nodes reported: {:#?}",
                js_provider_lines(dht)
            ),
        }
    }
}

/// The js nodes of the `ready` line: peer id and address (with `/p2p/<id>`).
fn js_nodes(ready: &Value) -> Vec<(PeerId, Multiaddr)> {
    ready["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            let peer = n["peer_id"].as_str().expect("peer_id").parse().unwrap();
            let addr = n["addrs"][0].as_str().expect("an address").parse().unwrap();
            (peer, addr)
        })
        .collect()
}

/// A registry client speaking the js DHT's protocol, knowing only the js nodes.
async fn client(js: &[(PeerId, Multiaddr)]) -> NetPeer {
    let spec = PeerSpec {
        kad_protocol: IPFS_KAD,
        ..PeerSpec::client(RegistryConfig::default())
    };
    let peer = NetPeer::start(spec, Some(js[0].clone())).await;
    peer.add_peers(js[1..].to_vec()).await;
    peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs the js-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn relays_register_on_a_js_libp2p_dht_and_clients_reach_peers_through_them() {
    registry_net::init_tracing();
    let js = Js::get();
    let mut versions = js.versions();
    let kad_dht = format!("@libp2p/kad-dht {}", js.package_version("@libp2p/kad-dht"));
    versions.short = format!("{} + {kad_dht}", versions.short);
    versions.components.push(format!("js: {kad_dht}"));
    let start = Instant::now();

    // The js DHT.
    let mut row = Row::new(
        SUITE,
        "regjs-01",
        "js-libp2p",
        &versions,
        "relays join a js-libp2p kad-dht (/ipfs/kad/1.0.0, default validators) and register",
    );
    row.step("starting the js DHT");
    let args = ["--nodes", &JS_NODES.to_string(), "--lifetime", "600"].map(String::from);
    let mut dht = js.spawn("js-dht", "dht-nodes", &args);
    let ready = dht.expect("ready", READY_WAIT).await;
    assert_eq!(ready["protocol"], IPFS_KAD_NAME, "{ready}");
    assert_eq!(ready["mode"], "server", "{ready}");
    // kad-dht's defaults: only `/pk/` records validate (no custom namespace can be stored).
    assert_eq!(ready["validators"], serde_json::json!(["pk"]), "{ready}");
    assert_eq!(ready["selectors"], serde_json::json!(["pk"]), "{ready}");
    let js_peers = js_nodes(&ready);
    assert_eq!(js_peers.len(), JS_NODES);
    let dht_ready = start.elapsed();

    // Two relay nodes join it through two of its nodes and register.
    row.step("starting two relay nodes on the js DHT");
    let (boot0, boot1) = (js_peers[0].1.to_string(), js_peers[1].1.to_string());
    let relay_args = [
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--kad-protocol",
        IPFS_KAD_NAME,
        "--bootstrap",
        &boot0,
        "--bootstrap",
        &boot1,
        "--bandwidth",
        "0",
    ];
    let relay_start = Instant::now();
    let relays = [
        RelayProcess::start(&relay_args),
        RelayProcess::start(&relay_args),
    ];
    let relay_ids: HashSet<PeerId> = relays.iter().map(|r| r.peer_id).collect();
    for relay in &relays {
        relay.wait_log("relay registered", |l| {
            l.contains("relay registered").then_some(())
        });
    }
    row.step("waiting for the js nodes to store the relays' provider records");
    let mut shards = Vec::new();
    for relay in &relays {
        let s = shard::shard_of(&relay.peer_id, DEFAULT_SHARDS);
        let key = shard::shard_key(DEFAULT_NAMESPACE, s);
        let what = format!(
            "js nodes storing relay {}'s provider record on shard key {s}",
            relay.peer_id
        );
        wait_js(
            &mut dht,
            "provider_added",
            key.as_ref(),
            relay.peer_id,
            JS_NODES,
            &what,
        )
        .await;
        shards.push(s);
    }
    let registered = relay_start.elapsed();
    row.pass(format!(
        "both relay processes (--kad-protocol /ipfs/kad/1.0.0 --bootstrap <js node>) registered; \
         all {JS_NODES} js nodes stored their provider records on shard keys {shards:?} \
         (sha2-256 multihashes, which js reads as CIDv0) {:.1} s after the relays started",
        registered.as_secs_f64()
    ));

    // A client that knows only the js nodes discovers both relays.
    let mut row = Row::new(
        SUITE,
        "regjs-02",
        "js-libp2p",
        &versions,
        &format!(
            "on the js DHT: discover relays, reserve on the best, request_relay, {} each way",
            size(BYTES)
        ),
    );
    row.step("discovering the relays through the js DHT");
    let mut reader = client(&js_peers).await;
    let (found, stats, discovered) = reader.discover_until(TRIES, PAUSE, |r| r.len() >= 2).await;
    println!(
        "discovered {:?} after {discovered:?}: {stats:?}",
        peers(&found)
    );
    assert_eq!(
        peers(&found).into_iter().collect::<HashSet<_>>(),
        relay_ids,
        "discovery through the js DHT finds exactly the two relays"
    );
    // The js nodes answered the reader's GET_PROVIDERS for the shard keys with the relays.
    for (relay, s) in relays.iter().zip(&shards) {
        let key = shard::shard_key(DEFAULT_NAMESPACE, *s);
        let what = format!(
            "js nodes naming relay {} in a GET_PROVIDERS answer for shard key {s}",
            relay.peer_id
        );
        wait_js(
            &mut dht,
            "providers_served",
            key.as_ref(),
            relay.peer_id,
            1,
            &what,
        )
        .await;
    }

    // The target reserves on the best relay.
    row.step("the target reserving on the best relay");
    let mut target = client(&js_peers).await;
    let reserve_start = Instant::now();
    let reserved = target.reserve_on_best_relay(TRIES, PAUSE).await;
    let (reserved_on, circuit) = reserved
        .unwrap_or_else(|| panic!("the target found no relay to reserve on in {TRIES} tries"));
    assert!(
        relay_ids.contains(&reserved_on),
        "reserved on {reserved_on}"
    );
    let reserve_took = reserve_start.elapsed();
    println!("target reserved on {reserved_on}: {circuit} after {reserve_took:?}");
    let target_id = target.peer_id;
    // Its locator record (the peer reachable through relays) is stored by the js DHT too.
    let locator = shard::locator_key(DEFAULT_NAMESPACE, &target_id);
    wait_js(
        &mut dht,
        "provider_added",
        locator.as_ref(),
        target_id,
        1,
        "js nodes storing the target's locator provider record",
    )
    .await;

    let mut incoming = target.control.clone().accept(TRANSFER_PROTOCOL).unwrap();
    let (served_tx, mut served) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((_, stream)) = incoming.next().await {
            if served_tx.send(transfer::serve(stream).await).is_err() {
                break;
            }
        }
    });

    // The source knows only the js nodes and the target's id.
    row.step("the source reaching the target with request_relay");
    let mut source = client(&js_peers).await;
    let request_start = Instant::now();
    let mut opened = None;
    let mut last_error = None;
    for _ in 0..TRIES {
        source
            .with(move |s| s.behaviour_mut().registry.request_relay(target_id))
            .await;
        let outcome = source
            .expect("a relay session outcome", |e| match e {
                NodeEvent::Registry(registry::Event::RelaySessionOpened {
                    relay, target, ..
                }) => Some(Ok((relay, target))),
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
            Err(e @ SessionError::TargetNotFound(_)) => {
                last_error = Some(e);
                tokio::time::sleep(PAUSE).await
            }
            Err(e) => panic!("request_relay failed: {e}"),
        }
    }
    let (via, reached) = opened.unwrap_or_else(|| {
        panic!("request_relay did not reach the target in {TRIES} tries: {last_error:?}")
    });
    assert_eq!((via, reached), (reserved_on, target_id));
    let request_took = request_start.elapsed();

    row.step(format!("moving {} each way", size(BYTES)));
    let transfer_start = Instant::now();
    let stream = source
        .control
        .clone()
        .open_stream(target_id, TRANSFER_PROTOCOL)
        .await
        .expect("a stream to the target over the relayed connection");
    rust_source_transfer(transfer::dial(stream, BYTES, BYTES), BYTES).await;
    rust_target_transfer(&mut served, BYTES).await;
    let transfer_took = transfer_start.elapsed();
    // The source found the target through the js nodes' answers for its locator key, and no
    // js node refused a DHT request of our peers.
    wait_js(
        &mut dht,
        "providers_served",
        locator.as_ref(),
        target_id,
        1,
        "js nodes naming the target in a GET_PROVIDERS answer for its locator key",
    )
    .await;
    let refused: Vec<&Value> = dht
        .seen
        .iter()
        .filter(|v| v["event"] == "rpc_error")
        .collect();
    assert!(
        refused.is_empty(),
        "js nodes refused requests: {refused:#?}"
    );

    let timings = format!(
        "js DHT ready {:.1} s; relays registered and stored by js {:.1} s; discovery {:.1} s \
         ({} shards read, {} kad requests, {} record reads); reservation {:.1} s; request_relay {:.1} s; \
         transfer {:.1} s; total {:.1} s",
        dht_ready.as_secs_f64(),
        registered.as_secs_f64(),
        discovered.as_secs_f64(),
        stats.shards_read,
        stats.dht_requests,
        stats.record_reads,
        reserve_took.as_secs_f64(),
        request_took.as_secs_f64(),
        transfer_took.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    println!("{timings}");
    row.pass(format!(
        "clients bootstrapped from the js nodes only: discovery found exactly the 2 relays; the \
         target reserved on one and the js DHT stored its locator record; the source reached it \
         by id through that relay (the js nodes answered the GET_PROVIDERS for the shard keys \
         and the locator key; none refused a request); sha256 matches both ways ({timings})"
    ));

    // Everything stops, also on failure (each handle kills its process or task when dropped).
    drop((source, target, reader));
    drop(relays);
    drop(dht);
}
