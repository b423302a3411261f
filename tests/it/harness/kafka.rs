//! Reading what hookgate wrote to Kafka, as an outside consumer would.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Headers, OwnedMessage};
use rdkafka::{ClientConfig, Message};

use super::{eventually, unique};

/// A record's headers as text.
pub fn headers_of(message: &OwnedMessage) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if let Some(headers) = message.headers() {
        for h in headers.iter() {
            map.insert(
                h.key.to_owned(),
                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
            );
        }
    }
    map
}

/// Reads `topic` from the beginning until `n` records came, within `deadline`.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    n: usize,
    deadline: Duration,
) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut records = Vec::new();
    let read = async {
        while records.len() < n {
            // Errors are transient (a rebalance, a broker hiccup); the deadline bounds them.
            if let Ok(message) = consumer.recv().await {
                records.push(message.detach());
            }
        }
    };
    tokio::time::timeout(deadline, read).await.unwrap_or_else(|_| {
        panic!("{n} record(s) on {topic} within {deadline:?}, got {}", records.len())
    });
    records
}

/// Waits until the consumer group has `members` members and is stable.
pub async fn wait_for_group(brokers: &str, group: &str, wanted: usize, deadline: Duration) {
    let client: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).create().expect("client");
    let client = std::sync::Arc::new(client);
    eventually(&format!("group {group} stable with {wanted} members"), deadline, || {
        let client = std::sync::Arc::clone(&client);
        let group = group.to_owned();
        async move {
            // Reduce to plain values inside the blocking call: the list is not Send.
            let (stable, members, assigned) = tokio::task::spawn_blocking(move || {
                let list = client.fetch_group_list(Some(&group), Duration::from_secs(2)).ok()?;
                let info = list.groups().first()?;
                let assigned = info
                    .members()
                    .iter()
                    .filter(|m| m.assignment().is_some_and(|a| !a.is_empty()))
                    .count();
                Some((info.state() == "Stable", info.members().len(), assigned))
            })
            .await
            .ok()??;
            (stable && members == wanted && assigned == wanted).then_some(())
        }
    })
    .await;
}

/// Deletes the topics whose names start with `prefix`, so that a test leaves
/// nothing behind on the shared broker. Best effort.
pub async fn delete_topics(brokers: &str, prefix: &str) {
    let Ok(admin) = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create::<AdminClient<DefaultClientContext>>()
    else {
        return;
    };
    let lister: BaseConsumer = match ClientConfig::new().set("bootstrap.servers", brokers).create()
    {
        Ok(lister) => lister,
        Err(_) => return,
    };
    let prefix = prefix.to_owned();
    let names = tokio::task::spawn_blocking(move || {
        let metadata = lister.fetch_metadata(None, Duration::from_secs(5)).ok()?;
        Some(
            metadata
                .topics()
                .iter()
                .map(|t| t.name().to_owned())
                .filter(|name| name.starts_with(&prefix))
                .collect::<Vec<_>>(),
        )
    })
    .await
    .ok()
    .flatten()
    .unwrap_or_default();
    if names.is_empty() {
        return;
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let _ = admin.delete_topics(&names, &AdminOptions::new()).await;
}

/// Records of the group `group` not yet committed on `topic` (high
/// watermark less committed offset, over all partitions).
pub async fn uncommitted(brokers: &str, group: &str, topic: &str) -> i64 {
    let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        use rdkafka::{Offset, TopicPartitionList};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .create()
            .expect("consumer");
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout).expect("topic metadata");
        let partitions: Vec<i32> =
            metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
        let mut list = TopicPartitionList::new();
        for p in &partitions {
            list.add_partition(&topic, *p);
        }
        let committed = consumer.committed_offsets(list, timeout).expect("committed offsets");
        partitions
            .iter()
            .map(|p| {
                let (low, high) =
                    consumer.fetch_watermarks(&topic, *p, timeout).expect("watermarks");
                let at = committed
                    .find_partition(&topic, *p)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or(low);
                high - at.max(low)
            })
            .sum()
    })
    .await
    .expect("read committed offsets")
}
