//! Several nodes as one platform: what one node publishes (a stream's live
//! events, chat, an account's events, new segments) reaches the nodes that
//! need it over NATS. A message carries the node that sent it (so it is
//! not delivered twice here) and its topic (a stream id, an account).
//!
//! What every node needs (new segments, viewer counts) goes out on one
//! subject per kind, `streamweave.{kind}`. What only listeners need (live
//! events, chat, account events) goes out on a subject per topic,
//! `streamweave.{kind}.{topic}`, and a node subscribes to a topic's subject
//! while someone on it listens: a node with no viewer of a stream receives
//! none of its chat. Outgoing messages wait in a bounded queue: when NATS
//! cannot keep up they are dropped and counted, never buffered without
//! limit, as slow WebSocket readers are.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::live::events::Topics;

/// Messages waiting to go out to NATS per kind.
const OUTGOING: usize = 4096;

/// How often a node unsubscribes from the topics nobody on it listens to
/// any more.
const UNSUBSCRIBE_INTERVAL: Duration = Duration::from_secs(10);

/// A topic as one token of a NATS subject: itself when it is letters,
/// digits and dashes (stream ids, `0x` addresses), else `_` and its bytes in
/// hex. Distinct topics get distinct tokens.
fn subject_token(topic: &str) -> String {
    if !topic.is_empty()
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        topic.to_string()
    } else {
        topic.bytes().fold(String::from("_"), |mut out, b| {
            out.push_str(&format!("{b:02x}"));
            out
        })
    }
}

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

    /// Returns once NATS has read what this node sent before: a request
    /// nobody answers, whose "no responders" NATS sends after the messages
    /// ahead of it on this connection (it reads them in order).
    async fn in_place(&self) {
        let subject = format!("streamweave-sync.{}", self.node);
        match self.client.request(subject, bytes::Bytes::new()).await {
            Err(err) if err.kind() == async_nats::RequestErrorKind::NoResponders => {}
            Ok(_) => {}
            Err(err) => warn!(%err, "waiting for NATS to read a subscription"),
        }
    }

    /// Whether NATS is reachable now (`/readyz`).
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Relays `topics` between the nodes, a topic at a time: what
    /// `relayed` accepts of this node's events goes out on
    /// `streamweave.{kind}.{topic}`, and while someone here listens to a
    /// topic ([`Topics::listen`]) what the other nodes send on it is
    /// delivered to them.
    pub async fn bridge<E>(
        &self,
        kind: &'static str,
        topics: Arc<Topics<E>>,
        relayed: fn(&E) -> bool,
    ) -> anyhow::Result<()>
    where
        E: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let outgoing = self.sender(kind);
        let node = self.node.clone();
        topics.set_relay(Box::new(move |topic: &str, event: &E| {
            if relayed(event) {
                let subject = format!("streamweave.{kind}.{}", subject_token(topic));
                send(&outgoing, &node, subject, topic, event);
            }
        }));
        let subscriptions = Arc::new(TopicSubscriptions {
            kind,
            cluster: self.clone(),
            topics: Arc::downgrade(&topics),
            active: Mutex::default(),
        });
        let interested = subscriptions.clone();
        topics.set_interest(Box::new(move |topic: &str| {
            let (subscriptions, topic) = (interested.clone(), topic.to_string());
            Box::pin(async move { subscriptions.subscribe(topic).await })
        }));
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UNSUBSCRIBE_INTERVAL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if !subscriptions.unsubscribe_unheard() {
                    break;
                }
            }
        });
        Ok(())
    }

    /// Where this node's messages of one kind wait to go out, and the task
    /// that publishes them.
    fn sender(&self, kind: &'static str) -> mpsc::Sender<(String, Vec<u8>)> {
        let (outgoing, mut queue) = mpsc::channel::<(String, Vec<u8>)>(OUTGOING);
        let client = self.client.clone();
        tokio::spawn(async move {
            while let Some((subject, bytes)) = queue.recv().await {
                if let Err(err) = client.publish(subject, bytes.into()).await {
                    warn!(%err, kind, "publishing to the cluster");
                }
            }
        });
        outgoing
    }

    /// Relays messages of one kind that every node needs, on
    /// `streamweave.{kind}`: `install` receives the function that sends
    /// this node's messages out, `deliver` gets the other nodes'.
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
        let incoming = self
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|err| anyhow::anyhow!("subscribing to {subject}: {err}"))?;
        let outgoing = self.sender(kind);
        let node = self.node.clone();
        install(Box::new(move |topic: &str, event: &E| {
            if relayed(event) {
                send(&outgoing, &node, subject.clone(), topic, event);
            }
        }));
        tokio::spawn(receive(kind, self.node.clone(), incoming, deliver));
        Ok(())
    }
}

/// Queues one of this node's messages for NATS (dropped and counted when
/// the queue is full).
fn send<E: Serialize>(
    outgoing: &mpsc::Sender<(String, Vec<u8>)>,
    node: &str,
    subject: String,
    topic: &str,
    event: &E,
) {
    let envelope = Envelope {
        node: node.to_string(),
        topic: topic.to_string(),
        event,
        sent_at_us: unix_us(),
    };
    let Ok(bytes) = serde_json::to_vec(&envelope) else {
        return;
    };
    if outgoing.try_send((subject, bytes)).is_err() {
        crate::metrics::metrics().cluster_dropped.inc();
    }
}

/// Delivers the other nodes' messages of a subscription until it ends.
async fn receive<E: DeserializeOwned>(
    kind: &'static str,
    node: String,
    mut incoming: async_nats::Subscriber,
    deliver: impl Fn(&str, E),
) {
    use futures_util::StreamExt;
    while let Some(message) = incoming.next().await {
        match serde_json::from_slice::<Envelope<E>>(&message.payload) {
            Ok(envelope) if envelope.node != node => {
                deliver(&envelope.topic, envelope.event);
                // Sent to delivered here (a live segment: listed on its
                // node to listed on this one).
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
            Err(err) => warn!(%err, subject = %message.subject, "an unreadable cluster message"),
        }
    }
}

/// One kind's subscriptions to the topics someone on this node listens to.
struct TopicSubscriptions<E> {
    kind: &'static str,
    cluster: Cluster,
    /// Weak: the subscriptions end with the node's topics.
    topics: std::sync::Weak<Topics<E>>,
    /// Per topic, once subscribed, the task delivering its messages.
    active: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<tokio::task::AbortHandle>>>>,
}

impl<E> TopicSubscriptions<E>
where
    E: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Subscribes to `topic` unless already subscribed; returns once NATS
    /// has the subscription, so what another node sends from then on
    /// arrives here.
    async fn subscribe(&self, topic: String) {
        let cell = {
            let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
            active.entry(topic.clone()).or_default().clone()
        };
        let subscribed = cell
            .get_or_try_init(|| async {
                let subject = format!("streamweave.{}.{}", self.kind, subject_token(&topic));
                let incoming = self.cluster.client.subscribe(subject).await?;
                self.cluster.in_place().await;
                let topics = self.topics.clone();
                let delivering = tokio::spawn(receive(
                    self.kind,
                    self.cluster.node.clone(),
                    incoming,
                    move |topic: &str, event: E| {
                        if let Some(topics) = topics.upgrade() {
                            topics.deliver(topic, event);
                        }
                    },
                ));
                anyhow::Ok(delivering.abort_handle())
            })
            .await;
        if let Err(err) = subscribed {
            // Left unset: the next listener tries again.
            warn!(%err, kind = self.kind, %topic, "subscribing to a topic of the cluster");
        }
    }

    /// Unsubscribes from the topics nobody here listens to any more; false
    /// once the node's topics are gone.
    fn unsubscribe_unheard(&self) -> bool {
        let Some(topics) = self.topics.upgrade() else {
            return false;
        };
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        // Under the lock, so that a listener who joins meanwhile (it
        // listens before it subscribes) either is counted here or finds
        // the topic gone and subscribes again.
        active.retain(|topic, cell| match cell.get() {
            Some(delivering) if !topics.listened(topic) => {
                // Dropping the subscriber unsubscribes.
                delivering.abort();
                false
            }
            // Still subscribing, or listened to.
            _ => true,
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    const NATS: &str = "nats://127.0.0.1:4222";

    /// A node's connection, or `None` after saying why (with `CI` set that
    /// fails instead).
    async fn node() -> Option<Cluster> {
        match Cluster::connect(NATS).await {
            Ok(cluster) => Some(cluster),
            Err(err) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "NATS is required in CI: {err}"
                );
                eprintln!("skipping: {err}");
                None
            }
        }
    }

    /// A kind of message no other test run uses.
    fn fresh_kind() -> &'static str {
        Box::leak(format!("test-{:016x}", rand::random::<u64>()).into_boxed_str())
    }

    #[test]
    fn topics_become_distinct_subject_tokens() {
        assert_eq!(subject_token("3f2a-stream"), "3f2a-stream");
        assert_eq!(subject_token("0xAbC1"), "0xAbC1");
        // Dots, wildcards and spaces would change the subject's shape.
        assert_eq!(subject_token("a.b *>"), "_612e62202a3e");
        assert_eq!(subject_token(""), "_");
        // An encoded token cannot be another topic's own.
        assert_eq!(subject_token("_61"), "_5f3631");
        assert_ne!(subject_token("a."), subject_token("_612e"));
    }

    #[tokio::test]
    async fn a_topic_reaches_the_nodes_that_listen_on_its_own_subject() {
        let (Some(a), Some(b)) = (node().await, node().await) else {
            return;
        };
        let kind = fresh_kind();
        let (on_a, on_b) = (
            Arc::new(Topics::<String>::default()),
            Arc::new(Topics::<String>::default()),
        );
        a.bridge(kind, on_a.clone(), |_| true)
            .await
            .expect("bridge");
        b.bridge(kind, on_b.clone(), |_| true)
            .await
            .expect("bridge");
        let watcher = async_nats::connect(NATS).await.expect("watcher");
        let mut subjects = watcher
            .subscribe(format!("streamweave.{kind}.>"))
            .await
            .expect("watch");
        watcher.flush().await.expect("flush");

        for topic in ["stream-1", "a.b c"] {
            let mut listener = on_b.listen(topic).await;
            on_a.publish(topic, format!("hello {topic}"));
            let heard = tokio::time::timeout(Duration::from_secs(5), listener.recv())
                .await
                .expect("delivered on the other node")
                .expect("open");
            assert_eq!(heard, format!("hello {topic}"));
            let sent = tokio::time::timeout(Duration::from_secs(5), subjects.next())
                .await
                .expect("seen")
                .expect("open");
            assert_eq!(
                sent.subject.as_str(),
                format!("streamweave.{kind}.{}", subject_token(topic))
            );
        }
        // Only what `relayed` accepts goes out.
        let filtered = fresh_kind();
        let on_c = Arc::new(Topics::<String>::default());
        a.bridge(filtered, on_c.clone(), |event| event != "private")
            .await
            .expect("bridge");
        let mut all = watcher
            .subscribe(format!("streamweave.{filtered}.>"))
            .await
            .expect("watch");
        watcher.flush().await.expect("flush");
        on_c.publish("s", "private".to_string());
        on_c.publish("s", "public".to_string());
        let sent = tokio::time::timeout(Duration::from_secs(5), all.next())
            .await
            .expect("seen")
            .expect("open");
        let envelope: serde_json::Value = serde_json::from_slice(&sent.payload).expect("json");
        assert_eq!(envelope["event"], "public");
    }

    #[tokio::test]
    async fn a_node_subscribes_while_someone_listens_and_unsubscribes_after() {
        let (Some(a), Some(b)) = (node().await, node().await) else {
            return;
        };
        let kind = fresh_kind();
        let on_a = Arc::new(Topics::<String>::default());
        a.bridge(kind, on_a.clone(), |_| true)
            .await
            .expect("bridge");
        let on_b = Arc::new(Topics::<String>::default());
        let subscriptions = TopicSubscriptions {
            kind,
            cluster: b.clone(),
            topics: Arc::downgrade(&on_b),
            active: Mutex::default(),
        };
        let subscribed = |topic: &str| {
            subscriptions
                .active
                .lock()
                .expect("lock")
                .get(topic)
                .is_some_and(|cell| cell.initialized())
        };

        let listener = on_b.subscribe("s");
        subscriptions.subscribe("s".to_string()).await;
        // A second listener shares the subscription.
        let mut second = on_b.subscribe("s");
        subscriptions.subscribe("s".to_string()).await;
        assert_eq!(subscriptions.active.lock().expect("lock").len(), 1);
        on_a.publish("s", "one".to_string());
        let heard = tokio::time::timeout(Duration::from_secs(5), second.recv())
            .await
            .expect("delivered")
            .expect("open");
        assert_eq!(heard, "one");

        // Listened to: kept.
        assert!(subscriptions.unsubscribe_unheard());
        assert!(subscribed("s"));
        drop((listener, second));
        assert!(subscriptions.unsubscribe_unheard());
        assert!(!subscribed("s"), "nobody listens: unsubscribed");

        // Unsubscribed, a listener that has not told the cluster hears
        // nothing from the other node.
        let mut again = on_b.subscribe("s");
        on_a.publish("s", "lost".to_string());
        let nothing = tokio::time::timeout(Duration::from_millis(500), again.recv()).await;
        assert!(nothing.is_err(), "{nothing:?}");
        // Telling it subscribes again.
        subscriptions.subscribe("s".to_string()).await;
        on_a.publish("s", "two".to_string());
        let heard = tokio::time::timeout(Duration::from_secs(5), again.recv())
            .await
            .expect("delivered")
            .expect("open");
        assert_eq!(heard, "two");

        // Once the node's topics are gone, so are the subscriptions.
        drop((again, on_b));
        assert!(!subscriptions.unsubscribe_unheard());
    }
}
