//! Creates the topics hookgate uses when they are missing.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::{Error, KafkaConfig};

#[derive(Debug)]
pub struct TopicSpec {
    pub partitions: i32,
    /// -1 takes the broker's default.
    pub replication: i32,
}

pub async fn ensure_topics(
    config: &KafkaConfig,
    names: &[String],
    spec: &TopicSpec,
) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = config.client_config().create()?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| NewTopic::new(name, spec.partitions, TopicReplication::Fixed(spec.replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    let results = admin.create_topics(&topics, &options).await?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::CreateTopic { topic, reason: code.to_string() })
            }
        }
    }
    Ok(())
}
