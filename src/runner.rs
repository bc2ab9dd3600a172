//! Runs a relay node from a [`NodeConfig`] until it is told to stop: the swarm, the admin API,
//! the metrics, and the graceful stop.
//!
//! On the first stop signal the relay refuses new reservations and sessions
//! ([`Behaviour::disable_and_drain`](crate::Behaviour::disable_and_drain) with the configured
//! `drain_timeout`), keeps relaying until the live sessions end or the deadline passes (then
//! closes the rest), logs what it closed, and returns. A second signal stops it at once.

use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use libp2p::{core::multiaddr::Protocol, ping, swarm::SwarmEvent, Multiaddr, Swarm};
use prometheus_client::registry::Registry;

use crate::{
    admin::{AdminError, AdminRequest, AdminServer},
    load_or_create_keypair,
    metrics::Metrics,
    node_config::{NodeConfig, NodeConfigError},
    CloseReason, Event, NodeError, RelayNodeBehaviour, RelayNodeBuilder, RelayNodeEvent,
    ReservationEndReason,
};

/// How long past the drain deadline a node waits for the closed sessions' tasks to finish.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// How often a draining node checks whether its sessions are gone.
const DRAIN_CHECK: Duration = Duration::from_millis(200);

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A configuration value was refused.
    #[error(transparent)]
    Config(#[from] NodeConfigError),
    /// The swarm could not be built or could not listen.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The admin API could not start.
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// What a stopping node did with the sessions it had.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Sessions that ended by themselves while the node drained.
    pub ended: usize,
    /// Sessions closed at the drain deadline.
    pub closed_at_deadline: usize,
    /// Reservations dropped at the drain deadline.
    pub reservations_dropped: usize,
    /// Sessions still open when the node gave up waiting (past the deadline and a grace).
    pub abandoned: usize,
}

/// The node's stop requests: Ctrl-C (SIGINT) and, on Unix, SIGTERM. The handlers are installed
/// by this call, so call it before the node starts listening.
pub fn stop_signals() -> std::io::Result<impl Stream<Item = ()> + Unpin> {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = interrupt.recv() => tracing::info!("SIGINT received"),
                    Some(()) = terminate.recv() => tracing::info!("SIGTERM received"),
                    else => break,
                }
                if tx.unbounded_send(()).is_err() {
                    break;
                }
            }
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.unbounded_send(()).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// Runs the node: starts the admin API (if configured), builds and starts the swarm, calls
/// `on_listen` with each listen address (with `/p2p/<peer id>`) as soon as it listens, and
/// drives everything until `stop` yields twice, or once and the drain is over.
pub async fn run(
    config: NodeConfig,
    mut on_listen: impl FnMut(&Multiaddr),
    stop: impl Stream<Item = ()> + Unpin,
) -> Result<DrainReport, RunError> {
    // Everything that can be refused is checked before anything starts.
    let relay_config = config.relay_config()?;
    let admin_settings = config.admin_settings()?;
    let keypair = config
        .key_file
        .as_deref()
        .map(load_or_create_keypair)
        .transpose()?;
    let websocket_tls = config.websocket_tls()?;

    let mut admin = match admin_settings {
        Some(settings) => {
            let server = AdminServer::bind(settings).await?;
            tracing::info!("admin API listening on http://{}", server.local_addr());
            Some(server)
        }
        None => None,
    };
    let mut builder = RelayNodeBuilder::new().config(relay_config);
    if let Some(keypair) = keypair {
        builder = builder.keypair(keypair);
    }
    if let Some(tls) = websocket_tls {
        builder = builder.websocket_tls(tls);
    }
    #[cfg(feature = "registry")]
    if config.registry {
        builder = builder.registry(Default::default());
        for addr in &config.bootstrap {
            builder = builder.bootstrap(addr.clone());
        }
    }
    for addr in &config.listen {
        builder = builder.listen_on(addr.clone());
    }
    for addr in &config.external {
        builder = builder.external_address(addr.clone());
    }
    let mut swarm = builder.build()?;
    let peer_id = *swarm.local_peer_id();
    tracing::info!(%peer_id, "relay node started");

    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    // Without `--external`, listen addresses become external addresses (what identify sends
    // and what makes the node a DHT server and capable) when publicly routable, or when private
    // addresses are allowed; AutoNAT v2 confirms the rest from identify's observations.
    let listen_as_external = |address: &Multiaddr| {
        config.external.is_empty()
            && (config.allow_private_addrs || crate::addresses::is_public(address).unwrap_or(false))
    };
    let mut stop = stop.fuse();
    let mut drain: Option<Drain> = None;
    let mut check = tokio::time::interval(DRAIN_CHECK);
    let mut health_beat = tokio::time::interval(crate::admin::HEALTH_REPORT_INTERVAL);
    // Serving from here on: /healthz says so before the first address is printed.
    if let Some(server) = &admin {
        server.report_health(swarm.behaviour().relay.is_enabled(), false);
    }

    loop {
        tokio::select! {
            event = swarm.select_next_some() => match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    on_listen(&address.clone().with(Protocol::P2p(peer_id)));
                    if listen_as_external(&address) {
                        swarm.add_external_address(address);
                    }
                }
                SwarmEvent::ExpiredListenAddr { address, .. } if listen_as_external(&address) => {
                    swarm.remove_external_address(&address);
                }
                SwarmEvent::Behaviour(RelayNodeEvent::Ping(ping::Event {
                    peer,
                    connection,
                    result: Err(error @ (ping::Failure::Timeout | ping::Failure::Other { .. })),
                })) => {
                    // A peer that vanished without a FIN or RST: free what it holds.
                    tracing::debug!(%peer, %error, "ping failed: closing the connection");
                    swarm.close_connection(connection);
                }
                SwarmEvent::ExternalAddrConfirmed { address } => {
                    tracing::info!(%address, "external address confirmed");
                }
                SwarmEvent::Behaviour(RelayNodeEvent::Relay(event)) => {
                    tracing::debug!(?event, "relay event");
                    metrics.record(&event);
                    if let Some(drain) = drain.as_mut() {
                        drain.record(&event);
                    }
                }
                SwarmEvent::ListenerError { error, .. } => {
                    tracing::warn!(%error, "listener error");
                }
                _ => {}
            },
            Some(request) = next_admin_request(&mut admin) => {
                request.apply(&mut swarm.behaviour_mut().relay, Some((&metrics, &registry)));
            }
            Some(()) = stop.next() => {
                if drain.is_some() {
                    tracing::warn!("second stop signal: stopping without waiting for sessions");
                    break;
                }
                drain = Some(Drain::start(&mut swarm, config.drain_timeout));
            }
            _ = check.tick(), if drain.is_some() => {}
            _ = health_beat.tick(), if admin.is_some() => {}
        }
        if let Some(server) = &admin {
            server.report_health(swarm.behaviour().relay.is_enabled(), drain.is_some());
        }
        // The registry follows the relay's status and load (registers, republishes, withdraws).
        swarm.behaviour_mut().sync_registry();
        if let Some(d) = &drain {
            let stats = swarm.behaviour().relay.stats();
            let live = stats.active_sessions + stats.pending_sessions;
            if live == 0 {
                break;
            }
            if Instant::now() > d.deadline + DRAIN_GRACE {
                tracing::warn!(
                    sessions = live,
                    "sessions still open after the drain deadline"
                );
                break;
            }
        }
    }

    let mut report = drain.map(|d| d.report).unwrap_or_default();
    let stats = swarm.behaviour().relay.stats();
    report.abandoned = stats.active_sessions + stats.pending_sessions;
    tracing::info!(
        ended_while_draining = report.ended,
        closed_at_deadline = report.closed_at_deadline,
        reservations_dropped = report.reservations_dropped,
        abandoned = report.abandoned,
        total_sessions = stats.total_sessions_created,
        total_bytes_relayed = stats.total_bytes_relayed,
        "relay node stopped"
    );
    Ok(report)
}

async fn next_admin_request(admin: &mut Option<AdminServer>) -> Option<AdminRequest> {
    match admin {
        Some(server) => server.next_request().await,
        None => std::future::pending().await,
    }
}

struct Drain {
    deadline: Instant,
    report: DrainReport,
}

impl Drain {
    fn start(swarm: &mut Swarm<RelayNodeBehaviour>, timeout: Duration) -> Drain {
        let relay = &mut swarm.behaviour_mut().relay;
        relay.disable_and_drain(timeout);
        let stats = relay.stats();
        tracing::info!(
            sessions = stats.active_sessions,
            pending = stats.pending_sessions,
            reservations = stats.reservations,
            drain_timeout_secs = timeout.as_secs_f64(),
            "stopping: refusing new reservations and sessions, waiting for live sessions"
        );
        Drain {
            deadline: Instant::now() + timeout,
            report: DrainReport::default(),
        }
    }

    fn record(&mut self, event: &Event) {
        match event {
            Event::SessionClosed {
                id,
                source,
                target,
                reason: CloseReason::Drained,
                bytes_source_to_target,
                bytes_target_to_source,
                ..
            } => {
                self.report.closed_at_deadline += 1;
                tracing::info!(
                    session = %id, %source, %target, bytes_source_to_target,
                    bytes_target_to_source, "closed at the drain deadline"
                );
            }
            Event::SessionClosed { id, reason, .. } => {
                self.report.ended += 1;
                tracing::info!(session = %id, %reason, "session ended while draining");
            }
            Event::ReservationEnded {
                peer,
                reason: ReservationEndReason::Drained,
            } => {
                self.report.reservations_dropped += 1;
                tracing::info!(%peer, "reservation dropped at the drain deadline");
            }
            _ => {}
        }
    }
}
