//! A client of the admin API (hyper), used by `relay_node ctl` and by tests.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Method, Request, StatusCode};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use serde::de::DeserializeOwned;

use super::api::{
    ClosedView, DisableRequest, EnableRequest, ErrorView, HealthView, ReservationView, SessionView,
    StatsView,
};
use crate::SessionId;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached, or the exchange failed.
    #[error("admin API at {addr} unreachable: {error}")]
    Unreachable {
        /// The address.
        addr: SocketAddr,
        /// What failed.
        error: String,
    },
    /// The node answered with an error status.
    #[error("{status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The error message of the answer.
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

/// An HTTP answer as it came.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The HTTP status.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// A client of one node's admin API.
#[derive(Clone, Debug)]
pub struct AdminClient {
    addr: SocketAddr,
    token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// A client of the admin API at `addr`, sending `token` (if any) as a bearer token.
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        AdminClient {
            addr,
            token,
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Sends one request as is (`body` is sent only if given) and returns the answer, whatever
    /// its status.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<RawResponse, ClientError> {
        let unreachable = |error: String| ClientError::Unreachable {
            addr: self.addr,
            error,
        };
        let method =
            Method::from_bytes(method.as_bytes()).map_err(|e| unreachable(e.to_string()))?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(format!("http://{}{}", self.addr, path));
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        // The server takes state-changing requests only as JSON (a browser cannot send that
        // cross-site without a CORS preflight, which the server never grants).
        if body.is_some() || (method != Method::GET && method != Method::HEAD) {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
            .map_err(|e| unreachable(e.to_string()))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| unreachable(format!("{e:?}")))?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            Ok(RawResponse {
                status,
                content_type,
                body,
            })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| unreachable("timed out".into()))?
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let response = self.checked(method, path, body).await?;
        serde_json::from_slice(&response.body).map_err(|e| ClientError::Decode(e.to_string()))
    }

    async fn checked(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<RawResponse, ClientError> {
        let response = self.raw(method, path, body.as_deref()).await?;
        if response.status == StatusCode::OK.as_u16() {
            return Ok(response);
        }
        let message = serde_json::from_slice::<ErrorView>(&response.body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&response.body).into_owned());
        Err(ClientError::Status {
            status: response.status,
            message,
        })
    }

    /// `GET /config`: the node's effective settings.
    pub async fn settings(&self) -> Result<crate::node_config::NodeSettings, ClientError> {
        self.call("GET", "/config", None).await
    }

    /// `PATCH /config`: sets the keys `patch` has, live; the new effective settings.
    pub async fn change_settings(
        &self,
        patch: &crate::node_config::NodeSettings,
    ) -> Result<crate::node_config::NodeSettings, ClientError> {
        let body = serde_json::to_vec(patch).map_err(|e| ClientError::Decode(e.to_string()))?;
        self.call("PATCH", "/config", Some(body)).await
    }

    /// `GET /registry`: the relay registry's status.
    pub async fn registry(&self) -> Result<super::api::RegistryView, ClientError> {
        self.call("GET", "/registry", None).await
    }

    /// `GET /readyz`.
    pub async fn ready(&self) -> Result<HealthView, ClientError> {
        self.call("GET", "/readyz", None).await
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<HealthView, ClientError> {
        self.call("GET", "/healthz", None).await
    }

    /// `GET /stats`.
    pub async fn stats(&self) -> Result<StatsView, ClientError> {
        self.call("GET", "/stats", None).await
    }

    /// `GET /sessions`.
    pub async fn sessions(&self) -> Result<Vec<SessionView>, ClientError> {
        self.call("GET", "/sessions", None).await
    }

    /// `GET /reservations`.
    pub async fn reservations(&self) -> Result<Vec<ReservationView>, ClientError> {
        self.call("GET", "/reservations", None).await
    }

    /// `DELETE /sessions/{id}`.
    pub async fn close_session(&self, id: SessionId) -> Result<ClosedView, ClientError> {
        self.call("DELETE", &format!("/sessions/{id}"), None).await
    }

    /// `POST /enable`.
    pub async fn enable(&self, request: &EnableRequest) -> Result<StatsView, ClientError> {
        self.call("POST", "/enable", Some(to_json(request)?)).await
    }

    /// `POST /disable`.
    pub async fn disable(&self, request: &DisableRequest) -> Result<StatsView, ClientError> {
        self.call("POST", "/disable", Some(to_json(request)?)).await
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let response = self.checked("GET", "/metrics", None).await?;
        String::from_utf8(response.body.to_vec()).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(value).map_err(|e| ClientError::Decode(e.to_string()))
}
