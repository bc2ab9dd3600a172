//! Prometheus metrics of the relay registry ([`crate::registry`]), under the
//! `macula_relay_registry_` prefix: the operator's view that `ctl registry` and `GET /registry`
//! show, as time series.
//!
//! Counters of what happened (publications, withdrawals, discoveries' cost, refused records,
//! reservations) are recorded from the registry's [`Event`]s ([`RegistryMetrics::record`]);
//! whether the relay is registered, its shard, when it last published, the relays it knows and
//! the totals it keeps itself are read from the registry ([`RegistryMetrics::observe`]) before
//! each scrape.
//!
//! ```
//! use macula_relay::metrics::{encode, RegistryMetrics};
//! use prometheus_client::registry::Registry;
//!
//! let mut registry = Registry::default();
//! let metrics = RegistryMetrics::new(&mut registry);
//! // In the swarm loop: `metrics.record(&event)` for each registry event; before a scrape,
//! // `metrics.observe(&swarm.behaviour().registry)`, then serve `encode(&registry)`.
//! # let _ = (metrics, encode(&registry));
//! ```

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram, MetricType},
    registry::{Registry, Unit},
};

use super::{advance, gauge_value, reason_labels, ReasonLabels, PREFIX};
use crate::registry::{Activity, Behaviour, Event, RejectedAt, RepublishReason, WithdrawReason};

/// Buckets of the discovery-duration histogram, in seconds: 50 ms to 30 s (a discovery gives up
/// after its timeout, 8 s by default).
const DISCOVERY_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 15.0, 30.0];

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AtLabels {
    at: &'static str,
}

/// The registry's metrics. Cheap to clone: clones share the same series.
#[derive(Debug, Clone)]
pub struct RegistryMetrics {
    registered: Gauge,
    shard: Optional<Gauge>,
    last_published: Optional<Gauge<f64, AtomicU64>>,
    known_relays: Gauge,
    records_served: Counter,
    discoveries: Counter,
    discovery_duration: Histogram,
    discovery_record_reads: Counter,
    discovery_dht_requests: Counter,
    discovery_timeouts: Counter,
    records_rejected: Family<AtLabels, Counter>,
    registrations: Counter,
    republications: Family<ReasonLabels, Counter>,
    withdrawals: Family<ReasonLabels, Counter>,
    reservations_accepted: Counter,
    reservations_lost: Counter,
    reservations_moved: Counter,
}

impl RegistryMetrics {
    /// Registers the registry's metrics on `registry`, under the `macula_relay_registry_`
    /// prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let r = registry
            .sub_registry_with_prefix(PREFIX)
            .sub_registry_with_prefix("registry");
        let metrics = RegistryMetrics {
            registered: Gauge::default(),
            shard: Optional::default(),
            last_published: Optional::default(),
            known_relays: Gauge::default(),
            records_served: Counter::default(),
            discoveries: Counter::default(),
            discovery_duration: Histogram::new(DISCOVERY_BUCKETS),
            discovery_record_reads: Counter::default(),
            discovery_dht_requests: Counter::default(),
            discovery_timeouts: Counter::default(),
            records_rejected: Family::default(),
            registrations: Counter::default(),
            republications: Family::default(),
            withdrawals: Family::default(),
            reservations_accepted: Counter::default(),
            reservations_lost: Counter::default(),
            reservations_moved: Counter::default(),
        };
        let m = metrics.clone();
        r.register(
            "registered",
            "Whether the relay is registered now (1: enabled and capable, its record published) \
             or not (0)",
            m.registered,
        );
        r.register(
            "shard",
            "The shard the relay registers in (absent on a node that is not a relay)",
            m.shard,
        );
        r.register_with_unit(
            "last_published_timestamp",
            "When the relay's record or provider announcement last reached the DHT, Unix time \
             (absent until the first)",
            Unit::Seconds,
            m.last_published,
        );
        r.register(
            "known_relays",
            "Relays known from the last discoveries",
            m.known_relays,
        );
        r.register(
            "records_served",
            "Record fetches answered with the relay's record (readers' discoveries)",
            m.records_served,
        );
        r.register(
            "discoveries",
            "Discoveries started (the finished ones: discovery_duration_seconds_count)",
            m.discoveries,
        );
        r.register_with_unit(
            "discovery_duration",
            "How long finished discoveries took",
            Unit::Seconds,
            m.discovery_duration,
        );
        r.register(
            "discovery_record_reads",
            "Records fetched from relays or looked up in the DHT by finished discoveries",
            m.discovery_record_reads,
        );
        r.register(
            "discovery_dht_requests",
            "Kademlia requests sent by finished discoveries' lookups",
            m.discovery_dht_requests,
        );
        r.register(
            "discovery_timeouts",
            "Discoveries whose deadline passed before every read finished",
            m.discovery_timeouts,
        );
        r.register(
            "records_rejected",
            "Relay records refused, by where they came from (reading: discoveries; storing: \
             peers asking this node to store them)",
            m.records_rejected,
        );
        r.register(
            "registrations",
            "Times the relay registered: it became enabled and capable, and its announcement \
             reached a DHT peer",
            m.registrations,
        );
        r.register(
            "republications",
            "New records published while registered, by reason",
            m.republications,
        );
        r.register(
            "withdrawals",
            "Times the relay withdrew from the registry, by reason",
            m.withdrawals,
        );
        r.register(
            "reservations_accepted",
            "Reservations this node made on relays it discovered",
            m.reservations_accepted,
        );
        r.register(
            "reservations_lost",
            "Reservations on discovered relays that failed or ended",
            m.reservations_lost,
        );
        r.register(
            "reservations_moved",
            "Lost reservations replaced by one on another relay",
            m.reservations_moved,
        );
        metrics
    }

    /// Records one registry event.
    pub fn record(&self, event: &Event) {
        match event {
            Event::Registered { .. } => {
                self.registrations.inc();
            }
            Event::Republished { reason, .. } => {
                self.republications
                    .get_or_create(&reason_labels(republish_reason(*reason)))
                    .inc();
            }
            Event::Withdrawn { reason, .. } => {
                self.withdrawals
                    .get_or_create(&reason_labels(withdraw_reason(*reason)))
                    .inc();
            }
            Event::RelaysDiscovered { stats, .. } => {
                self.discovery_duration.observe(stats.elapsed.as_secs_f64());
                self.discovery_record_reads
                    .inc_by(u64::try_from(stats.record_reads).unwrap_or(u64::MAX));
                self.discovery_dht_requests
                    .inc_by(u64::from(stats.dht_requests));
                if stats.timed_out {
                    self.discovery_timeouts.inc();
                }
            }
            Event::RecordRejected { at, .. } => {
                self.records_rejected
                    .get_or_create(&AtLabels {
                        at: rejected_at(*at),
                    })
                    .inc();
            }
            Event::ReservationAccepted { .. } => {
                self.reservations_accepted.inc();
            }
            Event::ReservationLost { .. } => {
                self.reservations_lost.inc();
            }
            Event::ReservationMoved { .. } => {
                self.reservations_moved.inc();
            }
            _ => {}
        }
    }

    /// Reads whether the relay is registered, its shard, when it last published, the relays it
    /// knows and the totals it keeps from `registry`. Call it before encoding the registry.
    pub fn observe(&self, registry: &Behaviour) {
        self.set(
            &registry.activity(),
            registry.is_registered(),
            registry.known_relays().len(),
        );
    }

    fn set(&self, activity: &Activity, registered: bool, known_relays: usize) {
        self.registered.set(i64::from(registered));
        self.shard.set(activity.shard.map(i64::from));
        self.last_published
            .set(activity.last_published.map(unix_secs));
        self.known_relays.set(gauge_value(known_relays));
        advance(&self.records_served, activity.records_served);
        advance(&self.discoveries, activity.discoveries);
    }
}

/// The `reason` label of a republication.
fn republish_reason(reason: RepublishReason) -> &'static str {
    match reason {
        RepublishReason::Refresh => "refresh",
        RepublishReason::LoadChanged => "load_changed",
        RepublishReason::DetailsChanged => "details_changed",
    }
}

/// The `reason` label of a withdrawal.
fn withdraw_reason(reason: WithdrawReason) -> &'static str {
    match reason {
        WithdrawReason::Disabled => "disabled",
        WithdrawReason::NotCapable => "not_capable",
    }
}

/// The `at` label of a refused record.
fn rejected_at(at: RejectedAt) -> &'static str {
    match at {
        RejectedAt::Reading => "reading",
        RejectedAt::Storing => "storing",
    }
}

/// Seconds since the Unix epoch (0 before it).
fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A gauge with no sample while it has no value (rather than a made-up one such as -1).
#[derive(Debug, Clone, Default)]
struct Optional<G> {
    gauge: G,
    present: Arc<AtomicBool>,
}

impl<G: SetGauge> Optional<G> {
    fn set(&self, value: Option<G::Value>) {
        if let Some(value) = value {
            self.gauge.set_value(value);
        }
        self.present.store(value.is_some(), Ordering::Relaxed);
    }
}

impl<G: EncodeMetric> EncodeMetric for Optional<G> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.gauge.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.gauge.metric_type()
    }

    fn is_empty(&self) -> bool {
        !self.present.load(Ordering::Relaxed)
    }
}

/// The gauges an [`Optional`] holds.
trait SetGauge {
    type Value: Copy;
    fn set_value(&self, value: Self::Value);
}

impl SetGauge for Gauge {
    type Value = i64;
    fn set_value(&self, value: i64) {
        self.set(value);
    }
}

impl SetGauge for Gauge<f64, AtomicU64> {
    type Value = f64;
    fn set_value(&self, value: f64) {
        self.set(value);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p::{identity::Keypair, PeerId, StreamProtocol};

    use super::*;
    use crate::{
        metrics::encode,
        registry::{DiscoveryId, DiscoveryStats, RecordError, RegistryConfig, RelayRecord},
    };

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    fn withdrawal(peer: PeerId) -> RelayRecord {
        RelayRecord {
            peer,
            addrs: Vec::new(),
            max_sessions: 0,
            active_sessions: 0,
            reservations: 0,
            max_reservations: 0,
            bandwidth: None,
            session_timeout: None,
            max_session_bytes: None,
            enabled: false,
            issued_at_ms: 1_000,
            expires_at_ms: 601_000,
            namespace: "/macula/relay/1".into(),
        }
    }

    #[test]
    fn events_are_counted_by_reason_and_origin() {
        let mut registry = Registry::default();
        let metrics = RegistryMetrics::new(&mut registry);
        let peer = PeerId::random();
        for at in [
            RejectedAt::Reading,
            RejectedAt::Reading,
            RejectedAt::Storing,
        ] {
            metrics.record(&Event::RecordRejected {
                at,
                from: peer,
                error: RecordError::Expired,
            });
        }
        metrics.record(&Event::Withdrawn {
            reason: WithdrawReason::NotCapable,
            record: withdrawal(peer),
        });
        metrics.record(&Event::Republished {
            reason: RepublishReason::LoadChanged,
            record: withdrawal(peer),
        });
        metrics.record(&Event::ReservationMoved {
            from: peer,
            to: PeerId::random(),
        });
        let text = encode(&registry);
        for (series, value) in [
            (
                "macula_relay_registry_records_rejected_total{at=\"reading\"}",
                "2",
            ),
            (
                "macula_relay_registry_records_rejected_total{at=\"storing\"}",
                "1",
            ),
            (
                "macula_relay_registry_withdrawals_total{reason=\"not_capable\"}",
                "1",
            ),
            (
                "macula_relay_registry_republications_total{reason=\"load_changed\"}",
                "1",
            ),
            ("macula_relay_registry_reservations_moved_total", "1"),
            ("macula_relay_registry_reservations_lost_total", "0"),
            ("macula_relay_registry_registrations_total", "0"),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
        }
    }

    #[test]
    fn a_discovery_counts_its_duration_and_cost() {
        let mut registry = Registry::default();
        let metrics = RegistryMetrics::new(&mut registry);
        for (elapsed, timed_out) in [(300, false), (9_000, true)] {
            metrics.record(&Event::RelaysDiscovered {
                id: DiscoveryId(1),
                relays: Vec::new(),
                stats: DiscoveryStats {
                    record_reads: 4,
                    dht_requests: 10,
                    timed_out,
                    elapsed: Duration::from_millis(elapsed),
                    ..Default::default()
                },
            });
        }
        let text = encode(&registry);
        for (series, value) in [
            (
                "macula_relay_registry_discovery_duration_seconds_count",
                "2",
            ),
            (
                "macula_relay_registry_discovery_duration_seconds_sum",
                "9.3",
            ),
            (
                "macula_relay_registry_discovery_duration_seconds_bucket{le=\"0.5\"}",
                "1",
            ),
            ("macula_relay_registry_discovery_record_reads_total", "8"),
            ("macula_relay_registry_discovery_dht_requests_total", "20"),
            ("macula_relay_registry_discovery_timeouts_total", "1"),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
        }
    }

    #[test]
    fn activity_sets_the_gauges_and_advances_the_totals() {
        let mut registry = Registry::default();
        let metrics = RegistryMetrics::new(&mut registry);
        metrics.set(&Activity::default(), false, 0);
        let text = encode(&registry);
        assert_eq!(sample(&text, "macula_relay_registry_registered"), Some("0"));
        // Not a relay, never published: no made-up shard or time.
        assert!(!text.contains("macula_relay_registry_shard"), "{text}");
        assert!(!text.contains("last_published"), "{text}");

        let published = UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        let activity = Activity {
            shard: Some(17),
            last_published: Some(published),
            records_served: 5,
            discoveries: 2,
        };
        metrics.set(&activity, true, 3);
        // Totals the registry keeps only go up here, even if read out of order.
        metrics.set(
            &Activity {
                records_served: 4,
                ..activity
            },
            true,
            3,
        );
        let text = encode(&registry);
        for (series, value) in [
            ("macula_relay_registry_registered", "1"),
            ("macula_relay_registry_shard", "17"),
            (
                "macula_relay_registry_last_published_timestamp_seconds",
                "1700000000.5",
            ),
            ("macula_relay_registry_known_relays", "3"),
            ("macula_relay_registry_records_served_total", "5"),
            ("macula_relay_registry_discoveries_total", "2"),
        ] {
            assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
        }
        assert!(
            text.contains("# TYPE macula_relay_registry_shard gauge"),
            "{text}"
        );

        metrics.set(&Activity::default(), false, 0);
        assert!(!encode(&registry).contains("macula_relay_registry_shard"));
    }

    #[test]
    fn observe_reads_a_registry() {
        let mut registry = Registry::default();
        let metrics = RegistryMetrics::new(&mut registry);
        let key = Keypair::generate_ed25519();
        let mut node = Behaviour::with_protocol(
            &key,
            StreamProtocol::new("/test/kad/1.0.0"),
            RegistryConfig::default(),
        );
        metrics.observe(&node);
        let text = encode(&registry);
        assert_eq!(sample(&text, "macula_relay_registry_registered"), Some("0"));
        assert!(!text.contains("macula_relay_registry_shard"), "{text}");

        // A relay has a shard; with no external address it is not capable, so not registered.
        let relay = crate::Behaviour::new(key.clone(), crate::Config::default());
        node.observe_relay(&relay);
        metrics.observe(&node);
        let shard = node.activity().shard.expect("a relay has a shard");
        let text = encode(&registry);
        assert_eq!(
            sample(&text, "macula_relay_registry_shard"),
            Some(shard.to_string().as_str())
        );
        assert_eq!(sample(&text, "macula_relay_registry_registered"), Some("0"));
    }
}
