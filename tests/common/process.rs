//! The example relay peer as a real OS process.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use libp2p::{core::multiaddr::Protocol, Multiaddr, PeerId};

/// Path of the example binary that `cargo test` builds next to the test binaries.
pub fn relay_node_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    dir.join("examples")
        .join(format!("relay_node{}", std::env::consts::EXE_SUFFIX))
}

/// A running relay node process; killed on drop.
pub struct RelayProcess {
    pub child: Child,
    pub peer_id: PeerId,
    /// The first address it printed (with `/p2p/<id>`).
    pub addr: Multiaddr,
    /// Every further stdout line.
    pub stdout: mpsc::Receiver<String>,
}

impl RelayProcess {
    /// Starts the relay node with `args`, waits for its first printed listen address.
    pub fn start(args: &[&str]) -> Self {
        let binary = relay_node_binary();
        assert!(
            binary.exists(),
            "{} is missing: `cargo test` builds it; with `--test <name>` run `cargo build --examples` first",
            binary.display()
        );
        let mut child = Command::new(&binary)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("relay node printed its address");
        let addr: Multiaddr = first.parse().unwrap_or_else(|e| panic!("{first:?}: {e}"));
        let Some(Protocol::P2p(peer_id)) = addr.iter().last() else {
            panic!("printed address {addr} does not end with /p2p/<peer id>");
        };
        RelayProcess {
            child,
            peer_id,
            addr,
            stdout: lines,
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
