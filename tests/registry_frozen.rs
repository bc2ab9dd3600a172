//! A frozen relay (the real binary stopped with SIGSTOP: its kernel still accepts and
//! acknowledges, nothing answers): the reservation a peer holds on it moves to another relay
//! within the liveness bound, and a fresh client's discovery ends within its deadline without
//! it.
#![cfg(all(feature = "registry", feature = "admin"))]

#[allow(dead_code)]
#[path = "common/process.rs"]
mod process;
#[path = "common/registry_net.rs"]
mod registry_net;

use std::{collections::HashSet, time::Duration};

use macula_relay::{
    node::KAD_PROTOCOL,
    registry::{self, RegistryConfig},
};
use process::RelayProcess;
use registry_net::{peers, NetPeer, NodeEvent, PeerSpec};
use tokio::time::Instant;

/// What the registry promises: a relay that dies or freezes is replaced within this.
const LIVENESS_BOUND: Duration = registry::KNOWN_LIFETIME;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_relay_loses_its_reservation_and_leaves_discovery_within_the_liveness_bound() {
    registry_net::init_tracing();
    let listen = ["--listen", "/ip4/127.0.0.1/tcp/0"];
    let boot = RelayProcess::start(&listen);
    let boot_addr = boot.addr.to_string();
    let mut relays = vec![boot];
    for _ in 0..2 {
        relays.push(RelayProcess::start(&[
            listen[0],
            listen[1],
            "--bootstrap",
            &boot_addr,
        ]));
    }
    for relay in &relays {
        relay.wait_log("relay registered", |l| {
            l.contains("relay registered").then_some(())
        });
    }
    let all: HashSet<_> = relays.iter().map(|r| r.peer_id).collect();
    let spec = PeerSpec {
        kad_protocol: KAD_PROTOCOL,
        ..PeerSpec::client(RegistryConfig::default())
    };
    let boot = (relays[0].peer_id, relays[0].addr.clone());
    let mut target = NetPeer::start(spec.clone(), Some(boot.clone())).await;
    let (found, _, took) = target
        .discover_until(40, Duration::from_millis(500), |r| r.len() == all.len())
        .await;
    assert_eq!(peers(&found).into_iter().collect::<HashSet<_>>(), all);
    println!("target discovered the 3 relays after {took:?}");

    target
        .with(|s| s.behaviour_mut().registry.reserve_on_best(2))
        .await;
    let mut held = HashSet::new();
    while held.len() < 2 {
        let relay = target
            .expect("two reservations", |e| match e {
                NodeEvent::Registry(registry::Event::ReservationAccepted { relay, .. }) => {
                    Some(relay)
                }
                _ => None,
            })
            .await;
        held.insert(relay);
    }
    // Freeze a held relay that is not the boot node (the DHT stays up).
    let frozen = relays
        .iter()
        .skip(1)
        .find(|r| held.contains(&r.peer_id))
        .expect("two of three relays held: one is not the boot node");
    let frozen_id = frozen.peer_id;
    frozen.signal("STOP");
    let frozen_at = Instant::now();

    let mut lost_after = None;
    let moved_to = loop {
        let event = target
            .expect("the reservation on the frozen relay to move", |e| match e {
                NodeEvent::Registry(registry::Event::ReservationLost { failure }) => {
                    Some(Err(failure))
                }
                NodeEvent::Registry(registry::Event::ReservationAccepted { relay, .. }) => {
                    Some(Ok(relay))
                }
                _ => None,
            })
            .await;
        match event {
            Err(failure) => {
                println!(
                    "reservation lost after {:?}: {failure}",
                    frozen_at.elapsed()
                );
                if failure.relay == frozen_id {
                    lost_after = Some(frozen_at.elapsed());
                }
            }
            Ok(relay) if lost_after.is_some() && relay != frozen_id => break relay,
            Ok(_) => {}
        }
    };
    let moved_after = frozen_at.elapsed();
    println!(
        "frozen relay's reservation lost after {:?}, moved to another relay after {moved_after:?}",
        lost_after.unwrap()
    );
    assert!(!held.contains(&moved_to) || moved_to != frozen_id);
    assert!(
        moved_after <= LIVENESS_BOUND,
        "the reservation moved after {moved_after:?}, over the {LIVENESS_BOUND:?} bound"
    );
    let known = target.known_relays().await;
    assert!(
        !known.contains(&frozen_id),
        "the frozen relay is still known"
    );

    // A fresh client: its discovery ends within the deadline and leaves the frozen relay out.
    let mut fresh = NetPeer::start(spec, Some(boot)).await;
    let deadline = RegistryConfig::default().discovery_timeout();
    let live: HashSet<_> = all.iter().copied().filter(|p| *p != frozen_id).collect();
    let mut seen = HashSet::new();
    for _ in 0..3 {
        let (found, stats) = fresh.discover().await;
        println!(
            "fresh client's discovery: {} relays, {stats:?}",
            found.len()
        );
        assert!(!peers(&found).contains(&frozen_id));
        assert!(
            stats.elapsed < deadline + Duration::from_secs(2),
            "{stats:?}"
        );
        seen.extend(peers(&found));
    }
    assert_eq!(seen, live, "the live relays are found meanwhile");
    frozen.signal("CONT");
}
