//! The relay node over WebSocket, without a browser: a stock rust-libp2p relay client
//! (`libp2p::websocket` + noise + yamux + `relay::client`) reserves on the relay peer process
//! over `/ws`, and over `/tls/ws` with the certificate the operator gave (`--tls-cert`,
//! `--tls-key`); a certificate or key the node cannot use stops it before it listens.
//! (`tests/browser.rs` runs the same transports against js-libp2p in Chromium.)
#![cfg(feature = "admin")]

mod admin_support;
mod common;

use std::{fs, path::Path, time::Duration};

use common::process::RelayProcess;
use futures::StreamExt;
use libp2p::{
    core::{multiaddr::Protocol, muxing::StreamMuxerBox, upgrade::Version},
    noise, relay,
    swarm::SwarmEvent,
    tcp, websocket, yamux, Multiaddr, Transport,
};
use macula_relay::{
    node::{is_secure_websocket, is_websocket},
    WebsocketTls,
};

/// Writes a self-signed certificate for 127.0.0.1 and its key; returns (cert, key, cert DER).
fn self_signed(dir: &Path) -> (String, String, Vec<u8>) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    fs::write(&cert_path, cert.cert.pem()).unwrap();
    fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    (
        cert_path.display().to_string(),
        key_path.display().to_string(),
        cert.cert.der().to_vec(),
    )
}

/// A relay client that dials over WebSocket only, trusting `trust` (a DER certificate) for TLS;
/// connects to `relay`, reserves, and returns the address its connection to the relay went to.
async fn reserve_over(relay: &Multiaddr, trust: Option<&[u8]>) -> Multiaddr {
    let mut tls = websocket::tls::Config::builder();
    if let Some(der) = trust {
        tls.add_trust(&websocket::tls::Certificate::new(der.to_vec()))
            .unwrap();
    }
    let tls = tls.finish();
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_other_transport(|key| {
            let mut ws = websocket::Config::new(tcp::tokio::Transport::new(tcp::Config::default()));
            ws.set_tls_config(tls);
            ws.upgrade(Version::V1Lazy)
                .authenticate(noise::Config::new(key).unwrap())
                .multiplex(yamux::Config::default())
                .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        })
        .unwrap()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_, relay| relay)
        .unwrap()
        .build();
    swarm
        .listen_on(relay.clone().with(Protocol::P2pCircuit))
        .unwrap();
    let wait = async {
        let mut connected = None;
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { endpoint, .. } => {
                    connected = Some(endpoint.get_remote_address().clone());
                }
                SwarmEvent::Behaviour(relay::client::Event::ReservationReqAccepted { .. }) => {
                    return connected.expect("connected before the reservation");
                }
                SwarmEvent::ListenerClosed { reason, .. } => {
                    panic!("reservation over {relay} failed: {reason:?}")
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => {
                    panic!("dialing {relay} failed: {error}")
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), wait)
        .await
        .unwrap_or_else(|_| panic!("no reservation over {relay} within 30 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_client_reserves_over_ws_and_tls_ws() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, der) = self_signed(dir.path());
    let relay = RelayProcess::start(&[
        "--listen",
        "/ip4/127.0.0.1/tcp/0/ws",
        "--listen",
        "/ip4/127.0.0.1/tcp/0/tls/ws",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let mut addrs = vec![relay.addr.clone()];
    while addrs.len() < 2 {
        let line = relay
            .stdout
            .recv_timeout(Duration::from_secs(30))
            .expect("both listen addresses printed");
        addrs.push(line.parse().unwrap());
    }
    assert!(addrs.iter().all(is_websocket), "{addrs:?}");
    let ws = addrs.iter().find(|a| !is_secure_websocket(a)).unwrap();
    let wss = addrs.iter().find(|a| is_secure_websocket(a)).unwrap();

    assert_eq!(&reserve_over(ws, None).await, ws);
    assert_eq!(&reserve_over(wss, Some(&der)).await, wss);
}

#[test]
fn certificates_the_node_cannot_use_stop_it_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = self_signed(dir.path());
    let empty = dir.path().join("empty.pem");
    fs::write(&empty, "").unwrap();
    let empty = empty.display().to_string();
    let listen = ["--listen", "/ip4/127.0.0.1/tcp/0/tls/ws"];
    for (cert, key, expect) in [
        (key.as_str(), key.as_str(), "no CERTIFICATE"),
        (cert.as_str(), cert.as_str(), "key"),
        (cert.as_str(), empty.as_str(), "key"),
        (
            "/nonexistent/cert.pem",
            key.as_str(),
            "/nonexistent/cert.pem",
        ),
    ] {
        let mut args = listen.to_vec();
        args.extend(["--tls-cert", cert, "--tls-key", key]);
        let output = admin_support::run_to_end(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{args:?}");
        assert!(output.stdout.is_empty(), "{args:?}: must not listen");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
    // Without a certificate, a secure WebSocket address is refused by name.
    let output = admin_support::run_to_end(&listen);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("tls_cert"));
}

#[test]
fn pem_text_is_parsed_or_refused_with_a_reason() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (pem, key) = (cert.cert.pem(), cert.key_pair.serialize_pem());
    WebsocketTls::from_pem(pem.as_bytes(), key.as_bytes()).expect("a valid pair");
    // A chain: the certificate twice is still a chain of CERTIFICATE blocks.
    WebsocketTls::from_pem(format!("{pem}{pem}").as_bytes(), key.as_bytes()).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let error = WebsocketTls::from_pem(pem.as_bytes(), other.key_pair.serialize_pem().as_bytes())
        .unwrap_err();
    assert!(!error.is_empty());
    assert!(WebsocketTls::from_pem(b"", key.as_bytes())
        .unwrap_err()
        .contains("certificate"));
}
