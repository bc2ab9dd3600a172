//! When a relay registers, republishes and withdraws, free of I/O: driven by the relay's state
//! and the caller's clock.

use std::time::{Duration, Instant};

use libp2p::Multiaddr;

/// The relay as the registry sees it: status, capability, addresses, load and limits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayState {
    /// Whether the relay accepts reservations and sessions.
    pub enabled: bool,
    /// Whether it has at least one confirmed external address (or operator-set endpoints) that
    /// its address hygiene lets it announce.
    pub capable: bool,
    /// The addresses to announce.
    pub addrs: Vec<Multiaddr>,
    /// Maximum concurrent sessions.
    pub max_sessions: u32,
    /// Sessions relaying or being set up.
    pub active_sessions: u32,
    /// Reservations held.
    pub reservations: u32,
    /// Maximum reservations.
    pub max_reservations: u32,
    /// Per-session bandwidth, bytes per second and direction.
    pub bandwidth: Option<u64>,
    /// Session timeout.
    pub session_timeout: Option<Duration>,
    /// Per-session data cap.
    pub max_session_bytes: Option<u64>,
}

impl RelayState {
    fn spare_sessions(&self) -> u32 {
        self.max_sessions.saturating_sub(self.active_sessions)
    }
    fn spare_reservations(&self) -> u32 {
        self.max_reservations.saturating_sub(self.reservations)
    }
}

/// Why a record was republished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepublishReason {
    /// Half of the record's lifetime passed.
    Refresh,
    /// Spare sessions or reservations moved by the configured share of capacity.
    LoadChanged,
    /// Addresses, capacity or limits changed.
    DetailsChanged,
}

/// Why a relay withdrew from the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WithdrawReason {
    /// The relay was disabled.
    Disabled,
    /// It has no confirmed external address any more.
    NotCapable,
}

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Announce the relay (it became enabled and capable).
    Register,
    /// Publish a new record.
    Republish(RepublishReason),
    /// Publish a withdrawal and stop announcing.
    Withdraw(WithdrawReason),
}

#[derive(Clone, Debug)]
struct Published {
    state: RelayState,
    at: Instant,
}

/// The relay side's publication schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    ttl: Duration,
    min_interval: Duration,
    load_change_percent: u8,
    published: Option<Published>,
    last_issued_ms: u64,
}

impl Schedule {
    /// A schedule for records living `ttl`, republished for load at most every `min_interval`
    /// and only when spare capacity moves by `load_change_percent` of capacity (at least 1).
    pub fn new(ttl: Duration, min_interval: Duration, load_change_percent: u8) -> Self {
        Self {
            ttl,
            min_interval,
            load_change_percent,
            published: None,
            last_issued_ms: 0,
        }
    }

    /// Whether the relay is registered (its last publication was not a withdrawal).
    pub fn is_registered(&self) -> bool {
        self.published.is_some()
    }

    /// What to do given the relay's state at `now`; `None` = nothing yet.
    pub fn decide(&self, state: &RelayState, now: Instant) -> Option<Action> {
        let Some(published) = &self.published else {
            return (state.enabled && state.capable).then_some(Action::Register);
        };
        if !state.enabled {
            return Some(Action::Withdraw(WithdrawReason::Disabled));
        }
        if !state.capable {
            return Some(Action::Withdraw(WithdrawReason::NotCapable));
        }
        if now >= published.at + self.ttl / 2 {
            return Some(Action::Republish(RepublishReason::Refresh));
        }
        let reason = self.change(&published.state, state)?;
        (now >= published.at + self.min_interval).then_some(Action::Republish(reason))
    }

    /// When [`decide`](Self::decide) may next have something to do without the state changing.
    pub fn next_wakeup(&self, state: &RelayState) -> Option<Instant> {
        let published = self.published.as_ref()?;
        let refresh = published.at + self.ttl / 2;
        Some(match self.change(&published.state, state) {
            Some(_) => refresh.min(published.at + self.min_interval),
            None => refresh,
        })
    }

    /// Records that `state` was published at `now`.
    pub fn on_published(&mut self, state: RelayState, now: Instant) {
        self.published = Some(Published { state, at: now });
    }

    /// Records a withdrawal.
    pub fn on_withdrawn(&mut self) {
        self.published = None;
    }

    /// The issue and expiry times (UNIX ms) of a record signed at `now_ms`: strictly after the
    /// previous one even if the clock did not move or went back.
    pub fn stamp(&mut self, now_ms: u64) -> (u64, u64) {
        let issued = now_ms.max(self.last_issued_ms + 1);
        self.last_issued_ms = issued;
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        (issued, issued.saturating_add(ttl))
    }

    fn change(&self, old: &RelayState, new: &RelayState) -> Option<RepublishReason> {
        if old.addrs != new.addrs
            || old.max_sessions != new.max_sessions
            || old.max_reservations != new.max_reservations
            || old.bandwidth != new.bandwidth
            || old.session_timeout != new.session_timeout
            || old.max_session_bytes != new.max_session_bytes
        {
            return Some(RepublishReason::DetailsChanged);
        }
        let moved = |a: u32, b: u32, capacity: u32| {
            let threshold =
                (u64::from(capacity) * u64::from(self.load_change_percent) / 100).max(1);
            u64::from(a.abs_diff(b)) >= threshold
        };
        (moved(old.spare_sessions(), new.spare_sessions(), new.max_sessions)
            || moved(
                old.spare_reservations(),
                new.spare_reservations(),
                new.max_reservations,
            ))
        .then_some(RepublishReason::LoadChanged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(600);
    const MIN: Duration = Duration::from_secs(30);

    fn relay(active: u32) -> RelayState {
        RelayState {
            enabled: true,
            capable: true,
            addrs: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
            max_sessions: 100,
            active_sessions: active,
            reservations: 0,
            max_reservations: 100,
            ..RelayState::default()
        }
    }

    fn registered(at: Instant) -> Schedule {
        let mut s = Schedule::new(TTL, MIN, 10);
        s.on_published(relay(0), at);
        s
    }

    #[test]
    fn registers_only_when_enabled_and_capable() {
        let s = Schedule::new(TTL, MIN, 10);
        let now = Instant::now();
        assert_eq!(s.decide(&relay(0), now), Some(Action::Register));
        let not_capable = RelayState {
            capable: false,
            ..relay(0)
        };
        assert_eq!(s.decide(&not_capable, now), None);
        let disabled = RelayState {
            enabled: false,
            ..relay(0)
        };
        assert_eq!(s.decide(&disabled, now), None);
    }

    #[test]
    fn disable_or_lost_capability_withdraws_at_once() {
        let t0 = Instant::now();
        let s = registered(t0);
        let disabled = RelayState {
            enabled: false,
            ..relay(0)
        };
        assert_eq!(
            s.decide(&disabled, t0),
            Some(Action::Withdraw(WithdrawReason::Disabled))
        );
        let lost = RelayState {
            capable: false,
            ..relay(0)
        };
        assert_eq!(
            s.decide(&lost, t0),
            Some(Action::Withdraw(WithdrawReason::NotCapable))
        );
    }

    #[test]
    fn refreshes_at_half_the_record_lifetime() {
        let t0 = Instant::now();
        let s = registered(t0);
        assert_eq!(
            s.decide(&relay(0), t0 + TTL / 2 - Duration::from_secs(1)),
            None
        );
        assert_eq!(
            s.decide(&relay(0), t0 + TTL / 2),
            Some(Action::Republish(RepublishReason::Refresh))
        );
        assert_eq!(s.next_wakeup(&relay(0)), Some(t0 + TTL / 2));
    }

    #[test]
    fn small_load_changes_are_not_republished() {
        let t0 = Instant::now();
        let s = registered(t0);
        assert_eq!(s.decide(&relay(9), t0 + MIN * 2), None);
    }

    #[test]
    fn material_load_change_is_republished_no_sooner_than_the_rate_limit() {
        let t0 = Instant::now();
        let s = registered(t0);
        assert_eq!(s.decide(&relay(10), t0 + Duration::from_secs(1)), None);
        assert_eq!(s.next_wakeup(&relay(10)), Some(t0 + MIN));
        assert_eq!(
            s.decide(&relay(10), t0 + MIN),
            Some(Action::Republish(RepublishReason::LoadChanged))
        );
    }

    #[test]
    fn address_change_is_a_details_change() {
        let t0 = Instant::now();
        let s = registered(t0);
        let moved = RelayState {
            addrs: vec!["/ip4/127.0.0.1/tcp/2".parse().unwrap()],
            ..relay(0)
        };
        assert_eq!(
            s.decide(&moved, t0 + MIN),
            Some(Action::Republish(RepublishReason::DetailsChanged))
        );
    }

    #[test]
    fn zero_percent_threshold_still_needs_one_slot() {
        let t0 = Instant::now();
        let mut s = Schedule::new(TTL, Duration::ZERO, 0);
        s.on_published(relay(0), t0);
        assert_eq!(s.decide(&relay(0), t0), None);
        assert_eq!(
            s.decide(&relay(1), t0),
            Some(Action::Republish(RepublishReason::LoadChanged))
        );
    }

    #[test]
    fn issue_times_strictly_increase() {
        let mut s = Schedule::new(TTL, MIN, 10);
        let (a, ea) = s.stamp(1000);
        let (b, _) = s.stamp(1000);
        let (c, _) = s.stamp(500);
        assert!(a < b && b < c);
        assert_eq!(ea, 1000 + 600_000);
    }
}
