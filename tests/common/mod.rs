//! Test harness: an in-process relay node and unmodified `libp2p::relay::client` peers, all on
//! 127.0.0.1 TCP with noise and yamux.
#![allow(dead_code)]

pub mod process;
pub mod transfer;

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    core::multiaddr::Protocol,
    identify, noise, relay,
    swarm::{dial_opts::DialOpts, dial_opts::PeerCondition, NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, PeerId, Swarm,
};
use macula_relay::{
    Behaviour, Config, Event, RelayNodeBehaviour, RelayNodeBuilder, RelayNodeEvent,
};
use tokio::sync::{mpsc, oneshot};

/// How long a test waits for any one expected event.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A config for tests: no request-rate limits (every peer is 127.0.0.1), generous per-peer caps.
pub fn test_config() -> macula_relay::ConfigBuilder {
    Config::builder()
        .request_rate_per_peer(None)
        .request_rate_per_ip(None)
        .stats_interval(None)
}

type RelayCommand = Box<dyn FnOnce(&mut Swarm<RelayNodeBehaviour>) + Send>;

/// A relay node running in its own task.
pub struct TestRelay {
    pub peer_id: PeerId,
    /// Listen address with `/p2p/<relay>`.
    pub addr: Multiaddr,
    commands: mpsc::UnboundedSender<RelayCommand>,
    pub events: mpsc::UnboundedReceiver<Event>,
}

impl TestRelay {
    pub async fn start(config: Config) -> Self {
        let mut swarm = RelayNodeBuilder::new()
            .config(config)
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .build()
            .expect("relay node builds");
        let peer_id = *swarm.local_peer_id();
        let listening = async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    break address;
                }
            }
        };
        let addr = tokio::time::timeout(WAIT, listening)
            .await
            .expect("timed out waiting for the first listen address");
        swarm.add_external_address(addr.clone());
        let (commands, mut command_rx) = mpsc::unbounded_channel::<RelayCommand>();
        let (event_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = command_rx.recv() => match command {
                        Some(command) => command(&mut swarm),
                        None => break,
                    },
                    event = swarm.select_next_some() => {
                        if let SwarmEvent::Behaviour(RelayNodeEvent::Relay(event)) = event {
                            let _ = event_tx.send(event);
                        }
                    }
                }
            }
        });
        TestRelay {
            peer_id,
            addr: addr.with(Protocol::P2p(peer_id)),
            commands,
            events,
        }
    }

    /// Runs `f` on the relay behaviour inside the relay's task and returns its result.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Behaviour) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Box::new(move |swarm| {
                let _ = tx.send(f(&mut swarm.behaviour_mut().relay));
            }))
            .expect("relay task alive");
        rx.await.expect("relay task answered")
    }

    /// Waits for the first event for which `f` returns `Some`, skipping others.
    pub async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        let wait = async {
            loop {
                let event = self.events.recv().await.expect("relay task alive");
                if let Some(t) = f(&event) {
                    return t;
                }
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for relay event: {what}"))
    }

    /// The circuit address of `target` through this relay.
    pub fn circuit_addr(&self, target: PeerId) -> Multiaddr {
        self.addr
            .clone()
            .with(Protocol::P2pCircuit)
            .with(Protocol::P2p(target))
    }
}

#[derive(NetworkBehaviour)]
pub struct ClientBehaviour {
    relay: relay::client::Behaviour,
    identify: identify::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// A relay `Limit` as the rust client reports it: (duration, data); `None` if absent.
pub type SeenLimit = Option<(Option<Duration>, Option<u64>)>;

/// Reads the client's `Limit` (its type is not nameable outside libp2p-relay).
macro_rules! seen {
    ($limit:expr) => {
        $limit.map(|l| (l.duration(), l.data_in_bytes()))
    };
}

/// What a client peer reports to the test.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    Connected { peer: PeerId, relayed: bool },
    ConnectionClosed { peer: PeerId, relayed: bool },
    DialFailed { peer: Option<PeerId>, error: String },
    ReservationAccepted { renewal: bool, limit: SeenLimit },
    ListenerClosed { error: String },
    OutboundCircuit { limit: SeenLimit },
    InboundCircuit { source: PeerId, limit: SeenLimit },
}

type ClientCommand = Box<dyn FnOnce(&mut Swarm<ClientBehaviour>) + Send>;

/// An unmodified rust-libp2p relay client peer running in its own task.
pub struct TestClient {
    pub peer_id: PeerId,
    pub control: libp2p_stream::Control,
    commands: mpsc::UnboundedSender<ClientCommand>,
    pub events: mpsc::UnboundedReceiver<ClientEvent>,
}

impl TestClient {
    pub async fn start() -> Self {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .unwrap()
            .with_behaviour(|key, relay| ClientBehaviour {
                relay,
                identify: identify::Behaviour::new(identify::Config::new(
                    "/macula-test/1.0.0".into(),
                    key.public(),
                )),
                stream: libp2p_stream::Behaviour::new(),
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        let peer_id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let (commands, mut command_rx) = mpsc::unbounded_channel::<ClientCommand>();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = command_rx.recv() => match command {
                        Some(command) => command(&mut swarm),
                        None => break,
                    },
                    event = swarm.select_next_some() => {
                        let event = match event {
                            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                                Some(ClientEvent::Connected { peer: peer_id, relayed: endpoint.is_relayed() })
                            }
                            SwarmEvent::ConnectionClosed { peer_id, endpoint, .. } => {
                                Some(ClientEvent::ConnectionClosed { peer: peer_id, relayed: endpoint.is_relayed() })
                            }
                            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                                Some(ClientEvent::DialFailed { peer: peer_id, error: format!("{error:?}") })
                            }
                            SwarmEvent::ListenerClosed { reason, .. } => Some(ClientEvent::ListenerClosed {
                                error: format!("{reason:?}"),
                            }),
                            SwarmEvent::Behaviour(ClientBehaviourEvent::Relay(e)) => match e {
                                relay::client::Event::ReservationReqAccepted { renewal, limit, .. } => {
                                    Some(ClientEvent::ReservationAccepted { renewal, limit: seen!(limit) })
                                }
                                relay::client::Event::OutboundCircuitEstablished { limit, .. } => {
                                    Some(ClientEvent::OutboundCircuit { limit: seen!(limit) })
                                }
                                relay::client::Event::InboundCircuitEstablished { src_peer_id, limit } => {
                                    Some(ClientEvent::InboundCircuit { source: src_peer_id, limit: seen!(limit) })
                                }
                            },
                            _ => None,
                        };
                        if let Some(event) = event {
                            let _ = tx.send(event);
                        }
                    }
                }
            }
        });
        TestClient {
            peer_id,
            control,
            commands,
            events,
        }
    }

    pub fn run(&self, f: impl FnOnce(&mut Swarm<ClientBehaviour>) + Send + 'static) {
        self.commands.send(Box::new(f)).expect("client task alive");
    }

    /// Waits for the first event for which `f` returns `Some`, skipping others.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&ClientEvent) -> Option<T>,
    ) -> T {
        let wait = async {
            loop {
                let event = self.events.recv().await.expect("client task alive");
                if let Some(t) = f(&event) {
                    return t;
                }
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for client event: {what}"))
    }

    /// Connects to the relay and reserves a slot; returns the limit the relay announced.
    pub async fn reserve(&mut self, relay: &TestRelay) -> SeenLimit {
        self.reserve_on(relay.peer_id, relay.addr.clone()).await
    }

    /// [`reserve`](Self::reserve) on a relay known by id and address (`.../p2p/<relay>`).
    pub async fn reserve_on(&mut self, relay_peer: PeerId, relay_addr: Multiaddr) -> SeenLimit {
        let dial = relay_addr.clone();
        self.run(move |s| {
            s.dial(dial).unwrap();
        });
        self.expect("connected to relay", |e| match e {
            ClientEvent::Connected {
                peer,
                relayed: false,
            } if *peer == relay_peer => Some(()),
            _ => None,
        })
        .await;
        let listen = relay_addr.with(Protocol::P2pCircuit);
        self.run(move |s| {
            s.listen_on(listen).unwrap();
        });
        self.expect("reservation accepted", |e| match e {
            ClientEvent::ReservationAccepted { limit, .. } => Some(*limit),
            ClientEvent::ListenerClosed { error } => panic!("reservation failed: {error}"),
            _ => None,
        })
        .await
    }

    /// Serves the transfer protocol on every inbound stream, forever.
    pub fn serve_transfers(&self) -> mpsc::UnboundedReceiver<std::io::Result<transfer::Outcome>> {
        let mut incoming = self
            .control
            .clone()
            .accept(transfer::TRANSFER_PROTOCOL)
            .expect("protocol registered once");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some((_peer, stream)) = incoming.next().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = tx.send(transfer::serve(stream).await);
                });
            }
        });
        rx
    }

    /// Dials `target` through `relay` (a new circuit even if one exists); Ok once connected,
    /// Err with the dial error otherwise.
    pub async fn dial_through(&mut self, relay: &TestRelay, target: PeerId) -> Result<(), String> {
        self.dial_circuit(relay.circuit_addr(target), target).await
    }

    /// Dials `target` at a circuit address `<relay>/p2p-circuit/p2p/<target>`.
    pub async fn dial_circuit(&mut self, addr: Multiaddr, target: PeerId) -> Result<(), String> {
        self.run(move |s| {
            let opts = DialOpts::peer_id(target)
                .addresses(vec![addr])
                .condition(PeerCondition::Always)
                .build();
            s.dial(opts).unwrap();
        });
        self.expect("relayed connection or dial error", |e| match e {
            ClientEvent::Connected {
                peer,
                relayed: true,
            } if *peer == target => Some(Ok(())),
            ClientEvent::DialFailed {
                peer: Some(peer),
                error,
            } if *peer == target => Some(Err(error.clone())),
            _ => None,
        })
        .await
    }

    /// Opens a transfer stream to `peer` and moves `n` bytes each way.
    pub async fn transfer(&self, peer: PeerId, n: u64) -> std::io::Result<transfer::Outcome> {
        self.transfer_asymmetric(peer, n, n).await
    }

    /// Opens a transfer stream to `peer`: `up` bytes to it, `down` bytes back.
    pub async fn transfer_asymmetric(
        &self,
        peer: PeerId,
        up: u64,
        down: u64,
    ) -> std::io::Result<transfer::Outcome> {
        let mut control = self.control.clone();
        let stream = control.open_stream(peer, transfer::TRANSFER_PROTOCOL);
        let stream = tokio::time::timeout(WAIT, stream)
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("opening a transfer stream to {peer} took over {WAIT:?}"),
                )
            })?
            .map_err(std::io::Error::other)?;
        transfer::dial(stream, up, down).await
    }
}
