//! The registry in records mode (`ProvidersAndRecords`) on a real Kademlia of 20 peers over
//! 127.0.0.1 TCP, with an attacker: forged, replayed and expired relay records are refused by
//! the storing nodes (kad record filtering) and by the reader, and a disabled relay's signed
//! withdrawal replaces its record in the DHT within seconds.
#![cfg(feature = "registry")]

#[path = "common/registry_net.rs"]
mod registry_net;

use std::{
    collections::HashSet,
    time::{Duration, SystemTime},
};

use libp2p::{
    identity::Keypair,
    kad::{Quorum, Record},
};
use macula_relay::{
    registry::{self, shard::record_key, RecordError, RejectedAt, RelayRecord},
    Config,
};
use registry_net::{peers, NetPeer, NodeEvent, PeerSpec};

fn relay_config() -> Config {
    registry_net::relay_config().build().unwrap()
}

fn registry_config() -> registry::RegistryConfig {
    registry::RegistryConfig::builder()
        .mode(registry::PublishMode::ProvidersAndRecords)
        .min_republish_interval(Duration::from_secs(1))
        .load_change_percent(0)
        .build()
        .unwrap()
}

/// Puts `value` under `key` from the attacker's own (unfiltered, local) store to the DHT.
async fn attacker_put(attacker: &NetPeer, key: libp2p::kad::RecordKey, value: Vec<u8>) {
    attacker
        .with(move |s| {
            s.behaviour_mut()
                .registry
                .kad_mut()
                .put_record(Record::new(key, value), Quorum::One)
                .unwrap();
        })
        .await;
}

async fn expect_storing_rejection(node: &mut NetPeer, from: libp2p::PeerId) -> RecordError {
    node.expect("storing-side rejection", |e| match e {
        NodeEvent::Registry(registry::Event::RecordRejected {
            at: RejectedAt::Storing,
            from: f,
            error,
        }) if f == from => Some(error),
        _ => None,
    })
    .await
}

/// The reading-side rejection of a record sent by `from` during the last discoveries.
fn reading_rejection(node: &mut NetPeer, from: libp2p::PeerId) -> RecordError {
    let found = node
        .rejected
        .iter()
        .find(|(f, _)| *f == from)
        .map(|(_, e)| e.clone());
    node.rejected.clear();
    found.unwrap_or_else(|| panic!("no record from {from} was refused"))
}

async fn stored(node: &NetPeer, key: libp2p::kad::RecordKey) -> Option<Vec<u8>> {
    node.with(move |s| {
        use libp2p::kad::store::RecordStore;
        s.behaviour_mut()
            .registry
            .kad_mut()
            .store_mut()
            .get(&key)
            .map(|r| r.value.clone())
    })
    .await
}

async fn envelope(relay: &NetPeer) -> Vec<u8> {
    relay
        .with(|s| s.behaviour().registry.current_envelope().unwrap().to_vec())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_expired_records_are_refused_and_withdrawal_replaces_the_record() {
    registry_net::init_tracing();
    let reg = registry_config();
    let ns = reg.namespace().to_owned();
    let mut boot = NetPeer::start(PeerSpec::dht(reg.clone()), None).await;
    let mut plain = Vec::new();
    for _ in 0..13 {
        plain.push(NetPeer::start(PeerSpec::dht(reg.clone()), Some(boot.boot())).await);
    }
    let mut relays = Vec::new();
    for _ in 0..3 {
        relays.push(
            NetPeer::start(
                PeerSpec::relay(reg.clone(), relay_config(), true),
                Some(boot.boot()),
            )
            .await,
        );
    }
    let incapable = NetPeer::start(
        PeerSpec::relay(reg.clone(), relay_config(), false),
        Some(boot.boot()),
    )
    .await;
    let attacker_key = Keypair::generate_ed25519();
    let attacker = NetPeer::start(
        PeerSpec {
            keypair: Some(attacker_key.clone()),
            ..PeerSpec::dht(reg.clone())
        },
        Some(boot.boot()),
    )
    .await;
    let mut client = NetPeer::start(PeerSpec::client(reg.clone()), Some(boot.boot())).await;
    println!("network: {} peers", 1 + plain.len() + relays.len() + 3);

    for relay in &mut relays {
        relay.registered().await;
    }
    let capable: HashSet<_> = relays.iter().map(|r| r.peer_id).collect();
    let (found, stats, took) = client
        .discover_until(40, Duration::from_millis(500), |r| r.len() >= 3)
        .await;
    println!("records mode: complete discovery after {took:?}: {stats:?}");
    assert_eq!(peers(&found).into_iter().collect::<HashSet<_>>(), capable);
    assert!(!peers(&found).contains(&incapable.peer_id));
    assert!(
        found.iter().all(|c| c.rtt.is_none()),
        "records came from the DHT"
    );

    // Relay 0 publishes v1, then v2 (capacity changed). The reader learns v2.
    let victim = relays[0].peer_id;
    let key = record_key(&ns, &victim);
    let v1 = envelope(&relays[0]).await;
    relays[0]
        .with(|s| {
            s.behaviour_mut()
                .relay
                .as_mut()
                .unwrap()
                .set_max_sessions(42)
                .unwrap()
        })
        .await;
    relays[0]
        .expect("republished", |e| match e {
            NodeEvent::Registry(registry::Event::Republished { .. }) => Some(()),
            _ => None,
        })
        .await;
    let v2 = envelope(&relays[0]).await;
    assert_ne!(v1, v2);
    let (found, _, _) = client
        .discover_until(40, Duration::from_millis(300), |r| {
            r.iter()
                .any(|c| c.peer() == victim && c.record.max_sessions == 42)
        })
        .await;
    assert!(found
        .iter()
        .any(|c| c.peer() == victim && c.record.max_sessions == 42));
    for _ in 0..50 {
        if stored(&boot, key.clone()).await.as_deref() == Some(v2.as_slice()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stored(&boot, key.clone()).await, Some(v2.clone()));

    // Forged: a record claiming to be relay 0, signed by the attacker's key.
    boot.drain();
    client.rejected.clear();
    let now = registry::unix_ms(SystemTime::now());
    let forged = RelayRecord {
        peer: victim,
        addrs: vec![attacker.addr.clone()],
        max_sessions: 1_000_000,
        active_sessions: 0,
        reservations: 0,
        max_reservations: 1_000_000,
        bandwidth: None,
        session_timeout: None,
        max_session_bytes: None,
        enabled: true,
        issued_at_ms: now,
        expires_at_ms: now + 600_000,
        namespace: ns.clone(),
    }
    .sign(&attacker_key)
    .unwrap();
    attacker_put(&attacker, key.clone(), forged).await;
    let error = expect_storing_rejection(&mut boot, attacker.peer_id).await;
    println!("storing side refused the forged record: {error}");
    assert!(matches!(error, RecordError::WrongSigner { claimed, .. } if claimed == victim));
    assert_eq!(stored(&boot, key.clone()).await, Some(v2.clone()));
    // The attacker itself answers lookups with its forgery: the reader refuses it.
    let (found, _) = client.discover().await;
    let error = reading_rejection(&mut client, attacker.peer_id);
    println!("reading side refused the forged record: {error}");
    assert!(matches!(error, RecordError::WrongSigner { .. }));
    let genuine = found
        .iter()
        .find(|c| c.peer() == victim)
        .expect("victim still found");
    assert_eq!(genuine.record.max_sessions, 42);

    // Replayed: relay 0's older record v1.
    boot.drain();
    client.rejected.clear();
    attacker_put(&attacker, key.clone(), v1).await;
    let error = expect_storing_rejection(&mut boot, attacker.peer_id).await;
    println!("storing side refused the replayed record: {error}");
    assert!(matches!(error, RecordError::Replayed { .. }));
    assert_eq!(stored(&boot, key.clone()).await, Some(v2.clone()));
    let (found, _) = client.discover().await;
    let error = reading_rejection(&mut client, attacker.peer_id);
    println!("reading side refused the replayed record: {error}");
    assert!(matches!(error, RecordError::Replayed { .. }));
    assert_eq!(
        found
            .iter()
            .find(|c| c.peer() == victim)
            .unwrap()
            .record
            .max_sessions,
        42
    );

    // Expired: correctly signed (the attacker's own record) but past its expiry.
    boot.drain();
    let own = attacker.peer_id;
    let expired = RelayRecord {
        peer: own,
        addrs: vec![attacker.addr.clone().with_p2p(own).unwrap_or_else(|a| a)],
        // Past its expiry by more than the tolerated clock skew.
        issued_at_ms: now - 1_800_000 - registry::DEFAULT_MAX_CLOCK_SKEW.as_millis() as u64,
        expires_at_ms: now - 1_200_000 - registry::DEFAULT_MAX_CLOCK_SKEW.as_millis() as u64,
        ..registry::open(&v2).unwrap().0
    }
    .sign(&attacker_key)
    .unwrap();
    attacker_put(&attacker, record_key(&ns, &own), expired).await;
    let error = expect_storing_rejection(&mut boot, attacker.peer_id).await;
    println!("storing side refused the expired record: {error}");
    assert_eq!(error, RecordError::Expired);
    assert_eq!(stored(&boot, record_key(&ns, &own)).await, None);

    // Withdrawal: relay 1 is disabled; its signed withdrawal replaces its record in the DHT.
    let gone = relays[1].peer_id;
    let started = std::time::Instant::now();
    relays[1]
        .with(|s| s.behaviour_mut().relay.as_mut().unwrap().disable())
        .await;
    let (after, stats, _) = client
        .discover_until(60, Duration::from_millis(100), |r| {
            !peers(r).contains(&gone)
        })
        .await;
    let seen_after = started.elapsed();
    println!(
        "records mode: discovery stopped returning the disabled relay after {seen_after:?} \
         (record TTL {:?}); last discovery: {stats:?}",
        registry::DEFAULT_RECORD_TTL
    );
    assert!(!peers(&after).contains(&gone));
    assert!(
        seen_after < registry::DEFAULT_RECORD_TTL / 10,
        "withdrawal took {seen_after:?}"
    );
    let tombstone = stored(&boot, record_key(&ns, &gone))
        .await
        .expect("withdrawal stored");
    assert!(!registry::open(&tombstone).unwrap().0.enabled);
}
