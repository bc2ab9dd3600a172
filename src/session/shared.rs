//! The state a session's copy loop shares with the behaviour: byte counters, live limits and the
//! close signal. Atomics only: the copy loop touches a few of them once per chunk, never per byte,
//! and no event is sent per chunk.

use std::{
    sync::atomic::{
        AtomicBool, AtomicU64, AtomicU8,
        Ordering::{Acquire, Relaxed, Release},
    },
    time::Duration,
};

use futures::task::AtomicWaker;

use crate::{SessionLimits, Side};

/// Why a session is asked to end (by its owner, a drain, or its target's connection closing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CloseRequest {
    /// `close_session`.
    Owner = 1,
    /// The drain deadline after `disable` passed.
    Drained = 2,
    /// The target's connection closed. Its stream, held by the source's copy loop, may never
    /// fail by itself (a peer that vanished silently, its connection closed by the ping
    /// timeout), so the circuit is reset rather than left half open.
    TargetGone = 3,
}

/// Counters and controls of one live session (crate-internal; appears in handler commands).
#[derive(Debug, Default)]
pub struct SessionShared {
    /// Bytes delivered from source to target.
    pub(crate) source_to_target: AtomicU64,
    /// Bytes delivered from target to source.
    pub(crate) target_to_source: AtomicU64,
    /// Time the copy loop spent waiting for the throttle, in nanoseconds.
    pub(crate) throttled_nanos: AtomicU64,
    /// Times each direction (source to target, target to source) paused for its throttle: the
    /// node-wide allocator's "held back" signal.
    pauses: [AtomicU64; 2],
    /// Each direction's share of the node-wide bandwidth, bytes per second; 0 = none (no
    /// node-wide limit). The copy loop's rate is the smaller of it and the session's limit.
    node_share: [AtomicU64; 2],
    bandwidth: AtomicU64,
    data_cap: AtomicU64,
    timeout_millis: AtomicU64,
    limits_changed: AtomicBool,
    close: AtomicU8,
    waker: AtomicWaker,
}

impl SessionShared {
    pub(crate) fn new(limits: SessionLimits) -> Self {
        let shared = SessionShared::default();
        shared.store_limits(limits);
        shared.limits_changed.store(false, Relaxed);
        shared
    }

    /// Sets new limits and wakes the copy loop so they take effect at once.
    pub(crate) fn set_limits(&self, limits: SessionLimits) {
        self.store_limits(limits);
        self.waker.wake();
    }

    fn store_limits(&self, limits: SessionLimits) {
        self.bandwidth.store(limits.bandwidth.unwrap_or(0), Relaxed);
        self.data_cap.store(limits.data.unwrap_or(0), Relaxed);
        let millis = limits
            .duration
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
            .unwrap_or(0);
        self.timeout_millis.store(millis, Relaxed);
        // Release: a copy loop that sees the flag (Acquire) sees the values stored above.
        self.limits_changed.store(true, Release);
    }

    /// The current limits.
    pub(crate) fn limits(&self) -> SessionLimits {
        let nonzero = |v: u64| (v > 0).then_some(v);
        SessionLimits {
            bandwidth: nonzero(self.bandwidth.load(Relaxed)),
            data: nonzero(self.data_cap.load(Relaxed)),
            duration: nonzero(self.timeout_millis.load(Relaxed)).map(Duration::from_millis),
        }
    }

    /// Whether limits changed since the last call (for the copy loop).
    pub(crate) fn take_limits_changed(&self) -> bool {
        self.limits_changed.load(Relaxed) && self.limits_changed.swap(false, Acquire)
    }

    /// Records that the direction read by `reader` paused `nanos` for its throttle.
    pub(crate) fn record_pause(&self, reader: Side, nanos: u64) {
        self.throttled_nanos.fetch_add(nanos, Relaxed);
        self.pauses[index(reader)].fetch_add(1, Relaxed);
    }

    /// Throttle pauses so far of the direction read by `reader`.
    pub(crate) fn pauses(&self, reader: Side) -> u64 {
        self.pauses[index(reader)].load(Relaxed)
    }

    /// Bytes delivered so far by the direction read by `reader`.
    pub(crate) fn moved(&self, reader: Side) -> u64 {
        match reader {
            Side::Source => self.source_to_target.load(Relaxed),
            Side::Target => self.target_to_source.load(Relaxed),
        }
    }

    /// The session's own bandwidth limit (bytes per second and direction), if any.
    pub(crate) fn bandwidth(&self) -> Option<u64> {
        Some(self.bandwidth.load(Relaxed)).filter(|b| *b > 0)
    }

    /// The node-wide share of the direction read by `reader`, if one is set.
    pub(crate) fn node_share(&self, reader: Side) -> Option<u64> {
        Some(self.node_share[index(reader)].load(Relaxed)).filter(|s| *s > 0)
    }

    /// Sets (or with `None` removes) the node-wide share of the direction read by `reader`
    /// (at least 1 byte per second); when it changed, wakes the copy loop so it applies at once.
    pub(crate) fn set_node_share(&self, reader: Side, share: Option<u64>) {
        let value = share.map_or(0, |s| s.max(1));
        if self.node_share[index(reader)].swap(value, Relaxed) != value {
            // Release: a copy loop that sees the flag (Acquire) sees the share stored above.
            self.limits_changed.store(true, Release);
            self.waker.wake();
        }
    }

    /// Asks the copy loop to end the session.
    pub(crate) fn request_close(&self, why: CloseRequest) {
        let _ = self.close.compare_exchange(0, why as u8, Relaxed, Relaxed);
        self.waker.wake();
    }

    /// The pending close request, if any.
    pub(crate) fn close_requested(&self) -> Option<CloseRequest> {
        match self.close.load(Relaxed) {
            0 => None,
            1 => Some(CloseRequest::Owner),
            2 => Some(CloseRequest::Drained),
            _ => Some(CloseRequest::TargetGone),
        }
    }

    /// Registers the copy loop's waker.
    pub(crate) fn register(&self, waker: &std::task::Waker) {
        self.waker.register(waker);
    }

    /// Time the copy loop has spent waiting for the throttle.
    pub(crate) fn throttled(&self) -> Duration {
        Duration::from_nanos(self.throttled_nanos.load(Relaxed))
    }

    /// Bytes relayed so far: (source to target, target to source).
    pub(crate) fn bytes(&self) -> (u64, u64) {
        (
            self.source_to_target.load(Relaxed),
            self.target_to_source.load(Relaxed),
        )
    }
}

/// The slot of the direction read by `reader`.
fn index(reader: Side) -> usize {
    match reader {
        Side::Source => 0,
        Side::Target => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip_and_flag_changes() {
        let limits = SessionLimits {
            bandwidth: Some(5),
            duration: Some(Duration::from_secs(3)),
            data: None,
        };
        let shared = SessionShared::new(limits);
        assert_eq!(shared.limits(), limits);
        assert!(!shared.take_limits_changed());
        shared.set_limits(SessionLimits::UNLIMITED);
        assert!(shared.take_limits_changed());
        assert!(!shared.take_limits_changed());
        assert_eq!(shared.limits(), SessionLimits::UNLIMITED);
    }

    #[test]
    fn node_shares_are_per_direction_and_flag_only_changes() {
        let shared = SessionShared::new(SessionLimits::UNLIMITED);
        assert_eq!(shared.node_share(Side::Source), None);
        shared.set_node_share(Side::Source, Some(500));
        assert!(shared.take_limits_changed());
        assert_eq!(shared.node_share(Side::Source), Some(500));
        assert_eq!(shared.node_share(Side::Target), None);
        // The same share again changes nothing: no wake-up for the copy loop.
        shared.set_node_share(Side::Source, Some(500));
        assert!(!shared.take_limits_changed());
        // A zero share is one byte per second, not "no limit".
        shared.set_node_share(Side::Target, Some(0));
        assert_eq!(shared.node_share(Side::Target), Some(1));
        shared.set_node_share(Side::Source, None);
        assert!(shared.take_limits_changed());
        assert_eq!(shared.node_share(Side::Source), None);
        shared.record_pause(Side::Target, 7);
        assert_eq!(
            (shared.pauses(Side::Source), shared.pauses(Side::Target)),
            (0, 1)
        );
        assert_eq!(shared.throttled(), Duration::from_nanos(7));
    }

    #[test]
    fn first_close_request_wins() {
        let shared = SessionShared::new(SessionLimits::UNLIMITED);
        assert_eq!(shared.close_requested(), None);
        shared.request_close(CloseRequest::Drained);
        shared.request_close(CloseRequest::Owner);
        assert_eq!(shared.close_requested(), Some(CloseRequest::Drained));
    }
}
