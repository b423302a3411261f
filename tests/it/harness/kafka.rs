//! Reading what hookgate wrote to Kafka, as an outside consumer would.

use std::collections::HashMap;
use std::time::Duration;

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
