//! The admin API's bearer token: requests without it or with a wrong one are refused (401) and
//! change nothing; a non-loopback admin address without a token keeps the node from starting.
#![cfg(feature = "admin")]

mod admin_support;
mod common;

use admin_support::{run_to_end, AdminNode};

const TOKEN: &str = "s3cret-token-of-32-bytes-or-so!!";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_is_refused() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let node = AdminNode::start(&["--admin-token-file", token_file.to_str().unwrap()]);

    let requests: &[(&str, &str, Option<&str>)] = &[
        ("GET", "/stats", None),
        ("GET", "/sessions", None),
        ("GET", "/reservations", None),
        ("GET", "/metrics", None),
        ("DELETE", "/sessions/00000000000000ff", None),
        ("POST", "/disable", Some("{}")),
        ("POST", "/enable", Some("{}")),
    ];
    for token in [
        None,
        Some("wrong"),
        Some("s3cret-token-of-32-bytes-or-so!!-but-longer"),
        Some(""),
    ] {
        let client = node.client(token);
        for (method, path, body) in requests {
            let answer = client
                .raw(method, path, body.map(str::as_bytes))
                .await
                .unwrap();
            assert_eq!(answer.status, 401, "{method} {path} with token {token:?}");
            let error: macula_relay::admin::ErrorView =
                serde_json::from_slice(&answer.body).unwrap();
            assert!(error.error.contains("token"));
        }
    }
    // A scheme other than Bearer is refused too.
    assert_eq!(basic_auth_status(&node).await, 401);

    // The refused `POST /disable` did nothing; the right token works.
    let client = node.client(Some(TOKEN));
    let stats = client.stats().await.unwrap();
    assert!(stats.enabled);
    assert_eq!(stats.peer_id, node.peer_id.to_string());
    assert!(client
        .metrics()
        .await
        .unwrap()
        .contains("macula_relay_enabled"));
    // The health check needs no token.
    assert_eq!(node.client(None).health().await.unwrap().status, "ok");
}

/// The status of `GET /stats` with `Authorization: Basic <the right secret>`.
async fn basic_auth_status(node: &AdminNode) -> u16 {
    let addr = node.admin;
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(admin_support::WAIT)).unwrap();
        let request = format!(
            "GET /stats HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Basic {TOKEN}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("an HTTP status line")
    })
    .await
    .unwrap()
}

#[test]
fn a_public_admin_address_without_a_token_does_not_start_the_node() {
    // Refused while checking the configuration: nothing is bound, nothing listens.
    let output = run_to_end(&["--listen", "/ip4/127.0.0.1/tcp/0", "--admin", "0.0.0.0:0"]);
    assert!(!output.status.success());
    assert!(
        output.stdout.is_empty(),
        "the node must not start listening"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("admin_token_file"), "{stderr}");
}

#[test]
fn an_empty_short_or_missing_token_file_does_not_start_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.token");
    std::fs::write(&empty, "\n").unwrap();
    let short = dir.path().join("short.token");
    std::fs::write(&short, "fifteen-bytes-x\n").unwrap();
    let missing = dir.path().join("missing.token");
    for file in [&empty, &short, &missing] {
        let output = run_to_end(&[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--admin",
            "127.0.0.1:0",
            "--admin-token-file",
            file.to_str().unwrap(),
        ]);
        assert!(!output.status.success());
        assert!(
            output.stdout.is_empty(),
            "the node must not start listening"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("admin_token_file"), "{stderr}");
    }
}
