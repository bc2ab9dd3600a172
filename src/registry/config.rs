//! Registry configuration: namespace, shards, mode, record lifetimes, republish rate limit and
//! discovery sizes, with documented defaults (see `docs/registry.md` for the reasoning).

use std::time::Duration;

/// Default namespace. A private network picks its own (every participant must use the same).
pub const DEFAULT_NAMESPACE: &str = "/macula/relay/1";
/// Default number of shard keys relays spread over.
///
/// Kademlia stores at most 20 providers per key on each node (rust `MemoryStore`, go's
/// providers manager the same), and the 20 nodes closest to one key carry all of its traffic.
/// 8 keys hold up to 160 relays without any key filling up, while a client that wants 8
/// candidates from a small fleet reads at most 8 keys.
pub const DEFAULT_SHARDS: u16 = 8;
/// Default lifetime of a signed relay record. Short, so a relay that vanishes without
/// withdrawing drops out within minutes whatever the DHT's own (48 h) TTLs are.
pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(10 * 60);
/// Longest record lifetime a reader or storing node accepts: a record cannot be kept alive
/// longer than this by anyone replaying it.
pub const MAX_RECORD_TTL: Duration = Duration::from_secs(60 * 60);
/// Default minimum time between two republications caused by load or detail changes
/// (withdrawals and refreshes before expiry are never delayed).
pub const DEFAULT_MIN_REPUBLISH_INTERVAL: Duration = Duration::from_secs(30);
/// Default share of capacity (percent) by which the spare sessions or reservations must move
/// before the record is republished.
pub const DEFAULT_LOAD_CHANGE_PERCENT: u8 = 10;
/// Default interval at which a relay renews its provider record (on top of kad's own
/// republication), so that nodes that joined close to the shard key learn it.
pub const DEFAULT_REPROVIDE_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Default number of shard levels (see [`shard`](super::shard)): 8, 64 and 512 keys, visible
/// capacity about 10,000 relays; each relay provides one key per level.
pub const DEFAULT_LEVELS: u8 = 3;
/// Most shard levels: 4 levels are 4,680 keys.
pub const MAX_LEVELS: u8 = 4;
/// Providers a reader must see on one key to take it as full (nodes keep
/// [`PROVIDERS_PER_KEY`](super::PROVIDERS_PER_KEY) = 20; a reader often sees a few less), and so
/// read the next level, whose keys hold fewer relays each.
pub const FULL_KEY_PROVIDERS: usize = super::provider_admission::PROVIDERS_PER_KEY * 4 / 5;
/// Default number of relay candidates a discovery looks for before it stops reading shards.
pub const DEFAULT_DISCOVERY_TARGET: usize = 8;
/// Default number of shard keys a discovery reads in parallel per round.
pub const DEFAULT_SHARDS_PER_ROUND: usize = 4;
/// Default maximum number of records one discovery fetches or looks up.
pub const DEFAULT_MAX_RECORD_READS: usize = 32;
/// Default number of record reads one discovery has in flight at once.
pub const DEFAULT_PARALLEL_READS: usize = 8;
/// Default timeout of one record fetch from a relay.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Default deadline of a discovery: it then reports what it has read.
pub const DEFAULT_DISCOVERY_TIMEOUT: Duration = Duration::from_secs(8);
/// Default tolerated clock difference: a record issued further in the future is refused.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(10 * 60);
/// Default number of relays a reachable-via-relay peer reserves on.
pub const DEFAULT_RESERVATIONS: usize = 2;
/// Default number of slots of one shard key that providers from one network origin (an IPv4
/// /24, an IPv6 /48, or one relay for relayed connections) may hold on a DHT node running the
/// registry. A private fleet whose relays share one subnet raises it.
pub const DEFAULT_PROVIDERS_PER_ORIGIN: usize = 4;
/// How many renewal intervals a shard-key provider record outlives its last renewal on a DHT
/// node running the registry (instead of kad's 48 h), so that a relay that died stops costing
/// readers a fetch within hours, not days.
pub const SHARD_PROVIDER_RENEWALS: u32 = 3;
/// Largest signed record accepted, in bytes.
pub const MAX_RECORD_BYTES: usize = 4096;
/// Most addresses a record may carry.
pub const MAX_RECORD_ADDRS: usize = 16;

/// Where relay records live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishMode {
    /// Relays announce themselves with provider records on their shard key and serve their
    /// signed record themselves (`/macula/relay-record/1.0.0`). Works on any Kademlia,
    /// including the public IPFS DHT, which refuses custom `PUT_VALUE` namespaces; readers get
    /// live load and a withdrawal is seen at the next read. The default.
    Providers,
    /// As [`Providers`](Self::Providers), and relays also `PUT_VALUE` their signed record under
    /// `<namespace>/record/<peer id>`, where readers look it up instead of fetching it from the
    /// relay. Needs a DHT whose nodes store the namespace (our nodes validate it on storing).
    ProvidersAndRecords,
}

/// What the registry does with DHT records and provider records outside its namespace, which
/// it receives because it turns on kad's record filtering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtherRecords {
    /// Store them as an unfiltered kad would. The default.
    Store,
    /// Pass kad's `InboundRequest` event on to the application, which validates and stores
    /// them itself (through [`Behaviour::kad_mut`](super::Behaviour::kad_mut)).
    Forward,
}

/// An invalid registry setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryConfigError {
    /// A count or interval that must not be zero is zero.
    #[error("registry setting `{0}` must not be zero")]
    Zero(&'static str),
    /// The record lifetime exceeds [`MAX_RECORD_TTL`].
    #[error("record_ttl must be at most {MAX_RECORD_TTL:?}")]
    RecordTtlTooLong,
    /// The namespace must start with `/`.
    #[error("namespace must start with '/'")]
    Namespace,
    /// More shard levels than [`MAX_LEVELS`].
    #[error("levels must be at most {MAX_LEVELS}")]
    TooManyLevels,
    /// The load-change threshold is over 100 %.
    #[error("load_change_percent must be at most 100")]
    Percent,
}

/// The registry's configuration. Both sides of a namespace (relays and clients) must agree on
/// `namespace`, `shards` and `mode`.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    pub(crate) namespace: String,
    pub(crate) shards: u16,
    pub(crate) levels: u8,
    pub(crate) mode: PublishMode,
    pub(crate) record_ttl: Duration,
    pub(crate) min_republish_interval: Duration,
    pub(crate) load_change_percent: u8,
    pub(crate) reprovide_interval: Duration,
    pub(crate) discovery_target: usize,
    pub(crate) shards_per_round: usize,
    pub(crate) max_record_reads: usize,
    pub(crate) fetch_timeout: Duration,
    pub(crate) parallel_reads: usize,
    pub(crate) discovery_timeout: Duration,
    pub(crate) max_clock_skew: Duration,
    pub(crate) reservations: usize,
    pub(crate) other_records: OtherRecords,
    pub(crate) providers_per_origin: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            shards: DEFAULT_SHARDS,
            levels: DEFAULT_LEVELS,
            mode: PublishMode::Providers,
            record_ttl: DEFAULT_RECORD_TTL,
            min_republish_interval: DEFAULT_MIN_REPUBLISH_INTERVAL,
            load_change_percent: DEFAULT_LOAD_CHANGE_PERCENT,
            reprovide_interval: DEFAULT_REPROVIDE_INTERVAL,
            discovery_target: DEFAULT_DISCOVERY_TARGET,
            shards_per_round: DEFAULT_SHARDS_PER_ROUND,
            max_record_reads: DEFAULT_MAX_RECORD_READS,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            parallel_reads: DEFAULT_PARALLEL_READS,
            discovery_timeout: DEFAULT_DISCOVERY_TIMEOUT,
            max_clock_skew: DEFAULT_MAX_CLOCK_SKEW,
            reservations: DEFAULT_RESERVATIONS,
            other_records: OtherRecords::Store,
            providers_per_origin: DEFAULT_PROVIDERS_PER_ORIGIN,
        }
    }
}

impl RegistryConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> RegistryConfigBuilder {
        RegistryConfigBuilder {
            config: Self::default(),
        }
    }
    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
    /// The number of shard keys at level 0.
    pub fn shards(&self) -> u16 {
        self.shards
    }
    /// The number of shard levels.
    pub fn levels(&self) -> u8 {
        self.levels
    }
    /// Where records live.
    pub fn mode(&self) -> PublishMode {
        self.mode
    }
    /// Lifetime of the records this node signs.
    pub fn record_ttl(&self) -> Duration {
        self.record_ttl
    }
    /// Minimum time between load-driven republications.
    pub fn min_republish_interval(&self) -> Duration {
        self.min_republish_interval
    }
    /// Candidates a discovery looks for.
    pub fn discovery_target(&self) -> usize {
        self.discovery_target
    }
    /// Relays a reachable-via-relay peer reserves on.
    pub fn reservations(&self) -> usize {
        self.reservations
    }

    /// A discovery's deadline.
    pub fn discovery_timeout(&self) -> Duration {
        self.discovery_timeout
    }

    /// Slots of one shard key one network origin may hold on this node.
    pub fn providers_per_origin(&self) -> usize {
        self.providers_per_origin
    }

    /// How long this node keeps a shard-key provider record after its last renewal.
    pub fn shard_provider_ttl(&self) -> Duration {
        self.reprovide_interval * SHARD_PROVIDER_RENEWALS
    }

    fn validate(&self) -> Result<(), RegistryConfigError> {
        if !self.namespace.starts_with('/') {
            return Err(RegistryConfigError::Namespace);
        }
        for (value, name) in [
            (usize::from(self.shards), "shards"),
            (usize::from(self.levels), "levels"),
            (self.discovery_target, "discovery_target"),
            (self.shards_per_round, "shards_per_round"),
            (self.max_record_reads, "max_record_reads"),
            (self.parallel_reads, "parallel_reads"),
            (self.reservations, "reservations"),
            (self.providers_per_origin, "providers_per_origin"),
        ] {
            if value == 0 {
                return Err(RegistryConfigError::Zero(name));
            }
        }
        for (value, name) in [
            (self.record_ttl, "record_ttl"),
            (self.reprovide_interval, "reprovide_interval"),
            (self.fetch_timeout, "fetch_timeout"),
            (self.discovery_timeout, "discovery_timeout"),
        ] {
            if value.is_zero() {
                return Err(RegistryConfigError::Zero(name));
            }
        }
        if self.record_ttl > MAX_RECORD_TTL {
            return Err(RegistryConfigError::RecordTtlTooLong);
        }
        if self.levels > MAX_LEVELS {
            return Err(RegistryConfigError::TooManyLevels);
        }
        if self.load_change_percent > 100 {
            return Err(RegistryConfigError::Percent);
        }
        Ok(())
    }
}

/// Builds a [`RegistryConfig`]; [`build`](Self::build) validates it.
#[derive(Clone, Debug)]
pub struct RegistryConfigBuilder {
    config: RegistryConfig,
}

impl RegistryConfigBuilder {
    /// The namespace (default [`DEFAULT_NAMESPACE`]); must start with `/`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }
    /// Number of shard keys at level 0 (default [`DEFAULT_SHARDS`]).
    pub fn shards(mut self, shards: u16) -> Self {
        self.config.shards = shards;
        self
    }
    /// Number of shard levels, 1 to [`MAX_LEVELS`] (default [`DEFAULT_LEVELS`]): a relay
    /// provides one key per level, a reader descends at most this deep. A fleet may raise it
    /// relay by relay: level 0 never changes.
    pub fn levels(mut self, levels: u8) -> Self {
        self.config.levels = levels;
        self
    }
    /// Where records live (default [`PublishMode::Providers`]).
    pub fn mode(mut self, mode: PublishMode) -> Self {
        self.config.mode = mode;
        self
    }
    /// Lifetime of signed records (default 10 min, at most [`MAX_RECORD_TTL`]); refreshed at
    /// half of it.
    pub fn record_ttl(mut self, ttl: Duration) -> Self {
        self.config.record_ttl = ttl;
        self
    }
    /// Slots of one shard key that providers from one network origin may hold on this node
    /// when it stores provider records (default [`DEFAULT_PROVIDERS_PER_ORIGIN`]; must not be
    /// zero). A private fleet whose relays share one subnet raises it.
    pub fn providers_per_origin(mut self, slots: usize) -> Self {
        self.config.providers_per_origin = slots;
        self
    }
    /// Minimum time between load-driven republications (default 30 s).
    pub fn min_republish_interval(mut self, interval: Duration) -> Self {
        self.config.min_republish_interval = interval;
        self
    }
    /// Percent of capacity the spare sessions or reservations must move by before a
    /// republication (default 10; 0 = any change).
    pub fn load_change_percent(mut self, percent: u8) -> Self {
        self.config.load_change_percent = percent;
        self
    }
    /// Interval of provider-record renewal (default 30 min).
    pub fn reprovide_interval(mut self, interval: Duration) -> Self {
        self.config.reprovide_interval = interval;
        self
    }
    /// Candidates a discovery looks for before it stops reading shards (default 8).
    pub fn discovery_target(mut self, n: usize) -> Self {
        self.config.discovery_target = n;
        self
    }
    /// Shard keys read in parallel per round (default 2).
    pub fn shards_per_round(mut self, n: usize) -> Self {
        self.config.shards_per_round = n;
        self
    }
    /// Records one discovery reads at most (default [`DEFAULT_MAX_RECORD_READS`]).
    pub fn max_record_reads(mut self, n: usize) -> Self {
        self.config.max_record_reads = n;
        self
    }
    /// Record reads one discovery has in flight at once (default [`DEFAULT_PARALLEL_READS`]).
    pub fn parallel_reads(mut self, n: usize) -> Self {
        self.config.parallel_reads = n;
        self
    }

    /// A discovery's deadline (default [`DEFAULT_DISCOVERY_TIMEOUT`]): it then reports the
    /// relays read so far, whatever is still outstanding.
    pub fn discovery_timeout(mut self, timeout: Duration) -> Self {
        self.config.discovery_timeout = timeout;
        self
    }

    /// Timeout of one record fetch (default [`DEFAULT_FETCH_TIMEOUT`]).
    pub fn fetch_timeout(mut self, timeout: Duration) -> Self {
        self.config.fetch_timeout = timeout;
        self
    }
    /// Tolerated clock difference (default 60 s).
    pub fn max_clock_skew(mut self, skew: Duration) -> Self {
        self.config.max_clock_skew = skew;
        self
    }
    /// Relays to reserve on with [`Behaviour::reserve_on_best`](super::Behaviour::reserve_on_best)
    /// (default 2).
    pub fn reservations(mut self, n: usize) -> Self {
        self.config.reservations = n;
        self
    }
    /// What to do with records outside the namespace (default [`OtherRecords::Store`]).
    pub fn other_records(mut self, other: OtherRecords) -> Self {
        self.config.other_records = other;
        self
    }
    /// Validates and returns the configuration.
    pub fn build(self) -> Result<RegistryConfig, RegistryConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let config = RegistryConfig::builder().build().unwrap();
        assert_eq!(config.namespace(), DEFAULT_NAMESPACE);
        assert_eq!(config.shards(), 8);
        assert_eq!(config.mode(), PublishMode::Providers);
    }

    #[test]
    fn invalid_settings_are_named() {
        let zero = RegistryConfig::builder().shards(0).build().unwrap_err();
        assert_eq!(zero, RegistryConfigError::Zero("shards"));
        assert_eq!(
            RegistryConfig::builder()
                .record_ttl(MAX_RECORD_TTL * 2)
                .build()
                .unwrap_err(),
            RegistryConfigError::RecordTtlTooLong
        );
        assert_eq!(
            RegistryConfig::builder()
                .namespace("relay")
                .build()
                .unwrap_err(),
            RegistryConfigError::Namespace
        );
    }
}
