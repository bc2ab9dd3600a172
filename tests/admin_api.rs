//! The admin API of the example relay peer, run as a real process, checked over real HTTP while
//! real client pairs relay through it: `/sessions`, `/stats` and `/metrics` agree with the bytes
//! moved, `DELETE /sessions/{id}` ends exactly that session, `disable` / `enable` work, and
//! malformed requests get a 4xx with a JSON error.
#![cfg(feature = "admin")]

mod admin_support;
mod common;

use admin_support::{eventually, AdminNode, Scrape};
use common::{ClientEvent, TestClient};
use macula_relay::admin::{
    AdminClient, DisableRequest, EnableRequest, ErrorView, SessionView, StatsView,
};

async fn sessions(client: &AdminClient) -> Vec<SessionView> {
    client.sessions().await.expect("GET /sessions")
}

async fn stats(client: &AdminClient) -> StatsView {
    client.stats().await.expect("GET /stats")
}

async fn scrape(client: &AdminClient) -> Scrape {
    Scrape::parse(&client.metrics().await.expect("GET /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_stats_and_metrics_agree_with_the_bytes_moved() {
    common::init_tracing();
    let node = AdminNode::start(&["--bandwidth", "0"]);
    let admin = node.client(None);
    let mut target = TestClient::start().await;
    let mut big = TestClient::start().await;
    let mut small = TestClient::start().await;
    node.reserve(&mut target).await;
    let _served = target.serve_transfers();
    node.dial_through(&mut big, target.peer_id).await.unwrap();
    node.dial_through(&mut small, target.peer_id).await.unwrap();
    eventually("two live sessions", || async {
        (sessions(&admin).await.len() == 2).then_some(())
    })
    .await;

    const BIG: u64 = 1024 * 1024 + 3;
    const SMALL: u64 = 64 * 1024;
    assert!(
        big.transfer(target.peer_id, BIG)
            .await
            .unwrap()
            .peer_got_what_we_sent
    );
    assert!(
        small
            .transfer_asymmetric(target.peer_id, SMALL, 2 * SMALL)
            .await
            .unwrap()
            .peer_got_what_we_sent
    );

    // Each session carried its transfer (plus libp2p's own handshakes over the circuit).
    let listed = sessions(&admin).await;
    let of = |peer: libp2p::PeerId| {
        listed
            .iter()
            .find(|s| s.source == peer.to_string())
            .unwrap_or_else(|| panic!("no session from {peer}"))
            .clone()
    };
    let (big_session, small_session) = (of(big.peer_id), of(small.peer_id));
    assert_eq!(big_session.target, target.peer_id.to_string());
    assert!(big_session.bytes_source_to_target >= BIG);
    assert!(big_session.bytes_target_to_source >= BIG);
    assert!(small_session.bytes_source_to_target >= SMALL);
    assert!(small_session.bytes_target_to_source >= 2 * SMALL);
    assert_eq!(big_session.limits.bandwidth, None);

    // /stats then /metrics then /stats: the metrics lie between the two (bytes only grow).
    let before = stats(&admin).await;
    let metrics = scrape(&admin).await;
    let after = stats(&admin).await;
    assert_eq!(before.active_sessions, 2);
    assert_eq!(before.total_sessions_created, 2);
    assert_eq!(before.reservations, 1);
    let listed_up: u64 = listed.iter().map(|s| s.bytes_source_to_target).sum();
    assert!(before.total_bytes_source_to_target >= listed_up);
    assert_eq!(
        before.total_bytes_relayed,
        before.total_bytes_source_to_target + before.total_bytes_target_to_source
    );
    for (direction, low, high) in [
        (
            "source_to_target",
            before.total_bytes_source_to_target,
            after.total_bytes_source_to_target,
        ),
        (
            "target_to_source",
            before.total_bytes_target_to_source,
            after.total_bytes_target_to_source,
        ),
    ] {
        let v = metrics.get(
            "macula_relay_relayed_bytes_total",
            &[("direction", direction)],
        );
        assert!(
            (low as f64..=high as f64).contains(&v),
            "{direction}: {v} not in {low}..={high}"
        );
    }
    assert_eq!(metrics.get("macula_relay_sessions_active", &[]), 2.0);
    assert_eq!(metrics.get("macula_relay_reservations", &[]), 1.0);
    assert_eq!(metrics.get("macula_relay_enabled", &[]), 1.0);
    assert_eq!(metrics.get("macula_relay_sessions_opened_total", &[]), 2.0);
    assert_eq!(
        metrics.get(
            "macula_relay_reservations_accepted_total",
            &[("renewed", "false")]
        ),
        1.0
    );
    assert_eq!(
        metrics.get("macula_relay_throttled_seconds_total", &[]),
        0.0
    );

    // The reservation is listed.
    let reservations = admin.reservations().await.unwrap();
    assert_eq!(reservations.len(), 1);
    assert_eq!(reservations[0].peer, target.peer_id.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_session_ends_exactly_that_session() {
    common::init_tracing();
    let node = AdminNode::start(&["--bandwidth", "0"]);
    let admin = node.client(None);
    let mut target = TestClient::start().await;
    let mut doomed = TestClient::start().await;
    let mut kept = TestClient::start().await;
    node.reserve(&mut target).await;
    let _served = target.serve_transfers();
    node.dial_through(&mut doomed, target.peer_id)
        .await
        .unwrap();
    node.dial_through(&mut kept, target.peer_id).await.unwrap();
    let listed = eventually("two live sessions", || async {
        let s = sessions(&admin).await;
        (s.len() == 2).then_some(s)
    })
    .await;
    let doomed_id = listed
        .iter()
        .find(|s| s.source == doomed.peer_id.to_string())
        .unwrap()
        .id
        .clone();

    let answer = admin
        .raw("DELETE", &format!("/sessions/{doomed_id}"), None)
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    let closed: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(closed["closed"], doomed_id.as_str());

    doomed
        .expect(
            "the closed session's relayed connection ends",
            |e| match e {
                ClientEvent::ConnectionClosed {
                    peer,
                    relayed: true,
                } if *peer == target.peer_id => Some(()),
                _ => None,
            },
        )
        .await;
    let left = eventually("one live session", || async {
        let s = sessions(&admin).await;
        (s.len() == 1).then_some(s)
    })
    .await;
    assert_eq!(left[0].source, kept.peer_id.to_string());
    // The other session still relays.
    assert!(
        kept.transfer(target.peer_id, 100_000)
            .await
            .unwrap()
            .peer_got_what_we_sent
    );

    let metrics = eventually("the close counted", || async {
        let m = scrape(&admin).await;
        m.value(
            "macula_relay_sessions_closed_total",
            &[("reason", "closed_by_owner")],
        )
        .map(|_| m)
    })
    .await;
    assert_eq!(
        metrics.get(
            "macula_relay_sessions_closed_total",
            &[("reason", "closed_by_owner")]
        ),
        1.0
    );
    assert_eq!(
        metrics.get("macula_relay_session_duration_seconds_count", &[]),
        1.0
    );
    assert_eq!(metrics.get("macula_relay_sessions_active", &[]), 1.0);

    // It is gone: closing it again is a 404.
    let again = admin
        .raw("DELETE", &format!("/sessions/{doomed_id}"), None)
        .await
        .unwrap();
    assert_eq!(again.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disable_refuses_reservations_until_enable() {
    common::init_tracing();
    let node = AdminNode::start(&[]);
    let admin = node.client(None);

    let disabled = admin.disable(&DisableRequest::default()).await.unwrap();
    assert!(!disabled.enabled);
    assert!(!admin.health().await.unwrap().enabled);
    let mut refused = TestClient::start().await;
    assert!(node.try_reserve(&mut refused).await.is_err());
    let metrics = eventually("the refusal counted", || async {
        let m = scrape(&admin).await;
        m.value(
            "macula_relay_reservations_denied_total",
            &[("reason", "disabled")],
        )
        .map(|_| m)
    })
    .await;
    assert_eq!(metrics.get("macula_relay_enabled", &[]), 0.0);
    assert_eq!(
        stats(&admin).await.reservations_denied.get("disabled"),
        Some(&1)
    );

    // Enabling for another node is refused and changes nothing.
    let wrong = admin
        .enable(&EnableRequest {
            node_id: Some(libp2p::PeerId::random().to_string()),
            ..Default::default()
        })
        .await;
    assert!(matches!(
        wrong,
        Err(macula_relay::admin::ClientError::Status { status: 400, .. })
    ));
    assert!(!stats(&admin).await.enabled);

    let enabled = admin
        .enable(&EnableRequest {
            node_id: Some(node.peer_id.to_string()),
            capacity: Some(5),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(enabled.enabled);
    assert_eq!(enabled.max_sessions, 5);
    let mut accepted = TestClient::start().await;
    node.try_reserve(&mut accepted).await.unwrap();

    // Disable with a zero drain closes live sessions at once.
    let _served = accepted.serve_transfers();
    let mut source = TestClient::start().await;
    node.dial_through(&mut source, accepted.peer_id)
        .await
        .unwrap();
    eventually("a live session", || async {
        (stats(&admin).await.active_sessions == 1).then_some(())
    })
    .await;
    admin
        .disable(&DisableRequest {
            drain_secs: Some(0.0),
        })
        .await
        .unwrap();
    eventually("the session drained", || async {
        let m = scrape(&admin).await;
        m.value(
            "macula_relay_sessions_closed_total",
            &[("reason", "drained")],
        )
        .map(|_| ())
    })
    .await;
    let after = stats(&admin).await;
    assert_eq!(
        (after.active_sessions, after.reservations, after.enabled),
        (0, 0, false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_4xx_with_a_json_error() {
    common::init_tracing();
    let node = AdminNode::start(&[]);
    let admin = node.client(None);
    let cases: &[(&str, &str, Option<&str>, u16)] = &[
        ("GET", "/nope", None, 404),
        ("POST", "/stats", None, 405),
        ("PUT", "/sessions", None, 405),
        ("GET", "/enable", None, 405),
        ("DELETE", "/sessions/not-hex", None, 400),
        ("DELETE", "/sessions/00000000000000000001", None, 400),
        ("DELETE", "/sessions/00000000000000ff", None, 404),
        ("GET", "/sessions/xyz", None, 400),
        ("GET", "/sessions/ff", None, 404),
        ("POST", "/enable", Some("{"), 400),
        ("POST", "/enable", Some("[1, 2]"), 400),
        ("POST", "/enable", Some(r#"{"capacity": 0}"#), 400),
        ("POST", "/enable", Some(r#"{"capacity": "many"}"#), 400),
        ("POST", "/enable", Some(r#"{"bogus": 1}"#), 400),
        ("POST", "/enable", Some(r#"{"node_id": "not a peer"}"#), 400),
        (
            "POST",
            "/enable",
            Some(r#"{"endpoints": ["nonsense"]}"#),
            400,
        ),
        ("POST", "/disable", Some(r#"{"drain_secs": -1}"#), 400),
        ("POST", "/disable", Some(r#"{"drain_secs": "soon"}"#), 400),
        ("POST", "/disable", Some("\u{0}\u{1}"), 400),
    ];
    for (method, path, body, status) in cases {
        let answer = admin
            .raw(method, path, body.map(str::as_bytes))
            .await
            .unwrap();
        assert_eq!(answer.status, *status, "{method} {path} {body:?}");
        assert_eq!(
            answer.content_type.as_deref(),
            Some("application/json"),
            "{method} {path}"
        );
        let error: ErrorView = serde_json::from_slice(&answer.body)
            .unwrap_or_else(|e| panic!("{method} {path}: not a JSON error: {e}"));
        assert!(!error.error.is_empty());
    }
    // None of that changed or broke anything.
    let after = stats(&admin).await;
    assert!(after.enabled);
    assert_eq!(after.max_sessions, macula_relay::DEFAULT_MAX_SESSIONS);
    assert_eq!(admin.health().await.unwrap().status, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_spent_throttled_shows_in_stats_sessions_and_metrics() {
    common::init_tracing();
    let node = AdminNode::start(&["--bandwidth", "100000"]);
    let admin = node.client(None);
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    node.reserve(&mut target).await;
    let _served = target.serve_transfers();
    node.dial_through(&mut source, target.peer_id)
        .await
        .unwrap();
    // Three times the per-second budget: the throttle must hold the copy loop back.
    assert!(
        source
            .transfer(target.peer_id, 300_000)
            .await
            .unwrap()
            .peer_got_what_we_sent
    );

    let session = &sessions(&admin).await[0];
    assert_eq!(session.limits.bandwidth, Some(100_000));
    assert!(session.throttled_secs > 0.0);
    let before = stats(&admin).await;
    let metrics = scrape(&admin).await;
    let after = stats(&admin).await;
    assert!(before.throttled_secs >= session.throttled_secs);
    let throttled = metrics.get("macula_relay_throttled_seconds_total", &[]);
    // Seconds as f64 through two encodings: allow rounding in the last digits.
    assert!(
        throttled >= before.throttled_secs - 1e-6 && throttled <= after.throttled_secs + 1e-6,
        "{throttled} not in {}..={}",
        before.throttled_secs,
        after.throttled_secs
    );
}
