//! Runs a relay node from a [`NodeConfig`] until it is told to stop: the swarm, the admin API,
//! the metrics, and the graceful stop.
//!
//! A reload ([`run_reloadable`]: the config file read again on SIGHUP, or `PATCH /config` on
//! the admin API) applies the new limits, caps, rates, policy and TLS certificate to the running
//! relay without dropping anything it relays; keys only a restart can change are named in the
//! log and keep their running values; an invalid configuration is refused whole.
//!
//! On the first stop signal the relay refuses new reservations and sessions
//! ([`Behaviour::disable_and_drain`](crate::Behaviour::disable_and_drain) with the configured
//! `drain_timeout`), keeps relaying until the live sessions end or the deadline passes (then
//! closes the rest), logs what it closed, and returns. A second signal stops it at once.

use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use libp2p::{
    core::multiaddr::Protocol, identity::Keypair, metrics::Recorder, ping, swarm::SwarmEvent,
    Multiaddr, Swarm,
};
use prometheus_client::registry::Registry;

use crate::{
    admin::{AdminError, AdminRequest, AdminServer, NodeQuery},
    load_or_create_keypair,
    metrics::Metrics,
    node_config::{Identity, NodeConfig, NodeConfigError, NodeSettings},
    CloseReason, Event, NodeError, RelayNodeBehaviour, RelayNodeBuilder, RelayNodeEvent,
    ReservationEndReason, WebsocketTls,
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

/// Runs the node: starts the admin API and the metrics listener (if configured), builds and
/// starts the swarm, calls `on_listen` with each listen address (with `/p2p/<peer id>`) as soon
/// as it listens, and drives everything until `stop` yields twice, or once and the drain is
/// over.
pub async fn run(
    config: NodeConfig,
    on_listen: impl FnMut(&Multiaddr),
    stop: impl Stream<Item = ()> + Unpin,
) -> Result<DrainReport, RunError> {
    run_reloadable(config, on_listen, stop, futures::stream::pending()).await
}

/// [`run`], switching to each configuration `reload` yields (see the module documentation); a
/// reload that failed to read or resolve comes as its error, which is logged, and the running
/// configuration stays.
pub async fn run_reloadable(
    config: NodeConfig,
    mut on_listen: impl FnMut(&Multiaddr),
    stop: impl Stream<Item = ()> + Unpin,
    reload: impl Stream<Item = Result<NodeConfig, NodeConfigError>> + Unpin,
) -> Result<DrainReport, RunError> {
    // Everything that can be refused is checked before anything starts.
    let admin_settings = config.admin_settings()?;
    let keypair = identity(&config)?;
    let websocket_tls = config.websocket_tls()?;
    #[cfg(feature = "webrtc")]
    let webrtc_certificate = webrtc_certificate(&config)?;

    let mut admin = match admin_settings {
        Some(settings) => {
            let server = AdminServer::bind(settings).await?;
            tracing::info!("admin API listening on http://{}", server.local_addr());
            Some(server)
        }
        None => None,
    };
    let mut metrics_server = match config.metrics {
        Some(addr) => {
            let server = AdminServer::bind_metrics(addr).await?;
            tracing::info!(
                "metrics listening on http://{}/metrics (read-only; also /healthz, /readyz)",
                server.local_addr()
            );
            Some(server)
        }
        None => None,
    };
    let mut builder = RelayNodeBuilder::new()
        .config(config.relay.clone())
        .keypair(keypair);
    if let Some(tls) = &websocket_tls {
        builder = builder.websocket_tls(tls.clone());
    }
    #[cfg(feature = "webrtc")]
    if let Some(certificate) = webrtc_certificate {
        builder = builder.webrtc_certificate(certificate);
    }
    #[cfg(feature = "registry")]
    if config.registry {
        builder = builder.registry(Default::default());
        builder = builder.kad_protocol(config.kad_protocol.clone());
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
    let mut registry = Registry::default();
    let mut swarm = builder.build_with_metrics(&mut registry)?;
    let peer_id = *swarm.local_peer_id();
    tracing::info!(%peer_id, "relay node started");
    let metrics = Metrics::new(&mut registry);
    crate::metrics::register_build_info(&mut registry);
    let libp2p_metrics = libp2p::metrics::Metrics::new(&mut registry);
    #[cfg(feature = "registry")]
    if let Some(registry) = swarm.behaviour_mut().registry.as_mut() {
        registry.keep_kad_events();
    }
    // The registry's metrics, on a node that runs the registry.
    #[cfg(feature = "registry")]
    let registry_metrics = swarm
        .behaviour()
        .registry
        .is_enabled()
        .then(|| crate::metrics::RegistryMetrics::new(&mut registry));
    let mut node = NodeState {
        config,
        websocket_tls,
    };
    let config = node.config.clone();
    let mut reload = reload.fuse();
    // Without `--external`, listen addresses become external addresses (what identify sends
    // and what makes the node a DHT server and capable) when publicly routable, or when private
    // addresses are allowed; AutoNAT v2 confirms the rest from identify's observations.
    let listen_as_external = |address: &Multiaddr| {
        config.external.is_empty()
            && (config.relay.allow_private_addrs()
                || crate::addresses::is_public(address).unwrap_or(false))
    };
    let mut stop = stop.fuse();
    let mut drain: Option<Drain> = None;
    let mut check = tokio::time::interval(DRAIN_CHECK);

    let mut health_beat = tokio::time::interval(crate::admin::HEALTH_REPORT_INTERVAL);
    // Serving from here on: /healthz says so before the first address is printed.
    let report_health = |admin: &Option<AdminServer>,
                         metrics: &Option<AdminServer>,
                         enabled: bool,
                         draining: bool| {
        for server in [admin, metrics].into_iter().flatten() {
            server.report_health(enabled, draining);
        }
    };
    report_health(
        &admin,
        &metrics_server,
        swarm.behaviour().relay.is_enabled(),
        false,
    );

    loop {
        tokio::select! {
            event = swarm.select_next_some() => {
            libp2p_metrics.record(&event);

            match event {
                SwarmEvent::NewListenAddr { address, .. } => {
                    on_listen(&address.clone().with(Protocol::P2p(peer_id)));
                    if listen_as_external(&address) {
                        swarm.add_external_address(address);
                    }
                }
                SwarmEvent::ExpiredListenAddr { address, .. } if listen_as_external(&address) => {
                    swarm.remove_external_address(&address);
                }
                SwarmEvent::Behaviour(RelayNodeEvent::Ping(event)) => {
                    libp2p_metrics.record(&event);
                    if let ping::Event {
                        peer,
                        connection,
                        result: Err(error @ (ping::Failure::Timeout | ping::Failure::Other { .. })),
                    } = event
                    {
                        // A peer that vanished without a FIN or RST: free what it holds.
                        tracing::debug!(%peer, %error, "ping failed: closing the connection");
                        swarm.close_connection(connection);
                    }
                }
                SwarmEvent::Behaviour(RelayNodeEvent::Identify(event)) => {
                    libp2p_metrics.record(&*event);
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
                #[cfg(feature = "registry")]
                SwarmEvent::Behaviour(RelayNodeEvent::Registry(event)) => {
                    if let Some(metrics) = &registry_metrics {
                        metrics.record(&event);
                    }
                }
                SwarmEvent::ListenerError { error, .. } => {
                    tracing::warn!(%error, "listener error");
                }
                _ => {}
            }},
            Some(request) = next_admin_request(&mut admin) => {
                match request.node_query() {
                    Some(query) => {
                        let answer = node.answer(query, &mut swarm);
                        request.answer(answer);
                    }
                    None => {
                        #[cfg(feature = "registry")]
                        observe_registry(&swarm, registry_metrics.as_ref());
                        request
                            .apply(&mut swarm.behaviour_mut().relay, Some((&metrics, &registry)));
                    }
                }
            }
            Some(request) = next_admin_request(&mut metrics_server) => {
                #[cfg(feature = "registry")]
                observe_registry(&swarm, registry_metrics.as_ref());
                request.apply(&mut swarm.behaviour_mut().relay, Some((&metrics, &registry)));
            }
            Some(next) = reload.next() => match next {
                Ok(next) => {
                    if let Err(error) = node.switch_to(next, &mut swarm) {
                        tracing::error!(%error, "configuration not reloaded: keeping the running one");
                    }
                }
                Err(error) => {
                    tracing::error!(%error, "configuration not reloaded: keeping the running one");
                }
            },
            Some(()) = stop.next() => {
                if drain.is_some() {
                    tracing::warn!("second stop signal: stopping without waiting for sessions");
                    break;
                }
                drain = Some(Drain::start(&mut swarm, node.config.drain_timeout));
            }
            _ = check.tick(), if drain.is_some() => {}

            _ = health_beat.tick(), if admin.is_some() || metrics_server.is_some() => {}
        }
        report_health(
            &admin,
            &metrics_server,
            swarm.behaviour().relay.is_enabled(),
            drain.is_some(),
        );
        // The registry follows the relay's status and load (registers, republishes, withdraws).
        swarm.behaviour_mut().sync_registry();
        #[cfg(feature = "registry")]
        if let Some(registry) = swarm.behaviour_mut().registry.as_mut() {
            for event in registry.take_kad_events() {
                libp2p_metrics.record(&event);
            }
        }
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

/// The DTLS certificate of the WebRTC-direct listen addresses, if any: in
/// [`CERTIFICATE_FILE_NAME`](crate::webrtc_direct::CERTIFICATE_FILE_NAME) next to the identity
/// key (created on first start, so the addresses' certhash stays the same), or a new one with
/// an ephemeral identity.
#[cfg(feature = "webrtc")]
fn webrtc_certificate(
    config: &NodeConfig,
) -> Result<Option<crate::webrtc_direct::Certificate>, NodeError> {
    use crate::webrtc_direct::{generate_certificate, load_or_create_certificate};
    if !config.listen.iter().any(crate::node::is_webrtc_direct) {
        return Ok(None);
    }
    match &config.identity {
        Identity::KeyFile(key_file) => {
            let path = key_file
                .parent()
                .unwrap_or(std::path::Path::new(""))
                .join(crate::webrtc_direct::CERTIFICATE_FILE_NAME);
            let (certificate, created) = load_or_create_certificate(&path)?;
            tracing::info!(file = %path.display(), created, "WebRTC-direct certificate");
            Ok(Some(certificate))
        }
        Identity::Ephemeral => Ok(Some(generate_certificate())),
    }
}

/// The node's identity: its key file (created on first start) or a new key.
fn identity(config: &NodeConfig) -> Result<Keypair, NodeError> {
    match &config.identity {
        Identity::KeyFile(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                create_private_dir(dir).map_err(|e| NodeError::KeyFile {
                    path: dir.display().to_string(),
                    error: e.to_string(),
                })?;
            }
            let existed = path.exists();
            let keypair = load_or_create_keypair(path)?;
            tracing::info!(
                key_file = %path.display(),
                peer_id = %keypair.public().to_peer_id(),
                created = !existed,
                "identity"
            );
            Ok(keypair)
        }
        Identity::Ephemeral => {
            let keypair = Keypair::generate_ed25519();
            tracing::warn!(
                peer_id = %keypair.public().to_peer_id(),
                "ephemeral identity: a new peer id at every start; clients that stored this \
                 relay's address will not reach it after a restart"
            );
            Ok(keypair)
        }
    }
}

/// Creates `dir` (and its parents) if missing, mode 0700 on Unix.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// The running node's configuration, and what a reload changes besides the relay.
struct NodeState {
    config: NodeConfig,
    websocket_tls: Option<WebsocketTls>,
}

impl NodeState {
    /// Switches the running node to `next` where it can: the relay's configuration (limits,
    /// caps, rates, policy), the tiers, the drain timeout and the TLS certificate. Keys only a
    /// restart changes keep their running values, and are logged.
    fn switch_to(
        &mut self,
        next: NodeConfig,
        swarm: &mut Swarm<RelayNodeBehaviour>,
    ) -> Result<Vec<String>, String> {
        let restart = self.config.restart_keys(&next);
        if let (Some(tls), Some(cert), Some(key)) =
            (&self.websocket_tls, &next.tls_cert, &next.tls_key)
        {
            tls.reload_from_pem_files(cert, key)
                .map_err(|e| format!("setting `tls_cert`: {e}"))?;
        }
        let relay = &mut swarm.behaviour_mut().relay;
        let mut relay_config = next.relay.clone();
        // What `enable` set at run time (the announced endpoints) stays.
        relay_config.advertised_addrs = relay.config().advertised_addrs.clone();
        relay
            .set_config(relay_config)
            .map_err(|e| format!("relay configuration: {e}"))?;
        let before = settings_map(&self.config.to_settings());
        self.config.relay = next.relay;
        self.config.tiers = next.tiers;
        self.config.drain_timeout = next.drain_timeout;
        if self.websocket_tls.is_some() {
            self.config.tls_cert = next.tls_cert;
            self.config.tls_key = next.tls_key;
        }
        let after = settings_map(&self.config.to_settings());
        let changed: Vec<String> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, _)| k.clone())
            .collect();
        tracing::info!(changed = ?changed, "configuration applied");
        if !restart.is_empty() {
            tracing::warn!(
                keys = ?restart,
                "these settings changed but need a restart: they keep their running values"
            );
        }
        Ok(changed)
    }

    /// Answers an admin API question about the node.
    fn answer(
        &mut self,
        query: NodeQuery,
        swarm: &mut Swarm<RelayNodeBehaviour>,
    ) -> Result<serde_json::Value, (u16, String)> {
        let settings_json = |config: &NodeConfig| {
            serde_json::to_value(config.to_settings()).map_err(|e| (500, e.to_string()))
        };
        match query {
            NodeQuery::Settings => settings_json(&self.config),
            NodeQuery::ChangeSettings(patch) => {
                let next = self
                    .config
                    .to_settings()
                    .overridden_by(*patch)
                    .resolve()
                    .map_err(|e| (400, e.to_string()))?;
                let restart = self.config.restart_keys(&next);
                if !restart.is_empty() {
                    return Err((
                        409,
                        format!("{} can only change with a restart", restart.join(", ")),
                    ));
                }
                self.switch_to(next, swarm).map_err(|e| (400, e))?;
                settings_json(&self.config)
            }
            NodeQuery::Registry => {
                serde_json::to_value(registry_view(swarm)).map_err(|e| (500, e.to_string()))
            }
        }
    }
}

fn settings_map(settings: &NodeSettings) -> serde_json::Map<String, serde_json::Value> {
    match serde_json::to_value(settings) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    }
}

fn registry_view(swarm: &Swarm<RelayNodeBehaviour>) -> crate::admin::api::RegistryView {
    #[cfg(feature = "registry")]
    if let Some(registry) = swarm.behaviour().registry.as_ref() {
        let activity = registry.activity();
        return crate::admin::api::RegistryView {
            shard: activity.shard,
            last_published: activity.last_published.map(crate::admin::api::unix_secs),
            records_served: activity.records_served,
            discoveries: activity.discoveries,
            running: true,
            registered: registry.is_registered(),
            addrs: registry
                .current_record()
                .map(|r| r.addrs.iter().map(|a| a.to_string()).collect())
                .unwrap_or_default(),
            known_relays: registry
                .known_relays()
                .iter()
                .map(|c| c.peer().to_string())
                .collect(),
        };
    }
    let _ = swarm;
    crate::admin::api::RegistryView {
        running: false,
        registered: false,
        addrs: Vec::new(),
        known_relays: Vec::new(),
        shard: None,
        last_published: None,
        records_served: 0,
        discoveries: 0,
    }
}

/// Brings the registry's metrics up to date before an admin or metrics request, which may be a
/// scrape.
#[cfg(feature = "registry")]
fn observe_registry(
    swarm: &Swarm<RelayNodeBehaviour>,
    metrics: Option<&crate::metrics::RegistryMetrics>,
) {
    if let (Some(metrics), Some(registry)) = (metrics, swarm.behaviour().registry.as_ref()) {
        metrics.observe(registry);
    }
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
