//! Relay benchmark: our relay against the stock rust-libp2p relay, the js-libp2p relay server
//! and a direct connection, in one run, on one machine. See BENCHMARKS.md.
//!
//! ```text
//! bash scripts/bench.sh                           # full run; rewrites BENCHMARKS.md's results
//! cargo bench --bench relay_bench                 # full run (~20 min on 2 cores)
//! cargo bench --bench relay_bench -- --quick      # fewer repetitions, smaller transfers
//! cargo bench --bench relay_bench -- --only stock,ours --json target/relay_bench.json
//! ```
//!
//! Every relay runs as its own OS process (`examples/bench_relay.rs` for ours and the stock
//! `libp2p::relay::Behaviour`; `interop/js/relay-server.mjs` under `interop/js/node_modules/.bin/node`
//! for js-libp2p), the client peers in other processes (`examples/bench_client.rs`), all on
//! 127.0.0.0/8 TCP + noise + yamux, and for the QUIC rows QUIC (`/quic-v1`; the js relay has
//! TCP only). The relay's CPU time comes from `/proc/<pid>/stat` (utime + stime), its memory
//! from `/proc/<pid>/status` (VmRSS). Each figure is the median of the repetitions, printed as
//! `median [min–max]`.
//!
//! The repetitions go round the columns, so ours' i-th repetition and the stock relay's i-th
//! ran in the same round, under the same load from elsewhere: the "Targets" table pairs them
//! and gives each pair's ratio ours/stock, and calls a target met when at least 80 % of the
//! pairs (4 of 5) are on the right side of its threshold ([`TARGETS`]).
//!
//! The report starts with a stamp (commit, date, CPUs, kernel, load average before and after)
//! and has a "crypto floor" row: the CPU time to decrypt and re-encrypt a GiB with
//! ChaCha20-Poly1305 (`openssl speed`), the least any relay of noise-encrypted TCP spends.
//!
//! Options: `--quick`, `--smoke` (seconds; what `tests/bench_smoke.rs` runs), `--only
//! direct,stock,js,ours,throttled`, `--reps N` (all repetition counts), `--json PATH` (all
//! samples), `--no-build` (don't run `cargo build` for the helper examples first),
//! `--write-benchmarks PATH` (replace the text between `<!-- relay_bench:begin -->` and
//! `<!-- relay_bench:end -->` in PATH, e.g. BENCHMARKS.md, with the report).

#[path = "support/nofile.rs"]
mod nofile;
use nofile::raise_nofile;
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

/// A column of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Column {
    /// No relay: the source connects to the target directly.
    Direct,
    /// libp2p 0.57's `libp2p::relay::Behaviour`, limits lifted (`bench_relay --impl stock`).
    Stock,
    /// The js-libp2p relay server (`interop/js/relay-server.mjs`), TCP only.
    Js,
    /// Our relay without a bandwidth limit (`bench_relay --impl ours --bandwidth 0`).
    Ours,
    /// Our relay at the reference per-session limit ([`Plan::throttle_rate`]).
    Throttled,
}

impl Column {
    /// Every column, in table order.
    pub const ALL: [Column; 5] = [
        Column::Direct,
        Column::Stock,
        Column::Js,
        Column::Ours,
        Column::Throttled,
    ];

    /// The column's name in `--only` and in the JSON output.
    pub fn key(self) -> &'static str {
        match self {
            Column::Direct => "direct",
            Column::Stock => "stock",
            Column::Js => "js",
            Column::Ours => "ours",
            Column::Throttled => "throttled",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Column::Direct => "direct (no relay)",
            Column::Stock => "stock rust relay",
            Column::Js => "js-libp2p relay",
            Column::Ours => "ours (unthrottled)",
            Column::Throttled => "ours (throttled)",
        }
    }

    fn is_relay(self) -> bool {
        self != Column::Direct
    }

    /// Whether the column runs over QUIC (the js relay has TCP only; the throttled relay's
    /// figures are about the throttle, not the transport).
    fn has_quic(self) -> bool {
        matches!(self, Column::Direct | Column::Stock | Column::Ours)
    }
}

/// How the peers reach the relay (or each other, for the direct column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// Everyone over TCP.
    Tcp,
    /// Everyone over QUIC.
    Quic,
    /// Targets reserve over QUIC, sources dial the relay over TCP (no direct column).
    Mixed,
}

impl Transport {
    /// Appended to a load's name to make its metrics' names (`single_quic_mbps`, ...).
    fn suffix(self) -> &'static str {
        match self {
            Transport::Tcp => "",
            Transport::Quic => "_quic",
            Transport::Mixed => "_mixed",
        }
    }
}

/// Sizes and repetition counts of a run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `full`, `quick` or `smoke`.
    pub name: &'static str,
    /// Repetitions of every throughput run (single and aggregate, each transport).
    pub reps_throughput: usize,
    /// Repetitions of the circuit set-up runs.
    pub reps_setup: usize,
    /// Repetitions of the idle-session memory run.
    pub reps_memory: usize,
    /// Repetitions of the reservation memory run (a target metric).
    pub reps_reservations: usize,
    /// Repetitions of the slow-reader memory run (a target metric).
    pub reps_slow: usize,
    /// Repetitions of the paced runs.
    pub reps_paced: usize,
    /// Bytes of a single-session transfer.
    pub single_bytes: u64,
    /// Bytes each session sends once before the measured repetitions.
    pub warmup_bytes: u64,
    /// Sessions of the aggregate throughput run.
    pub aggregate_sessions: usize,
    /// Bytes each aggregate session sends.
    pub aggregate_bytes: u64,
    /// Sessions of the paced run (each sender paced at [`throttle_rate`](Self::throttle_rate)).
    pub paced_sessions: usize,
    /// The throttled relay's per-session rate (bytes/s and direction).
    pub throttle_rate: u64,
    /// Length of a throttled transfer, seconds.
    pub throttle_secs: u64,
    /// Targets of the set-up runs.
    pub setup_targets: usize,
    /// Sources of the set-up runs' concurrent phase.
    pub setup_sources: usize,
    /// Circuits set up one after another (latency).
    pub setup_sequential: usize,
    /// Circuits set up concurrently (rate).
    pub setup_concurrent: usize,
    /// Circuits in flight per source in the concurrent phase.
    pub setup_in_flight_per_source: usize,
    /// Reservations held for the memory-per-reservation figure.
    pub reservations: usize,
    /// No new reservation is started after this (the js relay slows down as they add up).
    pub reservation_deadline: Duration,
    /// Targets of the idle-session run.
    pub idle_targets: usize,
    /// Sources of the idle-session run.
    pub idle_sources: usize,
    /// Circuits each idle source opens.
    pub idle_per_source: usize,
    /// Circuits of the slow-reader run.
    pub slow_sessions: usize,
    /// Bytes per second each slow reader reads.
    pub slow_read_rate: u64,
    /// The slow-reader run reads the relay's memory no sooner than this after the circuits
    /// opened, and then once it stopped growing, but no later than
    /// [`slow_settle_max`](Self::slow_settle_max).
    pub slow_settle_min: Duration,
    /// See [`slow_settle_min`](Self::slow_settle_min).
    pub slow_settle_max: Duration,
    /// `openssl speed -seconds N` for the crypto floor.
    pub openssl_secs: u64,
    /// Pause before reading a relay's memory.
    pub settle: Duration,
}

const MIB: u64 = 1024 * 1024;
const GIB: f64 = (1u64 << 30) as f64;

impl Plan {
    /// The full run (about 20 minutes on 2 cores with every column).
    pub fn full() -> Plan {
        Plan {
            name: "full",
            reps_throughput: 5,
            reps_setup: 5,
            reps_memory: 3,
            reps_reservations: 5,
            reps_slow: 5,
            reps_paced: 3,
            single_bytes: 256 * MIB,
            warmup_bytes: 8 * MIB,
            aggregate_sessions: 16,
            aggregate_bytes: 8 * MIB,
            paced_sessions: 100,
            throttle_rate: 1_000_000,
            throttle_secs: 10,
            setup_targets: 8,
            setup_sources: 4,
            setup_sequential: 200,
            setup_concurrent: 400,
            setup_in_flight_per_source: 8,
            reservations: 10_000,
            reservation_deadline: Duration::from_secs(60),
            idle_targets: 100,
            idle_sources: 100,
            idle_per_source: 10,
            slow_sessions: 50,
            slow_read_rate: 1000,
            slow_settle_min: Duration::from_secs(3),
            slow_settle_max: Duration::from_secs(20),
            openssl_secs: 3,
            settle: Duration::from_secs(2),
        }
    }

    /// Fewer repetitions (5 of throughput and set-up, 3 of the target memory runs, 1 of the
    /// rest) and smaller aggregate transfers.
    pub fn quick() -> Plan {
        Plan {
            name: "quick",
            reps_throughput: 5,
            reps_setup: 5,
            reps_memory: 1,
            reps_reservations: 3,
            reps_slow: 3,
            reps_paced: 1,
            aggregate_bytes: 4 * MIB,
            reservation_deadline: Duration::from_secs(60),
            ..Plan::full()
        }
    }

    /// Seconds of everything: checks that every measurement still produces a number.
    pub fn smoke() -> Plan {
        Plan {
            name: "smoke",
            reps_throughput: 1,
            reps_setup: 1,
            reps_memory: 1,
            reps_reservations: 1,
            reps_slow: 1,
            reps_paced: 1,
            single_bytes: MIB,
            warmup_bytes: 64 * 1024,
            aggregate_sessions: 3,
            aggregate_bytes: 256 * 1024,
            paced_sessions: 3,
            throttle_rate: 1_000_000,
            throttle_secs: 1,
            setup_targets: 2,
            setup_sources: 2,
            setup_sequential: 10,
            setup_concurrent: 10,
            setup_in_flight_per_source: 4,
            reservations: 20,
            reservation_deadline: Duration::from_secs(60),
            idle_targets: 2,
            idle_sources: 2,
            idle_per_source: 2,
            slow_sessions: 3,
            slow_read_rate: 1000,
            slow_settle_min: Duration::from_millis(500),
            slow_settle_max: Duration::from_secs(2),
            openssl_secs: 1,
            settle: Duration::from_millis(200),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Sizes and repetitions.
    pub plan: Plan,
    /// The columns to run, in table order.
    pub columns: Vec<Column>,
    /// Build the helper examples first.
    pub build: bool,
    /// Write all samples there.
    pub json: Option<PathBuf>,
    /// Replace the generated section of this Markdown file with the report.
    pub write_benchmarks: Option<PathBuf>,
    /// The arguments, as given (for the report's stamp).
    pub args: Vec<String>,
}

/// Parses the benchmark's arguments (see the module documentation).
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut plan = Plan::full();
    let mut columns = Column::ALL.to_vec();
    let mut build = true;
    let mut json = None;
    let mut write_benchmarks = None;
    let mut reps = None;
    let given: Vec<String> = args.into_iter().filter(|a| a != "--bench").collect();
    let mut args = given.clone().into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => plan = Plan::quick(),
            "--smoke" => plan = Plan::smoke(),
            "--no-build" => build = false,
            "--only" => {
                let list = args.next().ok_or("--only needs a list")?;
                columns = list
                    .split(',')
                    .map(|k| {
                        Column::ALL
                            .into_iter()
                            .find(|c| c.key() == k.trim())
                            .ok_or_else(|| format!("unknown column {k}"))
                    })
                    .collect::<Result<_, _>>()?;
                columns.sort();
            }
            "--reps" => {
                let n: usize = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--reps needs a positive number")?;
                reps = Some(n);
            }
            "--json" => json = Some(PathBuf::from(args.next().ok_or("--json needs a path")?)),
            "--write-benchmarks" => {
                let path = args.next().ok_or("--write-benchmarks needs a path")?;
                write_benchmarks = Some(PathBuf::from(path));
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if let Some(n) = reps {
        plan.reps_throughput = n;
        plan.reps_setup = n;
        plan.reps_memory = n;
        plan.reps_reservations = n;
        plan.reps_slow = n;
        plan.reps_paced = n;
    }
    Ok(Options {
        plan,
        columns,
        build,
        json,
        write_benchmarks,
        args: given,
    })
}

// ---------------------------------------------------------------------------------------------
// Processes.

/// A helper process speaking JSON lines on stdout.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Relays are killed at once; clients get their stdin closed and a moment to exit.
    kill_at_once: bool,
}

impl Proc {
    fn spawn(name: &str, command: &mut Command, kill_at_once: bool) -> Result<Proc, String> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("{name}: cannot start {command:?}: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            lines,
            kill_at_once,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next JSON line whose `event` is `event`; an `error` line or an exit is an error.
    fn expect(&mut self, event: &str, timeout: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("{}: no `{event}` within {timeout:?}", self.name))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                    return Err(format!("{}: exited ({status}) before `{event}`", self.name));
                }
            };
            let Ok(value) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            match value["event"].as_str() {
                Some(e) if e == event => return Ok(value),
                Some("error") => return Err(format!("{}: {line}", self.name)),
                _ => {}
            }
        }
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "{line}")
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("{}: write: {e}", self.name))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if !self.kill_at_once {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Relay CPU time so far (user + system), seconds.
fn cpu_secs(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the command name (which may contain spaces): state is field 3.
    let rest = &stat[stat.rfind(')').ok_or("bad stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields[11].parse().map_err(|_| "bad utime")?;
    let stime: f64 = fields[12].parse().map_err(|_| "bad stime")?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((utime + stime) / ticks)
}

/// Resident memory, KiB.
fn rss_kib(pid: u32) -> Result<f64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".to_string())
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Env {
    bin_dir: PathBuf,
    node: Result<PathBuf, String>,
    js_dir: PathBuf,
}

impl Env {
    fn new(build: bool) -> Result<Env, String> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // target/<profile>/deps/<this> -> target/<profile>/examples
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("cannot locate the target directory")?
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n != "debug");
        if build {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut command = Command::new(cargo);
            command.current_dir(manifest).args([
                "build",
                "--example",
                "bench_relay",
                "--example",
                "bench_client",
            ]);
            if release {
                command.arg("--release");
            }
            eprintln!("relay_bench: {command:?}");
            let status = command.status().map_err(|e| format!("cargo build: {e}"))?;
            if !status.success() {
                return Err(format!(
                    "cargo build of the helper examples failed: {status}"
                ));
            }
        }
        let js_dir = manifest.join("interop/js");
        let node_path = js_dir.join("node_modules/.bin/node");
        let node = if !js_dir.join("relay-server.mjs").exists() {
            Err("interop/js/relay-server.mjs not found".to_string())
        } else if !node_path.exists() {
            Err(
                "interop/js/node_modules/.bin/node not found (run `cd interop/js && npm ci`)"
                    .into(),
            )
        } else {
            match Command::new(&node_path).arg("--version").output() {
                Ok(out) if out.status.success() => Ok(node_path),
                Ok(out) => Err(format!("node --version failed: {}", out.status)),
                Err(e) => Err(format!("node: {e}")),
            }
        };
        Ok(Env {
            bin_dir: profile_dir.join("examples"),
            node,
            js_dir,
        })
    }
}

struct Relay {
    proc: Proc,
    /// Its TCP address.
    addr: String,
    /// Its QUIC address (not the js relay's).
    quic: Option<String>,
}

impl Relay {
    fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// All samples of one run: (metric, column) -> values.
#[derive(Default, Debug)]
pub struct Report {
    /// The samples of each metric and column, in the order of the repetitions.
    pub samples: BTreeMap<(String, Column), Vec<f64>>,
    /// The stamp: (what, value), printed first.
    pub stamp: Vec<(String, String)>,
    /// The crypto floor: CPU seconds per GiB to decrypt and re-encrypt, or why there is none.
    pub crypto_floor: Option<Result<CryptoFloor, String>>,
    /// Remarks printed under the table.
    pub notes: Vec<String>,
    /// Metrics that failed, with the error.
    pub failures: BTreeMap<(String, Column), String>,
}

/// ChaCha20-Poly1305 speed on this machine (`openssl speed -evp chacha20-poly1305`).
#[derive(Clone, Copy, Debug)]
pub struct CryptoFloor {
    /// Block size of the figure (the largest openssl measured), bytes.
    pub block: u64,
    /// Bytes per second, one direction (encrypt).
    pub rate: f64,
    /// CPU seconds to decrypt and re-encrypt a GiB: 2 × 2^30 / rate.
    pub secs_per_gib: f64,
}

impl Report {
    fn add(&mut self, metric: &str, column: Column, value: f64) {
        self.samples
            .entry((metric.to_string(), column))
            .or_default()
            .push(value);
    }

    /// The samples of `metric` in `column`, in repetition order (empty if none).
    pub fn values(&self, metric: &str, column: Column) -> &[f64] {
        self.samples
            .get(&(metric.to_string(), column))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The median of [`values`](Self::values).
    pub fn median(&self, metric: &str, column: Column) -> Option<f64> {
        median(self.values(metric, column))
    }

    /// Ours' i-th sample of `metric` over the stock relay's i-th, for every round both have
    /// (a ratio that is not a finite number, from a zero stock sample, is left out).
    pub fn paired_ratios(&self, metric: &str) -> Vec<f64> {
        let ours = self.values(metric, Column::Ours);
        let stock = self.values(metric, Column::Stock);
        ours.iter()
            .zip(stock)
            .map(|(o, s)| o / s)
            .filter(|r| r.is_finite())
            .collect()
    }
}

/// A goal for ours against the stock relay, checked on the paired ratios ours/stock.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// The metric (key in [`Report::samples`]).
    pub metric: &'static str,
    /// What the row says.
    pub label: &'static str,
    /// The ratio must be at most (`true`) or at least (`false`) [`threshold`](Self::threshold).
    pub at_most: bool,
    /// The bound on ours/stock.
    pub threshold: f64,
}

/// The targets of issue 18.
pub const TARGETS: [Target; 8] = [
    Target {
        metric: "single_cpu",
        label: "relay CPU per GiB, single session",
        at_most: true,
        threshold: 0.75,
    },
    Target {
        metric: "aggregate_cpu",
        label: "relay CPU per GiB, aggregate",
        at_most: true,
        threshold: 0.75,
    },
    Target {
        metric: "single_mbps",
        label: "throughput, single session",
        at_most: false,
        threshold: 1.2,
    },
    Target {
        metric: "aggregate_mbps",
        label: "throughput, aggregate",
        at_most: false,
        threshold: 1.2,
    },
    Target {
        metric: "setup_p50",
        label: "circuit set-up p50",
        at_most: true,
        threshold: 0.9,
    },
    Target {
        metric: "setup_p99",
        label: "circuit set-up p99",
        at_most: true,
        threshold: 0.9,
    },
    Target {
        metric: "per_reservation",
        label: "memory per held reservation",
        at_most: true,
        threshold: 0.8,
    },
    Target {
        metric: "slow_per_session",
        label: "memory growth per session under slow readers",
        at_most: true,
        threshold: 0.8,
    },
];

impl Target {
    /// Whether one ratio is on the right side of the threshold.
    pub fn holds(&self, ratio: f64) -> bool {
        if self.at_most {
            ratio <= self.threshold
        } else {
            ratio >= self.threshold
        }
    }

    /// Met: at least ceil(0.8 × pairs) of the pairs hold (4 of 5); `None` without pairs.
    pub fn met(&self, ratios: &[f64]) -> Option<bool> {
        if ratios.is_empty() {
            return None;
        }
        let needed = (ratios.len() * 4).div_ceil(5);
        Some(ratios.iter().filter(|r| self.holds(**r)).count() >= needed)
    }
}

fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Runner<'a> {
    env: Env,
    plan: &'a Plan,
    report: Report,
    /// Next free index of the clients' source-address pool.
    next_ip: u32,
}

impl Runner<'_> {
    fn start_relay(&self, column: Column) -> Result<Option<Relay>, String> {
        let mut command = match column {
            Column::Direct => return Ok(None),
            Column::Stock | Column::Ours | Column::Throttled => {
                let mut c = Command::new(self.env.bin_dir.join("bench_relay"));
                c.args(["--listen", "/ip4/127.0.0.1/tcp/0"])
                    .args(["--listen", "/ip4/127.0.0.1/udp/0/quic-v1"]);
                match column {
                    Column::Stock => c.args(["--impl", "stock"]),
                    Column::Ours => c.args(["--impl", "ours", "--bandwidth", "0"]),
                    _ => c
                        .args(["--impl", "ours", "--bandwidth"])
                        .arg(self.plan.throttle_rate.to_string()),
                };
                c
            }
            Column::Js => {
                let node = self.env.node.as_ref().map_err(Clone::clone)?;
                let mut c = Command::new(node);
                c.current_dir(&self.env.js_dir)
                    .arg("relay-server.mjs")
                    .args(["--listen", "/ip4/127.0.0.1/tcp/0"]);
                c
            }
        };
        let mut proc = Proc::spawn(column.key(), &mut command, true)?;
        let ready = proc.expect("ready", Duration::from_secs(60))?;
        let addrs: Vec<&str> = ready["addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let addr = addrs
            .iter()
            .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))
            .ok_or_else(|| format!("{}: no 127.0.0.1 TCP address in {ready}", column.key()))?
            .to_string();
        let quic = addrs
            .iter()
            .find(|a| a.starts_with("/ip4/127.0.0.1/udp/") && a.contains("/quic-v1/"))
            .map(|a| a.to_string());
        thread::sleep(self.plan.settle.min(Duration::from_millis(500)));
        Ok(Some(Relay { proc, addr, quic }))
    }

    /// A TCP client process (see [`client_over`](Self::client_over)).
    fn client(
        &mut self,
        relay: Option<&Relay>,
        peers: usize,
        args: &[String],
    ) -> Result<Proc, String> {
        self.client_over(relay, Transport::Tcp, peers, args)
    }

    /// A client process with `peers` peers, its targets and sources reaching `relay` (or each
    /// other) over `transport`.
    fn client_over(
        &mut self,
        relay: Option<&Relay>,
        transport: Transport,
        peers: usize,
        args: &[String],
    ) -> Result<Proc, String> {
        let mut command = Command::new(self.env.bin_dir.join("bench_client"));
        match (relay, transport) {
            (Some(relay), Transport::Tcp) => {
                command.args(["--relay", &relay.addr]);
            }
            (Some(relay), Transport::Quic | Transport::Mixed) => {
                let quic = relay.quic.as_ref().ok_or("the relay has no QUIC address")?;
                command.args(["--relay", quic]);
                if transport == Transport::Mixed {
                    command.args(["--source-relay", &relay.addr]);
                }
            }
            (None, Transport::Tcp) => {}
            (None, Transport::Quic) => {
                command.arg("--direct-quic");
            }
            (None, Transport::Mixed) => return Err("no mixed transport without a relay".into()),
        }
        command.args(["--ip-offset", &self.next_ip.to_string()]);
        self.next_ip += peers as u32 + 8;
        command.args(args);
        Proc::spawn("bench_client", &mut command, false)
    }

    fn record<T>(&mut self, metric: &str, column: Column, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("relay_bench: [{}] {metric}: FAILED: {e}", column.key());
                self.report.failures.insert((metric.to_string(), column), e);
                None
            }
        }
    }

    fn failed(&self, metric: &str, column: Column) -> bool {
        self.report
            .failures
            .contains_key(&(metric.to_string(), column))
    }

    /// Sessions moving data over `transport`, `kind` = `single` (one session), `aggregate`
    /// (many, as fast as they go) or `paced` (many, each sender paced at the throttle rate; the
    /// throttled relay paces them itself). Every column's relay and client are set up first;
    /// then the repetitions go round the columns, so that a load spike from elsewhere on the
    /// machine hits them all alike. Metrics: `{kind}{transport suffix}_mbps`, `.._cpu`, ...
    fn transfers(&mut self, columns: &[Column], kind: &'static str, transport: Transport) {
        let plan = self.plan;
        let prefix = format!("{kind}{}", transport.suffix());
        let failure_key = if kind == "paced" {
            "paced_cpu".to_string()
        } else {
            format!("{prefix}_mbps")
        };
        let reps = if kind == "paced" {
            plan.reps_paced
        } else {
            plan.reps_throughput
        };
        let mut rigs = Vec::new();
        for &column in columns {
            match self.transfer_rig(column, kind, transport) {
                Ok(rig) => rigs.push(rig),
                Err(e) => {
                    self.record::<()>(&failure_key, column, Err(e));
                }
            }
        }
        for rep in 0..reps {
            for rig in rigs.iter_mut() {
                if self.failed(&failure_key, rig.column) {
                    continue;
                }
                let r = self.transfer_round(rig, kind, &prefix, rep, reps);
                self.record(&failure_key, rig.column, r);
            }
        }
        for rig in rigs.iter_mut() {
            let _ = rig.client.send("quit");
        }
    }

    fn transfer_sessions(&self, kind: &str) -> usize {
        match kind {
            "single" => 1,
            "paced" => self.plan.paced_sessions,
            _ => self.plan.aggregate_sessions,
        }
    }

    fn transfer_rig(
        &mut self,
        column: Column,
        kind: &str,
        transport: Transport,
    ) -> Result<Rig, String> {
        let plan = self.plan;
        let sessions = self.transfer_sessions(kind);
        let relay = self.start_relay(column)?;
        let mut client = self.client_over(
            relay.as_ref(),
            transport,
            2 * sessions,
            &["transfer".into(), "--sessions".into(), sessions.to_string()],
        )?;
        client.expect("ready", Duration::from_secs(120))?;
        if column != Column::Throttled && plan.warmup_bytes > 0 {
            client.send(&format!("go {}", plan.warmup_bytes))?;
            check_round(&client.expect("round", Duration::from_secs(120))?)?;
        }
        Ok(Rig {
            column,
            relay,
            client,
        })
    }

    fn transfer_round(
        &mut self,
        rig: &mut Rig,
        kind: &str,
        prefix: &str,
        rep: usize,
        reps: usize,
    ) -> Result<(), String> {
        let plan = self.plan;
        let column = rig.column;
        let throttled = column == Column::Throttled;
        let paced = kind == "paced";
        let sessions = self.transfer_sessions(kind);
        let bytes = if throttled || paced {
            plan.throttle_rate * plan.throttle_secs
        } else if sessions == 1 {
            plan.single_bytes
        } else {
            plan.aggregate_bytes
        };
        // The throttled relay paces its sessions itself.
        let go = if paced && !throttled {
            format!("go {bytes} {}", plan.throttle_rate)
        } else {
            format!("go {bytes}")
        };
        let total = bytes * sessions as u64;
        let timeout = Duration::from_secs(60 + total / 2_000_000);
        let relay = rig.relay.as_ref();
        let cpu0 = relay.map(|r| cpu_secs(r.pid())).transpose()?;
        rig.client.send(&go)?;
        let round = rig.client.expect("round", timeout)?;
        let cpu1 = relay.map(|r| cpu_secs(r.pid())).transpose()?;
        check_round(&round)?;
        let secs = round["secs"].as_f64().ok_or("round without secs")?;
        let moved = round["total_bytes"].as_f64().ok_or("round without bytes")?;
        let mbps = moved / secs / 1e6;
        self.report.add(&format!("{prefix}_mbps"), column, mbps);
        let mut line = format!(
            "relay_bench: [{}] {prefix} rep {}/{reps}: {mbps:.1} MB/s ({:.0} MB in {secs:.2} s)",
            column.key(),
            rep + 1,
            moved / 1e6,
        );
        if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
            let per_gib = (c1 - c0) / (moved / GIB);
            self.report.add(&format!("{prefix}_cpu"), column, per_gib);
            line += &format!(", relay CPU {:.2} s = {per_gib:.2} s/GiB", c1 - c0);
        }
        if throttled || paced {
            // Per session, until the last one was confirmed.
            let rate = moved / sessions as f64 / secs;
            let error = (rate / plan.throttle_rate as f64 - 1.0) * 100.0;
            self.report
                .add(&format!("{prefix}_rate_err"), column, error);
            if throttled && !paced {
                self.report
                    .add(&format!("{prefix}_throttle_mbps"), column, rate / 1e6);
                self.report
                    .add(&format!("{prefix}_throttle_err"), column, error);
            }
            line += &format!(", {:.3} MB/s per session ({error:+.2}%)", rate / 1e6);
        }
        eprintln!("{line}");
        Ok(())
    }

    /// Runs `round` `reps` times for each column, the repetitions going round the columns, and
    /// records each under `metric`; a column whose round failed is skipped from then on.
    fn rounds(
        &mut self,
        columns: &[Column],
        reps: usize,
        metric: &str,
        round: fn(&mut Self, Column, usize) -> Result<(), String>,
    ) {
        for rep in 0..reps {
            for &column in columns {
                if self.failed(metric, column) {
                    continue;
                }
                let r = round(self, column, rep);
                self.record(metric, column, r);
            }
        }
    }

    /// Relay memory growth per session under slow readers: a fresh relay per repetition and
    /// column (the repetitions going round the columns); its RSS once the peers are connected,
    /// and again once [`Plan::slow_sessions`] circuits, each source writing as fast as the
    /// circuit accepts and each target reading at [`Plan::slow_read_rate`], have filled the
    /// relay's buffers (RSS no longer growing).
    fn slow_readers(&mut self, columns: &[Column]) {
        let reps = self.plan.reps_slow;
        self.rounds(columns, reps, "slow_per_session", Self::slow_round);
    }

    fn slow_round(&mut self, column: Column, rep: usize) -> Result<(), String> {
        let plan = self.plan;
        let sessions = plan.slow_sessions;
        let relay = self.start_relay(column)?.ok_or("not a relay column")?;
        // The client stops every load by itself well after the measurement.
        let max_secs = (plan.slow_settle_max + Duration::from_secs(120)).as_secs();
        let args: Vec<String> = [
            "slow",
            "--sessions",
            &sessions.to_string(),
            "--read-rate",
            &plan.slow_read_rate.to_string(),
            "--max-secs",
            &max_secs.to_string(),
        ]
        .map(String::from)
        .to_vec();
        let mut client = self.client(Some(&relay), 2 * sessions, &args)?;
        client.expect("connected", Duration::from_secs(120))?;
        thread::sleep(plan.settle);
        let base = rss_kib(relay.pid())?;
        client.send("go")?;
        let opened = client.expect("sessions", Duration::from_secs(120))?;
        if opened["failed"].as_u64() != Some(0) {
            return Err(format!("circuits failed: {opened}"));
        }
        // Settle: at least `slow_settle_min`, then until the RSS grew by less than 1 % (and
        // 256 KiB) over the last second, at most `slow_settle_max`.
        let from = Instant::now();
        let mut history: Vec<f64> = Vec::new();
        let held = loop {
            thread::sleep(Duration::from_millis(250));
            let now = rss_kib(relay.pid())?;
            history.push(now);
            let elapsed = from.elapsed();
            let second_ago = history.len().checked_sub(5).map(|i| history[i]);
            let flat = second_ago.is_some_and(|then| now - then < (then * 0.01).max(256.0));
            if elapsed >= plan.slow_settle_max || (elapsed >= plan.slow_settle_min && flat) {
                break now;
            }
        };
        let settled = from.elapsed().as_secs_f64();
        client.send("stats")?;
        let stats = client.expect("stats", Duration::from_secs(30))?;
        if stats["errors"].as_u64() != Some(0) {
            return Err(format!("slow senders failed: {stats}"));
        }
        let in_flight =
            stats["sent"].as_f64().unwrap_or(0.0) - stats["read"].as_f64().unwrap_or(0.0);
        let per = (held - base) / sessions as f64;
        self.report.add("rss_slow", column, held / 1024.0);
        self.report.add("slow_per_session", column, per);
        self.report.add(
            "slow_in_flight",
            column,
            in_flight / sessions as f64 / 1024.0,
        );
        eprintln!(
            "relay_bench: [{}] slow readers rep {}/{}: {:.1} MiB with peers connected, {:.1} MiB after {settled:.1} s of {sessions} saturated sessions ({per:.1} KiB each; {:.0} KiB sent and not yet read per session)",
            column.key(),
            rep + 1,
            plan.reps_slow,
            base / 1024.0,
            held / 1024.0,
            in_flight / sessions as f64 / 1024.0,
        );
        let _ = client.send("quit");
        Ok(())
    }

    /// Circuit set-up latency and rate; each column keeps its relay, each repetition is a new
    /// client process, the repetitions go round the columns.
    fn setups(&mut self, columns: &[Column]) {
        let plan = self.plan;
        let mut relays = Vec::new();
        for &column in columns {
            match self.start_relay(column) {
                Ok(relay) => relays.push((column, relay)),
                Err(e) => {
                    self.record::<()>("setup_p50", column, Err(e));
                }
            }
        }
        for rep in 0..plan.reps_setup {
            for (column, relay) in &relays {
                if self.failed("setup_p50", *column) {
                    continue;
                }
                let r = self.setup_round(*column, relay.as_ref(), rep);
                self.record("setup_p50", *column, r);
            }
        }
    }

    fn setup_round(
        &mut self,
        column: Column,
        relay: Option<&Relay>,
        rep: usize,
    ) -> Result<(), String> {
        let plan = self.plan;
        let args: Vec<String> = [
            "setup",
            "--targets",
            &plan.setup_targets.to_string(),
            "--sources",
            &plan.setup_sources.to_string(),
            "--sequential",
            &plan.setup_sequential.to_string(),
            "--concurrent",
            &plan.setup_concurrent.to_string(),
            "--concurrency",
            &plan.setup_in_flight_per_source.to_string(),
        ]
        .map(String::from)
        .to_vec();
        let mut client = self.client(relay, plan.setup_targets + plan.setup_sources, &args)?;
        let seq = client.expect("sequential", Duration::from_secs(300))?;
        if seq["errors"].as_u64() != Some(0) {
            return Err(format!("circuit errors: {seq}"));
        }
        let mut samples: Vec<f64> = seq["samples_us"]
            .as_array()
            .ok_or("no samples")?
            .iter()
            .filter_map(Value::as_f64)
            .map(|us| us / 1000.0)
            .collect();
        samples.sort_by(f64::total_cmp);
        let conc = client.expect("concurrent", Duration::from_secs(300))?;
        if conc["errors"].as_u64() != Some(0) {
            return Err(format!("circuit errors: {conc}"));
        }
        let rate = conc["ok"].as_f64().unwrap_or(0.0) / conc["secs"].as_f64().unwrap_or(f64::NAN);
        let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
        self.report.add("setup_p50", column, p50);
        self.report.add("setup_p99", column, p99);
        self.report.add("setup_rate", column, rate);
        eprintln!(
            "relay_bench: [{}] setup rep {}/{}: p50 {p50:.2} ms, p99 {p99:.2} ms over {} circuits; {rate:.0} circuits/s",
            column.key(),
            rep + 1,
            plan.reps_setup,
            samples.len()
        );
        Ok(())
    }

    /// Relay memory with many reservations: a fresh relay per repetition and column, the
    /// repetitions going round the columns.
    fn reservations(&mut self, columns: &[Column]) {
        let reps = self.plan.reps_reservations;
        self.rounds(columns, reps, "per_reservation", Self::reservation_round);
    }

    fn reservation_round(&mut self, column: Column, rep: usize) -> Result<(), String> {
        let plan = self.plan;
        let relay = self.start_relay(column)?.ok_or("not a relay column")?;
        thread::sleep(plan.settle);
        let idle = rss_kib(relay.pid())?;
        self.report.add("rss_idle", column, idle / 1024.0);
        let args = [
            "--setup-concurrency".to_string(),
            "128".into(),
            "reserve".into(),
            "--count".into(),
            plan.reservations.to_string(),
            "--deadline-secs".into(),
            plan.reservation_deadline.as_secs().to_string(),
        ];
        let mut client = self.client(Some(&relay), plan.reservations, &args)?;
        let reserved = client.expect(
            "reserved",
            plan.reservation_deadline + Duration::from_secs(120),
        )?;
        let count = reserved["count"].as_u64().unwrap_or(0) as usize;
        let failed = reserved["failed"].as_u64().unwrap_or(0);
        if count == 0 {
            return Err(format!("no reservation held: {reserved}"));
        }
        if count < plan.reservations {
            self.report.notes.push(format!(
                "{}: only {count} of {} reservations held (rep {}): none started after {} s, {failed} failed (first error: {}); memory per reservation is over those held",
                column.title(),
                plan.reservations,
                rep + 1,
                plan.reservation_deadline.as_secs(),
                reserved["first_error"].as_str().unwrap_or("none"),
            ));
        }
        self.report.add("reservations_held", column, count as f64);
        thread::sleep(plan.settle);
        let held = rss_kib(relay.pid())?;
        let per = (held - idle) / count as f64;
        self.report.add("rss_reservations", column, held / 1024.0);
        self.report.add("per_reservation", column, per);
        eprintln!(
            "relay_bench: [{}] reservations rep {}/{}: idle {:.1} MiB, {} reservations {:.1} MiB ({per:.1} KiB each), set up in {:.1} s",
            column.key(),
            rep + 1,
            plan.reps_reservations,
            idle / 1024.0,
            count,
            held / 1024.0,
            reserved["secs"].as_f64().unwrap_or(f64::NAN)
        );
        Ok(())
    }

    /// Relay memory with many idle sessions, like [`reservations`](Self::reservations).
    fn idle_sessions(&mut self, columns: &[Column]) {
        let reps = self.plan.reps_memory;
        self.rounds(columns, reps, "per_session", Self::idle_round);
    }

    fn idle_round(&mut self, column: Column, rep: usize) -> Result<(), String> {
        let plan = self.plan;
        let sessions = plan.idle_sources * plan.idle_per_source;
        let relay = self.start_relay(column)?.ok_or("not a relay column")?;
        let args: Vec<String> = [
            "idle",
            "--targets",
            &plan.idle_targets.to_string(),
            "--sources",
            &plan.idle_sources.to_string(),
            "--per-source",
            &plan.idle_per_source.to_string(),
        ]
        .map(String::from)
        .to_vec();
        let mut client = self.client(Some(&relay), plan.idle_targets + plan.idle_sources, &args)?;
        client.expect("connected", Duration::from_secs(300))?;
        thread::sleep(plan.settle);
        let base = rss_kib(relay.pid())?;
        client.send("go")?;
        let opened = client.expect("sessions", Duration::from_secs(300))?;
        if opened["failed"].as_u64() != Some(0) {
            return Err(format!("sessions failed: {opened}"));
        }
        thread::sleep(plan.settle);
        let held = rss_kib(relay.pid())?;
        let per = (held - base) / sessions as f64;
        self.report.add("rss_sessions", column, held / 1024.0);
        self.report.add("per_session", column, per);
        eprintln!(
            "relay_bench: [{}] idle sessions rep {}/{}: {:.1} MiB with {} peers connected, {:.1} MiB with {sessions} sessions ({per:.1} KiB each)",
            column.key(),
            rep + 1,
            plan.reps_memory,
            base / 1024.0,
            plan.idle_targets + plan.idle_sources,
            held / 1024.0
        );
        let _ = client.send("quit");
        Ok(())
    }
}

/// A column's transfer set-up: its relay (none for direct) and a client with its sessions up.
struct Rig {
    column: Column,
    relay: Option<Relay>,
    client: Proc,
}

fn check_round(round: &Value) -> Result<(), String> {
    if round["errors"].as_u64() == Some(0) {
        Ok(())
    } else {
        Err(format!("transfer errors: {round}"))
    }
}

/// Output of a command, trimmed, if it ran and succeeded.
fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The checkout's commit, `+dirty` if the working tree has changes.
fn commit() -> String {
    let Some(head) = command_output("git", &["rev-parse", "--short", "HEAD"]) else {
        return "unknown (no git)".into();
    };
    match command_output("git", &["status", "--porcelain"]) {
        Some(status) if !status.is_empty() => format!("{head}+dirty"),
        Some(_) => head,
        None => format!("{head} (git status failed)"),
    }
}

/// The machine: (what, value) rows of the stamp.
fn machine() -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = command_output("nproc", &[]).unwrap_or_else(|| {
        thread::available_parallelism()
            .map(|n| n.to_string())
            .unwrap_or_default()
    });
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    vec![
        ("nproc".into(), nproc),
        ("CPU".into(), cpu),
        ("RAM".into(), format!("{mem:.0} GiB")),
        ("kernel".into(), format!("Linux {}", kernel.trim())),
    ]
}

/// Parses `openssl speed -evp chacha20-poly1305` output: the largest block size and its bytes
/// per second (the table is in 1000s of bytes per second).
pub fn parse_openssl_speed(output: &str) -> Option<(u64, f64)> {
    let mut lines = output.lines();
    let header = lines.find(|l| l.starts_with("type"))?;
    let block: u64 = header
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .next_back()?;
    let row = lines.find(|l| l.to_ascii_lowercase().starts_with("chacha20"))?;
    let last = row.split_whitespace().next_back()?;
    let thousands: f64 = last.strip_suffix('k')?.parse().ok()?;
    Some((block, thousands * 1000.0))
}

/// Runs `openssl speed` (single-threaded) for the crypto floor.
fn crypto_floor(secs: u64) -> Result<CryptoFloor, String> {
    let out = Command::new("openssl")
        .args(["speed", "-seconds", &secs.to_string()])
        .args(["-evp", "chacha20-poly1305"])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("openssl not available ({e})"))?;
    if !out.status.success() {
        return Err(format!("openssl speed failed ({})", out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (block, rate) = parse_openssl_speed(&text).ok_or("cannot parse openssl speed output")?;
    Ok(CryptoFloor {
        block,
        rate,
        secs_per_gib: 2.0 * GIB / rate,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs the benchmark and prints the report; returns all samples.
pub fn run(options: &Options) -> Result<Report, String> {
    let started = Instant::now();
    let plan = &options.plan;
    let nofile = raise_nofile(1 << 20);
    let env = Env::new(options.build)?;
    let load_before = loadavg();
    let date = command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let mut runner = Runner {
        env,
        plan,
        report: Report::default(),
        next_ip: 0,
    };
    let mut columns = options.columns.clone();
    if columns.contains(&Column::Js) {
        if let Err(e) = &runner.env.node {
            runner
                .report
                .notes
                .push(format!("js-libp2p relay: n/a: {e}"));
            columns.retain(|c| *c != Column::Js);
        }
    }
    let relays: Vec<Column> = columns.iter().copied().filter(|c| c.is_relay()).collect();
    let quic: Vec<Column> = columns.iter().copied().filter(|c| c.has_quic()).collect();
    let quic_relays: Vec<Column> = quic.iter().copied().filter(|c| c.is_relay()).collect();
    runner.transfers(&columns, "single", Transport::Tcp);
    runner.transfers(&columns, "aggregate", Transport::Tcp);
    runner.transfers(&quic, "single", Transport::Quic);
    runner.transfers(&quic_relays, "single", Transport::Mixed);
    runner.transfers(&quic, "aggregate", Transport::Quic);
    runner.transfers(&quic_relays, "aggregate", Transport::Mixed);
    // Sender-paced sessions through the unthrottled relays: the load of the throttled relay's
    // relay-paced run, so their CPU per byte compares with the throttle's. (Not js: 30-45 s a
    // repetition.)
    let paced: Vec<Column> = relays
        .iter()
        .copied()
        .filter(|c| matches!(c, Column::Stock | Column::Ours | Column::Throttled))
        .collect();
    runner.transfers(&paced, "paced", Transport::Tcp);
    runner.setups(&columns);
    runner.reservations(&relays);
    runner.idle_sessions(&relays);
    runner.slow_readers(&relays);
    let floor = crypto_floor(plan.openssl_secs);
    let mut report = runner.report;
    report.crypto_floor = Some(floor);
    report.stamp = vec![
        ("commit".into(), commit()),
        ("date".into(), date),
        (
            "run".into(),
            format!(
                "`relay_bench {}` (mode {}), {:.1} min",
                options.args.join(" "),
                plan.name,
                started.elapsed().as_secs_f64() / 60.0
            ),
        ),
    ];
    report.stamp.extend(machine());
    report.stamp.push((
        "load average (1, 5, 15 min)".into(),
        format!("before {load_before}, after {}", loadavg()),
    ));
    report.notes.push(format!(
        "RLIMIT_NOFILE soft limit {nofile} (inherited by every helper, which also raises its own)"
    ));
    let text = render(&report, plan, &options.columns);
    println!("{text}");
    if let Some(path) = &options.json {
        let samples: Vec<Value> = report
            .samples
            .iter()
            .map(|((m, c), v)| json!({"metric": m, "column": c.key(), "values": v}))
            .collect();
        let failures: Vec<Value> = report
            .failures
            .iter()
            .map(|((m, c), e)| json!({"metric": m, "column": c.key(), "error": e}))
            .collect();
        let targets: Vec<Value> = TARGETS
            .iter()
            .map(|t| {
                let ratios = report.paired_ratios(t.metric);
                json!({"metric": t.metric, "at_most": t.at_most, "threshold": t.threshold,
                        "ratios": ratios, "met": t.met(&ratios)})
            })
            .collect();
        let stamp: BTreeMap<_, _> = report.stamp.iter().cloned().collect();
        let floor = match &report.crypto_floor {
            Some(Ok(f)) => {
                json!({"block": f.block, "rate": f.rate, "secs_per_gib": f.secs_per_gib})
            }
            Some(Err(e)) => json!({"error": e}),
            None => Value::Null,
        };
        let doc = json!({"plan": format!("{plan:?}"), "stamp": stamp, "crypto_floor": floor,
                          "samples": samples, "targets": targets, "failures": failures,
                          "notes": report.notes});
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &options.write_benchmarks {
        write_benchmarks(path, &text)?;
        eprintln!("relay_bench: wrote the results into {}", path.display());
    }
    Ok(report)
}

/// Marks the start of the generated section of BENCHMARKS.md.
pub const BEGIN_MARKER: &str = "<!-- relay_bench:begin -->";
/// Marks the end of the generated section of BENCHMARKS.md.
pub const END_MARKER: &str = "<!-- relay_bench:end -->";

/// `document` with the text between [`BEGIN_MARKER`] and [`END_MARKER`] replaced by `generated`.
pub fn replace_generated(document: &str, generated: &str) -> Result<String, String> {
    let begin = document
        .find(BEGIN_MARKER)
        .ok_or_else(|| format!("no {BEGIN_MARKER} marker"))?
        + BEGIN_MARKER.len();
    let end = document[begin..]
        .find(END_MARKER)
        .ok_or_else(|| format!("no {END_MARKER} marker after {BEGIN_MARKER}"))?
        + begin;
    Ok(format!(
        "{}\n{}\n{}",
        &document[..begin],
        generated.trim(),
        &document[end..]
    ))
}

/// Replaces the generated section of the Markdown file at `path` with `generated`.
fn write_benchmarks(path: &Path, generated: &str) -> Result<(), String> {
    let document = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let updated =
        replace_generated(&document, generated).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::write(path, updated).map_err(|e| format!("{}: {e}", path.display()))
}

fn fmt_bytes(b: u64) -> String {
    if b >= MIB && b % MIB == 0 {
        format!("{} MiB", b / MIB)
    } else if b >= 1024 && b % 1024 == 0 {
        format!("{} KiB", b / 1024)
    } else {
        format!("{b} B")
    }
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn cell(report: &Report, metric: &str, column: Column) -> String {
    if report.failures.contains_key(&(metric.to_string(), column)) {
        return "failed".into();
    }
    let values = report.values(metric, column);
    let Some(med) = median(values) else {
        return "n/a".into();
    };
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() > 1 {
        format!("{} [{}–{}]", fmt_num(med), fmt_num(min), fmt_num(max))
    } else {
        fmt_num(med)
    }
}

fn ratio(report: &Report, metric: &str, a: Column, b: Column) -> String {
    match (report.median(metric, a), report.median(metric, b)) {
        (Some(x), Some(y)) if y != 0.0 => format!("{:.2}x", x / y),
        _ => "n/a".into(),
    }
}

/// The "Targets" table: ours/stock per pair of same-round repetitions.
fn render_targets(report: &Report, plan: &Plan) -> String {
    let mut out = String::from(
        "| target (ours / stock) | threshold | ratio of each pair (round 1, 2, ...) | median | min–max | met |\n|---|---|---|---|---|---|\n",
    );
    for target in TARGETS {
        let label = match target.metric {
            "aggregate_cpu" | "aggregate_mbps" => {
                format!("{} ({} sessions)", target.label, plan.aggregate_sessions)
            }
            "slow_per_session" => format!(
                "{} ({} sessions read at {} B/s)",
                target.label, plan.slow_sessions, plan.slow_read_rate
            ),
            "per_reservation" => format!("{} ({})", target.label, plan.reservations),
            _ => target.label.to_string(),
        };
        let threshold = format!(
            "{} {:.2}x",
            if target.at_most { "≤" } else { "≥" },
            target.threshold
        );
        let ratios = report.paired_ratios(target.metric);
        let (pairs, med, range, met) = if ratios.is_empty() {
            ("n/a".into(), "n/a".into(), "n/a".into(), "n/a".to_string())
        } else {
            let pairs = ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ");
            let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let held = ratios.iter().filter(|r| target.holds(**r)).count();
            let met = if target.met(&ratios) == Some(true) {
                format!("**yes** ({held} of {})", ratios.len())
            } else {
                format!("no ({held} of {})", ratios.len())
            };
            (
                pairs,
                format!("{:.2}x", median(&ratios).unwrap_or(f64::NAN)),
                format!("{min:.2}–{max:.2}"),
                met,
            )
        };
        out += &format!("| {label} | {threshold} | {pairs} | {med} | {range} | {met} |\n");
    }
    out += "\nA pair is ours' and the stock relay's repetition of the same round; a target is met when at least 80 % of the pairs (4 of 5) are on its side of the threshold.\n";
    out
}

/// The report, in Markdown: the stamp, the targets, the table of every figure, the notes.
pub fn render(report: &Report, plan: &Plan, columns: &[Column]) -> String {
    let rate_mb = plan.throttle_rate as f64 / 1e6;
    let quic_label = "over QUIC";
    let mixed_label = "mixed (target reserved over QUIC, source over TCP)";
    let rows: Vec<(String, &str)> = vec![
        (
            format!(
                "single-session throughput, MB/s ({}; throttled: {} s at its limit)",
                fmt_bytes(plan.single_bytes),
                plan.throttle_secs
            ),
            "single_mbps",
        ),
        ("relay CPU per GiB, single session, s".into(), "single_cpu"),
        (
            format!(
                "aggregate throughput, {} sessions, MB/s ({} each; throttled: {} s)",
                plan.aggregate_sessions,
                fmt_bytes(plan.aggregate_bytes),
                plan.throttle_secs
            ),
            "aggregate_mbps",
        ),
        (
            format!("relay CPU per GiB, {} sessions, s", plan.aggregate_sessions),
            "aggregate_cpu",
        ),
        (
            format!("single-session throughput {quic_label}, MB/s"),
            "single_quic_mbps",
        ),
        (
            format!("relay CPU per GiB, single session {quic_label}, s"),
            "single_quic_cpu",
        ),
        (
            format!("single-session throughput, {mixed_label}, MB/s"),
            "single_mixed_mbps",
        ),
        (
            format!("relay CPU per GiB, single session, {mixed_label}, s"),
            "single_mixed_cpu",
        ),
        (
            format!(
                "aggregate throughput, {} sessions {quic_label}, MB/s",
                plan.aggregate_sessions
            ),
            "aggregate_quic_mbps",
        ),
        (
            format!(
                "relay CPU per GiB, {} sessions {quic_label}, s",
                plan.aggregate_sessions
            ),
            "aggregate_quic_cpu",
        ),
        (
            format!(
                "aggregate throughput, {} sessions, {mixed_label}, MB/s",
                plan.aggregate_sessions
            ),
            "aggregate_mixed_mbps",
        ),
        (
            format!(
                "relay CPU per GiB, {} sessions, {mixed_label}, s",
                plan.aggregate_sessions
            ),
            "aggregate_mixed_cpu",
        ),
        (
            format!(
                "relay CPU per GiB, {} sessions at {rate_mb} MB/s each, s (sender-paced; throttled: relay-paced)",
                plan.paced_sessions
            ),
            "paced_cpu",
        ),
        (
            format!(
                "circuit set-up p50, ms ({} sequential)",
                plan.setup_sequential
            ),
            "setup_p50",
        ),
        ("circuit set-up p99, ms".into(), "setup_p99"),
        (
            format!(
                "circuits set up per second ({} in flight)",
                plan.setup_sources * plan.setup_in_flight_per_source
            ),
            "setup_rate",
        ),
        ("relay RSS idle, MiB".into(), "rss_idle"),
        (
            format!("relay RSS with {} reservations, MiB", plan.reservations),
            "rss_reservations",
        ),
        ("reservations held".into(), "reservations_held"),
        ("memory per reservation, KiB".into(), "per_reservation"),
        (
            format!(
                "relay RSS with {} idle sessions, MiB",
                plan.idle_sources * plan.idle_per_source
            ),
            "rss_sessions",
        ),
        ("memory per idle session, KiB".into(), "per_session"),
        (
            format!(
                "relay RSS with {} sessions under slow readers ({} B/s), MiB",
                plan.slow_sessions, plan.slow_read_rate
            ),
            "rss_slow",
        ),
        (
            "memory growth per session under slow readers, KiB".into(),
            "slow_per_session",
        ),
        (
            "data sent but not yet read per slow-reader session (all buffers, both peers' included), KiB".into(),
            "slow_in_flight",
        ),
        (
            format!(
                "throttle: measured rate of a {rate_mb} MB/s session over {} s, MB/s",
                plan.throttle_secs
            ),
            "single_throttle_mbps",
        ),
        ("throttle error, %".into(), "single_throttle_err"),
        (
            format!(
                "rate of {} sessions at {rate_mb} MB/s (throttled: relay-paced; stock, ours: sender-paced), error of the slowest, %",
                plan.paced_sessions
            ),
            "paced_rate_err",
        ),
    ];
    let mut out = String::new();
    for (what, value) in &report.stamp {
        out += &format!("- **{what}:** {value}\n");
    }
    if !report.stamp.is_empty() {
        out += "\n";
    }
    out += "### Targets\n\n";
    out += &render_targets(report, plan);
    out += "\n### All figures\n\n";
    out += "| metric |";
    for c in columns {
        out += &format!(" {} |", c.title());
    }
    out += " ours/stock | ours/direct |\n|---|";
    for _ in columns {
        out += "---|";
    }
    out += "---|---|\n";
    for (label, metric) in rows {
        out += &format!("| {label} |");
        for &c in columns {
            out += &format!(" {} |", cell(report, metric, c));
        }
        // No ratio of errors, counts or throttle-only figures.
        let ratios = !(metric.ends_with("_err")
            || metric.starts_with("single_throttle")
            || metric == "reservations_held");
        if ratios {
            out += &format!(
                " {} | {} |\n",
                ratio(report, metric, Column::Ours, Column::Stock),
                ratio(report, metric, Column::Ours, Column::Direct)
            );
        } else {
            out += " | |\n";
        }
    }
    if let Some(floor) = &report.crypto_floor {
        let (value, label) = match floor {
            Ok(f) => (
                fmt_num(f.secs_per_gib),
                format!("{} B blocks, {:.0} MB/s", f.block, f.rate / 1e6),
            ),
            Err(e) => ("n/a".to_string(), e.clone()),
        };
        out += &format!(
            "| crypto floor: CPU s per GiB to decrypt and re-encrypt (openssl speed -evp chacha20-poly1305, largest block: {label}) |"
        );
        for &c in columns {
            let v = if c.is_relay() { value.as_str() } else { "n/a" };
            out += &format!(" {v} |");
        }
        out += " | |\n";
    }
    out += &format!(
        "\nmedian [min–max] of {} (throughput), {} (paced), {} (set-up), {} (reservations), {} (slow readers), {} (idle sessions) repetitions. MB = 10^6 bytes. QUIC rows: n/a for js (TCP only) and the throttled relay.\n",
        plan.reps_throughput,
        plan.reps_paced,
        plan.reps_setup,
        plan.reps_reservations,
        plan.reps_slow,
        plan.reps_memory
    );
    for note in &report.notes {
        out += &format!("- {note}\n");
    }
    for ((metric, column), error) in &report.failures {
        out += &format!("- FAILED {metric} [{}]: {error}\n", column.key());
    }
    out
}

#[allow(dead_code)]
fn main() {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("relay_bench: {e}");
            std::process::exit(2);
        }
    };
    match run(&options) {
        Ok(report) if report.failures.is_empty() => {}
        Ok(_) => std::process::exit(1),
        Err(e) => {
            eprintln!("relay_bench: {e}");
            std::process::exit(2);
        }
    }
}
