//! Browser → browser WebRTC through our relay: two js-libp2p nodes (two pages of headless
//! Chromium, driven by `interop/browser/driver.mjs --b2b-webrtc`) reserve on the relay over
//! `/ws`; page 1 dials page 0 at `<relay>/p2p-circuit/webrtc/p2p/<page 0>`. js-libp2p's WebRTC
//! transport signals SDP and ICE over a relayed stream and upgrades to a direct WebRTC
//! connection; each try checks that the connection is direct (WebRTC after the circuit, no relay
//! limits, an ICE candidate pair Chromium selected) and moves 16 MiB each way over it,
//! hash-checked on both pages. The relay's own stats (`ctl stats`, `total_bytes_relayed`) show
//! that the circuits carried only the signalling.
//!
//! Chromium gathers no ICE candidates on a loopback-only host, so the relay and the browser run
//! inside a network namespace with a veth (198.18.77.2/24, the benchmarking range) and a default
//! route through it. Needs root (skips with the reason otherwise), Chromium and
//! `interop/browser/node_modules` (`npm ci`); without `MACULA_REQUIRE_INTEROP=1` at build time
//! the test is ignored, with it a missing peer fails.
#![cfg(feature = "admin")]

#[allow(dead_code)]
#[path = "common/browser.rs"]
mod browser;
mod common;
#[path = "common/interop.rs"]
mod interop;
#[allow(dead_code)]
#[path = "common/netns.rs"]
mod netns;

use std::time::{Duration, Instant};

use browser::{ready_pages, Browser};
use common::process::{relay_node_binary, RelayProcess};
use interop::{expected, peer_id_of, Peer, Row};
use netns::Lab;
use serde_json::Value;

const SUITE: &str = "browser_webrtc";
const MIB: u64 = 1024 * 1024;

/// One run of browser → browser upgrades: how the pages reach the relay, and how much.
struct Run {
    /// Its row in the interop matrix.
    row: &'static str,
    /// The relay's listen address the pages reserve through (`{ADDR}` is the namespace's).
    listen: &'static str,
    /// What the table calls it.
    label: &'static str,
    /// Direct upgrades wanted (a fresh WebRTC connection each: page 1 hangs up after each
    /// transfer).
    upgrades: usize,
    /// Tries allowed for them. A try either fails to set up (js-libp2p gives up on the dial:
    /// seen once in 10–15 tries, twice under a busy two-core machine, the WebRTC set-up
    /// stalling until the dial's 15 s timeout; reported with its message) or gives a connection
    /// that must be direct and carry the transfer; a relayed or broken one fails the test. The
    /// driver stops at `upgrades`.
    tries: usize,
    /// What each try moves in each direction over the direct connection.
    bytes: u64,
}
/// The relay's address inside the namespace, and its gateway on the other end of the veth.
const ADDR: &str = "198.18.77.2";
const GATEWAY: &str = "198.18.77.1";
/// The relay's admin API inside the namespace (for `ctl stats`).
const ADMIN: &str = "127.0.0.1:9090";
/// What the relay may carry per upgrade (SDP offer and answer, ICE candidates, the relayed
/// connection's Noise, Yamux and identify): far below the 16 MiB each way of a transfer.
const SIGNALLING_LIMIT: u64 = 100 * 1000;
/// How long the driver may take for all the tries (it gives up by itself after this).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(600);

/// The relay's `total_bytes_relayed` (`ctl --json stats` inside `ns`).
fn relayed_bytes(lab: &Lab, ns: &str) -> u64 {
    let binary = relay_node_binary();
    let output = lab.exec(
        ns,
        &binary.display().to_string(),
        &["ctl", "--admin", ADMIN, "--json", "stats"],
    );
    let stats: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "ctl stats printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    stats["total_bytes_relayed"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total_bytes_relayed in {stats}"))
}

/// Reads the driver's lines until `done`, returning every line; panics on an error line, or if
/// the driver exits or `wait` passes first.
async fn until_done(driver: &mut Peer, wait: Duration) -> Vec<Value> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(error) = driver
            .seen
            .iter()
            .find(|v| v["event"].as_str() == Some("error"))
        {
            panic!(
                "browser driver: error line: {error}; stderr: {}",
                driver.stderr_tail()
            );
        }
        if driver
            .seen
            .iter()
            .any(|v| v["event"].as_str() == Some("done"))
        {
            return driver.seen.clone();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if driver.next(left).await.is_none() {
            let status = driver.wait_exit(Duration::from_secs(10)).await;
            panic!(
                "browser driver: exited ({status:?}) or {wait:?} passed before printing `done`; \
                 stderr: {}",
                driver.stderr_tail()
            );
        }
    }
}

fn of<'a>(lines: &'a [Value], event: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|v| v["event"].as_str() == Some(event))
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs root, Chromium and the js-libp2p browser peer: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn two_browsers_meet_through_the_relay_over_ws_and_upgrade_to_direct_webrtc() {
    upgrade_to_direct_webrtc(Run {
        row: "bw-01",
        listen: "/ip4/{ADDR}/tcp/0/ws",
        label: "/ws",
        upgrades: 10,
        tries: 20,
        bytes: 16 * MIB,
    })
    .await;
}

/// The pages reach the relay over WebRTC-direct (no certificate anywhere), reserve through it,
/// and upgrade to direct WebRTC with each other as over `/ws`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(macula_interop),
    ignore = "needs root, Chromium and the js-libp2p browser peer: run `bash scripts/test.sh` (or `MACULA_REQUIRE_INTEROP=1 cargo test`)"
)]
async fn two_browsers_reserved_over_webrtc_direct_upgrade_to_direct_webrtc() {
    upgrade_to_direct_webrtc(Run {
        row: "bw-02",
        listen: "/ip4/{ADDR}/udp/0/webrtc-direct",
        label: "WebRTC-direct",
        upgrades: 5,
        tries: 10,
        bytes: 4 * MIB,
    })
    .await;
}

async fn upgrade_to_direct_webrtc(run: Run) {
    let Run {
        row,
        listen,
        label,
        upgrades: wanted,
        tries: allowed,
        bytes,
    } = run;
    let mut lab = match Lab::new() {
        Ok(lab) => lab,
        Err(why) => {
            eprintln!("SKIPPED: the browser WebRTC lab cannot run here: {why}");
            return;
        }
    };
    let browser = Browser::get();
    let mut row = Row::new(
        SUITE,
        row,
        "js-libp2p (Chromium) → js-libp2p (Chromium)",
        &browser.versions(),
        &format!("two browsers reserved over {label} upgrade to direct WebRTC"),
    );
    row.step(format!("{wanted} upgrades in at most {allowed} tries"));

    // The relay and Chromium share a namespace whose only non-loopback interface is a veth
    // with a default route: Chromium's ICE host candidate is its address.
    let ns = lab.host_with_default_route("webrtc", ADDR, GATEWAY);

    let listen = listen.replace("{ADDR}", ADDR);
    let relay = RelayProcess::start_in_netns(
        &ns,
        &[
            "--listen",
            &listen,
            "--bandwidth",
            "0",
            "--allow-private-addrs",
            "--admin",
            ADMIN,
        ],
    );
    let ws = relay.addr.clone();
    let stem = listen
        .split("/0/")
        .next()
        .expect("a listen address with port 0");
    assert!(
        ws.to_string().starts_with(stem) && ws.to_string().contains(&listen[stem.len() + 2..]),
        "the relay's {label} address: {ws}"
    );
    let before = relayed_bytes(&lab, &ns);

    let (mut driver, ready) = ready_pages(
        || {
            browser.driver_in(
                &ns,
                "browser",
                &ws,
                DRIVER_TIMEOUT,
                &[
                    "--b2b-webrtc",
                    "--tries",
                    &allowed.to_string(),
                    "--upgrades",
                    &wanted.to_string(),
                    "--bytes",
                    &bytes.to_string(),
                ],
            )
        },
        2,
        &mut row,
    )
    .await;
    let ready = ready.unwrap_or_else(|e| panic!("the pages did not reserve: {e}"));
    let (first, second) = (ready[0].clone(), ready[1].clone());
    let target = peer_id_of(&first);
    for ready in [&first, &second] {
        assert_eq!(
            ready["relay_conn_addr"].as_str(),
            Some(ws.to_string().as_str()),
            "each page reserved over the relay's {label} address: {ready}"
        );
    }
    let webrtc_addr = format!("{ws}/p2p-circuit/webrtc/p2p/{target}");
    assert!(
        first["webrtc_addrs"]
            .as_array()
            .expect("webrtc_addrs")
            .iter()
            .any(|a| a.as_str() == Some(webrtc_addr.as_str())),
        "page 0 is dialable at {webrtc_addr}: {first}"
    );

    let lines = until_done(&mut driver, DRIVER_TIMEOUT + Duration::from_secs(60)).await;
    assert!(driver.finish(Duration::from_secs(30)).await.success());
    let after = relayed_bytes(&lab, &ns);

    let (up_hash, down_hash) = expected(bytes, bytes).await;
    let results = of(&lines, "webrtc_result");
    let tries = results.len();
    assert!(
        (wanted..=allowed).contains(&tries),
        "{tries} tries reported"
    );
    let mut setup_ms = Vec::new();
    let mut failed = Vec::new();
    for r in &results {
        let t = &r["try"];
        if r["ok"] != true && r.get("direct").is_none() {
            // the dial itself failed: no connection came back
            eprintln!("[browser] try {t}: no connection: {}", r["message"]);
            failed.push(r["message"].as_str().unwrap_or("?").to_owned());
            continue;
        }
        assert_eq!(r["ok"], true, "try {t}: {r}");
        assert_eq!(
            r["direct"], true,
            "try {t}: a direct WebRTC connection: {r}"
        );
        assert_eq!(r["remote_peer"].as_str(), Some(target.to_string().as_str()));
        let remote = r["remote_addr"].as_str().unwrap_or_default();
        assert!(
            remote
                .rsplit("/p2p-circuit")
                .next()
                .is_some_and(|tail| tail.starts_with("/webrtc/")),
            "try {t}: the connection is WebRTC (after the signalling circuit): {remote}"
        );
        assert!(
            r["limits"].is_null(),
            "try {t}: not a limited (relayed) connection: {r}"
        );
        let ice = &r["ice"];
        assert_eq!(ice["state"], "succeeded", "try {t}: ICE pair: {r}");
        assert_eq!(
            ice["local"]["address"].as_str(),
            Some(ADDR),
            "try {t}: Chromium's host candidate is the namespace's address: {r}"
        );
        // the transfer went over the selected candidate pair, not over the relay
        let sent = r["ice_after"]["bytes_sent"].as_u64().unwrap_or(0);
        assert!(
            sent > bytes,
            "try {t}: the ICE pair carried the transfer ({sent} bytes sent): {r}"
        );
        assert_eq!(r["up_bytes"], bytes);
        assert_eq!(r["down_bytes"], bytes);
        assert_eq!(
            r["up_sha256_peer_received"], up_hash,
            "try {t}: page 0 got page 1's bytes"
        );
        assert_eq!(
            r["down_sha256_received"], down_hash,
            "try {t}: page 1 got page 0's bytes"
        );
        setup_ms.push(r["setup_ms"].as_f64().expect("setup_ms"));
    }
    let upgrades = setup_ms.len();
    assert!(
        upgrades >= wanted,
        "{upgrades} direct upgrades in {tries} tries ({wanted} wanted); failed dials: {failed:?}"
    );
    let served = of(&lines, "transfer");
    assert_eq!(
        served.len(),
        upgrades,
        "page 0 served one transfer per upgrade"
    );
    for s in &served {
        assert_eq!(s["page"], 0);
        assert_eq!(s["ok"], true, "page 0's side: {s}");
        let remote = s["remote_addr"].as_str().unwrap_or_default();
        assert!(
            remote.starts_with("/webrtc/") && !remote.contains("/p2p-circuit"),
            "page 0 served the transfer over a direct WebRTC connection: {remote}"
        );
        assert_eq!(s["up_sha256_received"], up_hash);
        assert_eq!(s["down_sha256_peer_received"], down_hash);
    }

    let relayed = after - before;
    // every try's signalling counts (failed ones too), divided by the upgrades
    let per_upgrade = relayed / upgrades as u64;
    assert!(
        per_upgrade < SIGNALLING_LIMIT,
        "the relay carried {relayed} bytes for {upgrades} upgrades ({per_upgrade} per upgrade): \
         more than signalling"
    );
    setup_ms.sort_by(f64::total_cmp);
    let table = format!(
        "| tries | direct upgrades | set-up p50 | set-up max | relayed per upgrade | transfer |\n\
         |---|---|---|---|---|---|\n\
         | {tries} | {upgrades}/{tries} | {:.0} ms | {:.0} ms | {:.1} kB | {} MiB each way, hash-checked |\n",
        percentile(&setup_ms, 0.5),
        setup_ms[setup_ms.len() - 1],
        per_upgrade as f64 / 1000.0,
        bytes / MIB,
    );
    eprintln!("\nbrowser → browser WebRTC through the relay over {label}:\n\n{table}");
    row.pass(format!(
        "{upgrades}/{tries} direct, set-up p50 {:.0} ms, relay carried {:.1} kB per upgrade, {} MiB each way hash-checked",
        percentile(&setup_ms, 0.5),
        per_upgrade as f64 / 1000.0,
        bytes / MIB
    ));
    drop(relay);
}
