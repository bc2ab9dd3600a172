//! The relay node on the open internet, with its defaults: one host cannot take the relay (its
//! reservations and its sessions to one target are capped by network origin, and a peer from
//! another origin still reserves and relays while the flood holds), a peer that vanishes
//! silently is dropped within the dead-peer bound, a killed peer's slots are freed at once, and a
//! circuit ended by the relay is reset, not ended like a normal close.
#![cfg(feature = "admin")]

mod admin_support;
mod common;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use admin_support::{eventually, AdminNode};
use common::TestClient;
use libp2p::{core::multiaddr::Protocol, Multiaddr};
use macula_relay::{
    node::DEAD_PEER_BOUND, DEFAULT_MAX_SESSIONS_PER_NETWORK_TO_PEER,
    DEFAULT_RESERVATIONS_PER_ORIGIN,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The node's listen address on `prefix` (e.g. `/ip6/::1`), from what it printed.
fn printed_addr(node: &AdminNode, prefix: &str) -> Multiaddr {
    let deadline = Instant::now() + admin_support::WAIT;
    loop {
        if let Some(line) = node.stdout_lines().iter().find(|l| l.starts_with(prefix)) {
            return line.parse().expect("a printed multiaddr");
        }
        assert!(
            Instant::now() < deadline,
            "the node printed no {prefix} address"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_holds_at_most_its_origin_caps_and_another_origin_still_reserves_and_relays() {
    common::init_tracing();
    // Defaults (loopback addresses announced); IPv4 and IPv6 loopback are two origins.
    let node = AdminNode::start(&["--listen", "/ip6/::1/tcp/0"]);
    let v6 = printed_addr(&node, "/ip6/::1");
    let admin = node.client(None);

    // The flood: fresh peer ids, all from 127.0.0.1.
    const FLOOD: usize = 24;
    let mut flood = Vec::new();
    let mut accepted = 0;
    for _ in 0..FLOOD {
        let mut client = TestClient::start().await;
        match node.try_reserve(&mut client).await {
            Ok(()) => accepted += 1,
            Err(error) => assert!(error.contains("Refused"), "{error}"),
        }
        flood.push(client);
    }
    let cap = DEFAULT_RESERVATIONS_PER_ORIGIN.per_ip;
    assert_eq!(accepted, cap, "one IP holds its reservation cap, no more");
    assert_eq!(admin.stats().await.unwrap().reservations, cap);
    let denied = admin.stats().await.unwrap().reservations_denied;
    assert_eq!(
        denied.get("origin_reservations_full"),
        Some(&((FLOOD - cap) as u64))
    );

    // A peer from another origin still reserves while the flood holds its slots.
    let mut target = TestClient::start().await;
    let v6_relay = v6.clone();
    target.reserve_on(node.peer_id, v6_relay).await;
    let _served = target.serve_transfers();

    // The flood's peers open circuits to it: one network gets its share of the target's
    // session slots, no more.
    let through_v4 = node.circuit_addr(target.peer_id);
    let mut circuits = 0;
    for client in flood.iter_mut() {
        if client
            .dial_circuit(through_v4.clone(), target.peer_id)
            .await
            .is_ok()
        {
            circuits += 1;
        }
    }
    assert_eq!(circuits, DEFAULT_MAX_SESSIONS_PER_NETWORK_TO_PEER);

    // ... and a source from another origin still reaches it, and relays.
    let mut source = TestClient::start().await;
    let through_v6 = v6
        .with(Protocol::P2pCircuit)
        .with(Protocol::P2p(target.peer_id));
    source
        .dial_circuit(through_v6, target.peer_id)
        .await
        .expect("a source from another origin reaches the target");
    let outcome = source
        .transfer(target.peer_id, 256 * 1024)
        .await
        .expect("the relayed echo completes");
    println!("flood of {FLOOD}: {accepted} reservations, {circuits} circuits to one target; other origin relayed {outcome:?}");
}

/// A TCP proxy that forwards until `cut`, then silently drops everything both ways (a NAT that
/// lost its uplink: no FIN, no RST).
async fn blackhole_proxy(to: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let cut_flag = cut.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(to).await else {
                continue;
            };
            let (a_read, a_write) = inbound.into_split();
            let (b_read, b_write) = outbound.into_split();
            for (mut from, mut to) in [(a_read, b_write), (b_read, a_write)] {
                let cut = cut_flag.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf).await {
                            Ok(0) | Err(_) => {
                                if cut.load(Ordering::Relaxed) {
                                    // Hold the other side open: it must find out by itself.
                                    std::future::pending::<()>().await;
                                }
                                return;
                            }
                            Ok(n) => n,
                        };
                        if cut.load(Ordering::Relaxed) {
                            continue;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    (addr, cut)
}

fn tcp_socket(addr: &Multiaddr) -> std::net::SocketAddr {
    let mut ip = None;
    let mut port = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
            Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
            Protocol::Tcp(p) => port = Some(p),
            _ => {}
        }
    }
    std::net::SocketAddr::new(ip.expect("an IP address"), port.expect("a TCP port"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_vanishes_silently_is_dropped_within_the_dead_peer_bound() {
    common::init_tracing();
    let node = AdminNode::start(&[]);
    let admin = node.client(None);
    let (proxy, cut) = blackhole_proxy(tcp_socket(&node.addr)).await;
    let via_proxy: Multiaddr = format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", proxy.port(), node.peer_id)
        .parse()
        .unwrap();
    let mut client = TestClient::start().await;
    client.reserve_on(node.peer_id, via_proxy).await;
    eventually("the reservation", || async {
        (admin.stats().await.ok()?.reservations == 1).then_some(())
    })
    .await;

    cut.store(true, Ordering::Relaxed);
    let cut_at = Instant::now();
    // The bound, plus scheduling slack on a loaded machine.
    let bound = DEAD_PEER_BOUND + Duration::from_secs(3);
    loop {
        if admin.stats().await.unwrap().reservations == 0 {
            break;
        }
        assert!(
            cut_at.elapsed() < bound,
            "the vanished peer still holds its reservation after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = cut_at.elapsed();
    println!("vanished peer dropped after {took:?} (bound {DEAD_PEER_BOUND:?})");
    assert!(took <= bound, "dropped after {took:?}, over {bound:?}");
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_peer_frees_its_session_and_reservation_at_once() {
    common::init_tracing();
    let node = AdminNode::start(&[]);
    let admin = node.client(None);
    let mut target = TestClient::start().await;
    node.reserve(&mut target).await;
    let _served = target.serve_transfers();
    let mut source = TestClient::start().await;
    node.dial_through(&mut source, target.peer_id)
        .await
        .unwrap();
    eventually("the session", || async {
        (admin.stats().await.ok()?.active_sessions == 1).then_some(())
    })
    .await;

    // Killing the target's swarm closes its sockets.
    drop(target);
    let killed_at = Instant::now();
    loop {
        let stats = admin.stats().await.unwrap();
        if stats.reservations == 0 && stats.active_sessions == 0 && stats.pending_sessions == 0 {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(1),
            "a killed peer's slots are still held after 1 s: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("killed peer's slots freed after {:?}", killed_at.elapsed());
}

/// Writes a byte every 10 ms until a write fails; panics naming `side` if none fails in time.
async fn write_fails(side: &str, stream: &mut libp2p::Stream) -> std::io::Error {
    use futures::AsyncWriteExt as _;
    let deadline = Instant::now() + common::WAIT;
    loop {
        let written = async {
            stream.write_all(b"x").await?;
            stream.flush().await
        };
        if let Err(error) = written.await {
            return error;
        }
        assert!(
            Instant::now() < deadline,
            "the {side}'s writes still succeed {:?} after the relay ended the circuit",
            common::WAIT
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_the_relay_ends_is_reset_on_both_sides_not_closed() {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    use macula_relay::{CloseReason, Event};

    common::init_tracing();
    for how in ["close_session", "data cap"] {
        let mut relay = common::TestRelay::start(
            common::test_config()
                .require_reservation(false)
                .bandwidth(None)
                .max_session_bytes(Some(1_000))
                .build()
                .unwrap(),
        )
        .await;
        let common::RawCircuit {
            mut source,
            mut target,
            ..
        } = common::raw_circuit(&relay).await;
        source.write_all(b"hello").await.unwrap();
        let mut echo = [0u8; 5];
        target.read_exact(&mut echo).await.unwrap();
        let expected = match how {
            "close_session" => {
                let id = relay.with(|r| r.sessions()[0].id).await;
                relay.with(move |r| r.close_session(id)).await.unwrap();
                CloseReason::ClosedByOwner
            }
            _ => {
                // Past the cap (1,000 bytes per direction) in one go.
                let _ = source.write_all(&[0u8; 4096]).await;
                CloseReason::DataCapReached
            }
        };
        let reason = relay
            .expect("the session closed", |e| match e {
                Event::SessionClosed { reason, .. } => Some(reason.clone()),
                _ => None,
            })
            .await;
        assert_eq!(reason, expected, "{how}");
        // Reset, not closed: a yamux stream that got a FIN can still be written to; one that got
        // an RST cannot.
        let error = write_fails("source", &mut source).await;
        println!("{how}: the source's write failed with {error}");
        let error = write_fails("target", &mut target).await;
        println!("{how}: the target's write failed with {error}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_its_peers_close_ends_cleanly_with_completed() {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _};
    use macula_relay::{CloseReason, Event};

    common::init_tracing();
    let mut relay = common::TestRelay::start(
        common::test_config()
            .require_reservation(false)
            .bandwidth(None)
            .build()
            .unwrap(),
    )
    .await;
    let common::RawCircuit {
        mut source,
        mut target,
        ..
    } = common::raw_circuit(&relay).await;
    // The target closes its side: the source reads the end, and can still write (a FIN, not a
    // reset), and the target still reads it.
    target.close().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(common::WAIT, source.read_to_end(&mut rest))
        .await
        .expect("the source reads the end")
        .unwrap();
    source.write_all(b"still open").await.unwrap();
    source.close().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(common::WAIT, target.read_to_end(&mut got))
        .await
        .expect("the target reads to the end")
        .unwrap();
    assert_eq!(got, b"still open");
    let reason = relay
        .expect("the session closed", |e| match e {
            Event::SessionClosed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert_eq!(reason, CloseReason::Completed);
}

#[test]
fn a_relay_on_loopback_announces_no_private_address_unless_allowed() {
    let quiet = common::process::RelayProcess::start_as_is(&[
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--no-registry",
    ]);
    quiet.wait_log("the warning that nothing is announced", |line| {
        line.contains("announcing no address").then_some(())
    });
    assert!(
        quiet
            .log()
            .lines()
            .any(|l| l.contains("not announced") && l.contains("/ip4/127.0.0.1/")),
        "the log says which address is left out and why:\n{}",
        quiet.log()
    );
    let lan = common::process::RelayProcess::start(&[
        "--listen",
        "/ip4/127.0.0.1/tcp/0",
        "--no-registry",
    ]);
    lan.wait_log("the announced loopback address", |line| {
        (line.contains("announcing relay addresses") && line.contains("/ip4/127.0.0.1/"))
            .then_some(())
    });
}
