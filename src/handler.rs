//! The per-connection side of the relay: reads hop requests, answers them as the behaviour
//! decides, opens stop streams to targets, and runs the copy loops of the sessions whose source
//! is on this connection.

use std::{
    collections::VecDeque,
    io,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{future::BoxFuture, stream::FuturesUnordered, FutureExt, StreamExt};
use libp2p::{
    core::upgrade::ReadyUpgrade,
    swarm::{
        handler::{
            ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
        },
        ConnectionHandler, ConnectionHandlerEvent, Stream, StreamUpgradeError, SubstreamProtocol,
    },
    PeerId, StreamProtocol,
};

use crate::{
    copy::CopyFuture,
    protocol::{
        inbound_hop::{self, ConnectRequest, HopError, HopRequest, ReserveRequest},
        outbound_stop::{self, StopError},
        proto, Status, WireLimit, HOP_PROTOCOL, STOP_PROTOCOL,
    },
    session::shared::SessionShared,
    CloseReason, SessionId,
};

/// Settings the handler needs, copied from the relay's [`Config`](crate::Config).
#[derive(Clone, Copy, Debug)]
pub(crate) struct HandlerConfig {
    pub(crate) stream_timeout: Duration,
    pub(crate) max_pending_streams: usize,
    pub(crate) copy_buffer_size: usize,
}

/// Commands from the behaviour.
#[derive(Debug)]
pub enum In {
    /// Answer a RESERVE with OK.
    AcceptReservation {
        /// The request.
        request: ReserveRequest<Stream>,
        /// The reservation to send.
        reservation: proto::Reservation,
        /// The limit to announce.
        limit: WireLimit,
        /// Keep the connection alive until then.
        expires: Instant,
    },
    /// Answer a RESERVE with a refusal.
    DenyReservation {
        /// The request.
        request: ReserveRequest<Stream>,
        /// The status to send.
        status: Status,
    },
    /// The reservation over this connection ended; stop keeping the connection alive for it.
    ReservationEnded,
    /// Open a stop stream to this connection's peer for a session from `source`.
    OpenStop {
        /// The session.
        session: SessionId,
        /// The session's source.
        source: PeerId,
        /// The limit to announce.
        limit: WireLimit,
    },
    /// Answer a CONNECT with OK and start relaying.
    AcceptConnect {
        /// The session.
        session: SessionId,
        /// The request (the source's stream).
        request: ConnectRequest<Stream>,
        /// The limit to announce.
        limit: WireLimit,
        /// The target's stream.
        target: Stream,
        /// Bytes the target sent early.
        target_pending: Bytes,
        /// Counters and controls shared with the behaviour.
        shared: Arc<SessionShared>,
    },
    /// Answer a CONNECT with a refusal.
    DenyConnect {
        /// The request.
        request: ConnectRequest<Stream>,
        /// The status to send.
        status: Status,
    },
}

/// Events to the behaviour.
#[derive(Debug)]
pub enum Event {
    /// A peer asked for a reservation.
    ReserveRequested(ReserveRequest<Stream>),
    /// A peer asked for a circuit.
    ConnectRequested(ConnectRequest<Stream>),
    /// A hop request was rejected before any decision.
    BadRequest(String),
    /// The target accepted the circuit.
    StopAccepted {
        /// The session.
        session: SessionId,
        /// The target's stream.
        stream: Stream,
        /// Bytes the target sent early.
        pending: Bytes,
    },
    /// The target refused the circuit, or could not be asked.
    StopFailed {
        /// The session.
        session: SessionId,
        /// What went wrong.
        error: String,
    },
    /// The source got its OK; the session relays.
    SessionStarted(SessionId),
    /// The session ended (or could not start).
    SessionEnded {
        /// The session.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
}

type StopInfo = (SessionId, PeerId, WireLimit);

/// The relay's [`ConnectionHandler`].
pub struct Handler {
    config: HandlerConfig,
    inbound: futures_bounded::FuturesSet<Result<HopRequest<Stream>, HopError>>,
    replies: futures_bounded::FuturesSet<io::Result<()>>,
    stops: futures_bounded::FuturesMap<SessionId, Result<(Stream, Bytes), StopError>>,
    accepting: futures_bounded::FuturesMap<SessionId, io::Result<StartParts>>,
    circuits: FuturesUnordered<BoxFuture<'static, (SessionId, CloseReason)>>,
    outbound_requests: VecDeque<StopInfo>,
    events: VecDeque<Event>,
    reservation_until: Option<Instant>,
}

/// What a session needs once the source has its OK.
struct StartParts {
    source: Stream,
    source_pending: Bytes,
    target: Stream,
    target_pending: Bytes,
    shared: Arc<SessionShared>,
}

impl Handler {
    pub(crate) fn new(config: HandlerConfig) -> Self {
        let timeout = config.stream_timeout;
        let delay = move || futures_bounded::Delay::futures_timer(timeout);
        let capacity = config.max_pending_streams;
        Handler {
            config,
            inbound: futures_bounded::FuturesSet::new(delay, capacity),
            replies: futures_bounded::FuturesSet::new(delay, capacity * 2),
            stops: futures_bounded::FuturesMap::new(delay, capacity * 4),
            accepting: futures_bounded::FuturesMap::new(delay, capacity * 4),
            circuits: FuturesUnordered::new(),
            outbound_requests: VecDeque::new(),
            events: VecDeque::new(),
            reservation_until: None,
        }
    }

    fn push_reply(
        &mut self,
        reply: impl std::future::Future<Output = io::Result<()>> + Send + 'static,
    ) {
        if self.replies.try_push(reply).is_err() {
            tracing::debug!("dropping a hop answer: too many answers in flight on this connection");
        }
    }

    fn on_behaviour_command(&mut self, command: In) {
        match command {
            In::AcceptReservation {
                request,
                reservation,
                limit,
                expires,
            } => {
                self.reservation_until = Some(expires);
                self.push_reply(request.accept(reservation, limit));
            }
            In::DenyReservation { request, status } => self.push_reply(request.deny(status)),
            In::ReservationEnded => self.reservation_until = None,
            In::OpenStop {
                session,
                source,
                limit,
            } => self.outbound_requests.push_back((session, source, limit)),
            In::AcceptConnect {
                session,
                request,
                limit,
                target,
                target_pending,
                shared,
            } => {
                let accept = async move {
                    let (source, source_pending) = request.accept(limit).await?;
                    Ok(StartParts {
                        source,
                        source_pending,
                        target,
                        target_pending,
                        shared,
                    })
                };
                if self.accepting.try_push(session, accept).is_err() {
                    self.events.push_back(Event::SessionEnded {
                        session,
                        reason: CloseReason::StreamError {
                            side: crate::Side::Source,
                            error: "too many circuits starting on this connection".into(),
                        },
                    });
                }
            }
            In::DenyConnect { request, status } => self.push_reply(request.deny(status)),
        }
    }

    fn on_hop_stream(&mut self, stream: Stream) {
        if self
            .inbound
            .try_push(inbound_hop::read_request(stream))
            .is_err()
        {
            // Logged by the core, within its log budget.
            self.events.push_back(Event::BadRequest(
                "too many concurrent hop streams on one connection".into(),
            ));
        }
    }

    fn on_stop_stream(
        &mut self,
        stream: Stream,
        session: SessionId,
        source: PeerId,
        limit: WireLimit,
    ) {
        if self
            .stops
            .try_push(session, outbound_stop::connect(stream, source, limit))
            .is_err()
        {
            self.events.push_back(Event::StopFailed {
                session,
                error: "too many stop requests in flight on the target's connection".into(),
            });
        }
    }

    fn start_circuit(&mut self, session: SessionId, parts: StartParts) {
        let copy = CopyFuture::new(
            parts.source,
            &parts.source_pending,
            parts.target,
            &parts.target_pending,
            parts.shared,
            self.config.copy_buffer_size,
        );
        self.circuits
            .push(copy.map(move |reason| (session, reason)).boxed());
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = In;
    type ToBehaviour = Event;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = StopInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(HOP_PROTOCOL), ())
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        self.on_behaviour_command(event);
    }

    fn connection_keep_alive(&self) -> bool {
        self.reservation_until.is_some_and(|t| t > Instant::now())
            || !self.circuits.is_empty()
            || !self.stops.is_empty()
            || !self.accepting.is_empty()
            || !self.outbound_requests.is_empty()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, StopInfo, Self::ToBehaviour>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }

        if let Poll::Ready(Some((session, reason))) = self.circuits.poll_next_unpin(cx) {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                Event::SessionEnded { session, reason },
            ));
        }

        if let Poll::Ready((session, result)) = self.accepting.poll_unpin(cx) {
            let event = match result {
                Ok(Ok(parts)) => {
                    self.start_circuit(session, parts);
                    Event::SessionStarted(session)
                }
                Ok(Err(e)) => Event::SessionEnded {
                    session,
                    reason: CloseReason::StreamError {
                        side: crate::Side::Source,
                        error: format!("sending OK to the source failed: {e}"),
                    },
                },
                Err(timeout) => Event::SessionEnded {
                    session,
                    reason: CloseReason::StreamError {
                        side: crate::Side::Source,
                        error: format!("sending OK to the source: {timeout}"),
                    },
                },
            };
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }

        if let Poll::Ready((session, result)) = self.stops.poll_unpin(cx) {
            let event = match result {
                Ok(Ok((stream, pending))) => Event::StopAccepted {
                    session,
                    stream,
                    pending,
                },
                Ok(Err(error)) => Event::StopFailed {
                    session,
                    error: error.to_string(),
                },
                Err(timeout) => Event::StopFailed {
                    session,
                    error: format!("target did not answer: {timeout}"),
                },
            };
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }

        if let Poll::Ready(result) = self.inbound.poll_unpin(cx) {
            let event = match result {
                Ok(Ok(HopRequest::Reserve(request))) => Event::ReserveRequested(request),
                Ok(Ok(HopRequest::Connect(request))) => Event::ConnectRequested(request),
                Ok(Err(error)) => Event::BadRequest(error.to_string()),
                Err(timeout) => Event::BadRequest(format!("hop stream sent no request: {timeout}")),
            };
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }

        while let Poll::Ready(result) = self.replies.poll_unpin(cx) {
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!("sending a hop answer failed: {e}"),
                Err(timeout) => tracing::debug!("sending a hop answer: {timeout}"),
            }
        }

        if let Some(info) = self.outbound_requests.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest {
                protocol: SubstreamProtocol::new(ReadyUpgrade::new(STOP_PROTOCOL), info)
                    .with_timeout(self.config.stream_timeout),
            });
        }

        Poll::Pending
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol, (), StopInfo>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => self.on_hop_stream(stream),
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                info: (session, source, limit),
            }) => self.on_stop_stream(stream, session, source, limit),
            ConnectionEvent::DialUpgradeError(DialUpgradeError {
                info: (session, _, _),
                error,
            }) => {
                let error = match error {
                    StreamUpgradeError::Timeout => "opening the stop stream timed out".to_owned(),
                    StreamUpgradeError::NegotiationFailed => {
                        "target does not support the stop protocol".to_owned()
                    }
                    StreamUpgradeError::Io(e) => format!("opening the stop stream failed: {e}"),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                self.events.push_back(Event::StopFailed { session, error });
            }
            _ => {}
        }
    }
}
