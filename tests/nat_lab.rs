//! The NAT lab: the relay's real job, through real NATs. Network namespaces make an "internet"
//! (198.18.0.0/15 and 2001:2::/48, the benchmarking ranges) where the relay node (the real
//! binary) runs, and sites behind routers of different behaviour:
//!
//! - **cone**: nftables masquerade, which keeps the source port (endpoint-independent mapping);
//! - **symmetric**: masquerade `fully-random` (a new port per connection: endpoint-dependent
//!   mapping);
//! - **double**: a peer behind two cone routers;
//! - **ipv6**: a stateful firewall and no NAT.
//!
//! Every router drops unsolicited inbound traffic. For each pair of sites, over
//! [`TRIES`] tries with fresh peers (stock rust-libp2p: relay client, DCUtR, identify, ping): the
//! target cannot be dialled directly (checked), reserves on the relay, the source reaches it
//! through the relay (a hash-checked transfer both ways), DCUtR is attempted and its outcome
//! recorded, and the connection that remains (direct after an upgrade, relayed after a failed
//! one) carries a second transfer. The reservation's addresses are the relay's public ones.
//! js-libp2p and py-libp2p peers (the interop drivers, run inside the namespaces) take either
//! role behind a cone NAT, with a rust peer on the other side (they carry no DCUtR).
//! The results are written as markdown matrices (`target/tmp/nat-lab-*.md`, which
//! `scripts/test.sh` copies into `docs/nat-lab.md`).
//!
//! Needs root; skips with the reason otherwise. Every namespace is removed on drop, panics
//! included.
#![cfg(feature = "cli")]

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

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

#[path = "common/interop.rs"]
mod interop;

use common::{
    nat_peer::{is_relayed, NatPeer, PeerEvent},
    netns::Lab,
    process::RelayProcess,
};
use libp2p::{core::multiaddr::Protocol, Multiaddr, PeerId};

/// Tries per pair of sites.
const TRIES: usize = 10;
/// Bytes each way of every transfer.
const TRANSFER_BYTES: u64 = 256 * 1024;
/// Longest wait for DCUtR's outcome (three attempts, each a TCP dial that may time out).
const DCUTR_WAIT: Duration = Duration::from_secs(45);
/// Longest wait for a TCP connection that must not succeed.
const UNREACHABLE_WAIT: Duration = Duration::from_secs(3);
/// The relay's addresses in the internet namespace.
const RELAY_V4: &str = "198.18.0.1";
const RELAY_V6: &str = "2001:2::1";
const RELAY_PORT: u16 = 4001;
/// The relay node's admin API, on the internet namespace's loopback.
const ADMIN: &str = "127.0.0.1:9090";

/// How a site reaches the internet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nat {
    Cone,
    Symmetric,
    Double,
    Ipv6Firewall,
}

impl Nat {
    fn describe(self) -> &'static str {
        match self {
            Nat::Cone => "cone (masquerade, port kept)",
            Nat::Symmetric => "symmetric (masquerade fully-random)",
            Nat::Double => "double NAT (two cone routers)",
            Nat::Ipv6Firewall => "IPv6, stateful firewall, no NAT",
        }
    }
}

/// A site: a host namespace behind its router(s).
struct Site {
    nat: Nat,
    host: String,
    /// The router facing the internet (the one whose rules a test may change).
    edge: String,
    /// The host's own address.
    host_ip: IpAddr,
    /// The address the internet sees it from (its edge router's, or its own for IPv6).
    public_ip: IpAddr,
}

impl Site {
    fn listen(&self, port: u16) -> Multiaddr {
        match self.host_ip {
            IpAddr::V4(_) => format!("/ip4/0.0.0.0/tcp/{port}"),
            IpAddr::V6(_) => format!("/ip6/::/tcp/{port}"),
        }
        .parse()
        .unwrap()
    }

    fn relay_addr(&self, relay: PeerId) -> Multiaddr {
        match self.host_ip {
            IpAddr::V4(_) => format!("/ip4/{RELAY_V4}/tcp/{RELAY_PORT}/p2p/{relay}"),
            IpAddr::V6(_) => format!("/ip6/{RELAY_V6}/tcp/{RELAY_PORT}/p2p/{relay}"),
        }
        .parse()
        .unwrap()
    }
}

/// The router rules: masquerade (IPv4 only; `fully-random` for a symmetric NAT), forwarding
/// only what the inside started, nothing addressed to the router from outside.
fn router_rules(nat: Nat) -> String {
    let (family, nat_chain) = match nat {
        Nat::Ipv6Firewall => ("ip6", String::new()),
        Nat::Symmetric => (
            "ip",
            "chain postrouting { type nat hook postrouting priority srcnat; policy accept; \
             oifname \"wan\" masquerade fully-random; }"
                .to_string(),
        ),
        Nat::Cone | Nat::Double => (
            "ip",
            "chain postrouting { type nat hook postrouting priority srcnat; policy accept; \
             oifname \"wan\" masquerade; }"
                .to_string(),
        ),
    };
    format!(
        "table {family} lab {{
            {nat_chain}
            chain forward {{ type filter hook forward priority filter; policy drop;
                ct state established,related accept; iifname \"lan\" accept; }}
            chain input {{ type filter hook input priority filter; policy drop;
                ct state established,related accept; iifname {{ \"lo\", \"lan\" }} accept;
                meta l4proto ipv6-icmp accept; }}
        }}"
    )
}

/// Makes a router namespace: `wan` towards `up` (an existing namespace and its interface name
/// and addresses), `lan` with `lan_addr`, forwarding on, `nat`'s rules loaded.
#[allow(clippy::too_many_arguments)]
fn router(
    lab: &mut Lab,
    name: &str,
    nat: Nat,
    up: &str,
    up_if: &str,
    up_addr: &str,
    wan_addr: &str,
    gateway: &str,
) -> String {
    let ns = lab.namespace(name);
    lab.link(up, up_if, &[up_addr], &ns, "wan", &[wan_addr]);
    lab.route(&ns, "default", gateway);
    lab.sysctl(&ns, "net.ipv4.ip_forward=1");
    lab.sysctl(&ns, "net.ipv6.conf.all.forwarding=1");
    lab.nft(&ns, &router_rules(nat));
    ns
}

/// Makes site number `n` (1..) of kind `nat`, connected to the internet namespace `inet`.
fn site(lab: &mut Lab, inet: &str, n: u8, nat: Nat) -> Site {
    let tag = format!("{n}{}", &format!("{nat:?}").to_lowercase()[..3]);
    let host = |lab: &mut Lab, router: &str, lan_addr: &str, host_addr: &str, gw: &str| {
        let ns = lab.namespace(&format!("h{tag}"));
        lab.link(router, "lan", &[lan_addr], &ns, "eth0", &[host_addr]);
        lab.route(&ns, "default", gw);
        // A dial into a dropped SYN gives up after 3 s, not 2 min: DCUtR's failed attempts
        // end in seconds.
        lab.sysctl(&ns, "net.ipv4.tcp_syn_retries=1");
        ns
    };
    let up_if = format!("s{n}");
    if nat == Nat::Ipv6Firewall {
        let edge = router(
            lab,
            &format!("r{tag}"),
            nat,
            inet,
            &up_if,
            &format!("2001:2:0:{n}::1/64"),
            &format!("2001:2:0:{n}::2/64"),
            &format!("2001:2:0:{n}::1"),
        );
        lab.route(
            inet,
            &format!("2001:2:{n}::/64"),
            &format!("2001:2:0:{n}::2"),
        );
        let host = host(
            lab,
            &edge,
            &format!("2001:2:{n}::1/64"),
            &format!("2001:2:{n}::2/64"),
            &format!("2001:2:{n}::1"),
        );
        let ip: IpAddr = format!("2001:2:{n}::2").parse().unwrap();
        return Site {
            nat,
            host,
            edge,
            host_ip: ip,
            public_ip: ip,
        };
    }
    let edge = router(
        lab,
        &format!("r{tag}"),
        nat,
        inet,
        &up_if,
        &format!("198.18.{n}.1/24"),
        &format!("198.18.{n}.2/24"),
        &format!("198.18.{n}.1"),
    );
    // A double NAT puts a second router between the edge and the host.
    let lan_router = if nat == Nat::Double {
        router(
            lab,
            &format!("q{tag}"),
            nat,
            &edge,
            "lan",
            &format!("100.64.{n}.1/24"),
            &format!("100.64.{n}.2/24"),
            &format!("100.64.{n}.1"),
        )
    } else {
        edge.clone()
    };
    let host = host(
        lab,
        &lan_router,
        &format!("10.{n}.0.1/24"),
        &format!("10.{n}.0.2/24"),
        &format!("10.{n}.0.1"),
    );
    Site {
        nat,
        host,
        edge,
        host_ip: format!("10.{n}.0.2").parse().unwrap(),
        public_ip: format!("198.18.{n}.2").parse().unwrap(),
    }
}

/// The internet namespace: the relay's addresses on its loopback, forwarding between sites.
fn internet(lab: &mut Lab) -> String {
    let inet = lab.namespace("inet");
    lab.loopback_addr(&inet, &format!("{RELAY_V4}/32"));
    lab.loopback_addr(&inet, &format!("{RELAY_V6}/128"));
    lab.sysctl(&inet, "net.ipv4.ip_forward=1");
    lab.sysctl(&inet, "net.ipv6.conf.all.forwarding=1");
    inet
}

/// Starts the relay node (the real binary) in `inet`, announcing its two lab addresses.
fn start_relay(inet: &str) -> RelayProcess {
    let v4 = format!("/ip4/{RELAY_V4}/tcp/{RELAY_PORT}");
    let v6 = format!("/ip6/{RELAY_V6}/tcp/{RELAY_PORT}");
    RelayProcess::start_in_netns(
        inet,
        &[
            "--listen",
            &v4,
            "--listen",
            &v6,
            "--external",
            &v4,
            "--external",
            &v6,
            "--ephemeral-identity",
            "--no-registry",
            "--admin",
            ADMIN,
        ],
    )
}

/// Whether a TCP connection to `addr` from namespace `ns` succeeds within
/// [`UNREACHABLE_WAIT`].
fn tcp_connects(lab: &Lab, ns: &str, addr: SocketAddr) -> bool {
    lab.spawn_in(ns, move || {
        TcpStream::connect_timeout(&addr, UNREACHABLE_WAIT).is_ok()
    })
    .join()
    .expect("the connecting thread ends")
}

/// A new lab, or `None` (after saying why) where namespaces are impossible.
fn open_lab() -> Option<Lab> {
    Lab::new()
        .inspect_err(|why| eprintln!("SKIPPED: the NAT lab cannot run here: {why}"))
        .ok()
}

/// What one try measured.
#[derive(Default)]
struct Try {
    reserve: Option<Duration>,
    relayed_transfer: bool,
    upgrade: Option<Result<Duration, String>>,
    after_upgrade_transfer: bool,
}

/// One try: a fresh target behind `t`, a fresh source behind `s`.
async fn one_try(
    lab: &Lab,
    inet: &str,
    relay: &RelayProcess,
    t: &Site,
    s: &Site,
    index: usize,
) -> Try {
    let mut result = Try::default();
    let port = 20_000 + u16::try_from(index).unwrap();
    let started = Instant::now();
    let mut target = NatPeer::start(lab, &t.host, t.listen(port)).await;
    let target_relay = t.relay_addr(relay.peer_id);
    target.connect_relay(&target_relay).await;
    let addrs = target.reserve(&target_relay).await;
    result.reserve = Some(started.elapsed());
    // What the relay announced is what the target can use: its public addresses only.
    for addr in &addrs {
        let ip = addr.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        });
        assert!(
            ip == Some(RELAY_V4.parse().unwrap()) || ip == Some(RELAY_V6.parse().unwrap()),
            "the reservation announced {addr}, not one of the relay's public addresses"
        );
    }

    if index == 0 {
        // The target cannot be dialled directly: not at its own address, not at the address
        // the internet sees it from (its router's, where its relay connection is mapped).
        for ip in [t.host_ip, t.public_ip] {
            let addr = SocketAddr::new(ip, port);
            assert!(
                !tcp_connects(lab, &s.host, addr),
                "{:?} target reachable directly at {addr} from the source's site",
                t.nat
            );
        }
        assert!(
            !tcp_connects(lab, inet, SocketAddr::new(t.public_ip, port)),
            "{:?} target reachable directly from the internet",
            t.nat
        );
    }

    let mut source = NatPeer::start(lab, &s.host, s.listen(port + 10_000)).await;
    source.connect_relay(&s.relay_addr(relay.peer_id)).await;
    let circuit = s
        .relay_addr(relay.peer_id)
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(target.peer_id));
    let target_id = target.peer_id;
    let relayed = source
        .dial_relayed(circuit)
        .await
        .unwrap_or_else(|e| panic!("dialing the target through the relay failed: {e}"));
    let relayed_at = Instant::now();
    // DCUtR (the target, listener of the relayed connection, drives it and reports) runs while
    // the first transfer goes over the relayed connection.
    let source_id = source.peer_id;
    let (transferred, (upgrade, upgraded_after)) = tokio::join!(
        source.transfer(target_id, TRANSFER_BYTES),
        upgrade_outcome(&mut target, source_id, relayed_at)
    );
    result.relayed_transfer = transferred.is_ok();
    result.upgrade = Some(upgrade.clone().map(|_| upgraded_after));
    if upgrade.is_ok() {
        // Use the direct connection alone: wait for the source's side of it, close the
        // relayed one, and transfer again.
        source
            .task
            .expect("the source's side of the direct connection", |e| match e {
                PeerEvent::Connected { peer, addr, .. }
                    if peer == target_id && !is_relayed(&addr) =>
                {
                    Some(())
                }
                _ => None,
            })
            .await;
        source.close(relayed).await;
        source
            .task
            .expect("the relayed connection closed", |e| match e {
                PeerEvent::Closed { connection, .. } if connection == relayed => Some(()),
                _ => None,
            })
            .await;
    }
    result.after_upgrade_transfer = source.transfer(target_id, TRANSFER_BYTES).await.is_ok();
    result
}

/// DCUtR's outcome as the target reports it, and when it came after `since`.
async fn upgrade_outcome(
    target: &mut NatPeer,
    source: PeerId,
    since: Instant,
) -> (Result<libp2p::swarm::ConnectionId, String>, Duration) {
    let deadline = since + DCUTR_WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match target.task.next_within(left).await {
            Some(PeerEvent::Upgrade { peer, result }) if peer == source => {
                return (result, since.elapsed())
            }
            Some(_) => continue,
            None => {
                return (
                    Err(format!("no DCUtR outcome within {DCUTR_WAIT:?}")),
                    since.elapsed(),
                )
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// A matrix row from the tries of one pair.
fn row(t: &Site, s: &Site, tries: &[Try]) -> String {
    let mut reserve: Vec<Duration> = tries.iter().filter_map(|t| t.reserve).collect();
    reserve.sort();
    let mut direct: Vec<Duration> = tries
        .iter()
        .filter_map(|t| t.upgrade.as_ref()?.as_ref().ok().copied())
        .collect();
    direct.sort();
    let relayed_ok = tries.iter().filter(|t| t.relayed_transfer).count();
    let upgraded = direct.len();
    let after: Vec<&Try> = tries.iter().collect();
    let direct_ok = after
        .iter()
        .filter(|t| matches!(t.upgrade, Some(Ok(_))) && t.after_upgrade_transfer)
        .count();
    let failed = tries.len() - upgraded;
    let kept_ok = after
        .iter()
        .filter(|t| !matches!(t.upgrade, Some(Ok(_))) && t.after_upgrade_transfer)
        .count();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let direct_time = if direct.is_empty() {
        "—".to_string()
    } else {
        format!(
            "{:.0} / {:.0}",
            ms(percentile(&direct, 0.5)),
            ms(*direct.last().unwrap())
        )
    };
    format!(
        "| {} | {} | no | {:.0} / {:.0} | {relayed_ok}/{n} | **{upgraded}/{n}** | {direct_time} | {direct_ok}/{upgraded} | {kept_ok}/{failed} |\n",
        t.nat.describe(),
        s.nat.describe(),
        ms(percentile(&reserve, 0.5)),
        ms(*reserve.last().unwrap_or(&Duration::ZERO)),
        n = tries.len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_behind_nats_reserve_reach_each_other_through_the_relay_and_hole_punch_where_the_nat_allows(
) {
    common::swarm_task::init_tracing();
    let Some(mut lab) = open_lab() else {
        return;
    };
    let inet = internet(&mut lab);
    let kinds = [
        Nat::Cone,
        Nat::Cone,
        Nat::Symmetric,
        Nat::Symmetric,
        Nat::Double,
        Nat::Double,
        Nat::Ipv6Firewall,
        Nat::Ipv6Firewall,
    ];
    let sites: Vec<Site> = kinds
        .iter()
        .enumerate()
        .map(|(i, nat)| site(&mut lab, &inet, u8::try_from(i + 1).unwrap(), *nat))
        .collect();
    let relay = start_relay(&inet);
    // (target site, source site): each kind with itself, and a cone target with a symmetric
    // source (one side endpoint-dependent).
    let pairs = [(0, 1), (2, 3), (0, 2), (4, 5), (6, 7)];
    let mut matrix = String::from(
        "| target behind | source behind | target dialable directly | reservation p50 / max, ms \
         | relayed transfer | DCUtR upgraded | time to direct p50 / max, ms \
         | transfer over the direct connection | relayed connection kept after a failed upgrade |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    for (t, s) in pairs {
        let (t, s) = (&sites[t], &sites[s]);
        let mut tries = Vec::new();
        for index in 0..TRIES {
            let one = one_try(&lab, &inet, &relay, t, s, index).await;
            println!(
                "{:?} target, {:?} source, try {index}: reserved in {:?}, relayed transfer {}, DCUtR {:?}, transfer after {}",
                t.nat, s.nat, one.reserve, one.relayed_transfer, one.upgrade, one.after_upgrade_transfer
            );
            tries.push(one);
        }
        matrix.push_str(&row(t, s, &tries));
        for (i, one) in tries.iter().enumerate() {
            if !one.relayed_transfer || !one.after_upgrade_transfer {
                failures.push(format!(
                    "{:?}/{:?} try {i}: a transfer failed",
                    t.nat, s.nat
                ));
            }
        }
        let upgraded = tries
            .iter()
            .filter(|one| matches!(one.upgrade, Some(Ok(_))))
            .count();
        if t.nat == Nat::Symmetric && s.nat == Nat::Symmetric && upgraded > 0 {
            failures.push(format!(
                "{upgraded} direct connections across two symmetric NATs: the lab's NAT is not symmetric"
            ));
        }
    }
    let mut page = String::new();
    let _ = writeln!(
        page,
        "{TRIES} tries per pair, fresh peers each (stock rust-libp2p 0.57: relay client, DCUtR, \
         identify, ping; TCP), {} KiB each way per transfer, relay node defaults.\n",
        TRANSFER_BYTES / 1024
    );
    page.push_str(&matrix);
    println!("{page}");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nat-lab-matrix.md");
    std::fs::write(&out, &page).expect("writing the matrix");
    assert!(failures.is_empty(), "{failures:#?}\n{page}");
}

/// A plain TCP connection without keep-alive from a host to the internet namespace, to show
/// what a NAT does to an idle connection.
struct IdleTcp {
    go: std::sync::mpsc::Sender<()>,
    server: std::thread::JoinHandle<()>,
    client: std::thread::JoinHandle<bool>,
    go_client: std::sync::mpsc::Sender<()>,
}

impl IdleTcp {
    /// Connects from `host` to a listener in `inet` (at the relay's IPv4 address, port 5555).
    fn open(lab: &Lab, inet: &str, host: &str) -> Self {
        use std::io::{Read, Write};
        let addr = SocketAddr::new(RELAY_V4.parse().unwrap(), 5555);
        let (listening_tx, listening_rx) = std::sync::mpsc::channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let server = lab.spawn_in(inet, move || {
            let listener = std::net::TcpListener::bind(addr).expect("control listener");
            listening_tx.send(()).unwrap();
            let (mut conn, _) = listener.accept().expect("control connection");
            let _ = go_rx.recv();
            let _ = conn.write_all(b"x");
            // Keep it open while the client looks.
            std::thread::sleep(UNREACHABLE_WAIT * 2);
        });
        listening_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the control listener is up within 10 s");
        let (go_client, go_client_rx) = std::sync::mpsc::channel::<()>();
        let (connected_tx, connected_rx) = std::sync::mpsc::channel();
        let client = lab.spawn_in(host, move || {
            let mut conn = TcpStream::connect_timeout(&addr, UNREACHABLE_WAIT)
                .expect("the control connection through the NAT");
            connected_tx.send(()).unwrap();
            let _ = go_client_rx.recv();
            conn.set_read_timeout(Some(UNREACHABLE_WAIT)).unwrap();
            let mut byte = [0u8; 1];
            matches!(conn.read(&mut byte), Ok(1))
        });
        connected_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the control connection is up within 10 s");
        Self {
            go,
            server,
            client,
            go_client,
        }
    }

    /// The server sends a byte: whether the client gets it.
    fn reaches_client(self) -> bool {
        self.go_client.send(()).unwrap();
        self.go.send(()).unwrap();
        let received = self.client.join().expect("control client thread");
        self.server.join().expect("control server thread");
        received
    }
}

/// Whether the relay node (its admin API, through `ctl`) lists `peer` among its `what`
/// (`sessions` or `reservations`).
fn relay_lists(lab: &Lab, inet: &str, what: &str, peer: PeerId) -> bool {
    let binary = common::process::relay_node_binary();
    let output = lab.exec(
        inet,
        binary.to_str().unwrap(),
        &["ctl", "--admin", ADMIN, "--json", what],
    );
    String::from_utf8_lossy(&output.stdout).contains(&peer.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_idle_past_the_nat_timeout_survives_and_a_target_whose_uplink_dies_is_freed_in_time(
) {
    common::swarm_task::init_tracing();
    let Some(mut lab) = open_lab() else {
        return;
    };
    let inet = internet(&mut lab);
    // A cone target and a symmetric source: DCUtR fails, the circuit stays relayed.
    let t = site(&mut lab, &inet, 1, Nat::Cone);
    let s = site(&mut lab, &inet, 2, Nat::Symmetric);
    // Routers forget an idle TCP mapping after NAT_IDLE (Linux's default is 5 days).
    const NAT_IDLE: Duration = Duration::from_secs(10);
    for router in [&t.edge, &s.edge] {
        lab.sysctl(
            router,
            &format!(
                "net.netfilter.nf_conntrack_tcp_timeout_established={}",
                NAT_IDLE.as_secs()
            ),
        );
    }
    let relay = start_relay(&inet);

    let mut target = NatPeer::start(&lab, &t.host, t.listen(20_000)).await;
    let relay_t = t.relay_addr(relay.peer_id);
    target.connect_relay(&relay_t).await;
    target.reserve(&relay_t).await;
    let mut source = NatPeer::start(&lab, &s.host, s.listen(30_000)).await;
    source.connect_relay(&s.relay_addr(relay.peer_id)).await;
    let (target_id, source_id) = (target.peer_id, source.peer_id);
    let relayed = source
        .dial_relayed(
            s.relay_addr(relay.peer_id)
                .with(Protocol::P2pCircuit)
                .with(Protocol::P2p(target_id)),
        )
        .await
        .unwrap_or_else(|e| panic!("dialing through the relay failed: {e}"));
    let (upgrade, _) = upgrade_outcome(&mut target, source_id, Instant::now()).await;
    assert!(
        upgrade.is_err(),
        "DCUtR across a symmetric NAT upgraded: {upgrade:?}"
    );

    // Idle for three NAT timeouts: the keep-alive (the relay pings every peer every
    // `PING_INTERVAL`) keeps both mappings, and the circuit still carries a transfer, which
    // the relay must deliver to the target through its NAT. Meanwhile a plain TCP connection
    // without keep-alive, from the target's host through the same router, idles as long: the
    // router must have forgotten it (else the lab proves nothing about keep-alive).
    for router in [&t.edge, &s.edge] {
        let set = lab.exec(
            router,
            "sysctl",
            &["-n", "net.netfilter.nf_conntrack_tcp_timeout_established"],
        );
        assert_eq!(
            String::from_utf8_lossy(&set.stdout).trim(),
            NAT_IDLE.as_secs().to_string()
        );
    }
    let idle_control = IdleTcp::open(&lab, &inet, &t.host);
    tokio::time::sleep(NAT_IDLE * 3).await;
    assert!(
        !idle_control.reaches_client(),
        "the target's router still forwarded to a connection idle for {:?}",
        NAT_IDLE * 3
    );
    source
        .transfer(target_id, TRANSFER_BYTES)
        .await
        .expect("a transfer over the circuit after it idled past the NAT timeout");
    println!(
        "circuit idle for {:?} (NAT timeout {NAT_IDLE:?}) still carried a transfer",
        NAT_IDLE * 3
    );

    // The target's uplink dies: its router drops everything to and from it.
    assert!(relay_lists(&lab, &inet, "sessions", target_id));
    assert!(relay_lists(&lab, &inet, "reservations", target_id));
    let IpAddr::V4(host) = t.host_ip else {
        unreachable!("the cone site is IPv4")
    };
    lab.nft(
        &t.edge,
        &format!(
            "insert rule ip lab forward ip saddr {host} drop\n\
             insert rule ip lab forward ip daddr {host} drop\n"
        ),
    );
    let cut = Instant::now();
    let bound = macula_relay::node::DEAD_PEER_BOUND;
    // The bound, plus the time one `ctl` call takes to look.
    let limit = bound + Duration::from_secs(3);
    let freed_after = loop {
        let session = relay_lists(&lab, &inet, "sessions", target_id);
        let reservation = relay_lists(&lab, &inet, "reservations", target_id);
        if !session && !reservation {
            break cut.elapsed();
        }
        assert!(
            cut.elapsed() < limit,
            "the dead target still holds a {} after {limit:?} (bound {bound:?})",
            if session { "session" } else { "reservation" }
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!("a target whose uplink died was freed after {freed_after:?} (bound {bound:?})");
    // The source learns it too: its relayed connection ends.
    source
        .task
        .expect("the source's relayed connection closed", |e| match e {
            PeerEvent::Closed { connection, .. } if connection == relayed => Some(()),
            _ => None,
        })
        .await;
}

/// A rust peer behind `site` that reached `target` through the relay at `relay`: dials
/// `circuit`, waits for the relayed connection, and runs one transfer. The peer is returned
/// with the result: dropping it at once could reset the circuit before its last bytes (the
/// hash it sends) have reached the target.
async fn rust_source_through(
    lab: &Lab,
    site: &Site,
    relay: &Multiaddr,
    circuit: Multiaddr,
    target: PeerId,
    port: u16,
) -> (NatPeer, Result<(), String>) {
    let mut source = NatPeer::start(lab, &site.host, site.listen(port)).await;
    source.connect_relay(relay).await;
    let result = match source.dial_relayed(circuit).await {
        Ok(_) => source.transfer(target, TRANSFER_BYTES).await,
        Err(e) => Err(e),
    };
    (source, result)
}

/// A rust target behind `site`, reserved on the relay: the peer and its circuit address.
async fn rust_target_behind(
    lab: &Lab,
    site: &Site,
    relay: &Multiaddr,
    port: u16,
) -> (NatPeer, Multiaddr) {
    let mut target = NatPeer::start(lab, &site.host, site.listen(port)).await;
    target.connect_relay(relay).await;
    target.reserve(relay).await;
    let circuit = relay
        .clone()
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(target.peer_id));
    (target, circuit)
}

/// The transfer a rust target served.
async fn served(target: &mut NatPeer) -> Result<(), String> {
    let outcome = tokio::time::timeout(interop::LINE_WAIT, target.served.recv())
        .await
        .map_err(|_| "the rust target served no transfer".to_string())?
        .ok_or("the rust target's serving task ended")?
        .map_err(|e| format!("the rust target's transfer: {e}"))?;
    let expected = tokio::task::spawn_blocking(|| {
        common::transfer::expected_hash(common::transfer::UP_SEED, TRANSFER_BYTES)
    })
    .await
    .unwrap();
    if outcome.peer_got_what_we_sent && outcome.received_hash == expected {
        Ok(())
    } else {
        Err("hash mismatch at the rust target".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_and_py_peers_behind_nats_reserve_and_reach_rust_peers_through_the_relay() {
    common::swarm_task::init_tracing();
    let Some(mut lab) = open_lab() else {
        return;
    };
    let (js, py) = (interop::Js::get(), interop::Py::get());
    let inet = internet(&mut lab);
    let a = site(&mut lab, &inet, 1, Nat::Cone);
    let b = site(&mut lab, &inet, 2, Nat::Cone);
    let relay = start_relay(&inet);
    let relay_a = a.relay_addr(relay.peer_id);
    let relay_b = b.relay_addr(relay.peer_id);
    let n = TRANSFER_BYTES;
    // (implementation, role, reservation or set-up times, successes)
    let mut rows: Vec<(String, &str, Vec<Duration>, usize)> = Vec::new();

    for (name, is_js) in [("js-libp2p", true), ("py-libp2p", false)] {
        let versions = if is_js { js.versions() } else { py.versions() };
        // The js or py peer as the target behind A, a rust source behind B.
        let (mut times, mut ok) = (Vec::new(), 0);
        for index in 0..TRIES {
            let started = Instant::now();
            let relay_str = relay_a.to_string();
            let (mut target, ready, circuit) = if is_js {
                interop::js_target(&js.in_netns(&a.host), "js-target", &relay_str, &[]).await
            } else {
                interop::py_target(&py.in_netns(&a.host), "py-target", &relay_str).await
            };
            times.push(started.elapsed());
            let circuit: Multiaddr = circuit.parse().expect("a circuit address");
            let Some(Protocol::P2p(target_id)) = circuit.iter().last() else {
                panic!("{name} target's circuit address {circuit} does not end in /p2p")
            };
            let _ = ready;
            let port = 30_000 + u16::try_from(index).unwrap();
            let (source, result) =
                rust_source_through(&lab, &b, &relay_b, circuit, target_id, port).await;
            if is_js {
                interop::js_target_transfer(&mut target, n, n).await;
            } else {
                interop::py_target_transfer(&mut target, n, n).await;
            }
            drop(source);
            match result {
                Ok(()) => ok += 1,
                Err(e) => panic!("{name} target behind a cone NAT, try {index}: {e}"),
            }
        }
        rows.push((versions.short.clone(), "target", times, ok));

        // A rust target behind A, the js or py peer as the source behind B.
        let (mut times, mut ok) = (Vec::new(), 0);
        for index in 0..TRIES {
            let port = 20_000 + u16::try_from(index).unwrap();
            let (mut target, circuit) = rust_target_behind(&lab, &a, &relay_a, port).await;
            // The source's address for the relay is the B side's.
            let circuit = circuit
                .to_string()
                .replace(&relay_a.to_string(), &relay_b.to_string());
            let started = Instant::now();
            if is_js {
                interop::js_source_transfer(&js.in_netns(&b.host), &circuit, n, n).await;
            } else {
                interop::py_source_transfer(&py.in_netns(&b.host), &circuit, n, n).await;
            }
            times.push(started.elapsed());
            served(&mut target)
                .await
                .unwrap_or_else(|e| panic!("{name} source behind a cone NAT, try {index}: {e}"));
            ok += 1;
        }
        rows.push((versions.short.clone(), "source", times, ok));
    }

    let mut page = format!(
        "{TRIES} tries each, both peers behind cone NATs (site A: target, site B: source), \
         {} KiB each way, hash-checked; the other peer is stock rust-libp2p 0.57.\n\n\
         | implementation | its role | to reserved (target) or to the transfer's result (source), process start included, p50 / max, ms | relayed transfer |\n\
         |---|---|---|---|\n",
        n / 1024
    );
    for (implementation, role, mut times, ok) in rows {
        times.sort();
        let _ = writeln!(
            page,
            "| {implementation} | {role} | {:.0} / {:.0} | {ok}/{TRIES} |",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            times.last().unwrap().as_secs_f64() * 1e3
        );
    }
    println!("{page}");
    let out = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nat-lab-interop.md");
    std::fs::write(&out, &page).expect("writing the interop matrix");
}
