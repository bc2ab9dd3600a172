//! The `macula-relay` binary as an operator runs it: a stable identity in its data directory,
//! live reload on SIGHUP without dropping a session (and refusal of a bad file), live limits and
//! policy through `ctl`, and a read-only metrics listener whose `/readyz` follows the relay.
#![cfg(feature = "cli")]

mod admin_support;
mod common;

use std::path::Path;

use admin_support::{eventually, run_to_end_async, AdminNode, Scrape};
use common::{process::RelayProcess, transfer, TestClient};
use macula_relay::node_config::KEY_FILE_NAME;

const LOOPBACK: [&str; 2] = ["--listen", "/ip4/127.0.0.1/tcp/0"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_is_created_in_the_data_directory_and_kept_across_restarts() {
    common::init_tracing();
    let first = RelayProcess::start(&LOOPBACK);
    let key = first.data_dir.path().join(KEY_FILE_NAME);
    assert!(key.exists(), "{} is created on first start", key.display());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key is readable by its owner only");
    }
    let peer_id = first.peer_id;
    assert!(
        first.log().contains(&format!("peer_id={peer_id}")) && first.log().contains("created=true"),
        "the log names the key file and peer id:\n{}",
        first.log()
    );
    let data_dir = first.kill_keeping_data();

    let mut args = LOOPBACK.to_vec();
    args.push("--allow-private-addrs");
    let again = RelayProcess::start_in(&args, data_dir);
    assert_eq!(
        again.peer_id, peer_id,
        "the same data directory, the same peer id"
    );
    assert!(again.log().contains("created=false"), "{}", again.log());

    let mut ephemeral_args = LOOPBACK.to_vec();
    ephemeral_args.push("--ephemeral-identity");
    let ephemeral = RelayProcess::start(&ephemeral_args);
    assert_ne!(ephemeral.peer_id, peer_id);
    assert!(
        ephemeral.log().contains("ephemeral identity"),
        "{}",
        ephemeral.log()
    );
    assert!(
        !ephemeral.data_dir.path().join(KEY_FILE_NAME).exists(),
        "an ephemeral identity is stored nowhere"
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// A config file for a node on loopback with its admin API on a free port.
fn config_text(extra: &str) -> String {
    format!(
        "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nadmin = \"127.0.0.1:0\"\n\
         allow_private_addrs = true\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_new_limits_to_a_live_session_and_refuses_a_bad_file_whole() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.toml");
    write(&file, &config_text("bandwidth = 0\nmax_sessions = 10\n"));
    let node = AdminNode::start(&["--config", file.to_str().unwrap()]);
    let admin = node.client(None);

    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    node.reserve(&mut target).await;
    let _served = target.serve_transfers();
    node.dial_through(&mut source, target.peer_id)
        .await
        .unwrap();
    const N: u64 = 64 * 1024;
    assert!(
        source
            .transfer(target.peer_id, N)
            .await
            .unwrap()
            .peer_got_what_we_sent
    );

    write(
        &file,
        &config_text(
            "bandwidth = 500000\nmax_sessions = 20\ntotal_bandwidth = 4000000\n\
             deny_networks = [\"198.51.100.0/24\"]\nrequest_rate_per_ip = \"off\"\n",
        ),
    );
    node.signal("HUP");
    node.wait_log("the reload applied", |l| {
        l.contains("configuration applied").then_some(())
    });
    let settings = admin.settings().await.unwrap();
    assert_eq!(settings.max_sessions, Some(20));
    assert_eq!(settings.total_bandwidth, Some(4_000_000));
    assert_eq!(
        settings.deny_networks.as_deref(),
        Some(&["198.51.100.0/24".to_owned()][..])
    );
    let sessions = admin.sessions().await.unwrap();
    assert_eq!(sessions.len(), 1, "the live session survived the reload");
    assert_eq!(
        sessions[0].limits.bandwidth,
        Some(500_000),
        "and runs under the new per-session bandwidth"
    );
    let outcome = source.transfer(target.peer_id, N).await.unwrap();
    assert!(outcome.peer_got_what_we_sent);
    assert_eq!(
        outcome.received_hash,
        transfer::expected_hash(transfer::DOWN_SEED, N)
    );

    // A bad value: refused whole, with the key's name; nothing changes.
    write(&file, &config_text("max_sessions = 0\nbandwidth = 1\n"));
    node.signal("HUP");
    let refused = node.wait_log("the reload refused", |l| {
        l.contains("configuration not reloaded")
            .then(|| l.to_owned())
    });
    assert!(refused.contains("max_sessions"), "{refused}");
    let settings = admin.settings().await.unwrap();
    assert_eq!(
        (settings.max_sessions, settings.bandwidth),
        (Some(20), Some(500_000))
    );
    // A key only a restart changes keeps its running value, and is named.
    write(
        &file,
        &config_text("max_sessions = 30\nmetrics = \"127.0.0.1:9\"\n"),
    );
    node.signal("HUP");
    let restart = node.wait_log("the keys that need a restart", |l| {
        l.contains("need a restart").then(|| l.to_owned())
    });
    assert!(restart.contains("metrics"), "{restart}");
    assert_eq!(admin.settings().await.unwrap().metrics, None);
    assert_eq!(admin.settings().await.unwrap().max_sessions, Some(30));
    assert_eq!(admin.sessions().await.unwrap().len(), 1);
}

/// Runs `macula-relay ctl --config <file> <args>` and returns its stdout, failing on error.
async fn ctl(config: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "ctl".to_owned(),
        "--config".to_owned(),
        config.display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    let output = run_to_end_async(all).await;
    assert!(
        output.status.success(),
        "ctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_finds_the_node_from_its_config_file_and_changes_limits_and_policy_live() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    write(&token, "0123456789abcdef0123456789abcdef\n");
    // ctl reads `admin` from the file: the node needs a fixed port there.
    let port = free_port();
    let file = dir.path().join("relay.toml");
    write(
        &file,
        &format!(
            "listen = [\"/ip4/127.0.0.1/tcp/0\"]\nadmin = \"127.0.0.1:{port}\"\n\
             admin_token_file = \"{}\"\nallow_private_addrs = true\n",
            token.display()
        ),
    );
    let _node = RelayProcess::start(&["--config", file.to_str().unwrap()]);

    let limits = ctl(&file, &["limits"]).await;
    assert!(limits.contains("max_sessions = 100"), "{limits}");
    assert!(!limits.contains("deny_networks"), "limits only:\n{limits}");
    let limits = ctl(
        &file,
        &[
            "limits",
            "set",
            "total_bandwidth=12500000",
            "request_rate_per_ip=off",
        ],
    )
    .await;
    assert!(limits.contains("total_bandwidth = 12500000"), "{limits}");
    assert!(limits.contains("request_rate_per_ip = \"off\""), "{limits}");

    ctl(&file, &["policy", "deny", "198.51.100.0/24"]).await;
    let peer = libp2p::PeerId::random().to_string();
    let policy = ctl(&file, &["policy", "deny", &peer]).await;
    assert!(policy.contains("198.51.100.0/24"), "{policy}");
    assert!(policy.contains(&peer), "{policy}");
    let policy = ctl(&file, &["policy", "undeny", "198.51.100.0/24"]).await;
    assert!(!policy.contains("198.51.100.0/24"), "{policy}");

    let registry = ctl(&file, &["registry"]).await;
    for line in [
        "registry running: yes",
        "shard:",
        "records served:",
        "discoveries run:",
    ] {
        assert!(
            registry.contains(line),
            "{line:?} missing from:\n{registry}"
        );
    }

    // A bad value names its key; a key that needs a restart is refused.
    let all = |args: &[&str]| {
        let mut v = vec![
            "ctl".to_owned(),
            "--config".to_owned(),
            file.display().to_string(),
        ];
        v.extend(args.iter().map(|a| a.to_string()));
        v
    };
    let bad = run_to_end_async(all(&["limits", "set", "max_sessions=0"])).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("max_sessions"));
    let restart = run_to_end_async(all(&["limits", "set", "metrics=\"127.0.0.1:9\""])).await;
    assert!(!restart.status.success());
    assert!(
        String::from_utf8_lossy(&restart.stderr).contains("restart"),
        "{}",
        String::from_utf8_lossy(&restart.stderr)
    );

    // The environment names the node too.
    let output = tokio::task::spawn_blocking({
        let admin = format!("http://127.0.0.1:{port}");
        let token = token.clone();
        move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_macula-relay"))
                .args(["ctl", "health"])
                .env("MACULA_RELAY_ADMIN", admin)
                .env("MACULA_RELAY_ADMIN_TOKEN_FILE", token)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_needs_no_token_and_its_readyz_follows_the_relay() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin.token");
    write(&token, "0123456789abcdef0123456789abcdef\n");
    let node = AdminNode::start(&[
        "--admin-token-file",
        token.to_str().unwrap(),
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics_addr = node.wait_log("the metrics address", |l| {
        let rest = l.split("metrics listening on http://").nth(1)?;
        rest.split('/').next()?.parse::<std::net::SocketAddr>().ok()
    });
    let open = macula_relay::admin::AdminClient::new(metrics_addr, None);
    // A client's connection and reservation give libp2p's metrics something to count.
    let mut client = TestClient::start().await;
    node.reserve(&mut client).await;
    let text = open.metrics().await.expect("metrics without a token");
    for name in [
        "macula_relay_build_info{version=",
        "macula_relay_reservations 1",
        "libp2p_swarm_connections_incoming_total",
        "libp2p_swarm_connections_established_total",
        "libp2p_identify_received_total",
        "libp2p_bandwidth_bytes_total{protocols=\"/ip4/tcp\",direction=\"Inbound\"}",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    // The relay registry's status, as `ctl registry` shows it (private addresses are allowed:
    // its loopback address makes it capable). Alone, its announcement reaches no DHT peer: not
    // registered yet.
    let scrape = eventually("the relay's shard", || async {
        let scrape = Scrape::parse(&open.metrics().await.ok()?);
        scrape
            .value("macula_relay_registry_shard", &[])
            .is_some()
            .then_some(scrape)
    })
    .await;
    assert_eq!(scrape.get("macula_relay_registry_registered", &[]), 0.0);
    let shard = scrape.get("macula_relay_registry_shard", &[]);
    assert!(shard >= 0.0 && shard.fract() == 0.0, "shard {shard}");
    for name in [
        "macula_relay_registry_records_served_total",
        "macula_relay_registry_discoveries_total",
    ] {
        assert_eq!(scrape.get(name, &[]), 0.0, "{name}");
    }
    // Another node joining the DHT through this one: its Kademlia metrics count.
    let addr = node.addr.to_string();
    let _joining = RelayProcess::start(&["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", &addr]);
    eventually(
        "Kademlia metrics of the joining node's requests",
        || async {
            let text = open.metrics().await.ok()?;
            text.contains("libp2p_kad_inbound_requests_total{request=\"FindNode\"}")
                .then_some(())
        },
    )
    .await;
    // With a DHT peer, its announcement gets through: `Registered`, and a publication time.
    eventually("the registration to reach the DHT", || async {
        let scrape = Scrape::parse(&open.metrics().await.ok()?);
        (scrape.value("macula_relay_registry_registrations_total", &[]) == Some(1.0)
            && scrape.value("macula_relay_registry_registered", &[]) == Some(1.0)
            && scrape
                .value(
                    "macula_relay_registry_last_published_timestamp_seconds",
                    &[],
                )
                .is_some())
        .then_some(())
    })
    .await;
    assert_eq!(open.ready().await.unwrap().status, "ready");
    // Nothing but reading: the admin endpoints are not there.
    let stats = open.raw("GET", "/stats", None).await.unwrap();
    assert_eq!(stats.status, 404);
    let disable = open.raw("POST", "/disable", Some(b"{}")).await.unwrap();
    assert_eq!(disable.status, 404);

    let admin = node.client(Some("0123456789abcdef0123456789abcdef"));
    admin.disable(&Default::default()).await.unwrap();
    eventually("/readyz to answer 503 while disabled", || async {
        match open.ready().await {
            Err(macula_relay::admin::ClientError::Status { status: 503, .. }) => Some(()),
            _ => None,
        }
    })
    .await;
    // Disabled: the relay withdraws from the registry.
    eventually("the relay to withdraw", || async {
        let scrape = Scrape::parse(&open.metrics().await.ok()?);
        let withdrawn = scrape.value(
            "macula_relay_registry_withdrawals_total",
            &[("reason", "disabled")],
        );
        (withdrawn == Some(1.0)
            && scrape.value("macula_relay_registry_registered", &[]) == Some(0.0))
        .then_some(())
    })
    .await;
    assert_eq!(
        open.health().await.unwrap().status,
        "ok",
        "alive, though not ready"
    );
    admin.enable(&Default::default()).await.unwrap();
    eventually("/readyz to answer 200 again", || async {
        open.ready().await.ok().map(|_| ())
    })
    .await;
}
