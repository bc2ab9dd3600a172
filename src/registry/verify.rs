//! Record verification, free of I/O: the checks a reader and a storing node apply to a signed
//! relay record, and the per-relay high-water mark that refuses replays.

use std::{collections::HashMap, time::Duration};

use libp2p::PeerId;

use super::{
    config::{MAX_RECORD_ADDRS, MAX_RECORD_BYTES, MAX_RECORD_TTL},
    record::{self, OpenError, RelayRecord},
};

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Larger than [`MAX_RECORD_BYTES`] or with too many addresses.
    #[error("record too large")]
    TooLarge,
    /// Not a valid envelope or record.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Signed by a key other than the relay's own (a forgery).
    #[error("record for {claimed} signed by {signer}")]
    WrongSigner {
        /// The peer the record claims to be.
        claimed: PeerId,
        /// The peer whose key signed it.
        signer: PeerId,
    },
    /// A valid record of another relay than the one it was looked up for (its key, its
    /// provider record or the peer that served it).
    #[error("record of {found} where {expected}'s was expected")]
    PeerMismatch {
        /// The relay expected.
        expected: PeerId,
        /// The relay the record is about.
        found: PeerId,
    },
    /// Signed for another namespace.
    #[error("record of namespace {0:?}")]
    WrongNamespace(String),
    /// Past its expiry.
    #[error("record expired")]
    Expired,
    /// Issued further in the future than the tolerated clock skew.
    #[error("record issued in the future")]
    FromTheFuture,
    /// Valid for longer than [`MAX_RECORD_TTL`], or expiring before
    /// it was issued.
    #[error("record validity window is invalid or longer than allowed")]
    BadValidity,
    /// An address that does not end with `/p2p/<the relay>`: a client could not reserve on it.
    #[error("address {0} does not end with the relay's /p2p/<peer id>")]
    BadAddress(String),
    /// Older than a record of the same relay already seen (a replay).
    #[error("record issued at {issued_at_ms} ms, older than the newest seen ({newest_ms} ms)")]
    Replayed {
        /// Its issue time.
        issued_at_ms: u64,
        /// The newest issue time seen for that relay.
        newest_ms: u64,
    },
}

/// The context a record is checked in.
#[derive(Clone, Copy, Debug)]
pub struct Expectation<'a> {
    /// The namespace of this registry.
    pub namespace: &'a str,
    /// The relay the record must be about, if known from where it was found.
    pub peer: Option<PeerId>,
    /// The current time, UNIX milliseconds.
    pub now_ms: u64,
    /// Tolerated clock skew.
    pub max_skew: Duration,
}

/// Opens and checks a signed record: size, signature (by the relay's own key), relay id,
/// namespace, validity window. Freshness against earlier records is [`Freshness`]'s job.
pub fn verify(bytes: &[u8], expect: &Expectation<'_>) -> Result<RelayRecord, RecordError> {
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(RecordError::TooLarge);
    }
    let (record, key) = record::open(bytes)?;
    let signer = key.to_peer_id();
    if signer != record.peer {
        return Err(RecordError::WrongSigner {
            claimed: record.peer,
            signer,
        });
    }
    if let Some(expected) = expect.peer {
        if expected != record.peer {
            return Err(RecordError::PeerMismatch {
                expected,
                found: record.peer,
            });
        }
    }
    if record.addrs.len() > MAX_RECORD_ADDRS {
        return Err(RecordError::TooLarge);
    }
    let own = libp2p::multiaddr::Protocol::P2p(record.peer);
    if let Some(bad) = record
        .addrs
        .iter()
        .find(|a| a.iter().last() != Some(own.clone()))
    {
        return Err(RecordError::BadAddress(bad.to_string()));
    }
    if record.namespace != expect.namespace {
        return Err(RecordError::WrongNamespace(record.namespace));
    }
    let max_ttl = millis(MAX_RECORD_TTL);
    if record.expires_at_ms <= record.issued_at_ms
        || record.expires_at_ms - record.issued_at_ms > max_ttl
    {
        return Err(RecordError::BadValidity);
    }
    if record.issued_at_ms > expect.now_ms.saturating_add(millis(expect.max_skew)) {
        return Err(RecordError::FromTheFuture);
    }
    // A reader whose clock runs ahead of the relay's by up to the skew still accepts it.
    if record.expires_at_ms.saturating_add(millis(expect.max_skew)) <= expect.now_ms {
        return Err(RecordError::Expired);
    }
    Ok(record)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The newest issue time seen per relay: a record older than that is a replay. The same record
/// again (equal issue time) is accepted, as DHT replication delivers it several times.
#[derive(Debug, Default, Clone)]
pub struct Freshness {
    newest: HashMap<PeerId, u64>,
}

impl Freshness {
    /// Refuses `record` if an newer one of its relay was seen; otherwise remembers it.
    pub fn admit(&mut self, record: &RelayRecord) -> Result<(), RecordError> {
        let newest = self.newest.entry(record.peer).or_insert(0);
        if record.issued_at_ms < *newest {
            return Err(RecordError::Replayed {
                issued_at_ms: record.issued_at_ms,
                newest_ms: *newest,
            });
        }
        *newest = record.issued_at_ms;
        Ok(())
    }

    /// The newest issue time seen for `peer`.
    pub fn newest(&self, peer: &PeerId) -> Option<u64> {
        self.newest.get(peer).copied()
    }

    /// Forgets relays whose newest record expired long ago (bounded memory).
    pub fn prune(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(2 * millis(MAX_RECORD_TTL));
        self.newest.retain(|_, issued| *issued >= horizon);
    }
}

/// The storing side: whether a node stores `incoming` under the record key of `key_peer`,
/// given the record it holds there (if any). Stricter than a reader in one way: the key fixes
/// the relay, so the record must be the key's relay's, signed by it.
pub fn admit_for_storage(
    incoming: &[u8],
    key_peer: PeerId,
    stored: Option<&[u8]>,
    expect: &Expectation<'_>,
) -> Result<RelayRecord, RecordError> {
    let expect = Expectation {
        peer: Some(key_peer),
        ..*expect
    };
    let record = verify(incoming, &expect)?;
    if let Some(Ok((held, _))) = stored.map(record::open) {
        if record.issued_at_ms < held.issued_at_ms {
            return Err(RecordError::Replayed {
                issued_at_ms: record.issued_at_ms,
                newest_ms: held.issued_at_ms,
            });
        }
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;
    use crate::registry::record::tests::sample;

    const NOW: u64 = 1_700_000_000_000;

    fn expect(peer: Option<PeerId>) -> Expectation<'static> {
        Expectation {
            namespace: "/macula/relay/1",
            peer,
            now_ms: NOW,
            max_skew: Duration::from_secs(60),
        }
    }

    fn signed(key: &Keypair, issued: u64) -> (RelayRecord, Vec<u8>) {
        let record = sample(key.public().to_peer_id(), issued);
        let bytes = record.sign(key).unwrap();
        (record, bytes)
    }

    #[test]
    fn a_record_signed_by_its_relay_is_accepted() {
        let key = Keypair::generate_ed25519();
        let (record, bytes) = signed(&key, NOW - 1000);
        assert_eq!(verify(&bytes, &expect(Some(record.peer))).unwrap(), record);
    }

    #[test]
    fn a_record_signed_by_another_key_is_a_forgery() {
        let victim = PeerId::random();
        let forger = Keypair::generate_ed25519();
        let record = sample(victim, NOW);
        let bytes = record.sign(&forger).unwrap();
        assert!(matches!(
            verify(&bytes, &expect(None)),
            Err(RecordError::WrongSigner { claimed, .. }) if claimed == victim
        ));
    }

    #[test]
    fn a_record_of_another_relay_than_expected_is_refused() {
        let key = Keypair::generate_ed25519();
        let (_, bytes) = signed(&key, NOW);
        let other = PeerId::random();
        assert!(matches!(
            verify(&bytes, &expect(Some(other))),
            Err(RecordError::PeerMismatch { expected, .. }) if expected == other
        ));
    }

    #[test]
    fn a_reader_whose_clock_runs_ahead_within_the_skew_still_accepts() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let mut record = sample(peer, NOW - 1_000_000);
        // Expired 30 s ago by the reader's clock; 60 s of skew are tolerated.
        record.expires_at_ms = NOW - 30_000;
        assert!(verify(&record.sign(&key).unwrap(), &expect(None)).is_ok());
        record.expires_at_ms = NOW - 90_000;
        assert_eq!(
            verify(&record.sign(&key).unwrap(), &expect(None)),
            Err(RecordError::Expired)
        );
    }

    #[test]
    fn an_address_without_the_relays_p2p_suffix_is_refused() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let other = PeerId::random();
        for addr in [
            "/ip4/198.51.100.1/tcp/4001".to_owned(),
            format!("/ip4/198.51.100.1/tcp/4001/p2p/{other}"),
        ] {
            let mut record = sample(peer, NOW - 1000);
            record.addrs.push(addr.parse().unwrap());
            assert_eq!(
                verify(&record.sign(&key).unwrap(), &expect(None)),
                Err(RecordError::BadAddress(addr)),
            );
        }
    }

    #[test]
    fn expired_future_and_overlong_records_are_refused() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let mut record = sample(peer, NOW - 700_000);
        assert_eq!(
            verify(&record.sign(&key).unwrap(), &expect(None)),
            Err(RecordError::Expired)
        );
        record = sample(peer, NOW + 120_000);
        assert_eq!(
            verify(&record.sign(&key).unwrap(), &expect(None)),
            Err(RecordError::FromTheFuture)
        );
        record = sample(peer, NOW);
        record.expires_at_ms = NOW + 2 * 3_600_000;
        assert_eq!(
            verify(&record.sign(&key).unwrap(), &expect(None)),
            Err(RecordError::BadValidity)
        );
    }

    #[test]
    fn a_record_of_another_namespace_is_refused() {
        let key = Keypair::generate_ed25519();
        let mut record = sample(key.public().to_peer_id(), NOW);
        record.namespace = "/other/relay/1".into();
        assert!(matches!(
            verify(&record.sign(&key).unwrap(), &expect(None)),
            Err(RecordError::WrongNamespace(_))
        ));
    }

    #[test]
    fn an_older_record_after_a_newer_one_is_a_replay() {
        let key = Keypair::generate_ed25519();
        let (old, _) = signed(&key, NOW - 5000);
        let (new, _) = signed(&key, NOW - 1000);
        let mut freshness = Freshness::default();
        freshness.admit(&new).unwrap();
        freshness.admit(&new).unwrap();
        assert_eq!(
            freshness.admit(&old),
            Err(RecordError::Replayed {
                issued_at_ms: NOW - 5000,
                newest_ms: NOW - 1000
            })
        );
        assert_eq!(freshness.newest(&new.peer), Some(NOW - 1000));
    }

    #[test]
    fn storing_refuses_forgeries_under_a_relays_key_and_older_records() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let (_, old) = signed(&key, NOW - 5000);
        let (_, new) = signed(&key, NOW - 1000);
        let e = expect(None);
        assert!(admit_for_storage(&new, peer, Some(&old), &e).is_ok());
        assert!(admit_for_storage(&new, peer, Some(&new), &e).is_ok());
        assert!(matches!(
            admit_for_storage(&old, peer, Some(&new), &e),
            Err(RecordError::Replayed { .. })
        ));
        let forger = Keypair::generate_ed25519();
        let (_, foreign) = signed(&forger, NOW);
        assert!(matches!(
            admit_for_storage(&foreign, peer, None, &e),
            Err(RecordError::PeerMismatch { .. })
        ));
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        assert_eq!(
            verify(&vec![0u8; MAX_RECORD_BYTES + 1], &expect(None)),
            Err(RecordError::TooLarge)
        );
    }
}
