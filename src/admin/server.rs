//! The admin HTTP server (axum): routes, bearer-token check, JSON errors. Each request becomes an
//! [`AdminRequest`] for the swarm owner; the server waits for its answer.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{Path, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use serde::de::DeserializeOwned;
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot},
    task::JoinHandle,
};

use super::{
    api::{ErrorView, HealthView},
    guard,
    health::{Health, Verdict},
    request::{AdminRequest, NodeQuery, Reply, RequestKind},
    AdminError, AdminSettings,
};
use crate::SessionId;

/// Requests waiting for the swarm owner; more wait in the HTTP server's accept queue.
const QUEUE: usize = 64;
/// How long a request waits for the swarm owner's answer before a 503.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The running admin server. Dropping it stops the server.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    requests: mpsc::Receiver<AdminRequest>,
    health: Health,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct AppState {
    requests: mpsc::Sender<AdminRequest>,
    token: Option<Arc<str>>,
    health: Health,
}

impl AdminServer {
    /// Checks `settings` (a non-loopback address needs a token), binds and starts serving.
    /// Call inside a tokio runtime.
    pub async fn bind(settings: AdminSettings) -> Result<AdminServer, AdminError> {
        settings.validate()?;
        let listener =
            TcpListener::bind(settings.bind)
                .await
                .map_err(|error| AdminError::Bind {
                    addr: settings.bind,
                    error,
                })?;
        let local_addr = listener.local_addr().map_err(|error| AdminError::Bind {
            addr: settings.bind,
            error,
        })?;
        if !settings.bind.ip().is_loopback() {
            tracing::warn!(
                bind = %settings.bind,
                "the admin API is plain HTTP on a non-loopback address: its token and answers \
                 cross the network unencrypted; prefer loopback behind an SSH tunnel or a TLS proxy"
            );
        }
        let (tx, requests) = mpsc::channel(QUEUE);
        let health = Health::new(Instant::now());
        let state = AppState {
            requests: tx,
            token: settings.token.map(Arc::from),
            health: health.clone(),
        };
        let app = router(state, local_addr);
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "admin server stopped");
            }
        });
        Ok(AdminServer {
            local_addr,
            requests,
            health,
            task,
        })
    }

    /// Binds the read-only metrics listener and starts serving `GET /metrics`, `/healthz` and
    /// `/readyz`, without a token: nothing it serves changes or reveals more than counters, so
    /// a Prometheus server needs no credential that could also control the relay. Its requests
    /// come out of [`next_request`](Self::next_request) like the admin API's.
    pub async fn bind_metrics(addr: SocketAddr) -> Result<AdminServer, AdminError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| AdminError::Bind { addr, error })?;
        let local_addr = listener
            .local_addr()
            .map_err(|error| AdminError::Bind { addr, error })?;
        let (tx, requests) = mpsc::channel(QUEUE);
        let health = Health::new(Instant::now());
        let state = AppState {
            requests: tx,
            token: None,
            health: health.clone(),
        };
        let app = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(health_check))
            .route("/readyz", get(ready))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .with_state(state);
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "metrics server stopped");
            }
        });
        Ok(AdminServer {
            local_addr,
            requests,
            health,
            task,
        })
    }

    /// The address it listens on (with the real port if it was bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Tells `/healthz` the node's loop is alive, and whether the relay is enabled and whether
    /// the node is draining. Call it from the loop at least every
    /// [`HEALTH_REPORT_INTERVAL`](super::HEALTH_REPORT_INTERVAL); `/healthz` answers 503 until
    /// the first report, while draining, and when no report came for 10 s.
    pub fn report_health(&self, enabled: bool, draining: bool) {
        self.health.report(enabled, draining, Instant::now());
    }

    /// The next request to [`apply`](AdminRequest::apply). Cancel-safe: use it in `select!`.
    pub async fn next_request(&mut self) -> Option<AdminRequest> {
        self.requests.recv().await
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn router(state: AppState, bound: SocketAddr) -> Router {
    let authenticated = Router::new()
        .route("/stats", get(stats))
        .route("/sessions", get(sessions))
        .route("/sessions/{id}", get(session).delete(close_session))
        .route("/enable", post(enable))
        .route("/disable", post(disable))
        .route("/reservations", get(reservations))
        .route("/metrics", get(metrics))
        .route("/config", get(settings).patch(change_settings))
        .route("/registry", get(registry))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/healthz", get(health_check))
        .route("/readyz", get(ready))
        .merge(authenticated)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            bound,
            guard::refuse_browsers,
        ))
        .with_state(state)
}

async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = state.token.as_deref() else {
        return next.run(request).await;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => {
            next.run(request).await
        }
        _ => {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token".into(),
            );
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// Compares without an early exit, so the time taken tells nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn ask(state: &AppState, kind: RequestKind) -> Response {
    let (reply, answer) = oneshot::channel();
    let request = AdminRequest {
        kind,
        reply,
        health: state.health.clone(),
    };
    if state.requests.send(request).await.is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is stopping".into(),
        );
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(Reply::Json(value))) => json(StatusCode::OK, &value),
        Ok(Ok(Reply::Metrics(text))) => {
            ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
        }
        Ok(Ok(Reply::Error(status, message))) => error(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message,
        ),
        Ok(Err(_)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node is stopping".into(),
        ),
        Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the node did not answer in time".into(),
        ),
    }
}

pub(super) fn error(status: StatusCode, message: String) -> Response {
    json(status, &ErrorView { error: message })
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn session_id(id: &str) -> Result<SessionId, String> {
    id.parse()
        .map_err(|e: crate::ParseSessionIdError| e.to_string())
}

/// Parses a JSON body; an empty body is `{}`.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, String> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| format!("malformed request body: {e}"))
}

async fn health_check(State(state): State<AppState>) -> Response {
    let unavailable = |why: &str| error(StatusCode::SERVICE_UNAVAILABLE, why.to_owned());
    match state.health.verdict(Instant::now()) {
        Verdict::Ok { enabled } => json(
            StatusCode::OK,
            &HealthView {
                status: "ok".into(),
                enabled,
            },
        ),
        Verdict::Starting => unavailable("starting"),
        Verdict::Draining => unavailable("draining: the node is stopping"),
        Verdict::Stalled => unavailable("stalled: the node's event loop has not run for 10 s"),
    }
}

/// `/readyz`: 200 only while the relay takes new reservations and sessions (enabled, not
/// draining), so a load balancer sends new peers elsewhere otherwise.
async fn ready(State(state): State<AppState>) -> Response {
    let unavailable = |why: &str| error(StatusCode::SERVICE_UNAVAILABLE, why.to_owned());
    match state.health.verdict(Instant::now()) {
        Verdict::Ok { enabled: true } => json(
            StatusCode::OK,
            &HealthView {
                status: "ready".into(),
                enabled: true,
            },
        ),
        Verdict::Ok { enabled: false } => unavailable("disabled: refusing new reservations"),
        Verdict::Starting => unavailable("starting"),
        Verdict::Draining => unavailable("draining: the node is stopping"),
        Verdict::Stalled => unavailable("stalled: the node's event loop has not run for 10 s"),
    }
}

async fn settings(State(state): State<AppState>) -> Response {
    ask(&state, RequestKind::Node(NodeQuery::Settings)).await
}

async fn change_settings(State(state): State<AppState>, bytes: Bytes) -> Response {
    match body(&bytes) {
        Ok(patch) => {
            ask(
                &state,
                RequestKind::Node(NodeQuery::ChangeSettings(Box::new(patch))),
            )
            .await
        }
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

async fn registry(State(state): State<AppState>) -> Response {
    ask(&state, RequestKind::Node(NodeQuery::Registry)).await
}

async fn stats(State(state): State<AppState>) -> Response {
    ask(&state, RequestKind::Stats).await
}

async fn sessions(State(state): State<AppState>) -> Response {
    ask(&state, RequestKind::Sessions).await
}

async fn session(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match session_id(&id) {
        Ok(id) => ask(&state, RequestKind::Session(id)).await,
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

async fn close_session(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match session_id(&id) {
        Ok(id) => ask(&state, RequestKind::CloseSession(id)).await,
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

async fn enable(State(state): State<AppState>, bytes: Bytes) -> Response {
    match body(&bytes) {
        Ok(request) => ask(&state, RequestKind::Enable(request)).await,
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

async fn disable(State(state): State<AppState>, bytes: Bytes) -> Response {
    match body(&bytes) {
        Ok(request) => ask(&state, RequestKind::Disable(request)).await,
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

async fn reservations(State(state): State<AppState>) -> Response {
    ask(&state, RequestKind::Reservations).await
}

async fn metrics(State(state): State<AppState>) -> Response {
    ask(&state, RequestKind::Metrics).await
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such endpoint".into())
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    #[test]
    fn an_empty_body_is_an_empty_object() {
        let request: super::super::api::DisableRequest = body(&Bytes::from_static(b" \n")).unwrap();
        assert_eq!(request.drain_secs, None);
        assert!(body::<super::super::api::DisableRequest>(&Bytes::from_static(b"{")).is_err());
    }
}
