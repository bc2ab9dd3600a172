//! `relay_node ctl`: runs one admin command and renders the answer, as a table for people or as
//! JSON (`--json`) for scripts.

use std::{fmt::Write as _, time::Duration};

use super::{
    api::{DisableRequest, EnableRequest, ReservationView, SessionView, StatsView},
    AdminClient, ClientError,
};
use crate::SessionId;

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
    };
    Ok(out)
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
