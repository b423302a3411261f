//! Where a latency phase's milliseconds go, from the records' own
//! timestamps (Kafka's create time, in ms): the API (request sent → its
//! record on the publish topic), fan-out (publish record → delivery record)
//! and delivery (delivery record → at the receiver). Each event's data
//! carries its `n` and when its request was sent.

use std::collections::HashMap;
use std::time::Duration;

use hookgate::kafka::headers::CE_TYPE;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The medians of one latency phase's stages, in ms.
#[derive(Debug, Default)]
pub(crate) struct Stages {
    pub(crate) api: f64,
    pub(crate) fan_out: f64,
    pub(crate) deliver: f64,
}

/// One event's times: sent (µs) and the create time of its record (ms).
type Written = HashMap<u64, (i64, i64)>;

/// The stages of each event type of `arrived` (when each of its events
/// arrived at the receiver, by `n`, in µs), reading each topic once.
pub(crate) async fn measure(
    brokers: &str,
    publish_topic: &str,
    deliveries_topic: &str,
    arrived: &HashMap<String, HashMap<u64, i64>>,
) -> anyhow::Result<HashMap<String, Stages>> {
    let types: Vec<String> = arrived.keys().cloned().collect();
    let published = read_all(brokers, publish_topic, types.clone()).await?;
    let delivered = read_all(brokers, deliveries_topic, types).await?;
    let mut by_type = HashMap::new();
    for (event_type, arrived) in arrived {
        let (Some(published), Some(delivered)) =
            (published.get(event_type), delivered.get(event_type))
        else {
            continue;
        };
        let mut api = Vec::new();
        let mut fan_out = Vec::new();
        let mut deliver = Vec::new();
        for (n, (sent_us, published_ms)) in published {
            let (Some((_, queued_ms)), Some(arrived_us)) = (delivered.get(n), arrived.get(n))
            else {
                continue;
            };
            api.push(published_ms * 1000 - sent_us);
            fan_out.push((queued_ms - published_ms) * 1000);
            deliver.push(arrived_us - queued_ms * 1000);
        }
        let stages = Stages {
            api: median_ms(api),
            fan_out: median_ms(fan_out),
            deliver: median_ms(deliver),
        };
        by_type.insert(event_type.clone(), stages);
    }
    Ok(by_type)
}

fn median_ms(mut us: Vec<i64>) -> f64 {
    us.sort_unstable();
    us.get(us.len() / 2).copied().unwrap_or(0) as f64 / 1000.0
}

/// Every record of `types` on `topic`, from the beginning to the end it
/// has now, by type and the `n` of its data.
async fn read_all(
    brokers: &str,
    topic: &str,
    types: Vec<String>,
) -> anyhow::Result<HashMap<String, Written>> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("bench-stages-{}", ulid::Ulid::new()))
            .set("enable.auto.commit", "false")
            .create()?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        let mut assignment = TopicPartitionList::new();
        let mut ends = HashMap::new();
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (_, high) = consumer.fetch_watermarks(&topic, partition.id(), timeout)?;
            if high > 0 {
                assignment.add_partition_offset(&topic, partition.id(), Offset::Beginning)?;
                ends.insert(partition.id(), high);
            }
        }
        consumer.assign(&assignment)?;
        let mut written: HashMap<String, Written> = HashMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !ends.is_empty() && tokio::time::Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(500)) else { continue };
            let message = message?;
            if ends.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
                ends.remove(&message.partition());
            }
            let event_type = message.headers().and_then(|headers| {
                let value = headers.iter().find(|h| h.key == CE_TYPE)?.value?;
                types.iter().find(|t| t.as_bytes() == value)
            });
            let (Some(created_ms), Some(event_type)) =
                (message.timestamp().to_millis(), event_type)
            else {
                continue;
            };
            let data: serde_json::Value =
                serde_json::from_slice(message.payload().unwrap_or(b"{}"))?;
            if let (Some(n), Some(sent_us)) = (data["n"].as_u64(), data["sent_us"].as_i64()) {
                let of_type = written.entry(event_type.clone()).or_default();
                of_type.entry(n).or_insert((sent_us, created_ms));
            }
        }
        Ok(written)
    })
    .await?
}
