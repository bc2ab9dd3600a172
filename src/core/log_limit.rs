//! Rate-limited logging of what peers cause: bad hop requests and refusals. Any peer can send
//! those as fast as it likes, so a line per occurrence would be a cheap log flood. Each kind gets
//! [`LINES_PER_WINDOW`] lines per [`LOG_WINDOW`]; the rest are counted, and one summary line per
//! kind says how many were left out. Sans I/O: the core rolls the window at its housekeeping
//! tick with its own clock.

use std::time::{Duration, Instant};

/// The window over which log lines are counted.
pub(crate) const LOG_WINDOW: Duration = Duration::from_secs(10);
/// Lines of one kind logged per window; the rest are summarised.
pub(crate) const LINES_PER_WINDOW: u32 = 10;

/// A kind of peer-caused log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Noise {
    /// A malformed, silent or excess hop request.
    BadRequest,
    /// A refused reservation.
    ReservationRefused,
    /// A refused session.
    SessionRefused,
}

impl Noise {
    const ALL: [Noise; 3] = [
        Noise::BadRequest,
        Noise::ReservationRefused,
        Noise::SessionRefused,
    ];

    /// What the summary line calls it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Noise::BadRequest => "bad hop requests",
            Noise::ReservationRefused => "refused reservations",
            Noise::SessionRefused => "refused sessions",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Per kind: lines logged and lines left out in the current window.
#[derive(Debug)]
pub(crate) struct LogLimiter {
    window_ends: Instant,
    logged: [u32; 3],
    suppressed: [u64; 3],
}

impl LogLimiter {
    pub(crate) fn new(now: Instant) -> Self {
        LogLimiter {
            window_ends: now + LOG_WINDOW,
            logged: [0; 3],
            suppressed: [0; 3],
        }
    }

    /// Whether one more line of `kind` may be logged in this window; counts it either way.
    pub(crate) fn allow(&mut self, kind: Noise) -> bool {
        let i = kind.index();
        if self.logged[i] < LINES_PER_WINDOW {
            self.logged[i] += 1;
            true
        } else {
            self.suppressed[i] += 1;
            false
        }
    }

    /// At `now`, ends the window if it is over and returns, per kind, how many lines it left
    /// out (kinds with none are not listed).
    pub(crate) fn roll(&mut self, now: Instant) -> Vec<(Noise, u64)> {
        if now < self.window_ends {
            return Vec::new();
        }
        self.window_ends = now + LOG_WINDOW;
        self.logged = [0; 3];
        let suppressed = std::mem::take(&mut self.suppressed);
        Noise::ALL
            .into_iter()
            .filter(|k| suppressed[k.index()] > 0)
            .map(|k| (k, suppressed[k.index()]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_logs_a_few_lines_then_one_summary_per_window() {
        let t0 = Instant::now();
        let mut limiter = LogLimiter::new(t0);
        let logged = (0..1000)
            .filter(|_| limiter.allow(Noise::BadRequest))
            .count();
        assert_eq!(logged, LINES_PER_WINDOW as usize);
        assert!(
            limiter.allow(Noise::SessionRefused),
            "kinds have their own budget"
        );
        assert!(
            limiter.roll(t0 + LOG_WINDOW / 2).is_empty(),
            "not before the window ends"
        );
        assert_eq!(
            limiter.roll(t0 + LOG_WINDOW),
            vec![(Noise::BadRequest, 1000 - u64::from(LINES_PER_WINDOW))]
        );
        assert!(
            limiter.allow(Noise::BadRequest),
            "a new window, a new budget"
        );
        assert!(
            limiter.roll(t0 + LOG_WINDOW * 2).is_empty(),
            "nothing left out"
        );
    }
}
