//! The relay node's TOML config file: every key round-trips (through the library and through
//! `relay_node --print-config`), flags override the file, and unknown keys and bad values are
//! refused with the key's name before the node starts.
#![cfg(feature = "admin")]

mod admin_support;
mod common;

use std::{path::Path, time::Duration};

use admin_support::run_to_end;
use macula_relay::node_config::{NodeConfig, NodeSettings};

/// Every key, none at its default.
const EVERY_KEY: &str = r#"
listen = ["/ip4/127.0.0.1/tcp/4101", "/ip4/127.0.0.1/udp/4101/quic-v1", "/ip4/127.0.0.1/tcp/4102/ws", "/ip4/127.0.0.1/tcp/4103/tls/ws"]
external = ["/dns4/relay.example.net/tcp/4101"]
allow_private_addrs = true
exempt_networks = ["10.0.0.0/8", "2001:db8::/32"]
data_dir = "/var/lib/macula-relay"
key_file = "/var/lib/macula-relay/relay.key"
ephemeral_identity = false
max_sessions = 7
bandwidth = 0
session_timeout = 90
max_session_bytes = 1048576
max_reservations = 11
reservation_ttl = 600
total_bandwidth = 12500000
max_sessions_per_peer = 9
max_reservations_per_peer = 3
max_sessions_per_network_to_peer = 0
connections_per_origin = "off"
reservations_per_origin = { ip = 4, ipv4_24 = 16, ipv6_64 = 4, ipv6_48 = 16 }
sessions_per_origin = { ip = 5 }
request_rate_per_peer = "10/2s"
request_rate_per_ip = "off"
max_inbound_connections = 5000
max_connections_per_peer = 4
max_pending_inbound = 64
allow_peers = ["12D3KooWCEiWvQTgGEhwdioXhuLwGFZZadtCKktdtcLpHGokhc3V"]
deny_peers = ["12D3KooWRBhwfeP2Y4TCx1SM6s9rUoHhR5STiGwxBhgFRcw3UERE"]
allow_networks = ["127.0.0.0/8", "::1/128"]
deny_networks = ["198.51.100.0/24"]
drain_timeout = 5
admin = "127.0.0.1:9333"
admin_token_file = "/etc/macula-relay/admin.token"
metrics = "127.0.0.1:9334"
log_format = "json"
tls_cert = "/etc/macula-relay/fullchain.pem"
tls_key = "/etc/macula-relay/privkey.pem"
registry = true
bootstrap = ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWCEiWvQTgGEhwdioXhuLwGFZZadtCKktdtcLpHGokhc3V"]
kad_protocol = "/ipfs/kad/1.0.0"

[[tiers]]
name = "trusted"
peers = ["12D3KooWCEiWvQTgGEhwdioXhuLwGFZZadtCKktdtcLpHGokhc3V"]
bandwidth = 0
session_timeout = 0
"#;

/// Every key the node takes, from its one definition (the flags of `NodeSettings`).
fn keys() -> Vec<String> {
    use clap::Args;
    NodeSettings::augment_args(clap::Command::new("macula-relay"))
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn resolve(text: &str) -> Result<NodeConfig, String> {
    NodeSettings::from_toml(text)
        .and_then(NodeSettings::resolve)
        .map_err(|e| e.to_string())
}

#[test]
fn every_key_round_trips() {
    let config = resolve(EVERY_KEY).unwrap();
    let relay = &config.relay;
    assert_eq!(relay.max_sessions(), 7);
    assert_eq!(relay.limits().bandwidth, None, "0 = unlimited");
    assert_eq!(relay.limits().duration, Some(Duration::from_secs(90)));
    assert_eq!(relay.limits().data, Some(1_048_576));
    assert_eq!(relay.max_reservations(), 11);
    assert_eq!(relay.reservation_ttl(), Duration::from_secs(600));
    assert_eq!(relay.total_bandwidth(), Some(12_500_000));
    assert_eq!(
        relay.max_sessions_per_network_to_peer(),
        usize::MAX,
        "0 = no cap"
    );
    assert_eq!(
        relay.connections_per_origin().per_ipv4_24,
        usize::MAX,
        "off"
    );
    assert_eq!(relay.sessions_per_origin().per_ip, 5);
    assert_eq!(
        relay.sessions_per_origin().per_ipv4_24,
        macula_relay::DEFAULT_SESSIONS_PER_ORIGIN.per_ipv4_24,
        "an absent block keeps its default"
    );
    assert_eq!(relay.request_rate_per_ip(), None, "off");
    assert_eq!(relay.policy().deny_networks.len(), 1);
    assert_eq!(relay.policy().overrides.len(), 1, "one peer in one tier");
    assert_eq!(config.metrics, Some("127.0.0.1:9334".parse().unwrap()));
    assert_eq!(config.drain_timeout, Duration::from_secs(5));
    assert_eq!(config.admin, Some("127.0.0.1:9333".parse().unwrap()));
    assert_eq!(config.listen.len(), 4);
    assert_eq!(
        config.tls_cert.as_deref(),
        Some(Path::new("/etc/macula-relay/fullchain.pem"))
    );
    assert_eq!(
        config.tls_key.as_deref(),
        Some(Path::new("/etc/macula-relay/privkey.pem"))
    );
    assert_eq!(config.external.len(), 1);
    assert!(relay.allow_private_addrs());
    assert_eq!(relay.exempt_networks().len(), 2);
    assert!(config.registry);
    assert_eq!(config.bootstrap.len(), 1);
    assert_eq!(config.kad_protocol.as_ref(), "/ipfs/kad/1.0.0");

    // Library: printed and read back, the same configuration, with every key present.
    let printed = config.to_toml();
    let table: toml::Table = printed.parse().unwrap();
    let keys = keys();
    for key in &keys {
        assert!(table.contains_key(key), "{key} missing from\n{printed}");
    }
    assert_eq!(table.len(), keys.len());
    assert_eq!(resolve(&printed).unwrap(), config);
    assert_eq!(
        NodeSettings::from_toml(&printed).unwrap(),
        config.to_settings()
    );

    // Process: `--config <file> --print-config` prints the same configuration.
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "relay.toml", EVERY_KEY);
    let output = run_to_end(&["--config", &file, "--print-config"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(resolve(&printed).unwrap(), config);
}

#[test]
fn the_defaults_print_as_a_valid_config() {
    let data_dir = tempfile::tempdir().unwrap();
    let output = common::process::run_to_end_in(&["--print-config"], data_dir.path());
    assert!(output.status.success());
    let printed = String::from_utf8(output.stdout).unwrap();
    let defaults = NodeSettings {
        data_dir: Some(data_dir.path().to_owned()),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    assert_eq!(resolve(&printed).unwrap(), defaults);
    assert!(
        printed.contains(&format!(
            "key_file = \"{}/identity.key\"",
            data_dir.path().display()
        )),
        "the key lives in the data directory by default:\n{printed}"
    );
    assert!(printed.contains("max_sessions = 100"), "{printed}");
}

#[test]
fn flags_override_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "relay.toml", EVERY_KEY);
    let output = run_to_end(&[
        "--config",
        &file,
        "--max-sessions",
        "42",
        "--listen",
        "/ip4/127.0.0.1/tcp/4999",
        "--drain-timeout",
        "0",
        "--tls-cert",
        "/tmp/other.pem",
        "--print-config",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let config = resolve(&String::from_utf8(output.stdout).unwrap()).unwrap();
    assert_eq!(config.relay.max_sessions(), 42);
    assert_eq!(
        config.listen,
        vec!["/ip4/127.0.0.1/tcp/4999".parse().unwrap()]
    );
    assert_eq!(config.drain_timeout, Duration::ZERO);
    assert_eq!(
        config.tls_cert.as_deref(),
        Some(Path::new("/tmp/other.pem"))
    );
    // Keys without a flag on the command line keep the file's value.
    assert_eq!(config.relay.max_reservations(), 11);
    assert_eq!(
        config.tls_key.as_deref(),
        Some(Path::new("/etc/macula-relay/privkey.pem"))
    );
    assert_eq!(
        config.relay.limits().duration,
        Some(Duration::from_secs(90))
    );
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    for (text, key) in [
        ("max_sesions = 3\n", "max_sesions"),
        ("[relay]\nmax_sessions = 3\n", "relay"),
        ("max_sessions = 3\nadmin_token = \"x\"\n", "admin_token"),
    ] {
        let error = resolve(text).unwrap_err();
        assert!(error.contains(&format!("`{key}`")), "{text:?}: {error}");
    }
    // The node does not start.
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "relay.toml", "max_sesions = 3\n");
    let output = run_to_end(&["--config", &file, "--listen", "/ip4/127.0.0.1/tcp/0"]);
    assert!(!output.status.success());
    assert!(
        output.stdout.is_empty(),
        "the node must not start listening"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("max_sesions"));
}

#[test]
fn bad_values_are_refused_with_the_key_name() {
    let cases = [
        ("max_sessions = \"many\"", "max_sessions"),
        ("max_sessions = 0", "max_sessions"),
        ("max_sessions = -1", "max_sessions"),
        ("bandwidth = -5", "bandwidth"),
        ("bandwidth = 1.5", "bandwidth"),
        ("session_timeout = 99999999999", "session_timeout"),
        ("max_session_bytes = true", "max_session_bytes"),
        ("max_reservations = 0", "max_reservations"),
        ("reservation_ttl = 0", "reservation_ttl"),
        ("drain_timeout = \"30s\"", "drain_timeout"),
        ("listen = []", "listen"),
        ("listen = [\"not-a-multiaddr\"]", "listen"),
        ("listen = \"/ip4/127.0.0.1/tcp/1\"", "listen"),
        ("external = [1]", "external"),
        ("key_file = 3", "key_file"),
        ("admin = \"localhost\"", "admin"),
        ("admin = \"0.0.0.0:9101\"", "admin_token_file"),
        ("admin_token_file = [\"a\"]", "admin_token_file"),
        ("tls_cert = 1", "tls_cert"),
        ("tls_cert = \"/c.pem\"", "tls_key"),
        ("tls_key = \"/k.pem\"", "tls_cert"),
        ("listen = [\"/ip4/127.0.0.1/tcp/1/tls/ws\"]", "tls_cert"),
        ("listen = [\"/ip4/127.0.0.1/tcp/1/wss\"]", "tls_cert"),
        ("exempt_networks = [\"10.0.0.0\"]", "exempt_networks"),
        ("exempt_networks = [\"10.0.0.0/33\"]", "exempt_networks"),
        ("allow_private_addrs = \"yes\"", "allow_private_addrs"),
        ("kad_protocol = \"ipfs/kad/1.0.0\"", "kad_protocol"),
        ("kad_protocol = \"/\"", "kad_protocol"),
        ("kad_protocol = \"/ipfs kad\"", "kad_protocol"),
        ("kad_protocol = 1", "kad_protocol"),
        (
            "registry = false\nkad_protocol = \"/ipfs/kad/1.0.0\"",
            "kad_protocol",
        ),
    ];
    for (text, key) in cases {
        let error = resolve(text).unwrap_err();
        assert!(error.contains(&format!("`{key}`")), "{text:?}: {error}");
    }
    // A TOML syntax error names the line.
    let error = resolve("max_sessions = \n").unwrap_err();
    assert!(error.contains("line 1"), "{error}");

    // The node does not start half-configured: nothing listens, the error names the key.
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "relay.toml",
        "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nreservation_ttl = 0\n",
    );
    let output = run_to_end(&["--config", &file]);
    assert!(!output.status.success());
    assert!(
        output.stdout.is_empty(),
        "the node must not start listening"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("reservation_ttl"));
    // So does a bad flag value, with the flag's key.
    let output = run_to_end(&["--listen", "/ip4/127.0.0.1/tcp/0", "--max-sessions", "0"]);
    assert!(!output.status.success());
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("max_sessions"));
}

#[test]
fn a_missing_config_file_is_refused_with_its_path() {
    let output = run_to_end(&["--config", "/nonexistent/relay.toml", "--print-config"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/relay.toml"));
}
