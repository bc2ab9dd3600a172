//! The relay's side of `/libp2p/circuit/relay/0.2.0/hop`: read one request (RESERVE or CONNECT),
//! then answer it. Bad requests are answered here, with the spec's status, before the stream is
//! closed.

use std::io;

use asynchronous_codec::{Framed, FramedParts};
use bytes::Bytes;
use futures::{AsyncRead, AsyncWrite, SinkExt, StreamExt};
use libp2p::PeerId;

use super::{
    codec,
    proto::{self, HopMessage, HopMessageType},
    Status, WireLimit,
};

/// A request read from a hop stream.
#[derive(Debug)]
pub enum HopRequest<S> {
    /// `RESERVE`.
    Reserve(ReserveRequest<S>),
    /// `CONNECT` to `target`.
    Connect(ConnectRequest<S>),
}

/// Why a hop request was rejected before it reached the relay's logic.
#[derive(Debug, thiserror::Error)]
pub enum HopError {
    /// The stream ended (or failed) before a complete message arrived.
    #[error("stream closed before a request arrived: {0}")]
    Closed(io::Error),
    /// Not a decodable `HopMessage`, or longer than the maximum size; answered `MALFORMED_MESSAGE`.
    #[error("malformed hop message: {0}")]
    Malformed(String),
    /// A message of the wrong type (e.g. `STATUS`); answered `UNEXPECTED_MESSAGE`.
    #[error("unexpected hop message type {0}")]
    UnexpectedType(i32),
    /// A `CONNECT` without a valid target peer id; answered `MALFORMED_MESSAGE`.
    #[error("CONNECT without a valid target peer id")]
    InvalidTarget,
}

impl HopError {
    /// The status sent back for this error, if any.
    pub fn status(&self) -> Option<Status> {
        match self {
            HopError::Closed(_) => None,
            HopError::Malformed(_) | HopError::InvalidTarget => Some(Status::MalformedMessage),
            HopError::UnexpectedType(_) => Some(Status::UnexpectedMessage),
        }
    }
}

type HopFramed<S> = Framed<S, prost_codec::Codec<HopMessage>>;

/// Reads the first message of an inbound hop stream. On a bad request the spec's status is sent
/// back (best effort) and the stream is closed before the error is returned.
pub async fn read_request<S>(stream: S) -> Result<HopRequest<S>, HopError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(stream, codec::<HopMessage>());
    let message = match framed.next().await {
        None => return Err(HopError::Closed(io::ErrorKind::UnexpectedEof.into())),
        Some(Err(e)) => {
            let e: io::Error = e.into();
            let error = if e.kind() == io::ErrorKind::InvalidData {
                HopError::Malformed(e.to_string())
            } else {
                HopError::Closed(e)
            };
            return Err(reject(framed, error).await);
        }
        Some(Ok(message)) => message,
    };
    // A proto3 encoder leaves out a zero-valued type, and RESERVE is 0.
    let kind = message.r#type.unwrap_or(HopMessageType::Reserve as i32);
    match HopMessageType::try_from(kind) {
        Ok(HopMessageType::Reserve) => Ok(HopRequest::Reserve(ReserveRequest {
            framed: Box::new(framed),
        })),
        Ok(HopMessageType::Connect) => {
            let target = message
                .peer
                .and_then(|p| p.id)
                .and_then(|id| PeerId::from_bytes(&id).ok());
            match target {
                Some(target) => Ok(HopRequest::Connect(ConnectRequest {
                    framed: Box::new(framed),
                    target,
                })),
                None => Err(reject(framed, HopError::InvalidTarget).await),
            }
        }
        Ok(HopMessageType::Status) | Err(_) => {
            Err(reject(framed, HopError::UnexpectedType(kind)).await)
        }
    }
}

async fn reject<S>(mut framed: HopFramed<S>, error: HopError) -> HopError
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(status) = error.status() {
        // Best effort: the peer may already be gone.
        let _ = send_status(&mut framed, status, None, WireLimit::default()).await;
        let _ = framed.close().await;
    }
    error
}

async fn send_status<S>(
    framed: &mut HopFramed<S>,
    status: Status,
    reservation: Option<proto::Reservation>,
    limit: WireLimit,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    framed
        .send(HopMessage {
            r#type: Some(HopMessageType::Status as i32),
            peer: None,
            reservation,
            limit: limit.to_proto(),
            status: Some(status as i32),
        })
        .await
        .map_err(Into::into)
}

/// A `RESERVE` waiting for the relay's decision.
///
/// The stream is boxed, here and in [`ConnectRequest`]: requests travel inside the handler's
/// messages, and the largest message sets the size of every connection's task.
#[derive(Debug)]
pub struct ReserveRequest<S> {
    framed: Box<HopFramed<S>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ReserveRequest<S> {
    /// Answers `OK` with the reservation and the limit that applies to this peer's circuits.
    pub async fn accept(
        mut self,
        reservation: proto::Reservation,
        limit: WireLimit,
    ) -> io::Result<()> {
        send_status(&mut self.framed, Status::Ok, Some(reservation), limit).await?;
        self.framed.close().await.map_err(Into::into)
    }

    /// Answers with a refusal `status`.
    pub async fn deny(mut self, status: Status) -> io::Result<()> {
        send_status(&mut self.framed, status, None, WireLimit::default()).await?;
        self.framed.close().await.map_err(Into::into)
    }
}

/// A `CONNECT` waiting for the relay's decision.
#[derive(Debug)]
pub struct ConnectRequest<S> {
    framed: Box<HopFramed<S>>,
    target: PeerId,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ConnectRequest<S> {
    /// The peer the source wants to reach.
    pub fn target(&self) -> PeerId {
        self.target
    }

    /// Answers `OK` with the circuit's limit; returns the stream, now the source's end of the
    /// circuit, and any bytes the source already sent after its request.
    pub async fn accept(mut self, limit: WireLimit) -> io::Result<(S, Bytes)> {
        send_status(&mut self.framed, Status::Ok, None, limit).await?;
        let FramedParts {
            io, read_buffer, ..
        } = (*self.framed).into_parts();
        Ok((io, read_buffer.freeze()))
    }

    /// Answers with a refusal `status` and closes the stream.
    pub async fn deny(mut self, status: Status) -> io::Result<()> {
        send_status(&mut self.framed, status, None, WireLimit::default()).await?;
        self.framed.close().await.map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::scripted_stream::ScriptedStream as Duplex;
    use futures::executor::block_on;
    use prost::Message;

    fn framed(message: &HopMessage) -> Vec<u8> {
        message.encode_length_delimited_to_vec()
    }

    fn reply_status(output: &[u8]) -> Option<i32> {
        HopMessage::decode_length_delimited(output).ok()?.status
    }

    #[test]
    fn reserve_request_is_recognised() {
        let input = framed(&HopMessage {
            r#type: Some(HopMessageType::Reserve as i32),
            ..Default::default()
        });
        let request = block_on(read_request(Duplex::new(input))).unwrap();
        assert!(matches!(request, HopRequest::Reserve(_)));
    }

    #[test]
    fn missing_type_reads_as_reserve_like_proto3_default() {
        let input = framed(&HopMessage::default());
        let request = block_on(read_request(Duplex::new(input))).unwrap();
        assert!(matches!(request, HopRequest::Reserve(_)));
    }

    #[test]
    fn connect_request_carries_target_and_keeps_trailing_bytes() {
        let target = PeerId::random();
        let mut input = framed(&HopMessage {
            r#type: Some(HopMessageType::Connect as i32),
            peer: Some(proto::Peer {
                id: Some(target.to_bytes()),
                addrs: vec![],
            }),
            ..Default::default()
        });
        input.extend_from_slice(b"early data");
        let HopRequest::Connect(request) = block_on(read_request(Duplex::new(input))).unwrap()
        else {
            panic!("expected CONNECT");
        };
        assert_eq!(request.target(), target);
        let (duplex, pending) = block_on(request.accept(WireLimit::default())).unwrap();
        assert_eq!(&pending[..], b"early data");
        assert_eq!(reply_status(&duplex.output), Some(Status::Ok as i32));
    }

    #[test]
    fn connect_without_peer_is_answered_malformed() {
        let input = framed(&HopMessage {
            r#type: Some(HopMessageType::Connect as i32),
            ..Default::default()
        });
        let error = block_on(read_request(Duplex::new(input))).unwrap_err();
        assert!(matches!(error, HopError::InvalidTarget));
    }

    #[test]
    fn garbage_protobuf_is_malformed() {
        // Length 3, then bytes that are not a valid protobuf message (field 0 is invalid).
        let error = block_on(read_request(Duplex::new(vec![3, 0, 0, 0]))).unwrap_err();
        assert!(matches!(error, HopError::Malformed(_)), "{error:?}");
        assert_eq!(error.status(), Some(Status::MalformedMessage));
    }

    #[test]
    fn oversized_message_is_malformed() {
        let mut input = Vec::new();
        let mut buf = unsigned_varint_len(super::super::MAX_MESSAGE_SIZE + 1);
        input.append(&mut buf);
        input.extend(std::iter::repeat_n(0u8, 16));
        let error = block_on(read_request(Duplex::new(input))).unwrap_err();
        assert!(matches!(error, HopError::Malformed(_)), "{error:?}");
    }

    #[test]
    fn status_message_is_unexpected() {
        let input = framed(&HopMessage {
            r#type: Some(HopMessageType::Status as i32),
            status: Some(Status::Ok as i32),
            ..Default::default()
        });
        let error = block_on(read_request(Duplex::new(input))).unwrap_err();
        assert!(matches!(error, HopError::UnexpectedType(2)));
        assert_eq!(error.status(), Some(Status::UnexpectedMessage));
    }

    #[test]
    fn unknown_type_is_unexpected() {
        let input = framed(&HopMessage {
            r#type: Some(42),
            ..Default::default()
        });
        let error = block_on(read_request(Duplex::new(input))).unwrap_err();
        assert!(matches!(error, HopError::UnexpectedType(42)));
    }

    #[test]
    fn empty_stream_is_closed_without_reply() {
        let error = block_on(read_request(Duplex::new(vec![]))).unwrap_err();
        assert!(matches!(error, HopError::Closed(_)));
        assert_eq!(error.status(), None);
    }

    fn unsigned_varint_len(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return out;
            }
            out.push(byte | 0x80);
        }
    }
}
