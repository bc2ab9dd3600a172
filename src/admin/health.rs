//! The node's health for `GET /healthz`, published by the node's event loop and read by the HTTP
//! server without a round trip through the swarm's queue: a load balancer's probe gets its
//! answer even when that queue is full, and learns when the loop stalls.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

/// A loop that has not reported for this long is reported stalled.
pub(crate) const STALL_AFTER: Duration = Duration::from_secs(10);

/// How often the node's loop should call [`AdminServer::report_health`](super::AdminServer::report_health), at the least.
pub const HEALTH_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// What `/healthz` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Serving: 200.
    Ok {
        /// Whether the relay accepts new reservations and sessions.
        enabled: bool,
    },
    /// Nothing reported yet: 503.
    Starting,
    /// Draining before a stop: 503, so that load balancers send new peers elsewhere.
    Draining,
    /// The loop has not reported for [`STALL_AFTER`]: 503.
    Stalled,
}

/// The shared health state: the loop writes, the server reads.
#[derive(Clone, Debug)]
pub(crate) struct Health(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    origin: Instant,
    /// Milliseconds since `origin` of the last report, plus one (0 = never).
    last_report: AtomicU64,
    enabled: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    pub(crate) fn new(now: Instant) -> Health {
        Health(Arc::new(Inner {
            origin: now,
            last_report: AtomicU64::new(0),
            enabled: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }))
    }

    /// The loop is alive at `now`, with this relay status.
    pub(crate) fn report(&self, enabled: bool, draining: bool, now: Instant) {
        let ms = now.saturating_duration_since(self.0.origin).as_millis() as u64 + 1;
        self.0.enabled.store(enabled, Ordering::Relaxed);
        self.0.draining.store(draining, Ordering::Relaxed);
        // Release: a reader that sees this report sees the flags stored before it.
        self.0.last_report.store(ms, Ordering::Release);
    }

    /// The relay's status changed (an admin request enabled or disabled it): the next answer
    /// says so, without waiting for the loop's next report.
    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.0.enabled.store(enabled, Ordering::Relaxed);
    }

    /// The answer at `now`.
    pub(crate) fn verdict(&self, now: Instant) -> Verdict {
        let last = self.0.last_report.load(Ordering::Acquire);
        if last == 0 {
            return Verdict::Starting;
        }
        let reported = self.0.origin + Duration::from_millis(last - 1);
        if now.saturating_duration_since(reported) > STALL_AFTER {
            return Verdict::Stalled;
        }
        if self.0.draining.load(Ordering::Relaxed) {
            return Verdict::Draining;
        }
        Verdict::Ok {
            enabled: self.0.enabled.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_the_reports_on_a_fake_clock() {
        let t0 = Instant::now();
        let health = Health::new(t0);
        assert_eq!(health.verdict(t0), Verdict::Starting);
        health.report(true, false, t0);
        assert_eq!(
            health.verdict(t0 + Duration::from_secs(1)),
            Verdict::Ok { enabled: true }
        );
        health.report(false, true, t0 + Duration::from_secs(2));
        assert_eq!(
            health.verdict(t0 + Duration::from_secs(3)),
            Verdict::Draining
        );
        assert_eq!(
            health.verdict(t0 + Duration::from_secs(2) + STALL_AFTER + Duration::from_millis(1)),
            Verdict::Stalled
        );
        health.report(false, false, t0 + Duration::from_secs(30));
        assert_eq!(
            health.verdict(t0 + Duration::from_secs(30)),
            Verdict::Ok { enabled: false }
        );
    }
}
