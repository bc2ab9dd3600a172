//! Browser peers: js-libp2p (WebSockets, circuit relay v2, Noise, Yamux, identify) in headless
//! Chromium, driven by Playwright (`interop/browser/driver.mjs`), against our relay as a real
//! process listening on WebSocket (and secure WebSocket) on 127.0.0.1:
//!
//! - the browser reserves on the relay over `/ws`;
//! - a Node js-libp2p peer and a rust-libp2p peer reach the browser through the relay, and the
//!   browser reaches them, moving data both ways, hash-checked (the transfer protocol of
//!   `interop/js`);
//! - browser → browser (two pages) through the relay, over `/ws` and over `/tls/ws` with a
//!   self-signed certificate the browser is told to accept.
//!
//! Needs Chromium (`/usr/bin/chromium`, or `$CHROMIUM`), `interop/browser/node_modules` and
//! `interop/js/node_modules` (`npm ci`); `scripts/test.sh` installs them and runs these tests
//! with `MACULA_REQUIRE_INTEROP=1`. Without that variable at build time they are ignored
//! (reported as such); a test that runs fails if its peers are missing. Every scenario adds a row
//! to the interop matrix (`interop/README.md`).
#![cfg(feature = "admin")]

#[allow(dead_code)]
#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/interop.rs"]
mod interop;

use std::{fs, time::Duration};

use browser::{
    check_dialer_result, check_listener_transfer, check_ready, circuit, events, mbit, Browser,
    BROWSER,
};
use common::{process::RelayProcess, TestClient};
use interop::{
    js_source_transfer, js_target, js_target_transfer, peer_id_of, rust_source_transfer,
    rust_target_transfer, rust_versions, size, Js, Row, LINE_WAIT, READY_WAIT,
};
use libp2p::Multiaddr;
use macula_relay::node::{is_secure_websocket, is_websocket, yamux_config};

const SUITE: &str = "browser";
const MIB: u64 = 1024 * 1024;
/// What each transfer moves in each direction.
const TRANSFER: u64 = 4 * MIB;
/// What each browser → browser transfer moves in each direction.
const B2B: u64 = MIB;
/// A relay process listening on TCP and WebSocket (and secure WebSocket with `tls`) on
/// 127.0.0.1, its bandwidth limit off; with every address it printed.
struct Relay {
    process: RelayProcess,
    addrs: Vec<Multiaddr>,
    _tls_dir: Option<tempfile::TempDir>,
}

impl Relay {
    fn start(tls: bool) -> Relay {
        let mut args = vec![
            "--listen".to_owned(),
            "/ip4/127.0.0.1/tcp/0".into(),
            "--listen".into(),
            "/ip4/127.0.0.1/tcp/0/ws".into(),
            "--bandwidth".into(),
            "0".into(),
        ];
        let tls_dir = tls.then(|| {
            let dir = tempfile::tempdir().unwrap();
            let cert = rcgen::generate_simple_self_signed(vec![
                "127.0.0.1".to_owned(),
                "localhost".to_owned(),
            ])
            .expect("self-signed certificate");
            let cert_path = dir.path().join("cert.pem");
            let key_path = dir.path().join("key.pem");
            fs::write(&cert_path, cert.cert.pem()).unwrap();
            fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
            args.extend([
                "--listen".into(),
                "/ip4/127.0.0.1/tcp/0/tls/ws".into(),
                "--tls-cert".into(),
                cert_path.display().to_string(),
                "--tls-key".into(),
                key_path.display().to_string(),
            ]);
            dir
        });
        let expected = if tls { 3 } else { 2 };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let process = RelayProcess::start(&args);
        let mut addrs = vec![process.addr.clone()];
        while addrs.len() < expected {
            let line = process
                .stdout
                .recv_timeout(Duration::from_secs(30))
                .expect("the relay printed all its listen addresses");
            addrs.push(line.parse().unwrap_or_else(|e| panic!("{line:?}: {e}")));
        }
        Relay {
            process,
            addrs,
            _tls_dir: tls_dir,
        }
    }

    fn find(&self, what: &str, f: impl Fn(&Multiaddr) -> bool) -> Multiaddr {
        self.addrs
            .iter()
            .find(|a| f(a))
            .unwrap_or_else(|| panic!("no {what} address among {:?}", self.addrs))
            .clone()
    }

    fn tcp(&self) -> Multiaddr {
        self.find("TCP", |a| !is_websocket(a))
    }

    fn ws(&self) -> Multiaddr {
        self.find("/ws", |a| is_websocket(a) && !is_secure_websocket(a))
    }

    fn wss(&self) -> Multiaddr {
        self.find("/tls/ws", is_secure_websocket)
    }
}

/// The browser reserves over `/ws`; a Node js-libp2p peer (TCP) reaches it through the relay,
/// and it reaches a Node js-libp2p target (TCP) through the relay: data both ways, hash-checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs Chromium and the js-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn browser_reserves_over_ws_and_exchanges_data_with_node_js_peers() {
    let browser = Browser::get();
    let js = Js::get();
    let _one = BROWSER.lock().await;
    let versions = browser.versions();
    let relay = Relay::start(false);
    let (tcp, ws) = (relay.tcp(), relay.ws());

    let mut reserve = Row::new(
        SUITE,
        "br-01",
        "js-libp2p (Chromium)",
        &versions,
        "browser reserves on the relay over /ws",
    );
    reserve.step("starting the Node js target (reserves over TCP)");
    let (mut js_target, js_ready, _) = js_target(&js, "js-target", &tcp.to_string(), &[]).await;
    let js_peer = peer_id_of(&js_ready);

    reserve.step("starting the browser");
    let to_js = circuit(&ws, js_peer).to_string();
    let n = TRANSFER.to_string();
    let mut driver = browser.driver(
        "browser",
        &ws,
        &["--dial", &to_js, "--up", &n, "--down", &n, "--inbound", "1"],
    );
    let ready = driver.expect("ready", READY_WAIT).await;
    let (browser_peer, reserve_ms) = check_ready(&ready, &ws);
    reserve.pass(format!(
        "RESERVE over /ws in {reserve_ms:.0} ms; circuit address through the /ws address announced"
    ));

    let both = versions.and(&js.versions());
    let mut node_to_browser = Row::new(
        SUITE,
        "br-02",
        "js-libp2p (Node) → js-libp2p (Chromium)",
        &both.clone(),
        "Node peer reaches the browser through the relay, data both ways",
    );
    let mut browser_to_node = Row::new(
        SUITE,
        "br-03",
        "js-libp2p (Chromium) → js-libp2p (Node)",
        &both,
        "browser reaches a Node peer through the relay, data both ways",
    );
    node_to_browser.step(format!(
        "js source (TCP) → browser, {} each way",
        size(TRANSFER)
    ));
    let from_js = circuit(&tcp, browser_peer).to_string();
    let source = js_source_transfer(&js, &from_js, TRANSFER, TRANSFER).await;
    let got = events(&mut driver, 0, &["transfer"], LINE_WAIT).await;
    check_listener_transfer(&got[0], TRANSFER).await;
    node_to_browser.pass(format!(
        "{} each way hash-checked on both sides, {}",
        size(TRANSFER),
        mbit(TRANSFER, &source["transfer_ms"])
    ));

    browser_to_node.step(format!(
        "browser → js target (TCP), {} each way",
        size(TRANSFER)
    ));
    let got = events(&mut driver, 0, &["result", "done"], LINE_WAIT).await;
    check_dialer_result(&got[0], TRANSFER).await;
    js_target_transfer(&mut js_target, TRANSFER, TRANSFER).await;
    browser_to_node.pass(format!(
        "{} each way hash-checked on both sides, {}",
        size(TRANSFER),
        mbit(TRANSFER, &got[0]["transfer_ms"])
    ));
    assert!(driver.finish(Duration::from_secs(30)).await.success());
    drop(relay);
}

/// A stock rust-libp2p relay client (TCP) reaches the browser through the relay, and the browser
/// reaches it: data both ways, hash-checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs Chromium and the js-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn browser_exchanges_data_with_a_rust_peer() {
    let browser = Browser::get();
    let _one = BROWSER.lock().await;
    let versions = browser.versions().and(&rust_versions());
    let relay = Relay::start(false);
    let (tcp, ws) = (relay.tcp(), relay.ws());

    let mut rust_to_browser = Row::new(
        SUITE,
        "br-04",
        "rust-libp2p → js-libp2p (Chromium)",
        &versions,
        "rust peer reaches the browser through the relay, data both ways",
    );
    let mut browser_to_rust = Row::new(
        SUITE,
        "br-05",
        "js-libp2p (Chromium) → rust-libp2p",
        &versions,
        "browser reaches a rust peer through the relay, data both ways",
    );
    browser_to_rust.step("rust peer reserves over TCP");
    let mut rust = TestClient::start_with_yamux(yamux_config).await;
    rust.reserve_on(relay.process.peer_id, tcp.clone()).await;
    let mut served = rust.serve_transfers();

    rust_to_browser.step("starting the browser");
    let to_rust = circuit(&ws, rust.peer_id).to_string();
    let n = TRANSFER.to_string();
    let mut driver = browser.driver(
        "browser",
        &ws,
        &[
            "--dial",
            &to_rust,
            "--up",
            &n,
            "--down",
            &n,
            "--inbound",
            "1",
        ],
    );
    let ready = driver.expect("ready", READY_WAIT).await;
    let (browser_peer, _) = check_ready(&ready, &ws);

    rust_to_browser.step(format!(
        "rust source (TCP) → browser, {} each way",
        size(TRANSFER)
    ));
    rust.dial_circuit(circuit(&tcp, browser_peer), browser_peer)
        .await
        .expect("the rust peer reaches the browser through the relay");
    rust_source_transfer(rust.transfer(browser_peer, TRANSFER), TRANSFER).await;
    let got = events(&mut driver, 0, &["transfer"], LINE_WAIT).await;
    check_listener_transfer(&got[0], TRANSFER).await;
    rust_to_browser.pass(format!(
        "{} each way hash-checked on both sides, {}",
        size(TRANSFER),
        mbit(TRANSFER, &got[0]["transfer_ms"])
    ));

    browser_to_rust.step(format!(
        "browser → rust target, {} each way",
        size(TRANSFER)
    ));
    let got = events(&mut driver, 0, &["result", "done"], LINE_WAIT).await;
    check_dialer_result(&got[0], TRANSFER).await;
    rust_target_transfer(&mut served, TRANSFER).await;
    browser_to_rust.pass(format!(
        "{} each way hash-checked on both sides, {}",
        size(TRANSFER),
        mbit(TRANSFER, &got[0]["transfer_ms"])
    ));
    assert!(driver.finish(Duration::from_secs(30)).await.success());
}

/// Two pages, each its own js-libp2p node reserved on the relay; one reaches the other through
/// the relay. Over `/ws`, and over `/tls/ws` with a self-signed certificate.
async fn browser_to_browser(tls: bool) {
    let browser = Browser::get();
    let _one = BROWSER.lock().await;
    let versions = browser.versions();
    let relay = Relay::start(tls);
    let (id, transport) = if tls {
        ("br-07", "/tls/ws")
    } else {
        ("br-06", "/ws")
    };
    let addr = if tls { relay.wss() } else { relay.ws() };

    let mut row = Row::new(
        SUITE,
        id,
        "js-libp2p (Chromium) → js-libp2p (Chromium)",
        &versions,
        &format!("browser → browser (two pages) through the relay over {transport}"),
    );
    row.step("two pages reserve, page 1 dials page 0");
    let n = B2B.to_string();
    let mut extra = vec!["--b2b", "--up", &n, "--down", &n, "--inbound", "1"];
    if tls {
        // The self-signed certificate: a real deployment has one the browser trusts.
        extra.push("--ignore-certificate-errors");
    }
    let mut driver = browser.driver("browser", &addr, &extra);
    let first = driver.expect("ready", READY_WAIT).await;
    let second = driver.expect("ready", READY_WAIT).await;
    let (target, _) = check_ready(&first, &addr);
    check_ready(&second, &addr);
    let got = events(&mut driver, 0, &["result", "transfer", "done"], LINE_WAIT).await;
    let (result, transfer) = (&got[0], &got[1]);
    check_dialer_result(result, B2B).await;
    check_listener_transfer(transfer, B2B).await;
    assert_eq!(result["page"], 1);
    assert_eq!(transfer["page"], 0);
    assert_eq!(
        result["remote_peer"].as_str(),
        Some(target.to_string().as_str())
    );
    let relayed = result["remote_addr"].as_str().unwrap_or_default();
    assert!(
        relayed.starts_with(&addr.to_string()) && relayed.contains("/p2p-circuit/"),
        "page 1 reached page 0 through the relay's {transport} address: {relayed}"
    );
    assert!(driver.finish(Duration::from_secs(30)).await.success());
    row.pass(format!(
        "{} each way hash-checked on both pages, {}{}",
        size(B2B),
        mbit(B2B, &result["transfer_ms"]),
        if tls {
            "; self-signed certificate accepted with --ignore-certificate-errors"
        } else {
            ""
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs Chromium and the js-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn browser_to_browser_over_ws() {
    browser_to_browser(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs Chromium and the js-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn browser_to_browser_over_secure_websocket() {
    browser_to_browser(true).await;
}
