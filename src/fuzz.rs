//! Fuzz entry points: each takes untrusted bytes and must return without panicking, hanging or
//! allocating without bound. The cargo-fuzz targets in `fuzz/` call them (feature `fuzzing`, on
//! a nightly toolchain); on stable, this module's tests drive the same functions with proptest
//! over the committed corpus (`fuzz/corpus/<target>/`) and 100,000 random and mutated inputs per
//! target.

use futures::executor::block_on;
use libp2p::PeerId;

use crate::protocol::{
    inbound_hop::{self, HopRequest},
    outbound_stop,
    scripted_stream::ScriptedStream,
    voucher::Voucher,
    WireLimit,
};

/// An inbound hop stream carrying `data`: the relay reads the request and, for a bad one, writes
/// the spec's status. Whatever it writes must be a well-formed answer.
pub fn hop_request(data: &[u8]) {
    let mut stream = ScriptedStream::new(data.to_vec());
    match block_on(inbound_hop::read_request(&mut stream)) {
        Ok(HopRequest::Reserve(_)) | Ok(HopRequest::Connect(_)) => {}
        Err(_) => {}
    }
    check_answers(&stream.output);
}

/// An outbound stop stream whose target answers with `data`.
pub fn stop_answer(data: &[u8]) {
    let stream = ScriptedStream::new(data.to_vec());
    let _ = block_on(outbound_stop::connect(
        stream,
        PeerId::random(),
        WireLimit::default(),
    ));
}

/// A reservation voucher envelope.
pub fn voucher(data: &[u8]) {
    let _ = Voucher::open(data);
}

/// A relay registry record envelope.
#[cfg(feature = "registry")]
pub fn relay_record(data: &[u8]) {
    let _ = crate::registry::open(data);
}

/// A node config file: parsed, then checked and defaulted.
#[cfg(feature = "admin")]
pub fn config_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(settings) = crate::node_config::NodeSettings::from_toml(text) {
        let _ = settings.resolve();
    }
}

/// The relay's answers on a hop stream: length-prefixed `HopMessage` STATUS messages.
fn check_answers(mut written: &[u8]) {
    use prost::Message;
    while !written.is_empty() {
        let message = crate::protocol::proto::HopMessage::decode_length_delimited(&mut written)
            .expect("the relay writes well-formed hop messages");
        assert_eq!(
            message.r#type,
            Some(crate::protocol::proto::HopMessageType::Status as i32),
            "the relay answers a bad request with a STATUS"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, path::PathBuf};

    use proptest::{prelude::*, test_runner::TestRunner};

    use super::*;

    /// Cases per target, besides the corpus.
    const CASES: u32 = 100_000;

    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut seeds: Vec<Vec<u8>> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("the corpus {} is committed: {e}", dir.display()))
            .map(|entry| fs::read(entry.unwrap().path()).unwrap())
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "{} has seeds", dir.display());
        seeds
    }

    /// Random bytes, and corpus seeds with bytes flipped, inserted, removed or cut off.
    fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
        let random = proptest::collection::vec(any::<u8>(), 0..512);
        let mutated = (
            proptest::sample::select(seeds),
            proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..8),
        )
            .prop_map(|(mut seed, edits)| {
                for (at, byte, kind) in edits {
                    let len = seed.len();
                    match kind {
                        0 if len > 0 => seed[at.index(len)] = byte,
                        1 => seed.insert(at.index(len + 1), byte),
                        2 if len > 0 => {
                            seed.remove(at.index(len));
                        }
                        _ => seed.truncate(at.index(len + 1)),
                    }
                }
                seed
            });
        prop_oneof![1 => random, 3 => mutated]
    }

    fn fuzz(target: &str, run: fn(&[u8])) {
        let seeds = corpus(target);
        for seed in &seeds {
            run(seed);
        }
        let config = ProptestConfig {
            cases: CASES,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        TestRunner::new(config)
            .run(&inputs(seeds), |input| {
                run(&input);
                Ok(())
            })
            .unwrap();
    }

    /// Writes the seed corpus (run once with `--ignored`; the files are committed).
    #[test]
    #[ignore = "writes fuzz/corpus; run by hand when the formats change"]
    fn write_seed_corpus() {
        use prost::Message;

        use crate::protocol::proto::{
            HopMessage, HopMessageType, Peer, StopMessage, StopMessageType,
        };
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let write = |target: &str, name: &str, bytes: &[u8]| {
            let dir = root.join(target);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(name), bytes).unwrap();
        };
        let key = libp2p::identity::Keypair::ed25519_from_bytes([7u8; 32]).unwrap();
        let peer = key.public().to_peer_id();
        let hop = |kind: HopMessageType, with_peer: bool| {
            HopMessage {
                r#type: Some(kind as i32),
                peer: with_peer.then(|| Peer {
                    id: Some(peer.to_bytes()),
                    addrs: vec!["/ip4/8.8.8.8/tcp/4001"
                        .parse::<libp2p::Multiaddr>()
                        .unwrap()
                        .to_vec()],
                }),
                ..Default::default()
            }
            .encode_length_delimited_to_vec()
        };
        write(
            "hop_request",
            "reserve",
            &hop(HopMessageType::Reserve, false),
        );
        write(
            "hop_request",
            "connect",
            &hop(HopMessageType::Connect, true),
        );
        write(
            "hop_request",
            "connect_without_peer",
            &hop(HopMessageType::Connect, false),
        );
        write("hop_request", "status", &hop(HopMessageType::Status, false));
        write("hop_request", "oversized_prefix", &[0xff, 0xff, 0x03, 0x08]);
        let stop = |status: Option<crate::Status>, kind: StopMessageType| {
            StopMessage {
                r#type: Some(kind as i32),
                status: status.map(|s| s as i32),
                ..Default::default()
            }
            .encode_length_delimited_to_vec()
        };
        write(
            "stop_answer",
            "ok",
            &stop(Some(crate::Status::Ok), StopMessageType::Status),
        );
        let mut ok_then_data = stop(Some(crate::Status::Ok), StopMessageType::Status);
        ok_then_data.extend_from_slice(b"early circuit bytes");
        write("stop_answer", "ok_then_data", &ok_then_data);
        write(
            "stop_answer",
            "refused",
            &stop(
                Some(crate::Status::ResourceLimitExceeded),
                StopMessageType::Status,
            ),
        );
        write(
            "stop_answer",
            "connect_instead",
            &stop(None, StopMessageType::Connect),
        );
        let voucher = Voucher {
            relay: peer,
            peer: PeerId::random(),
            expiration: 1_800_000_000,
        };
        write("voucher", "signed", &voucher.sign(&key).unwrap());
        #[cfg(feature = "registry")]
        {
            let record = crate::registry::RelayRecord {
                peer,
                addrs: vec!["/ip4/8.8.8.8/tcp/4001".parse().unwrap()],
                max_sessions: 100,
                active_sessions: 3,
                reservations: 7,
                max_reservations: 128,
                bandwidth: Some(1_000_000),
                session_timeout: Some(std::time::Duration::from_secs(1800)),
                max_session_bytes: None,
                enabled: true,
                issued_at_ms: 1_800_000_000_000,
                expires_at_ms: 1_800_000_600_000,
                namespace: "macula".into(),
            };
            write("relay_record", "signed", &record.sign(&key).unwrap());
        }
        write(
            "config_file",
            "full",
            br#"listen = ["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]
external = ["/ip4/203.0.113.7/tcp/4001"]
allow_private_addrs = false
exempt_networks = ["10.0.0.0/8"]
max_sessions = 100
bandwidth = 1000000
session_timeout = 1800
max_session_bytes = 0
max_reservations = 128
reservation_ttl = 3600
drain_timeout = 30
admin = "127.0.0.1:9101"
registry = true
"#,
        );
        write("config_file", "empty", b"");
        write(
            "config_file",
            "bad_types",
            b"max_sessions = \"many\"\nlisten = 3\n",
        );
    }

    #[test]
    fn hop_requests_never_panic_and_bad_ones_get_a_status() {
        fuzz("hop_request", hop_request);
    }

    #[test]
    fn stop_answers_never_panic() {
        fuzz("stop_answer", stop_answer);
    }

    #[test]
    fn vouchers_never_panic() {
        fuzz("voucher", voucher);
    }

    #[cfg(feature = "registry")]
    #[test]
    fn relay_records_never_panic() {
        fuzz("relay_record", relay_record);
    }

    #[cfg(feature = "admin")]
    #[test]
    fn config_files_never_panic() {
        fuzz("config_file", config_file);
    }
}
