//! The relay's side of `/libp2p/circuit/relay/0.2.0/stop`: ask the target to accept a circuit
//! from `source`, and wait for its answer.

use std::io;

use asynchronous_codec::{Framed, FramedParts};
use bytes::Bytes;
use futures::{AsyncRead, AsyncWrite, SinkExt, StreamExt};
use libp2p::PeerId;

use super::{
    codec,
    proto::{self, StopMessage, StopMessageType},
    Status, WireLimit,
};

/// Why the target did not accept the circuit.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// The target answered with a non-OK status.
    #[error("target refused the circuit with {0}")]
    Refused(Status),
    /// The target's answer was not a valid `StopMessage` STATUS.
    #[error("target sent an invalid answer: {0}")]
    Protocol(String),
    /// The stream failed or closed before an answer arrived.
    #[error("stop stream failed: {0}")]
    Io(#[from] io::Error),
}

/// Sends `CONNECT` from `source` with `limit` and waits for the target's `STATUS`. On `OK`, returns
/// the stream, now the target's end of the circuit, and any bytes the target already sent.
pub async fn connect<S>(
    stream: S,
    source: PeerId,
    limit: WireLimit,
) -> Result<(S, Bytes), StopError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(stream, codec::<StopMessage>());
    framed
        .send(StopMessage {
            r#type: Some(StopMessageType::Connect as i32),
            peer: Some(proto::Peer {
                id: Some(source.to_bytes()),
                addrs: vec![],
            }),
            limit: limit.to_proto(),
            status: None,
        })
        .await
        .map_err(io::Error::from)?;
    let answer = match framed.next().await {
        None => return Err(StopError::Io(io::ErrorKind::UnexpectedEof.into())),
        Some(Err(e)) => {
            let e: io::Error = e.into();
            if e.kind() == io::ErrorKind::InvalidData {
                return Err(StopError::Protocol(e.to_string()));
            }
            return Err(StopError::Io(e));
        }
        Some(Ok(answer)) => answer,
    };
    if answer.r#type != Some(StopMessageType::Status as i32) {
        return Err(StopError::Protocol(format!(
            "expected STATUS, got type {:?}",
            answer.r#type
        )));
    }
    match answer.status.map(Status::try_from) {
        Some(Ok(Status::Ok)) => {}
        Some(Ok(status)) => return Err(StopError::Refused(status)),
        Some(Err(_)) | None => {
            return Err(StopError::Protocol(format!(
                "missing or unknown status {:?}",
                answer.status
            )))
        }
    }
    let FramedParts {
        io, read_buffer, ..
    } = framed.into_parts();
    Ok((io, read_buffer.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::scripted_stream::ScriptedStream;
    use futures::executor::block_on;
    use prost::Message;

    fn run(answer: Vec<u8>) -> Result<Bytes, StopError> {
        block_on(connect(
            ScriptedStream::new(answer),
            PeerId::random(),
            WireLimit::default(),
        ))
        .map(|(_, b)| b)
    }

    fn status(status: Status) -> Vec<u8> {
        StopMessage {
            r#type: Some(StopMessageType::Status as i32),
            status: Some(status as i32),
            ..Default::default()
        }
        .encode_length_delimited_to_vec()
    }

    #[test]
    fn ok_answer_opens_circuit_with_early_bytes() {
        let mut answer = status(Status::Ok);
        answer.extend_from_slice(b"hello");
        assert_eq!(&run(answer).unwrap()[..], b"hello");
    }

    #[test]
    fn refusal_is_reported_with_its_status() {
        let error = run(status(Status::ConnectionFailed)).unwrap_err();
        assert!(matches!(
            error,
            StopError::Refused(Status::ConnectionFailed)
        ));
    }

    #[test]
    fn connect_instead_of_status_is_a_protocol_error() {
        let answer = StopMessage {
            r#type: Some(StopMessageType::Connect as i32),
            ..Default::default()
        }
        .encode_length_delimited_to_vec();
        assert!(matches!(run(answer).unwrap_err(), StopError::Protocol(_)));
    }

    #[test]
    fn silence_then_eof_is_an_io_error() {
        assert!(matches!(run(vec![]).unwrap_err(), StopError::Io(_)));
    }
}
