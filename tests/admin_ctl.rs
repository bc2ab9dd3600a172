//! `relay_node ctl`, the same binary as a client of a running node's admin API: tables by
//! default, JSON with `--json`, a non-zero exit with the API's error on failure.
#![cfg(feature = "admin")]

mod admin_support;
mod common;

use admin_support::{eventually, run_to_end_async, AdminNode};
use common::TestClient;
use macula_relay::admin::{SessionView, StatsView};

/// Runs `relay_node ctl --admin <node> [--admin-token-file <file>] <args>`.
async fn ctl(
    node: &AdminNode,
    token_file: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    let mut all = vec![
        "ctl".to_owned(),
        "--admin".to_owned(),
        node.admin.to_string(),
        "--admin-token-file".to_owned(),
        token_file.display().to_string(),
    ];
    all.extend(args.iter().map(|a| a.to_string()));
    run_to_end_async(all).await
}

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "ctl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_lists_closes_disables_and_enables() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "ctl-token-of-sixteen-bytes").unwrap();
    let node = AdminNode::start(&[
        "--admin-token-file",
        token_file.to_str().unwrap(),
        "--bandwidth",
        "0",
    ]);
    let mut target = TestClient::start().await;
    let mut source = TestClient::start().await;
    node.reserve(&mut target).await;
    let _served = target.serve_transfers();
    node.dial_through(&mut source, target.peer_id)
        .await
        .unwrap();
    assert!(
        source
            .transfer(target.peer_id, 200_000)
            .await
            .unwrap()
            .peer_got_what_we_sent
    );

    // The stats table, for people.
    let table = stdout(&ctl(&node, &token_file, &["stats"]).await);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("enabled") && l.ends_with("yes")),
        "{table}"
    );
    assert!(table.contains(&node.peer_id.to_string()), "{table}");

    // Sessions, as JSON for scripts and as a table.
    let listed: Vec<SessionView> = serde_json::from_str(&stdout(
        &ctl(&node, &token_file, &["--json", "sessions"]).await,
    ))
    .unwrap();
    assert_eq!(listed.len(), 1);
    let session = &listed[0];
    assert_eq!(session.source, source.peer_id.to_string());
    assert!(session.bytes_source_to_target >= 200_000);
    let table = stdout(&ctl(&node, &token_file, &["sessions"]).await);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&session.id), "{table}");

    // Close it.
    let closed = stdout(&ctl(&node, &token_file, &["close", &session.id]).await);
    assert!(closed.contains(&session.id), "{closed}");
    eventually("no live session", || async {
        let out = stdout(&ctl(&node, &token_file, &["--json", "sessions"]).await);
        let listed: Vec<SessionView> = serde_json::from_str(&out).unwrap();
        listed.is_empty().then_some(())
    })
    .await;

    // Closing it again fails with the API's answer.
    let again = ctl(&node, &token_file, &["close", &session.id]).await;
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("404"), "{stderr}");

    // Disable with a drain, then enable.
    let out = stdout(&ctl(&node, &token_file, &["--json", "disable", "--drain", "60s"]).await);
    let stats: StatsView = serde_json::from_str(&out).unwrap();
    assert!(!stats.enabled);
    let out = stdout(&ctl(&node, &token_file, &["--json", "enable", "--capacity", "9"]).await);
    let stats: StatsView = serde_json::from_str(&out).unwrap();
    assert!(stats.enabled);
    assert_eq!(stats.max_sessions, 9);

    // Metrics are passed through as text.
    let metrics = stdout(&ctl(&node, &token_file, &["metrics"]).await);
    assert!(
        metrics.contains("macula_relay_sessions_closed_total"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_without_the_token_fails_with_401() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "the-right-token-0123456789").unwrap();
    let wrong_file = dir.path().join("wrong.token");
    std::fs::write(&wrong_file, "the-wrong-token-0123456789").unwrap();
    let node = AdminNode::start(&["--admin-token-file", token_file.to_str().unwrap()]);
    let output = ctl(&node, &wrong_file, &["stats"]).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("401"), "{stderr}");
}
