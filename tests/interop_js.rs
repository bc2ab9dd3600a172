//! Interop with unmodified js-libp2p peers (`interop/js`, js-libp2p 3.x with its default TCP,
//! Noise and Yamux settings): they reserve on our relay, which runs as a real process (the
//! example relay peer), connect through it, move data both ways hash-checked, report the `Limit`
//! it sends, and get the spec status as an error when the relay refuses.
//!
//! Needs `interop/js/node_modules` (`npm ci`); see `common::interop`. Every scenario adds a row
//! to the interop matrix (`interop/README.md`).
#![cfg(feature = "admin")]

mod admin_support;
mod common;
#[path = "common/interop.rs"]
mod interop;

use std::time::Duration;

use common::{process::RelayProcess, TestClient};
use interop::{
    assert_voucher, js_source_transfer, js_target, js_target_transfer, peer_id_of,
    retry_on_js_monitor_abort, rust_source_transfer, rust_target_transfer, rust_versions, size, Js,
    Row, BULK, LINE_WAIT, READY_WAIT,
};
use macula_relay::node::yamux_config;
use serde_json::Value;

const SUITE: &str = "interop_js";
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

fn start_relay(extra: &[&str]) -> RelayProcess {
    let mut args = vec!["--listen", "/ip4/127.0.0.1/tcp/0"];
    args.extend_from_slice(extra);
    RelayProcess::start(&args)
}

/// A js error line's spec status (`code`), after checking it is a relay refusal, not a timeout.
fn refusal(status: std::process::ExitStatus, line: &Value) -> String {
    assert_eq!(line["event"], "error", "expected an error, got {line}");
    assert_eq!(status.code(), Some(2), "exit code 2 = error (3 = timeout)");
    line["code"].as_str().unwrap_or_default().to_owned()
}

/// Core scenario: js target reserves, js source dials through, 1 KiB and 64 MiB each way with
/// js-libp2p's default muxer settings (the relay's bandwidth limit off so 64 MiB is quick).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs the js-libp2p / py-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn js_target_and_js_source_through_the_relay_process() {
    let js = Js::get();
    let versions = js.versions();
    let relay = start_relay(&["--bandwidth", "0"]);
    let relay_addr = relay.addr.to_string();

    let mut row = Row::new(
        SUITE,
        "js-01",
        "js-libp2p",
        &versions,
        "js target reserves on the relay",
    );
    row.step("starting the js target");
    let (mut target, ready, circuit) =
        js_target(&js, "js-target", &relay_addr, &["--probe-reserve"]).await;
    let probe = &ready["reserve_probe"];
    assert_eq!(probe["status"], "OK", "raw RESERVE reply: {probe}");
    let expire_in = ready["reservation"]["expire_in_s"].as_i64().unwrap();
    assert!(
        (3590..=3600).contains(&expire_in),
        "reservation TTL {expire_in} s, relay default 3600"
    );
    let voucher = &ready["reservation"]["voucher"];
    assert_eq!(
        voucher["payload_type"], "0302",
        "signed reservation voucher: {voucher}"
    );
    // The voucher opened and its signature verified, by js-libp2p (`RecordEnvelope`, domain
    // libp2p-relay-rsvp) in the js target and by rust-libp2p here: signed by the relay's key,
    // naming the relay and the js target, expiring with the reservation. Both the voucher of
    // the raw RESERVE reply (the bytes on the wire) and the one js-libp2p's relay client kept.
    row.step("checking the reservation vouchers");
    let target_id = peer_id_of(&ready);
    let wire_check = &ready["voucher_check"];
    assert_voucher(
        "voucher in the raw RESERVE reply",
        wire_check,
        wire_check["raw_hex"].as_str().expect("voucher bytes"),
        relay.peer_id,
        target_id,
        probe["reservation"]["expire"].as_u64().expect("expire"),
    );
    let client_check = &ready["client_voucher_check"];
    assert_voucher(
        "voucher js-libp2p's relay client kept",
        client_check,
        client_check["raw_hex"].as_str().expect("voucher bytes"),
        relay.peer_id,
        target_id,
        ready["reservation"]["expire"].as_u64().expect("expire"),
    );
    assert_eq!(
        probe["limit"],
        serde_json::json!({"duration": 1800, "data": null}),
        "the default Limit: 30-minute sessions, no data cap"
    );
    row.pass(format!(
        "RESERVE OK, expire in {expire_in} s; the voucher opened and its signature verified by js-libp2p (RecordEnvelope.openAndCertify, domain libp2p-relay-rsvp, payload type 0x0302) and by rust-libp2p (SignedEnvelope): signed by the relay's key, naming the relay and the js peer, expiring with the reservation; Limit {{duration 1800, no data}}; circuit address announced"
    ));

    let mut row = Row::new(
        SUITE,
        "js-02",
        "js-libp2p",
        &versions,
        "js source → relay → js target, 1 KiB each way",
    );
    row.step("js source dialing and transferring");
    let result = js_source_transfer(&js, &circuit, KIB, KIB).await;
    js_target_transfer(&mut target, KIB, KIB).await;
    check_default_limits(&result);
    row.pass(
        "sha256 matches both ways on both sides; js connection.limits {seconds 1800, no bytes}",
    );
    drop(target);
    drop(relay);

    let n = 64 * MIB;
    let mut row = Row::new(
        SUITE,
        "js-03",
        "js-libp2p",
        &versions,
        &format!("js source → relay → js target, {} each way", size(n)),
    );
    row.step("js source dialing and transferring");
    retry_on_js_monitor_abort(&js, &mut row, || {
        let js = js.clone();
        async move {
            let _bulk = BULK.lock().await;
            let relay = start_relay(&["--bandwidth", "0"]);
            let (mut target, _, circuit) =
                js_target(&js, "js-target", &relay.addr.to_string(), &[]).await;
            let result = js_source_transfer(&js, &circuit, n, n).await;
            js_target_transfer(&mut target, n, n).await;
            check_default_limits(&result);
        }
    })
    .await;
    row.pass(
        "sha256 matches both ways on both sides; js connection.limits {seconds 1800, no bytes}",
    );
}

/// The relay's default `Limit` (30-minute sessions, no data cap) as js reports it.
fn check_default_limits(result: &Value) {
    let limits = &result["limits"];
    assert!(limits["bytes"].is_null(), "no data limit: {limits}");
    let seconds = limits["seconds"].as_f64().expect("a time limit");
    assert!((1790.0..=1800.0).contains(&seconds), "js limits {limits}");
}

const DEFAULT_YAMUX: &str = "rust peer with rust-libp2p's default yamux";
const JS_SAFE_YAMUX: &str = "rust peer with macula_relay::node::yamux_config()";
const JS_SAFE_NOTE: &str = "sha256 matches both ways on both sides. The rust peer needs macula_relay::node::yamux_config() for bulk data with js: with rust-yamux's defaults, js-yamux's frames over 1 MiB make the rust peer close the end-to-end connection (FrameTooLarge), an issue between the two peers' muxers, not the relay's";

/// Mixed pair: stock rust-libp2p relay clients reserve, a js source dials them through the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs the js-libp2p / py-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn rust_target_and_js_source() {
    let js = Js::get();
    let versions = js.versions().and(&rust_versions());
    let relay = start_relay(&["--bandwidth", "0"]);

    let mut row = Row::new(
        SUITE,
        "mix-01",
        "js-libp2p × rust-libp2p",
        &versions,
        &format!("js source → relay → rust target ({DEFAULT_YAMUX}), 1 KiB each way"),
    );
    row.step("rust target reserving");
    let mut target = TestClient::start().await;
    target.reserve_on(relay.peer_id, relay.addr.clone()).await;
    let mut served = target.serve_transfers();
    let circuit = format!("{}/p2p-circuit/p2p/{}", relay.addr, target.peer_id);
    row.step("js source dialing and transferring");
    js_source_transfer(&js, &circuit, KIB, KIB).await;
    rust_target_transfer(&mut served, KIB).await;
    row.pass("sha256 matches both ways on both sides");
    drop(relay);

    let n = 64 * MIB;
    let mut row = Row::new(
        SUITE,
        "mix-02",
        "js-libp2p × rust-libp2p",
        &versions,
        &format!(
            "js source → relay → rust target ({JS_SAFE_YAMUX}), {} each way",
            size(n)
        ),
    );
    row.step("js source dialing and transferring");
    retry_on_js_monitor_abort(&js, &mut row, || {
        let js = js.clone();
        async move {
            let _bulk = BULK.lock().await;
            let relay = start_relay(&["--bandwidth", "0"]);
            let mut target = TestClient::start_with_yamux(yamux_config).await;
            target.reserve_on(relay.peer_id, relay.addr.clone()).await;
            let mut served = target.serve_transfers();
            let circuit = format!("{}/p2p-circuit/p2p/{}", relay.addr, target.peer_id);
            js_source_transfer(&js, &circuit, n, n).await;
            rust_target_transfer(&mut served, n).await;
        }
    })
    .await;
    row.pass(JS_SAFE_NOTE);
}

/// Mixed pair: a js target reserves, stock rust-libp2p relay clients dial it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs the js-libp2p / py-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn js_target_and_rust_source() {
    let js = Js::get();
    let versions = js.versions().and(&rust_versions());

    let mut row = Row::new(
        SUITE,
        "mix-03",
        "js-libp2p × rust-libp2p",
        &versions,
        &format!("rust source ({DEFAULT_YAMUX}) → relay → js target, 1 KiB each way"),
    );
    row.step("js target reserving");
    let relay = start_relay(&["--bandwidth", "0"]);
    let (mut target, ready, circuit) =
        js_target(&js, "js-target", &relay.addr.to_string(), &[]).await;
    let target_id = peer_id_of(&ready);
    row.step("rust source dialing");
    let mut source = TestClient::start().await;
    source
        .dial_circuit(circuit.parse().unwrap(), target_id)
        .await
        .expect("rust source dials the js target");
    row.step("rust source transferring");
    rust_source_transfer(source.transfer(target_id, KIB), KIB).await;
    js_target_transfer(&mut target, KIB, KIB).await;
    row.pass("sha256 matches both ways on both sides");
    drop(target);
    drop(relay);

    let n = 64 * MIB;
    let mut row = Row::new(
        SUITE,
        "mix-04",
        "js-libp2p × rust-libp2p",
        &versions,
        &format!(
            "rust source ({JS_SAFE_YAMUX}) → relay → js target, {} each way",
            size(n)
        ),
    );
    row.step("rust source dialing and transferring");
    retry_on_js_monitor_abort(&js, &mut row, || {
        let js = js.clone();
        async move {
            let _bulk = BULK.lock().await;
            let relay = start_relay(&["--bandwidth", "0"]);
            let (mut target, ready, circuit) =
                js_target(&js, "js-target", &relay.addr.to_string(), &[]).await;
            let target_id = peer_id_of(&ready);
            let mut source = TestClient::start_with_yamux(yamux_config).await;
            source
                .dial_circuit(circuit.parse().unwrap(), target_id)
                .await
                .expect("rust source dials the js target");
            rust_source_transfer(source.transfer(target_id, n), n).await;
            js_target_transfer(&mut target, n, n).await;
        }
    })
    .await;
    row.pass(JS_SAFE_NOTE);
}

/// How far below the data cap the circuit bytes the js target received may end when the relay
/// cuts the circuit: the relay's copy buffer (16 KiB by default), in case the last chunk it read
/// before the cut is still on its way when the circuit is torn down. Observed here: none (the
/// js target gets exactly the cap). No allowance above the cap: the target counts exactly the
/// bytes the relay counts (the circuit, in one direction).
const CAP_SHORTFALL: u64 = 16 * KIB;

/// The `Limit` the relay sends is what js reports on the relayed connection, and the relay (not
/// js, which never enforces it) cuts a circuit at the data cap: the js target got all the payload
/// the cap allowed and not a byte more, and the relay reports the session closed for its data
/// cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs the js-libp2p / py-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn js_reports_the_limit_the_relay_sends() {
    let js = Js::get();
    let versions = js.versions();
    const CAP: u64 = MIB;
    let mut relay = CapRelay::start(CAP).await;
    let relay_addr = relay.addr();

    let mut row = Row::new(
        SUITE,
        "js-04",
        "js-libp2p",
        &versions,
        "Limit: relay --session-timeout 600 --max-session-bytes 1 MiB; js reports it",
    );
    row.step("js target reserving");
    let (mut target, ready, circuit) =
        js_target(&js, "js-target", &relay_addr, &["--probe-reserve"]).await;
    let probe = &ready["reserve_probe"];
    assert_eq!(
        probe["limit"],
        serde_json::json!({"duration": 600, "data": CAP}),
        "RESERVE reply: {probe}"
    );
    row.step("js source dialing");
    let result = js_source_transfer(&js, &circuit, KIB, KIB).await;
    // js: `seconds` counts down from `duration`, `bytes` is what remains of `data` (one counter
    // for both directions, handshakes included).
    let at_open = &result["limits_at_open"];
    let seconds = at_open["seconds"].as_f64().expect("seconds");
    let bytes = at_open["bytes"].as_u64().expect("bytes");
    assert!(
        (590.0..=600.0).contains(&seconds),
        "source limits at open: {at_open}"
    );
    assert!(
        (CAP - 64 * KIB..=CAP).contains(&bytes),
        "source limits at open: {at_open}"
    );
    let relayed = target.expect("relayed_connection", READY_WAIT).await;
    let t_limits = &relayed["limits"];
    let t_seconds = t_limits["seconds"].as_f64().expect("seconds");
    let t_bytes = t_limits["bytes"].as_u64().expect("bytes");
    assert!(
        (590.0..=600.0).contains(&t_seconds),
        "target limits: {t_limits}"
    );
    assert!(
        (CAP - 64 * KIB..=CAP).contains(&t_bytes),
        "target limits: {t_limits}"
    );
    js_target_transfer(&mut target, KIB, KIB).await;
    eprintln!(
        "js limits: source {{seconds {seconds}, bytes {bytes}}}, target {{seconds {t_seconds}, bytes {t_bytes}}}"
    );
    row.pass(
        "RESERVE, CONNECT and STOP carry Limit {duration 600, data 1048576}; the js source and the js target both report connection.limits = {seconds: 600 (counting down), bytes: 1048576 minus what the handshakes used (< 64 KiB)}. js counts bytes for both directions together, the spec and our relay per direction",
    );

    let mut row = Row::new(
        SUITE,
        "js-05",
        "js-libp2p",
        &versions,
        "data cap enforced: js sends 2 MiB over a 1 MiB cap",
    );
    row.step("reading the relay's counters");
    let before = relay.counters().await;
    row.step("js source sending past the cap");
    let mut source = js.source("js-source-over-cap", &circuit, 2 * MIB, 0);
    let (status, line) = source.outcome().await;
    let code = refusal(status, &line);
    assert_ne!(code, "TIMEOUT", "{line}");
    eprintln!("js source over the cap: {code}");

    // The js target reports the transfer's failure (with the payload it got before) and, when
    // the relayed connection closes, the circuit bytes the relay delivered to it (counted on the
    // STOP stream, past the relay's StopMessage). The payload is the lesser measure: js drops
    // what it had buffered but not yet handed to the application when the connection goes away.
    row.step("js target reporting what it received before the cut");
    let mut cut = None::<Value>;
    let mut closed = Vec::<Value>::new();
    let closed = loop {
        if let Some(cut) = &cut {
            if let Some(c) = closed
                .iter()
                .find(|c| c["connection_id"] == cut["connection_id"])
            {
                break c.clone();
            }
        }
        let line = target
            .next(LINE_WAIT)
            .await
            .expect("the js target reports the transfer and the connection's end");
        match line["event"].as_str() {
            Some("transfer_error") => cut = Some(line),
            Some("transfer") => panic!(
                "the js target received the whole transfer: the relay did not cut the circuit at the {CAP}-byte cap: {line}"
            ),
            Some("relayed_connection_closed") => closed.push(line),
            _ => {}
        }
    };
    let cut = cut.unwrap();
    let payload = cut["up_received_bytes"]
        .as_u64()
        .unwrap_or_else(|| panic!("payload received before the cut: {cut}"));
    let delivered = closed["circuit_bytes_received"]
        .as_u64()
        .unwrap_or_else(|| panic!("circuit bytes the js target received: {closed}"));
    eprintln!(
        "js-05: data cap {CAP} bytes; the js target received {delivered} circuit bytes ({} under the cap) and its application {payload} payload bytes",
        CAP as i64 - delivered as i64
    );
    assert!(
        delivered <= CAP,
        "the js target received {delivered} circuit bytes, more than the {CAP}-byte cap: {closed}"
    );
    assert!(
        delivered >= CAP - CAP_SHORTFALL,
        "the js target received {delivered} circuit bytes, more than {CAP_SHORTFALL} short of the {CAP}-byte cap: the circuit failed early, not at the cap: {closed}"
    );
    assert!(
        payload <= delivered,
        "payload {payload} > circuit bytes {delivered}"
    );

    row.step("waiting for the relay to report the data-cap close");
    let after = relay.wait_data_cap_closes(before.data_cap_closes + 1).await;
    assert_eq!(
        after.data_cap_closes,
        before.data_cap_closes + 1,
        "one session closed for its data cap: before {before:?}, after {after:?}"
    );
    assert_eq!(
        after.source_to_target - before.source_to_target,
        CAP,
        "the relay relayed exactly the cap from the js source: before {before:?}, after {after:?}"
    );
    row.pass(format!(
        "the relay cuts the circuit at the cap (js never enforces a Limit itself): it relayed exactly {CAP} bytes source → target and reports the session closed for its data cap ({how}); the js target received {delivered} circuit bytes ({} under the cap; its application {payload} payload bytes, js dropping what it had buffered when the connection closed); the js source fails with exit 2, no hang",
        CAP - delivered,
        how = CapRelay::HOW,
    ));
}

/// What the relay says about its sessions, for the data-cap scenario.
#[derive(Debug, Clone, Copy)]
struct CapCounters {
    /// Sessions closed because they reached their data cap.
    data_cap_closes: u64,
    /// Bytes relayed from sources to targets, all sessions.
    source_to_target: u64,
}

/// The relay of the `Limit` scenarios (`--bandwidth 0 --session-timeout 600
/// --max-session-bytes <cap>`): the relay process, read through its admin API.
struct CapRelay(admin_support::AdminNode);

impl CapRelay {
    const HOW: &str = "the relay process's GET /metrics: macula_relay_sessions_closed_total{reason=\"data_cap_reached\"} and macula_relay_relayed_bytes_total{direction=\"source_to_target\"}";

    async fn start(cap: u64) -> Self {
        let cap = cap.to_string();
        CapRelay(admin_support::AdminNode::start(&[
            "--bandwidth",
            "0",
            "--session-timeout",
            "600",
            "--max-session-bytes",
            &cap,
        ]))
    }

    fn addr(&self) -> String {
        self.0.addr.to_string()
    }

    async fn counters(&mut self) -> CapCounters {
        let text = self.0.client(None).metrics().await.expect("GET /metrics");
        let scrape = admin_support::Scrape::parse(&text);
        let value =
            |name, labels: &[(&str, &str)]| scrape.value(name, labels).unwrap_or(0.0) as u64;
        CapCounters {
            data_cap_closes: value(
                "macula_relay_sessions_closed_total",
                &[("reason", "data_cap_reached")],
            ),
            source_to_target: value(
                "macula_relay_relayed_bytes_total",
                &[("direction", "source_to_target")],
            ),
        }
    }
}

impl CapRelay {
    /// Polls [`counters`](Self::counters) until `closes` sessions closed for their data cap, for
    /// at most 30 s.
    async fn wait_data_cap_closes(&mut self, closes: u64) -> CapCounters {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let counters = self.counters().await;
            if counters.data_cap_closes >= closes {
                return counters;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the relay did not report a session closed for its data cap within 30 s ({}): {counters:?}",
                Self::HOW
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A full relay (one session allowed, one live) answers js's CONNECT with RESOURCE_LIMIT_EXCEEDED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs the js-libp2p / py-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn js_gets_resource_limit_exceeded_from_a_full_relay() {
    let js = Js::get();
    let versions = js.versions();
    let relay = start_relay(&["--max-sessions", "1"]);
    let relay_addr = relay.addr.to_string();
    let mut row = Row::new(
        SUITE,
        "js-06",
        "js-libp2p",
        &versions,
        "relay full (--max-sessions 1, one live session): js dial fails",
    );
    row.step("js target reserving");
    let (_target, ready, circuit) = js_target(&js, "js-target", &relay_addr, &[]).await;
    row.step("a rust source holding the one session");
    let mut holder = TestClient::start().await;
    holder
        .dial_circuit(circuit.parse().unwrap(), peer_id_of(&ready))
        .await
        .expect("the first session is admitted");
    row.step("js source dialing the full relay");
    let mut source = js.source("js-source", &circuit, KIB, KIB);
    let (status, line) = source.outcome().await;
    let code = refusal(status, &line);
    assert_eq!(code, "RESOURCE_LIMIT_EXCEEDED", "{line}");
    row.pass("js dial fails with status RESOURCE_LIMIT_EXCEEDED");
}

/// A full reservation table answers js's RESERVE with RESERVATION_REFUSED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs the js-libp2p / py-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn js_gets_reservation_refused_from_a_full_reservation_table() {
    let js = Js::get();
    let versions = js.versions();
    let relay = start_relay(&["--max-reservations", "1"]);
    let relay_addr = relay.addr.to_string();
    let mut row = Row::new(
        SUITE,
        "js-07",
        "js-libp2p",
        &versions,
        "reservations full (--max-reservations 1): second js target refused",
    );
    row.step("first js target reserving");
    let (_first, _, _) = js_target(&js, "js-target-1", &relay_addr, &[]).await;
    row.step("second js target reserving");
    let mut second = js.target("js-target-2", &relay_addr, &[]);
    let line = second
        .event("ready", READY_WAIT)
        .await
        .expect_err("the second reservation is refused");
    let status = second
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("js target exits");
    let code = refusal(status, &line);
    assert_eq!(code, "RESERVATION_REFUSED", "{line}");
    row.pass("js reservation fails with status RESERVATION_REFUSED");
}

/// A disabled relay refuses new reservations (RESERVATION_REFUSED) and new circuits
/// (RESOURCE_LIMIT_EXCEEDED) to js. The relay process is disabled through its admin API
/// (`--admin 127.0.0.1:0`, `POST /disable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs the js-libp2p / py-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn js_gets_refusals_from_a_disabled_relay() {
    let js = Js::get();
    let node = admin_support::AdminNode::start(&[]);
    let admin = node.client(None);
    let disable = async move {
        let stats = admin
            .disable(&macula_relay::admin::DisableRequest { drain_secs: None })
            .await
            .expect("POST /disable");
        assert!(!stats.enabled);
    };
    disabled_relay_scenario(
        &js,
        &node.addr.to_string(),
        "POST /disable on its admin API",
        disable,
    )
    .await;
}

/// A js target reserves on the relay at `relay_addr`, `disable` disables the relay, then a second
/// js target's reservation and a js source's dial to the first target are refused.
async fn disabled_relay_scenario(
    js: &Js,
    relay_addr: &str,
    how: &str,
    disable: impl std::future::Future<Output = ()>,
) {
    let versions = js.versions();
    let mut reserve_row = Row::new(
        SUITE,
        "js-08",
        "js-libp2p",
        &versions,
        &format!("relay disabled ({how}): js reservation refused"),
    );
    let mut dial_row = Row::new(
        SUITE,
        "js-09",
        "js-libp2p",
        &versions,
        &format!("relay disabled ({how}): js dial to a target reserved before refused"),
    );
    dial_row.step("js target reserving while enabled");
    let (_target, _, circuit) = js_target(js, "js-target", relay_addr, &[]).await;
    dial_row.step("disabling the relay");
    disable.await;

    reserve_row.step("js target reserving on the disabled relay");
    let mut late = js.target("js-target-late", relay_addr, &[]);
    let line = late
        .event("ready", READY_WAIT)
        .await
        .expect_err("reservation refused");
    let status = late
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("js target exits");
    assert_eq!(refusal(status, &line), "RESERVATION_REFUSED", "{line}");
    reserve_row.pass("js reservation fails with status RESERVATION_REFUSED");

    dial_row.step("js source dialing through the disabled relay");
    let mut source = js.source("js-source", &circuit, KIB, KIB);
    let (status, line) = source.outcome().await;
    assert_eq!(refusal(status, &line), "RESOURCE_LIMIT_EXCEEDED", "{line}");
    dial_row.pass("js dial fails with status RESOURCE_LIMIT_EXCEEDED");
}

/// Dialing a peer that holds no reservation gets NO_RESERVATION.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs the js-libp2p / py-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn js_gets_no_reservation_for_an_unreserved_target() {
    let js = Js::get();
    let versions = js.versions();
    let relay = start_relay(&[]);
    let row = Row::new(
        SUITE,
        "js-10",
        "js-libp2p",
        &versions,
        "target has no reservation: js dial fails",
    );
    // A valid (ed25519) peer id, unknown to the relay.
    let nobody = libp2p::identity::Keypair::generate_ed25519()
        .public()
        .to_peer_id();
    let circuit = format!("{}/p2p-circuit/p2p/{nobody}", relay.addr);
    let mut source = js.source("js-source", &circuit, KIB, KIB);
    let (status, line) = source.outcome().await;
    assert_eq!(refusal(status, &line), "NO_RESERVATION", "{line}");
    row.pass("js dial fails with status NO_RESERVATION");
}

/// Known problem, not a matrix scenario: at the relay's default bandwidth (1 MB/s per session and
/// direction) a js-libp2p bulk transfer that lasts longer than about 10 s is cut, by js-libp2p
/// itself. Its connection monitor pings every connection every 10 s, relayed ones too, and aborts
/// the connection when a ping takes longer than its timeout (5 s at first). The js sender queues
/// several MB of its own data ahead of the ping (the relay holds about 1 MB: its memory barely
/// grows and the loopback socket queues stay empty), and at 1 MB/s that takes longer than 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fails: js-libp2p's connection monitor aborts a relayed connection whose ping waits more than 5 s behind the js sender's own queued data, which at the relay's default 1 MB/s happens about 10-15 s into a bulk transfer (see interop/README.md)"]
async fn js_bulk_transfer_at_the_default_bandwidth_outlives_the_js_connection_monitor() {
    let js = Js::get();
    let relay = start_relay(&[]);
    let (mut target, _, circuit) = js_target(&js, "js-target", &relay.addr.to_string(), &[]).await;
    // 16 s at 1 MB/s
    let n = 16_000_000;
    js_source_transfer(&js, &circuit, n, 0).await;
    js_target_transfer(&mut target, n, 0).await;
}
