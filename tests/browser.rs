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

mod common;
#[path = "common/interop.rs"]
mod interop;

use std::{
    fs,
    path::PathBuf,
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use common::{process::RelayProcess, TestClient};
use interop::{
    expected, js_source_transfer, js_target, js_target_transfer, peer_id_of, rust_source_transfer,
    rust_target_transfer, rust_versions, size, Js, Peer, Row, Versions, LINE_WAIT, READY_WAIT,
};
use libp2p::{core::multiaddr::Protocol, Multiaddr};
use macula_relay::node::{is_secure_websocket, is_websocket, yamux_config};
use serde_json::Value;

const SUITE: &str = "browser";
const MIB: u64 = 1024 * 1024;
/// What each transfer moves in each direction.
const TRANSFER: u64 = 4 * MIB;
/// What each browser → browser transfer moves in each direction.
const B2B: u64 = MIB;
/// How long a driver run may take (it gives up by itself after this).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(120);

/// One browser run at a time: Chromium is the heaviest thing the suite starts, and the machine
/// has two cores.
static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The browser driver in `interop/browser`, run with the Node 22 that `npm ci` installs there.
struct Browser {
    node: PathBuf,
    dir: PathBuf,
    chromium: PathBuf,
}

impl Browser {
    /// The driver; panics, saying what to install, if Chromium or the npm packages are missing.
    fn get() -> Browser {
        let dir = interop::repo().join("interop/browser");
        let node = dir.join("node_modules/.bin/node");
        let chromium = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/usr/bin/chromium".into());
        let missing = [
            (
                chromium.clone(),
                "install Chromium (Debian: `apt-get install chromium`)",
            ),
            (node.clone(), "run `cd interop/browser && npm ci`"),
            (
                dir.join("node_modules/playwright-core/package.json"),
                "run `cd interop/browser && npm ci`",
            ),
            (
                dir.join("node_modules/libp2p/package.json"),
                "run `cd interop/browser && npm ci`",
            ),
        ]
        .into_iter()
        .find(|(p, _)| !p.exists());
        if let Some((path, how)) = missing {
            let missing = format!("{} does not exist; {how}", path.display());
            panic!("the browser peers are missing: {missing}");
        }
        let browser = Browser {
            node,
            dir,
            chromium,
        };
        browser.build();
        browser
    }

    /// Bundles the page (`node build.mjs`), once per test process.
    fn build(&self) {
        static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
        let result = BUILT.get_or_init(|| {
            let started = Instant::now();
            let output = Command::new(&self.node)
                .arg("build.mjs")
                .current_dir(&self.dir)
                .output()
                .map_err(|e| format!("cannot run {}: {e}", self.node.display()))?;
            if !output.status.success() {
                return Err(format!(
                    "node build.mjs failed ({}): {}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                ));
            }
            eprintln!("[browser] page bundled in {:?}", started.elapsed());
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
    }

    fn package_version(&self, package: &str) -> String {
        let path = self
            .dir
            .join("node_modules")
            .join(package)
            .join("package.json");
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let json: Value = serde_json::from_str(&text).expect("package.json is JSON");
        json["version"].as_str().expect("version field").to_owned()
    }

    /// `Chromium 156.0.8078.79` (from `chromium --version`).
    fn chromium_version(&self) -> String {
        static VERSION: OnceLock<String> = OnceLock::new();
        VERSION
            .get_or_init(|| {
                let output = Command::new(&self.chromium)
                    .arg("--version")
                    .output()
                    .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.chromium.display()));
                let text = String::from_utf8_lossy(&output.stdout);
                let version = text
                    .split_whitespace()
                    .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
                    .unwrap_or("unknown");
                format!("Chromium {version}")
            })
            .clone()
    }

    /// `js-libp2p <version> in Chromium <version>`, and the versions of the packages that
    /// matter, read from the installed packages.
    fn versions(&self) -> Versions {
        let chromium = self.chromium_version();
        let mut components: Vec<String> = [
            "libp2p",
            "@libp2p/websockets",
            "@libp2p/circuit-relay-v2",
            "@chainsafe/libp2p-noise",
            "@chainsafe/libp2p-yamux",
            "@libp2p/identify",
            "playwright-core",
            "esbuild",
        ]
        .iter()
        .map(|p| format!("browser: {p} {}", self.package_version(p)))
        .collect();
        components.push(format!("browser: {chromium} (Debian)"));
        Versions {
            short: format!("js-libp2p {} in {chromium}", self.package_version("libp2p")),
            components,
        }
    }

    /// Starts `driver.mjs` against the relay at `relay` (a `/ws` or `/tls/ws` address).
    fn driver(&self, name: &str, relay: &Multiaddr, extra: &[&str]) -> Peer {
        let mut argv = vec![
            self.dir.join("driver.mjs").display().to_string(),
            "--relay".into(),
            relay.to_string(),
            "--timeout".into(),
            DRIVER_TIMEOUT.as_secs().to_string(),
            "--chromium".into(),
            self.chromium.display().to_string(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        Peer::spawn_with(name, &self.node, &argv, &self.dir, &[], None)
    }
}

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

/// `<relay addr>/p2p-circuit/p2p/<target>`.
fn circuit(relay: &Multiaddr, target: libp2p::PeerId) -> Multiaddr {
    relay
        .clone()
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(target))
}

/// Reads the driver's lines until it has printed each of `events` once more (past `from` lines
/// already seen), returning them; panics on an error line or after `wait`.
async fn events(driver: &mut Peer, from: usize, events: &[&str], wait: Duration) -> Vec<Value> {
    let deadline = Instant::now() + wait;
    let find = |seen: &[Value], e: &str| {
        seen[from..]
            .iter()
            .find(|v| v["event"].as_str() == Some(e))
            .cloned()
    };
    loop {
        if let Some(error) = driver.seen[from..]
            .iter()
            .find(|v| v["event"].as_str() == Some("error"))
        {
            panic!(
                "{}: error line: {error}; stderr: {}",
                driver.name,
                driver.stderr_tail()
            );
        }
        let found: Option<Vec<Value>> = events.iter().map(|e| find(&driver.seen, e)).collect();
        if let Some(found) = found {
            return found;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if driver.next(left).await.is_none() {
            let status = driver.wait_exit(Duration::from_secs(10)).await;
            panic!(
                "{}: exited ({status:?}) before printing {events:?}; stderr: {}",
                driver.name,
                driver.stderr_tail()
            );
        }
    }
}

/// Checks a browser `ready` line: reserved over `relay_addr`, with a circuit address through it.
fn check_ready(ready: &Value, relay_addr: &Multiaddr) -> (libp2p::PeerId, f64) {
    let relay = relay_addr.to_string();
    assert_eq!(
        ready["relay_conn_addr"].as_str(),
        Some(relay.as_str()),
        "the browser's connection to the relay: {ready}"
    );
    let circuits: Vec<&str> = ready["circuit_addrs"]
        .as_array()
        .expect("circuit_addrs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        circuits.iter().any(|c| c.starts_with(&relay)),
        "a circuit address through {relay} in {circuits:?}"
    );
    (
        peer_id_of(ready),
        ready["reserve_ms"].as_f64().unwrap_or(0.0),
    )
}

/// Checks the browser's `result` line (it dialed and moved `n` bytes each way).
async fn check_dialer_result(result: &Value, n: u64) {
    let (up_hash, down_hash) = expected(n, n).await;
    assert_eq!(result["ok"], true, "browser dialer: {result}");
    assert_eq!(result["up_bytes"], n);
    assert_eq!(result["down_bytes"], n);
    assert_eq!(
        result["up_sha256_peer_received"], up_hash,
        "the peer got the browser's bytes"
    );
    assert_eq!(
        result["down_sha256_received"], down_hash,
        "the browser got the peer's bytes"
    );
}

/// Checks the browser's `transfer` line (it served a transfer of `n` bytes each way).
async fn check_listener_transfer(transfer: &Value, n: u64) {
    let (up_hash, down_hash) = expected(n, n).await;
    assert_eq!(transfer["ok"], true, "browser listener: {transfer}");
    assert_eq!(
        transfer["up_sha256_received"], up_hash,
        "the browser got the peer's bytes"
    );
    assert_eq!(
        transfer["down_sha256_peer_received"], down_hash,
        "the peer got the browser's bytes"
    );
}

fn mbit(n: u64, ms: &Value) -> String {
    match ms.as_f64() {
        Some(ms) if ms > 0.0 => format!(
            "{:.0} Mbit/s both ways together",
            (2 * n * 8) as f64 / ms / 1000.0
        ),
        _ => "?".into(),
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
