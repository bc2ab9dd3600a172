//! Dead peers on transports whose new streams stall instead of failing.
//!
//! The node finds peers that vanished without a FIN or RST by pinging them: libp2p's ping
//! reports a failure when a ping goes unanswered or its stream cannot be negotiated. But that
//! timeout covers only the negotiation: when the transport never hands over a new stream, no
//! ping is sent and none fails. WebRTC-direct does exactly that when a browser vanishes (a
//! closed tab, a lost network): `libp2p-webrtc` does not close a connection whose ICE failed,
//! and a new data channel on it waits forever to open. And js-libp2p browsers do not answer
//! pings at all (their connection monitor only sends them), so ping cannot tell either way.
//!
//! This behaviour probes WebRTC-direct connections the way js-libp2p's connection monitor does:
//! every [`PROBE_INTERVAL`] it opens a stream for [`PROTOCOL`], which nobody serves. A live peer
//! answers the negotiation (with "not supported": that is enough); a connection where no
//! answer comes within [`PROBE_TIMEOUT`] is closed, and with it the peer's reservation and
//! sessions. Other transports are not probed: their streams open or fail.

use std::{
    collections::VecDeque,
    convert::Infallible,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p::{
    core::{transport::PortUse, upgrade::DeniedUpgrade, upgrade::ReadyUpgrade, Endpoint},
    swarm::{
        handler::{ConnectionEvent, DialUpgradeError, FullyNegotiatedOutbound},
        CloseConnection, ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId,
        FromSwarm, NetworkBehaviour, StreamUpgradeError, SubstreamProtocol, THandler,
        THandlerInEvent, THandlerOutEvent, ToSwarm,
    },
    Multiaddr, PeerId, StreamProtocol,
};

use crate::node::is_webrtc_direct;

/// The protocol probed for; no peer serves it, a live one says so.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/macula/liveness/1.0.0");
/// How long after an answer the next probe starts.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// How long a probe may wait for its answer before the connection is closed. A peer that
/// vanished is found within [`PROBE_INTERVAL`] + [`PROBE_TIMEOUT`], inside the node's
/// [`DEAD_PEER_BOUND`](crate::node::DEAD_PEER_BOUND).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a probe wants at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Open a probe stream now.
    Open,
    /// Nothing until then.
    WaitUntil(Instant),
    /// No answer in time: the connection is dead.
    Dead,
}

/// The probe's decisions, on an explicit clock.
#[derive(Debug, Clone)]
struct Probe {
    next_at: Instant,
    open_since: Option<Instant>,
}

impl Probe {
    fn new(now: Instant) -> Self {
        Self {
            next_at: now + PROBE_INTERVAL,
            open_since: None,
        }
    }

    fn action(&mut self, now: Instant) -> Action {
        match self.open_since {
            Some(since) if now >= since + PROBE_TIMEOUT => Action::Dead,
            Some(since) => Action::WaitUntil(since + PROBE_TIMEOUT),
            None if now >= self.next_at => {
                self.open_since = Some(now);
                Action::Open
            }
            None => Action::WaitUntil(self.next_at),
        }
    }

    fn answered(&mut self, now: Instant) {
        self.open_since = None;
        self.next_at = now + PROBE_INTERVAL;
    }
}

/// Closes WebRTC-direct connections whose peer stopped answering (see the module docs).
#[derive(Debug, Default)]
pub struct Behaviour {
    to_close: VecDeque<(PeerId, ConnectionId)>,
}

impl Behaviour {
    fn handler(addr: &Multiaddr) -> Handler {
        Handler {
            probe: is_webrtc_direct(addr).then(|| Probe::new(Instant::now())),
            timer: Delay::new(PROBE_INTERVAL),
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Self::handler(remote_addr))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        addr: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Self::handler(addr))
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        _: THandlerOutEvent<Self>,
    ) {
        tracing::debug!(
            %peer,
            ?connection,
            "no answer to a stream opened {PROBE_TIMEOUT:?} ago: closing the connection"
        );
        self.to_close.push_back((peer, connection));
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Infallible, THandlerInEvent<Self>>> {
        match self.to_close.pop_front() {
            Some((peer_id, connection)) => Poll::Ready(ToSwarm::CloseConnection {
                peer_id,
                connection: CloseConnection::One(connection),
            }),
            None => Poll::Pending,
        }
    }
}

/// Probes one connection (if it is WebRTC-direct); tells the behaviour once when it is dead.
pub struct Handler {
    probe: Option<Probe>,
    timer: Delay,
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Infallible;
    type ToBehaviour = ();
    type InboundProtocol = DeniedUpgrade;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<DeniedUpgrade> {
        SubstreamProtocol::new(DeniedUpgrade, ())
    }

    fn on_behaviour_event(&mut self, never: Infallible) {
        match never {}
    }

    fn connection_keep_alive(&self) -> bool {
        false
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<ReadyUpgrade<StreamProtocol>, (), ()>> {
        loop {
            let Some(probe) = self.probe.as_mut() else {
                return Poll::Pending;
            };
            let now = Instant::now();
            match probe.action(now) {
                Action::Open => {
                    return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                        protocol: SubstreamProtocol::new(ReadyUpgrade::new(PROTOCOL), ())
                            .with_timeout(PROBE_TIMEOUT),
                    })
                }
                Action::Dead => {
                    self.probe = None;
                    return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(()));
                }
                Action::WaitUntil(at) => {
                    self.timer.reset(at.saturating_duration_since(now));
                    if self.timer.poll_unpin(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<DeniedUpgrade, ReadyUpgrade<StreamProtocol>, (), ()>,
    ) {
        let answered = match event {
            // Nobody serves the protocol; if a peer does, its stream is simply dropped.
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound { .. }) => true,
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                // "Not supported" is an answer; a failed or silent negotiation is left to the
                // probe's deadline.
                matches!(error, StreamUpgradeError::NegotiationFailed)
            }
            _ => false,
        };
        if let (true, Some(probe)) = (answered, self.probe.as_mut()) {
            probe.answered(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_probe_opens_after_the_interval_and_a_silent_one_is_dead_after_the_timeout() {
        let t0 = Instant::now();
        let mut probe = Probe::new(t0);
        assert_eq!(
            probe.action(t0),
            Action::WaitUntil(t0 + PROBE_INTERVAL),
            "no probe before the interval"
        );
        let opened = t0 + PROBE_INTERVAL;
        assert_eq!(probe.action(opened), Action::Open);
        assert_eq!(
            probe.action(opened + PROBE_TIMEOUT / 2),
            Action::WaitUntil(opened + PROBE_TIMEOUT)
        );
        assert_eq!(probe.action(opened + PROBE_TIMEOUT), Action::Dead);
    }

    #[test]
    fn an_answer_schedules_the_next_probe_one_interval_later() {
        let t0 = Instant::now();
        let mut probe = Probe::new(t0);
        let opened = t0 + PROBE_INTERVAL;
        assert_eq!(probe.action(opened), Action::Open);
        let answer = opened + Duration::from_millis(30);
        probe.answered(answer);
        assert_eq!(
            probe.action(answer + PROBE_TIMEOUT),
            if PROBE_TIMEOUT >= PROBE_INTERVAL {
                Action::Open
            } else {
                Action::WaitUntil(answer + PROBE_INTERVAL)
            }
        );
    }

    #[test]
    fn only_webrtc_direct_connections_are_probed() {
        let webrtc: Multiaddr = "/ip4/198.18.0.2/udp/4002/webrtc-direct".parse().unwrap();
        let tcp: Multiaddr = "/ip4/198.18.0.2/tcp/4001".parse().unwrap();
        assert!(Behaviour::handler(&webrtc).probe.is_some());
        assert!(Behaviour::handler(&tcp).probe.is_none());
    }

    proptest! {
        /// Over random answer times: the probe is declared dead exactly when an open probe
        /// went unanswered for the timeout, never earlier, and an answered peer never is.
        #[test]
        fn dead_exactly_when_a_probe_went_unanswered_for_the_timeout(
            steps in proptest::collection::vec((0u64..25_000, any::<bool>()), 1..80)
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut probe = Probe::new(t0);
            let mut open_since: Option<Instant> = None;
            for (dt_ms, answer) in steps {
                now += Duration::from_millis(dt_ms);
                if answer && open_since.is_some() {
                    probe.answered(now);
                    open_since = None;
                    continue;
                }
                match probe.action(now) {
                    Action::Open => {
                        prop_assert!(open_since.is_none());
                        open_since = Some(now);
                    }
                    Action::Dead => {
                        let since = open_since.expect("dead only with a probe open");
                        prop_assert!(now >= since + PROBE_TIMEOUT);
                        return Ok(());
                    }
                    Action::WaitUntil(at) => {
                        prop_assert!(at > now);
                        if let Some(since) = open_since {
                            prop_assert_eq!(at, since + PROBE_TIMEOUT);
                        }
                    }
                }
            }
        }
    }
}
