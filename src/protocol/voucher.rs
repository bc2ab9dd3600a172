//! Reservation vouchers: a signed envelope (RFC 0002) with domain `libp2p-relay-rsvp` and payload
//! type multicodec `0x0302`, carrying the canonical protobuf `Voucher { relay, peer, expiration }`.

use libp2p::{
    core::SignedEnvelope,
    identity::{Keypair, SigningError},
    PeerId,
};
use prost::Message;

use super::proto;

/// The envelope's domain separation string.
pub const VOUCHER_DOMAIN: &str = "libp2p-relay-rsvp";
/// The envelope's payload type: the multicodec `0x0302`, as go-libp2p and js-libp2p write it.
pub const VOUCHER_PAYLOAD_TYPE: [u8; 2] = [0x03, 0x02];

/// A reservation voucher's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voucher {
    /// The relay that granted the reservation.
    pub relay: PeerId,
    /// The peer holding the reservation.
    pub peer: PeerId,
    /// UNIX expiration time, in seconds.
    pub expiration: u64,
}

/// Why a voucher could not be read (the relay only signs vouchers; reading them is for tests
/// and fuzzing).
#[cfg(any(test, feature = "fuzzing"))]
#[derive(Debug, thiserror::Error)]
pub enum VoucherError {
    /// Not a signed envelope, or a bad signature for the domain and payload type.
    #[error("invalid signed envelope: {0}")]
    Envelope(String),
    /// The payload is not a `Voucher` message, or a field is missing or invalid.
    #[error("invalid voucher payload: {0}")]
    Payload(&'static str),
    /// The envelope is not signed by the relay the voucher names.
    #[error("voucher signed by a key other than the relay's")]
    WrongSigner,
}

impl Voucher {
    /// Signs the voucher with the relay's key and returns the envelope's bytes.
    pub fn sign(&self, relay_key: &Keypair) -> Result<Vec<u8>, SigningError> {
        let payload = proto::Voucher {
            relay: Some(self.relay.to_bytes()),
            peer: Some(self.peer.to_bytes()),
            expiration: Some(self.expiration),
        }
        .encode_to_vec();
        let envelope = SignedEnvelope::new(
            relay_key,
            VOUCHER_DOMAIN.to_owned(),
            VOUCHER_PAYLOAD_TYPE.to_vec(),
            payload,
        )?;
        Ok(envelope.into_protobuf_encoding())
    }

    #[cfg(any(test, feature = "fuzzing"))]
    /// Decodes a voucher envelope, checking its signature and that the relay it names signed it.
    pub fn open(bytes: &[u8]) -> Result<Self, VoucherError> {
        let envelope = SignedEnvelope::from_protobuf_encoding(bytes)
            .map_err(|e| VoucherError::Envelope(e.to_string()))?;
        let (payload, key) = envelope
            .payload_and_signing_key(VOUCHER_DOMAIN.to_owned(), &VOUCHER_PAYLOAD_TYPE)
            .map_err(|e| VoucherError::Envelope(e.to_string()))?;
        let message = proto::Voucher::decode(payload)
            .map_err(|_| VoucherError::Payload("not a Voucher message"))?;
        let peer_id = |field: Option<Vec<u8>>, name| {
            field
                .and_then(|b| PeerId::from_bytes(&b).ok())
                .ok_or(VoucherError::Payload(name))
        };
        let voucher = Voucher {
            relay: peer_id(message.relay, "relay peer id")?,
            peer: peer_id(message.peer, "reserving peer id")?,
            expiration: message
                .expiration
                .ok_or(VoucherError::Payload("expiration"))?,
        };
        if key.to_peer_id() != voucher.relay {
            return Err(VoucherError::WrongSigner);
        }
        Ok(voucher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voucher_round_trips_and_names_its_signer() {
        let relay = Keypair::generate_ed25519();
        let voucher = Voucher {
            relay: relay.public().to_peer_id(),
            peer: PeerId::random(),
            expiration: 1_900_000_000,
        };
        let bytes = voucher.sign(&relay).unwrap();
        assert_eq!(Voucher::open(&bytes).unwrap(), voucher);
    }

    #[test]
    fn voucher_signed_by_another_key_is_rejected() {
        let relay = Keypair::generate_ed25519();
        let forger = Keypair::generate_ed25519();
        let voucher = Voucher {
            relay: relay.public().to_peer_id(),
            peer: PeerId::random(),
            expiration: 1,
        };
        let bytes = voucher.sign(&forger).unwrap();
        assert!(matches!(
            Voucher::open(&bytes),
            Err(VoucherError::WrongSigner)
        ));
    }

    #[test]
    fn voucher_payload_is_canonical_field_order() {
        let relay = PeerId::random();
        let peer = PeerId::random();
        let encoded = proto::Voucher {
            relay: Some(relay.to_bytes()),
            peer: Some(peer.to_bytes()),
            expiration: Some(5),
        }
        .encode_to_vec();
        // Field 1 (bytes) first, field 3 (varint) last.
        assert_eq!(encoded[0], 0x0a);
        assert_eq!(&encoded[encoded.len() - 2..], &[0x18, 5]);
    }

    #[test]
    fn garbage_is_not_a_voucher() {
        assert!(matches!(
            Voucher::open(b"not an envelope"),
            Err(VoucherError::Envelope(_))
        ));
    }
}
