//! Secure WebSocket (`/tls/ws`, `/wss`) listeners whose certificate can be replaced while the
//! node runs.
//!
//! libp2p-websocket's own TLS support (`websocket::tls::Config`) is built once from a key and a
//! certificate chain, with no way to swap them under a running listener. So the node does the
//! TLS itself, below libp2p-websocket:
//!
//! - [`ReloadableTls`] is a rustls `ServerConfig` whose certificate resolver ([`ServerCert`])
//!   hands out the current `CertifiedKey`, read once per TLS handshake; a reload swaps it.
//!   Handshakes after the swap present the new certificate; established connections, whose
//!   handshake is over, are not touched.
//! - [`TlsListener`] wraps the TCP transport: every inbound TCP connection is a TLS server
//!   connection with that config (it dials nothing).
//! - [`SecureWebsocket`] serves `/…/tcp/<port>/tls/ws` and `/…/tcp/<port>/wss` listen addresses
//!   with a plain libp2p-websocket over a [`TlsListener`]: it listens on `/…/tcp/<port>/ws`
//!   below, and writes the addresses libp2p-websocket reports back in the form the caller gave
//!   (`/tls/ws` or `/wss`), so the swarm, identify and the printed listen addresses see what
//!   they saw before. It refuses every other address and every dial (`MultiaddrNotSupported`):
//!   the node's plain WebSocket transport, next to it, serves `/ws` and dials `/tls/ws` with the
//!   stock web PKI roots, as before.

use std::{
    collections::HashMap,
    fmt, io,
    pin::Pin,
    sync::{Arc, PoisonError, RwLock},
    task::{Context, Poll},
};

use futures::{
    future::{self, BoxFuture},
    FutureExt, TryFutureExt,
};
use futures_rustls::{
    rustls::{
        self,
        crypto::CryptoProvider,
        server::{ClientHello, ResolvesServerCert},
        sign::CertifiedKey,
        ServerConfig,
    },
    server::TlsStream,
    TlsAcceptor,
};
use libp2p::{
    core::{
        multiaddr::Protocol,
        transport::{DialOpts, ListenerId, TransportError, TransportEvent},
    },
    tcp, websocket, Multiaddr, Transport,
};

/// The certificate chain and key the TLS server presents, replaceable at run time.
pub(crate) struct ServerCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ServerCert {
    /// The certificate and key served now.
    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, certified: CertifiedKey) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(certified);
    }
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerCert")
    }
}

impl ResolvesServerCert for ServerCert {
    /// The same certificate for every client (whatever name it asks for), like rustls'
    /// `with_single_cert`, which libp2p-websocket uses.
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The TLS server settings of secure WebSocket listeners: rustls with the ring provider (as
/// libp2p-websocket) and a certificate that [`reload`](Self::reload) replaces. Clones share the
/// certificate.
#[derive(Clone)]
pub(crate) struct ReloadableTls {
    cert: Arc<ServerCert>,
    config: Arc<ServerConfig>,
}

impl ReloadableTls {
    /// From PEM text: `cert_chain` holds the certificate then any intermediates, `key` its
    /// private key.
    pub(crate) fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cert = Arc::new(ServerCert {
            current: RwLock::new(Arc::new(certified_key(cert_chain, key, &provider)?)),
        });
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS settings: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        Ok(ReloadableTls {
            cert,
            config: Arc::new(config),
        })
    }

    /// Serves `cert_chain` and `key` (PEM) from the next TLS handshake on; an unusable pair is
    /// refused and the current one stays.
    pub(crate) fn reload(&self, cert_chain: &[u8], key: &[u8]) -> Result<(), String> {
        let certified = certified_key(cert_chain, key, self.config.crypto_provider())?;
        self.cert.replace(certified);
        Ok(())
    }

    /// Accepts TLS connections with these settings.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config.clone())
    }

    /// The server config (for tests that run a handshake in memory).
    #[cfg(test)]
    fn server_config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }
}

/// Parses and checks a PEM certificate chain and key: at least one certificate, a key rustls
/// can sign with, and a key that belongs to the first certificate.
fn certified_key(
    cert_chain: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate: {e}"))?;
    if certs.is_empty() {
        return Err("certificate: no CERTIFICATE block in the PEM text".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("key: {e}"))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("key: {e}"))?;
    let certified = CertifiedKey::new(certs, key);
    match certified.keys_match() {
        // A key whose public half rustls cannot tell is not refused (as `with_single_cert`).
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err("key: the private key does not belong to the (first) certificate".into())
        }
        Err(e) => Err(format!("certificate: {e}")),
    }
}

/// A transport whose every inbound connection is a TLS server connection over `T`'s; it dials
/// nothing.
pub(crate) struct TlsListener<T> {
    inner: T,
    acceptor: TlsAcceptor,
}

impl<T> Transport for TlsListener<T>
where
    T: Transport<Error = io::Error> + Unpin,
    T::ListenerUpgrade: Send + 'static,
    T::Output: futures::AsyncRead + futures::AsyncWrite + Unpin + Send + 'static,
{
    type Output = TlsStream<T::Output>;
    type Error = io::Error;
    type ListenerUpgrade = BoxFuture<'static, io::Result<Self::Output>>;
    type Dial = future::Pending<io::Result<Self::Output>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        Err(TransportError::MultiaddrNotSupported(addr))
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner).poll(cx).map(|event| {
            event.map_upgrade(|upgrade| {
                let acceptor = this.acceptor.clone();
                upgrade
                    .and_then(move |stream| acceptor.accept(stream))
                    .boxed()
            })
        })
    }
}

/// The WebSocket transport below [`SecureWebsocket`].
type Inner = websocket::Config<TlsListener<tcp::tokio::Transport>>;

/// Serves secure WebSocket listen addresses (`/tls/ws`, `/wss`) with a [`ReloadableTls`]; see
/// the module documentation.
pub(crate) struct SecureWebsocket {
    inner: Inner,
    /// What each listener's addresses end with instead of libp2p-websocket's `/ws`.
    suffixes: HashMap<ListenerId, Vec<Protocol<'static>>>,
}

impl SecureWebsocket {
    /// Listens over `tcp` with `tls`.
    pub(crate) fn new(tcp: tcp::tokio::Transport, tls: &ReloadableTls) -> Self {
        SecureWebsocket {
            inner: websocket::Config::new(TlsListener {
                inner: tcp,
                acceptor: tls.acceptor(),
            }),
            suffixes: HashMap::new(),
        }
    }

    /// Writes an address of `listener` from libp2p-websocket (ending with `/ws`) the way the
    /// listener was asked for.
    fn restore(&self, listener: ListenerId, addr: Multiaddr) -> Multiaddr {
        match self.suffixes.get(&listener) {
            Some(suffix) => restore(addr, suffix),
            None => addr,
        }
    }
}

/// Splits a secure WebSocket listen address into the plain WebSocket address to listen on below
/// (`…/ws<path>`) and what replaces its `/ws<path>` in the addresses reported (`/tls/ws<path>`
/// or `/wss<path>`); `None` for every other address.
fn split_listen_addr(addr: &Multiaddr) -> Option<(Multiaddr, Vec<Protocol<'static>>)> {
    let mut inner = addr.clone();
    match inner.pop()? {
        Protocol::Wss(path) => Some((
            inner.with(Protocol::Ws(path.clone())),
            vec![Protocol::Wss(path)],
        )),
        Protocol::Ws(path) => match inner.pop()? {
            Protocol::Tls => Some((
                inner.with(Protocol::Ws(path.clone())),
                vec![Protocol::Tls, Protocol::Ws(path)],
            )),
            _ => None,
        },
        _ => None,
    }
}

/// Replaces the `/ws<path>` that ends `addr` with `suffix`.
fn restore(mut addr: Multiaddr, suffix: &[Protocol<'static>]) -> Multiaddr {
    if let Some(last) = addr.pop() {
        if !matches!(last, Protocol::Ws(_)) {
            addr.push(last);
        }
    }
    for protocol in suffix {
        addr.push(protocol.clone());
    }
    addr
}

impl Transport for SecureWebsocket {
    type Output = <Inner as Transport>::Output;
    type Error = <Inner as Transport>::Error;
    type ListenerUpgrade = <Inner as Transport>::ListenerUpgrade;
    type Dial = <Inner as Transport>::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        let Some((inner_addr, suffix)) = split_listen_addr(&addr) else {
            return Err(TransportError::MultiaddrNotSupported(addr));
        };
        match self.inner.listen_on(id, inner_addr) {
            Ok(()) => {
                self.suffixes.insert(id, suffix);
                Ok(())
            }
            // The next transport tries the address the caller gave, not ours.
            Err(TransportError::MultiaddrNotSupported(_)) => {
                Err(TransportError::MultiaddrNotSupported(addr))
            }
            Err(e) => Err(e),
        }
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        Err(TransportError::MultiaddrNotSupported(addr))
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let event = match Pin::new(&mut self.inner).poll(cx) {
            Poll::Ready(event) => event,
            Poll::Pending => return Poll::Pending,
        };
        Poll::Ready(match event {
            TransportEvent::NewAddress {
                listener_id,
                listen_addr,
            } => TransportEvent::NewAddress {
                listener_id,
                listen_addr: self.restore(listener_id, listen_addr),
            },
            TransportEvent::AddressExpired {
                listener_id,
                listen_addr,
            } => TransportEvent::AddressExpired {
                listener_id,
                listen_addr: self.restore(listener_id, listen_addr),
            },
            TransportEvent::Incoming {
                listener_id,
                upgrade,
                local_addr,
                send_back_addr,
            } => TransportEvent::Incoming {
                listener_id,
                upgrade,
                local_addr: self.restore(listener_id, local_addr),
                send_back_addr: self.restore(listener_id, send_back_addr),
            },
            TransportEvent::ListenerClosed {
                listener_id,
                reason,
            } => {
                self.suffixes.remove(&listener_id);
                TransportEvent::ListenerClosed {
                    listener_id,
                    reason,
                }
            }
            event @ TransportEvent::ListenerError { .. } => event,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, ServerName};

    /// A self-signed certificate for `localhost`: (certificate PEM, key PEM, certificate DER).
    fn self_signed() -> (String, String, CertificateDer<'static>) {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (
            cert.cert.pem(),
            cert.key_pair.serialize_pem(),
            cert.cert.der().clone(),
        )
    }

    /// Runs a TLS handshake in memory between `server` and a client trusting only `trust`;
    /// returns the certificate the server presented, or the client's error.
    fn handshake(
        server: Arc<ServerConfig>,
        trust: &CertificateDer<'static>,
    ) -> Result<CertificateDer<'static>, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(trust.clone()).unwrap();
        let client_config = rustls::ClientConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
        let mut server = rustls::ServerConnection::new(server).unwrap();
        // A TLS 1.3 handshake takes two round trips; ten are plenty.
        for _ in 0..10 {
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            // A server error (the client's alert) shows up as the client's own error below.
            let _ = server.process_new_packets();
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets()?;
        }
        assert!(
            !client.is_handshaking(),
            "the handshake did not end in 10 round trips"
        );
        Ok(client.peer_certificates().expect("a server certificate")[0].clone())
    }

    #[test]
    fn a_reload_serves_the_new_certificate_to_every_clone() {
        let (a_pem, a_key, a_der) = self_signed();
        let (b_pem, b_key, b_der) = self_signed();
        let tls = ReloadableTls::from_pem(a_pem.as_bytes(), a_key.as_bytes()).unwrap();
        let clone = tls.clone();
        assert_eq!(handshake(tls.server_config(), &a_der).unwrap(), a_der);

        clone.reload(b_pem.as_bytes(), b_key.as_bytes()).unwrap();
        assert_eq!(handshake(tls.server_config(), &b_der).unwrap(), b_der);
        let refused = handshake(tls.server_config(), &a_der).unwrap_err();
        assert!(
            matches!(refused, rustls::Error::InvalidCertificate(_)),
            "{refused:?}"
        );
    }

    #[test]
    fn an_unusable_pair_is_refused_and_the_old_certificate_stays() {
        let (a_pem, a_key, a_der) = self_signed();
        let (b_pem, b_key, _) = self_signed();
        let tls = ReloadableTls::from_pem(a_pem.as_bytes(), a_key.as_bytes()).unwrap();
        let cases: [(&[u8], &[u8], &str); 6] = [
            (b_pem.as_bytes(), a_key.as_bytes(), "does not belong"),
            (a_pem.as_bytes(), b_key.as_bytes(), "does not belong"),
            (b"garbage", b_key.as_bytes(), "no CERTIFICATE"),
            (b_pem.as_bytes(), b"garbage", "key"),
            (b_key.as_bytes(), b_key.as_bytes(), "no CERTIFICATE"),
            (
                b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                b_key.as_bytes(),
                "certificate",
            ),
        ];
        for (cert, key, expect) in cases {
            let error = tls.reload(cert, key).unwrap_err();
            assert!(error.contains(expect), "{error}");
            assert_eq!(handshake(tls.server_config(), &a_der).unwrap(), a_der);
        }
    }

    #[test]
    fn secure_listen_addresses_are_served_as_ws_and_reported_as_given() {
        for (given, below) in [
            ("/ip4/127.0.0.1/tcp/0/tls/ws", "/ip4/127.0.0.1/tcp/0/ws"),
            ("/ip4/127.0.0.1/tcp/0/wss", "/ip4/127.0.0.1/tcp/0/ws"),
        ] {
            let given: Multiaddr = given.parse().unwrap();
            let (inner, suffix) = split_listen_addr(&given).unwrap_or_else(|| panic!("{given}"));
            assert_eq!(inner, below.parse::<Multiaddr>().unwrap());
            assert_eq!(restore(inner, &suffix), given);
        }
        // A path other than `/` is kept.
        let ip6: Multiaddr = "/ip6/::1/tcp/0".parse().unwrap();
        let given = ip6
            .clone()
            .with(Protocol::Tls)
            .with(Protocol::Ws("/p".into()));
        let (inner, suffix) = split_listen_addr(&given).unwrap();
        assert_eq!(inner, ip6.with(Protocol::Ws("/p".into())));
        assert_eq!(restore(inner, &suffix), given);

        let bound: Multiaddr = "/ip4/127.0.0.1/tcp/4444/ws".parse().unwrap();
        let (_, suffix) = split_listen_addr(&"/ip4/0.0.0.0/tcp/0/wss".parse().unwrap()).unwrap();
        assert_eq!(
            restore(bound, &suffix),
            "/ip4/127.0.0.1/tcp/4444/wss".parse::<Multiaddr>().unwrap()
        );
        for other in [
            "/ip4/127.0.0.1/tcp/0/ws",
            "/ip4/127.0.0.1/tcp/0",
            "/ip4/127.0.0.1/tcp/0/tls",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ] {
            assert!(
                split_listen_addr(&other.parse().unwrap()).is_none(),
                "{other}"
            );
        }
    }
}
