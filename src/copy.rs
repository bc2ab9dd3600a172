//! The circuit copy future: the relay's hot path.
//!
//! Bytes walk source stream -> one fixed buffer -> target stream (and back in the other
//! direction's buffer). Per chunk: at most one token-bucket check, one counter add, two atomic
//! loads (limits changed? close requested?). No allocation after construction, no lock, no
//! busy polling: a throttled direction sleeps on one timer until its tokens are due.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::{atomic::Ordering::Relaxed, Arc},
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use futures::{AsyncRead, AsyncWrite};
use futures_timer::Delay;

use crate::{
    session::shared::{CloseRequest, SessionShared},
    throttle::TokenBucket,
    CloseReason, Side,
};

/// One direction of a circuit: a reader, a writer and the buffer between them.
struct Direction {
    /// Starts at [`SLOW_START_CHUNK`] and is replaced once by one of `full_size` bytes after
    /// [`SLOW_START_BYTES`] (see [`Direction::grow_after_slow_start`]).
    buf: Box<[u8]>,
    full_size: usize,
    start: usize,
    end: usize,
    /// Bytes read so far (for the data cap).
    read_total: u64,
    bucket: Option<TokenBucket>,
    /// The throttle's timer, allocated on the first pause and re-armed after.
    timer: Option<Delay>,
    /// Whether `timer` is armed for the current pause.
    waiting: bool,
    /// Whether the last read filled all it was offered: the reader has more queued than the
    /// throttle lets through, so wait for a batch of tokens rather than read crumbs.
    saturated: bool,
    needs_flush: bool,
    read_done: bool,
    done: bool,
    reader: Side,
}

/// What stopped a direction early.
enum Stop {
    DataCap,
    Io(Side, io::Error),
}

impl Direction {
    fn new(buffer_size: usize, pending: &[u8], reader: Side) -> Self {
        let initial = buffer_size.min(SLOW_START_CHUNK).max(pending.len());
        let mut buf = vec![0u8; initial].into_boxed_slice();
        buf[..pending.len()].copy_from_slice(pending);
        Direction {
            buf,
            full_size: buffer_size,
            start: 0,
            end: pending.len(),
            read_total: pending.len() as u64,
            bucket: None,
            timer: None,
            waiting: false,
            saturated: false,
            needs_flush: false,
            read_done: false,
            done: false,
            reader,
        }
    }

    fn writer(&self) -> Side {
        match self.reader {
            Side::Source => Side::Target,
            Side::Target => Side::Source,
        }
    }

    fn set_bandwidth(&mut self, bandwidth: Option<u64>, now: Instant) {
        match (bandwidth, self.bucket.as_mut()) {
            (None, _) => self.bucket = None,
            (Some(rate), Some(bucket)) => bucket.set_rate(rate, now),
            (Some(rate), None) => self.bucket = Some(TokenBucket::new(rate, now)),
        }
        self.waiting = false;
    }

    /// Moves bytes from `reader` to `writer` until both would block, or the direction ends
    /// (`Ready(Ok)` once the reader hit EOF and the writer is closed). Counts them, and its
    /// throttle pauses, in `shared`.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
        shared: &SessionShared,
        data_cap: Option<u64>,
    ) -> Poll<Result<(), Stop>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        let counter = match self.reader {
            Side::Source => &shared.source_to_target,
            Side::Target => &shared.target_to_source,
        };
        loop {
            while self.start < self.end {
                let written = match writer
                    .as_mut()
                    .poll_write(cx, &self.buf[self.start..self.end])
                {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(Stop::Io(
                            self.writer(),
                            io::ErrorKind::WriteZero.into(),
                        )))
                    }
                    Poll::Ready(Ok(n)) => n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Stop::Io(self.writer(), e))),
                    Poll::Pending => return Poll::Pending,
                };
                self.start += written;
                self.needs_flush = true;
                counter.fetch_add(written as u64, Relaxed);
            }
            if self.read_done {
                return match writer.as_mut().poll_close(cx) {
                    Poll::Ready(Ok(())) => {
                        self.done = true;
                        Poll::Ready(Ok(()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(Stop::Io(self.writer(), e))),
                    Poll::Pending => Poll::Pending,
                };
            }

            self.grow_after_slow_start();
            // How much may be read: buffer size, then data cap, then throttle.
            let mut max = self.buf.len();
            let mut probing_cap = false;
            if let Some(cap) = data_cap {
                let left = cap.saturating_sub(self.read_total);
                if left == 0 {
                    // At the cap: one more byte from the reader means it went over.
                    probing_cap = true;
                    max = 1;
                } else {
                    max = max.min(usize::try_from(left).unwrap_or(usize::MAX));
                }
            }
            if let (Some(bucket), false) = (self.bucket.as_mut(), probing_cap) {
                let now = Instant::now();
                let available = bucket.available(now);
                let batch = throttle_batch(bucket.burst());
                // A reader that keeps up with the rate is read a full buffer at a time, in
                // batches of `batch` tokens per timer wake-up: no read of the few bytes that
                // trickled in since the last one (at 50 MB/s that dribble cost 7x the CPU per
                // byte of an unthrottled session). Other readers take whatever is available.
                let enough = if self.saturated {
                    available >= batch.min(max as u64)
                } else {
                    available > 0
                };
                if !enough {
                    if !self.waiting {
                        let want = if self.saturated { batch } else { max as u64 };
                        let wait = bucket.wait_for(want, now);
                        shared.record_pause(self.reader, duration_nanos(wait));
                        // One timer per direction, re-armed: no allocation per pause.
                        match self.timer.as_mut() {
                            Some(timer) => timer.reset(wait),
                            None => self.timer = Some(Delay::new(wait)),
                        }
                        self.waiting = true;
                    }
                    if let Some(timer) = self.timer.as_mut() {
                        if Pin::new(timer).poll(cx).is_pending() {
                            return self.flush_then_pending(cx, writer);
                        }
                    }
                    self.waiting = false;
                    continue;
                }
                self.waiting = false;
                max = max.min(usize::try_from(available).unwrap_or(usize::MAX));
            }

            let n = match reader.as_mut().poll_read(cx, &mut self.buf[..max]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Stop::Io(self.reader, e))),
                Poll::Pending => return self.flush_then_pending(cx, writer),
            };
            if n == 0 {
                self.read_done = true;
                continue;
            }
            if probing_cap {
                return Poll::Ready(Err(Stop::DataCap));
            }
            if let Some(bucket) = self.bucket.as_mut() {
                bucket.consume(n as u64);
                self.saturated = n == max;
            }
            self.read_total += n as u64;
            self.start = 0;
            self.end = n;
        }
    }

    /// Swaps the small first buffer for the full one once the direction has carried
    /// [`SLOW_START_BYTES`]: called only with the buffer drained, so nothing is copied, and at
    /// most once per direction.
    fn grow_after_slow_start(&mut self) {
        if self.buf.len() < self.full_size && self.read_total >= SLOW_START_BYTES {
            debug_assert_eq!(self.start, self.end, "grown only when drained");
            self.buf = vec![0u8; self.full_size].into_boxed_slice();
            self.start = 0;
            self.end = 0;
        }
    }

    fn flush_then_pending<W: AsyncWrite + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        writer: Pin<&mut W>,
    ) -> Poll<Result<(), Stop>> {
        if self.needs_flush {
            match writer.poll_flush(cx) {
                Poll::Ready(Ok(())) => self.needs_flush = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Stop::Io(self.writer(), e))),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

/// Size of each direction's first buffer: a direction reads (and its writer sends on) at most
/// this much at a time until it has carried [`SLOW_START_BYTES`].
///
/// Most circuits carry little (hole-punch coordination, requests, sessions parked behind a slow
/// reader), and the frame size a relay writes sets how far the muxer's and noise's buffers of
/// both connections grow, and stay grown: 16 KiB chunks grow them by about 50 KiB per session
/// (BENCHMARKS.md, section 10). A bulk transfer earns the full buffer
/// ([`ConfigBuilder::copy_buffer_size`](crate::ConfigBuilder::copy_buffer_size)) after its first
/// mebibyte, which it needs to reach its best CPU per byte.
const SLOW_START_CHUNK: usize = 4 * 1024;

/// Bytes a direction carries in [`SLOW_START_CHUNK`]s before it gets its full buffer.
const SLOW_START_BYTES: u64 = 1 << 20;

/// Most bytes a throttled direction waits to accumulate before it reads again.
///
/// Half the bucket, so a timer firing late loses no tokens (the bucket holds twice that), and
/// at most 128 KiB, so the pause (128 KiB / rate) stays short next to the time a sender needs to
/// fill its flow-control window (yamux starts at 256 KiB): a fast throttled session never
/// stalls on it. At 1 MB/s that is one wake-up per 125 KB instead of one per buffer.
const MAX_THROTTLE_BATCH: u64 = 128 * 1024;

fn throttle_batch(burst: u64) -> u64 {
    (burst / 2).clamp(1, MAX_THROTTLE_BATCH)
}

fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Relays one session until both directions finish, a limit ends it, or its owner closes it.
pub(crate) struct CopyFuture<S> {
    source: S,
    target: S,
    to_target: Direction,
    to_source: Direction,
    shared: Arc<SessionShared>,
    started: Instant,
    timeout: Option<(Duration, Delay)>,
    data_cap: Option<u64>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> CopyFuture<S> {
    /// `source_pending` / `target_pending` are bytes each side sent before the circuit was up
    /// (read past the protocol messages); they are relayed first.
    pub(crate) fn new(
        source: S,
        source_pending: &[u8],
        target: S,
        target_pending: &[u8],
        shared: Arc<SessionShared>,
        buffer_size: usize,
    ) -> Self {
        let mut future = CopyFuture {
            source,
            target,
            to_target: Direction::new(buffer_size, source_pending, Side::Source),
            to_source: Direction::new(buffer_size, target_pending, Side::Target),
            shared,
            started: Instant::now(),
            timeout: None,
            data_cap: None,
        };
        future.load_limits();
        future
    }

    fn load_limits(&mut self) {
        let limits = self.shared.limits();
        let now = Instant::now();
        // Each direction runs at the smaller of the session's limit and its node-wide share.
        for direction in [&mut self.to_target, &mut self.to_source] {
            let share = self.shared.node_share(direction.reader);
            let rate = match (limits.bandwidth, share) {
                (Some(limit), Some(share)) => Some(limit.min(share)),
                (limit, share) => limit.or(share),
            };
            direction.set_bandwidth(rate, now);
        }
        self.data_cap = limits.data;
        let unchanged =
            matches!((&self.timeout, limits.duration), (Some((old, _)), Some(new)) if *old == new);
        if !unchanged {
            self.timeout = limits.duration.map(|d| {
                let left = d.saturating_sub(self.started.elapsed());
                (d, Delay::new(left))
            });
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Future for CopyFuture<S> {
    type Output = CloseReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let this = self.get_mut();
        this.shared.register(cx.waker());
        match this.shared.close_requested() {
            Some(CloseRequest::Owner) => return Poll::Ready(CloseReason::ClosedByOwner),
            Some(CloseRequest::Drained) => return Poll::Ready(CloseReason::Drained),
            Some(CloseRequest::TargetGone) => return Poll::Ready(CloseReason::ConnectionClosed),
            None => {}
        }
        if this.shared.take_limits_changed() {
            this.load_limits();
        }
        if let Some((_, delay)) = this.timeout.as_mut() {
            if Pin::new(delay).poll(cx).is_ready() {
                return Poll::Ready(CloseReason::Timeout);
            }
        }

        let up = this.to_target.poll_copy(
            cx,
            Pin::new(&mut this.source),
            Pin::new(&mut this.target),
            &this.shared,
            this.data_cap,
        );
        let down = this.to_source.poll_copy(
            cx,
            Pin::new(&mut this.target),
            Pin::new(&mut this.source),
            &this.shared,
            this.data_cap,
        );
        for result in [&up, &down] {
            match result {
                Poll::Ready(Err(Stop::DataCap)) => return Poll::Ready(CloseReason::DataCapReached),
                Poll::Ready(Err(Stop::Io(side, e))) => {
                    return Poll::Ready(CloseReason::StreamError {
                        side: *side,
                        error: e.to_string(),
                    })
                }
                _ => {}
            }
        }
        ready!(up).ok();
        ready!(down).ok();
        Poll::Ready(CloseReason::Completed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionLimits;
    use futures::{
        executor::block_on,
        io::{AsyncReadExt, AsyncWriteExt},
    };

    /// An in-memory stream pair: what one end writes, the other reads.
    fn pipe() -> (Duplex, Duplex) {
        let (a_read, b_write) = sluice::pipe::pipe();
        let (b_read, a_write) = sluice::pipe::pipe();
        (
            Duplex {
                read: a_read,
                write: a_write,
            },
            Duplex {
                read: b_read,
                write: b_write,
            },
        )
    }

    struct Duplex {
        read: sluice::pipe::PipeReader,
        write: sluice::pipe::PipeWriter,
    }

    impl AsyncRead for Duplex {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.read).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Duplex {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.write).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.write).poll_flush(cx)
        }
        fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.write).poll_close(cx)
        }
    }

    fn shared(limits: SessionLimits) -> Arc<SessionShared> {
        Arc::new(SessionShared::new(limits))
    }

    /// Runs `copy` while `client_a` sends `data` (in `chunk`-sized writes) and closes, and
    /// `client_b` reads to the end and closes: how the session ended and what `client_b` got.
    fn one_way<S: AsyncRead + AsyncWrite + Unpin>(
        copy: CopyFuture<S>,
        client_a: Duplex,
        data: &[u8],
        chunk: usize,
        client_b: Duplex,
    ) -> (CloseReason, Vec<u8>) {
        let ((reason, got), ()) = one_way_with(copy, client_a, data, chunk, client_b, async {});
        (reason, got)
    }

    /// [`one_way`], with `alongside` run to its end at the same time; also returns its output.
    fn one_way_with<S: AsyncRead + AsyncWrite + Unpin, T>(
        copy: CopyFuture<S>,
        mut client_a: Duplex,
        data: &[u8],
        chunk: usize,
        mut client_b: Duplex,
        alongside: impl Future<Output = T>,
    ) -> ((CloseReason, Vec<u8>), T) {
        let a = async {
            for piece in data.chunks(chunk.max(1)) {
                client_a.write_all(piece).await.unwrap();
            }
            client_a.close().await.unwrap();
            let mut sink = Vec::new();
            client_a.read_to_end(&mut sink).await.unwrap();
        };
        let b = async {
            let mut got = Vec::new();
            client_b.read_to_end(&mut got).await.unwrap();
            client_b.close().await.unwrap();
            got
        };
        let (reason, (), got, out) = block_on(async { futures::join!(copy, a, b, alongside) });
        ((reason, got), out)
    }

    #[test]
    fn relays_both_ways_with_pending_bytes_first_and_counts() {
        let (mut client_a, relay_a) = pipe();
        let (mut client_b, relay_b) = pipe();
        let shared = shared(SessionLimits::UNLIMITED);
        let copy = CopyFuture::new(
            relay_a,
            b"early-a ",
            relay_b,
            b"early-b ",
            shared.clone(),
            64,
        );
        let run = async {
            let a = async {
                client_a.write_all(&[1u8; 1000]).await.unwrap();
                client_a.close().await.unwrap();
                let mut got = Vec::new();
                client_a.read_to_end(&mut got).await.unwrap();
                got
            };
            let b = async {
                client_b.write_all(&[2u8; 500]).await.unwrap();
                client_b.close().await.unwrap();
                let mut got = Vec::new();
                client_b.read_to_end(&mut got).await.unwrap();
                got
            };
            futures::join!(copy, a, b)
        };
        let (reason, got_a, got_b) = block_on(run);
        assert_eq!(reason, CloseReason::Completed);
        assert_eq!(&got_b[..8], b"early-a ");
        assert_eq!(got_b.len(), 1008);
        assert_eq!(&got_a[..8], b"early-b ");
        assert_eq!(got_a.len(), 508);
        assert_eq!(shared.bytes(), (1008, 508));
    }

    #[test]
    fn data_cap_counts_each_direction_and_ends_the_session_when_exceeded() {
        let (mut client_a, relay_a) = pipe();
        let (mut client_b, relay_b) = pipe();
        let limits = SessionLimits {
            data: Some(100),
            ..SessionLimits::UNLIMITED
        };
        let shared = shared(limits);
        let copy = CopyFuture::new(relay_a, b"", relay_b, b"", shared.clone(), 64);
        let run = async {
            let a = async {
                // Exactly the cap is fine; the 101st byte is not.
                let _ = client_a.write_all(&[1u8; 101]).await;
            };
            let b = async {
                let mut got = vec![0u8; 100];
                let _ = client_b.read_exact(&mut got).await;
                // The other direction has its own 100-byte budget.
                let _ = client_b.write_all(&[2u8; 100]).await;
            };
            futures::join!(copy, a, b).0
        };
        assert_eq!(block_on(run), CloseReason::DataCapReached);
        assert_eq!(shared.bytes().0, 100);
    }

    #[test]
    fn owner_close_ends_an_idle_session() {
        let (_client_a, relay_a) = pipe();
        let (_client_b, relay_b) = pipe();
        let shared = shared(SessionLimits::UNLIMITED);
        let copy = CopyFuture::new(relay_a, b"", relay_b, b"", shared.clone(), 64);
        let closer = async {
            futures_timer::Delay::new(Duration::from_millis(20)).await;
            shared.request_close(CloseRequest::Owner);
        };
        let (reason, ()) = block_on(async { futures::join!(copy, closer) });
        assert_eq!(reason, CloseReason::ClosedByOwner);
    }

    #[test]
    fn timeout_ends_an_idle_session() {
        let (_client_a, relay_a) = pipe();
        let (_client_b, relay_b) = pipe();
        let limits = SessionLimits {
            duration: Some(Duration::from_millis(30)),
            ..SessionLimits::UNLIMITED
        };
        let copy = CopyFuture::new(relay_a, b"", relay_b, b"", shared(limits), 64);
        assert_eq!(block_on(copy), CloseReason::Timeout);
    }

    /// Records the size of every read that returned data.
    struct Counting {
        inner: Duplex,
        reads: Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let result = Pin::new(&mut self.inner).poll_read(cx, buf);
            if let Poll::Ready(Ok(n)) = result {
                if n > 0 {
                    self.reads.lock().unwrap().push(n);
                }
            }
            result
        }
    }

    impl AsyncWrite for Counting {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.inner).poll_write(cx, buf)
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_close(cx)
        }
    }

    /// Wraps both relay ends in [`Counting`]; the sizes of `relay_a`'s reads are returned.
    #[allow(clippy::type_complexity)]
    fn count_reads_of_a(
        relay_a: Duplex,
        relay_b: Duplex,
    ) -> (Counting, Counting, Arc<std::sync::Mutex<Vec<usize>>>) {
        let reads = Arc::new(std::sync::Mutex::new(Vec::new()));
        let relay_a = Counting {
            inner: relay_a,
            reads: reads.clone(),
        };
        let relay_b = Counting {
            inner: relay_b,
            reads: Arc::new(std::sync::Mutex::new(Vec::new())),
        };
        (relay_a, relay_b, reads)
    }

    #[test]
    fn a_direction_reads_small_chunks_until_its_first_mebibyte_then_its_full_buffer() {
        let (client_a, relay_a) = pipe();
        let (client_b, relay_b) = pipe();
        let (relay_a, relay_b, reads) = count_reads_of_a(relay_a, relay_b);
        const FULL: usize = 64 * 1024;
        const N: usize = 3 << 20;
        let unlimited = shared(SessionLimits::UNLIMITED);
        let copy = CopyFuture::new(relay_a, b"", relay_b, b"", unlimited, FULL);
        let data: Vec<u8> = (0..N).map(|i| (i % 251) as u8).collect();
        let (reason, got) = one_way(copy, client_a, &data, FULL, client_b);
        assert_eq!(reason, CloseReason::Completed);
        assert!(got == data, "the bytes arrived changed");
        let reads = reads.lock().unwrap();
        let mut carried = 0u64;
        let (mut first, mut after) = (0, 0);
        for &n in reads.iter() {
            if carried < SLOW_START_BYTES {
                first = first.max(n);
            } else {
                after = after.max(n);
            }
            carried += n as u64;
        }
        assert!(
            first <= SLOW_START_CHUNK,
            "a read of {first} bytes in the first MiB"
        );
        assert!(
            after > SLOW_START_CHUNK,
            "no read above {SLOW_START_CHUNK} bytes after it (largest {after})"
        );
    }

    #[test]
    fn pending_bytes_larger_than_the_first_buffer_are_relayed_whole() {
        let (client_a, relay_a) = pipe();
        let (client_b, relay_b) = pipe();
        let pending: Vec<u8> = (0..3 * SLOW_START_CHUNK).map(|i| (i % 253) as u8).collect();
        let unlimited = shared(SessionLimits::UNLIMITED);
        let copy = CopyFuture::new(relay_a, &pending, relay_b, b"", unlimited, 16 * 1024);
        let (reason, got) = one_way(copy, client_a, b"", 1, client_b);
        assert_eq!(reason, CloseReason::Completed);
        assert_eq!(got, pending);
    }

    /// A relay-side stream end that returns short reads and writes (sizes cycled from `caps`)
    /// and, every `pending_every`-th call, `Pending` once (waking itself), as a muxer under load
    /// does.
    struct Choppy {
        inner: Duplex,
        caps: Vec<usize>,
        calls: usize,
        pending_every: usize,
    }

    impl Choppy {
        /// How much this call may move, or `None` for a spurious `Pending`.
        fn next_cap(&mut self, cx: &mut Context<'_>) -> Option<usize> {
            self.calls += 1;
            if self.calls % self.pending_every == 0 {
                cx.waker().wake_by_ref();
                return None;
            }
            Some(self.caps[self.calls % self.caps.len()])
        }
    }

    impl AsyncRead for Choppy {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<io::Result<usize>> {
            let Some(cap) = self.next_cap(cx) else {
                return Poll::Pending;
            };
            let n = buf.len().min(cap);
            Pin::new(&mut self.inner).poll_read(cx, &mut buf[..n])
        }
    }

    impl AsyncWrite for Choppy {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let Some(cap) = self.next_cap(cx) else {
                return Poll::Pending;
            };
            let n = buf.len().min(cap);
            Pin::new(&mut self.inner).poll_write(cx, &buf[..n])
        }
        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
        fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_close(cx)
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 16, ..Default::default() })]

        /// Whatever the chunking, the spurious wake-ups, the buffer size and whether a direction
        /// outgrows its slow start mid-stream: both directions arrive whole, in order, counted.
        #[test]
        fn choppy_streams_relay_every_byte_both_ways_across_the_slow_start(
            // Tiny buffers and chunks with little data, or real ones with data that crosses
            // the slow start (1 MiB) or stays below it.
            (up_len, down_len, buffer_size, caps) in proptest::prop_oneof![
                (0usize..6_000, 0usize..3_000, 1usize..64, proptest::collection::vec(1usize..100, 1..6)),
                (
                    proptest::prop_oneof![0usize..20_000, 1_050_000usize..1_150_000],
                    0usize..100_000,
                    4096usize..70_000,
                    proptest::collection::vec(512usize..40_000, 1..6),
                ),
            ],
            pending in proptest::prelude::any::<[u8; 3]>(),
            pending_every in 3usize..9,
            seed in proptest::prelude::any::<u8>(),
        ) {
            let up: Vec<u8> = (0..up_len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let down: Vec<u8> = (0..down_len).map(|i| (i as u8).wrapping_add(seed)).collect();
            let (mut client_a, relay_a) = pipe();
            let (client_b, relay_b) = pipe();
            let choppy = |inner| Choppy { inner, caps: caps.clone(), calls: 0, pending_every };
            let shared = shared(SessionLimits::UNLIMITED);
            let copy = CopyFuture::new(
                choppy(relay_a),
                &pending,
                choppy(relay_b),
                b"",
                shared.clone(),
                buffer_size,
            );
            let a = async {
                client_a.write_all(&up).await.unwrap();
                client_a.close().await.unwrap();
                let mut got = Vec::new();
                client_a.read_to_end(&mut got).await.unwrap();
                got
            };
            let Duplex { read: mut b_read, write: mut b_write } = client_b;
            let b_reads = async {
                let mut got = Vec::new();
                b_read.read_to_end(&mut got).await.unwrap();
                got
            };
            let b_writes = async {
                b_write.write_all(&down).await.unwrap();
                b_write.close().await.unwrap();
            };
            let b = async { futures::join!(b_reads, b_writes).0 };
            let (reason, got_a, got_b) = block_on(async { futures::join!(copy, a, b) });
            proptest::prop_assert_eq!(reason, CloseReason::Completed);
            let mut expected_b = pending.to_vec();
            expected_b.extend_from_slice(&up);
            proptest::prop_assert!(got_b == expected_b, "source to target changed");
            proptest::prop_assert!(got_a == down, "target to source changed");
            proptest::prop_assert_eq!(
                shared.bytes(),
                (expected_b.len() as u64, down.len() as u64)
            );
        }
    }

    #[test]
    fn a_saturating_throttled_reader_is_read_in_full_buffers_not_crumbs() {
        let (client_a, relay_a) = pipe();
        let (client_b, relay_b) = pipe();
        let (relay_a, relay_b, reads) = count_reads_of_a(relay_a, relay_b);
        let limits = SessionLimits {
            bandwidth: Some(1_000_000),
            ..SessionLimits::UNLIMITED
        };
        const N: usize = 200_000;
        const BUF: usize = 4096;
        let copy = CopyFuture::new(relay_a, b"", relay_b, b"", shared(limits), BUF);
        let (reason, received) = one_way(copy, client_a, &[7u8; N], N, client_b);
        assert_eq!(reason, CloseReason::Completed);
        assert_eq!(received.len(), N);
        // Tokens trickle in continuously; reading them as they come would mean thousands of
        // tiny reads. Once the reader saturates the throttle, every read is a full buffer (the
        // first ones, before it does, and the last one may be shorter).
        let reads = reads.lock().unwrap();
        let crumbs = reads.iter().filter(|&&n| n < BUF).count();
        assert!(
            reads.len() <= N / BUF + 8 && crumbs <= 8,
            "{} reads, {crumbs} shorter than the buffer: {:?}",
            reads.len(),
            &reads[..reads.len().min(40)]
        );
    }

    #[test]
    fn the_node_share_throttles_each_direction_and_a_new_share_applies_at_once() {
        let (client_a, relay_a) = pipe();
        let (client_b, relay_b) = pipe();
        // No limit of its own; a node-wide share of 1 kB/s from source to target.
        let shared = shared(SessionLimits::UNLIMITED);
        shared.set_node_share(Side::Source, Some(1_000));
        let copy = CopyFuture::new(relay_a, b"", relay_b, b"", shared.clone(), 4096);
        let raiser = {
            let shared = shared.clone();
            async move {
                // At 1 kB/s the 30 kB would take 30 s; the larger share frees them at once.
                futures_timer::Delay::new(Duration::from_millis(300)).await;
                assert!(shared.pauses(Side::Source) > 0);
                assert_eq!(shared.pauses(Side::Target), 0);
                assert!(shared.bytes().0 < 1_000);
                shared.set_node_share(Side::Source, Some(100_000_000));
                shared.pauses(Side::Source)
            }
        };
        let ((reason, received), pauses_at_raise) =
            one_way_with(copy, client_a, &[7u8; 30_000], 30_000, client_b, raiser);
        assert_eq!(reason, CloseReason::Completed);
        assert_eq!(received.len(), 30_000);
        // Under the new share the rest went through without waiting for tokens (at most the
        // wait in progress when the share changed).
        assert!(shared.pauses(Side::Source) <= pauses_at_raise + 1);
    }

    #[test]
    fn the_smaller_of_the_session_limit_and_the_node_share_applies() {
        let limits = SessionLimits {
            bandwidth: Some(5_000),
            ..SessionLimits::UNLIMITED
        };
        let shared = shared(limits);
        shared.set_node_share(Side::Source, Some(1_000_000));
        shared.set_node_share(Side::Target, Some(2_000));
        let (_a, relay_a) = pipe();
        let (_b, relay_b) = pipe();
        let copy = CopyFuture::new(relay_a, b"", relay_b, b"", shared, 64);
        let rate = |d: &Direction| d.bucket.as_ref().map(TokenBucket::rate);
        assert_eq!(rate(&copy.to_target), Some(5_000));
        assert_eq!(rate(&copy.to_source), Some(2_000));
    }

    #[test]
    fn throttled_session_is_held_to_its_rate() {
        let (client_a, relay_a) = pipe();
        let (client_b, relay_b) = pipe();
        let limits = SessionLimits {
            bandwidth: Some(100_000),
            ..SessionLimits::UNLIMITED
        };
        let shared = shared(limits);
        let copy = CopyFuture::new(relay_a, b"", relay_b, b"", shared.clone(), 4096);
        let started = Instant::now();
        let (reason, received) = one_way(copy, client_a, &[7u8; 30_000], 30_000, client_b);
        assert_eq!(reason, CloseReason::Completed);
        assert_eq!(received.len(), 30_000);
        // 30 kB at 100 kB/s from an empty bucket takes at least 0.3 s (a lower bound only).
        assert!(started.elapsed() >= Duration::from_millis(290));
        assert!(shared.throttled_nanos.load(Relaxed) > 0);
    }
}
