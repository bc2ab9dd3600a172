//! A behaviour whose connection handlers live on the heap, behind one pointer.
//!
//! libp2p-swarm keeps a connection's handler (the tuple of every behaviour's handler) inline in
//! the connection's task, and the task's state machine holds it more than once: a large handler
//! costs a relay several times its size per connection, reservation or not. identify's handler
//! alone is about 3.4 kB (libp2p 0.57), the node's whole handler 5.6 kB, and each connection's
//! task took 19.5 KiB. [`Boxed`] keeps the wrapped behaviour's handler on the heap once and puts
//! a pointer in the task instead. Everything else is delegated unchanged, and [`Boxed`]
//! dereferences to the behaviour, so its methods are called as before.

use std::{
    ops::{Deref, DerefMut},
    task::{Context, Poll},
};

use libp2p::{
    core::{transport::PortUse, Endpoint, Multiaddr},
    swarm::{
        handler::ConnectionEvent, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent,
        ConnectionId, FromSwarm, NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent,
        THandlerOutEvent, ToSwarm,
    },
    PeerId,
};

/// `B`, with each of its connection handlers boxed (see the module documentation).
#[derive(Debug, Default)]
pub struct Boxed<B>(pub B);

impl<B> Deref for Boxed<B> {
    type Target = B;

    fn deref(&self) -> &B {
        &self.0
    }
}

impl<B> DerefMut for Boxed<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.0
    }
}

impl<B> From<B> for Boxed<B> {
    fn from(behaviour: B) -> Self {
        Boxed(behaviour)
    }
}

/// A connection handler on the heap: what [`Boxed`] gives each connection.
#[derive(Debug)]
pub struct BoxedHandler<H>(Box<H>);

impl<H: ConnectionHandler> ConnectionHandler for BoxedHandler<H> {
    type FromBehaviour = H::FromBehaviour;
    type ToBehaviour = H::ToBehaviour;
    type InboundProtocol = H::InboundProtocol;
    type OutboundProtocol = H::OutboundProtocol;
    type InboundOpenInfo = H::InboundOpenInfo;
    type OutboundOpenInfo = H::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.0.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.0.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        self.0.poll(cx)
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.0.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        self.0.on_behaviour_event(event);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        self.0.on_connection_event(event);
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Boxed<B> {
    type ConnectionHandler = BoxedHandler<THandler<B>>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.0
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0
            .handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
            .map(|handler| BoxedHandler(Box::new(handler)))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.0.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.0
            .handle_established_outbound_connection(
                connection_id,
                peer,
                addr,
                role_override,
                port_use,
            )
            .map(|handler| BoxedHandler(Box::new(handler)))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        self.0.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.0
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.0.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::{core::upgrade::UpgradeInfo, identify, identity::Keypair};

    #[test]
    fn a_boxed_behaviours_handler_is_one_pointer() {
        type Identify = identify::Behaviour;
        assert!(std::mem::size_of::<THandler<Identify>>() > 1000);
        assert_eq!(
            std::mem::size_of::<THandler<Boxed<Identify>>>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn a_boxed_behaviour_gives_each_connection_the_inner_handler() {
        let key = Keypair::generate_ed25519();
        let mut boxed = Boxed(identify::Behaviour::new(identify::Config::new(
            "/test/1".into(),
            key.public(),
        )));
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let handler = boxed
            .handle_established_inbound_connection(
                ConnectionId::new_unchecked(1),
                PeerId::random(),
                &addr,
                &addr,
            )
            .expect("identify accepts every connection");
        let protocols: Vec<_> = handler
            .listen_protocol()
            .upgrade()
            .protocol_info()
            .map(|p| p.to_string())
            .collect();
        assert!(
            protocols.iter().any(|p| p == "/ipfs/id/1.0.0"),
            "{protocols:?}"
        );
    }
}
