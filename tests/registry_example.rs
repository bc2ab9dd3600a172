//! The example relay peer and the registry: a relay node process started without `--bootstrap`
//! is a DHT node others join through (and registers itself); one started with `--bootstrap`
//! joins through it and registers; one started with `--no-registry` stays out. A client that
//! knows only the first node discovers exactly the two registered relays.
#![cfg(all(feature = "registry", feature = "admin"))]

#[allow(dead_code)]
#[path = "common/process.rs"]
mod process;
#[path = "common/registry_net.rs"]
mod registry_net;

use std::{collections::HashSet, time::Duration};

use macula_relay::{node::KAD_PROTOCOL, registry::RegistryConfig};
use process::RelayProcess;
use registry_net::{peers, NetPeer, PeerSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_nodes_join_through_a_bootstrap_node_and_register() {
    registry_net::init_tracing();
    let listen = ["--listen", "/ip4/127.0.0.1/tcp/0"];
    let boot = RelayProcess::start(&listen);
    let boot_addr = boot.addr.to_string();
    let joined = RelayProcess::start(&[listen[0], listen[1], "--bootstrap", &boot_addr]);
    let outside = RelayProcess::start(&[listen[0], listen[1], "--no-registry"]);

    let client = PeerSpec {
        kad_protocol: KAD_PROTOCOL,
        ..PeerSpec::client(RegistryConfig::default())
    };
    let mut client = NetPeer::start(client, Some((boot.peer_id, boot.addr.clone()))).await;
    let (found, stats, took) = client
        .discover_until(40, Duration::from_millis(500), |r| r.len() >= 2)
        .await;
    println!("discovered the example relays after {took:?}: {stats:?}");
    let found: HashSet<_> = peers(&found).into_iter().collect();
    assert_eq!(found, HashSet::from([boot.peer_id, joined.peer_id]));
    assert!(!found.contains(&outside.peer_id));
}
