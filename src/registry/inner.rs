//! The behaviours the registry composes: the shared Kademlia and the record fetch protocol.

use libp2p::{kad, request_response, swarm::NetworkBehaviour};

use super::fetch::FetchCodec;

/// Kademlia (the one DHT of the swarm) and the record fetch protocol.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub struct Inner {
    /// The shared DHT.
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    /// `/macula/relay-record/1.0.0`.
    pub fetch: request_response::Behaviour<FetchCodec>,
}
