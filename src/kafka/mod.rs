//! Kafka: the envelope of events on topics (CloudEvents binary mode), the
//! producer the API publishes with, and topic set-up.
//!
//! api → `Producer::publish` → source topic → dispatcher (`envelope::decode`)

pub mod delivery;
pub mod envelope;
pub mod produce;
pub mod topics;

use rdkafka::error::KafkaError;
use rdkafka::ClientConfig;

pub use produce::Producer;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka client: {0}")]
    Client(#[from] KafkaError),
    #[error("creating topic {topic}: {reason}")]
    CreateTopic { topic: String, reason: String },
}

/// How to reach the cluster: the brokers and pass-through librdkafka
/// properties (`HOOKGATE_KAFKA_*`, for SASL/TLS).
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    pub brokers: String,
    pub properties: Vec<(String, String)>,
}

impl KafkaConfig {
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            // librdkafka's own logs go through `tracing` via the default context.
            .set("log_level", "4")
            // Small records must not wait for Nagle's algorithm.
            .set("socket.nagle.disable", "true");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}
