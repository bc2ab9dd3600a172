//! The record fetch protocol, `/macula/relay-record/1.0.0`: a client asks a relay for its
//! current signed record (provider-record mode, where the DHT only says who the relays are).
//! One request, one response, each a varint-length-prefixed protobuf message.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use prost::Message;

use super::{config::MAX_RECORD_BYTES, proto};

/// The protocol name.
pub const FETCH_PROTOCOL: StreamProtocol = StreamProtocol::new("/macula/relay-record/1.0.0");

/// Largest message accepted: a record plus framing.
const MAX_MESSAGE: usize = MAX_RECORD_BYTES + 256;

/// The request: the namespace whose record is wanted.
pub type FetchRequest = proto::FetchRequest;
/// The response: the signed record, if any.
pub type FetchResponse = proto::FetchResponse;

/// The [`request_response::Codec`](libp2p::request_response::Codec) of the fetch protocol.
#[derive(Clone, Copy, Debug, Default)]
pub struct FetchCodec;

async fn read_message<M: Message + Default, T: AsyncRead + Unpin + Send>(
    io: &mut T,
) -> io::Result<M> {
    let mut len: u64 = 0;
    for i in 0..10 {
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await?;
        len |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            break;
        }
        if i == 9 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "length varint too long",
            ));
        }
    }
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "message too large",
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    M::decode(buf.as_slice()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_message<M: Message, T: AsyncWrite + Unpin + Send>(
    io: &mut T,
    message: M,
) -> io::Result<()> {
    let bytes = message.encode_length_delimited_to_vec();
    io.write_all(&bytes).await?;
    io.close().await
}

impl libp2p::request_response::Codec for FetchCodec {
    type Protocol = StreamProtocol;
    type Request = FetchRequest;
    type Response = FetchResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<FetchRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<FetchResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: FetchRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: FetchResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_message(io, res).await
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;
    use libp2p::request_response::Codec;

    use super::*;

    #[test]
    fn messages_round_trip_length_prefixed() {
        futures::executor::block_on(async {
            let mut codec = FetchCodec;
            let mut buf = Cursor::new(Vec::new());
            let response = FetchResponse {
                envelope: Some(vec![1, 2, 3]),
            };
            codec
                .write_response(&FETCH_PROTOCOL, &mut buf, response.clone())
                .await
                .unwrap();
            let mut read = Cursor::new(buf.into_inner());
            let back = codec
                .read_response(&FETCH_PROTOCOL, &mut read)
                .await
                .unwrap();
            assert_eq!(back, response);
        });
    }

    #[test]
    fn oversized_messages_are_refused() {
        futures::executor::block_on(async {
            // Varint for 1 MiB, then nothing.
            let mut read = Cursor::new(vec![0x80, 0x80, 0x40]);
            let error = FetchCodec
                .read_request(&FETCH_PROTOCOL, &mut read)
                .await
                .unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        });
    }
}
