//! Several nodes as one platform: what one node publishes (a stream's live
//! events, chat, an account's events) reaches the listeners of every node
//! over NATS. Each kind of message has one subject; a message carries the
//! node that sent it (so it is not delivered twice here) and its topic (a
//! stream id, an account). Outgoing messages wait in a bounded queue: when
//! NATS cannot keep up they are dropped and counted, never buffered without
//! limit, as slow WebSocket readers are.

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::live::events::Topics;

/// Messages waiting to go out to NATS per kind.
const OUTGOING: usize = 4096;

/// A node's connection to the cluster's NATS server.
#[derive(Clone)]
pub struct Cluster {
    client: async_nats::Client,
    /// This node's name in messages (random per process).
    pub node: String,
}

#[derive(Serialize, Deserialize)]
struct Envelope<E> {
    node: String,
    topic: String,
    event: E,
    /// When the sending node sent it (Unix microseconds): how long
    /// messages take between nodes is measured where they arrive.
    #[serde(default)]
    sent_at_us: u64,
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Cluster {
    /// Connects (and keeps reconnecting in the background).
    pub async fn connect(url: &str) -> anyhow::Result<Cluster> {
        // Without echo: NATS does not hand a node back what it published
        // itself (a third of every message's deliveries on three nodes,
        // each parsed only to be dropped).
        let client = async_nats::ConnectOptions::new()
            .name("streamweave")
            .no_echo()
            .connect(url)
            .await
            .map_err(|err| anyhow::anyhow!("connecting to NATS at {url}: {err}"))?;
        let node = format!("{:016x}", rand::random::<u64>());
        info!(%url, %node, "joined the cluster");
        Ok(Cluster { client, node })
    }

    /// Whether NATS is reachable now (`/readyz`).
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Relays `topics` between the nodes on subject `streamweave.{kind}`:
    /// what `relayed` accepts of this node's events goes out, and what the
    /// other nodes send is delivered to this node's listeners.
    pub async fn bridge<E>(
        &self,
        kind: &'static str,
        topics: Arc<Topics<E>>,
        relayed: fn(&E) -> bool,
    ) -> anyhow::Result<()>
    where
        E: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let deliver_to = topics.clone();
        self.relay(
            kind,
            |relay| topics.set_relay(relay),
            move |topic, event| deliver_to.deliver(topic, event),
            relayed,
        )
        .await
    }

    /// Relays messages of one kind: `install` receives the function that
    /// sends this node's messages out, `deliver` gets the other nodes'.
    pub async fn relay<E>(
        &self,
        kind: &'static str,
        install: impl FnOnce(crate::live::events::Relay<E>),
        deliver: impl Fn(&str, E) + Send + 'static,
        relayed: fn(&E) -> bool,
    ) -> anyhow::Result<()>
    where
        E: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let subject = format!("streamweave.{kind}");
        let mut incoming = self
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|err| anyhow::anyhow!("subscribing to {subject}: {err}"))?;
        let (outgoing, mut queue) = mpsc::channel::<Vec<u8>>(OUTGOING);
        let node = self.node.clone();
        install(Box::new(move |topic: &str, event: &E| {
            if !relayed(event) {
                return;
            }
            let envelope = Envelope {
                node: node.clone(),
                topic: topic.to_string(),
                event: event.clone(),
                sent_at_us: unix_us(),
            };
            let Ok(bytes) = serde_json::to_vec(&envelope) else {
                return;
            };
            if outgoing.try_send(bytes).is_err() {
                crate::metrics::metrics().cluster_dropped.inc();
            }
        }));
        let client = self.client.clone();
        let out_subject = subject.clone();
        tokio::spawn(async move {
            while let Some(bytes) = queue.recv().await {
                if let Err(err) = client.publish(out_subject.clone(), bytes.into()).await {
                    warn!(%err, "publishing to the cluster");
                }
            }
        });
        let node = self.node.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(message) = incoming.next().await {
                match serde_json::from_slice::<Envelope<E>>(&message.payload) {
                    Ok(envelope) if envelope.node != node => {
                        deliver(&envelope.topic, envelope.event);
                        // Sent to delivered here (a live segment: listed on
                        // its node to listed on this one).
                        let delay_us = unix_us().saturating_sub(envelope.sent_at_us);
                        if envelope.sent_at_us > 0 {
                            crate::metrics::metrics()
                                .cluster_message_delay_seconds
                                .get_or_create(&crate::metrics::KindLabels { kind })
                                .observe(delay_us as f64 / 1e6);
                            tracing::debug!(
                                target: "streamweave::cluster_latency",
                                kind,
                                delay_us,
                                "delivered from another node"
                            );
                        }
                    }
                    Ok(_) => {}
                    Err(err) => warn!(%err, %subject, "an unreadable cluster message"),
                }
            }
        });
        Ok(())
    }
}
