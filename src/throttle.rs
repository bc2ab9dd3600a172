//! Byte-granular token bucket, free of I/O: the caller passes the clock.
//!
//! The copy loop asks [`TokenBucket::available`] how many bytes it may read now, reads at most
//! that many, reports them with [`TokenBucket::consume`], and when nothing is available sleeps for
//! [`TokenBucket::wait_for`] — one timer per throttled pause, never a busy poll. Because the
//! reader stops reading, the yamux / QUIC flow-control window pushes back on the sender and no
//! byte is dropped.

use std::time::{Duration, Instant};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// The bucket's depth as a fraction of the rate: 250 ms worth of bytes. Deep enough that a timer
/// firing a few milliseconds late costs no throughput and that a throttled session wakes up
/// rarely (the copy loop reads half a bucket per wake-up: 8 a second at any rate up to 1 MB/s),
/// shallow enough to keep the rate smooth over a second.
const BURST_DIVISOR: u64 = 4;

/// A token bucket counting bytes, refilled continuously at `rate` bytes per second up to
/// [`throttle_burst`] bytes. It starts empty, so a long transfer's average rate is the
/// configured rate, without an initial burst.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: u64,
    burst: u64,
    tokens: u64,
    /// Refill not yet worth a whole byte, in byte-nanoseconds.
    carry: u128,
    last: Instant,
}

impl TokenBucket {
    /// A bucket for `rate` bytes per second (must be non-zero), empty at `now`.
    pub fn new(rate: u64, now: Instant) -> Self {
        let rate = rate.max(1);
        Self {
            rate,
            burst: throttle_burst(rate),
            tokens: 0,
            carry: 0,
            last: now,
        }
    }

    /// The rate, bytes per second.
    #[cfg(test)]
    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// The bucket's depth in bytes.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Changes the rate from `now` on; tokens earned so far are kept (up to the new burst).
    pub fn set_rate(&mut self, rate: u64, now: Instant) {
        self.refill(now);
        self.rate = rate.max(1);
        self.burst = throttle_burst(self.rate);
        self.tokens = self.tokens.min(self.burst);
    }

    /// Bytes that may pass now.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.tokens
    }

    /// Records that `bytes` passed (at most what [`available`](Self::available) returned).
    pub fn consume(&mut self, bytes: u64) {
        self.tokens = self.tokens.saturating_sub(bytes);
    }

    /// How long until `min(want, burst)` bytes are available (zero if they already are).
    pub fn wait_for(&mut self, want: u64, now: Instant) -> Duration {
        self.refill(now);
        let want = want.clamp(1, self.burst);
        if self.tokens >= want {
            return Duration::ZERO;
        }
        let missing = u128::from(want - self.tokens) * NANOS_PER_SEC - self.carry;
        let nanos = missing.div_ceil(u128::from(self.rate));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        self.last = self.last.max(now);
        if self.tokens >= self.burst {
            self.carry = 0;
            return;
        }
        let earned = elapsed * u128::from(self.rate) + self.carry;
        let whole = earned / NANOS_PER_SEC;
        self.carry = earned % NANOS_PER_SEC;
        let room = u128::from(self.burst - self.tokens);
        if whole >= room {
            self.tokens = self.burst;
            self.carry = 0;
        } else {
            // `whole < room <= u64::MAX`, so the cast is lossless.
            self.tokens += whole as u64;
        }
    }
}

/// The depth of a throttled direction's token bucket at `rate` bytes per second: the most
/// bytes it moves beyond `rate × elapsed` over any stretch of time (a quarter of a second's worth,
/// at least 1 byte). The bucket starts empty.
pub fn throttle_burst(rate: u64) -> u64 {
    (rate / BURST_DIVISOR).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_empty_so_there_is_no_initial_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1_000, t0);
        assert_eq!(bucket.available(t0), 0);
    }

    #[test]
    fn refills_at_the_rate_byte_for_byte() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1_000, t0);
        assert_eq!(bucket.available(t0 + ms(50)), 50);
        bucket.consume(50);
        assert_eq!(bucket.available(t0 + ms(51)), 1);
    }

    #[test]
    fn fractional_refill_is_carried_not_lost() {
        let t0 = Instant::now();
        // 3 bytes/s: 1 byte every 333.3 ms. 30 steps of 100 ms must yield 9 bytes, not 0.
        let mut bucket = TokenBucket::new(30, t0); // burst 7
        let mut passed = 0;
        for step in 1..=30 {
            let now = t0 + ms(100 * step);
            let n = bucket.available(now);
            bucket.consume(n);
            passed += n;
        }
        assert_eq!(passed, 90);
    }

    #[test]
    fn never_holds_more_than_the_burst() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1_000_000, t0);
        assert_eq!(bucket.burst(), 250_000);
        assert_eq!(bucket.available(t0 + Duration::from_secs(60)), 250_000);
    }

    #[test]
    fn long_run_rate_is_exact() {
        let t0 = Instant::now();
        let rate = 1_048_576;
        let mut bucket = TokenBucket::new(rate, t0);
        let mut now = t0;
        let mut passed = 0u64;
        // A reader wanting 16 KiB chunks, sleeping exactly as told, for 10 simulated seconds.
        while now < t0 + Duration::from_secs(10) {
            let avail = bucket.available(now);
            if avail == 0 {
                now += bucket.wait_for(16 * 1024, now);
                continue;
            }
            let n = avail.min(16 * 1024);
            bucket.consume(n);
            passed += n;
        }
        let elapsed = now.duration_since(t0).as_secs_f64();
        let measured = passed as f64 / elapsed;
        let error = (measured - rate as f64).abs() / rate as f64;
        assert!(error < 0.002, "measured {measured} B/s, error {error}");
    }

    #[test]
    fn wait_for_is_the_time_to_earn_the_missing_bytes() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1_000, t0);
        assert_eq!(bucket.wait_for(10, t0), ms(10));
        // Never asks to wait for more than the burst.
        assert_eq!(bucket.wait_for(1_000_000, t0), ms(250));
        assert_eq!(bucket.wait_for(10, t0 + ms(10)), Duration::ZERO);
    }

    #[test]
    fn rate_change_applies_from_now_on() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1_000, t0);
        bucket.set_rate(10_000, t0 + ms(10)); // earned 10 bytes at the old rate
        assert_eq!(bucket.available(t0 + ms(10)), 10);
        assert_eq!(bucket.available(t0 + ms(20)), 110);
    }

    #[test]
    fn a_clock_going_backwards_earns_nothing() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut bucket = TokenBucket::new(1_000, t0);
        assert_eq!(bucket.available(t0 - ms(500)), 0);
        assert_eq!(bucket.available(t0 + ms(5)), 5);
    }
}
