//! Wire format of Circuit Relay v2: protocol names, protobuf messages, length-prefixed framing,
//! status codes, `Limit` and the signed reservation voucher.
//!
//! Each exchange lives in its own file: [`inbound_hop`] (RESERVE / CONNECT from clients) and
//! [`outbound_stop`] (CONNECT to the target).

pub mod inbound_hop;
pub mod outbound_stop;
pub mod proto;
pub mod voucher;

#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod scripted_stream;

use std::{fmt, time::Duration};

use libp2p::StreamProtocol;

pub use proto::Status;

/// `/libp2p/circuit/relay/0.2.0/hop`: clients talk to the relay.
pub const HOP_PROTOCOL: StreamProtocol = StreamProtocol::new("/libp2p/circuit/relay/0.2.0/hop");
/// `/libp2p/circuit/relay/0.2.0/stop`: the relay talks to a circuit's target.
pub const STOP_PROTOCOL: StreamProtocol = StreamProtocol::new("/libp2p/circuit/relay/0.2.0/stop");

/// Largest hop or stop message accepted, in bytes (without the varint length prefix).
/// Bigger messages are answered with `MALFORMED_MESSAGE`.
pub const MAX_MESSAGE_SIZE: usize = 4096;

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Unused => "UNUSED",
            Status::Ok => "OK",
            Status::ReservationRefused => "RESERVATION_REFUSED",
            Status::ResourceLimitExceeded => "RESOURCE_LIMIT_EXCEEDED",
            Status::PermissionDenied => "PERMISSION_DENIED",
            Status::ConnectionFailed => "CONNECTION_FAILED",
            Status::NoReservation => "NO_RESERVATION",
            Status::MalformedMessage => "MALFORMED_MESSAGE",
            Status::UnexpectedMessage => "UNEXPECTED_MESSAGE",
        })
    }
}

/// The limits a relay announces for relayed connections, in the spec's units.
///
/// `None` (and 0 on the wire) means "no limit".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WireLimit {
    /// Maximum circuit duration.
    pub duration: Option<Duration>,
    /// Maximum bytes in each direction.
    pub data: Option<u64>,
}

impl WireLimit {
    /// The protobuf `Limit`, or `None` when nothing is limited (the spec: an absent `limit`
    /// means the relay applies none). Durations round up to whole seconds and saturate at
    /// `u32::MAX` seconds.
    pub(crate) fn to_proto(self) -> Option<proto::Limit> {
        if self.duration.is_none() && self.data.is_none() {
            return None;
        }
        Some(proto::Limit {
            duration: self.duration.map(|d| {
                let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
                u32::try_from(secs).unwrap_or(u32::MAX)
            }),
            data: self.data,
        })
    }

    #[cfg(test)]
    /// Reads a protobuf `Limit`, mapping 0 to "no limit" as the spec says.
    pub(crate) fn from_proto(limit: Option<proto::Limit>) -> Self {
        let Some(limit) = limit else {
            return Self::default();
        };
        Self {
            duration: limit
                .duration
                .filter(|d| *d > 0)
                .map(|d| Duration::from_secs(d.into())),
            data: limit.data.filter(|d| *d > 0),
        }
    }
}

/// The length-prefixed protobuf codec used on hop and stop streams.
pub(crate) fn codec<M>() -> prost_codec::Codec<M> {
    prost_codec::Codec::new(MAX_MESSAGE_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_limit_is_omitted_on_the_wire() {
        assert_eq!(WireLimit::default().to_proto(), None);
    }

    #[test]
    fn limit_rounds_duration_up_to_seconds() {
        let limit = WireLimit {
            duration: Some(Duration::from_millis(1500)),
            data: Some(7),
        };
        let proto = limit.to_proto().unwrap();
        assert_eq!(proto.duration, Some(2));
        assert_eq!(proto.data, Some(7));
    }

    #[test]
    fn zero_on_the_wire_means_unlimited() {
        let read = WireLimit::from_proto(Some(proto::Limit {
            duration: Some(0),
            data: Some(0),
        }));
        assert_eq!(read, WireLimit::default());
    }

    #[test]
    fn status_prints_spec_name() {
        assert_eq!(
            Status::ResourceLimitExceeded.to_string(),
            "RESOURCE_LIMIT_EXCEEDED"
        );
    }
}
