//! The one process harness: the `macula-relay` binary as a real OS process (Cargo builds it for
//! the integration tests: `CARGO_BIN_EXE_macula-relay`). It reads the peer id and address from
//! stdout, keeps the log (stderr, echoed to the test's output), sends signals and waits for the
//! exit, every wait bounded. Each process gets its own data directory (`STATE_DIRECTORY`, a
//! temporary directory), so its identity is its own and nothing is written outside it.

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{mpsc, Arc, Mutex},
    time::{Duration, Instant},
};

use libp2p::{core::multiaddr::Protocol, Multiaddr, PeerId};

/// How long a test waits for a process to print, log or exit.
pub const PROCESS_WAIT: Duration = Duration::from_secs(30);

/// Path of the `macula-relay` binary, built by Cargo for the integration tests.
pub fn relay_node_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_macula-relay"))
}

/// Runs the binary to completion (`--print-config`, bad configs, `ctl`), bounded by
/// [`PROCESS_WAIT`], with a data directory of its own.
pub fn run_to_end(args: &[&str]) -> Output {
    let data_dir = tempfile::tempdir().expect("temporary data directory");
    run_to_end_in(args, data_dir.path())
}

/// [`run_to_end`] with `data_dir` as its default data directory (`STATE_DIRECTORY`).
pub fn run_to_end_in(args: &[&str], data_dir: &std::path::Path) -> Output {
    let mut child = Command::new(relay_node_binary())
        .args(args)
        .env("RUST_LOG", "info")
        .env("STATE_DIRECTORY", data_dir)
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
    let status = wait_bounded(&mut child, PROCESS_WAIT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("relay_node {args:?} did not finish within {PROCESS_WAIT:?}");
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

/// A running relay node process; killed on drop.
pub struct RelayProcess {
    child: Child,
    pub peer_id: PeerId,
    /// The first address it printed (with `/p2p/<id>`).
    pub addr: Multiaddr,
    /// Every further stdout line.
    pub stdout: mpsc::Receiver<String>,
    stdout_lines: Arc<Mutex<Vec<String>>>,
    log: Arc<Mutex<String>>,
    log_lines: mpsc::Receiver<String>,
    /// Its default data directory (identity key), removed on drop.
    pub data_dir: tempfile::TempDir,
}

impl RelayProcess {
    /// Starts the relay node with `args` and waits for its first printed listen address. Every
    /// peer of a test is on loopback, so the node announces private addresses
    /// (`--allow-private-addrs`).
    pub fn start(args: &[&str]) -> Self {
        let mut args = args.to_vec();
        args.push("--allow-private-addrs");
        Self::start_as_is(&args)
    }

    /// [`start`](Self::start) with `args` only.
    pub fn start_as_is(args: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        Self::start_in(args, data_dir)
    }

    /// [`start_as_is`](Self::start_as_is) with `data_dir` as its default data directory (a
    /// restart in the same directory keeps the identity).
    pub fn start_in(args: &[&str], data_dir: tempfile::TempDir) -> Self {
        let mut command = Command::new(relay_node_binary());
        command.args(args);
        Self::spawn(command, args, data_dir)
    }

    /// [`start_as_is`](Self::start_as_is) inside the network namespace `ns` (`ip netns exec`).
    pub fn start_in_netns(ns: &str, args: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .arg(relay_node_binary())
            .args(args);
        Self::spawn(command, args, data_dir)
    }

    fn spawn(mut command: Command, args: &[&str], data_dir: tempfile::TempDir) -> Self {
        let binary = relay_node_binary();
        let mut child = command
            .env("STATE_DIRECTORY", data_dir.path())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let log = Arc::new(Mutex::new(String::new()));
        let (log_tx, log_lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log_sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[relay_node] {line}");
                let mut log = log_sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
                let _ = log_tx.send(line);
            }
        });
        let stdout_lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, stdout) = mpsc::channel();
        let lines_sink = stdout_lines.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                lines_sink.lock().unwrap().push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = stdout.recv_timeout(PROCESS_WAIT).unwrap_or_else(|_| {
            panic!("relay_node {args:?} printed no address within {PROCESS_WAIT:?}")
        });
        let addr: Multiaddr = first.parse().unwrap_or_else(|e| panic!("{first:?}: {e}"));
        let Some(Protocol::P2p(peer_id)) = addr.iter().last() else {
            panic!("printed address {addr} does not end with /p2p/<peer id>");
        };
        RelayProcess {
            child,
            peer_id,
            addr,
            stdout,
            stdout_lines,
            log,
            log_lines,
            data_dir,
        }
    }

    /// The names of its threads (`/proc/<pid>/task/*/comm`; empty where there is no `/proc`).
    #[allow(dead_code)]
    pub fn thread_names(&self) -> Vec<String> {
        let tasks = format!("/proc/{}/task", self.child.id());
        let Ok(entries) = std::fs::read_dir(tasks) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
            .map(|name| name.trim_end().to_string())
            .collect()
    }

    /// The circuit address of `target` through it.
    pub fn circuit_addr(&self, target: PeerId) -> Multiaddr {
        self.addr
            .clone()
            .with(Protocol::P2pCircuit)
            .with(Protocol::P2p(target))
    }

    /// Waits (at most [`PROCESS_WAIT`]) for the first new log line for which `f` gives `Some`.
    pub fn wait_log<T>(&self, what: &str, mut f: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + PROCESS_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.log_lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "relay_node did not log {what} within {PROCESS_WAIT:?}; log:\n{}",
                    self.log()
                )
            });
            if let Some(t) = f(&line) {
                return t;
            }
        }
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
        self.signal("TERM");
    }

    /// Sends it a signal (`"HUP"`, `"TERM"`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Stops it (SIGKILL) and waits for the exit, handing back its data directory for a
    /// restart.
    pub fn kill_keeping_data(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let placeholder = tempfile::tempdir().expect("temporary directory");
        std::mem::replace(&mut self.data_dir, placeholder)
    }

    /// Waits (bounded by [`PROCESS_WAIT`], off the runtime's threads) for it to exit.
    pub async fn exit_status(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PROCESS_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the node did not exit within {PROCESS_WAIT:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
