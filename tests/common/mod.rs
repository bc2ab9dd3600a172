//! Test harness: an in-process relay node and unmodified `libp2p::relay::client` peers, all on
//! 127.0.0.1 TCP with noise and yamux, each a [`swarm_task::SwarmTask`].
#![allow(dead_code)]

pub mod process;
/// The spec's messages, from the same prost definitions the relay uses (its protocol module is
/// private), for tests that speak the wire protocol by hand.
#[path = "../../src/protocol/proto.rs"]
pub mod proto;
pub mod swarm_task;
pub mod transfer;

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    core::multiaddr::Protocol,
    identify, noise, ping, relay,
    swarm::{dial_opts::DialOpts, dial_opts::PeerCondition, NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, PeerId, Swarm,
};
use macula_relay::{
    Behaviour, Config, Event, RelayNodeBehaviour, RelayNodeBuilder, RelayNodeEvent,
};
#[allow(unused_imports)] // not every test binary logs
pub use swarm_task::init_tracing;
use swarm_task::{first_listen_addr, SwarmTask};
use tokio::sync::mpsc;

/// How long a test waits for any one expected event.
pub const WAIT: Duration = Duration::from_secs(30);

/// A config for tests: no request-rate limits (every peer is 127.0.0.1), generous per-peer caps.
pub fn test_config() -> macula_relay::ConfigBuilder {
    Config::builder()
        .request_rate_per_peer(None)
        .request_rate_per_ip(None)
        .stats_interval(None)
}

/// A relay node running in its own task.
pub struct TestRelay {
    pub peer_id: PeerId,
    /// Listen address with `/p2p/<relay>`.
    pub addr: Multiaddr,
    task: SwarmTask<RelayNodeBehaviour, Event>,
}

impl TestRelay {
    pub async fn start(config: Config) -> Self {
        let mut swarm = RelayNodeBuilder::new()
            .config(config)
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .build()
            .expect("relay node builds");
        let peer_id = *swarm.local_peer_id();
        let addr = first_listen_addr(&mut swarm, WAIT).await;
        swarm.add_external_address(addr.clone());
        let task = SwarmTask::spawn("relay", WAIT, swarm, |_, event| match event {
            SwarmEvent::Behaviour(RelayNodeEvent::Relay(event)) => Some(event),
            _ => None,
        });
        TestRelay {
            peer_id,
            addr: addr.with(Protocol::P2p(peer_id)),
            task,
        }
    }

    /// Runs `f` on the relay behaviour inside the relay's task and returns its result.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Behaviour) -> R + Send + 'static,
    ) -> R {
        self.task.with(|s| f(&mut s.behaviour_mut().relay)).await
    }

    /// Waits for the first relay event for which `f` returns `Some`, skipping others.
    pub async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        self.task.expect(what, |e| f(&e)).await
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
    /// Answers the relay's pings, as every stock libp2p stack does (the relay node drops a peer
    /// whose pings go unanswered).
    ping: ping::Behaviour,
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

fn client_event(event: SwarmEvent<ClientBehaviourEvent>) -> Option<ClientEvent> {
    use relay::client::Event as Relay;
    Some(match event {
        SwarmEvent::ConnectionEstablished {
            peer_id, endpoint, ..
        } => ClientEvent::Connected {
            peer: peer_id,
            relayed: endpoint.is_relayed(),
        },
        SwarmEvent::ConnectionClosed {
            peer_id, endpoint, ..
        } => ClientEvent::ConnectionClosed {
            peer: peer_id,
            relayed: endpoint.is_relayed(),
        },
        SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => ClientEvent::DialFailed {
            peer: peer_id,
            error: format!("{error:?}"),
        },
        SwarmEvent::ListenerClosed { reason, .. } => ClientEvent::ListenerClosed {
            error: format!("{reason:?}"),
        },
        SwarmEvent::Behaviour(ClientBehaviourEvent::Relay(e)) => match e {
            Relay::ReservationReqAccepted { renewal, limit, .. } => {
                ClientEvent::ReservationAccepted {
                    renewal,
                    limit: seen!(limit),
                }
            }
            Relay::OutboundCircuitEstablished { limit, .. } => ClientEvent::OutboundCircuit {
                limit: seen!(limit),
            },
            Relay::InboundCircuitEstablished { src_peer_id, limit } => {
                ClientEvent::InboundCircuit {
                    source: src_peer_id,
                    limit: seen!(limit),
                }
            }
        },
        _ => return None,
    })
}

/// An unmodified rust-libp2p relay client peer running in its own task.
pub struct TestClient {
    pub peer_id: PeerId,
    pub control: libp2p_stream::Control,
    task: SwarmTask<ClientBehaviour, ClientEvent>,
}

impl TestClient {
    /// A client with rust-yamux's default configuration.
    pub async fn start() -> Self {
        Self::start_with_yamux(yamux::Config::default).await
    }

    /// A client whose yamux (on direct and relayed connections) is `yamux_config()`.
    ///
    /// js-yamux sends data frames as large as the whole send window; rust-yamux's default config
    /// lets a stream's window grow past 1 MiB and then rejects those frames (`FrameTooLarge`),
    /// closing the connection. That is between the two end peers (the relay only copies bytes),
    /// so a rust peer that moves large amounts of data with js peers needs
    /// `macula_relay::node::yamux_config()`, as the README says.
    pub async fn start_with_yamux(yamux_config: fn() -> yamux::Config) -> Self {
        let swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux_config)
            .unwrap()
            .with_relay_client(noise::Config::new, yamux_config)
            .unwrap()
            .with_behaviour(|key, relay| ClientBehaviour {
                relay,
                identify: identify::Behaviour::new(identify::Config::new(
                    "/macula-test/1.0.0".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::default(),
                stream: libp2p_stream::Behaviour::new(),
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        TestClient {
            peer_id: *swarm.local_peer_id(),
            control: swarm.behaviour().stream.new_control(),
            task: SwarmTask::spawn("client", WAIT, swarm, |_, event| client_event(event)),
        }
    }

    /// Runs `f` on the swarm inside the client's task, without waiting for it.
    pub fn run(&self, f: impl FnOnce(&mut Swarm<ClientBehaviour>) + Send + 'static) {
        self.task.run(f);
    }

    /// Waits for the first event for which `f` returns `Some`, skipping others.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&ClientEvent) -> Option<T>,
    ) -> T {
        self.task.expect(what, |e| f(&e)).await
    }

    /// Connects to the relay and reserves a slot; returns the limit the relay announced.
    pub async fn reserve(&mut self, relay: &TestRelay) -> SeenLimit {
        self.reserve_on(relay.peer_id, relay.addr.clone()).await
    }

    /// [`reserve`](Self::reserve) on a relay known by id and address (`.../p2p/<relay>`).
    pub async fn reserve_on(&mut self, relay_peer: PeerId, relay_addr: Multiaddr) -> SeenLimit {
        let dial = relay_addr.clone();
        self.run(move |s| s.dial(dial).unwrap());
        self.expect("connected to the relay", |e| match e {
            ClientEvent::Connected {
                peer,
                relayed: false,
            } if *peer == relay_peer => Some(()),
            ClientEvent::DialFailed {
                peer: Some(peer),
                error,
            } if *peer == relay_peer => panic!("dialing the relay failed: {error}"),
            _ => None,
        })
        .await;
        let listen = relay_addr.with(Protocol::P2pCircuit);
        let listening = self.task.with(move |s| s.listen_on(listen).map(drop)).await;
        listening.expect("listen on the circuit address");
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

/// A peer with no relay client, connected to `relay_addr`: only raw streams (the rust relay
/// client refuses circuits from a relay it holds no reservation on, and answers STOP itself, so
/// wire-level tests use this one).
pub async fn plain_peer(relay_addr: Multiaddr) -> (PeerId, libp2p_stream::Control) {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let peer = *swarm.local_peer_id();
    let control = swarm.behaviour().new_control();
    swarm.dial(relay_addr.clone()).unwrap();
    let connected = async {
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = swarm.select_next_some().await {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, connected)
        .await
        .unwrap_or_else(|_| {
            panic!("plain peer {peer}: not connected to {relay_addr} within {WAIT:?}")
        });
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (peer, control)
}

/// A circuit set up by hand through `relay` (which must not require reservations), between two
/// [`plain_peer`]s: both streams past the handshake.
pub async fn raw_circuit(relay: &TestRelay) -> RawCircuit {
    use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
    use prost::Message;

    let (target, target_control) = plain_peer(relay.addr.clone()).await;
    let mut incoming = target_control
        .clone()
        .accept(macula_relay::STOP_PROTOCOL)
        .unwrap();
    let (source_id, source_control) = plain_peer(relay.addr.clone()).await;
    let target_side = tokio::spawn(async move {
        let (_, mut stream) = incoming.next().await.unwrap();
        let mut len = [0u8; 1];
        stream.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; len[0] as usize];
        stream.read_exact(&mut body).await.unwrap();
        let connect = proto::StopMessage::decode(body.as_slice()).unwrap();
        let ok = proto::StopMessage {
            r#type: Some(proto::StopMessageType::Status as i32),
            status: Some(macula_relay::Status::Ok as i32),
            ..Default::default()
        };
        stream
            .write_all(&ok.encode_length_delimited_to_vec())
            .await
            .unwrap();
        (stream, connect)
    });
    let mut hop = source_control
        .clone()
        .open_stream(relay.peer_id, macula_relay::HOP_PROTOCOL)
        .await
        .unwrap();
    let request = proto::HopMessage {
        r#type: Some(proto::HopMessageType::Connect as i32),
        peer: Some(proto::Peer {
            id: Some(target.to_bytes()),
            addrs: vec![],
        }),
        ..Default::default()
    };
    hop.write_all(&request.encode_length_delimited_to_vec())
        .await
        .unwrap();
    let mut len = [0u8; 1];
    hop.read_exact(&mut len).await.unwrap();
    let mut body = vec![0u8; len[0] as usize];
    hop.read_exact(&mut body).await.unwrap();
    let answer = proto::HopMessage::decode(body.as_slice()).unwrap();
    assert_eq!(answer.status, Some(macula_relay::Status::Ok as i32));
    let (stop, connect) = tokio::time::timeout(WAIT, target_side)
        .await
        .expect("the target accepted within the wait")
        .unwrap();
    RawCircuit {
        source: hop,
        target: stop,
        source_id,
        connect,
    }
}

/// The two ends of a circuit set up by hand ([`raw_circuit`]).
pub struct RawCircuit {
    /// The source's hop stream, now its end of the circuit.
    pub source: libp2p::Stream,
    /// The target's stop stream, now its end of the circuit.
    pub target: libp2p::Stream,
    /// The source's peer id.
    pub source_id: PeerId,
    /// The relay's CONNECT as the target got it.
    pub connect: proto::StopMessage,
}
