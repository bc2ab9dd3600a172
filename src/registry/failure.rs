//! Reading the spec status out of the relay client's errors.

use std::error::Error;

use libp2p::relay::outbound::hop::{ConnectError, ReserveError};

use crate::Status;

/// The status a relay answered, found anywhere in an error's source chain.
pub fn status_in(error: &(dyn Error + 'static)) -> Option<Status> {
    let mut next: Option<&(dyn Error + 'static)> = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(status) = status_in(inner) {
                    return Some(status);
                }
            }
        }
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return connect_status(c);
        }
        if let Some(r) = e.downcast_ref::<ReserveError>() {
            return reserve_status(r);
        }
        next = e.source();
    }
    None
}

fn connect_status(error: &ConnectError) -> Option<Status> {
    Some(match error {
        ConnectError::ResourceLimitExceeded => Status::ResourceLimitExceeded,
        ConnectError::ConnectionFailed => Status::ConnectionFailed,
        ConnectError::NoReservation => Status::NoReservation,
        ConnectError::PermissionDenied => Status::PermissionDenied,
        _ => return None,
    })
}

fn reserve_status(error: &ReserveError) -> Option<Status> {
    Some(match error {
        ReserveError::Refused => Status::ReservationRefused,
        ReserveError::ResourceLimitExceeded => Status::ResourceLimitExceeded,
        _ => return None,
    })
}

/// An error and its sources on one line.
pub fn describe(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut next = error.source();
    while let Some(e) = next {
        text.push_str(": ");
        text.push_str(&e.to_string());
        next = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_found_inside_io_and_transport_wrappers() {
        let transport =
            libp2p::relay::client::transport::Error::Connect(ConnectError::NoReservation);
        let io = std::io::Error::other(transport);
        assert_eq!(status_in(&io), Some(Status::NoReservation));
        let refused = std::io::Error::other(libp2p::relay::client::transport::Error::Reservation(
            ReserveError::Refused,
        ));
        assert_eq!(status_in(&refused), Some(Status::ReservationRefused));
        assert_eq!(status_in(&std::io::Error::other("x")), None);
    }
}
