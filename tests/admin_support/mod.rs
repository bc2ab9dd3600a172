//! The example relay peer as a real process with its admin API on: its peer id and address (read
//! from stdout), its admin address (read from its log on stderr), its log, signals, and client
//! helpers that go through it. Test files include it with `mod admin_support;` next to
//! `mod common;`.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use libp2p::{core::multiaddr::Protocol, Multiaddr, PeerId};
use macula_relay::admin::AdminClient;

use crate::common::{ClientEvent, TestClient};

/// How long a test waits for any one thing.
pub const WAIT: Duration = Duration::from_secs(30);

const ADMIN_LOG: &str = "admin API listening on http://";

/// The example binary that `cargo test` builds next to the test binaries.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let path = dir
        .join("examples")
        .join(format!("relay_node{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds it; with `--test <name>` run `cargo build --examples` first",
        path.display()
    );
    path
}

/// Runs the binary to completion (for `--print-config`, bad configs and `ctl`), bounded by
/// [`WAIT`].
pub fn run_to_end(args: &[&str]) -> Output {
    let mut child = Command::new(binary())
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relay_node starts");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let status = wait_bounded(&mut child, WAIT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("relay_node {args:?} did not finish");
    });
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// [`run_to_end`] off the async runtime's worker threads.
pub async fn run_to_end_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_to_end(&args)
    })
    .await
    .unwrap()
}

fn wait_bounded(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// A running relay node process with its admin API on; killed on drop.
pub struct AdminNode {
    child: Child,
    pub peer_id: PeerId,
    /// Its first TCP listen address, with `/p2p/<id>`.
    pub addr: Multiaddr,
    /// Its admin API address.
    pub admin: SocketAddr,
    log: Arc<Mutex<String>>,
    stdout_lines: Arc<Mutex<Vec<String>>>,
}

impl AdminNode {
    /// Starts the node on 127.0.0.1 (TCP, port 0) with its admin API on 127.0.0.1 (port 0),
    /// plus `extra` flags; waits for its address and its admin address.
    pub fn start(extra: &[&str]) -> Self {
        let mut args = vec!["--listen", "/ip4/127.0.0.1/tcp/0", "--admin", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = Command::new(binary())
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("relay_node starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let (admin_tx, admin_rx) = mpsc::channel();
        let (addr_tx, addr_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log_sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(ADMIN_LOG).nth(1) {
                    let addr = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let _ = admin_tx.send(addr);
                }
                let mut log = log_sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let stdout = child.stdout.take().unwrap();
        let lines_sink = stdout_lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                lines_sink.lock().unwrap().push(line.clone());
                let _ = addr_tx.send(line);
            }
        });
        let addr: Multiaddr = addr_rx
            .recv_timeout(WAIT)
            .expect("the node printed its address")
            .parse()
            .expect("stdout line is a multiaddr");
        let Some(Protocol::P2p(peer_id)) = addr.iter().last() else {
            panic!("printed address {addr} does not end with /p2p/<peer id>");
        };
        let admin: SocketAddr = admin_rx
            .recv_timeout(WAIT)
            .expect("the node logged its admin address")
            .parse()
            .expect("admin address is ip:port");
        AdminNode {
            child,
            peer_id,
            addr,
            admin,
            log,
            stdout_lines,
        }
    }

    /// A client of its admin API.
    pub fn client(&self, token: Option<&str>) -> AdminClient {
        AdminClient::new(self.admin, token.map(str::to_owned))
    }

    /// The circuit address of `target` through it.
    pub fn circuit_addr(&self, target: PeerId) -> Multiaddr {
        self.addr
            .clone()
            .with(Protocol::P2pCircuit)
            .with(Protocol::P2p(target))
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Everything it printed on stdout so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout_lines.lock().unwrap().clone()
    }

    /// Sends it SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits (bounded by [`WAIT`], off the runtime's threads) for it to exit.
    pub async fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not exit; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Reserves a slot for `client` on it.
    pub async fn reserve(&self, client: &mut TestClient) {
        client.reserve_on(self.peer_id, self.addr.clone()).await;
    }

    /// Tries to reserve a slot for `client`: Ok if accepted, Err with the client's error if
    /// refused.
    pub async fn try_reserve(&self, client: &mut TestClient) -> Result<(), String> {
        let (relay, addr) = (self.peer_id, self.addr.clone());
        let dial = addr.clone();
        client.run(move |s| s.dial(dial).unwrap());
        client
            .expect("connected to relay", |e| match e {
                ClientEvent::Connected {
                    peer,
                    relayed: false,
                } if *peer == relay => Some(()),
                _ => None,
            })
            .await;
        client.run(move |s| {
            s.listen_on(addr.with(Protocol::P2pCircuit)).unwrap();
        });
        client
            .expect("reservation answer", |e| match e {
                ClientEvent::ReservationAccepted { .. } => Some(Ok(())),
                ClientEvent::ListenerClosed { error } => Some(Err(error.clone())),
                _ => None,
            })
            .await
    }

    /// Dials `target` through it; Ok once the relayed connection is up.
    pub async fn dial_through(
        &self,
        source: &mut TestClient,
        target: PeerId,
    ) -> Result<(), String> {
        source.dial_circuit(self.circuit_addr(target), target).await
    }
}

impl Drop for AdminNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 100 ms until it gives `Some`, for at most [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A parsed Prometheus scrape.
pub struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    /// Parses Prometheus (or OpenMetrics) text with a text-format parser.
    pub fn parse(text: &str) -> Self {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Scrape(prometheus_parse::Scrape::parse(lines).expect("metrics text parses"))
    }

    /// The value of the series `name` whose labels include `labels`; `None` if absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.last().map(|b| b.count).unwrap_or(0.0)
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            })
    }

    /// [`value`](Self::value), which must be present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no series {name} {labels:?} in the scrape"))
    }
}
