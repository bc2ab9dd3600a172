//! The browser peer of the tests: js-libp2p in headless Chromium, driven by Playwright
//! (`interop/browser/driver.mjs`), and the checks of the lines it prints. Shared by the browser
//! test binaries, which include it next to `interop.rs` (`#[path = "common/browser.rs"]`).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use libp2p::{core::multiaddr::Protocol, Multiaddr, PeerId};
use serde_json::Value;

use crate::interop::{self, expected, peer_id_of, Peer, Versions};

/// How long a driver run may take (it gives up by itself after this).
pub const DRIVER_TIMEOUT: Duration = Duration::from_secs(120);

/// One browser run at a time: Chromium is the heaviest thing the suite starts, and the machine
/// has two cores.
pub static BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The browser driver in `interop/browser`, run with the Node 22 that `npm ci` installs there.
pub struct Browser {
    node: PathBuf,
    dir: PathBuf,
    chromium: PathBuf,
}

impl Browser {
    /// The driver; panics, saying what to install, if Chromium or the npm packages are missing.
    pub fn get() -> Browser {
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
            (
                dir.join("node_modules/@libp2p/webrtc/package.json"),
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
        interop::installed_version(&self.dir, package)
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
    pub fn versions(&self) -> Versions {
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
    pub fn driver(&self, name: &str, relay: &Multiaddr, extra: &[&str]) -> Peer {
        let argv = self.argv(relay, DRIVER_TIMEOUT, extra);
        Peer::spawn_with(name, &self.node, &argv, &self.dir, &[], None)
    }

    /// Starts `driver.mjs` inside the network namespace `ns` (`ip netns exec`), against the
    /// relay at `relay`, giving up by itself after `timeout`.
    pub fn driver_in(
        &self,
        ns: &str,
        name: &str,
        relay: &Multiaddr,
        timeout: Duration,
        extra: &[&str],
    ) -> Peer {
        let mut argv: Vec<String> = ["netns", "exec", ns]
            .iter()
            .map(|s| s.to_string())
            .collect();
        argv.push(self.node.display().to_string());
        argv.extend(self.argv(relay, timeout, extra));
        Peer::spawn_with(name, Path::new("ip"), &argv, &self.dir, &[], None)
    }

    fn argv(&self, relay: &Multiaddr, timeout: Duration, extra: &[&str]) -> Vec<String> {
        let mut argv = vec![
            self.dir.join("driver.mjs").display().to_string(),
            "--relay".into(),
            relay.to_string(),
            "--timeout".into(),
            timeout.as_secs().to_string(),
            "--chromium".into(),
            self.chromium.display().to_string(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv
    }
}

/// Reads the driver's lines until it has printed each of `events` once more (past `from` lines
/// already seen), returning them; panics on an error line or after `wait`.
pub async fn events(driver: &mut Peer, from: usize, events: &[&str], wait: Duration) -> Vec<Value> {
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
pub fn check_ready(ready: &Value, relay_addr: &Multiaddr) -> (libp2p::PeerId, f64) {
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
pub async fn check_dialer_result(result: &Value, n: u64) {
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
pub async fn check_listener_transfer(transfer: &Value, n: u64) {
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

/// `n` bytes each way in `ms` milliseconds, as a rate.
pub fn mbit(n: u64, ms: &Value) -> String {
    match ms.as_f64() {
        Some(ms) if ms > 0.0 => format!(
            "{:.0} Mbit/s both ways together",
            (2 * n * 8) as f64 / ms / 1000.0
        ),
        _ => "?".into(),
    }
}

/// What js-libp2p says when the relay never answered its reservation request in time. Over
/// WebRTC-direct this happens now and then for a reason upstream: `libp2p-webrtc` registers its
/// handler for incoming data channels only after the Noise handshake, so a stream the browser
/// opens right after it (identify, the reservation's HOP stream) can be lost (see
/// `patches/libp2p-webrtc-utils/README.md`).
pub const LOST_FIRST_STREAMS: &str = "signal timed out";

/// Starts a driver with `start` and reads `pages` `ready` lines (an error line, e.g. a refused
/// reservation, comes back as `Err`). When a page could not reserve over WebRTC-direct because
/// its first streams were lost ([`LOST_FIRST_STREAMS`]), starts the driver once more, and says
/// so in `row` (the matrix shows the retry and why).
pub async fn ready_pages(
    start: impl Fn() -> Peer,
    pages: usize,
    row: &mut crate::interop::Row,
) -> (Peer, Result<Vec<Value>, Value>) {
    let mut retried = false;
    loop {
        let mut driver = start();
        let mut ready = Vec::new();
        let mut outcome = Ok(());
        while ready.len() < pages {
            match driver.event("ready", crate::interop::READY_WAIT).await {
                Ok(line) => ready.push(line),
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        match outcome {
            Ok(()) => return (driver, Ok(ready)),
            Err(error)
                if !retried
                    && error["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(LOST_FIRST_STREAMS)) =>
            {
                driver.finish(Duration::from_secs(30)).await;
                let why = format!(
                    "a page's reservation over WebRTC-direct got no answer (libp2p-webrtc can \
                     lose the streams a browser opens right after the handshake): {}",
                    error["message"]
                        .as_str()
                        .unwrap_or_default()
                        .replace('\n', " ")
                );
                eprintln!("NOTICE: {why}; starting the browser once more, recorded in its row");
                row.retried(why);
                retried = true;
            }
            Err(error) => return (driver, Err(error)),
        }
    }
}

/// `<relay addr>/p2p-circuit/p2p/<target>`.
pub fn circuit(relay: &Multiaddr, target: PeerId) -> Multiaddr {
    relay
        .clone()
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(target))
}
