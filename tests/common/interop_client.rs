//! A stock rust-libp2p relay client peer (`libp2p::relay::client`, TCP, noise, yamux) with a
//! chosen yamux configuration, for bulk transfers with js-libp2p peers.
//!
//! js-yamux sends data frames as large as the whole send window; rust-yamux's default config
//! lets a stream's window grow past 1 MiB and then rejects those frames (`FrameTooLarge`),
//! closing the connection. That is between the two end peers (the relay only copies bytes), so a
//! rust peer that moves large amounts of data with js peers needs
//! `macula_relay::node::yamux_config()`, as the README says. [`crate::common::TestClient`] keeps the
//! defaults.
// Shared by the interop, browser and DCUtR tests; each uses a part.
#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    core::multiaddr::Protocol,
    noise, relay,
    swarm::{dial_opts::DialOpts, dial_opts::PeerCondition, NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, PeerId, Swarm,
};
use tokio::sync::{mpsc, oneshot};

use crate::common::{transfer, WAIT};

#[derive(NetworkBehaviour)]
pub struct PeerBehaviour {
    relay: relay::client::Behaviour,
    stream: libp2p_stream::Behaviour,
}

#[derive(Debug)]
enum PeerEvent {
    Connected { peer: PeerId, relayed: bool },
    DialFailed { peer: Option<PeerId>, error: String },
    Reserved,
    ListenerClosed { error: String },
}

type Command = Box<dyn FnOnce(&mut Swarm<PeerBehaviour>) + Send>;

/// A relay client peer running in its own task.
pub struct RustPeer {
    pub peer_id: PeerId,
    control: libp2p_stream::Control,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::UnboundedReceiver<PeerEvent>,
}

impl RustPeer {
    /// A peer whose yamux (on direct and relayed connections) is `yamux_config()`.
    pub async fn start(yamux_config: fn() -> yamux::Config) -> Self {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(tcp::Config::default(), noise::Config::new, yamux_config)
            .unwrap()
            .with_relay_client(noise::Config::new, yamux_config)
            .unwrap()
            .with_behaviour(|_, relay| PeerBehaviour {
                relay,
                stream: libp2p_stream::Behaviour::new(),
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        let peer_id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let (commands, mut command_rx) = mpsc::unbounded_channel::<Command>();
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
                                Some(PeerEvent::Connected { peer: peer_id, relayed: endpoint.is_relayed() })
                            }
                            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                                Some(PeerEvent::DialFailed { peer: peer_id, error: format!("{error:?}") })
                            }
                            SwarmEvent::ListenerClosed { reason, .. } => {
                                Some(PeerEvent::ListenerClosed { error: format!("{reason:?}") })
                            }
                            SwarmEvent::Behaviour(PeerBehaviourEvent::Relay(
                                relay::client::Event::ReservationReqAccepted { .. },
                            )) => Some(PeerEvent::Reserved),
                            _ => None,
                        };
                        if let Some(event) = event {
                            let _ = tx.send(event);
                        }
                    }
                }
            }
        });
        RustPeer {
            peer_id,
            control,
            commands,
            events,
        }
    }

    fn run(&self, f: impl FnOnce(&mut Swarm<PeerBehaviour>) + Send + 'static) {
        self.commands.send(Box::new(f)).expect("peer task alive");
    }

    async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(&PeerEvent) -> Option<T>) -> T {
        let wait = async {
            loop {
                let event = self.events.recv().await.expect("peer task alive");
                if let Some(t) = f(&event) {
                    return t;
                }
            }
        };
        tokio::time::timeout(WAIT, wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
    }

    /// Connects to the relay at `relay_addr` (`.../p2p/<relay>`) and reserves a slot.
    pub async fn reserve_on(&mut self, relay_peer: PeerId, relay_addr: Multiaddr) {
        let dial = relay_addr.clone();
        self.run(move |s| s.dial(dial).unwrap());
        self.expect("connected to the relay", |e| match e {
            PeerEvent::Connected {
                peer,
                relayed: false,
            } if *peer == relay_peer => Some(()),
            PeerEvent::DialFailed { error, .. } => panic!("dialing the relay failed: {error}"),
            _ => None,
        })
        .await;
        let (tx, rx) = oneshot::channel();
        let listen = relay_addr.with(Protocol::P2pCircuit);
        self.run(move |s| {
            let _ = tx.send(s.listen_on(listen).map(|_| ()).map_err(|e| e.to_string()));
        });
        rx.await.unwrap().expect("listen on the circuit address");
        self.expect("reservation accepted", |e| match e {
            PeerEvent::Reserved => Some(()),
            PeerEvent::ListenerClosed { error } => panic!("reservation failed: {error}"),
            _ => None,
        })
        .await;
    }

    /// Dials `target` at a circuit address; Ok once the relayed connection is up.
    pub async fn dial_circuit(&mut self, addr: Multiaddr, target: PeerId) -> Result<(), String> {
        self.run(move |s| {
            let opts = DialOpts::peer_id(target)
                .addresses(vec![addr])
                .condition(PeerCondition::Always)
                .build();
            s.dial(opts).unwrap();
        });
        self.expect("relayed connection or dial error", |e| match e {
            PeerEvent::Connected {
                peer,
                relayed: true,
            } if *peer == target => Some(Ok(())),
            PeerEvent::DialFailed {
                peer: Some(peer),
                error,
            } if *peer == target => Some(Err(error.clone())),
            _ => None,
        })
        .await
    }

    /// Serves the transfer protocol on every inbound stream.
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

    /// Opens a transfer stream to `peer` and moves `n` bytes each way.
    pub async fn transfer(&self, peer: PeerId, n: u64) -> std::io::Result<transfer::Outcome> {
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
        transfer::dial(stream, n, n).await
    }
}
