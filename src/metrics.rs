//! Prometheus metrics of the relay, with [`prometheus_client`] as `libp2p-metrics` uses it: the
//! swarm owner passes in its [`Registry`], so a node that already exports `libp2p-metrics` shows
//! the relay's metrics beside them (under the `macula_relay_` prefix).
//!
//! Counters and the session-duration histogram are recorded from the relay's [`Event`]s
//! ([`Metrics::record`]); gauges, bytes relayed and time throttled are read from the relay's
//! state ([`Metrics::observe`]), which the owner calls before each scrape, so the bytes of live
//! sessions count as they move, not only when a session ends.
//!
//! ```
//! use macula_relay::metrics::{encode, Metrics};
//! use prometheus_client::registry::Registry;
//!
//! let mut registry = Registry::default();
//! let metrics = Metrics::new(&mut registry);
//! // In the swarm loop: `metrics.record(&event)` for each relay event; before a scrape,
//! // `metrics.observe(&swarm.behaviour().relay)`, then serve `encode(&registry)`.
//! # let _ = (metrics, encode(&registry));
//! ```
//!
//! The relay registry's metrics (feature `registry`) are [`RegistryMetrics`], under the
//! `macula_relay_registry_` prefix.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use crate::{Behaviour, Event};

#[cfg(feature = "registry")]
mod registry;
#[cfg(feature = "registry")]
pub use registry::RegistryMetrics;

/// The `prometheus-client` version the metrics are built with (the one `libp2p-metrics` uses).
pub use prometheus_client;

/// The prefix of every metric name.
pub const PREFIX: &str = "macula_relay";

/// Buckets of the session-duration histogram, in seconds: 100 ms to 2 hours.
const DURATION_BUCKETS: [f64; 12] = [
    0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

/// The content type of [`encode`]'s output (OpenMetrics text, which Prometheus scrapes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RenewedLabels {
    renewed: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

const SOURCE_TO_TARGET: DirectionLabels = DirectionLabels {
    direction: "source_to_target",
};
const TARGET_TO_SOURCE: DirectionLabels = DirectionLabels {
    direction: "target_to_source",
};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Registers `macula_relay_build_info{version="…"} 1`, so dashboards can tell which release
/// each node runs.
pub fn register_build_info(registry: &mut Registry) {
    let info: Family<BuildLabels, Gauge> = Family::default();
    info.get_or_create(&BuildLabels {
        version: env!("CARGO_PKG_VERSION"),
    })
    .set(1);
    registry.register(
        format!("{PREFIX}_build_info"),
        "The macula-relay release this node runs",
        info,
    );
}

/// The relay's metrics. Cheap to clone: clones share the same series.
#[derive(Debug, Clone)]
pub struct Metrics {
    enabled: Gauge,
    reservations: Gauge,
    max_reservations: Gauge,
    reservations_accepted: Family<RenewedLabels, Counter>,
    reservations_denied: Family<ReasonLabels, Counter>,
    reservations_ended: Family<ReasonLabels, Counter>,
    sessions_active: Gauge,
    sessions_pending: Gauge,
    max_sessions: Gauge,
    sessions_opened: Counter,
    sessions_closed: Family<ReasonLabels, Counter>,
    sessions_denied: Family<ReasonLabels, Counter>,
    session_duration: Histogram,
    bytes_relayed: Family<DirectionLabels, Counter>,
    throttled: Counter<f64, AtomicU64>,
    bad_requests: Counter,
}

impl Metrics {
    /// Registers the relay's metrics on `registry`, under the `macula_relay_` prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix(PREFIX);
        let metrics = Metrics {
            enabled: Gauge::default(),
            reservations: Gauge::default(),
            max_reservations: Gauge::default(),
            reservations_accepted: Family::default(),
            reservations_denied: Family::default(),
            reservations_ended: Family::default(),
            sessions_active: Gauge::default(),
            sessions_pending: Gauge::default(),
            max_sessions: Gauge::default(),
            sessions_opened: Counter::default(),
            sessions_closed: Family::default(),
            sessions_denied: Family::default(),
            session_duration: Histogram::new(DURATION_BUCKETS),
            bytes_relayed: Family::default(),
            throttled: Counter::default(),
            bad_requests: Counter::default(),
        };
        let m = metrics.clone();
        r.register(
            "enabled",
            "Whether the relay accepts new reservations and sessions (1) or not (0)",
            m.enabled,
        );
        r.register("reservations", "Reservations held now", m.reservations);
        r.register(
            "max_reservations",
            "Maximum reservations",
            m.max_reservations,
        );
        r.register(
            "reservations_accepted",
            "Reservations accepted, by whether they renewed one",
            m.reservations_accepted,
        );
        r.register(
            "reservations_denied",
            "Reservation requests refused, by reason",
            m.reservations_denied,
        );
        r.register(
            "reservations_ended",
            "Reservations ended, by reason",
            m.reservations_ended,
        );
        r.register(
            "sessions_active",
            "Sessions relaying now",
            m.sessions_active,
        );
        r.register(
            "sessions_pending",
            "Sessions admitted and waiting for the target's answer",
            m.sessions_pending,
        );
        r.register(
            "max_sessions",
            "Maximum concurrent sessions",
            m.max_sessions,
        );
        r.register(
            "sessions_opened",
            "Sessions that started relaying",
            m.sessions_opened,
        );
        r.register(
            "sessions_closed",
            "Sessions ended, by reason",
            m.sessions_closed,
        );
        r.register(
            "sessions_denied",
            "Session requests refused, by reason",
            m.sessions_denied,
        );
        r.register_with_unit(
            "session_duration",
            "How long ended sessions relayed",
            Unit::Seconds,
            m.session_duration,
        );
        r.register_with_unit(
            "relayed",
            "Bytes relayed by all sessions, live and ended, by direction",
            Unit::Bytes,
            m.bytes_relayed,
        );
        r.register_with_unit(
            "throttled",
            "Time sessions spent waiting for their bandwidth throttle, live and ended",
            Unit::Seconds,
            m.throttled,
        );
        r.register(
            "bad_requests",
            "Hop requests malformed, of the wrong type, timed out or over the stream limit",
            m.bad_requests,
        );
        metrics
    }

    /// Records one relay event.
    pub fn record(&self, event: &Event) {
        match event {
            Event::ReservationAccepted { renewed, .. } => {
                let renewed = if *renewed { "true" } else { "false" };
                self.reservations_accepted
                    .get_or_create(&RenewedLabels { renewed })
                    .inc();
            }
            Event::ReservationDenied { reason, .. } => {
                self.reservations_denied
                    .get_or_create(&reason_labels(reason.label()))
                    .inc();
            }
            Event::ReservationEnded { reason, .. } => {
                self.reservations_ended
                    .get_or_create(&reason_labels(reason.label()))
                    .inc();
            }
            Event::SessionOpened { .. } => {
                self.sessions_opened.inc();
            }
            Event::SessionDenied { reason, .. } => {
                self.sessions_denied
                    .get_or_create(&reason_labels(reason.label()))
                    .inc();
            }
            Event::SessionClosed {
                reason, duration, ..
            } => {
                self.sessions_closed
                    .get_or_create(&reason_labels(reason.label()))
                    .inc();
                self.session_duration.observe(duration.as_secs_f64());
            }
            Event::BadRequest { .. } => {
                self.bad_requests.inc();
            }
            Event::StatusChanged { enabled } => {
                self.enabled.set(i64::from(*enabled));
            }
            Event::Stats(_) => {}
        }
    }

    /// Reads the gauges, bytes relayed and time throttled from the relay's state. Call it before
    /// encoding the registry.
    pub fn observe(&self, relay: &Behaviour) {
        let stats = relay.stats();
        self.enabled.set(i64::from(stats.enabled));
        self.reservations.set(gauge_value(stats.reservations));
        self.max_reservations
            .set(gauge_value(stats.max_reservations));
        self.sessions_active.set(gauge_value(stats.active_sessions));
        self.sessions_pending
            .set(gauge_value(stats.pending_sessions));
        self.max_sessions.set(gauge_value(stats.max_sessions));
        advance(
            &self.bytes_relayed.get_or_create(&SOURCE_TO_TARGET),
            stats.total_bytes_source_to_target,
        );
        advance(
            &self.bytes_relayed.get_or_create(&TARGET_TO_SOURCE),
            stats.total_bytes_target_to_source,
        );
        let throttled = relay.total_throttled().as_secs_f64();
        let seen = self.throttled.get();
        if throttled > seen {
            self.throttled.inc_by(throttled - seen);
        }
    }
}

/// Encodes `registry` in the OpenMetrics text format (see [`CONTENT_TYPE`]).
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String does not fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

fn reason_labels(reason: &'static str) -> ReasonLabels {
    ReasonLabels { reason }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Moves a counter up to `total` (counters never go down).
fn advance(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p::PeerId;

    use super::*;
    use crate::{CloseReason, Config, DenyReason, SessionId, Status};

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn events_are_counted_by_reason() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let (a, b) = (PeerId::random(), PeerId::random());
        metrics.record(&Event::SessionDenied {
            source: a,
            target: b,
            reason: DenyReason::SessionsFull,
            status: Status::ResourceLimitExceeded,
        });
        metrics.record(&Event::SessionClosed {
            id: SessionId::from(1),
            source: a,
            target: b,
            reason: CloseReason::ClosedByOwner,
            bytes_source_to_target: 10,
            bytes_target_to_source: 20,
            duration: Duration::from_millis(300),
        });
        let text = encode(&registry);
        assert_eq!(
            sample(
                &text,
                "macula_relay_sessions_denied_total{reason=\"sessions_full\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                "macula_relay_sessions_closed_total{reason=\"closed_by_owner\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(&text, "macula_relay_session_duration_seconds_count"),
            Some("1")
        );
    }

    #[test]
    fn observe_reads_gauges_from_the_relay() {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let mut relay = Behaviour::new(keypair, Config::builder().max_sessions(7).build().unwrap());
        relay.disable();
        metrics.observe(&relay);
        let text = encode(&registry);
        assert_eq!(sample(&text, "macula_relay_max_sessions"), Some("7"));
        assert_eq!(sample(&text, "macula_relay_enabled"), Some("0"));
        assert_eq!(
            sample(
                &text,
                "macula_relay_relayed_bytes_total{direction=\"source_to_target\"}"
            ),
            Some("0")
        );
    }

    #[test]
    fn counters_advance_but_never_go_back() {
        let counter = Counter::default();
        advance(&counter, 5);
        advance(&counter, 3);
        assert_eq!(counter.get(), 5);
        advance(&counter, 9);
        assert_eq!(counter.get(), 9);
    }
}
