//! The interop transfer protocol `/macula-interop/transfer/1.0.0`, shared with the js and py
//! peers under `interop/` (specified in `interop/js/README.md`):
//!
//! 1. The dialer sends a 16-byte header: `up: u64`, `down: u64` (big-endian).
//! 2. At the same time the dialer sends `up` bytes of `PRNG(UP_SEED)` and the listener sends
//!    `down` bytes of `PRNG(DOWN_SEED)`.
//! 3. A side that has sent all its bytes and received all the peer's sends the 32-byte sha256 of
//!    what it received, then closes its write half.
//! 4. Each side reads the peer's hash, expects EOF, and checks the hash against what it sent.
//!
//! `PRNG(seed)`: xorshift32 (`x ^= x << 13; x ^= x >> 17; x ^= x << 5`), each word emitted as 4
//! little-endian bytes, cut at N bytes.

use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use sha2::{Digest, Sha256};

/// The protocol id.
pub const TRANSFER_PROTOCOL: StreamProtocol = StreamProtocol::new("/macula-interop/transfer/1.0.0");
/// Seed of the dialer's bytes.
pub const UP_SEED: u32 = 0x9E37_79B9;
/// Seed of the listener's bytes.
pub const DOWN_SEED: u32 = 0x7F4A_7C15;

const CHUNK: usize = 64 * 1024;

/// Deterministic payload bytes.
pub struct Prng {
    x: u32,
    word: [u8; 4],
    used: usize,
}

impl Prng {
    pub fn new(seed: u32) -> Self {
        Self {
            x: seed,
            word: [0; 4],
            used: 4,
        }
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for byte in out.iter_mut() {
            if self.used == 4 {
                self.x ^= self.x << 13;
                self.x ^= self.x >> 17;
                self.x ^= self.x << 5;
                self.word = self.x.to_le_bytes();
                self.used = 0;
            }
            *byte = self.word[self.used];
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

async fn send<W: AsyncWrite + Unpin>(w: &mut W, n: u64, seed: u32) -> std::io::Result<[u8; 32]> {
    let mut prng = Prng::new(seed);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = n;
    while left > 0 {
        let len = left.min(CHUNK as u64) as usize;
        prng.fill(&mut buf[..len]);
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
    send_n: u64,
    send_seed: u32,
    receive_n: u64,
) -> std::io::Result<Outcome> {
    let (mut r, mut w) = stream.split();
    let (sent_hash, received_hash) =
        futures::try_join!(send(&mut w, send_n, send_seed), receive(&mut r, receive_n))?;
    w.write_all(&received_hash).await?;
    w.close().await?;
    let mut peer_hash = [0u8; 32];
    r.read_exact(&mut peer_hash).await?;
    Ok(Outcome {
        sent: send_n,
        received: receive_n,
        peer_got_what_we_sent: peer_hash == sent_hash,
        received_hash,
    })
}

/// The slowest rate a transfer in these tests may run at (the lowest bandwidth limit a test sets
/// is 256 KiB/s per direction, so this leaves a margin of 4 for a loaded machine).
const SLOWEST_RATE: u64 = 64 * 1024;
/// Set-up allowance of every transfer (stream negotiation, the last hashes).
const TRANSFER_SLACK: Duration = Duration::from_secs(60);

/// How long a transfer of `up` and `down` bytes may take before it counts as hung: the
/// slower direction at [`SLOWEST_RATE`], plus [`TRANSFER_SLACK`].
pub fn deadline(up: u64, down: u64) -> Duration {
    TRANSFER_SLACK + Duration::from_secs(up.max(down) / SLOWEST_RATE)
}

/// Fails with `TimedOut` naming the transfer if `exchange` does not finish by its deadline.
async fn bounded(
    side: &str,
    up: u64,
    down: u64,
    exchange: impl std::future::Future<Output = std::io::Result<Outcome>>,
) -> std::io::Result<Outcome> {
    let limit = deadline(up, down);
    tokio::time::timeout(limit, exchange).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{side} of a transfer ({up} B up, {down} B down) did not finish within {limit:?}"),
        ))
    })
}

/// Runs the dialer's side: sends `up` bytes, receives `down`; fails after [`deadline`].
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    up: u64,
    down: u64,
) -> std::io::Result<Outcome> {
    bounded("the dialer's side", up, down, async move {
        let mut header = [0u8; 16];
        header[..8].copy_from_slice(&up.to_be_bytes());
        header[8..].copy_from_slice(&down.to_be_bytes());
        stream.write_all(&header).await?;
        exchange(stream, up, UP_SEED, down).await
    })
    .await
}

/// Runs the listener's side of one stream; fails if the header does not come within
/// [`TRANSFER_SLACK`] or the transfer does not finish by its [`deadline`].
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> std::io::Result<Outcome> {
    let mut header = [0u8; 16];
    tokio::time::timeout(TRANSFER_SLACK, stream.read_exact(&mut header))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no transfer header within {TRANSFER_SLACK:?}"),
            )
        })??;
    let up = u64::from_be_bytes(header[..8].try_into().unwrap());
    let down = u64::from_be_bytes(header[8..].try_into().unwrap());
    bounded(
        "the listener's side",
        up,
        down,
        exchange(stream, down, DOWN_SEED, up),
    )
    .await
}

/// sha256 of the first `n` bytes of `PRNG(seed)`.
pub fn expected_hash(seed: u32, n: u64) -> [u8; 32] {
    futures::executor::block_on(send(&mut futures::io::sink(), n, seed))
        .expect("a sink accepts all")
}
