//! Stable snake_case names of the relay's reasons, shared by the metric labels
//! ([`crate::metrics`]) and the admin API's JSON ([`crate::admin`]), so a dashboard and a script
//! see the same words.

use crate::{CloseReason, DenyReason, ReservationEndReason};

/// The name of a [`DenyReason`], e.g. `"sessions_full"`.
pub fn deny_reason(reason: DenyReason) -> &'static str {
    match reason {
        DenyReason::Disabled => "disabled",
        DenyReason::RelayedConnection => "relayed_connection",
        DenyReason::NotAllowed => "not_allowed",
        DenyReason::RateLimited => "rate_limited",
        DenyReason::ReservationsFull => "reservations_full",
        DenyReason::PeerReservationsFull => "peer_reservations_full",
        DenyReason::NoReservation => "no_reservation",
        DenyReason::TargetUnreachable => "target_unreachable",
        DenyReason::InvalidTarget => "invalid_target",
        DenyReason::SessionsFull => "sessions_full",
        DenyReason::PeerSessionsFull => "peer_sessions_full",
        DenyReason::TargetRefused => "target_refused",
        DenyReason::SourceGone => "source_gone",
    }
}

/// The name of a [`CloseReason`], e.g. `"closed_by_owner"` (a stream error's details are not
/// part of it).
pub fn close_reason(reason: &CloseReason) -> &'static str {
    match reason {
        CloseReason::Completed => "completed",
        CloseReason::StreamError { .. } => "stream_error",
        CloseReason::ConnectionClosed => "connection_closed",
        CloseReason::Timeout => "timeout",
        CloseReason::DataCapReached => "data_cap_reached",
        CloseReason::ClosedByOwner => "closed_by_owner",
        CloseReason::Drained => "drained",
    }
}

/// The name of a [`ReservationEndReason`], e.g. `"expired"`.
pub fn reservation_end_reason(reason: ReservationEndReason) -> &'static str {
    match reason {
        ReservationEndReason::Expired => "expired",
        ReservationEndReason::ConnectionClosed => "connection_closed",
        ReservationEndReason::Drained => "drained",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_snake_case_words() {
        let names = [
            deny_reason(DenyReason::PeerSessionsFull),
            close_reason(&CloseReason::StreamError {
                side: crate::Side::Source,
                error: "reset".into(),
            }),
            reservation_end_reason(ReservationEndReason::ConnectionClosed),
        ];
        for name in names {
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
        }
    }
}
