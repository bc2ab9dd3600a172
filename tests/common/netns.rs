//! A network lab made of Linux network namespaces: namespaces, veth links between them,
//! addresses, routes and nftables rulesets, all created by the test and removed when the [`Lab`]
//! is dropped (also after a panic). Code runs inside a namespace on a thread of its own
//! ([`Lab::spawn_in`]: the thread enters the namespace with `setns`, so every socket it opens
//! lives there); programs run inside one through `ip netns exec`.
//!
//! Needs root (CI runs as root); [`Lab::new`] says why it cannot run otherwise, and the caller
//! skips with that message (as root with `MACULA_REQUIRE_INTEROP=1`, a missing tool fails). No address outside the namespaces is touched: the lab's addresses
//! exist only inside them.

use std::{
    fs::File,
    io::Write,
    os::fd::AsRawFd,
    path::PathBuf,
    process::{Command, Output, Stdio},
    thread::JoinHandle,
};

/// Namespaces of a lab are named `<PREFIX><pid>x<lab>-<name>`; a lab removes leftovers of a
/// process that no longer runs (a test killed by a signal cannot clean up).
const PREFIX: &str = "mrlab";

/// A set of network namespaces, removed on drop.
pub struct Lab {
    tag: String,
    namespaces: Vec<String>,
}

/// Runs `program args` and returns its output; panics with the command and its stderr when it
/// fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl Lab {
    /// A new lab, or why this machine cannot run one (not root, no `ip` or `nft`).
    pub fn new() -> Result<Self, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("network namespaces need root".into());
        }
        for tool in ["ip", "nft"] {
            let found = Command::new(tool)
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !found {
                let why = format!("`{tool}` is missing (Debian: iproute2, nftables)");
                // As root the lab must run where the suite requires its peers (CI).
                assert!(
                    std::env::var("MACULA_REQUIRE_INTEROP").as_deref() != Ok("1"),
                    "MACULA_REQUIRE_INTEROP=1 and the NAT lab cannot run: {why}"
                );
                return Err(why);
            }
        }
        remove_leftovers();
        // Labs of one process (tests run as threads by `cargo test`) get distinct names.
        static LABS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Self {
            tag: format!("{PREFIX}{}x{n}", std::process::id()),
            namespaces: Vec::new(),
        })
    }

    /// Creates namespace `name` (loopback up) and returns its full name.
    pub fn namespace(&mut self, name: &str) -> String {
        let full = format!("{}-{name}", self.tag);
        run("ip", &["netns", "add", &full]);
        self.namespaces.push(full.clone());
        self.exec(&full, "ip", &["link", "set", "lo", "up"]);
        full
    }

    /// Runs `program args` inside namespace `ns`.
    pub fn exec(&self, ns: &str, program: &str, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", ns, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `program args` inside `ns` and tells whether it succeeded (for checks expected to
    /// fail).
    pub fn try_exec(&self, ns: &str, program: &str, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A veth pair: `a_if` in `a`, `b_if` in `b`, both up, with the given addresses (CIDR
    /// notation; IPv6 ones without duplicate address detection, so they work at once).
    pub fn link(
        &self,
        a: &str,
        a_if: &str,
        a_addrs: &[&str],
        b: &str,
        b_if: &str,
        b_addrs: &[&str],
    ) {
        run(
            "ip",
            &[
                "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
            ],
        );
        for (ns, iface, addrs) in [(a, a_if, a_addrs), (b, b_if, b_addrs)] {
            for addr in addrs {
                if addr.contains(':') {
                    self.exec(
                        ns,
                        "ip",
                        &["-6", "addr", "add", addr, "dev", iface, "nodad"],
                    );
                } else {
                    self.exec(ns, "ip", &["addr", "add", addr, "dev", iface]);
                }
            }
            self.exec(ns, "ip", &["link", "set", iface, "up"]);
        }
    }

    /// A namespace named `name` whose only non-loopback interface is a veth (`eth0`, address
    /// `addr`/24) to a gateway namespace (`gw0`, `gateway`/24), with a default route through it:
    /// where Chromium and webrtc-rs gather their ICE host candidates (they skip loopback).
    pub fn host_with_default_route(&mut self, name: &str, addr: &str, gateway: &str) -> String {
        let ns = self.namespace(name);
        let gw = self.namespace(&format!("{name}-gw"));
        self.link(
            &ns,
            "eth0",
            &[&format!("{addr}/24")],
            &gw,
            "gw0",
            &[&format!("{gateway}/24")],
        );
        self.route(&ns, "default", gateway);
        ns
    }

    /// Adds an address to `ns`'s loopback (a host address, e.g. `198.18.0.1/32`).
    pub fn loopback_addr(&self, ns: &str, addr: &str) {
        let family = if addr.contains(':') { "-6" } else { "-4" };
        self.exec(ns, "ip", &[family, "addr", "add", addr, "dev", "lo"]);
    }

    /// Adds a route in `ns`: `to` (a prefix or `default`) via `via`.
    pub fn route(&self, ns: &str, to: &str, via: &str) {
        let family = if via.contains(':') { "-6" } else { "-4" };
        self.exec(ns, "ip", &[family, "route", "add", to, "via", via]);
    }

    /// Sets a sysctl inside `ns` (`net.ipv4.ip_forward=1`, conntrack timeouts).
    pub fn sysctl(&self, ns: &str, setting: &str) {
        self.exec(ns, "sysctl", &["-q", "-w", setting]);
    }

    /// Loads an nftables ruleset into `ns`.
    pub fn nft(&self, ns: &str, ruleset: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "nft in {ns} refused the ruleset: {}\n{ruleset}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Runs `f` on a new thread inside namespace `ns`: every socket it opens lives there.
    pub fn spawn_in<T: Send + 'static>(
        &self,
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = PathBuf::from("/var/run/netns").join(ns);
        std::thread::spawn(move || {
            let file =
                File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
            // SAFETY: a valid namespace file descriptor; the call only changes this thread's
            // network namespace.
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(entered, 0, "setns into {}", path.display());
            f()
        })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.drain(..).rev() {
            kill_processes_in(&ns);
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Kills whatever still runs inside `ns` (a program a panicking test left behind).
fn kill_processes_in(ns: &str) {
    let Ok(output) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            // SAFETY: sending a signal has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Removes namespaces of labs whose process is gone.
fn remove_leftovers() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let alive = PathBuf::from("/proc").join(&pid).exists();
        if !pid.is_empty() && !alive {
            kill_processes_in(&name);
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
        }
    }
}
