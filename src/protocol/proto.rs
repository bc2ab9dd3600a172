//! The Circuit Relay v2 protobuf messages, as in the spec (`relay/circuit-v2.md`), derived with
//! prost (no build-time `protoc`). Field numbers and types are the spec's; every field is optional
//! as on the wire, and the relay validates presence itself.

/// `HopMessage.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum HopMessageType {
    /// A client asks for a reservation.
    Reserve = 0,
    /// A client asks for a circuit to a peer.
    Connect = 1,
    /// The relay's answer.
    Status = 2,
}

/// `StopMessage.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum StopMessageType {
    /// The relay asks the target to accept a circuit.
    Connect = 0,
    /// The target's answer.
    Status = 1,
}

/// The spec's `Status` enum, as its integer codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Status {
    /// Zero value required by proto3.
    Unused = 0,
    /// Success.
    Ok = 100,
    /// Reservation refused (e.g. too many reservations).
    ReservationRefused = 200,
    /// Too many circuits from the source or to the target.
    ResourceLimitExceeded = 201,
    /// Refused by the access policy.
    PermissionDenied = 202,
    /// The relay could not reach the target.
    ConnectionFailed = 203,
    /// The target has no reservation.
    NoReservation = 204,
    /// The request could not be decoded.
    MalformedMessage = 400,
    /// The request was of the wrong type.
    UnexpectedMessage = 401,
}

/// `HopMessage`, exchanged on `/libp2p/circuit/relay/0.2.0/hop`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HopMessage {
    /// Message type.
    #[prost(enumeration = "HopMessageType", optional, tag = "1")]
    pub r#type: Option<i32>,
    /// The target peer of a CONNECT.
    #[prost(message, optional, tag = "2")]
    pub peer: Option<Peer>,
    /// The reservation granted in answer to a RESERVE.
    #[prost(message, optional, tag = "3")]
    pub reservation: Option<Reservation>,
    /// The limits applied to relayed connections.
    #[prost(message, optional, tag = "4")]
    pub limit: Option<Limit>,
    /// The answer's status.
    #[prost(enumeration = "Status", optional, tag = "5")]
    pub status: Option<i32>,
}

/// `StopMessage`, exchanged on `/libp2p/circuit/relay/0.2.0/stop`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopMessage {
    /// Message type.
    #[prost(enumeration = "StopMessageType", optional, tag = "1")]
    pub r#type: Option<i32>,
    /// The source peer of the circuit.
    #[prost(message, optional, tag = "2")]
    pub peer: Option<Peer>,
    /// The limits applied to the circuit.
    #[prost(message, optional, tag = "3")]
    pub limit: Option<Limit>,
    /// The target's answer.
    #[prost(enumeration = "Status", optional, tag = "4")]
    pub status: Option<i32>,
}

/// `Peer`: a peer id and, optionally, addresses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Peer {
    /// The peer id, as bytes.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub id: Option<Vec<u8>>,
    /// Multiaddrs, as bytes.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub addrs: Vec<Vec<u8>>,
}

/// `Reservation`: expiry, relay addresses and voucher.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Reservation {
    /// UNIX expiration time (UTC seconds).
    #[prost(uint64, optional, tag = "1")]
    pub expire: Option<u64>,
    /// The relay's public addresses, with `/p2p/<relay id>`.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub addrs: Vec<Vec<u8>>,
    /// The signed reservation voucher.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub voucher: Option<Vec<u8>>,
}

/// `Limit`: duration (seconds) and data (bytes per direction); 0 or absent means unlimited.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Limit {
    /// Maximum circuit duration in seconds.
    #[prost(uint32, optional, tag = "1")]
    pub duration: Option<u32>,
    /// Maximum bytes in each direction.
    #[prost(uint64, optional, tag = "2")]
    pub data: Option<u64>,
}

/// `Voucher`: the payload of the reservation voucher envelope.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Voucher {
    /// The relay's peer id.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub relay: Option<Vec<u8>>,
    /// The reserving peer's id.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub peer: Option<Vec<u8>>,
    /// UNIX expiration time (UTC seconds).
    #[prost(uint64, optional, tag = "3")]
    pub expiration: Option<u64>,
}
