//! One harness for in-process libp2p peers: a [`Swarm`] running in its own tokio task, which the
//! test drives by running closures on it and by waiting, bounded, for the events it forwards.
//! `TestRelay` and `TestClient` (`common/mod.rs`) and `NetPeer` (`common/registry_net.rs`) are
//! thin wrappers over it.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    swarm::{NetworkBehaviour, SwarmEvent},
    Multiaddr, Swarm,
};
use tokio::sync::{mpsc, oneshot};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Waits up to `wait` for the first address `swarm` listens on (it must have been told to
/// listen).
pub async fn first_listen_addr<B: NetworkBehaviour>(
    swarm: &mut Swarm<B>,
    wait: Duration,
) -> Multiaddr {
    let listening = async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        }
    };
    tokio::time::timeout(wait, listening)
        .await
        .unwrap_or_else(|_| panic!("timed out after {wait:?} waiting for the first listen address"))
}

type Command<B> = Box<dyn FnOnce(&mut Swarm<B>) + Send>;

/// A swarm in its own task; `E` is what the test sees of its events. The task ends when this
/// is dropped.
pub struct SwarmTask<B: NetworkBehaviour, E> {
    /// Names the peer in panic messages: what it is and its peer id.
    name: String,
    /// How long one wait may take.
    wait: Duration,
    commands: mpsc::UnboundedSender<Command<B>>,
    events: mpsc::UnboundedReceiver<E>,
}

impl<B, E> SwarmTask<B, E>
where
    B: NetworkBehaviour + Send + 'static,
    E: Send + 'static,
{
    /// Spawns `swarm`, a `kind` ("relay", "client") of peer. `forward` turns each swarm event
    /// into what the test sees, or nothing; it may act on the swarm too. Every wait on the task
    /// gives up after `wait`.
    pub fn spawn(
        kind: &str,
        wait: Duration,
        mut swarm: Swarm<B>,
        mut forward: impl FnMut(&mut Swarm<B>, SwarmEvent<B::ToSwarm>) -> Option<E> + Send + 'static,
    ) -> Self {
        let name = format!("{kind} {}", swarm.local_peer_id());
        let (commands, mut command_rx) = mpsc::unbounded_channel::<Command<B>>();
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = command_rx.recv() => match command {
                        Some(command) => command(&mut swarm),
                        None => break,
                    },
                    event = swarm.select_next_some() => {
                        if let Some(event) = forward(&mut swarm, event) {
                            let _ = tx.send(event);
                        }
                    }
                }
            }
        });
        SwarmTask {
            name,
            wait,
            commands,
            events,
        }
    }

    /// Runs `f` on the swarm inside its task, without waiting for it.
    pub fn run(&self, f: impl FnOnce(&mut Swarm<B>) + Send + 'static) {
        if self.commands.send(Box::new(f)).is_err() {
            panic!("{}: its task has ended", self.name);
        }
    }

    /// Runs `f` on the swarm inside its task and returns its result.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<B>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        self.run(move |swarm| {
            let _ = tx.send(f(swarm));
        });
        let wait = self.wait;
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => panic!("{}: its task ended while running a command", self.name),
            Err(_) => panic!(
                "{}: timed out after {wait:?} waiting for a command to run",
                self.name
            ),
        }
    }

    /// Waits for the first forwarded event for which `matcher` returns `Some`, dropping the
    /// events before it; panics naming `what` if none comes in time.
    pub async fn expect<T>(&mut self, what: &str, mut matcher: impl FnMut(E) -> Option<T>) -> T {
        let (name, wait, events) = (&self.name, self.wait, &mut self.events);
        let found = async {
            while let Some(event) = events.recv().await {
                if let Some(t) = matcher(event) {
                    return t;
                }
            }
            panic!("{name}: its task ended while waiting for: {what}")
        };
        tokio::time::timeout(wait, found)
            .await
            .unwrap_or_else(|_| panic!("{name}: timed out after {wait:?} waiting for: {what}"))
    }

    /// The next forwarded event, or `None` if none comes within `wait` (for outcomes a test
    /// records rather than requires).
    pub async fn next_within(&mut self, wait: Duration) -> Option<E> {
        tokio::time::timeout(wait, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Drops the forwarded events not yet waited for.
    pub fn drain(&mut self) {
        while self.events.try_recv().is_ok() {}
    }
}
