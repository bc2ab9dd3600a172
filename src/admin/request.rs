//! What the admin server asks of the relay, answered inside the swarm's task: the server never
//! touches the relay itself, so a request sees the relay exactly as the swarm leaves it.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

use super::api::{
    ClosedView, DisableRequest, EnableRequest, ReservationView, SessionView, StatsView,
};
use super::health::Health;
use crate::{metrics::Metrics, Behaviour, EnableOptions, SessionId};

/// The longest drain a `POST /disable` may ask for (the wire's u32 seconds).
const MAX_DRAIN_SECS: f64 = u32::MAX as f64;

/// One admin request waiting for the swarm owner: pass it to [`apply`](Self::apply).
#[derive(Debug)]
pub struct AdminRequest {
    pub(crate) kind: RequestKind,
    pub(crate) reply: oneshot::Sender<Reply>,
    /// The server's health state, brought up to date before the answer goes out, so that a
    /// `/healthz` or `/readyz` right after `POST /disable` already says disabled.
    pub(crate) health: Health,
}

/// The operations of the admin API.
#[derive(Debug, Clone)]
pub(crate) enum RequestKind {
    Stats,
    Sessions,
    Session(SessionId),
    CloseSession(SessionId),
    Enable(EnableRequest),
    Disable(DisableRequest),
    Reservations,
    Metrics,
    Node(NodeQuery),
}

/// An admin request about the node rather than the relay, answered by the node runner
/// ([`AdminRequest::node_query`]).
#[derive(Debug, Clone, PartialEq)]
pub enum NodeQuery {
    /// `GET /config`: the effective settings (the config file's keys, as JSON).
    Settings,
    /// `PATCH /config`: these keys (the others absent), applied live.
    ChangeSettings(Box<crate::node_config::NodeSettings>),
    /// `GET /registry`: the relay registry's status.
    Registry,
}

/// The answer to an [`AdminRequest`].
#[derive(Debug)]
pub(crate) enum Reply {
    /// 200 with a JSON body.
    Json(serde_json::Value),
    /// 200 with the metrics text.
    Metrics(String),
    /// A client error: status and message.
    Error(u16, String),
}

impl AdminRequest {
    /// The question, if it is for the node runner rather than the relay; answer it with
    /// [`answer`](Self::answer).
    pub fn node_query(&self) -> Option<NodeQuery> {
        match &self.kind {
            RequestKind::Node(query) => Some(query.clone()),
            _ => None,
        }
    }

    /// Answers a [`node_query`](Self::node_query): a JSON body, or an HTTP status and why.
    pub fn answer(self, result: Result<serde_json::Value, (u16, String)>) {
        let reply = match result {
            Ok(value) => Reply::Json(value),
            Err((status, message)) => Reply::Error(status, message),
        };
        let _ = self.reply.send(reply);
    }

    /// Carries out the request on `relay` and answers the server. `metrics` (the relay's
    /// [`Metrics`] and the registry they are on) serves `GET /metrics`; without it that
    /// endpoint answers 404.
    pub fn apply(self, relay: &mut Behaviour, metrics: Option<(&Metrics, &Registry)>) {
        let reply = answer(self.kind, relay, metrics);
        self.health.set_enabled(relay.is_enabled());
        // The HTTP client may have gone away; nothing to do then.
        let _ = self.reply.send(reply);
    }
}

fn answer(
    kind: RequestKind,
    relay: &mut Behaviour,
    metrics: Option<(&Metrics, &Registry)>,
) -> Reply {
    match kind {
        RequestKind::Stats => json(&stats(relay)),
        RequestKind::Sessions => {
            let sessions: Vec<SessionView> = relay.sessions().iter().map(Into::into).collect();
            json(&sessions)
        }
        RequestKind::Session(id) => match relay.session(id) {
            Some(s) => json(&SessionView::from(&s)),
            None => Reply::Error(404, format!("no live session with id {id}")),
        },
        RequestKind::CloseSession(id) => match relay.close_session(id) {
            Ok(()) => json(&ClosedView {
                closed: id.to_string(),
            }),
            Err(e) => Reply::Error(404, e.to_string()),
        },
        RequestKind::Enable(request) => match enable_options(request) {
            Ok(options) => match relay.enable_with(options) {
                Ok(()) => json(&stats(relay)),
                Err(e) => Reply::Error(400, e.to_string()),
            },
            Err(message) => Reply::Error(400, message),
        },
        RequestKind::Disable(request) => match request.drain_secs {
            None => {
                relay.disable();
                json(&stats(relay))
            }
            Some(secs) if secs.is_finite() && (0.0..=MAX_DRAIN_SECS).contains(&secs) => {
                relay.disable_and_drain(Duration::from_secs_f64(secs));
                json(&stats(relay))
            }
            Some(secs) => Reply::Error(
                400,
                format!("drain_secs must be between 0 and {MAX_DRAIN_SECS}, got {secs}"),
            ),
        },
        RequestKind::Reservations => {
            let list: Vec<ReservationView> = relay.reservations().iter().map(Into::into).collect();
            json(&list)
        }
        RequestKind::Metrics => match metrics {
            Some((metrics, registry)) => {
                metrics.observe(relay);
                Reply::Metrics(crate::metrics::encode(registry))
            }
            None => Reply::Error(404, "this node exports no metrics".into()),
        },
        RequestKind::Node(_) => Reply::Error(
            404,
            "this node has no configuration to show or change (not run by the node runner)".into(),
        ),
    }
}

fn stats(relay: &Behaviour) -> StatsView {
    StatsView::new(
        relay.local_peer_id().to_string(),
        &relay.stats(),
        relay.total_throttled(),
    )
}

fn enable_options(request: EnableRequest) -> Result<EnableOptions, String> {
    let node_id = request
        .node_id
        .map(|id| {
            id.parse::<PeerId>()
                .map_err(|e| format!("node_id {id:?} is not a peer id: {e}"))
        })
        .transpose()?;
    let endpoints = request
        .endpoints
        .iter()
        .map(|a| {
            a.parse::<Multiaddr>()
                .map_err(|e| format!("endpoint {a:?} is not a multiaddr: {e}"))
        })
        .collect::<Result<_, _>>()?;
    Ok(EnableOptions {
        node_id,
        endpoints,
        capacity: request.capacity,
    })
}

fn json<T: serde::Serialize>(value: &T) -> Reply {
    match serde_json::to_value(value) {
        Ok(v) => Reply::Json(v),
        Err(e) => Reply::Error(500, format!("cannot encode the answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Config;

    fn relay() -> Behaviour {
        Behaviour::new(
            libp2p::identity::Keypair::generate_ed25519(),
            Config::default(),
        )
    }

    fn status(reply: Reply) -> u16 {
        match reply {
            Reply::Error(status, _) => status,
            _ => 200,
        }
    }

    #[test]
    fn closing_an_unknown_session_is_not_found() {
        let reply = answer(
            RequestKind::CloseSession(SessionId::from(7)),
            &mut relay(),
            None,
        );
        assert_eq!(status(reply), 404);
    }

    #[test]
    fn enable_refuses_bad_options_and_changes_nothing() {
        let mut relay = relay();
        relay.disable();
        for request in [
            EnableRequest {
                node_id: Some("not-a-peer".into()),
                ..Default::default()
            },
            EnableRequest {
                node_id: Some(PeerId::random().to_string()),
                ..Default::default()
            },
            EnableRequest {
                endpoints: vec!["/ip4/nonsense".into()],
                ..Default::default()
            },
            EnableRequest {
                capacity: Some(0),
                ..Default::default()
            },
        ] {
            let reply = answer(RequestKind::Enable(request.clone()), &mut relay, None);
            assert_eq!(status(reply), 400, "{request:?}");
            assert!(!relay.is_enabled());
        }
    }

    #[test]
    fn disable_refuses_a_negative_or_endless_drain() {
        let mut relay = relay();
        for secs in [-1.0, f64::INFINITY, f64::NAN, 1e12] {
            let reply = answer(
                RequestKind::Disable(DisableRequest {
                    drain_secs: Some(secs),
                }),
                &mut relay,
                None,
            );
            assert_eq!(status(reply), 400, "{secs}");
        }
        assert!(relay.is_enabled());
    }

    #[test]
    fn metrics_without_a_registry_are_not_found() {
        assert_eq!(
            status(answer(RequestKind::Metrics, &mut relay(), None)),
            404
        );
    }
}
