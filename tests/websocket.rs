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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_renewed_certificate_at_the_same_paths() {
    common::init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _first) = self_signed(dir.path());
    let relay = RelayProcess::start(&[
        "--listen",
        "/ip4/127.0.0.1/tcp/0/tls/ws",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    // Renewed in place, as certbot does: same paths, a new certificate and key.
    let renewed = tempfile::tempdir().unwrap();
    let (new_cert, new_key, second) = self_signed(renewed.path());
    fs::copy(&new_cert, &cert).unwrap();
    fs::copy(&new_key, &key).unwrap();
    relay.signal("HUP");
    relay.wait_log("the reload applied", |l| {
        l.contains("configuration applied").then_some(())
    });
    // A client trusting only the new certificate reserves: the node serves it now.
    assert_eq!(&reserve_over(&relay.addr, Some(&second)).await, &relay.addr);
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

/// A renewed certificate without a restart: [`WebsocketTls::reload`] swaps the certificate of
/// a running node's secure WebSocket listeners; new handshakes present the new one, live
/// connections (and the circuits over them) keep going, and a pair the node cannot use is
/// refused with the old certificate still served. In-process relay node and clients, each a
/// [`SwarmTask`]; every wait is bounded by [`WAIT`].
mod certificate_reload {
    use std::sync::{Arc, Mutex};

    use futures::{AsyncReadExt, AsyncWriteExt};
    use libp2p::{
        ping,
        swarm::{
            dial_opts::{DialOpts, PeerCondition},
            ConnectionId, NetworkBehaviour,
        },
        PeerId, StreamProtocol, Swarm,
    };
    use macula_relay::{RelayNodeBehaviour, RelayNodeBuilder};

    use super::*;
    use crate::common::{
        swarm_task::{init_tracing, SwarmTask},
        test_config, WAIT,
    };

    const ECHO: StreamProtocol = StreamProtocol::new("/macula-test/echo/1.0.0");

    /// A self-signed certificate for 127.0.0.1, in memory and in files under `dir`.
    struct TestCert {
        pem: String,
        key: String,
        der: Vec<u8>,
        pem_file: std::path::PathBuf,
        key_file: std::path::PathBuf,
    }

    impl TestCert {
        fn new(dir: &Path, name: &str) -> Self {
            let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
            let (pem, key) = (cert.cert.pem(), cert.key_pair.serialize_pem());
            let pem_file = dir.join(format!("{name}.cert.pem"));
            let key_file = dir.join(format!("{name}.key.pem"));
            fs::write(&pem_file, &pem).unwrap();
            fs::write(&key_file, &key).unwrap();
            TestCert {
                pem,
                key,
                der: cert.cert.der().to_vec(),
                pem_file,
                key_file,
            }
        }
    }

    /// An in-process relay node listening on `/tls/ws` and `/wss` (127.0.0.1) with `tls`.
    struct WssRelay {
        peer_id: PeerId,
        /// `/ip4/127.0.0.1/tcp/<port>/tls/ws/p2p/<relay>`.
        tls_ws: Multiaddr,
        /// `/ip4/127.0.0.1/tcp/<port>/wss/p2p/<relay>`.
        wss: Multiaddr,
        _task: SwarmTask<RelayNodeBehaviour, ()>,
    }

    impl WssRelay {
        async fn start(tls: WebsocketTls) -> Self {
            let mut swarm = RelayNodeBuilder::new()
                .config(test_config().build().unwrap())
                .listen_on("/ip4/127.0.0.1/tcp/0/tls/ws".parse().unwrap())
                .listen_on("/ip4/127.0.0.1/tcp/0/wss".parse().unwrap())
                .websocket_tls(tls)
                .build()
                .expect("relay node builds");
            let peer_id = *swarm.local_peer_id();
            let listening = async {
                let mut addrs = Vec::new();
                while addrs.len() < 2 {
                    if let SwarmEvent::NewListenAddr { address, .. } =
                        swarm.select_next_some().await
                    {
                        addrs.push(address);
                    }
                }
                addrs
            };
            let addrs = tokio::time::timeout(WAIT, listening)
                .await
                .unwrap_or_else(|_| panic!("the relay's two listen addresses within {WAIT:?}"));
            // Reported as they were asked for: `/tls/ws` stays `/tls/ws`, `/wss` stays `/wss`.
            let tls_ws = addrs
                .iter()
                .find(|a| a.iter().any(|p| p == Protocol::Tls))
                .unwrap_or_else(|| panic!("a /tls/ws listen address in {addrs:?}"))
                .clone();
            let wss = addrs
                .iter()
                .find(|a| a.iter().any(|p| matches!(p, Protocol::Wss(_))))
                .unwrap_or_else(|| panic!("a /wss listen address in {addrs:?}"))
                .clone();
            assert!(is_secure_websocket(&tls_ws) && is_secure_websocket(&wss));
            assert!(
                matches!(tls_ws.iter().last(), Some(Protocol::Ws(_))),
                "{tls_ws}"
            );
            for addr in [&tls_ws, &wss] {
                swarm.add_external_address(addr.clone());
            }
            let task = SwarmTask::spawn("relay", WAIT, swarm, |_, _| None::<()>);
            WssRelay {
                peer_id,
                tls_ws: tls_ws.with(Protocol::P2p(peer_id)),
                wss: wss.with(Protocol::P2p(peer_id)),
                _task: task,
            }
        }
    }

    #[derive(NetworkBehaviour)]
    struct WssClientBehaviour {
        relay: relay::client::Behaviour,
        ping: ping::Behaviour,
        stream: libp2p_stream::Behaviour,
    }

    /// What a client reports to the test.
    #[derive(Debug)]
    enum WssEvent {
        Connected {
            peer: PeerId,
            relayed: bool,
            connection: ConnectionId,
        },
        DialFailed {
            peer: Option<PeerId>,
            error: String,
        },
        Reserved,
        ListenerClosed {
            error: String,
        },
    }

    /// A stock rust-libp2p relay client that reaches the relay over secure WebSocket only,
    /// trusting one certificate.
    struct WssClient {
        peer_id: PeerId,
        control: libp2p_stream::Control,
        /// Every connection the client saw close: (peer, connection, cause).
        closed: Arc<Mutex<Vec<String>>>,
        task: SwarmTask<WssClientBehaviour, WssEvent>,
    }

    impl WssClient {
        /// A client whose TLS trusts `trust` (a DER certificate) besides the web PKI roots.
        fn start(name: &str, trust: &[u8]) -> Self {
            let mut tls = websocket::tls::Config::builder();
            tls.add_trust(&websocket::tls::Certificate::new(trust.to_vec()))
                .unwrap();
            let tls = tls.finish();
            let swarm: Swarm<WssClientBehaviour> = libp2p::SwarmBuilder::with_new_identity()
                .with_tokio()
                .with_other_transport(|key| {
                    let mut ws =
                        websocket::Config::new(tcp::tokio::Transport::new(tcp::Config::default()));
                    ws.set_tls_config(tls);
                    ws.upgrade(Version::V1Lazy)
                        .authenticate(noise::Config::new(key).unwrap())
                        .multiplex(yamux::Config::default())
                        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
                })
                .unwrap()
                .with_relay_client(noise::Config::new, yamux::Config::default)
                .unwrap()
                .with_behaviour(|_, relay| WssClientBehaviour {
                    relay,
                    ping: ping::Behaviour::default(),
                    stream: libp2p_stream::Behaviour::new(),
                })
                .unwrap()
                .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
                .build();
            let peer_id = *swarm.local_peer_id();
            let control = swarm.behaviour().stream.new_control();
            let closed = Arc::new(Mutex::new(Vec::new()));
            let seen = closed.clone();
            let task = SwarmTask::spawn(name, WAIT, swarm, move |_, event| {
                use relay::client::Event as Relay;
                Some(match event {
                    SwarmEvent::ConnectionEstablished {
                        peer_id,
                        connection_id,
                        endpoint,
                        ..
                    } => WssEvent::Connected {
                        peer: peer_id,
                        relayed: endpoint.is_relayed(),
                        connection: connection_id,
                    },
                    SwarmEvent::ConnectionClosed {
                        peer_id,
                        connection_id,
                        cause,
                        ..
                    } => {
                        seen.lock()
                            .unwrap()
                            .push(format!("{peer_id} {connection_id:?}: {cause:?}"));
                        return None;
                    }
                    SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                        WssEvent::DialFailed {
                            peer: peer_id,
                            error: format!("{error:?}"),
                        }
                    }
                    SwarmEvent::ListenerClosed { reason, .. } => WssEvent::ListenerClosed {
                        error: format!("{reason:?}"),
                    },
                    SwarmEvent::Behaviour(WssClientBehaviourEvent::Relay(
                        Relay::ReservationReqAccepted { .. },
                    )) => WssEvent::Reserved,
                    _ => return None,
                })
            });
            WssClient {
                peer_id,
                control,
                closed,
                task,
            }
        }

        /// Dials the relay at `addr` (`…/p2p/<relay>`): the id of the connection, or the dial
        /// error.
        async fn connect(
            &mut self,
            relay: PeerId,
            addr: &Multiaddr,
        ) -> Result<ConnectionId, String> {
            let dial = addr.clone();
            self.task.run(move |s| {
                let opts = DialOpts::peer_id(relay)
                    .addresses(vec![dial])
                    .condition(PeerCondition::Always)
                    .build();
                s.dial(opts).unwrap();
            });
            let what = format!("a connection to the relay at {addr}, or the dial error");
            self.task
                .expect(&what, |e| match e {
                    WssEvent::Connected {
                        peer,
                        relayed: false,
                        connection,
                    } if peer == relay => Some(Ok(connection)),
                    WssEvent::DialFailed {
                        peer: Some(peer),
                        error,
                    } if peer == relay => Some(Err(error)),
                    _ => None,
                })
                .await
        }

        /// Connects to the relay at `addr` and reserves a slot; the id of the connection.
        async fn reserve(&mut self, relay: PeerId, addr: &Multiaddr) -> ConnectionId {
            let connection = self
                .connect(relay, addr)
                .await
                .unwrap_or_else(|e| panic!("connecting to the relay at {addr}: {e}"));
            let listen = addr.clone().with(Protocol::P2pCircuit);
            let listening = self.task.with(move |s| s.listen_on(listen).map(drop)).await;
            listening.expect("listen on the circuit address");
            let what = format!("a reservation on the relay at {addr}");
            self.task
                .expect(&what, |e| match e {
                    WssEvent::Reserved => Some(()),
                    WssEvent::ListenerClosed { error } => panic!("reservation failed: {error}"),
                    _ => None,
                })
                .await;
            connection
        }

        /// Dials `target` through the relay at `relay_addr` (`…/p2p/<relay>`).
        async fn dial_circuit(&mut self, relay_addr: &Multiaddr, target: PeerId) {
            let addr = relay_addr
                .clone()
                .with(Protocol::P2pCircuit)
                .with(Protocol::P2p(target));
            self.task.run(move |s| s.dial(addr).unwrap());
            let error = self
                .task
                .expect(
                    "a relayed connection to the target, or the dial error",
                    |e| match e {
                        WssEvent::Connected {
                            peer,
                            relayed: true,
                            ..
                        } if peer == target => Some(None),
                        WssEvent::DialFailed {
                            peer: Some(peer),
                            error,
                        } if peer == target => Some(Some(error)),
                        _ => None,
                    },
                )
                .await;
            assert_eq!(error, None, "dialing {target} through the relay");
        }

        /// Echoes every stream of [`ECHO`] back to its opener.
        fn serve_echo(&self) {
            let mut incoming = self.control.clone().accept(ECHO).unwrap();
            tokio::spawn(async move {
                while let Some((_, stream)) = incoming.next().await {
                    tokio::spawn(async move {
                        let (reader, mut writer) = stream.split();
                        let _ = futures::io::copy(reader, &mut writer).await;
                    });
                }
            });
        }

        /// Whether the client is connected to `peer` (by any connection).
        async fn is_connected(&self, peer: PeerId) -> bool {
            self.task.with(move |s| s.is_connected(&peer)).await
        }

        /// The connections the client saw close.
        fn closed(&self) -> Vec<String> {
            self.closed.lock().unwrap().clone()
        }
    }

    /// Sends `message` on `stream` and waits, bounded, for the echo.
    async fn echo(stream: &mut libp2p::Stream, message: &[u8]) {
        let round_trip = async {
            stream.write_all(message).await?;
            stream.flush().await?;
            let mut back = vec![0; message.len()];
            stream.read_exact(&mut back).await?;
            std::io::Result::Ok(back)
        };
        let back = tokio::time::timeout(WAIT, round_trip)
            .await
            .unwrap_or_else(|_| panic!("the echo of {message:?} within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("the echo of {message:?}: {e}"));
        assert_eq!(back, message);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reloaded_certificate_serves_new_clients_and_keeps_live_connections() {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            TestCert::new(dir.path(), "a"),
            TestCert::new(dir.path(), "b"),
        );
        let tls = WebsocketTls::from_pem(a.pem.as_bytes(), a.key.as_bytes()).unwrap();
        // The node gets a clone; the operator (the runner, on SIGHUP) reloads the original.
        let relay = WssRelay::start(tls.clone()).await;

        // A circuit over two connections made with certificate A.
        let mut target = WssClient::start("target (trusts A)", &a.der);
        let target_conn = target.reserve(relay.peer_id, &relay.tls_ws).await;
        target.serve_echo();
        let mut source = WssClient::start("source (trusts A)", &a.der);
        source.dial_circuit(&relay.tls_ws, target.peer_id).await;
        let mut control = source.control.clone();
        let mut stream = tokio::time::timeout(WAIT, control.open_stream(target.peer_id, ECHO))
            .await
            .unwrap_or_else(|_| panic!("an echo stream through the relay within {WAIT:?}"))
            .expect("an echo stream through the relay");
        echo(&mut stream, b"before the reload").await;

        tls.reload_from_pem_files(&b.pem_file, &b.key_file)
            .expect("certificate B is usable");

        // New handshakes present B: a client trusting only B connects (over both listeners), a
        // client trusting only A no longer can.
        let mut fresh = WssClient::start("fresh (trusts B)", &b.der);
        fresh.reserve(relay.peer_id, &relay.wss).await;
        fresh
            .connect(relay.peer_id, &relay.tls_ws)
            .await
            .unwrap_or_else(|e| panic!("a client trusting B connects over /tls/ws: {e}"));
        let mut stale = WssClient::start("stale (trusts A)", &a.der);
        let error = stale
            .connect(relay.peer_id, &relay.tls_ws)
            .await
            .expect_err("a client trusting only A must not connect after the reload");
        // The client's TLS refuses the certificate it was shown.
        assert!(error.contains("InvalidCertificate"), "{error}");

        // The connections made with A, and the circuit over them, are untouched.
        echo(&mut stream, b"after the reload").await;
        assert!(target.is_connected(relay.peer_id).await);
        assert!(source.is_connected(relay.peer_id).await);
        assert!(source.is_connected(target.peer_id).await);
        // None closed: the target's connection to the relay is still the one it reserved over.
        assert_eq!(
            target.closed(),
            Vec::<String>::new(),
            "the target's connections (it reserved over {target_conn:?})"
        );
        assert_eq!(
            source.closed(),
            Vec::<String>::new(),
            "the source's connections"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unusable_certificate_is_refused_and_the_old_one_keeps_serving() {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            TestCert::new(dir.path(), "a"),
            TestCert::new(dir.path(), "b"),
        );
        let tls = WebsocketTls::from_pem(a.pem.as_bytes(), a.key.as_bytes()).unwrap();
        let relay = WssRelay::start(tls.clone()).await;

        // A key that is not the certificate's, garbage, an empty key: refused with the reason.
        for (cert, key, expect) in [
            (b.pem.as_bytes(), a.key.as_bytes(), "does not belong"),
            (a.pem.as_bytes(), b.key.as_bytes(), "does not belong"),
            (b"garbage".as_slice(), b.key.as_bytes(), "no CERTIFICATE"),
            (b.pem.as_bytes(), b"garbage".as_slice(), "key"),
            (b.pem.as_bytes(), b"".as_slice(), "key"),
        ] {
            let error = tls.reload(cert, key).unwrap_err();
            assert!(error.contains(expect), "{error}");
        }
        let missing = dir.path().join("missing.pem");
        let error = tls
            .reload_from_pem_files(&missing, &b.key_file)
            .unwrap_err()
            .to_string();
        assert!(error.contains("missing.pem"), "{error}");
        let error = tls
            .reload_from_pem_files(&b.pem_file, &a.key_file)
            .unwrap_err()
            .to_string();
        assert!(error.contains("does not belong"), "{error}");
        assert!(error.contains("b.cert.pem"), "{error}");

        // Certificate A is still served.
        let mut old = WssClient::start("client (trusts A)", &a.der);
        old.reserve(relay.peer_id, &relay.tls_ws).await;
        let mut new = WssClient::start("client (trusts B)", &b.der);
        let error = new
            .connect(relay.peer_id, &relay.wss)
            .await
            .expect_err("B was never served");
        // The client's TLS refuses the certificate it was shown.
        assert!(error.contains("InvalidCertificate"), "{error}");
    }
}
