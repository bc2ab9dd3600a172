//! `relay_node ctl`: runs one admin command and renders the answer, as a table for people or as
//! JSON (`--json`) for scripts.

use std::{fmt::Write as _, time::Duration};

use super::{
    api::{DisableRequest, EnableRequest, ReservationView, SessionView, StatsView},
    AdminClient, ClientError,
};
use crate::{
    node_config::{NodeSettings, LIMIT_KEYS, POLICY_KEYS},
    IpNet, SessionId,
};

/// One `ctl` command.
#[derive(Clone, Debug, PartialEq)]
pub enum CtlCommand {
    /// Whether the node answers.
    Health,
    /// The relay's statistics.
    Stats,
    /// The live sessions.
    Sessions,
    /// The reservations.
    Reservations,
    /// Close one session.
    Close(SessionId),
    /// Enable, with the options of `POST /enable`.
    Enable(EnableRequest),
    /// Disable; with a drain, close what is left after it.
    Disable {
        /// The grace period before live sessions are closed, if any.
        drain: Option<Duration>,
    },
    /// The Prometheus text.
    Metrics,
    /// Show a group of the node's settings, or change them first.
    Settings(SettingsGroup, Option<SettingsChange>),
    /// The relay registry's status.
    Registry,
}

/// Which of the node's settings `ctl` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingsGroup {
    /// Every key.
    All,
    /// [`LIMIT_KEYS`].
    Limits,
    /// [`POLICY_KEYS`].
    Policy,
}

/// A change to the node's settings, applied live.
#[derive(Clone, Debug, PartialEq)]
pub enum SettingsChange {
    /// Set these keys.
    Set(Box<NodeSettings>),
    /// Add a peer id or a network to the deny list.
    Deny(String),
    /// Take a peer id or a network off the deny list.
    Undeny(String),
}

/// Runs `command` against `client`; returns what to print: a table, or JSON with `json`.
pub async fn run(
    client: &AdminClient,
    command: CtlCommand,
    json: bool,
) -> Result<String, ClientError> {
    let out = match command {
        CtlCommand::Health => {
            let health = client.health().await?;
            if json {
                to_json(&health)
            } else {
                format!("{} (enabled: {})\n", health.status, yes_no(health.enabled))
            }
        }
        CtlCommand::Stats => render_stats(&client.stats().await?, json),
        CtlCommand::Sessions => {
            let sessions = client.sessions().await?;
            if json {
                to_json(&sessions)
            } else {
                sessions_table(&sessions)
            }
        }
        CtlCommand::Reservations => {
            let reservations = client.reservations().await?;
            if json {
                to_json(&reservations)
            } else {
                reservations_table(&reservations)
            }
        }
        CtlCommand::Close(id) => {
            let closed = client.close_session(id).await?;
            if json {
                to_json(&closed)
            } else {
                format!("closing session {}\n", closed.closed)
            }
        }
        CtlCommand::Enable(request) => render_stats(&client.enable(&request).await?, json),
        CtlCommand::Disable { drain } => {
            let request = DisableRequest {
                drain_secs: drain.map(|d| d.as_secs_f64()),
            };
            render_stats(&client.disable(&request).await?, json)
        }
        CtlCommand::Metrics => client.metrics().await?,
        CtlCommand::Settings(group, change) => {
            let settings = match change {
                None => client.settings().await?,
                Some(SettingsChange::Set(patch)) => client.change_settings(&patch).await?,
                Some(SettingsChange::Deny(target)) => {
                    let current = client.settings().await?;
                    client
                        .change_settings(&deny_list_change(current, &target, true)?)
                        .await?
                }
                Some(SettingsChange::Undeny(target)) => {
                    let current = client.settings().await?;
                    client
                        .change_settings(&deny_list_change(current, &target, false)?)
                        .await?
                }
            };
            render_settings(&settings, group, json)
        }
        CtlCommand::Registry => {
            let registry = client.registry().await?;
            if json {
                to_json(&registry)
            } else {
                let mut out = format!(
                    "registry running: {}
registered:       {}
",
                    yes_no(registry.running),
                    yes_no(registry.registered)
                );
                if let Some(shard) = registry.shard {
                    let _ = writeln!(out, "shard:            {shard}");
                }
                let _ = writeln!(
                    out,
                    "last published:   {}",
                    registry
                        .last_published
                        .map(|t| format!("{t} (Unix seconds)"))
                        .unwrap_or_else(|| "never".into())
                );
                let _ = writeln!(out, "records served:   {}", registry.records_served);
                let _ = writeln!(out, "discoveries run:  {}", registry.discoveries);
                for addr in &registry.addrs {
                    let _ = writeln!(out, "  announces {addr}");
                }
                let _ = writeln!(out, "known relays:     {}", registry.known_relays.len());
                for peer in &registry.known_relays {
                    let _ = writeln!(out, "  {peer}");
                }
                out
            }
        }
    };
    Ok(out)
}

/// `KEY=VALUE` assignments as settings: each VALUE is TOML (`100`, `"30/1s"`, `["a", "b"]`,
/// `{ ip = 8 }`), or a bare word taken as a string (`off`, `30/1s`). An unknown key or a value
/// of the wrong type is an error naming the key.
pub fn parse_assignments(assignments: &[String]) -> Result<NodeSettings, String> {
    let mut text = String::new();
    for assignment in assignments {
        let (key, value) = assignment
            .split_once('=')
            .ok_or_else(|| format!("{assignment:?}: expected KEY=VALUE"))?;
        let (key, value) = (key.trim(), value.trim());
        let line = format!("{key} = {value}\n");
        let line = if line.parse::<toml::Table>().is_ok() {
            line
        } else {
            format!("{key} = {}\n", toml::Value::String(value.to_owned()))
        };
        text.push_str(&line);
    }
    NodeSettings::from_toml(&text).map_err(|e| e.to_string())
}

/// The change that puts `target` (a peer id, a CIDR network or an IP address) on the deny
/// list, or takes it off.
fn deny_list_change(
    current: NodeSettings,
    target: &str,
    deny: bool,
) -> Result<NodeSettings, ClientError> {
    let target = target.trim();
    let network = target
        .parse::<IpNet>()
        .ok()
        .or_else(|| target.parse::<std::net::IpAddr>().ok().map(IpNet::from));
    let edit = |list: Option<Vec<String>>, item: String| {
        let mut list = list.unwrap_or_default();
        list.retain(|x| *x != item);
        if deny {
            list.push(item);
        }
        Some(list)
    };
    if let Some(network) = network {
        return Ok(NodeSettings {
            deny_networks: edit(current.deny_networks, network.to_string()),
            ..Default::default()
        });
    }
    match target.parse::<libp2p::PeerId>() {
        Ok(peer) => Ok(NodeSettings {
            deny_peers: edit(current.deny_peers, peer.to_string()),
            ..Default::default()
        }),
        Err(_) => Err(ClientError::Decode(format!(
            "{target:?} is neither a peer id nor an IP network"
        ))),
    }
}

fn render_settings(settings: &NodeSettings, group: SettingsGroup, json: bool) -> String {
    let keys: Option<&[&str]> = match group {
        SettingsGroup::All => None,
        SettingsGroup::Limits => Some(LIMIT_KEYS),
        SettingsGroup::Policy => Some(POLICY_KEYS),
    };
    let mut table = match toml::Table::try_from(settings) {
        Ok(table) => table,
        Err(e) => return format!("cannot show the settings: {e}\n"),
    };
    if let Some(keys) = keys {
        table.retain(|key, _| keys.iter().any(|k| **k == *key));
    }
    if json {
        return to_json(&table);
    }
    toml::to_string(&table).unwrap_or_else(|e| format!("cannot show the settings: {e}\n"))
}

/// Parses a duration: `90`, `90s`, `1500ms`, `2m` or `1h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 60s, 500ms, 2m)"))?;
    let secs = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m or h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"))
}

fn render_stats(stats: &StatsView, json: bool) -> String {
    if json {
        return to_json(stats);
    }
    let denied = |m: &std::collections::BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_owned()
        } else {
            m.iter()
                .map(|(r, n)| format!("{r}={n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    let rows = vec![
        vec!["peer id".into(), stats.peer_id.clone()],
        vec!["enabled".into(), yes_no(stats.enabled).into()],
        vec![
            "sessions".into(),
            format!(
                "{} active, {} pending, {} max",
                stats.active_sessions, stats.pending_sessions, stats.max_sessions
            ),
        ],
        vec![
            "sessions created".into(),
            stats.total_sessions_created.to_string(),
        ],
        vec![
            "reservations".into(),
            format!(
                "{} held, {} max",
                stats.reservations, stats.max_reservations
            ),
        ],
        vec![
            "reservations made".into(),
            format!(
                "{} new, {} renewed",
                stats.total_reservations_accepted, stats.total_reservations_renewed
            ),
        ],
        vec![
            "bytes relayed".into(),
            format!(
                "{} ({} source->target, {} target->source)",
                bytes(stats.total_bytes_relayed),
                bytes(stats.total_bytes_source_to_target),
                bytes(stats.total_bytes_target_to_source)
            ),
        ],
        vec!["time throttled".into(), secs(stats.throttled_secs)],
        vec![
            "reservations denied".into(),
            denied(&stats.reservations_denied),
        ],
        vec!["sessions denied".into(), denied(&stats.sessions_denied)],
        vec!["bad requests".into(), stats.bad_requests.to_string()],
    ];
    table(&[], &rows)
}

fn sessions_table(sessions: &[SessionView]) -> String {
    if sessions.is_empty() {
        return "no live sessions\n".into();
    }
    let rows: Vec<Vec<String>> = sessions
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                short_peer(&s.source),
                short_peer(&s.target),
                secs(s.duration_secs),
                bytes(s.bytes_source_to_target),
                bytes(s.bytes_target_to_source),
                s.limits
                    .bandwidth
                    .map(|b| format!("{}/s", bytes(b)))
                    .unwrap_or_else(|| "unlimited".into()),
                secs(s.throttled_secs),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "SOURCE",
            "TARGET",
            "AGE",
            "UP",
            "DOWN",
            "BANDWIDTH",
            "THROTTLED",
        ],
        &rows,
    )
}

fn reservations_table(reservations: &[ReservationView]) -> String {
    if reservations.is_empty() {
        return "no reservations\n".into();
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let rows: Vec<Vec<String>> = reservations
        .iter()
        .map(|r| {
            vec![
                r.peer.clone(),
                format!("{}s", r.expires_at.saturating_sub(now)),
            ]
        })
        .collect();
    table(&["PEER", "EXPIRES IN"], &rows)
}

/// Left-aligned columns separated by two spaces; `header` may be empty.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let columns = rows
        .iter()
        .map(Vec::len)
        .chain([header.len()])
        .max()
        .unwrap_or(0);
    let mut widths = vec![0; columns];
    let all = std::iter::once(header.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .filter(|h| !h.is_empty())
        .chain(rows.iter().cloned())
        .collect::<Vec<_>>();
    for row in &all {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &all {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<width$}  ", width = widths[i]);
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn short_peer(peer: &str) -> String {
    let chars: Vec<char> = peer.chars().collect();
    if chars.len() <= 16 {
        return peer.to_owned();
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 6..].iter().collect();
    format!("{head}…{tail}")
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn secs(s: f64) -> String {
    format!("{s:.1}s")
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    let mut text =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_or_without_a_unit() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for junk in ["", "s", "-1s", "5 parsecs", "1d"] {
            assert!(parse_duration(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn a_table_aligns_its_columns() {
        let text = table(
            &["ID", "UP"],
            &[
                vec!["a".into(), "1 B".into()],
                vec!["bbbb".into(), "2 B".into()],
            ],
        );
        assert_eq!(text, "ID    UP\na     1 B\nbbbb  2 B\n");
    }

    #[test]
    fn byte_counts_read_in_binary_units() {
        assert_eq!(bytes(17), "17 B");
        assert_eq!(bytes(3 * 1024 * 1024 + 17), "3.0 MiB");
    }
}
