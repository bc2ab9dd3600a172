//! A stock rust-libp2p peer for the NAT lab: TCP (with port reuse, so its dials leave from its
//! listen port, as hole punching needs), noise, yamux, the relay client, DCUtR, identify, ping
//! and the interop transfer protocol (`transfer.rs`). Each peer runs in a thread of its own
//! inside a network namespace (`netns.rs`), on a current-thread runtime; the test drives it
//! through its [`SwarmTask`] from its own runtime.

use std::time::Duration;

use libp2p::{
    core::multiaddr::Protocol,
    dcutr, identify, noise, ping, relay,
    swarm::{dial_opts::DialOpts, ConnectionId, NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, PeerId, Swarm,
};

use super::swarm_task::SwarmTask;
use super::transfer::{self, Outcome, TRANSFER_PROTOCOL};

/// How long one wait on a lab peer may take.
pub const PEER_WAIT: Duration = Duration::from_secs(30);

/// The peer's behaviours.
#[derive(NetworkBehaviour)]
pub struct LabPeer {
    relay: relay::client::Behaviour,
    dcutr: dcutr::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// What the test sees of a lab peer.
#[derive(Debug)]
pub enum PeerEvent {
    /// Identify ran with `peer`.
    Identified(PeerId),
    /// A listen address: its own, or a circuit address from a reservation.
    ListenAddr(Multiaddr),
    /// The relay accepted a reservation.
    Reserved,
    /// A reservation failed or ended.
    ReservationFailed(String),
    /// A connection to `peer` over `addr`.
    Connected {
        peer: PeerId,
        connection: ConnectionId,
        addr: Multiaddr,
    },
    /// A connection to `peer` closed.
    Closed {
        peer: PeerId,
        connection: ConnectionId,
    },
    /// A dial failed.
    DialFailed(String),
    /// DCUtR's outcome with `peer`: the direct connection, or why there is none.
    Upgrade {
        peer: PeerId,
        result: Result<ConnectionId, String>,
    },
}

/// Whether `addr` goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

fn build() -> Swarm<LabPeer> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp transport")
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .expect("relay client transport")
        .with_behaviour(|key, relay| LabPeer {
            relay,
            dcutr: dcutr::Behaviour::new(key.public().to_peer_id()),
            identify: identify::Behaviour::new(identify::Config::new(
                "/macula-nat-lab/1.0.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
            stream: libp2p_stream::Behaviour::new(),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build()
}

fn forward(swarm: &mut Swarm<LabPeer>, event: SwarmEvent<LabPeerEvent>) -> Option<PeerEvent> {
    let _ = swarm;
    Some(match event {
        SwarmEvent::NewListenAddr { address, .. } => PeerEvent::ListenAddr(address),
        SwarmEvent::ListenerClosed { reason, .. } => {
            PeerEvent::ReservationFailed(format!("listener closed: {reason:?}"))
        }
        SwarmEvent::ListenerError { error, .. } => {
            PeerEvent::ReservationFailed(format!("listener error: {error}"))
        }
        SwarmEvent::ConnectionEstablished {
            peer_id,
            connection_id,
            endpoint,
            ..
        } => PeerEvent::Connected {
            peer: peer_id,
            connection: connection_id,
            addr: endpoint.get_remote_address().clone(),
        },
        SwarmEvent::ConnectionClosed {
            peer_id,
            connection_id,
            ..
        } => PeerEvent::Closed {
            peer: peer_id,
            connection: connection_id,
        },
        SwarmEvent::OutgoingConnectionError { error, .. } => {
            PeerEvent::DialFailed(error.to_string())
        }
        SwarmEvent::Behaviour(LabPeerEvent::Identify(identify::Event::Received {
            peer_id,
            ..
        })) => PeerEvent::Identified(peer_id),
        SwarmEvent::Behaviour(LabPeerEvent::Relay(
            relay::client::Event::ReservationReqAccepted { .. },
        )) => PeerEvent::Reserved,
        SwarmEvent::Behaviour(LabPeerEvent::Dcutr(dcutr::Event {
            remote_peer_id,
            result,
        })) => PeerEvent::Upgrade {
            peer: remote_peer_id,
            result: result.map_err(|e| e.to_string()),
        },
        _ => return None,
    })
}

/// A lab peer: its swarm runs in a thread inside a namespace; dropping it stops that thread.
pub struct NatPeer {
    pub peer_id: PeerId,
    pub task: SwarmTask<LabPeer, PeerEvent>,
    /// Outcomes of the transfers it served (as a target).
    pub served: tokio::sync::mpsc::UnboundedReceiver<std::io::Result<Outcome>>,
    control: libp2p_stream::Control,
    stop: Option<std::sync::mpsc::Sender<()>>,
}

impl NatPeer {
    /// Starts a peer in the namespace `ns` of `lab`, listening on `listen` (e.g.
    /// `/ip4/0.0.0.0/tcp/20001`) and serving the transfer protocol.
    pub async fn start(lab: &super::netns::Lab, ns: &str, listen: Multiaddr) -> Self {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let name = ns.to_string();
        lab.spawn_in(ns, move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let mut swarm = build();
                let peer_id = *swarm.local_peer_id();
                let mut control = swarm.behaviour().stream.new_control();
                let mut incoming = control
                    .accept(TRANSFER_PROTOCOL)
                    .expect("transfer protocol registered once");
                let (served_tx, served) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(async move {
                    use futures::StreamExt;
                    while let Some((_, stream)) = incoming.next().await {
                        let served_tx = served_tx.clone();
                        tokio::spawn(async move {
                            let _ = served_tx.send(transfer::serve(stream).await);
                        });
                    }
                });
                swarm
                    .listen_on(listen.clone())
                    .unwrap_or_else(|e| panic!("{name}: listen on {listen}: {e}"));
                let task =
                    SwarmTask::spawn(&format!("lab peer in {name}"), PEER_WAIT, swarm, forward);
                let _ = ready_tx.send(NatPeer {
                    peer_id,
                    task,
                    served,
                    control,
                    stop: None,
                });
                // Keep the runtime (and with it the swarm) alive until the peer is dropped.
                tokio::task::spawn_blocking(move || {
                    let _ = stop_rx.recv();
                })
                .await
                .ok();
            });
        });
        let mut peer = tokio::time::timeout(PEER_WAIT, ready_rx)
            .await
            .expect("the lab peer started within the wait")
            .expect("the lab peer's thread sent its handle");
        peer.stop = Some(stop_tx);
        peer
    }

    /// Dials `relay` (an address ending in `/p2p/<relay>`) and waits until identify ran with
    /// it (so that its observed address is a hole-punching candidate).
    pub async fn connect_relay(&mut self, relay: &Multiaddr) {
        let Some(Protocol::P2p(relay_id)) = relay.iter().last() else {
            panic!("relay address {relay} does not end in /p2p");
        };
        let addr = relay.clone();
        self.task
            .with(move |s| s.dial(DialOpts::peer_id(relay_id).addresses(vec![addr]).build()))
            .await
            .expect("dialing the relay starts");
        self.task
            .expect("identify with the relay", |e| match e {
                PeerEvent::Identified(p) if p == relay_id => Some(()),
                PeerEvent::DialFailed(e) => panic!("dialing the relay failed: {e}"),
                _ => None,
            })
            .await;
    }

    /// Reserves on `relay` (connected already); returns the circuit addresses the reservation
    /// gave (the relay's addresses, as the relay announced them, with `/p2p-circuit`).
    pub async fn reserve(&mut self, relay: &Multiaddr) -> Vec<Multiaddr> {
        self.try_reserve(relay)
            .await
            .unwrap_or_else(|why| panic!("reservation failed: {why}"))
    }

    /// [`reserve`](Self::reserve), or why the relay refused.
    pub async fn try_reserve(&mut self, relay: &Multiaddr) -> Result<Vec<Multiaddr>, String> {
        let circuit = relay.clone().with(Protocol::P2pCircuit);
        self.task
            .with(move |s| s.listen_on(circuit))
            .await
            .expect("listening on the circuit address");
        let mut addrs = Vec::new();
        let mut reserved = false;
        while !reserved || addrs.is_empty() {
            match self
                .task
                .expect("the reservation and its addresses", Some)
                .await
            {
                PeerEvent::Reserved => reserved = true,
                PeerEvent::ListenAddr(a) if is_relayed(&a) => addrs.push(a),
                PeerEvent::ReservationFailed(why) => return Err(why),
                _ => {}
            }
        }
        Ok(addrs)
    }

    /// Dials `circuit` (a circuit address ending in `/p2p/<target>`) and waits for the relayed
    /// connection to the target: its id, or why the dial failed.
    pub async fn dial_relayed(&mut self, circuit: Multiaddr) -> Result<ConnectionId, String> {
        let Some(Protocol::P2p(target)) = circuit.iter().last() else {
            panic!("circuit address {circuit} does not end in /p2p");
        };
        self.task
            .with(move |s| s.dial(circuit))
            .await
            .expect("dialing starts");
        self.task
            .expect("the relayed connection to the target", |e| match e {
                PeerEvent::Connected {
                    peer,
                    connection,
                    addr,
                } if peer == target && is_relayed(&addr) => Some(Ok(connection)),
                PeerEvent::DialFailed(e) => Some(Err(e)),
                _ => None,
            })
            .await
    }

    /// Closes one connection.
    pub async fn close(&self, connection: ConnectionId) {
        self.task
            .with(move |s| s.close_connection(connection))
            .await;
    }

    /// Runs a transfer of `n` bytes each way with `peer` over a new stream (on whichever
    /// connection libp2p-stream picks); `Ok` only if both hashes match.
    pub async fn transfer(&self, peer: PeerId, n: u64) -> Result<(), String> {
        let mut control = self.control.clone();
        let stream = tokio::time::timeout(PEER_WAIT, control.open_stream(peer, TRANSFER_PROTOCOL))
            .await
            .map_err(|_| format!("no transfer stream within {PEER_WAIT:?}"))?
            .map_err(|e| format!("opening the transfer stream: {e}"))?;
        let outcome = transfer::dial(stream, n, n)
            .await
            .map_err(|e| format!("transfer: {e}"))?;
        let expected =
            tokio::task::spawn_blocking(move || transfer::expected_hash(transfer::DOWN_SEED, n))
                .await
                .unwrap();
        match (
            outcome.peer_got_what_we_sent,
            outcome.received_hash == expected,
        ) {
            (true, true) => Ok(()),
            (sent, received) => Err(format!(
                "hash mismatch: peer got ours {sent}, we got the peer's {received}"
            )),
        }
    }
}

impl Drop for NatPeer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
