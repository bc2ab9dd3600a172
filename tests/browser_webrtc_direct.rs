//! WebRTC-direct: browsers reach the relay with no certificate installed anywhere. The relay
//! node (the real binary, feature `webrtc`) listens on `/udp/<port>/webrtc-direct`, and
//! js-libp2p's `webRTCDirect()` in headless Chromium dials the address it announces
//! (`…/webrtc-direct/certhash/<hash>/p2p/<relay>`), reserves through it, and is reached through
//! the relay by a Node js-libp2p peer and a stock rust-libp2p peer (TCP), hash-checked, 1 MiB
//! each way: 16 KiB messages both ways, more than the relay's writes may coalesce into one data
//! channel message (the three stream fixes of `patches/libp2p-webrtc-utils`). The per-origin
//! caps hold WebRTC-direct clients as they hold TCP ones, and a browser whose packets stop loses
//! its reservation within the dead-peer bound.
//!
//! Both Chromium and libp2p-webrtc's server gather ICE candidates only on non-loopback
//! interfaces, so the relay, Chromium and the peers run inside a network namespace with a veth
//! (198.18.78.2/24, the benchmarking range) and a default route through it. Needs root (skips
//! with the reason otherwise), Chromium and the npm packages of `interop/browser` and
//! `interop/js`; without `MACULA_REQUIRE_INTEROP=1` at build time the tests are ignored, with it
//! a missing peer fails. Every scenario adds a row to the interop matrix.
#![cfg(all(feature = "cli", feature = "webrtc"))]

mod common {
    #[allow(dead_code)]
    pub mod nat_peer;
    #[allow(dead_code)]
    pub mod netns;
    #[allow(dead_code)]
    pub mod process;
    #[allow(dead_code)]
    pub mod swarm_task;
    #[allow(dead_code)]
    pub mod transfer;
}
#[allow(dead_code)]
#[path = "common/browser.rs"]
mod browser;
#[path = "common/interop.rs"]
mod interop;

use std::time::{Duration, Instant};

use browser::{
    check_listener_transfer, check_ready, circuit, events, mbit, ready_pages, Browser, BROWSER,
};
use common::{
    nat_peer::NatPeer,
    netns::Lab,
    process::{relay_node_binary, RelayProcess},
};
use interop::{js_source_transfer, rust_versions, size, Js, Peer, Row, LINE_WAIT, READY_WAIT};
use libp2p::{core::multiaddr::Protocol, Multiaddr};
use macula_relay::node::{is_webrtc_direct, DEAD_PEER_BOUND};
use serde_json::Value;

const SUITE: &str = "webrtc_direct";
const MIB: u64 = 1024 * 1024;
/// What each transfer moves in each direction: 64 messages of 16 KiB each way. Not more: the
/// browser's sends queue in Chromium's SCTP buffer (js-libp2p lets a data channel buffer up to
/// 16 MiB) ahead of its pings to the relay, and the WebRTC-direct link moves about 0.5 MB/s
/// each way here (webrtc-rs's SCTP), so a 4 MiB transfer can hold a ping past js-libp2p's
/// timeout, and its connection monitor then aborts the connection (seen in 2 of 4 runs).
const TRANSFER: u64 = MIB;
/// The namespace's address (relay, Chromium and peers), and its gateway.
const ADDR: &str = "198.18.78.2";
const GATEWAY: &str = "198.18.78.1";
/// The relay's admin API inside the namespace (for `ctl stats`).
const ADMIN: &str = "127.0.0.1:9090";
/// How long a driver run may take (it gives up by itself after this).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(180);
/// How long the relay may take to free the reservation of a TCP client that closed its
/// connection.
const RELEASE_WAIT: Duration = Duration::from_secs(10);

/// A lab with one namespace (a veth to a gateway namespace, a default route) and the relay in
/// it, listening on WebRTC-direct and TCP: the lab, the namespace, the relay, its WebRTC-direct
/// and TCP addresses.
struct Site {
    lab: Lab,
    ns: String,
    /// Kept running until the site is dropped.
    _relay: RelayProcess,
    webrtc_direct: Multiaddr,
    tcp: Multiaddr,
}

impl Site {
    /// `None` (the reason printed) where namespaces cannot be made.
    fn start(extra: &[&str]) -> Option<Site> {
        let mut lab = match Lab::new() {
            Ok(lab) => lab,
            Err(why) => {
                eprintln!("SKIPPED: the WebRTC-direct lab cannot run here: {why}");
                return None;
            }
        };
        let ns = lab.host_with_default_route("wd", ADDR, GATEWAY);
        let webrtc_listen = format!("/ip4/{ADDR}/udp/0/webrtc-direct");
        let tcp_listen = format!("/ip4/{ADDR}/tcp/0");
        let mut args = vec![
            "--listen",
            &webrtc_listen,
            "--listen",
            &tcp_listen,
            "--bandwidth",
            "0",
            "--allow-private-addrs",
            "--admin",
            ADMIN,
        ];
        args.extend_from_slice(extra);
        let relay = RelayProcess::start_in_netns(&ns, &args);
        let mut addrs = vec![relay.addr.clone()];
        let deadline = Instant::now() + READY_WAIT;
        while addrs.len() < 2 {
            let line = relay
                .stdout
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the relay printed its TCP and WebRTC-direct addresses");
            addrs.push(line.parse().unwrap_or_else(|e| panic!("{line:?}: {e}")));
        }
        let webrtc_direct = addrs
            .iter()
            .find(|a| is_webrtc_direct(a))
            .unwrap_or_else(|| panic!("no WebRTC-direct address among {addrs:?}"))
            .clone();
        let tcp = addrs
            .iter()
            .find(|a| !is_webrtc_direct(a))
            .unwrap_or_else(|| panic!("no TCP address among {addrs:?}"))
            .clone();
        assert!(
            webrtc_direct
                .iter()
                .any(|p| matches!(p, Protocol::Certhash(_))),
            "the WebRTC-direct address carries the certificate's hash: {webrtc_direct}"
        );
        Some(Site {
            lab,
            ns,
            _relay: relay,
            webrtc_direct,
            tcp,
        })
    }

    /// The browser driver inside the namespace, against the relay's WebRTC-direct address.
    fn driver(&self, browser: &Browser, name: &str, extra: &[&str]) -> Peer {
        browser.driver_in(&self.ns, name, &self.webrtc_direct, DRIVER_TIMEOUT, extra)
    }

    /// The relay's stats (`ctl --json stats` inside the namespace).
    fn stats(&self) -> Value {
        let output = self.lab.exec(
            &self.ns,
            &relay_node_binary().display().to_string(),
            &["ctl", "--admin", ADMIN, "--json", "stats"],
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "ctl stats printed no JSON ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })
    }

    /// Waits until the relay holds `n` reservations; panics after [`RELEASE_WAIT`].
    async fn until_reservations(&self, n: u64) {
        let deadline = Instant::now() + RELEASE_WAIT;
        loop {
            let stats = self.stats();
            if stats["reservations"].as_u64() == Some(n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the relay did not hold {n} reservations within {RELEASE_WAIT:?}: {stats}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn refused_for_origin(&self) -> u64 {
        self.stats()["reservations_denied"]["origin_reservations_full"]
            .as_u64()
            .unwrap_or(0)
    }
}

/// A browser reserves over WebRTC-direct (no certificate anywhere: the driver does not tell
/// Chromium to accept any), then a Node js-libp2p peer and a stock rust-libp2p peer, both on
/// TCP, reach it through the relay: 4 MiB each way, hash-checked on both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs root, Chromium and the js-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn a_browser_reserves_over_webrtc_direct_and_node_and_rust_peers_reach_it() {
    let Some(site) = Site::start(&[]) else {
        return;
    };
    let browser = Browser::get();
    let js = Js::get().in_netns(&site.ns);
    let _one = BROWSER.lock().await;
    let versions = browser.versions();

    let mut reserve = Row::new(
        SUITE,
        "wd-01",
        "js-libp2p (Chromium)",
        &versions,
        "browser reserves over WebRTC-direct, no certificate installed anywhere",
    );
    reserve.step("starting the browser");
    let (mut driver, ready) = ready_pages(
        || site.driver(&browser, "browser", &["--inbound", "2"]),
        1,
        &mut reserve,
    )
    .await;
    let ready = ready.unwrap_or_else(|e| panic!("the browser did not reserve: {e}"));
    let (browser_peer, reserve_ms) = check_ready(&ready[0], &site.webrtc_direct);
    let connect_ms = ready[0]["connect_ms"].as_f64().unwrap_or(0.0);
    reserve.pass(format!(
        "connected (DTLS, Noise, identify) in {connect_ms:.0} ms, then RESERVE in \
         {reserve_ms:.0} ms; circuit address through it announced"
    ));

    let mut from_node = Row::new(
        SUITE,
        "wd-02",
        "js-libp2p (Node) → js-libp2p (Chromium)",
        &versions.and(&js.versions()),
        "Node peer (TCP) reaches the browser (WebRTC-direct) through the relay",
    );
    from_node.step(format!("js source → browser, {} each way", size(TRANSFER)));
    let to_browser = circuit(&site.tcp, browser_peer).to_string();
    let source = js_source_transfer(&js, &to_browser, TRANSFER, TRANSFER).await;
    let got = events(&mut driver, 0, &["transfer"], LINE_WAIT).await;
    check_listener_transfer(&got[0], TRANSFER).await;
    from_node.pass(format!(
        "{} each way hash-checked on both sides, {}",
        size(TRANSFER),
        mbit(TRANSFER, &source["transfer_ms"])
    ));

    let mut from_rust = Row::new(
        SUITE,
        "wd-03",
        "rust-libp2p → js-libp2p (Chromium)",
        &versions.and(&rust_versions()),
        "rust peer (TCP) reaches the browser (WebRTC-direct) through the relay",
    );
    from_rust.step(format!(
        "rust source → browser, {} each way",
        size(TRANSFER)
    ));
    let mut rust = NatPeer::start(
        &site.lab,
        &site.ns,
        format!("/ip4/{ADDR}/tcp/0").parse().unwrap(),
    )
    .await;
    rust.connect_relay(&site.tcp).await;
    let seen = driver.seen.len();
    rust.dial_relayed(circuit(&site.tcp, browser_peer))
        .await
        .expect("the rust peer reaches the browser through the relay");
    let started = Instant::now();
    if let Err(e) = rust.transfer(browser_peer, TRANSFER).await {
        panic!(
            "the rust peer's transfer with the browser: {e}; browser stderr: {}",
            driver.stderr_tail()
        );
    }
    let elapsed = started.elapsed();
    let got = events(&mut driver, seen, &["transfer"], LINE_WAIT).await;
    check_listener_transfer(&got[0], TRANSFER).await;
    from_rust.pass(format!(
        "{} each way hash-checked on both sides, {:.0} ms",
        size(TRANSFER),
        elapsed.as_secs_f64() * 1000.0
    ));

    events(&mut driver, 0, &["done"], LINE_WAIT).await;
    assert!(driver.finish(Duration::from_secs(30)).await.success());
    drop(rust);
    drop(site);
}

/// With one reservation per network origin: a reservation a TCP client of the origin holds
/// refuses a browser of that origin over WebRTC-direct; once the TCP client is gone, two
/// browsers of the origin over WebRTC-direct get one reservation, and the other is refused. The
/// relay's stats name the reason each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs root, Chromium and the js-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn per_origin_caps_hold_webrtc_direct_clients_like_tcp_ones() {
    let Some(site) = Site::start(&["--reservations-per-origin", "ip=1"]) else {
        return;
    };
    let browser = Browser::get();
    let _one = BROWSER.lock().await;
    let mut row = Row::new(
        SUITE,
        "wd-04",
        "js-libp2p (Chromium), rust-libp2p",
        &browser.versions().and(&rust_versions()),
        "one reservation per origin (`ip=1`) holds WebRTC-direct and TCP clients alike",
    );

    row.step("a TCP client of the origin holds the reservation, a browser tries WebRTC-direct");
    let mut rust = NatPeer::start(
        &site.lab,
        &site.ns,
        format!("/ip4/{ADDR}/tcp/0").parse().unwrap(),
    )
    .await;
    rust.connect_relay(&site.tcp).await;
    rust.reserve(&site.tcp).await;
    let (mut driver, ready) =
        ready_pages(|| site.driver(&browser, "browser", &[]), 1, &mut row).await;
    check_refused(
        ready,
        "the browser, while a TCP client of its origin holds the reservation",
    );
    driver.finish(Duration::from_secs(30)).await;
    assert_eq!(site.refused_for_origin(), 1, "{}", site.stats());

    row.step("the TCP client leaves; two browsers of the origin reserve over WebRTC-direct");
    drop(rust);
    site.until_reservations(0).await;
    let (mut driver, ready) = ready_pages(
        || site.driver(&browser, "browsers", &["--pages", "2"]),
        2,
        &mut row,
    )
    .await;
    check_refused(ready, "the second browser of the origin");
    driver.finish(Duration::from_secs(30)).await;
    assert_eq!(site.refused_for_origin(), 2, "{}", site.stats());
    row.pass(
        "browser refused while a TCP client of its origin held the reservation; second browser \
         refused; both counted as `origin_reservations_full`",
    );
    drop(site);
}

/// Checks that the driver reported a reservation refused with `RESERVATION_REFUSED`.
fn check_refused(outcome: Result<Vec<Value>, Value>, who: &str) {
    let refused = match outcome {
        Ok(ready) => panic!("{who} reserved: {ready:?}"),
        Err(error) => error,
    };
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("reservation failed with status RESERVATION_REFUSED")),
        "{who} is refused with RESERVATION_REFUSED: {refused}"
    );
}

/// A browser reserved over WebRTC-direct whose packets stop (a lost network, a closed laptop:
/// nothing says goodbye) loses its reservation within the dead-peer bound: the relay's probe
/// finds the connection silent and closes it, although libp2p-webrtc never reports the failed
/// ICE and js-libp2p does not answer pings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs root, Chromium and the js-libp2p peers: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn a_browser_whose_packets_stop_loses_its_reservation_within_the_dead_peer_bound() {
    let Some(site) = Site::start(&[]) else {
        return;
    };
    let browser = Browser::get();
    let _one = BROWSER.lock().await;
    let mut row = Row::new(
        SUITE,
        "wd-05",
        "js-libp2p (Chromium)",
        &browser.versions(),
        "a browser whose packets stop loses its reservation within the dead-peer bound",
    );
    row.step("the browser reserves over WebRTC-direct");
    let hold = (DEAD_PEER_BOUND + RELEASE_WAIT).as_secs().to_string();
    let (mut driver, ready) = ready_pages(
        || site.driver(&browser, "browser", &["--hold", &hold]),
        1,
        &mut row,
    )
    .await;
    ready.unwrap_or_else(|e| panic!("the browser did not reserve: {e}"));
    site.until_reservations(1).await;

    row.step("every packet to or from the relay's UDP port dropped");
    let port = site
        .webrtc_direct
        .iter()
        .find_map(|p| match p {
            Protocol::Udp(port) => Some(port),
            _ => None,
        })
        .expect("a UDP port in the WebRTC-direct address");
    site.lab.nft(
        &site.ns,
        &format!(
            "table inet lost {{\n chain out {{\n  type filter hook output priority 0;\n  \
             udp sport {port} drop\n  udp dport {port} drop\n }}\n}}\n"
        ),
    );
    let cut = Instant::now();
    let deadline = cut + DEAD_PEER_BOUND + RELEASE_WAIT;
    while site.stats()["reservations"].as_u64() != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the dead browser's reservation was not freed within {:?}: {}",
            DEAD_PEER_BOUND + RELEASE_WAIT,
            site.stats()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let freed = cut.elapsed();
    assert!(
        freed <= DEAD_PEER_BOUND + Duration::from_secs(2),
        "freed after {freed:?}, past the dead-peer bound {DEAD_PEER_BOUND:?}"
    );
    row.pass(format!(
        "reservation freed {:.1} s after the packets stopped (bound {} s)",
        freed.as_secs_f64(),
        DEAD_PEER_BOUND.as_secs()
    ));
    driver.finish(DRIVER_TIMEOUT).await;
    drop(site);
}
