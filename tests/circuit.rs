//! A source reaches a reserved target through the relay; bytes arrive intact both ways and the
//! relay's accounting (stats, sessions, events) matches what moved.
#![cfg(feature = "node")]

mod common;

use common::{transfer, TestClient, TestRelay};
use macula_relay::{CloseReason, Event, SessionLimits};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_crosses_the_relay_both_ways_and_is_accounted() {
    common::init_tracing();
    let mut relay = TestRelay::start(common::test_config().bandwidth(None).build().unwrap()).await;
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;

    let limit = target.reserve(&relay).await;
    // The default session timeout is announced; no data cap means no `data` limit.
    let limit = limit.expect("relay announces a limit");
    assert_eq!(limit.0, Some(std::time::Duration::from_secs(1800)));
    assert_eq!(limit.1, None);

    let mut served = target.serve_transfers();
    source.dial_through(&relay, target.peer_id).await.unwrap();
    let opened = relay
        .expect("session opened", |e| match e {
            Event::SessionOpened {
                id,
                source: s,
                target: t,
                limits,
            } => Some((*id, *s, *t, *limits)),
            _ => None,
        })
        .await;
    assert_eq!((opened.1, opened.2), (source.peer_id, target.peer_id));
    assert_eq!(opened.3.bandwidth, None);

    const N: u64 = 3 * 1024 * 1024 + 17;
    let outcome = source.transfer(target.peer_id, N).await.unwrap();
    assert!(
        outcome.peer_got_what_we_sent,
        "target received other bytes than sent"
    );
    assert_eq!(
        outcome.received_hash,
        transfer::expected_hash(transfer::DOWN_SEED, N)
    );
    let served = served.recv().await.unwrap().unwrap();
    assert!(served.peer_got_what_we_sent);
    assert_eq!(
        served.received_hash,
        transfer::expected_hash(transfer::UP_SEED, N)
    );

    // Live accounting: the relay carried the transfer plus libp2p's own handshakes over the
    // circuit (noise, yamux, multistream-select, identify), so at least N each way.
    let sessions = relay.with(|r| r.sessions()).await;
    assert_eq!(sessions.len(), 1);
    let live = &sessions[0];
    assert_eq!(live.id, opened.0);
    assert!(live.bytes_source_to_target >= N);
    assert!(live.bytes_target_to_source >= N);
    assert_eq!(
        live.limits,
        SessionLimits {
            bandwidth: None,
            ..SessionLimits::default()
        }
    );
    let stats = relay.with(|r| r.stats()).await;
    assert_eq!(stats.active_sessions, 1);
    assert_eq!(stats.total_sessions_created, 1);
    assert_eq!(stats.reservations, 1);
    assert!(stats.total_bytes_relayed >= live.bytes_source_to_target + live.bytes_target_to_source);

    // Either side may close: the source closes its connection; the session ends and the totals
    // keep every byte.
    let target_peer = target.peer_id;
    source.run(move |s| {
        let _ = s.disconnect_peer_id(target_peer);
    });
    let closed = relay
        .expect("session closed", |e| match e {
            Event::SessionClosed {
                id,
                reason,
                bytes_source_to_target,
                bytes_target_to_source,
                ..
            } => Some((
                *id,
                reason.clone(),
                *bytes_source_to_target,
                *bytes_target_to_source,
            )),
            _ => None,
        })
        .await;
    assert_eq!(closed.0, opened.0);
    assert!(
        matches!(
            closed.1,
            CloseReason::Completed | CloseReason::StreamError { .. }
        ),
        "{:?}",
        closed.1
    );
    assert!(closed.2 >= live.bytes_source_to_target && closed.3 >= live.bytes_target_to_source);
    let stats = relay.with(|r| r.stats()).await;
    assert_eq!(stats.active_sessions, 0);
    assert_eq!(stats.total_bytes_relayed, closed.2 + closed.3);
    assert!(relay.with(|r| r.sessions()).await.is_empty());
}

/// The transfer protocol's payload is the one the js and py peers generate.
#[test]
fn prng_matches_the_js_test_vectors() {
    let mut first = [0u8; 16];
    transfer::Prng::new(transfer::UP_SEED).fill(&mut first);
    let hex: String = first.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "19460c513e552ee03a8fb97bb5a88301");
    let hex: String = transfer::expected_hash(transfer::DOWN_SEED, 1024 * 1024)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hex,
        "2afb71fd76bf7fc8651f1815dac807dd917d744fe02afc467e12ffaf746ab5e3"
    );
}
