//! Graceful stop of the example relay peer: SIGTERM stops new reservations and sessions, waits
//! for live sessions up to `--drain-timeout`, closes the rest, logs what it closed and exits 0.
#![cfg(feature = "admin")]

mod admin_support;
mod common;

use admin_support::{eventually, AdminNode};
use common::{ClientEvent, TestClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_left_at_the_drain_deadline_and_exits_0() {
    common::init_tracing();
    // The drain deadline leaves time to check the refusal of a newcomer while the node drains
    // (10 s: a loaded machine may take seconds to start a client), and the node must still be
    // running after that check.
    let mut node = AdminNode::start(&["--drain-timeout", "10", "--bandwidth", "0"]);
    let admin = node.client(None);
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    node.reserve(&mut target).await;
    let _served = target.serve_transfers();
    node.dial_through(&mut source, target.peer_id)
        .await
        .unwrap();
    let session = eventually("a live session", || async {
        admin.sessions().await.unwrap().into_iter().next()
    })
    .await;

    node.terminate();
    // While it drains, the admin API still answers, and the relay refuses newcomers.
    eventually("the relay disabled", || async {
        (!admin.stats().await.ok()?.enabled).then_some(())
    })
    .await;
    // Load balancers see the drain: /healthz answers 503 (from the loop's last report).
    let health = admin
        .health()
        .await
        .expect_err("a draining node is not healthy");
    assert!(
        health.to_string().contains("503") && health.to_string().contains("draining"),
        "{health}"
    );
    let mut late = TestClient::start().await;
    let refused = node
        .try_reserve(&mut late)
        .await
        .expect_err("a draining relay accepted a reservation");
    // The rust client reports RESERVATION_REFUSED as `Reservation(Refused)`.
    assert!(refused.contains("Reservation(Refused)"), "{refused}");
    assert!(
        node.is_running(),
        "the node exited before its drain deadline"
    );

    source
        .expect(
            "the relayed connection closed at the deadline",
            |e| match e {
                ClientEvent::ConnectionClosed {
                    peer,
                    relayed: true,
                } if *peer == target.peer_id => Some(()),
                _ => None,
            },
        )
        .await;
    let status = node.exit_status().await;
    assert!(status.success(), "exit status {status}");
    let log = node.log();
    assert!(
        log.lines()
            .any(|l| l.contains("closed at the drain deadline") && l.contains(&session.id)),
        "{log}"
    );
    assert!(log.contains("closed_at_deadline=1"), "{log}");
    // Stdout had the listen address and nothing else.
    assert_eq!(node.stdout_lines(), vec![node.addr.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_the_last_session_to_end_then_exits_0() {
    common::init_tracing();
    let mut node = AdminNode::start(&["--drain-timeout", "600"]);
    let admin = node.client(None);
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    node.reserve(&mut target).await;
    node.dial_through(&mut source, target.peer_id)
        .await
        .unwrap();
    eventually("a live session", || async {
        (admin.stats().await.unwrap().active_sessions == 1).then_some(())
    })
    .await;

    node.terminate();
    eventually("the relay disabled", || async {
        (!admin.stats().await.ok()?.enabled).then_some(())
    })
    .await;
    // The session is still live, so the node is still running and relaying.
    assert_eq!(admin.stats().await.unwrap().active_sessions, 1);
    assert!(node.is_running());

    // The source hangs up: the last session ends and the node exits.
    let relay_target = target.peer_id;
    source.run(move |s| {
        let _ = s.disconnect_peer_id(relay_target);
    });
    let status = node.exit_status().await;
    assert!(status.success(), "exit status {status}");
    let log = node.log();
    assert!(log.contains("session ended while draining"), "{log}");
    assert!(log.contains("closed_at_deadline=0"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_without_sessions_exits_0() {
    let mut node = AdminNode::start(&[]);
    node.terminate();
    let status = node.exit_status().await;
    assert!(status.success(), "exit status {status}");
    assert!(node.log().contains("relay node stopped"));
}
