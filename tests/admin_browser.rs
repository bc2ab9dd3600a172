//! The admin API against a web page driving the operator's browser: cross-site request forgery
//! (a simple POST with a text/plain body and an `Origin`) and DNS rebinding (a `Host` that names
//! the attacker's domain) are refused and change nothing; the operator's own scripts pass.
#![cfg(feature = "admin")]

mod admin_support;
mod common;

use admin_support::AdminNode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Sends `request` as is over a fresh connection and returns the status code and the body.
async fn exchange(node: &AdminNode, request: String) -> (u16, String) {
    let mut stream = TcpStream::connect(node.admin).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(admin_support::WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the admin API answers and closes within the wait")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

fn request(method: &str, path: &str, host: &str, extra: &[&str], body: &str) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for header in extra {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_cannot_drive_or_read_the_admin_api() {
    common::init_tracing();
    let node = AdminNode::start(&[]);
    let host = node.admin.to_string();

    // The forged form post of a page on another site: an Origin and a "simple" content type.
    let csrf = request(
        "POST",
        "/disable",
        &host,
        &["Origin: http://evil.example", "Content-Type: text/plain"],
        "{}",
    );
    let (status, body) = exchange(&node, csrf).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Origin"), "{body}");
    // Even with a JSON content type, a browser's Origin is refused.
    let with_json = request(
        "POST",
        "/disable",
        &host,
        &[
            "Origin: http://evil.example",
            "Content-Type: application/json",
        ],
        "{}",
    );
    assert_eq!(exchange(&node, with_json).await.0, 403);
    // Without Origin, a non-JSON POST is refused too.
    let plain = request(
        "POST",
        "/disable",
        &host,
        &["Content-Type: text/plain"],
        "{}",
    );
    assert_eq!(exchange(&node, plain).await.0, 415);
    let bare_delete = request("DELETE", "/sessions/00000000000000ff", &host, &[], "");
    assert_eq!(exchange(&node, bare_delete).await.0, 415);

    // DNS rebinding: the page's own name, now resolving to 127.0.0.1.
    for rebound in [
        "evil.example",
        "evil.example:80",
        &format!("evil.example:{}", node.admin.port()),
    ] {
        let read = request("GET", "/sessions", rebound, &[], "");
        let (status, body) = exchange(&node, read).await;
        assert_eq!(status, 403, "Host {rebound}: {body}");
        assert!(body.contains("Host"), "{body}");
    }

    // Nothing changed, and the operator's requests pass.
    let client = node.client(None);
    assert!(
        client.stats().await.unwrap().enabled,
        "the forged disable did nothing"
    );
    for host in [host.as_str(), &format!("localhost:{}", node.admin.port())] {
        let (status, body) = exchange(&node, request("GET", "/stats", host, &[], "")).await;
        assert_eq!(status, 200, "Host {host}: {body}");
    }
    let disable = request(
        "POST",
        "/disable",
        &host,
        &["Content-Type: application/json"],
        "{}",
    );
    assert_eq!(exchange(&node, disable).await.0, 200);
    assert!(!client.stats().await.unwrap().enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_from_the_loop_s_last_report_without_a_token() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin.token");
    std::fs::write(&token_file, "a-token-of-more-than-16-bytes\n").unwrap();
    let node = AdminNode::start(&["--admin-token-file", token_file.to_str().unwrap()]);
    let health = node.client(None).health().await.unwrap();
    assert_eq!(health.status, "ok");
    assert!(health.enabled);
    let disable = request(
        "POST",
        "/disable",
        &node.admin.to_string(),
        &[
            "Content-Type: application/json",
            "Authorization: Bearer a-token-of-more-than-16-bytes",
        ],
        "{}",
    );
    assert_eq!(exchange(&node, disable).await.0, 200);
    // The loop reports at least every second.
    let deadline = std::time::Instant::now() + admin_support::WAIT;
    loop {
        let health = node.client(None).health().await.unwrap();
        if !health.enabled {
            assert_eq!(health.status, "ok");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/healthz did not report the relay disabled within {:?}",
            admin_support::WAIT
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
