//! The example relay peer as a real process with its admin API on: a
//! [`RelayProcess`](crate::common::process::RelayProcess) and its admin address (read from its
//! log), with client helpers that go through it. Test files include it with `mod admin_support;` next to
//! `mod common;`.
#![allow(dead_code, unused_imports)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use libp2p::{core::multiaddr::Protocol, PeerId};
use macula_relay::admin::AdminClient;

pub use crate::common::process::{run_to_end, run_to_end_async, PROCESS_WAIT};
use crate::common::{process::RelayProcess, ClientEvent, TestClient};

/// How long a test waits for any one thing.
pub const WAIT: Duration = PROCESS_WAIT;

const ADMIN_LOG: &str = "admin API listening on http://";

/// A running relay node process with its admin API on (a [`RelayProcess`] and its admin
/// address); killed on drop.
pub struct AdminNode {
    process: RelayProcess,
    /// Its admin API address.
    pub admin: SocketAddr,
}

impl std::ops::Deref for AdminNode {
    type Target = RelayProcess;

    fn deref(&self) -> &RelayProcess {
        &self.process
    }
}

impl std::ops::DerefMut for AdminNode {
    fn deref_mut(&mut self) -> &mut RelayProcess {
        &mut self.process
    }
}

impl AdminNode {
    /// Starts the node on 127.0.0.1 (TCP, port 0) with its admin API on 127.0.0.1 (port 0),
    /// plus `extra` flags; waits for its address and its admin address.
    pub fn start(extra: &[&str]) -> Self {
        let mut args = vec!["--listen", "/ip4/127.0.0.1/tcp/0", "--admin", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let process = RelayProcess::start(&args);
        let admin = process.wait_log("its admin address", |line| {
            let rest = line.split(ADMIN_LOG).nth(1)?;
            Some(
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .parse::<SocketAddr>()
                    .expect("admin address is ip:port"),
            )
        });
        AdminNode { process, admin }
    }

    /// A client of its admin API.
    pub fn client(&self, token: Option<&str>) -> AdminClient {
        AdminClient::new(self.admin, token.map(str::to_owned))
    }

    /// Reserves a slot for `client` on it.
    pub async fn reserve(&self, client: &mut TestClient) {
        client.reserve_on(self.peer_id, self.addr.clone()).await;
    }

    /// Tries to reserve a slot for `client`: Ok if accepted, Err with the client's error if
    /// refused.
    pub async fn try_reserve(&self, client: &mut TestClient) -> Result<(), String> {
        let (relay, addr) = (self.peer_id, self.addr.clone());
        let dial = addr.clone();
        client.run(move |s| s.dial(dial).unwrap());
        client
            .expect("connected to relay", |e| match e {
                ClientEvent::Connected {
                    peer,
                    relayed: false,
                } if *peer == relay => Some(()),
                _ => None,
            })
            .await;
        client.run(move |s| {
            s.listen_on(addr.with(Protocol::P2pCircuit)).unwrap();
        });
        client
            .expect("reservation answer", |e| match e {
                ClientEvent::ReservationAccepted { .. } => Some(Ok(())),
                ClientEvent::ListenerClosed { error } => Some(Err(error.clone())),
                _ => None,
            })
            .await
    }

    /// Dials `target` through it; Ok once the relayed connection is up.
    pub async fn dial_through(
        &self,
        source: &mut TestClient,
        target: PeerId,
    ) -> Result<(), String> {
        source.dial_circuit(self.circuit_addr(target), target).await
    }
}

/// Polls `check` every 100 ms until it gives `Some`, for at most [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(t) = check().await {
            return t;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A parsed Prometheus scrape.
pub struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    /// Parses Prometheus (or OpenMetrics) text with a text-format parser.
    pub fn parse(text: &str) -> Self {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Scrape(prometheus_parse::Scrape::parse(lines).expect("metrics text parses"))
    }

    /// The value of the series `name` whose labels include `labels`; `None` if absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match &s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => *v,
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.last().map(|b| b.count).unwrap_or(0.0)
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            })
    }

    /// [`value`](Self::value), which must be present.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no series {name} {labels:?} in the scrape"))
    }
}
