//! The example relay peer, started as its own process with default limits, serves an unmodified
//! client pair end to end, returns freed heap memory (its `heap-scavenger` thread), and keeps its
//! peer id across restarts with the same key file.
#![cfg(feature = "admin")]

mod common;

use common::{process::RelayProcess, transfer, TestClient};
use libp2p::core::multiaddr::Protocol;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_relay_serves_a_client_pair_and_keeps_its_peer_id() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("relay.key");
    let key_arg = key.to_str().unwrap();
    let args = ["--listen", "/ip4/127.0.0.1/tcp/0", "--key-file", key_arg];

    let relay = RelayProcess::start(&args);
    assert!(key.exists(), "the key file is created on first run");
    // The binary tunes glibc's heap for relaying at start (`heap::tune_for_relay`).
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        let threads = relay.thread_names();
        assert!(
            threads.iter().any(|name| name == "heap-scavenger"),
            "no heap-scavenger thread in the relay process: {threads:?}"
        );
    }
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    let limit = target.reserve_on(relay.peer_id, relay.addr.clone()).await;
    // Reference defaults: 30-minute sessions, no data cap.
    assert_eq!(
        limit,
        Some((Some(std::time::Duration::from_secs(1800)), None))
    );
    let _served = target.serve_transfers();
    let circuit = relay
        .addr
        .clone()
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(target.peer_id));
    source.dial_circuit(circuit, target.peer_id).await.unwrap();
    // 512 KiB each way at the default 1 MB/s per direction: about half a second.
    const N: u64 = 512 * 1024;
    let outcome = source.transfer(target.peer_id, N).await.unwrap();
    assert!(outcome.peer_got_what_we_sent);
    assert_eq!(
        outcome.received_hash,
        transfer::expected_hash(transfer::DOWN_SEED, N)
    );
    let first_id = relay.peer_id;
    drop(relay);

    let again = RelayProcess::start(&args);
    assert_eq!(again.peer_id, first_id, "same key file, same peer id");
}
