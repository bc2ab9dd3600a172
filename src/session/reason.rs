//! Why the relay refused a request or ended a session: each reason is defined once, in one
//! table, with its stable label (metrics, admin JSON), its text (logs, `Display`) and, for
//! refusals, the spec status answered to a RESERVE and to a CONNECT.

use std::fmt;

use super::Side;
use crate::protocol::Status;

/// Defines [`DenyReason`] from one row per reason:
/// `Variant => "label", "text", reserve: Status, connect: Status;`.
macro_rules! deny_reasons {
    ($($(#[$doc:meta])* $variant:ident => $label:literal, $text:literal,
        reserve: $reserve:ident, connect: $connect:ident;)*) => {
        /// Why a reservation or a session was refused.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum DenyReason {
            $($(#[$doc])* $variant,)*
        }

        impl DenyReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [DenyReason] = &[$(DenyReason::$variant,)*];

            /// The stable snake_case name (metric label, admin JSON key), e.g. `"sessions_full"`.
            pub fn label(self) -> &'static str {
                match self { $(DenyReason::$variant => $label,)* }
            }

            /// The status answered to a RESERVE refused for this reason.
            pub fn reserve_status(self) -> Status {
                match self { $(DenyReason::$variant => Status::$reserve,)* }
            }

            /// The status answered to a CONNECT refused for this reason.
            pub fn connect_status(self) -> Status {
                match self { $(DenyReason::$variant => Status::$connect,)* }
            }

            fn text(self) -> &'static str {
                match self { $(DenyReason::$variant => $text,)* }
            }
        }
    };
}

deny_reasons! {
    /// The relay is disabled.
    Disabled => "disabled", "relay disabled",
        reserve: ReservationRefused, connect: ResourceLimitExceeded;
    /// The request came over a relayed connection (the spec: relays should not accept those).
    RelayedConnection => "relayed_connection", "request over a relayed connection",
        reserve: PermissionDenied, connect: PermissionDenied;
    /// The access policy refuses the peer.
    NotAllowed => "not_allowed", "refused by access policy",
        reserve: PermissionDenied, connect: PermissionDenied;
    /// The peer or its IP address sent requests faster than the configured rate.
    RateLimited => "rate_limited", "request rate limit",
        reserve: ResourceLimitExceeded, connect: ResourceLimitExceeded;
    /// The reservation table is full.
    ReservationsFull => "reservations_full", "reservation table full",
        reserve: ReservationRefused, connect: ResourceLimitExceeded;
    /// The peer holds as many reservations as it may.
    PeerReservationsFull => "peer_reservations_full", "peer reservation limit",
        reserve: ReservationRefused, connect: ResourceLimitExceeded;
    /// The requester's address or network holds as many reservations as one origin may.
    OriginReservationsFull => "origin_reservations_full", "network origin reservation limit",
        reserve: ReservationRefused, connect: ResourceLimitExceeded;
    /// The target has no reservation.
    NoReservation => "no_reservation", "target has no reservation",
        reserve: ReservationRefused, connect: NoReservation;
    /// No connection to the target (when reservations are not required).
    TargetUnreachable => "target_unreachable", "no connection to target",
        reserve: ReservationRefused, connect: ConnectionFailed;
    /// The target is the relay itself or the requester.
    InvalidTarget => "invalid_target", "target is the relay or the requester",
        reserve: ReservationRefused, connect: PermissionDenied;
    /// The relay is at its maximum number of sessions.
    SessionsFull => "sessions_full", "session limit reached",
        reserve: ReservationRefused, connect: ResourceLimitExceeded;
    /// The source or the target is in as many sessions as a peer may be.
    PeerSessionsFull => "peer_sessions_full", "peer session limit reached",
        reserve: ReservationRefused, connect: ResourceLimitExceeded;
    /// The source's or the target's address or network is in as many sessions as one origin
    /// may be.
    OriginSessionsFull => "origin_sessions_full", "network origin session limit reached",
        reserve: ReservationRefused, connect: ResourceLimitExceeded;
    /// The source's network already has as many sessions to this target as one network may.
    NetworkToPeerFull => "network_to_peer_full", "sessions from one network to the target limit",
        reserve: ReservationRefused, connect: ResourceLimitExceeded;
    /// The target refused, or did not answer, the relay's STOP request.
    TargetRefused => "target_refused", "target refused or did not answer",
        reserve: ReservationRefused, connect: ConnectionFailed;
    /// The source's connection or stream went away before its circuit started.
    SourceGone => "source_gone", "source left before the circuit started",
        reserve: ReservationRefused, connect: ConnectionFailed;
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// Both sides closed their direction cleanly.
    Completed,
    /// A side reset its stream or its connection failed.
    StreamError {
        /// Which side's stream failed.
        side: Side,
        /// The error.
        error: String,
    },
    /// The connection carrying the session (source side) closed.
    ConnectionClosed,
    /// The session timeout passed.
    Timeout,
    /// A direction exceeded the data cap.
    DataCapReached,
    /// [`Behaviour::close_session`](crate::Behaviour::close_session).
    ClosedByOwner,
    /// The drain deadline after [`Behaviour::disable_and_drain`](crate::Behaviour::disable_and_drain).
    Drained,
}

impl CloseReason {
    /// The stable snake_case name (metric label, admin JSON), e.g. `"closed_by_owner"`, and the
    /// text of a reason without details (a stream error's side and error are not part of it).
    fn names(&self) -> (&'static str, &'static str) {
        match self {
            CloseReason::Completed => ("completed", "completed"),
            CloseReason::StreamError { .. } => ("stream_error", "stream error"),
            CloseReason::ConnectionClosed => ("connection_closed", "connection closed"),
            CloseReason::Timeout => ("timeout", "session timeout"),
            CloseReason::DataCapReached => ("data_cap_reached", "data cap reached"),
            CloseReason::ClosedByOwner => ("closed_by_owner", "closed by owner"),
            CloseReason::Drained => ("drained", "drained"),
        }
    }

    /// The stable snake_case name (metric label, admin JSON), e.g. `"closed_by_owner"`.
    pub fn label(&self) -> &'static str {
        self.names().0
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::StreamError { side, error } => write!(f, "{side} stream error: {error}"),
            other => f.write_str(other.names().1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_snake_case_label() {
        let mut labels: Vec<&str> = DenyReason::ALL.iter().map(|r| r.label()).collect();
        labels.extend(
            [
                CloseReason::Completed,
                CloseReason::StreamError {
                    side: Side::Source,
                    error: "reset".into(),
                },
                CloseReason::ConnectionClosed,
                CloseReason::Timeout,
                CloseReason::DataCapReached,
                CloseReason::ClosedByOwner,
                CloseReason::Drained,
            ]
            .iter()
            .map(|r| r.label()),
        );
        for label in &labels {
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
        }
        let deny: std::collections::BTreeSet<_> =
            DenyReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(deny.len(), DenyReason::ALL.len());
    }

    #[test]
    fn refusals_map_to_the_spec_statuses() {
        assert_eq!(
            DenyReason::ReservationsFull.reserve_status(),
            Status::ReservationRefused
        );
        assert_eq!(
            DenyReason::NotAllowed.connect_status(),
            Status::PermissionDenied
        );
        assert_eq!(
            DenyReason::NoReservation.connect_status(),
            Status::NoReservation
        );
        assert_eq!(
            DenyReason::SessionsFull.connect_status(),
            Status::ResourceLimitExceeded
        );
        assert_eq!(
            DenyReason::TargetRefused.connect_status(),
            Status::ConnectionFailed
        );
    }
}
