//! Kafka: the envelope of events on topics (CloudEvents binary mode), the
//! producer the API publishes with, and topic set-up.
//!
//! api → `Producer::publish` → source topic → dispatcher (`envelope::decode`)

pub mod dead_letter;
pub mod delivery;
pub mod envelope;
pub mod headers;
pub mod operational;
pub mod produce;
pub mod topics;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
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
        self.client_config_over(&[])
    }

    /// Like `client_config`, with `defaults` that the operator's properties
    /// override (tuning, not guarantees: callers set those after).
    pub fn client_config_over(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            // librdkafka's own logs go through `tracing` via the default context.
            .set("log_level", "4")
            // Small records must not wait for Nagle's algorithm.
            .set("socket.nagle.disable", "true");
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}

/// Whether retrying cannot help: librdkafka's fatal errors (the idempotent
/// producer's, a fenced consumer) and failed authentication. The process
/// exits on these, with one line, instead of retrying forever.
pub fn is_fatal(error: &KafkaError) -> bool {
    matches!(error, KafkaError::MessageConsumptionFatal(_))
        || matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fatal
                    | RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
            )
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fatal_and_authentication_errors_are_fatal_the_rest_is_retried() {
        for fatal in [
            KafkaError::Global(RDKafkaErrorCode::Fatal),
            KafkaError::MessageProduction(RDKafkaErrorCode::Fatal),
            KafkaError::MessageConsumptionFatal(RDKafkaErrorCode::OutOfOrderSequenceNumber),
            KafkaError::MessageConsumption(RDKafkaErrorCode::Authentication),
            KafkaError::Global(RDKafkaErrorCode::SaslAuthenticationFailed),
        ] {
            assert!(is_fatal(&fatal), "{fatal:?}");
        }
        for transient in [
            KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure),
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
            KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition),
            KafkaError::PartitionEOF(0),
        ] {
            assert!(!is_fatal(&transient), "{transient:?}");
        }
    }

    #[test]
    fn an_operators_property_overrides_a_tuning_default() {
        let default = [("linger.ms", "2")];
        let plain = KafkaConfig { brokers: "127.0.0.1:9".into(), properties: Vec::new() };
        assert_eq!(plain.client_config_over(&default).get("linger.ms"), Some("2"));
        let tuned =
            KafkaConfig { properties: vec![("linger.ms".into(), "0".into())], ..plain.clone() };
        assert_eq!(tuned.client_config_over(&default).get("linger.ms"), Some("0"));
        assert_eq!(tuned.client_config().get("bootstrap.servers"), Some("127.0.0.1:9"));
    }
}
