//! The interop transfer protocol `/macula-interop/transfer/1.0.0`, also used by the js and py
//! peers under `interop/`:
//!
//! 1. The dialer writes an 8-byte big-endian length `N`, then `N` payload bytes.
//! 2. The listener reads `N`, then at the same time reads the dialer's `N` bytes and writes `N`
//!    payload bytes of its own.
//! 3. Each side, once it has sent its `N` bytes and received the peer's `N`, writes the 32-byte
//!    sha256 of what it received, then reads the peer's hash and compares it with the sha256 of
//!    what it sent.
//!
//! Payload: the concatenation of `sha256(seed || counter_be64)` for counter = 0, 1, 2, ...,
//! truncated to `N`; the seed is `b"dialer"` for the dialer and `b"listener"` for the listener.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use sha2::{Digest, Sha256};

/// The protocol id.
pub const TRANSFER_PROTOCOL: StreamProtocol = StreamProtocol::new("/macula-interop/transfer/1.0.0");

const CHUNK: usize = 64 * 1024;

/// Deterministic payload bytes.
pub struct Payload {
    seed: &'static [u8],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl Payload {
    pub fn new(seed: &'static [u8]) -> Self {
        Self { seed, counter: 0, block: [0; 32], used: 32 }
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for byte in out.iter_mut() {
            if self.used == 32 {
                let mut h = Sha256::new();
                h.update(self.seed);
                h.update(self.counter.to_be_bytes());
                self.block = h.finalize().into();
                self.counter += 1;
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
    }
}

/// Result of one transfer, seen from one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub sent: u64,
    pub received: u64,
    /// Whether the peer's hash of what it received equals the hash of what we sent.
    pub peer_got_what_we_sent: bool,
    /// sha256 of what we received.
    pub received_hash: [u8; 32],
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, n: u64, seed: &'static [u8]) -> std::io::Result<[u8; 32]> {
    let mut payload = Payload::new(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = n;
    while left > 0 {
        let len = left.min(CHUNK as u64) as usize;
        payload.fill(&mut buf[..len]);
        hash.update(&buf[..len]);
        w.write_all(&buf[..len]).await?;
        left -= len as u64;
    }
    w.flush().await?;
    Ok(hash.finalize().into())
}

async fn receive<R: AsyncRead + Unpin>(r: &mut R, n: u64) -> std::io::Result<[u8; 32]> {
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = n;
    while left > 0 {
        let len = left.min(CHUNK as u64) as usize;
        r.read_exact(&mut buf[..len]).await?;
        hash.update(&buf[..len]);
        left -= len as u64;
    }
    Ok(hash.finalize().into())
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    n: u64,
    seed: &'static [u8],
) -> std::io::Result<Outcome> {
    let (mut r, mut w) = stream.split();
    let (sent_hash, received_hash) = futures::try_join!(send(&mut w, n, seed), receive(&mut r, n))?;
    w.write_all(&received_hash).await?;
    w.flush().await?;
    let mut peer_hash = [0u8; 32];
    r.read_exact(&mut peer_hash).await?;
    let _ = w.close().await;
    Ok(Outcome {
        sent: n,
        received: n,
        peer_got_what_we_sent: peer_hash == sent_hash,
        received_hash,
    })
}

/// Runs the dialer's side: sends `n` bytes, receives `n`.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, n: u64) -> std::io::Result<Outcome> {
    stream.write_all(&n.to_be_bytes()).await?;
    exchange(stream, n, b"dialer").await
}

/// Runs the listener's side of one stream.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> std::io::Result<Outcome> {
    let mut len = [0u8; 8];
    stream.read_exact(&mut len).await?;
    exchange(stream, u64::from_be_bytes(len), b"listener").await
}

/// sha256 of the first `n` payload bytes of `seed`.
pub fn expected_hash(seed: &'static [u8], n: u64) -> [u8; 32] {
    let mut payload = Payload::new(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = n;
    while left > 0 {
        let len = left.min(CHUNK as u64) as usize;
        payload.fill(&mut buf[..len]);
        hash.update(&buf[..len]);
        left -= len as u64;
    }
    hash.finalize().into()
}
