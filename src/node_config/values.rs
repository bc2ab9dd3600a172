//! Setting values with a syntax of their own, the same in the config file, on the command line
//! and in the admin API: per-origin caps, request rates, limit tiers, the log format.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{admin::ctl::parse_duration, OriginLimits, RequestRate};

/// How the node logs (to stderr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Per-origin caps: `"off"` (no cap, for a load test from one host), or caps per address block,
/// each absent one at its default. In TOML `{ ip = 64, ipv4_24 = 256 }` or `"off"`; on the
/// command line `ip=64,ipv4_24=256` or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OriginCaps {
    /// No cap.
    Off(Off),
    /// Caps per address block.
    Caps(BlockCaps),
}

/// The word `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Off;

impl Serialize for Off {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("off")
    }
}

impl<'de> Deserialize<'de> for Off {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let word = String::deserialize(d)?;
        match word.as_str() {
            "off" => Ok(Off),
            _ => Err(serde::de::Error::custom(format!(
                "{word:?}: expected \"off\" or a table of caps"
            ))),
        }
    }
}

/// Caps per address block; an absent one keeps its default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockCaps {
    /// One address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<usize>,
    /// One IPv4 /24.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_24: Option<usize>,
    /// One IPv6 /64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_64: Option<usize>,
    /// One IPv6 /48.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_48: Option<usize>,
}

impl OriginCaps {
    /// The caps in force, starting from `defaults`; `off` is no cap at all.
    pub fn limits(&self, defaults: OriginLimits) -> Result<OriginLimits, String> {
        match self {
            OriginCaps::Off(Off) => Ok(OriginLimits {
                per_ip: usize::MAX,
                per_ipv4_24: usize::MAX,
                per_ipv6_64: usize::MAX,
                per_ipv6_48: usize::MAX,
            }),
            OriginCaps::Caps(c) => {
                let limits = OriginLimits {
                    per_ip: c.ip.unwrap_or(defaults.per_ip),
                    per_ipv4_24: c.ipv4_24.unwrap_or(defaults.per_ipv4_24),
                    per_ipv6_64: c.ipv6_64.unwrap_or(defaults.per_ipv6_64),
                    per_ipv6_48: c.ipv6_48.unwrap_or(defaults.per_ipv6_48),
                };
                let values = [
                    limits.per_ip,
                    limits.per_ipv4_24,
                    limits.per_ipv6_64,
                    limits.per_ipv6_48,
                ];
                if values.contains(&0) {
                    return Err("a cap of 0 would refuse everyone (use \"off\" for no cap)".into());
                }
                if values.iter().any(|v| *v as u64 > super::TOML_MAX) {
                    return Err(format!("at most {}", super::TOML_MAX));
                }
                Ok(limits)
            }
        }
    }

    /// How `limits` is written: `off` when nothing is capped.
    pub fn of(limits: OriginLimits) -> OriginCaps {
        if limits.per_ip == usize::MAX {
            return OriginCaps::Off(Off);
        }
        OriginCaps::Caps(BlockCaps {
            ip: Some(limits.per_ip),
            ipv4_24: Some(limits.per_ipv4_24),
            ipv6_64: Some(limits.per_ipv6_64),
            ipv6_48: Some(limits.per_ipv6_48),
        })
    }
}

impl FromStr for OriginCaps {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text.trim() == "off" {
            return Ok(OriginCaps::Off(Off));
        }
        let mut caps = BlockCaps::default();
        for part in text.split(',') {
            let (key, value) = part.split_once('=').ok_or_else(|| {
                format!("{part:?}: expected BLOCK=N (ip, ipv4_24, ipv6_64, ipv6_48) or off")
            })?;
            let value: usize = value.trim().parse().map_err(|e| format!("{part:?}: {e}"))?;
            let slot = match key.trim() {
                "ip" => &mut caps.ip,
                "ipv4_24" => &mut caps.ipv4_24,
                "ipv6_64" => &mut caps.ipv6_64,
                "ipv6_48" => &mut caps.ipv6_48,
                other => return Err(format!("{other:?}: not ip, ipv4_24, ipv6_64 or ipv6_48")),
            };
            *slot = Some(value);
        }
        Ok(OriginCaps::Caps(caps))
    }
}

/// A request-rate limit: `"BURST/INTERVAL"` (up to BURST requests back to back, then one more
/// each INTERVAL, e.g. `"30/1s"`, `"120/250ms"`), or `"off"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSetting(pub Option<RequestRate>);

impl FromStr for RateSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "off" {
            return Ok(RateSetting(None));
        }
        let (burst, interval) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?}: expected BURST/INTERVAL (e.g. 30/1s) or off"))?;
        let burst: u32 = burst
            .trim()
            .parse()
            .map_err(|e| format!("{text:?}: burst: {e}"))?;
        let interval = parse_duration(interval)?;
        if burst == 0 || interval.is_zero() {
            return Err(format!(
                "{text:?}: burst and interval must not be zero (use off for no limit)"
            ));
        }
        Ok(RateSetting(Some(RequestRate { burst, interval })))
    }
}

impl fmt::Display for RateSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("off"),
            Some(rate) => write!(f, "{}/{}", rate.burst, duration_text(rate.interval)),
        }
    }
}

fn duration_text(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_secs_f64() * 1000.0)
    }
}

impl Serialize for RateSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A limit tier: peers that get their own session limits (each absent limit at the default;
/// 0 = unlimited). In TOML an entry of `[[tiers]]`; on the command line
/// `NAME:peers=ID+ID,bandwidth=N,session_timeout=SECS,max_session_bytes=N`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSetting {
    /// The tier's name (for people).
    pub name: String,
    /// Its peers.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Bytes per second and direction; 0 = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<u64>,
    /// Session timeout, seconds; 0 = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_timeout: Option<u64>,
    /// Bytes per direction; 0 = no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_session_bytes: Option<u64>,
}

impl FromStr for TierSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (name, rest) = text
            .split_once(':')
            .ok_or_else(|| format!("{text:?}: expected NAME:peers=ID+ID,bandwidth=N,..."))?;
        let mut tier = TierSetting {
            name: name.trim().to_owned(),
            ..Default::default()
        };
        for part in rest.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: expected KEY=VALUE"))?;
            let number = || {
                value
                    .trim()
                    .parse::<u64>()
                    .map_err(|e| format!("{part:?}: {e}"))
            };
            match key.trim() {
                "peers" => tier.peers = value.split('+').map(|p| p.trim().to_owned()).collect(),
                "bandwidth" => tier.bandwidth = Some(number()?),
                "session_timeout" => tier.session_timeout = Some(number()?),
                "max_session_bytes" => tier.max_session_bytes = Some(number()?),
                other => {
                    return Err(format!(
                        "{other:?}: not peers, bandwidth, session_timeout or max_session_bytes"
                    ))
                }
            }
        }
        Ok(tier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_back_as_written() {
        for text in ["30/1s", "120/250ms", "off", "5/2m"] {
            let rate: RateSetting = text.parse().unwrap();
            let again: RateSetting = rate.to_string().parse().unwrap();
            assert_eq!(rate, again, "{text}");
        }
        assert!("0/1s".parse::<RateSetting>().is_err());
        assert!("30".parse::<RateSetting>().is_err());
    }

    #[test]
    fn origin_caps_off_lifts_every_cap_and_a_partial_table_keeps_the_rest() {
        let defaults = crate::DEFAULT_CONNECTIONS_PER_ORIGIN;
        let off: OriginCaps = "off".parse().unwrap();
        assert_eq!(off.limits(defaults).unwrap().per_ipv4_24, usize::MAX);
        assert_eq!(OriginCaps::of(off.limits(defaults).unwrap()), off);
        let some: OriginCaps = "ip=3".parse().unwrap();
        let limits = some.limits(defaults).unwrap();
        assert_eq!(
            (limits.per_ip, limits.per_ipv4_24),
            (3, defaults.per_ipv4_24)
        );
        assert!("ip=0"
            .parse::<OriginCaps>()
            .unwrap()
            .limits(defaults)
            .is_err());
        assert!("host=3".parse::<OriginCaps>().is_err());
    }

    #[test]
    fn a_tier_flag_names_its_peers_and_limits() {
        let tier: TierSetting = "trusted:peers=a+b,bandwidth=0,session_timeout=60"
            .parse()
            .unwrap();
        assert_eq!(tier.name, "trusted");
        assert_eq!(tier.peers, ["a", "b"]);
        assert_eq!(
            (tier.bandwidth, tier.session_timeout, tier.max_session_bytes),
            (Some(0), Some(60), None)
        );
    }
}
