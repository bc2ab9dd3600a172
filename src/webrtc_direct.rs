//! WebRTC-direct on the relay node (feature `webrtc`): browsers dial
//! `/ip4/<ip>/udp/<port>/webrtc-direct/certhash/<hash>` with no CA certificate anywhere. The
//! node's DTLS certificate is self-signed; its hash is in the address, so it must stay the same
//! across restarts for stored addresses to keep working: [`load_or_create_certificate`] keeps it
//! in a file next to the identity key.
//!
//! The transport is `libp2p-webrtc` (alpha) with the stream fixes in
//! `patches/libp2p-webrtc-utils` (FIN_ACK, one frame per data-channel message, a 16 KiB read
//! buffer). Those fixes apply where this crate is built from its repository; a build from the
//! crates.io registry uses the released `libp2p-webrtc-utils`, with which browsers connect but
//! cannot reserve. See `patches/libp2p-webrtc-utils/README.md`.

use std::{fs, io, path::Path};

use libp2p::{core::muxing::StreamMuxerBox, identity::Keypair, Transport};

pub use libp2p_webrtc::tokio::Certificate;

use crate::node::NodeError;

/// The name of the certificate file, in the identity key's directory.
pub const CERTIFICATE_FILE_NAME: &str = "webrtc-certificate.pem";

/// A new certificate (a new certhash: addresses stored with the old one stop working).
pub fn generate_certificate() -> Certificate {
    // The generator ignores the RNG it is given (libp2p-webrtc 0.10) and draws its own key.
    Certificate::generate(&mut rand_webrtc::rng()).expect("generating a certificate cannot fail")
}

/// Loads the certificate from `path` (PEM, as [`Certificate::serialize_pem`] writes it), or
/// creates one there (mode 0600 on Unix) if the file does not exist.
pub fn load_or_create_certificate(path: &Path) -> Result<(Certificate, bool), NodeError> {
    let error = |e: &dyn std::fmt::Display| NodeError::KeyFile {
        path: path.display().to_string(),
        error: e.to_string(),
    };
    match fs::read_to_string(path) {
        Ok(pem) => Certificate::from_pem(&pem)
            .map(|c| (c, false))
            .map_err(|e| error(&format!("not a WebRTC certificate: {e}"))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let certificate = generate_certificate();
            crate::node::write_private_file(path, certificate.serialize_pem().as_bytes())
                .map_err(|e| error(&e))?;
            Ok((certificate, true))
        }
        Err(e) => Err(error(&e)),
    }
}

/// The WebRTC-direct transport with `certificate`, its connections boxed like the node's others.
pub(crate) fn transport(
    keypair: &Keypair,
    certificate: Certificate,
) -> libp2p::core::transport::Boxed<(libp2p::PeerId, StreamMuxerBox)> {
    // DTLS (webrtc-rs) takes the process's default rustls crypto provider, which rustls cannot
    // pick by itself in this build (both ring and aws-lc-rs are compiled in, the latter for
    // QUIC): without one every handshake panics. Ring, as the node's TLS uses; a provider the
    // embedding application installed first stays.
    let _ = futures_rustls::rustls::crypto::ring::default_provider().install_default();
    libp2p_webrtc::tokio::Transport::new(keypair.clone(), certificate)
        .map(|(peer, connection), _| (peer, StreamMuxerBox::new(connection)))
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_certificate_keeps_its_hash_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CERTIFICATE_FILE_NAME);
        let (first, created) = load_or_create_certificate(&path).unwrap();
        assert!(created);
        let (again, created) = load_or_create_certificate(&path).unwrap();
        assert!(!created);
        assert_eq!(first.fingerprint(), again.fingerprint());
    }

    #[test]
    fn a_damaged_certificate_file_is_an_error_not_a_new_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CERTIFICATE_FILE_NAME);
        fs::write(&path, "not a certificate").unwrap();
        let error = load_or_create_certificate(&path).unwrap_err().to_string();
        assert!(error.contains("not a WebRTC certificate"), "{error}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "not a certificate");
    }
}
