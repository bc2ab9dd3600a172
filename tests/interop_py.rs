//! Interop with unmodified py-libp2p peers (`interop/py`, py-libp2p's `libp2p.relay.circuit_v2`
//! client over TCP + Noise + Yamux): they reserve on our relay, which runs as a real process (the
//! example relay peer), connect through it and move data both ways, hash-checked; and mixed pairs
//! with js-libp2p and stock rust-libp2p peers.
//!
//! Needs `interop/py/.venv` (`interop/py/setup.sh`), and `interop/js/node_modules` for the js
//! pairs; see `common::interop`. Every scenario adds a row to the interop matrix.
#![cfg(feature = "admin")]

mod common;
#[path = "common/interop.rs"]
mod interop;

use common::{process::RelayProcess, TestClient};
use interop::{
    assert_voucher, js_source_transfer, js_target, js_target_transfer, py_source_transfer,
    py_target, py_target_transfer, rust_source_transfer, rust_target_transfer, rust_versions, size,
    Js, Py, Row,
};
use libp2p::Multiaddr;

const SUITE: &str = "interop_py";
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
/// py-libp2p moves about 5 MiB/s each way here (debug relay, pure-Python yamux and noise).
const PY_BIG: u64 = 16 * MIB;
const MIXED_BIG: u64 = 4 * MIB;

fn relay() -> RelayProcess {
    RelayProcess::start(&["--listen", "/ip4/127.0.0.1/tcp/0", "--bandwidth", "0"])
}

/// Core scenario: py target reserves, py source dials through, data both ways; and a dial to a
/// peer without a reservation fails with NO_RESERVATION.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs the js-libp2p / py-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn py_target_and_py_source_through_the_relay_process() {
    let py = Py::get();
    let versions = py.versions();
    let relay = relay();
    let relay_addr = relay.addr.to_string();

    let mut row = Row::new(
        SUITE,
        "py-01",
        "py-libp2p",
        &versions,
        "py target reserves on the relay",
    );
    row.step("py target reserving");
    let (mut target, reserved, circuit) = py_target(&py, "py-target", &relay_addr).await;
    assert_eq!(reserved["status"], 100, "RESERVE reply: {reserved}");
    let reservation = &reserved["reservation"];
    let expire_in = reservation["expire_in_s"].as_i64().expect("expire");
    assert!(
        (3590..=3600).contains(&expire_in),
        "reservation: {reservation}"
    );
    // The voucher opened and its signature verified, by py-libp2p (`libp2p.peer.envelope`,
    // domain libp2p-relay-rsvp) in the py target and by rust-libp2p here: signed by the relay's
    // key, naming the relay and the py target, expiring with the reservation.
    row.step("checking the reservation voucher");
    let target_id = circuit.rsplit('/').next().unwrap().parse().unwrap();
    assert_voucher(
        "voucher in py's RESERVE reply",
        &reserved["voucher_check"],
        reservation["voucher_hex"]
            .as_str()
            .unwrap_or_else(|| panic!("a voucher: {reservation}")),
        relay.peer_id,
        target_id,
        reservation["expire"].as_u64().expect("expire"),
    );
    assert_eq!(
        reserved["limit"],
        serde_json::json!({"duration": 1800, "data": null}),
        "the default Limit"
    );
    row.pass(format!(
        "RESERVE OK, expire in {expire_in} s; the voucher opened and its signature verified by py-libp2p (libp2p.peer.envelope, domain libp2p-relay-rsvp, payload type 0x0302) and by rust-libp2p (SignedEnvelope): signed by the relay's key, naming the relay and the py peer, expiring with the reservation; Limit {{duration 1800, no data}} (py-libp2p ignores the Limit)"
    ));

    for (id, n) in [("py-02", KIB), ("py-03", PY_BIG)] {
        let mut row = Row::new(
            SUITE,
            id,
            "py-libp2p",
            &versions,
            &format!("py source → relay → py target, {} each way", size(n)),
        );
        row.step("py source dialing and transferring");
        py_source_transfer(&py, &circuit, n, n).await;
        py_target_transfer(&mut target, n, n).await;
        row.pass("sha256 matches both ways on both sides");
    }

    let row = Row::new(
        SUITE,
        "py-04",
        "py-libp2p",
        &versions,
        "target has no reservation: py dial fails",
    );
    let nobody = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let mut source = py.source(
        "py-source-nobody",
        &format!("{relay_addr}/p2p-circuit/p2p/{nobody}"),
        KIB,
        KIB,
    );
    let (status, line) = source.outcome().await;
    assert_eq!(line["event"], "error", "{line}");
    assert_eq!(status.code(), Some(1), "exit code 1 = error (2 = timeout)");
    let message = line["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("status 204"),
        "NO_RESERVATION is 204: {line}"
    );
    row.pass("py dial fails with status 204 (NO_RESERVATION); py-libp2p reports the number only");
}

/// Mixed pairs with a py target: js and rust sources dial it through the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs the js-libp2p / py-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn py_target_with_js_and_rust_sources() {
    let py = Py::get();
    let js = Js::get();
    let relay = relay();
    let relay_addr = relay.addr.to_string();
    let (mut target, reserved, circuit) = py_target(&py, "py-target", &relay_addr).await;
    assert_eq!(reserved["status"], 100, "RESERVE reply: {reserved}");

    let versions = py.versions().and(&js.versions());
    for (id, n) in [("pymix-01", KIB), ("pymix-02", MIXED_BIG)] {
        let mut row = Row::new(
            SUITE,
            id,
            "py-libp2p × js-libp2p",
            &versions,
            &format!("js source → relay → py target, {} each way", size(n)),
        );
        row.step("js source dialing and transferring");
        js_source_transfer(&js, &circuit, n, n).await;
        py_target_transfer(&mut target, n, n).await;
        row.pass("sha256 matches both ways on both sides");
    }

    let versions = py.versions().and(&rust_versions());
    let target_id = circuit.rsplit('/').next().unwrap().parse().unwrap();
    let mut source = TestClient::start().await;
    let addr: Multiaddr = circuit.parse().unwrap();
    source
        .dial_circuit(addr, target_id)
        .await
        .expect("rust source dials the py target");
    for (id, n) in [("pymix-03", KIB), ("pymix-04", MIXED_BIG)] {
        let mut row = Row::new(
            SUITE,
            id,
            "py-libp2p × rust-libp2p",
            &versions,
            &format!("rust source → relay → py target, {} each way", size(n)),
        );
        row.step("rust source transferring");
        rust_source_transfer(source.transfer(target_id, n), n).await;
        py_target_transfer(&mut target, n, n).await;
        row.pass("sha256 matches both ways on both sides");
    }
}

/// Mixed pairs with a py source: it dials a js target and a rust target through the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs the js-libp2p / py-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn py_source_with_js_and_rust_targets() {
    let py = Py::get();
    let js = Js::get();
    let relay = relay();
    let relay_addr = relay.addr.to_string();

    let versions = py.versions().and(&js.versions());
    let (mut js_target, _, circuit) = js_target(&js, "js-target", &relay_addr, &[]).await;
    for (id, n) in [("pymix-05", KIB), ("pymix-06", MIXED_BIG)] {
        let mut row = Row::new(
            SUITE,
            id,
            "py-libp2p × js-libp2p",
            &versions,
            &format!("py source → relay → js target, {} each way", size(n)),
        );
        row.step("py source dialing and transferring");
        py_source_transfer(&py, &circuit, n, n).await;
        js_target_transfer(&mut js_target, n, n).await;
        row.pass("sha256 matches both ways on both sides");
    }

    let versions = py.versions().and(&rust_versions());
    let mut target = TestClient::start().await;
    target.reserve_on(relay.peer_id, relay.addr.clone()).await;
    let mut served = target.serve_transfers();
    let circuit = format!("{relay_addr}/p2p-circuit/p2p/{}", target.peer_id);
    for (id, n) in [("pymix-07", KIB), ("pymix-08", MIXED_BIG)] {
        let mut row = Row::new(
            SUITE,
            id,
            "py-libp2p × rust-libp2p",
            &versions,
            &format!("py source → relay → rust target, {} each way", size(n)),
        );
        row.step("py source dialing and transferring");
        py_source_transfer(&py, &circuit, n, n).await;
        rust_target_transfer(&mut served, n).await;
        row.pass("sha256 matches both ways on both sides");
    }
}
