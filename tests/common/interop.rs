//! Interop harness: the js-libp2p and py-libp2p driver scripts under `interop/` as child
//! processes that print one JSON object per line, and the results file of the interop matrix.
//!
//! The drivers need `interop/js/node_modules` (`npm ci`) and `interop/py/.venv`
//! (`interop/py/setup.sh`); `scripts/test.sh` installs both and runs the interop tests with
//! `MACULA_REQUIRE_INTEROP=1`. Without that variable at build time the tests are ignored (and
//! reported as such); a test that runs fails if its peers are missing.
// Shared by the interop, browser and DCUtR tests; each uses a part.
#![allow(dead_code)]

use std::{
    fs,
    future::Future,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use tokio::sync::mpsc;

use crate::common::transfer::{expected_hash, Outcome, DOWN_SEED, UP_SEED};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Panics, saying what to install, if an interop runtime is missing: a test that runs must not
/// pass without its peers (the interop tests are ignored unless enabled; see `build.rs`).
fn require(what: &str, missing: Option<String>, how: &str) {
    if let Some(missing) = missing {
        panic!("the {what} interop peers are missing: {missing}; {how}");
    }
}

/// The js-libp2p drivers in `interop/js`, run with the Node 22 that `npm ci` installs there.
#[derive(Debug, Clone)]
pub struct Js {
    pub node: PathBuf,
    pub dir: PathBuf,
    /// How many times a js driver started from this value logged that js-libp2p's connection
    /// monitor aborted a connection (see [`retry_on_js_monitor_abort`]).
    monitor_aborts: Arc<AtomicUsize>,
    /// The network namespace its drivers run in (the NAT lab), if not this process's.
    netns: Option<String>,
}

impl Js {
    /// The js drivers; panics if `interop/js/node_modules` is missing.
    pub fn get() -> Js {
        let dir = repo().join("interop/js");
        let node = dir.join("node_modules/.bin/node");
        let missing = [node.clone(), dir.join("node_modules/libp2p/package.json")]
            .into_iter()
            .find(|p| !p.exists())
            .map(|p| format!("{} does not exist", p.display()));
        require("js-libp2p", missing, "run `cd interop/js && npm ci`");
        Js {
            node,
            dir,
            monitor_aborts: Arc::default(),
            netns: None,
        }
    }

    /// The same drivers, started inside network namespace `ns` (`ip netns exec`).
    pub fn in_netns(&self, ns: &str) -> Js {
        Js {
            netns: Some(ns.to_owned()),
            ..self.clone()
        }
    }

    /// Installed version of a package in `node_modules` (from its `package.json`).
    pub fn package_version(&self, package: &str) -> String {
        installed_version(&self.dir, package)
    }

    /// `js-libp2p <libp2p version>`, and the versions of the packages that matter, all read from
    /// the installed packages.
    pub fn versions(&self) -> Versions {
        let v = |p: &str| format!("{p} {}", self.package_version(p));
        Versions {
            short: format!("js-libp2p {}", self.package_version("libp2p")),
            components: [
                "libp2p",
                "@libp2p/circuit-relay-v2",
                "@libp2p/tcp",
                "@chainsafe/libp2p-noise",
                "@chainsafe/libp2p-yamux",
                "@libp2p/identify",
                "node",
            ]
            .iter()
            .map(|p| format!("js: {}", v(p)))
            .collect(),
        }
    }

    /// Starts `interop/js/<script>.mjs` with `args`.
    pub fn spawn(&self, name: &str, script: &str, args: &[String]) -> Peer {
        let mut argv = vec![self.dir.join(format!("{script}.mjs")).display().to_string()];
        argv.extend(args.iter().cloned());
        let (program, argv) = in_netns(self.netns.as_deref(), &self.node, argv);
        Peer::spawn_with(
            name,
            &program,
            &argv,
            &self.dir,
            // js-libp2p's debug logger, for the connection monitor's errors only
            &[("DEBUG", "libp2p:connection-monitor:error")],
            Some((JS_MONITOR_ABORT, self.monitor_aborts.clone())),
        )
    }

    /// See [`Js::monitor_aborts`](Js).
    pub fn monitor_aborts(&self) -> usize {
        self.monitor_aborts.load(Ordering::SeqCst)
    }

    /// A js target that reserves on `relay` (`--probe-reserve` adds the raw RESERVE reply).
    pub fn target(&self, name: &str, relay: &str, extra: &[&str]) -> Peer {
        let mut args = vec![
            "--relay".into(),
            relay.into(),
            "--lifetime".into(),
            "600".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.spawn(name, "target", &args)
    }

    /// A js source that dials `circuit` and moves `up` bytes to the target and `down` back.
    pub fn source(&self, name: &str, circuit: &str, up: u64, down: u64) -> Peer {
        let args = [
            "--target",
            circuit,
            "--up",
            &up.to_string(),
            "--down",
            &down.to_string(),
            "--timeout",
            &PEER_TIMEOUT.as_secs().to_string(),
        ];
        self.spawn(name, "source", &args.map(String::from))
    }
}

/// The py-libp2p drivers in `interop/py`, run with the venv that `setup.sh` builds there.
#[derive(Debug, Clone)]
pub struct Py {
    pub python: PathBuf,
    pub dir: PathBuf,
    /// The network namespace its drivers run in (the NAT lab), if not this process's.
    netns: Option<String>,
}

/// `program argv` as it runs inside namespace `netns` (`ip netns exec`), or unchanged.
fn in_netns(netns: Option<&str>, program: &Path, argv: Vec<String>) -> (PathBuf, Vec<String>) {
    match netns {
        None => (program.to_path_buf(), argv),
        Some(ns) => {
            let mut wrapped = vec![
                "netns".to_owned(),
                "exec".to_owned(),
                ns.to_owned(),
                program.display().to_string(),
            ];
            wrapped.extend(argv);
            (PathBuf::from("ip"), wrapped)
        }
    }
}

impl Py {
    /// The py drivers; panics if `interop/py/.venv` is missing.
    pub fn get() -> Py {
        let dir = repo().join("interop/py");
        let python = dir.join(".venv/bin/python");
        let missing = if !python.exists() {
            Some(format!("{} does not exist", python.display()))
        } else if Self::find_version(&dir, "libp2p").is_none() {
            Some("py-libp2p is not installed in interop/py/.venv".into())
        } else {
            None
        };
        require("py-libp2p", missing, "run `bash interop/py/setup.sh`");
        Py {
            python,
            dir,
            netns: None,
        }
    }

    /// The same drivers, started inside network namespace `ns` (`ip netns exec`).
    pub fn in_netns(&self, ns: &str) -> Py {
        Py {
            netns: Some(ns.to_owned()),
            ..self.clone()
        }
    }

    /// Version of an installed distribution, from its `<name>-<version>.dist-info` directory.
    fn find_version(dir: &Path, dist: &str) -> Option<String> {
        let lib = dir.join(".venv/lib");
        for python in fs::read_dir(lib).ok()?.flatten() {
            let site = python.path().join("site-packages");
            for entry in fs::read_dir(site).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(version) = name
                    .strip_prefix(&format!("{dist}-"))
                    .and_then(|rest| rest.strip_suffix(".dist-info"))
                {
                    return Some(version.to_owned());
                }
            }
        }
        None
    }

    /// `py-libp2p <version>`, and the versions of the distributions that matter, all read from
    /// the venv.
    pub fn versions(&self) -> Versions {
        let v = |d: &str| {
            let version = Self::find_version(&self.dir, d).unwrap_or_else(|| "?".into());
            format!("py: {d} {version}")
        };
        let python = fs::read_to_string(self.dir.join(".venv/pyvenv.cfg"))
            .ok()
            .and_then(|cfg| {
                cfg.lines()
                    .find_map(|l| l.strip_prefix("version = ").map(str::to_owned))
            })
            .unwrap_or_else(|| "?".into());
        let mut components: Vec<String> = ["libp2p", "trio", "protobuf", "noiseprotocol"]
            .iter()
            .map(|d| v(d))
            .collect();
        components.push(format!("py: CPython {python}"));
        Versions {
            short: format!(
                "py-libp2p {}",
                Self::find_version(&self.dir, "libp2p").unwrap_or_default()
            ),
            components,
        }
    }

    /// Starts `interop/py/<script>.py` with `args`.
    pub fn spawn(&self, name: &str, script: &str, args: &[String]) -> Peer {
        let mut argv = vec![self.dir.join(format!("{script}.py")).display().to_string()];
        argv.extend(args.iter().cloned());
        let (program, argv) = in_netns(self.netns.as_deref(), &self.python, argv);
        Peer::spawn_with(name, &program, &argv, &self.dir, &[], None)
    }

    /// A py target that reserves on `relay` and serves transfers.
    pub fn target(&self, name: &str, relay: &str) -> Peer {
        let args = ["--relay", relay, "--timeout", "600"];
        self.spawn(name, "target", &args.map(String::from))
    }

    /// A py source that dials `circuit` and moves `up` bytes to the target and `down` back.
    pub fn source(&self, name: &str, circuit: &str, up: u64, down: u64) -> Peer {
        let args = [
            "--target",
            circuit,
            "--bytes",
            &up.to_string(),
            "--down",
            &down.to_string(),
            "--timeout",
            &PEER_TIMEOUT.as_secs().to_string(),
        ];
        self.spawn(name, "source", &args.map(String::from))
    }
}

/// Versions of the peers in a matrix row: a short form for the table and the component list.
#[derive(Debug, Clone)]
pub struct Versions {
    pub short: String,
    pub components: Vec<String>,
}

impl Versions {
    /// Both peers' versions (a mixed pair).
    pub fn and(&self, other: &Versions) -> Versions {
        Versions {
            short: format!("{} + {}", self.short, other.short),
            components: self
                .components
                .iter()
                .chain(&other.components)
                .cloned()
                .collect(),
        }
    }
}

/// `rust-libp2p <version>` (the stock peers of the tests), read from `Cargo.lock`.
pub fn rust_versions() -> Versions {
    Versions {
        short: format!("rust-libp2p {}", locked_version("libp2p")),
        components: [
            "libp2p",
            "libp2p-relay",
            "libp2p-dcutr",
            "libp2p-yamux",
            "libp2p-noise",
        ]
        .iter()
        .map(|c| format!("rust: {c} {}", locked_version(c)))
        .collect(),
    }
}

/// Version of a crate in `Cargo.lock` (the first entry with that name).
pub fn locked_version(krate: &str) -> String {
    let lock = fs::read_to_string(repo().join("Cargo.lock")).expect("Cargo.lock");
    let needle = format!("name = \"{krate}\"\nversion = \"");
    let start = lock
        .find(&needle)
        .unwrap_or_else(|| panic!("{krate} not in Cargo.lock"))
        + needle.len();
    lock[start..].split('"').next().unwrap().to_owned()
}

/// The relay under test, as named in the matrix.
pub fn relay_version() -> String {
    format!("macula-relay {}", env!("CARGO_PKG_VERSION"))
}

/// How long a driver may run before it gives up by itself (`--timeout`).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a test waits for a driver's next awaited line (a little over [`PEER_TIMEOUT`]).
pub const LINE_WAIT: Duration = Duration::from_secs(150);
/// How long a test waits for a driver to be ready (reserved, listening).
pub const READY_WAIT: Duration = Duration::from_secs(60);

/// One line of a driver's stdout.
#[derive(Debug, Clone)]
pub enum Line {
    Json(Value),
    Text(String),
}

/// A driver process; killed on drop.
pub struct Peer {
    pub name: String,
    child: Child,
    lines: mpsc::UnboundedReceiver<Line>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// Every JSON line read so far.
    pub seen: Vec<Value>,
}

impl Peer {
    /// Starts `program argv..` in `cwd` with piped stdout and stderr, and `envs` added; counts
    /// in `watch.1` the chunks of stderr in which `watch.0` appears.
    pub fn spawn_with(
        name: &str,
        program: &Path,
        argv: &[String],
        cwd: &Path,
        envs: &[(&str, &str)],
        watch: Option<(&'static str, Arc<AtomicUsize>)>,
    ) -> Peer {
        let mut child = Command::new(program)
            .args(argv)
            .envs(envs.iter().copied())
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {}: {e}", program.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let line = match serde_json::from_str::<Value>(&line) {
                    Ok(v @ Value::Object(_)) => Line::Json(v),
                    _ => Line::Text(line),
                };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut err = child.stderr.take().unwrap();
        let tail = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut seen = 0;
            while let Ok(n @ 1..) = err.read(&mut buf) {
                let mut tail = tail.lock().unwrap();
                tail.extend_from_slice(&buf[..n]);
                let excess = tail.len().saturating_sub(8192);
                tail.drain(..excess);
                if let Some((needle, count)) = &watch {
                    let now = String::from_utf8_lossy(&tail).matches(needle).count();
                    // occurrences in the retained tail only grow until they scroll out
                    if now > seen {
                        count.fetch_add(now - seen, Ordering::SeqCst);
                    }
                    seen = now;
                }
            }
        });
        eprintln!("[{name}] started: {} {}", program.display(), argv.join(" "));
        Peer {
            name: name.to_owned(),
            child,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    /// The last few KiB the process wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The next JSON line, `None` at end of output; panics after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Value> {
        self.next_within(wait).await.unwrap_or_else(|()| {
            panic!(
                "{}: no line within {wait:?}; stderr: {}",
                self.name,
                self.stderr_tail()
            )
        })
    }

    /// The next JSON line, `Ok(None)` at end of output, `Err(())` if none came within `wait`
    /// (for a caller that names what it was waiting for).
    pub async fn next_within(&mut self, wait: Duration) -> Result<Option<Value>, ()> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(Line::Json(v))) => {
                    eprintln!("[{}] {}", self.name, short(&v));
                    self.seen.push(v.clone());
                    return Ok(Some(v));
                }
                Ok(Some(Line::Text(t))) => eprintln!("[{}] (text) {t}", self.name),
                Ok(None) => return Ok(None),
                Err(_) => return Err(()),
            }
        }
    }

    /// Waits for the first line with `"event": <event>` (or an `"error"` line, returned as `Err`).
    pub async fn event(&mut self, event: &str, wait: Duration) -> Result<Value, Value> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(v) = self.next(left).await else {
                let status = self.wait_exit(Duration::from_secs(10)).await;
                panic!(
                    "{}: exited ({status:?}) before printing {event:?}; stderr: {}",
                    self.name,
                    self.stderr_tail()
                );
            };
            match v["event"].as_str() {
                Some(e) if e == event => return Ok(v),
                Some("error") => return Err(v),
                _ => {}
            }
        }
    }

    /// Like [`event`](Self::event) but panics on an error line.
    pub async fn expect(&mut self, event: &str, wait: Duration) -> Value {
        match self.event(event, wait).await {
            Ok(v) => v,
            Err(e) => panic!(
                "{}: error instead of {event:?}: {e}; stderr: {}",
                self.name,
                self.stderr_tail()
            ),
        }
    }

    /// Reads to the end of output and waits for the exit; panics after `wait`.
    pub async fn finish(&mut self, wait: Duration) -> ExitStatus {
        let deadline = Instant::now() + wait;
        while self
            .next(deadline.saturating_duration_since(Instant::now()))
            .await
            .is_some()
        {}
        self.wait_exit(deadline.saturating_duration_since(Instant::now()))
            .await
            .unwrap_or_else(|| panic!("{}: did not exit within {wait:?}", self.name))
    }

    /// The exit status, `None` if still running after `wait`.
    pub async fn wait_exit(&mut self, wait: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last line with `"event": "result"` or `"error"` after the process ended.
    pub async fn outcome(&mut self) -> (ExitStatus, Value) {
        let status = self.finish(LINE_WAIT).await;
        let last = self
            .seen
            .iter()
            .rev()
            .find(|v| matches!(v["event"].as_str(), Some("result" | "error")))
            .cloned()
            .unwrap_or_else(|| {
                panic!(
                    "{}: exited ({status}) without a result or error line; stderr: {}",
                    self.name,
                    self.stderr_tail()
                )
            });
        (status, last)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario steps shared by the js and py suites.
// ---------------------------------------------------------------------------------------------

/// A js target reserved on `relay`: the peer, its `ready` line, its circuit address.
pub async fn js_target(js: &Js, name: &str, relay: &str, extra: &[&str]) -> (Peer, Value, String) {
    let mut target = js.target(name, relay, extra);
    let ready = target.expect("ready", READY_WAIT).await;
    let circuit = ready["circuit_addrs"]
        .as_array()
        .expect("circuit_addrs")
        .iter()
        .filter_map(Value::as_str)
        .find(|a| a.starts_with(relay))
        .unwrap_or_else(|| panic!("no circuit address through {relay} in {ready}"))
        .to_owned();
    (target, ready, circuit)
}

/// A py target reserved on `relay`: the peer, its `reserved` line, its circuit address.
pub async fn py_target(py: &Py, name: &str, relay: &str) -> (Peer, Value, String) {
    let mut target = py.target(name, relay);
    let reserved = target.expect("reserved", READY_WAIT).await;
    let ready = target.expect("ready", READY_WAIT).await;
    let circuit = ready["circuit_addr"]
        .as_str()
        .expect("circuit_addr")
        .to_owned();
    (target, reserved, circuit)
}

/// The `peer_id` field of a driver's `ready` line.
pub fn peer_id_of(ready: &Value) -> libp2p::PeerId {
    ready["peer_id"]
        .as_str()
        .expect("peer_id")
        .parse()
        .expect("a peer id")
}

/// `(up, down)` expected sha256 (hex), computed off the async runtime.
pub async fn expected(up: u64, down: u64) -> (String, String) {
    tokio::task::spawn_blocking(move || {
        (
            hex(&expected_hash(UP_SEED, up)),
            hex(&expected_hash(DOWN_SEED, down)),
        )
    })
    .await
    .unwrap()
}

/// Runs a js source through `circuit` and checks its result line against the expected hashes.
pub async fn js_source_transfer(js: &Js, circuit: &str, up: u64, down: u64) -> Value {
    let want = tokio::spawn(expected(up, down));
    let mut source = js.source("js-source", circuit, up, down);
    let (status, result) = source.outcome().await;
    assert!(
        status.success() && result["event"] == "result" && result["ok"] == true,
        "js source failed ({status}): {result}; stderr: {}",
        source.stderr_tail()
    );
    let (up_hash, down_hash) = want.await.unwrap();
    assert_eq!(result["up_bytes"], up);
    assert_eq!(result["down_bytes"], down);
    assert_eq!(
        result["up_sha256_peer_received"], up_hash,
        "the target got the source's bytes"
    );
    assert_eq!(
        result["down_sha256_received"], down_hash,
        "the source got the target's bytes"
    );
    result
}

/// Runs a py source through `circuit` and checks its result line against the expected hashes.
pub async fn py_source_transfer(py: &Py, circuit: &str, up: u64, down: u64) -> Value {
    let want = tokio::spawn(expected(up, down));
    let mut source = py.source("py-source", circuit, up, down);
    let (status, result) = source.outcome().await;
    assert!(
        status.success() && result["event"] == "result" && result["ok"] == true,
        "py source failed ({status}): {result}; stderr: {}",
        source.stderr_tail()
    );
    let (up_hash, down_hash) = want.await.unwrap();
    assert_eq!(result["sent_bytes"], up);
    assert_eq!(result["received_bytes"], down);
    assert_eq!(result["sent_sha256"], up_hash);
    assert_eq!(
        result["peer_received_sha256"], up_hash,
        "the target got the source's bytes"
    );
    assert_eq!(
        result["received_sha256"], down_hash,
        "the source got the target's bytes"
    );
    result
}

/// The js target's `transfer` line for the next transfer; checks it succeeded.
pub async fn js_target_transfer(target: &mut Peer, up: u64, down: u64) -> Value {
    let t = target
        .event("transfer", LINE_WAIT)
        .await
        .unwrap_or_else(|e| panic!("js target: {e}"));
    assert_eq!(t["ok"], true, "js target transfer: {t}");
    assert_eq!(t["up_bytes"], up);
    assert_eq!(t["down_bytes"], down);
    t
}

/// The py target's `transfer` line for the next transfer; checks it succeeded.
pub async fn py_target_transfer(target: &mut Peer, up: u64, down: u64) -> Value {
    let t = target
        .event("transfer", LINE_WAIT)
        .await
        .unwrap_or_else(|e| panic!("py target: {e}"));
    assert_eq!(t["ok"], true, "py target transfer: {t}");
    assert_eq!(t["received_bytes"], up);
    assert_eq!(t["sent_bytes"], down);
    t
}

/// Waits for the next transfer a rust `TestClient` target served; checks the bytes it got.
pub async fn rust_target_transfer(
    served: &mut mpsc::UnboundedReceiver<std::io::Result<Outcome>>,
    up: u64,
) {
    let outcome = tokio::time::timeout(LINE_WAIT, served.recv())
        .await
        .expect("the rust target served a transfer")
        .expect("serving task alive")
        .expect("rust target transfer");
    assert!(
        outcome.peer_got_what_we_sent,
        "the source got the rust target's bytes"
    );
    assert_eq!(outcome.received, up);
    assert_eq!(
        outcome.received_hash,
        tokio::task::spawn_blocking(move || expected_hash(UP_SEED, up))
            .await
            .unwrap(),
        "the rust target got the source's bytes"
    );
}

/// Checks a rust source's transfer of `n` bytes each way (`TestClient::transfer`): both hashes.
pub async fn rust_source_transfer(
    transfer: impl std::future::Future<Output = std::io::Result<Outcome>>,
    n: u64,
) {
    let outcome = tokio::time::timeout(LINE_WAIT, transfer)
        .await
        .expect("the transfer finishes")
        .expect("rust source transfer");
    assert!(
        outcome.peer_got_what_we_sent,
        "the target got the rust source's bytes"
    );
    assert_eq!(
        outcome.received_hash,
        tokio::task::spawn_blocking(move || expected_hash(DOWN_SEED, n))
            .await
            .unwrap(),
        "the rust source got the target's bytes"
    );
}

/// What js-libp2p (with `DEBUG=libp2p:connection-monitor:error`) logs when its connection
/// monitor aborts a connection: a ping (every 10 s, on relayed connections too) took longer than
/// its timeout (5 s at first). A saturated connection on a busy machine can take that long.
pub const JS_MONITOR_ABORT: &str = "aborting connection due to ping failure";

/// Held during bulk transfers, so that a test binary runs one at a time (the machine has few
/// cores, and a starved js peer can miss its connection monitor's ping timeout).
pub static BULK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `scenario` (which starts its own relay and peers) and, if it panics after js-libp2p's
/// connection monitor aborted a connection of a driver started from `js`, runs it once more.
/// Never silently: the retry and the first attempt's failure are recorded in `row` (and so in
/// the matrix, as "pass (retried)" with the first failure in the note), also when the second
/// attempt fails. Any other failure, or a second one, is the test's failure.
pub async fn retry_on_js_monitor_abort<F, Fut>(js: &Js, row: &mut Row, mut scenario: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let before = js.monitor_aborts();
    let panic = match tokio::spawn(scenario()).await {
        Ok(()) => return,
        Err(e) => e.into_panic(),
    };
    if js.monitor_aborts() == before {
        std::panic::resume_unwind(panic);
    }
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(panic without a message)");
    let first_failure = format!(
        "js-libp2p's connection monitor aborted a connection (a ping took over its timeout) and the scenario panicked: {}",
        cut(message, 400)
    );
    eprintln!(
        "NOTICE: {}: first attempt failed ({first_failure}); running the scenario once more, recorded in its row",
        row.id
    );
    row.retried(first_failure);
    scenario().await;
}

/// `s` cut to at most `max` characters, one line.
fn cut(s: &str, max: usize) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() > max {
        s.chars().take(max).chain(std::iter::once('…')).collect()
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Reservation vouchers: opened and checked with rust-libp2p, independently of the driver that
// received them.
// ---------------------------------------------------------------------------------------------

/// The signed envelope's domain and payload type of a reservation voucher (circuit relay v2).
pub const VOUCHER_DOMAIN: &str = "libp2p-relay-rsvp";
pub const VOUCHER_PAYLOAD_TYPE: [u8; 2] = [0x03, 0x02];

/// A reservation voucher whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedVoucher {
    /// The peer id of the key that signed the envelope.
    pub signer: libp2p::PeerId,
    pub relay: libp2p::PeerId,
    pub peer: libp2p::PeerId,
    pub expiration: u64,
}

/// Opens a voucher (hex of the signed envelope as the relay sent it) with rust-libp2p's
/// `SignedEnvelope`: the signature must verify for the voucher domain and payload type. The
/// payload (`Voucher { relay = 1, peer = 2, expiration = 3 }`) is decoded here, not with the
/// relay's own code.
pub fn open_voucher(hex: &str) -> Result<OpenedVoucher, String> {
    let bytes = unhex(hex)?;
    let envelope = libp2p::core::SignedEnvelope::from_protobuf_encoding(&bytes)
        .map_err(|e| format!("not a signed envelope: {e}"))?;
    let (payload, key) = envelope
        .payload_and_signing_key(VOUCHER_DOMAIN.to_owned(), &VOUCHER_PAYLOAD_TYPE)
        .map_err(|e| format!("signature or payload type does not verify: {e}"))?;
    let (mut relay, mut peer, mut expiration) = (None, None, None);
    let mut pos = 0;
    while pos < payload.len() {
        let tag = varint(payload, &mut pos)?;
        match (tag >> 3, tag & 7) {
            (n @ (1 | 2), 2) => {
                let len = usize::try_from(varint(payload, &mut pos)?).map_err(|e| e.to_string())?;
                let end = pos
                    .checked_add(len)
                    .filter(|end| *end <= payload.len())
                    .ok_or("payload field past the end")?;
                let id = libp2p::PeerId::from_bytes(&payload[pos..end])
                    .map_err(|e| format!("payload field {n} is not a peer id: {e}"))?;
                *(if n == 1 { &mut relay } else { &mut peer }) = Some(id);
                pos = end;
            }
            (3, 0) => expiration = Some(varint(payload, &mut pos)?),
            other => return Err(format!("unexpected payload field {other:?}")),
        }
    }
    Ok(OpenedVoucher {
        signer: key.to_peer_id(),
        relay: relay.ok_or("payload without relay")?,
        peer: peer.ok_or("payload without peer")?,
        expiration: expiration.ok_or("payload without expiration")?,
    })
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("varint too long".into())
}

fn unhex(hex: &str) -> Result<Vec<u8>, String> {
    if hex.len() % 2 != 0 {
        return Err(format!("odd-length hex {hex:?}"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|e| format!("bad hex: {e}")))
        .collect()
}

/// Checks a reservation voucher twice: the driver's own verdict (`check`, from opening it with
/// the peer's libp2p: signature valid for the domain, signed by the relay, naming the relay and
/// the peer, expiring with the reservation), and the same bytes (`hex`) opened here with
/// rust-libp2p against `relay` (its key must have signed it), `peer` and `expire`. Panics with
/// the reason if either fails.
pub fn assert_voucher(
    who: &str,
    check: &Value,
    hex: &str,
    relay: libp2p::PeerId,
    peer: libp2p::PeerId,
    expire: u64,
) {
    assert_eq!(
        check["verified"], true,
        "{who}: the voucher did not verify with the peer's own libp2p: {check}"
    );
    assert_eq!(check["signature_ok"], true, "{who}: {check}");
    assert_eq!(
        check["signer"].as_str(),
        Some(relay.to_string().as_str()),
        "{who}: voucher signed by another key than the relay's: {check}"
    );
    assert_eq!(
        check["expiration"].as_u64(),
        Some(expire),
        "{who}: voucher expiration: {check}"
    );
    let opened = open_voucher(hex).unwrap_or_else(|e| panic!("{who}: voucher {hex}: {e}"));
    assert_eq!(
        opened,
        OpenedVoucher {
            signer: relay,
            relay,
            peer,
            expiration: expire
        },
        "{who}: the voucher, opened with rust-libp2p, against the relay's key, the peer and the reservation's expiry"
    );
}

/// A JSON value for the log, long strings cut.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 600 {
        s.chars().take(600).chain(std::iter::once('…')).collect()
    } else {
        s
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `1 KiB`, `64 MiB`, `1000 B`.
pub fn size(n: u64) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

// ---------------------------------------------------------------------------------------------
// The interop matrix: every scenario appends one JSON line to a results file, which
// `interop/matrix.mjs` (run by scripts/test.sh after `cargo test`) turns into interop/README.md.
// ---------------------------------------------------------------------------------------------

/// The results directory: `$MACULA_INTEROP_RESULTS`, else `<target dir>/interop-results`.
pub fn results_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MACULA_INTEROP_RESULTS") {
        return dir.into();
    }
    // <target>/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .expect("target dir")
        .join("interop-results")
}

static WRITE: Mutex<()> = Mutex::new(());

/// One scenario of the matrix. Written as `fail` when dropped without a verdict (a panic).
pub struct Row {
    suite: &'static str,
    id: String,
    implementation: String,
    versions: Versions,
    scenario: String,
    note: String,
    /// Set when the scenario ran a second time: why the first attempt failed.
    retried: Option<String>,
    done: bool,
    started: Instant,
}

impl Row {
    /// `suite` names the results file; `id` orders the rows in the matrix.
    pub fn new(
        suite: &'static str,
        id: &str,
        implementation: &str,
        versions: &Versions,
        scenario: &str,
    ) -> Row {
        Row {
            suite,
            id: id.to_owned(),
            implementation: implementation.to_owned(),
            versions: versions.clone(),
            scenario: scenario.to_owned(),
            note: String::new(),
            retried: None,
            done: false,
            started: Instant::now(),
        }
    }

    /// What the scenario is doing now (kept as the note if it fails).
    pub fn step(&mut self, note: impl Into<String>) {
        self.note = note.into();
    }

    /// Records that the scenario is run a second time because the first attempt failed with
    /// `first_failure`; the row (pass or fail) carries it as `retried.first_failure`.
    pub fn retried(&mut self, first_failure: impl Into<String>) {
        self.retried = Some(first_failure.into());
    }

    pub fn pass(mut self, note: impl Into<String>) {
        self.note = note.into();
        self.write("pass");
    }

    /// Failed as expected, for the stated upstream reason.
    pub fn xfail(mut self, reason: impl Into<String>) {
        self.note = reason.into();
        self.write("xfail");
    }

    fn write(&mut self, result: &str) {
        self.done = true;
        let row = serde_json::json!({
            "suite": self.suite,
            "id": self.id,
            "implementation": self.implementation,
            "version": self.versions.short,
            "components": self.versions.components,
            "relay": relay_version(),
            "scenario": self.scenario,
            "result": result,
            "note": self.note,
            "seconds": (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "retried": self.retried.as_ref().map(|f| serde_json::json!({ "first_failure": f })),
        });
        let dir = results_dir();
        let _guard = WRITE.lock().unwrap_or_else(|e| e.into_inner());
        fs::create_dir_all(&dir).expect("create results dir");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{}.jsonl", self.suite)))
            .expect("open results file");
        file.write_all(format!("{row}\n").as_bytes())
            .expect("write results file");
        let retried = match &self.retried {
            Some(first) => format!(" (retried; first attempt: {first})"),
            None => String::new(),
        };
        eprintln!(
            "[matrix] {result}: {} / {}: {}{retried}",
            self.implementation, self.scenario, self.note
        );
    }
}

impl Drop for Row {
    fn drop(&mut self) {
        if !self.done {
            let at = std::mem::take(&mut self.note);
            self.note = if at.is_empty() {
                "failed; see the test output".into()
            } else {
                format!("failed while: {at}; see the test output")
            };
            self.write("fail");
        }
    }
}

/// Installed version of `package` in `dir/node_modules` (from its `package.json`).
pub fn installed_version(dir: &Path, package: &str) -> String {
    let path = dir.join("node_modules").join(package).join("package.json");
    let text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let json: Value = serde_json::from_str(&text).expect("package.json is JSON");
    json["version"].as_str().expect("version field").to_owned()
}
