//! The relay's bookkeeping: reservations, sessions, per-peer counts, totals and every admission
//! decision. No I/O and no clock of its own: the behaviour passes `now`, tests pass a fake one.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use libp2p::{swarm::ConnectionId, PeerId};

use super::{
    origin::{self, Block, BlockCounts},
    rate_limit::RequestLimiter,
    shared::{CloseRequest, SessionShared},
    DenyReason, RelayStats, SessionId, SessionInfo,
};
use crate::{Config, SessionLimits};

/// Who sent a hop request, over which connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Requester {
    pub(crate) peer: PeerId,
    pub(crate) connection: ConnectionId,
    pub(crate) relayed: bool,
    /// The address the connection comes from, for the per-origin caps and the per-IP rate;
    /// `None` when unknown or in an exempt network.
    pub(crate) ip: Option<IpAddr>,
}

#[derive(Debug)]
struct Reservation {
    expires: Instant,
    /// The origin it counts against, if any.
    ip: Option<IpAddr>,
}

/// Where an admitted session stands. Every session goes
/// `AwaitingTarget -> AwaitingSourceAccept -> Relaying -> Closing`, may end in any state, and
/// leaves the table exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionState {
    /// The target is being asked over a STOP stream; the source's CONNECT waits for its answer.
    AwaitingTarget,
    /// The target accepted; the source's handler is writing it the OK. `close` is a close asked
    /// for meanwhile, carried out as soon as the circuit starts.
    AwaitingSourceAccept {
        /// A close requested before the circuit started.
        close: Option<CloseRequest>,
    },
    /// The copy loop relays; monotonic and wall-clock start.
    Relaying {
        /// When the circuit started.
        since: Instant,
        /// The same instant on the wall clock.
        since_wall: SystemTime,
    },
    /// The copy loop was asked to end; waiting for it to report.
    Closing {
        /// When the circuit started.
        since: Instant,
        /// The same instant on the wall clock.
        since_wall: SystemTime,
        /// Why it was asked to end.
        why: CloseRequest,
    },
}

impl SessionState {
    /// When the circuit started, if it has.
    pub(crate) fn relaying_since(&self) -> Option<(Instant, SystemTime)> {
        match *self {
            SessionState::Relaying { since, since_wall }
            | SessionState::Closing {
                since, since_wall, ..
            } => Some((since, since_wall)),
            _ => None,
        }
    }
}

/// An admitted session.
#[derive(Debug)]
pub(crate) struct SessionEntry {
    pub(crate) source: PeerId,
    pub(crate) target: PeerId,
    pub(crate) source_connection: ConnectionId,
    pub(crate) target_connection: ConnectionId,
    pub(crate) state: SessionState,
    pub(crate) shared: Arc<SessionShared>,
    /// The address blocks (of source and target) the session counts against.
    origins: Vec<Block>,
    /// The source's network, counted against the target's share.
    source_network: Option<Block>,
}

/// Counters that outlive the sessions and reservations they count.
#[derive(Debug, Default)]
struct Totals {
    sessions_created: u64,
    closed_source_to_target: u64,
    closed_target_to_source: u64,
    reservations_accepted: u64,
    reservations_renewed: u64,
    reservations_denied: BTreeMap<DenyReason, u64>,
    sessions_denied: BTreeMap<DenyReason, u64>,
    bad_requests: u64,
}

/// Reservations and sessions, with the limits that govern them.
#[derive(Debug)]
pub(crate) struct SessionTable {
    reservations: HashMap<PeerId, HashMap<ConnectionId, Reservation>>,
    reservation_count: usize,
    sessions: HashMap<SessionId, SessionEntry>,
    sessions_per_peer: HashMap<PeerId, usize>,
    reservation_origins: BlockCounts,
    session_origins: BlockCounts,
    /// Sessions per (source network, target).
    network_to_peer: HashMap<(Block, PeerId), usize>,
    limiter: RequestLimiter,
    totals: Totals,
}

impl SessionTable {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            reservations: HashMap::new(),
            reservation_count: 0,
            sessions: HashMap::new(),
            sessions_per_peer: HashMap::new(),
            reservation_origins: BlockCounts::default(),
            session_origins: BlockCounts::default(),
            network_to_peer: HashMap::new(),
            limiter: RequestLimiter::new(config.request_rate_per_peer, config.request_rate_per_ip),
            totals: Totals::default(),
        }
    }

    /// Checks shared by RESERVE and CONNECT, in the order their statuses should win.
    fn gate(
        &mut self,
        config: &Config,
        enabled: bool,
        who: &Requester,
        now: Instant,
    ) -> Result<(), DenyReason> {
        if !enabled {
            return Err(DenyReason::Disabled);
        }
        if who.relayed {
            return Err(DenyReason::RelayedConnection);
        }
        if !config.policy.permits(&who.peer) {
            return Err(DenyReason::NotAllowed);
        }
        if !self.limiter.try_request(who.peer, who.ip, now) {
            return Err(DenyReason::RateLimited);
        }
        Ok(())
    }

    /// Decides a RESERVE. On success returns whether it renewed a reservation on the same
    /// connection, and records the reservation until `now + ttl`.
    pub(crate) fn admit_reservation(
        &mut self,
        config: &Config,
        enabled: bool,
        who: &Requester,
        now: Instant,
    ) -> Result<bool, DenyReason> {
        let decision = self.decide_reservation(config, enabled, who, now);
        match decision {
            Ok(renewed) => {
                let expires = now + config.reservation_ttl;
                let of_peer = self.reservations.entry(who.peer).or_default();
                let reservation = Reservation {
                    expires,
                    ip: who.ip,
                };
                if of_peer.insert(who.connection, reservation).is_none() {
                    self.reservation_count += 1;
                    self.reservation_origins
                        .add(who.ip.into_iter().flat_map(origin::blocks));
                }
                if renewed {
                    self.totals.reservations_renewed += 1;
                } else {
                    self.totals.reservations_accepted += 1;
                }
            }
            Err(reason) => *self.totals.reservations_denied.entry(reason).or_default() += 1,
        }
        decision
    }

    fn decide_reservation(
        &mut self,
        config: &Config,
        enabled: bool,
        who: &Requester,
        now: Instant,
    ) -> Result<bool, DenyReason> {
        self.gate(config, enabled, who, now)?;
        let of_peer = self.reservations.get(&who.peer);
        if of_peer.is_some_and(|r| r.contains_key(&who.connection)) {
            return Ok(true);
        }
        if self.reservation_count >= config.max_reservations {
            return Err(DenyReason::ReservationsFull);
        }
        if of_peer.map_or(0, HashMap::len) >= config.max_reservations_per_peer {
            return Err(DenyReason::PeerReservationsFull);
        }
        if let Some(block) = self.reservation_origins.full(
            who.ip.into_iter().flat_map(origin::blocks),
            &config.reservations_per_origin,
        ) {
            tracing::debug!(peer = %who.peer, %block, "origin reservation cap");
            return Err(DenyReason::OriginReservationsFull);
        }
        Ok(false)
    }

    /// The connection over which `peer` holds its latest reservation.
    pub(crate) fn reservation_connection(&self, peer: &PeerId) -> Option<ConnectionId> {
        self.reservations
            .get(peer)?
            .iter()
            .max_by_key(|(_, r)| r.expires)
            .map(|(c, _)| *c)
    }

    /// Decides a CONNECT from `who` to `target`. `target_connection` is the connection the relay
    /// would use: the target's reservation, or (when reservations are not required) a direct
    /// connection. On success the session is recorded as pending and counts against the limits.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn admit_session(
        &mut self,
        config: &Config,
        enabled: bool,
        who: &Requester,
        local_peer: PeerId,
        target: PeerId,
        target_at: Option<(ConnectionId, Option<IpAddr>)>,
        now: Instant,
    ) -> Result<(SessionId, Arc<SessionShared>), DenyReason> {
        let decision =
            self.decide_session(config, enabled, who, local_peer, target, target_at, now);
        let (target_connection, origins, source_network) = match decision {
            Ok(admitted) => admitted,
            Err(reason) => {
                self.record_session_denied(reason);
                return Err(reason);
            }
        };
        let mut id = SessionId::random();
        while self.sessions.contains_key(&id) {
            id = SessionId::random();
        }
        let shared = Arc::new(SessionShared::new(
            config.limits_between(&who.peer, &target),
        ));
        self.sessions.insert(
            id,
            SessionEntry {
                source: who.peer,
                target,
                source_connection: who.connection,
                target_connection,
                state: SessionState::AwaitingTarget,
                shared: shared.clone(),
                origins: origins.clone(),
                source_network,
            },
        );
        *self.sessions_per_peer.entry(who.peer).or_default() += 1;
        *self.sessions_per_peer.entry(target).or_default() += 1;
        self.session_origins.add(origins);
        if let Some(network) = source_network {
            *self.network_to_peer.entry((network, target)).or_default() += 1;
        }
        Ok((id, shared))
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_session(
        &mut self,
        config: &Config,
        enabled: bool,
        who: &Requester,
        local_peer: PeerId,
        target: PeerId,
        target_at: Option<(ConnectionId, Option<IpAddr>)>,
        now: Instant,
    ) -> Result<(ConnectionId, Vec<Block>, Option<Block>), DenyReason> {
        self.gate(config, enabled, who, now)?;
        if target == local_peer || target == who.peer {
            return Err(DenyReason::InvalidTarget);
        }
        let Some((target_connection, target_ip)) = target_at else {
            return Err(if config.require_reservation {
                DenyReason::NoReservation
            } else {
                DenyReason::TargetUnreachable
            });
        };
        if self.sessions.len() >= config.max_sessions {
            return Err(DenyReason::SessionsFull);
        }
        let count = |p: &PeerId| self.sessions_per_peer.get(p).copied().unwrap_or(0);
        if count(&who.peer) >= config.max_sessions_per_peer
            || count(&target) >= config.max_sessions_per_peer
        {
            return Err(DenyReason::PeerSessionsFull);
        }
        let mut origins: Vec<Block> = [who.ip, target_ip]
            .into_iter()
            .flatten()
            .flat_map(origin::blocks)
            .collect();
        origins.sort_unstable();
        origins.dedup();
        if let Some(block) = self
            .session_origins
            .full(origins.iter().copied(), &config.sessions_per_origin)
        {
            tracing::debug!(source = %who.peer, %target, %block, "origin session cap");
            return Err(DenyReason::OriginSessionsFull);
        }
        let source_network = who.ip.map(origin::network);
        if let Some(network) = source_network {
            let held = self
                .network_to_peer
                .get(&(network, target))
                .copied()
                .unwrap_or(0);
            if held >= config.max_sessions_per_network_to_peer {
                return Err(DenyReason::NetworkToPeerFull);
            }
        }
        Ok((target_connection, origins, source_network))
    }

    /// Counts a refused session request (also for refusals decided outside the table).
    pub(crate) fn record_session_denied(&mut self, reason: DenyReason) {
        *self.totals.sessions_denied.entry(reason).or_default() += 1;
    }

    /// Counts a hop request rejected before any decision (malformed, timed out, too many).
    pub(crate) fn record_bad_request(&mut self) {
        self.totals.bad_requests += 1;
    }

    /// Counts a session whose circuit started.
    pub(crate) fn count_created(&mut self) {
        self.totals.sessions_created += 1;
    }

    pub(crate) fn session(&self, id: &SessionId) -> Option<&SessionEntry> {
        self.sessions.get(id)
    }

    pub(crate) fn session_mut(&mut self, id: &SessionId) -> Option<&mut SessionEntry> {
        self.sessions.get_mut(id)
    }

    /// Removes a session, frees its slots and adds its bytes to the totals.
    pub(crate) fn remove_session(&mut self, id: &SessionId) -> Option<SessionEntry> {
        let entry = self.sessions.remove(id)?;
        for peer in [entry.source, entry.target] {
            if let Some(n) = self.sessions_per_peer.get_mut(&peer) {
                *n -= 1;
                if *n == 0 {
                    self.sessions_per_peer.remove(&peer);
                }
            }
        }
        self.session_origins.remove(entry.origins.iter().copied());
        if let Some(network) = entry.source_network {
            let key = (network, entry.target);
            if let Some(n) = self.network_to_peer.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.network_to_peer.remove(&key);
                }
            }
        }
        let (up, down) = entry.shared.bytes();
        self.totals.closed_source_to_target += up;
        self.totals.closed_target_to_source += down;
        Some(entry)
    }

    /// Sessions carried by `connection`, on either side.
    pub(crate) fn sessions_on(&self, connection: ConnectionId) -> Vec<SessionId> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.source_connection == connection || s.target_connection == connection)
            .map(|(id, _)| *id)
            .collect()
    }

    pub(crate) fn session_ids(&self) -> impl Iterator<Item = (&SessionId, &SessionEntry)> {
        self.sessions.iter()
    }

    /// Drops the reservation held over `connection`; whether there was one.
    pub(crate) fn remove_reservation(&mut self, peer: &PeerId, connection: ConnectionId) -> bool {
        let Some(of_peer) = self.reservations.get_mut(peer) else {
            return false;
        };
        let removed = of_peer.remove(&connection);
        if of_peer.is_empty() {
            self.reservations.remove(peer);
        }
        let Some(removed) = removed else {
            return false;
        };
        self.reservation_count -= 1;
        self.reservation_origins
            .remove(removed.ip.into_iter().flat_map(origin::blocks));
        true
    }

    /// Drops and returns the reservations that expired by `now`.
    pub(crate) fn expire_reservations(&mut self, now: Instant) -> Vec<(PeerId, ConnectionId)> {
        let expired: Vec<_> = self
            .reservations
            .iter()
            .flat_map(|(p, rs)| {
                rs.iter()
                    .filter(|(_, r)| r.expires <= now)
                    .map(move |(c, _)| (*p, *c))
            })
            .collect();
        for (peer, connection) in &expired {
            self.remove_reservation(peer, *connection);
        }
        expired
    }

    /// Drops and returns every reservation.
    pub(crate) fn clear_reservations(&mut self) -> Vec<(PeerId, ConnectionId)> {
        let all: Vec<_> = self
            .reservations
            .iter()
            .flat_map(|(p, rs)| rs.keys().map(move |c| (*p, *c)))
            .collect();
        self.reservations.clear();
        self.reservation_count = 0;
        self.reservation_origins.clear();
        all
    }

    /// Reservations held now, with their expiry.
    pub(crate) fn reservations(
        &self,
    ) -> impl Iterator<Item = (PeerId, ConnectionId, Instant)> + '_ {
        self.reservations
            .iter()
            .flat_map(|(p, rs)| rs.iter().map(move |(c, r)| (*p, *c, r.expires)))
    }

    /// Forgets rate-limit state that no longer matters.
    pub(crate) fn prune(&mut self, now: Instant) {
        self.limiter.prune(now);
    }

    /// The live (relaying) sessions.
    pub(crate) fn infos(&self, now: Instant) -> Vec<SessionInfo> {
        let mut infos: Vec<_> = self
            .sessions
            .iter()
            .filter_map(|(id, s)| {
                let (started, started_at) = s.state.relaying_since()?;
                let (up, down) = s.shared.bytes();
                Some(SessionInfo {
                    id: *id,
                    source: s.source,
                    target: s.target,
                    started_at,
                    duration: now.saturating_duration_since(started),
                    bytes_source_to_target: up,
                    bytes_target_to_source: down,
                    limits: s.shared.limits(),
                    throttled: Duration::from_nanos(
                        s.shared
                            .throttled_nanos
                            .load(std::sync::atomic::Ordering::Relaxed),
                    ),
                })
            })
            .collect();
        infos.sort_by_key(|i| i.started_at);
        infos
    }

    /// The statistics; bytes include ended and live sessions.
    pub(crate) fn stats(&self, config: &Config, enabled: bool) -> RelayStats {
        let (mut up, mut down) = (
            self.totals.closed_source_to_target,
            self.totals.closed_target_to_source,
        );
        let mut active = 0;
        for s in self.sessions.values() {
            let (u, d) = s.shared.bytes();
            up += u;
            down += d;
            active += usize::from(s.state.relaying_since().is_some());
        }
        RelayStats {
            enabled,
            max_sessions: config.max_sessions,
            active_sessions: active,
            pending_sessions: self.sessions.len() - active,
            total_bytes_relayed: up + down,
            total_bytes_source_to_target: up,
            total_bytes_target_to_source: down,
            total_sessions_created: self.totals.sessions_created,
            reservations: self.reservation_count,
            max_reservations: config.max_reservations,
            total_reservations_accepted: self.totals.reservations_accepted,
            total_reservations_renewed: self.totals.reservations_renewed,
            reservations_denied: self.totals.reservations_denied.clone(),
            sessions_denied: self.totals.sessions_denied.clone(),
            bad_requests: self.totals.bad_requests,
        }
    }

    /// Follows a new configuration: request rates and live sessions' limits.
    pub(crate) fn reconfigure(&mut self, config: &Config) {
        self.limiter
            .set_rates(config.request_rate_per_peer, config.request_rate_per_ip);
        self.apply_limits(config);
    }

    /// Applies new limits to every live session (each gets the limits between its two peers).
    pub(crate) fn apply_limits(&self, config: &Config) {
        for s in self.sessions.values() {
            s.shared
                .set_limits(config.limits_between(&s.source, &s.target));
        }
    }

    /// Recounts what each origin holds from the reservations and sessions themselves, and checks
    /// the kept counts agree and stay within their caps.
    #[cfg(test)]
    pub(crate) fn check_origin_counts(&self, config: &Config) -> Result<(), String> {
        let mut reservations = BlockCounts::default();
        for r in self.reservations.values().flat_map(HashMap::values) {
            reservations.add(r.ip.into_iter().flat_map(origin::blocks));
        }
        let mut sessions = BlockCounts::default();
        let mut to_peer: HashMap<(Block, PeerId), usize> = HashMap::new();
        for s in self.sessions.values() {
            sessions.add(s.origins.iter().copied());
            if let Some(network) = s.source_network {
                *to_peer.entry((network, s.target)).or_default() += 1;
            }
        }
        let as_map = |c: &BlockCounts| c.iter().map(|(b, n)| (*b, *n)).collect::<HashMap<_, _>>();
        if as_map(&reservations) != as_map(&self.reservation_origins) {
            return Err("reservation origin counts drifted".into());
        }
        if as_map(&sessions) != as_map(&self.session_origins) {
            return Err("session origin counts drifted".into());
        }
        if to_peer != self.network_to_peer {
            return Err("network-to-peer counts drifted".into());
        }
        for (block, n) in self.reservation_origins.iter() {
            if *n > block.cap(&config.reservations_per_origin) {
                return Err(format!("{block} holds {n} reservations, over its cap"));
            }
        }
        for (block, n) in self.session_origins.iter() {
            if *n > block.cap(&config.sessions_per_origin) {
                return Err(format!("{block} is in {n} sessions, over its cap"));
            }
        }
        if let Some(n) = to_peer
            .values()
            .find(|n| **n > config.max_sessions_per_network_to_peer)
        {
            return Err(format!("{n} sessions from one network to one peer"));
        }
        Ok(())
    }

    /// The limits that would apply to a session with these peers (for tests and callers).
    #[allow(dead_code)]
    pub(crate) fn limits_of(&self, id: &SessionId) -> Option<SessionLimits> {
        self.sessions.get(id).map(|s| s.shared.limits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RequestRate;
    use crate::Status;

    fn config() -> Config {
        Config::builder()
            .max_sessions(2)
            .max_sessions_per_peer(2)
            .max_reservations(2)
            .max_reservations_per_peer(1)
            .reservation_ttl(Duration::from_secs(60))
            .request_rate_per_peer(None)
            .request_rate_per_ip(None)
            .build()
            .unwrap()
    }

    fn who(peer: PeerId, connection: usize) -> Requester {
        Requester {
            peer,
            connection: ConnectionId::new_unchecked(connection),
            relayed: false,
            ip: None,
        }
    }

    fn conn(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    fn from(peer: PeerId, connection: usize, ip: &str) -> Requester {
        Requester {
            ip: Some(ip.parse().unwrap()),
            ..who(peer, connection)
        }
    }

    /// Generous global and per-peer caps, small per-origin caps: only origin counts decide.
    fn origin_config() -> Config {
        let caps = crate::OriginLimits {
            per_ip: 2,
            per_ipv4_24: 3,
            per_ipv6_64: 2,
            per_ipv6_48: 3,
        };
        Config::builder()
            .max_sessions(100)
            .max_sessions_per_peer(100)
            .max_reservations(100)
            .reservations_per_origin(caps)
            .sessions_per_origin(caps)
            .max_sessions_per_network_to_peer(2)
            .request_rate_per_peer(None)
            .request_rate_per_ip(None)
            .build()
            .unwrap()
    }

    #[test]
    fn one_ip_holds_at_most_its_reservation_cap_and_another_ip_still_reserves() {
        let cfg = origin_config();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        let mut accepted = 0;
        for n in 0..50 {
            if table
                .admit_reservation(&cfg, true, &from(PeerId::random(), n, "203.0.113.1"), t0)
                .is_ok()
            {
                accepted += 1;
            }
        }
        assert_eq!(accepted, 2, "fresh peer ids from one IP get the per-IP cap");
        let refused =
            table.admit_reservation(&cfg, true, &from(PeerId::random(), 60, "203.0.113.1"), t0);
        assert_eq!(refused.unwrap_err(), DenyReason::OriginReservationsFull);
        assert_eq!(
            DenyReason::OriginReservationsFull.reserve_status(),
            Status::ReservationRefused
        );
        table
            .admit_reservation(&cfg, true, &from(PeerId::random(), 61, "198.51.100.1"), t0)
            .expect("another network still reserves");
        table.check_origin_counts(&cfg).unwrap();
    }

    #[test]
    fn one_slash_24_and_one_slash_48_hold_at_most_their_caps_across_addresses() {
        let cfg = origin_config();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        for (prefix, other) in [
            ("203.0.113.", "203.0.114.1"),
            ("2001:db8:1:", "2001:db8:2::1"),
        ] {
            let accepted = (0..20)
                .filter(|n| {
                    let ip = if prefix.contains(':') {
                        format!("{prefix}{n:x}::1")
                    } else {
                        format!("{prefix}{n}")
                    };
                    table
                        .admit_reservation(&cfg, true, &from(PeerId::random(), 100 + n, &ip), t0)
                        .is_ok()
                })
                .count();
            assert_eq!(
                accepted, 3,
                "{prefix}: one address each, the network cap applies"
            );
            table
                .admit_reservation(&cfg, true, &from(PeerId::random(), 200, other), t0)
                .expect("the next network still reserves");
        }
        table.check_origin_counts(&cfg).unwrap();
    }

    #[test]
    fn one_ipv6_slash_64_is_one_origin_whatever_the_address() {
        let cfg = origin_config();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        let accepted = (0..20)
            .filter(|n| {
                let ip = format!("2001:db8:0:7:{n:x}::1");
                table
                    .admit_reservation(&cfg, true, &from(PeerId::random(), *n, &ip), t0)
                    .is_ok()
            })
            .count();
        assert_eq!(accepted, 2);
    }

    #[test]
    fn an_ipv4_mapped_address_shares_the_ipv4_cap() {
        let cfg = origin_config();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        for (n, ip) in ["192.0.2.1", "::ffff:192.0.2.1"].iter().enumerate() {
            table
                .admit_reservation(&cfg, true, &from(PeerId::random(), n, ip), t0)
                .unwrap();
        }
        let third =
            table.admit_reservation(&cfg, true, &from(PeerId::random(), 9, "192.0.2.1"), t0);
        assert_eq!(third.unwrap_err(), DenyReason::OriginReservationsFull);
    }

    #[test]
    fn released_reservations_and_sessions_free_their_origin() {
        let cfg = origin_config();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        let peers: Vec<PeerId> = (0..2).map(|_| PeerId::random()).collect();
        for (n, p) in peers.iter().enumerate() {
            table
                .admit_reservation(&cfg, true, &from(*p, n, "192.0.2.1"), t0)
                .unwrap();
        }
        assert!(table.remove_reservation(&peers[0], conn(0)));
        table
            .admit_reservation(&cfg, true, &from(PeerId::random(), 5, "192.0.2.1"), t0)
            .expect("the freed slot is reusable");
        let relay = PeerId::random();
        let target_at = Some((conn(50), Some("198.51.100.9".parse().unwrap())));
        let mut ids = Vec::new();
        for n in 0..2 {
            let (id, _) = table
                .admit_session(
                    &cfg,
                    true,
                    &from(PeerId::random(), 10 + n, "192.0.2.1"),
                    relay,
                    PeerId::random(),
                    target_at,
                    t0,
                )
                .unwrap();
            ids.push(id);
        }
        let full = table.admit_session(
            &cfg,
            true,
            &from(PeerId::random(), 20, "192.0.2.1"),
            relay,
            PeerId::random(),
            target_at,
            t0,
        );
        assert_eq!(full.unwrap_err(), DenyReason::OriginSessionsFull);
        table.remove_session(&ids[0]).unwrap();
        table
            .admit_session(
                &cfg,
                true,
                &from(PeerId::random(), 21, "192.0.2.1"),
                relay,
                PeerId::random(),
                target_at,
                t0,
            )
            .expect("the freed session slot is reusable");
        table.check_origin_counts(&cfg).unwrap();
    }

    #[test]
    fn the_target_origin_counts_too() {
        let cfg = origin_config();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        let relay = PeerId::random();
        // Targets behind one address, sources from everywhere.
        let behind = |n: usize| Some((conn(100 + n), Some("192.0.2.1".parse().unwrap())));
        for n in 0..2 {
            table
                .admit_session(
                    &cfg,
                    true,
                    &from(PeerId::random(), n, &format!("198.51.{n}.1")),
                    relay,
                    PeerId::random(),
                    behind(n),
                    t0,
                )
                .unwrap();
        }
        let third = table.admit_session(
            &cfg,
            true,
            &from(PeerId::random(), 9, "198.51.9.1"),
            relay,
            PeerId::random(),
            behind(9),
            t0,
        );
        assert_eq!(third.unwrap_err(), DenyReason::OriginSessionsFull);
    }

    #[test]
    fn one_network_cannot_fill_a_targets_session_slots() {
        let cfg = origin_config();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        let (relay, victim) = (PeerId::random(), PeerId::random());
        // The victim's own address is exempt here: only the share decides.
        let at = Some((conn(99), None));
        for n in 0..2 {
            table
                .admit_session(
                    &cfg,
                    true,
                    &from(PeerId::random(), n, &format!("203.0.113.{n}")),
                    relay,
                    victim,
                    at,
                    t0,
                )
                .unwrap();
        }
        let third = table.admit_session(
            &cfg,
            true,
            &from(PeerId::random(), 5, "203.0.113.5"),
            relay,
            victim,
            at,
            t0,
        );
        assert_eq!(third.unwrap_err(), DenyReason::NetworkToPeerFull);
        table
            .admit_session(
                &cfg,
                true,
                &from(PeerId::random(), 6, "192.0.2.1"),
                relay,
                victim,
                at,
                t0,
            )
            .expect("another network still reaches the target");
        table.check_origin_counts(&cfg).unwrap();
    }

    #[test]
    fn reservation_is_accepted_then_renewed_on_the_same_connection() {
        let cfg = config();
        let mut table = SessionTable::new(&cfg);
        let peer = PeerId::random();
        let t0 = Instant::now();
        assert_eq!(
            table.admit_reservation(&cfg, true, &who(peer, 1), t0),
            Ok(false)
        );
        assert_eq!(
            table.admit_reservation(&cfg, true, &who(peer, 1), t0),
            Ok(true)
        );
        let stats = table.stats(&cfg, true);
        assert_eq!(stats.reservations, 1);
        assert_eq!(stats.total_reservations_accepted, 1);
        assert_eq!(stats.total_reservations_renewed, 1);
    }

    #[test]
    fn full_reservation_table_is_refused_with_reservation_refused() {
        let cfg = config();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        for n in 0..2 {
            table
                .admit_reservation(&cfg, true, &who(PeerId::random(), n), t0)
                .unwrap();
        }
        let refused = table.admit_reservation(&cfg, true, &who(PeerId::random(), 9), t0);
        assert_eq!(refused, Err(DenyReason::ReservationsFull));
        assert_eq!(
            DenyReason::ReservationsFull.reserve_status(),
            crate::Status::ReservationRefused
        );
    }

    #[test]
    fn per_peer_reservation_cap_has_no_off_by_one() {
        let cfg = config(); // one per peer
        let mut table = SessionTable::new(&cfg);
        let peer = PeerId::random();
        let t0 = Instant::now();
        table
            .admit_reservation(&cfg, true, &who(peer, 1), t0)
            .unwrap();
        assert_eq!(
            table.admit_reservation(&cfg, true, &who(peer, 2), t0),
            Err(DenyReason::PeerReservationsFull)
        );
    }

    #[test]
    fn denied_and_relayed_peers_get_permission_denied() {
        let mut cfg = config();
        let foe = PeerId::random();
        cfg.policy.deny.insert(foe);
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        let denied = table.admit_reservation(&cfg, true, &who(foe, 1), t0);
        assert_eq!(denied, Err(DenyReason::NotAllowed));
        assert_eq!(
            DenyReason::NotAllowed.reserve_status(),
            crate::Status::PermissionDenied
        );
        let mut relayed = who(PeerId::random(), 2);
        relayed.relayed = true;
        assert_eq!(
            table.admit_reservation(&cfg, true, &relayed, t0),
            Err(DenyReason::RelayedConnection)
        );
        assert_eq!(table.stats(&cfg, true).reservations_denied.len(), 2);
    }

    #[test]
    fn disabled_relay_refuses_everything() {
        let cfg = config();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        let src = who(PeerId::random(), 1);
        assert_eq!(
            table.admit_reservation(&cfg, false, &src, t0),
            Err(DenyReason::Disabled)
        );
        let r = table.admit_session(
            &cfg,
            false,
            &src,
            PeerId::random(),
            PeerId::random(),
            Some((conn(2), None)),
            t0,
        );
        assert_eq!(r.unwrap_err(), DenyReason::Disabled);
    }

    #[test]
    fn reservations_expire_at_their_ttl() {
        let cfg = config();
        let mut table = SessionTable::new(&cfg);
        let peer = PeerId::random();
        let t0 = Instant::now();
        table
            .admit_reservation(&cfg, true, &who(peer, 1), t0)
            .unwrap();
        assert!(table
            .expire_reservations(t0 + Duration::from_secs(59))
            .is_empty());
        assert_eq!(table.reservation_connection(&peer), Some(conn(1)));
        assert_eq!(
            table.expire_reservations(t0 + Duration::from_secs(60)),
            vec![(peer, conn(1))]
        );
        assert_eq!(table.reservation_connection(&peer), None);
        assert_eq!(table.stats(&cfg, true).reservations, 0);
    }

    #[test]
    fn session_needs_a_target_reservation() {
        let cfg = config();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        let r = table.admit_session(
            &cfg,
            true,
            &who(PeerId::random(), 1),
            PeerId::random(),
            PeerId::random(),
            None,
            t0,
        );
        assert_eq!(r.unwrap_err(), DenyReason::NoReservation);
        assert_eq!(
            DenyReason::NoReservation.connect_status(),
            crate::Status::NoReservation
        );
    }

    #[test]
    fn connect_to_self_or_relay_is_refused() {
        let cfg = config();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        let me = PeerId::random();
        let relay = PeerId::random();
        let to_self = table.admit_session(
            &cfg,
            true,
            &who(me, 1),
            relay,
            me,
            Some((conn(1), None)),
            t0,
        );
        assert_eq!(to_self.unwrap_err(), DenyReason::InvalidTarget);
        let to_relay = table.admit_session(
            &cfg,
            true,
            &who(me, 1),
            relay,
            relay,
            Some((conn(1), None)),
            t0,
        );
        assert_eq!(to_relay.unwrap_err(), DenyReason::InvalidTarget);
    }

    #[test]
    fn session_cap_counts_pending_and_frees_on_removal() {
        let cfg = config(); // max 2 sessions
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        let relay = PeerId::random();
        let mut ids = vec![];
        for n in 0..2 {
            let (id, _) = table
                .admit_session(
                    &cfg,
                    true,
                    &who(PeerId::random(), n),
                    relay,
                    PeerId::random(),
                    Some((conn(10 + n), None)),
                    t0,
                )
                .unwrap();
            ids.push(id);
        }
        let third = table.admit_session(
            &cfg,
            true,
            &who(PeerId::random(), 5),
            relay,
            PeerId::random(),
            Some((conn(20), None)),
            t0,
        );
        assert_eq!(third.unwrap_err(), DenyReason::SessionsFull);
        assert_eq!(
            DenyReason::SessionsFull.connect_status(),
            crate::Status::ResourceLimitExceeded
        );
        table.remove_session(&ids[0]).unwrap();
        assert!(table
            .admit_session(
                &cfg,
                true,
                &who(PeerId::random(), 6),
                relay,
                PeerId::random(),
                Some((conn(21), None)),
                t0
            )
            .is_ok());
    }

    #[test]
    fn per_peer_session_cap_counts_the_target_too() {
        let cfg = Config::builder()
            .max_sessions_per_peer(1)
            .request_rate_per_peer(None)
            .request_rate_per_ip(None)
            .build()
            .unwrap();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        let relay = PeerId::random();
        let popular = PeerId::random();
        table
            .admit_session(
                &cfg,
                true,
                &who(PeerId::random(), 1),
                relay,
                popular,
                Some((conn(9), None)),
                t0,
            )
            .unwrap();
        // A different source, same target: the target is at its cap.
        let second = table.admit_session(
            &cfg,
            true,
            &who(PeerId::random(), 2),
            relay,
            popular,
            Some((conn(9), None)),
            t0,
        );
        assert_eq!(second.unwrap_err(), DenyReason::PeerSessionsFull);
    }

    #[test]
    fn total_bytes_include_ended_sessions() {
        let cfg = config();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        let (id, shared) = table
            .admit_session(
                &cfg,
                true,
                &who(PeerId::random(), 1),
                PeerId::random(),
                PeerId::random(),
                Some((conn(2), None)),
                t0,
            )
            .unwrap();
        table.session_mut(&id).unwrap().state = SessionState::Relaying {
            since: t0,
            since_wall: SystemTime::now(),
        };
        table.count_created();
        shared
            .source_to_target
            .fetch_add(10, std::sync::atomic::Ordering::Relaxed);
        shared
            .target_to_source
            .fetch_add(5, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(table.stats(&cfg, true).total_bytes_relayed, 15);
        assert_eq!(table.infos(t0).len(), 1);
        table.remove_session(&id).unwrap();
        let stats = table.stats(&cfg, true);
        assert_eq!(stats.total_bytes_relayed, 15);
        assert_eq!(stats.total_sessions_created, 1);
        assert_eq!(stats.active_sessions, 0);
    }

    #[test]
    fn rate_limited_requests_are_refused() {
        let cfg = Config::builder()
            .request_rate_per_peer(Some(RequestRate {
                burst: 1,
                interval: Duration::from_secs(60),
            }))
            .build()
            .unwrap();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        let peer = PeerId::random();
        table
            .admit_reservation(&cfg, true, &who(peer, 1), t0)
            .unwrap();
        assert_eq!(
            table.admit_reservation(&cfg, true, &who(peer, 1), t0),
            Err(DenyReason::RateLimited)
        );
    }

    #[test]
    fn live_limit_change_reaches_sessions() {
        let mut cfg = config();
        let mut table = SessionTable::new(&cfg);
        let t0 = Instant::now();
        let (id, _) = table
            .admit_session(
                &cfg,
                true,
                &who(PeerId::random(), 1),
                PeerId::random(),
                PeerId::random(),
                Some((conn(2), None)),
                t0,
            )
            .unwrap();
        cfg.limits = SessionLimits::UNLIMITED;
        table.apply_limits(&cfg);
        assert_eq!(table.limits_of(&id), Some(SessionLimits::UNLIMITED));
    }
}
