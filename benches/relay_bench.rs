//! Relay benchmark: our relay against the stock rust-libp2p relay, the js-libp2p relay server
//! and a direct connection, in one run, on one machine. See BENCHMARKS.md.
//!
//! ```text
//! cargo bench --bench relay_bench                 # full run (~15 min on 2 cores)
//! cargo bench --bench relay_bench -- --quick      # fewer repetitions, smaller transfers
//! cargo bench --bench relay_bench -- --only stock,ours --json target/relay_bench.json
//! ```
//!
//! Every relay runs as its own OS process (`examples/bench_relay.rs` for ours and the stock
//! `libp2p::relay::Behaviour`; `interop/js/relay-server.mjs` under `interop/js/node_modules/.bin/node`
//! for js-libp2p), the client peers in other processes (`examples/bench_client.rs`), all on
//! 127.0.0.0/8 TCP + noise + yamux. The relay's CPU time comes from `/proc/<pid>/stat`
//! (utime + stime), its memory from `/proc/<pid>/status` (VmRSS). Each figure is the median of
//! the repetitions, printed as `median [min–max]`.
//!
//! Options: `--quick`, `--smoke` (seconds; what `tests/bench_smoke.rs` runs), `--only
//! direct,stock,js,ours,throttled`, `--reps N` (all repetition counts), `--json PATH` (all
//! samples), `--no-build` (don't run `cargo build` for the helper examples first).

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
    Direct,
    Stock,
    Js,
    Ours,
    Throttled,
}

impl Column {
    pub const ALL: [Column; 5] = [
        Column::Direct,
        Column::Stock,
        Column::Js,
        Column::Ours,
        Column::Throttled,
    ];

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
}

/// Sizes and repetition counts of a run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: &'static str,
    pub reps_throughput: usize,
    pub reps_setup: usize,
    pub reps_memory: usize,
    pub reps_paced: usize,
    pub single_bytes: u64,
    pub warmup_bytes: u64,
    pub aggregate_sessions: usize,
    pub aggregate_bytes: u64,
    /// The throttled relay's per-session rate (bytes/s and direction).
    pub throttle_rate: u64,
    /// Length of a throttled transfer, seconds.
    pub throttle_secs: u64,
    pub setup_targets: usize,
    pub setup_sources: usize,
    pub setup_sequential: usize,
    pub setup_concurrent: usize,
    pub setup_in_flight_per_source: usize,
    pub reservations: usize,
    /// No new reservation is started after this (the js relay slows down as they add up).
    pub reservation_deadline: Duration,
    pub idle_targets: usize,
    pub idle_sources: usize,
    pub idle_per_source: usize,
    /// Pause before reading a relay's memory.
    pub settle: Duration,
}

const MIB: u64 = 1024 * 1024;
const GIB: f64 = (1u64 << 30) as f64;

impl Plan {
    pub fn full() -> Plan {
        Plan {
            name: "full",
            reps_throughput: 5,
            reps_setup: 5,
            reps_memory: 3,
            reps_paced: 3,
            single_bytes: 256 * MIB,
            warmup_bytes: 8 * MIB,
            aggregate_sessions: 100,
            aggregate_bytes: 8 * MIB,
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
            settle: Duration::from_secs(2),
        }
    }

    pub fn quick() -> Plan {
        Plan {
            name: "quick",
            reps_throughput: 3,
            reps_setup: 3,
            reps_memory: 1,
            reps_paced: 1,
            aggregate_bytes: 4 * MIB,
            reservation_deadline: Duration::from_secs(60),
            ..Plan::full()
        }
    }

    pub fn smoke() -> Plan {
        Plan {
            name: "smoke",
            reps_throughput: 1,
            reps_setup: 1,
            reps_memory: 1,
            reps_paced: 1,
            single_bytes: MIB,
            warmup_bytes: 64 * 1024,
            aggregate_sessions: 3,
            aggregate_bytes: 256 * 1024,
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
            settle: Duration::from_millis(200),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub plan: Plan,
    pub columns: Vec<Column>,
    pub build: bool,
    pub json: Option<PathBuf>,
}

pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
    let mut plan = Plan::full();
    let mut columns = Column::ALL.to_vec();
    let mut build = true;
    let mut json = None;
    let mut reps = None;
    let mut args = args.into_iter();
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
            // Passed by `cargo bench`.
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if let Some(n) = reps {
        plan.reps_throughput = n;
        plan.reps_setup = n;
        plan.reps_memory = n;
        plan.reps_paced = n;
    }
    Ok(Options {
        plan,
        columns,
        build,
        json,
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
    addr: String,
}

impl Relay {
    fn pid(&self) -> u32 {
        self.proc.pid()
    }
}

/// All samples of one run: (metric, column) -> values.
#[derive(Default, Debug)]
pub struct Report {
    pub samples: BTreeMap<(String, Column), Vec<f64>>,
    pub notes: Vec<String>,
    pub failures: BTreeMap<(String, Column), String>,
}

impl Report {
    fn add(&mut self, metric: &str, column: Column, value: f64) {
        self.samples
            .entry((metric.to_string(), column))
            .or_default()
            .push(value);
    }

    pub fn values(&self, metric: &str, column: Column) -> &[f64] {
        self.samples
            .get(&(metric.to_string(), column))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    pub fn median(&self, metric: &str, column: Column) -> Option<f64> {
        median(self.values(metric, column))
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
            Column::Stock => {
                let mut c = Command::new(self.env.bin_dir.join("bench_relay"));
                c.args(["--impl", "stock"]);
                c
            }
            Column::Ours => {
                let mut c = Command::new(self.env.bin_dir.join("bench_relay"));
                c.args(["--impl", "ours", "--bandwidth", "0"]);
                c
            }
            Column::Throttled => {
                let mut c = Command::new(self.env.bin_dir.join("bench_relay"));
                c.args(["--impl", "ours", "--bandwidth"]);
                c.arg(self.plan.throttle_rate.to_string());
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
        let addr = ready["addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|a| a.starts_with("/ip4/127.0.0.1/tcp/"))
            .ok_or_else(|| format!("{}: no 127.0.0.1 TCP address in {ready}", column.key()))?
            .to_string();
        thread::sleep(self.plan.settle.min(Duration::from_millis(500)));
        Ok(Some(Relay { proc, addr }))
    }

    fn client(
        &mut self,
        relay: Option<&Relay>,
        peers: usize,
        args: &[String],
    ) -> Result<Proc, String> {
        let mut command = Command::new(self.env.bin_dir.join("bench_client"));
        if let Some(relay) = relay {
            command.args(["--relay", &relay.addr]);
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

    /// Sessions moving data, `metric` = `single` (one session), `aggregate` (many, as fast as
    /// they go) or `paced` (many, each sender paced at the throttle rate). Every column's relay
    /// and client are set up first; then the repetitions go round the columns, so that a load
    /// spike from elsewhere on the machine hits them all alike.
    fn transfers(&mut self, columns: &[Column], metric: &str, failure_key: &str) {
        let plan = self.plan;
        let paced = metric == "paced";
        let reps = if paced {
            plan.reps_paced
        } else {
            plan.reps_throughput
        };
        let mut rigs = Vec::new();
        for &column in columns {
            match self.transfer_rig(column, metric) {
                Ok(rig) => rigs.push(rig),
                Err(e) => {
                    self.record::<()>(failure_key, column, Err(e));
                }
            }
        }
        for rep in 0..reps {
            for rig in rigs.iter_mut() {
                if self.failed(failure_key, rig.column) {
                    continue;
                }
                let r = self.transfer_round(rig, metric, rep, reps);
                self.record(failure_key, rig.column, r);
            }
        }
        for rig in rigs.iter_mut() {
            let _ = rig.client.send("quit");
        }
    }

    fn transfer_sessions(&self, metric: &str) -> usize {
        if metric == "single" {
            1
        } else {
            self.plan.aggregate_sessions
        }
    }

    fn transfer_rig(&mut self, column: Column, metric: &str) -> Result<Rig, String> {
        let plan = self.plan;
        let sessions = self.transfer_sessions(metric);
        let relay = self.start_relay(column)?;
        let mut client = self.client(
            relay.as_ref(),
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
        metric: &str,
        rep: usize,
        reps: usize,
    ) -> Result<(), String> {
        let plan = self.plan;
        let column = rig.column;
        let throttled = column == Column::Throttled;
        let paced = metric == "paced";
        let sessions = self.transfer_sessions(metric);
        let bytes = if throttled || paced {
            plan.throttle_rate * plan.throttle_secs
        } else if sessions == 1 {
            plan.single_bytes
        } else {
            plan.aggregate_bytes
        };
        let go = if paced {
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
        self.report.add(&format!("{metric}_mbps"), column, mbps);
        let mut line = format!(
            "relay_bench: [{}] {metric} rep {}/{reps}: {mbps:.1} MB/s ({:.0} MB in {secs:.2} s)",
            column.key(),
            rep + 1,
            moved / 1e6,
        );
        if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
            let per_gib = (c1 - c0) / (moved / GIB);
            self.report.add(&format!("{metric}_cpu"), column, per_gib);
            line += &format!(", relay CPU {:.2} s = {per_gib:.2} s/GiB", c1 - c0);
        }
        if throttled || paced {
            // Per session, until the last one was confirmed.
            let rate = moved / sessions as f64 / secs;
            let error = (rate / plan.throttle_rate as f64 - 1.0) * 100.0;
            self.report
                .add(&format!("{metric}_rate_err"), column, error);
            if throttled {
                self.report
                    .add(&format!("{metric}_throttle_mbps"), column, rate / 1e6);
                self.report
                    .add(&format!("{metric}_throttle_err"), column, error);
            }
            line += &format!(", {:.3} MB/s per session ({error:+.2}%)", rate / 1e6);
        }
        eprintln!("{line}");
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
        for rep in 0..self.plan.reps_memory {
            for &column in columns {
                if self.failed("per_reservation", column) {
                    continue;
                }
                let r = self.reservation_round(column, rep);
                self.record("per_reservation", column, r);
            }
        }
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
            plan.reps_memory,
            idle / 1024.0,
            count,
            held / 1024.0,
            reserved["secs"].as_f64().unwrap_or(f64::NAN)
        );
        Ok(())
    }

    /// Relay memory with many idle sessions, like [`reservations`](Self::reservations).
    fn idle_sessions(&mut self, columns: &[Column]) {
        for rep in 0..self.plan.reps_memory {
            for &column in columns {
                if self.failed("per_session", column) {
                    continue;
                }
                let r = self.idle_round(column, rep);
                self.record("per_session", column, r);
            }
        }
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

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let cores = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
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
    format!(
        "{cores} cores ({cpu}), {mem:.0} GiB RAM, Linux {}",
        kernel.trim()
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs the benchmark and prints the table; returns all samples.
pub fn run(options: &Options) -> Result<Report, String> {
    let started = Instant::now();
    let plan = &options.plan;
    let nofile = raise_nofile(1 << 20);
    let env = Env::new(options.build)?;
    let load_before = loadavg();
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
    runner.transfers(&columns, "single", "single_mbps");
    runner.transfers(&columns, "aggregate", "aggregate_mbps");
    // Sender-paced sessions through the unthrottled relays: the load of the throttled relay's
    // aggregate run, so their CPU per byte compares with the throttle's. (Not js: 30-45 s a
    // repetition.)
    let paced: Vec<Column> = relays
        .iter()
        .copied()
        .filter(|c| matches!(c, Column::Stock | Column::Ours))
        .collect();
    runner.transfers(&paced, "paced", "paced_cpu");
    if relays.contains(&Column::Throttled) {
        for key in ["cpu", "rate_err"] {
            let values = runner
                .report
                .values(&format!("aggregate_{key}"), Column::Throttled)
                .to_vec();
            for v in values {
                runner
                    .report
                    .add(&format!("paced_{key}"), Column::Throttled, v);
            }
        }
    }
    runner.setups(&columns);
    runner.reservations(&relays);
    runner.idle_sessions(&relays);
    let mut report = runner.report;
    report.notes.push(format!(
        "mode {}; machine: {}; load average before {load_before}, after {}; RLIMIT_NOFILE soft limit {nofile} (inherited by every helper, which also raises its own); took {:.1} min",
        plan.name,
        machine(),
        loadavg(),
        started.elapsed().as_secs_f64() / 60.0
    ));
    println!("{}", render(&report, plan, &options.columns));
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
        let doc = json!({"plan": format!("{plan:?}"), "samples": samples, "failures": failures, "notes": report.notes});
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(report)
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

/// The table, in Markdown.
pub fn render(report: &Report, plan: &Plan, columns: &[Column]) -> String {
    let rate_mb = plan.throttle_rate as f64 / 1e6;
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
            format!(
                "relay CPU per GiB, {} sessions at {rate_mb} MB/s each, s (sender-paced; throttled: relay-paced)",
                plan.aggregate_sessions
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
                "throttle: measured rate of a {rate_mb} MB/s session over {} s, MB/s",
                plan.throttle_secs
            ),
            "single_throttle_mbps",
        ),
        ("throttle error, %".into(), "single_throttle_err"),
        (
            format!(
                "rate of {} sessions at {rate_mb} MB/s (throttled: relay-paced; stock, ours: sender-paced), error of the slowest, %",
                plan.aggregate_sessions
            ),
            "paced_rate_err",
        ),
    ];
    let mut out = String::new();
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
    out += &format!(
        "\nmedian [min–max] of {} (throughput), {} (paced), {} (set-up), {} (memory) repetitions. MB = 10^6 bytes.\n",
        plan.reps_throughput, plan.reps_paced, plan.reps_setup, plan.reps_memory
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
