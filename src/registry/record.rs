//! Relay records: what a relay announces about itself, signed as an RFC 0002 envelope with our
//! own domain and payload type.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::{
    core::SignedEnvelope,
    identity::{Keypair, PublicKey, SigningError},
    Multiaddr, PeerId,
};
use prost::Message;

use super::proto;

/// The envelope's domain separation string.
pub const RECORD_DOMAIN: &str = "macula-relay-record";
/// The envelope's payload type: a `/`-path (the "namespace" multicodec form of RFC 0002).
pub const RECORD_PAYLOAD_TYPE: &[u8] = b"/macula/relay-record/1";

/// What a relay announces: who and where it is, its capacity, load and limits, whether it is
/// accepting, and the record's validity window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayRecord {
    /// The relay.
    pub peer: PeerId,
    /// Its public addresses, each ending with `/p2p/<relay>`.
    pub addrs: Vec<Multiaddr>,
    /// Maximum concurrent sessions (capacity).
    pub max_sessions: u32,
    /// Sessions relaying or being set up.
    pub active_sessions: u32,
    /// Reservations held.
    pub reservations: u32,
    /// Maximum reservations.
    pub max_reservations: u32,
    /// Per-session bandwidth in bytes per second and direction; `None` = unlimited.
    pub bandwidth: Option<u64>,
    /// Session timeout; `None` = unlimited.
    pub session_timeout: Option<Duration>,
    /// Per-session data cap per direction; `None` = none.
    pub max_session_bytes: Option<u64>,
    /// Whether the relay accepts reservations and sessions. `false` marks a withdrawal.
    pub enabled: bool,
    /// When it was signed, UNIX milliseconds. Strictly increasing per relay: a reader keeps the
    /// newest it has seen and refuses older ones (replays).
    pub issued_at_ms: u64,
    /// When it expires, UNIX milliseconds.
    pub expires_at_ms: u64,
    /// The namespace it was signed for.
    pub namespace: String,
}

impl RelayRecord {
    /// Session slots free.
    pub fn spare_sessions(&self) -> u32 {
        self.max_sessions.saturating_sub(self.active_sessions)
    }

    /// Reservation slots free.
    pub fn spare_reservations(&self) -> u32 {
        self.max_reservations.saturating_sub(self.reservations)
    }

    /// When it expires.
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.expires_at_ms)
    }

    /// When it was signed.
    pub fn issued_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.issued_at_ms)
    }

    /// Signs the record with the relay's key and returns the envelope's bytes.
    pub fn sign(&self, key: &Keypair) -> Result<Vec<u8>, SigningError> {
        let envelope = SignedEnvelope::new(
            key,
            RECORD_DOMAIN.to_owned(),
            RECORD_PAYLOAD_TYPE.to_vec(),
            self.to_proto().encode_to_vec(),
        )?;
        Ok(envelope.into_protobuf_encoding())
    }

    fn to_proto(&self) -> proto::RelayRecord {
        proto::RelayRecord {
            peer_id: self.peer.to_bytes(),
            addrs: self.addrs.iter().map(|a| a.to_vec()).collect(),
            max_sessions: self.max_sessions,
            active_sessions: self.active_sessions,
            reservations: self.reservations,
            max_reservations: self.max_reservations,
            bandwidth: self.bandwidth.unwrap_or(0),
            session_timeout_secs: self
                .session_timeout
                .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
                .unwrap_or(0),
            enabled: self.enabled,
            issued_at_ms: self.issued_at_ms,
            expires_at_ms: self.expires_at_ms,
            namespace: self.namespace.clone(),
            max_session_bytes: self.max_session_bytes.unwrap_or(0),
        }
    }

    fn from_proto(message: proto::RelayRecord) -> Result<Self, &'static str> {
        let peer = PeerId::from_bytes(&message.peer_id).map_err(|_| "peer id")?;
        let addrs = message
            .addrs
            .into_iter()
            .map(Multiaddr::try_from)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "address")?;
        let nonzero = |v: u64| (v > 0).then_some(v);
        Ok(RelayRecord {
            peer,
            addrs,
            max_sessions: message.max_sessions,
            active_sessions: message.active_sessions,
            reservations: message.reservations,
            max_reservations: message.max_reservations,
            bandwidth: nonzero(message.bandwidth),
            session_timeout: nonzero(u64::from(message.session_timeout_secs))
                .map(Duration::from_secs),
            max_session_bytes: nonzero(message.max_session_bytes),
            enabled: message.enabled,
            issued_at_ms: message.issued_at_ms,
            expires_at_ms: message.expires_at_ms,
            namespace: message.namespace,
        })
    }
}

/// Why an envelope could not be opened (before any policy check).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not a signed envelope, or its signature is bad for our domain and payload type.
    #[error("invalid signed envelope: {0}")]
    Envelope(String),
    /// The payload is not a relay record or a field is invalid.
    #[error("invalid relay record: {0}")]
    Payload(&'static str),
}

/// Opens an envelope: checks its signature for our domain and payload type and decodes the
/// record. Returns the record and the signing key; the registry then applies its policy
/// (signer, expiry, freshness: [`Expectation`](super::Expectation), [`Freshness`](super::Freshness)).
pub fn open(bytes: &[u8]) -> Result<(RelayRecord, PublicKey), OpenError> {
    let envelope = SignedEnvelope::from_protobuf_encoding(bytes)
        .map_err(|e| OpenError::Envelope(e.to_string()))?;
    let (payload, key) = envelope
        .payload_and_signing_key(RECORD_DOMAIN.to_owned(), RECORD_PAYLOAD_TYPE)
        .map_err(|e| OpenError::Envelope(e.to_string()))?;
    let message =
        proto::RelayRecord::decode(payload).map_err(|_| OpenError::Payload("protobuf"))?;
    let record = RelayRecord::from_proto(message).map_err(OpenError::Payload)?;
    Ok((record, key.clone()))
}

/// UNIX milliseconds of `t` (0 before the epoch).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample(peer: PeerId, issued_at_ms: u64) -> RelayRecord {
        RelayRecord {
            peer,
            addrs: vec![format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")
                .parse()
                .unwrap()],
            max_sessions: 100,
            active_sessions: 3,
            reservations: 2,
            max_reservations: 128,
            bandwidth: Some(1_000_000),
            session_timeout: Some(Duration::from_secs(1800)),
            max_session_bytes: None,
            enabled: true,
            issued_at_ms,
            expires_at_ms: issued_at_ms + 600_000,
            namespace: "/macula/relay/1".into(),
        }
    }

    #[test]
    fn record_round_trips_through_its_envelope() {
        let key = Keypair::generate_ed25519();
        let record = sample(key.public().to_peer_id(), 1_000);
        let bytes = record.sign(&key).unwrap();
        let (opened, signer) = open(&bytes).unwrap();
        assert_eq!(opened, record);
        assert_eq!(signer, key.public());
    }

    #[test]
    fn an_envelope_of_another_domain_is_not_a_record() {
        let key = Keypair::generate_ed25519();
        let other = SignedEnvelope::new(
            &key,
            "libp2p-relay-rsvp".into(),
            RECORD_PAYLOAD_TYPE.to_vec(),
            vec![],
        )
        .unwrap()
        .into_protobuf_encoding();
        assert!(matches!(open(&other), Err(OpenError::Envelope(_))));
        assert!(matches!(open(b"junk"), Err(OpenError::Envelope(_))));
    }

    #[test]
    fn spare_capacity_never_underflows() {
        let mut record = sample(PeerId::random(), 0);
        record.active_sessions = 150;
        assert_eq!(record.spare_sessions(), 0);
        assert_eq!(record.spare_reservations(), 126);
    }
}
