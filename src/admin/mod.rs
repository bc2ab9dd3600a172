//! The relay node's admin API: JSON over HTTP, for operators and their scripts.
//!
//! | method and path        | does                                                        |
//! |------------------------|-------------------------------------------------------------|
//! | `GET /healthz`         | `{"status":"ok","enabled":…}` (no token needed); 503 while starting, draining or stalled |
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
//! A non-loopback address is refused without a token, and a token shorter than
//! [`MIN_TOKEN_LEN`] bytes is refused.
//!
//! Browsers are kept out (cross-site request forgery, DNS rebinding): a `Host` other than an IP
//! literal or `localhost`, any `Origin` header, and a POST or DELETE without
//! `Content-Type: application/json` are refused (403, 403, 415). See `guard.rs`.
//!
//! The server ([`AdminServer`]) runs in its own task and hands each request to the swarm's
//! owner, who answers it with [`AdminRequest::apply`] in the swarm's task. [`AdminClient`] is the
//! matching client, and [`ctl`] renders its answers for a terminal.

pub mod api;
mod client;
pub mod ctl;
mod guard;
mod health;
mod request;
mod server;

use std::{io, net::SocketAddr};

pub use api::{
    ClosedView, DisableRequest, EnableRequest, ErrorView, HealthView, LimitsView, ReservationView,
    SessionView, StatsView,
};
pub use client::{AdminClient, ClientError, RawResponse};
pub use health::HEALTH_REPORT_INTERVAL;
pub use request::{AdminRequest, NodeQuery};
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

/// The shortest admin token accepted, in bytes: 16 random bytes are beyond guessing.
pub const MIN_TOKEN_LEN: usize = 16;

impl AdminSettings {
    /// Refuses a non-loopback address without a token, and a token shorter than
    /// [`MIN_TOKEN_LEN`].
    pub fn validate(&self) -> Result<(), AdminError> {
        match &self.token {
            Some(t) if t.len() < MIN_TOKEN_LEN => Err(AdminError::ShortToken(t.len())),
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
    /// The token is shorter than [`MIN_TOKEN_LEN`].
    #[error(
        "the admin token (`admin_token_file`) has {0} bytes, fewer than {MIN_TOKEN_LEN}: \
         generate one with `head -c 32 /dev/urandom | base64`"
    )]
    ShortToken(usize),
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
        let short = AdminSettings {
            token: Some("fifteen-bytes-x".into()),
            ..public.clone()
        };
        assert!(matches!(short.validate(), Err(AdminError::ShortToken(15))));
        let with_token = AdminSettings {
            token: Some("sixteen-bytes-xx".into()),
            ..public
        };
        assert!(with_token.validate().is_ok());
        assert!(format!("{with_token:?}").contains("redacted"));
    }
}
