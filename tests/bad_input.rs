//! Bad input on the hop protocol is answered with the spec's status (or closed), logged, and
//! never leaks a session or reservation slot; a good request still works afterwards.
#![cfg(feature = "node")]

mod common;

use common::proto;

use std::time::Duration;

use common::{TestClient, TestRelay};
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use macula_relay::{DenyReason, Event, Status, HOP_PROTOCOL};
use prost::Message;

/// A client connected to the relay, opening raw hop streams.
async fn connected_client(relay_peer: PeerId, addr: libp2p::Multiaddr) -> TestClient {
    let mut client = TestClient::start().await;
    client.run(move |s| {
        s.dial(addr).unwrap();
    });
    client
        .expect("connected", |e| match e {
            common::ClientEvent::Connected { peer, .. } if *peer == relay_peer => Some(()),
            _ => None,
        })
        .await;
    client
}

async fn hop_stream(client: &TestClient, relay: PeerId) -> Stream {
    client
        .control
        .clone()
        .open_stream(relay, HOP_PROTOCOL)
        .await
        .expect("hop stream opens")
}

/// Sends raw bytes, then reads the relay's answer (a length-prefixed HopMessage) until EOF.
async fn exchange(stream: &mut Stream, bytes: &[u8]) -> Option<proto::HopMessage> {
    stream.write_all(bytes).await.unwrap();
    stream.flush().await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(common::WAIT, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "relay left the stream open");
    proto::HopMessage::decode_length_delimited(answer.as_slice()).ok()
}

fn status_of(answer: &Option<proto::HopMessage>) -> Option<Status> {
    answer
        .as_ref()
        .and_then(|m| m.status)
        .and_then(|s| Status::try_from(s).ok())
}

fn hop(message: proto::HopMessage) -> Vec<u8> {
    message.encode_length_delimited_to_vec()
}

fn connect_to(peer: PeerId) -> Vec<u8> {
    hop(proto::HopMessage {
        r#type: Some(proto::HopMessageType::Connect as i32),
        peer: Some(proto::Peer {
            id: Some(peer.to_bytes()),
            addrs: vec![],
        }),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_carries_expiry_addresses_limit_and_a_voucher_signed_by_the_relay() {
    common::init_tracing();
    let relay = TestRelay::start(common::test_config().build().unwrap()).await;
    let client = connected_client(relay.peer_id, relay.addr.clone()).await;
    let mut stream = hop_stream(&client, relay.peer_id).await;
    let answer = exchange(
        &mut stream,
        &hop(proto::HopMessage {
            r#type: Some(proto::HopMessageType::Reserve as i32),
            ..Default::default()
        }),
    )
    .await
    .expect("an answer");
    assert_eq!(answer.r#type, Some(proto::HopMessageType::Status as i32));
    assert_eq!(answer.status, Some(Status::Ok as i32));
    let reservation = answer.reservation.expect("reservation");
    let expire = reservation.expire.expect("expire");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        expire > now + 3500 && expire <= now + 3601,
        "1 h TTL, got {}",
        expire - now
    );
    let addrs: Vec<libp2p::Multiaddr> = reservation
        .addrs
        .iter()
        .map(|a| libp2p::Multiaddr::try_from(a.clone()).unwrap())
        .collect();
    assert!(
        addrs.contains(&relay.addr),
        "{addrs:?} lacks {}",
        relay.addr
    );
    // The voucher is opened with rust-libp2p's `SignedEnvelope`: signed by the relay's key for
    // the spec's domain and payload type.
    let envelope = libp2p::core::SignedEnvelope::from_protobuf_encoding(
        &reservation.voucher.expect("a voucher is always sent"),
    )
    .unwrap();
    let (payload, signer) = envelope
        .payload_and_signing_key("libp2p-relay-rsvp".to_owned(), &[0x03, 0x02])
        .expect("the voucher verifies for the relay-reservation domain");
    assert_eq!(signer.to_peer_id(), relay.peer_id);
    let voucher = proto::Voucher::decode(payload).unwrap();
    assert_eq!(voucher.relay, Some(relay.peer_id.to_bytes()));
    assert_eq!(voucher.peer, Some(client.peer_id.to_bytes()));
    assert_eq!(voucher.expiration, Some(expire));
    let limit = answer.limit.expect("limit");
    assert_eq!(limit.duration, Some(1800));
    assert_eq!(limit.data, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_oversized_and_unexpected_messages_get_the_spec_status() {
    common::init_tracing();
    let mut relay = TestRelay::start(common::test_config().build().unwrap()).await;
    let client = connected_client(relay.peer_id, relay.addr.clone()).await;

    // Not a protobuf message (field number 0 is invalid).
    let mut stream = hop_stream(&client, relay.peer_id).await;
    let answer = exchange(&mut stream, &[3, 0, 0, 0]).await;
    assert_eq!(status_of(&answer), Some(Status::MalformedMessage));

    // A length prefix over the 4 KiB maximum.
    let mut stream = hop_stream(&client, relay.peer_id).await;
    let mut oversized = vec![0x81, 0x40]; // varint 8193
    oversized.extend(std::iter::repeat_n(0u8, 64));
    let answer = exchange(&mut stream, &oversized).await;
    assert_eq!(status_of(&answer), Some(Status::MalformedMessage));

    // A STATUS message where a request belongs.
    let mut stream = hop_stream(&client, relay.peer_id).await;
    let status = hop(proto::HopMessage {
        r#type: Some(proto::HopMessageType::Status as i32),
        status: Some(Status::Ok as i32),
        ..Default::default()
    });
    let answer = exchange(&mut stream, &status).await;
    assert_eq!(status_of(&answer), Some(Status::UnexpectedMessage));

    // CONNECT without a target, and with a target that is not a peer id.
    let mut stream = hop_stream(&client, relay.peer_id).await;
    let no_target = hop(proto::HopMessage {
        r#type: Some(proto::HopMessageType::Connect as i32),
        ..Default::default()
    });
    assert_eq!(
        status_of(&exchange(&mut stream, &no_target).await),
        Some(Status::MalformedMessage)
    );
    let mut stream = hop_stream(&client, relay.peer_id).await;
    let bad_target = hop(proto::HopMessage {
        r#type: Some(proto::HopMessageType::Connect as i32),
        peer: Some(proto::Peer {
            id: Some(b"not a peer id".to_vec()),
            addrs: vec![],
        }),
        ..Default::default()
    });
    assert_eq!(
        status_of(&exchange(&mut stream, &bad_target).await),
        Some(Status::MalformedMessage)
    );

    for _ in 0..5 {
        relay
            .expect("bad request event", |e| {
                matches!(e, Event::BadRequest { .. }).then_some(())
            })
            .await;
    }
    let stats = relay.with(|r| r.stats()).await;
    assert_eq!(stats.bad_requests, 5);
    assert_eq!(
        (
            stats.reservations,
            stats.active_sessions,
            stats.pending_sessions
        ),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_the_relay_itself_or_to_the_requester_is_refused() {
    common::init_tracing();
    let mut relay = TestRelay::start(common::test_config().build().unwrap()).await;
    let client = connected_client(relay.peer_id, relay.addr.clone()).await;
    for target in [relay.peer_id, client.peer_id] {
        let mut stream = hop_stream(&client, relay.peer_id).await;
        let answer = exchange(&mut stream, &connect_to(target)).await;
        assert_eq!(status_of(&answer), Some(Status::PermissionDenied));
        let reason = relay
            .expect("session denied", |e| match e {
                Event::SessionDenied { reason, .. } => Some(*reason),
                _ => None,
            })
            .await;
        assert_eq!(reason, DenyReason::InvalidTarget);
    }
    // A target without a reservation.
    let mut stream = hop_stream(&client, relay.peer_id).await;
    let answer = exchange(&mut stream, &connect_to(PeerId::random())).await;
    assert_eq!(status_of(&answer), Some(Status::NoReservation));
    assert_eq!(relay.with(|r| r.stats().pending_sessions).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_flooding_hop_streams_are_closed_without_leaking_slots() {
    common::init_tracing();
    let mut relay = TestRelay::start(
        common::test_config()
            .stream_timeout(Duration::from_millis(500))
            .build()
            .unwrap(),
    )
    .await;
    let client = connected_client(relay.peer_id, relay.addr.clone()).await;

    // 200 hop streams that never speak: the relay works on at most 16 per connection, drops
    // the rest at once, and times out the others.
    let mut streams = Vec::new();
    for _ in 0..200 {
        streams.push(hop_stream(&client, relay.peer_id).await);
    }
    let (mut ended, mut reset) = (0, 0);
    for (i, stream) in streams.iter_mut().enumerate() {
        let mut buf = [0u8; 1];
        match tokio::time::timeout(common::WAIT, stream.read(&mut buf)).await {
            Err(_) => panic!("silent hop stream {i} still open after {:?}", common::WAIT),
            Ok(Ok(0)) => ended += 1,
            Ok(Ok(n)) => panic!("silent hop stream {i} was answered with {n} byte(s)"),
            Ok(Err(_)) => reset += 1,
        }
    }
    println!("200 silent hop streams: {ended} closed, {reset} reset");
    assert_eq!(ended + reset, 200);
    let mut bad = 0;
    while bad < 200 {
        relay
            .expect("bad request", |e| {
                matches!(e, Event::BadRequest { .. }).then_some(())
            })
            .await;
        bad += 1;
    }
    let stats = relay.with(|r| r.stats()).await;
    assert_eq!(stats.bad_requests, 200);
    assert_eq!(
        (
            stats.reservations,
            stats.active_sessions,
            stats.pending_sessions
        ),
        (0, 0, 0)
    );

    // The same connection is still served.
    let mut stream = hop_stream(&client, relay.peer_id).await;
    let reserve = hop(proto::HopMessage {
        r#type: Some(proto::HopMessageType::Reserve as i32),
        ..Default::default()
    });
    assert_eq!(
        status_of(&exchange(&mut stream, &reserve).await),
        Some(Status::Ok)
    );
}

/// A flood of malformed hop requests against the relay node process: its log gets a few lines
/// and then one line with the count of those left out, not a line per stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_requests_is_logged_as_a_few_lines_and_a_count() {
    common::init_tracing();
    let relay = common::process::RelayProcess::start(&["--listen", "/ip4/127.0.0.1/tcp/0"]);
    let relay_peer = relay.peer_id;
    let client = connected_client(relay_peer, relay.addr.clone()).await;
    const FLOOD: usize = 300;
    for _ in 0..FLOOD {
        let mut stream = hop_stream(&client, relay_peer).await;
        // A length prefix of 5 followed by bytes that are no protobuf message.
        assert_eq!(
            status_of(&exchange(&mut stream, &[5, 0xff, 0xff, 0xff, 0xff, 0xff]).await),
            Some(Status::MalformedMessage)
        );
    }
    // The window is 10 s: the summary follows within the process wait.
    let left_out: usize = relay.wait_log("the count of bad requests left out of the log", |line| {
        line.contains("more bad hop requests not logged")
            .then(|| {
                line.split("left_out=")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .flatten()
    });
    let lines = relay
        .log()
        .lines()
        .filter(|l| l.contains("bad hop request") && !l.contains("not logged"))
        .count();
    println!("{FLOOD} malformed requests: {lines} lines logged, {left_out} left out");
    assert!(lines <= 20, "{lines} lines for {FLOOD} bad requests");
    assert!(left_out >= FLOOD - 20, "{left_out} left out");
}
