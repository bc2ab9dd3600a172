//! The relay node's admin API: JSON over HTTP, for operators and their scripts.
//!
//! | method and path        | does                                                        |
//! |------------------------|-------------------------------------------------------------|
//! | `GET /healthz`         | `{"status":"ok","enabled":…}` (no token needed)             |
//! | `GET /stats`           | [`StatsView`]                                               |
//! | `GET /sessions`        | `[SessionView]`                                             |
//! | `GET /sessions/{id}`   | [`SessionView`]                                             |
//! | `DELETE /sessions/{id}`| closes that session ([`Behaviour::close_session`](crate::Behaviour::close_session)) |
//! | `POST /enable`         | [`EnableRequest`] body, optional; answers [`StatsView`]     |
//! | `POST /disable`        | [`DisableRequest`] body, optional; answers [`StatsView`]    |
//! | `GET /reservations`    | `[ReservationView]`                                         |
//! | `GET /metrics`         | Prometheus (OpenMetrics) text of [`crate::metrics`]         |
//!
//! Errors are a 4xx (or 503 while the node stops) with an [`ErrorView`] body. With a token
//! configured, every endpoint but `/healthz` needs `Authorization: Bearer <token>` (else 401).
//! A non-loopback address is refused without a token.
//!
//! The server ([`AdminServer`]) runs in its own task and hands each request to the swarm's
//! owner, who answers it with [`AdminRequest::apply`] in the swarm's task. [`AdminClient`] is the
//! matching client, and [`ctl`] renders its answers for a terminal.

pub mod api;
mod client;
pub mod ctl;
mod request;
mod server;

use std::{io, net::SocketAddr};

pub use api::{
    ClosedView, DisableRequest, EnableRequest, ErrorView, HealthView, LimitsView, ReservationView,
    SessionView, StatsView,
};
pub use client::{AdminClient, ClientError, RawResponse};
pub use request::AdminRequest;
pub use server::AdminServer;

/// The address `relay_node ctl` talks to unless told otherwise (the node's admin API is off
/// unless `--admin` or the `admin` key sets an address).
pub const DEFAULT_ADDR: &str = "127.0.0.1:9101";

/// Where the admin API listens and the token it requires.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// The address to bind (`127.0.0.1:…` by default; another needs a token).
    pub bind: SocketAddr,
    /// The bearer token every request but `/healthz` must carry, if any.
    pub token: Option<String>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSettings")
            .field("bind", &self.bind)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl AdminSettings {
    /// Refuses a non-loopback address without a token, and an empty token.
    pub fn validate(&self) -> Result<(), AdminError> {
        match &self.token {
            Some(t) if t.is_empty() => Err(AdminError::EmptyToken),
            None if !self.bind.ip().is_loopback() => Err(AdminError::TokenRequired(self.bind)),
            _ => Ok(()),
        }
    }
}

/// Why the admin API could not start.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A non-loopback address without a token.
    #[error("admin API on non-loopback address {0} requires a token (`admin_token_file`)")]
    TokenRequired(SocketAddr),
    /// The token is empty.
    #[error("the admin token (`admin_token_file`) is empty")]
    EmptyToken,
    /// Binding failed.
    #[error("cannot bind the admin API to {addr}: {error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        error: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_public_address_without_a_token_is_refused() {
        let public = AdminSettings {
            bind: "0.0.0.0:9101".parse().unwrap(),
            token: None,
        };
        assert!(matches!(
            public.validate(),
            Err(AdminError::TokenRequired(_))
        ));
        let loopback = AdminSettings {
            bind: "127.0.0.1:9101".parse().unwrap(),
            token: None,
        };
        assert!(loopback.validate().is_ok());
        let with_token = AdminSettings {
            token: Some("t".into()),
            ..public
        };
        assert!(with_token.validate().is_ok());
        assert!(format!("{with_token:?}").contains("redacted"));
    }
}
