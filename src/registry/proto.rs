//! The registry's protobuf messages (proto3), derived with prost. The schema is in
//! `docs/registry.md`.

/// A relay record, the payload of a signed envelope (domain `macula-relay-record`, payload type
/// `/macula/relay-record/1`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RelayRecord {
    /// The relay's peer id (bytes); must be the envelope signer's.
    #[prost(bytes = "vec", tag = "1")]
    pub peer_id: Vec<u8>,
    /// The relay's public addresses (multiaddr bytes, each ending with `/p2p/<relay>`).
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub addrs: Vec<Vec<u8>>,
    /// Maximum concurrent sessions.
    #[prost(uint32, tag = "3")]
    pub max_sessions: u32,
    /// Sessions relaying or being set up.
    #[prost(uint32, tag = "4")]
    pub active_sessions: u32,
    /// Reservations held.
    #[prost(uint32, tag = "5")]
    pub reservations: u32,
    /// Maximum reservations.
    #[prost(uint32, tag = "6")]
    pub max_reservations: u32,
    /// Per-session bandwidth, bytes per second and direction; 0 = unlimited.
    #[prost(uint64, tag = "7")]
    pub bandwidth: u64,
    /// Session timeout in seconds; 0 = unlimited.
    #[prost(uint32, tag = "8")]
    pub session_timeout_secs: u32,
    /// Whether the relay accepts reservations and sessions; `false` is a withdrawal.
    #[prost(bool, tag = "9")]
    pub enabled: bool,
    /// When signed, UNIX milliseconds; strictly increasing per relay.
    #[prost(uint64, tag = "10")]
    pub issued_at_ms: u64,
    /// When it stops being valid, UNIX milliseconds.
    #[prost(uint64, tag = "11")]
    pub expires_at_ms: u64,
    /// The registry namespace it was signed for.
    #[prost(string, tag = "12")]
    pub namespace: String,
    /// Per-session data cap in bytes and direction; 0 = none.
    #[prost(uint64, tag = "13")]
    pub max_session_bytes: u64,
}

/// A request for a relay's current signed record (`/macula/relay-record/1.0.0`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchRequest {
    /// The namespace the record is wanted for.
    #[prost(string, tag = "1")]
    pub namespace: String,
}

/// The answer: the signed envelope, absent if the peer has no record in that namespace.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FetchResponse {
    /// The envelope's protobuf encoding.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub envelope: Option<Vec<u8>>,
}
