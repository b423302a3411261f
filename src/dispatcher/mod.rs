//! The dispatcher: source topics → `consume` (decode, bounded concurrency,
//! offsets stored once done) → `cache` (which subscriptions want this event
//! type) → `deliver` (signed POST, attempt logged).

pub mod cache;
pub mod consume;
pub mod deliver;
pub mod offsets;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{DispatcherConfig, Topics};
use crate::kafka::{KafkaConfig, Producer};
use crate::store::{AttemptLog, Store};
use cache::SubscriptionCache;
use consume::Pipeline;
use deliver::Deliverer;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("store: {0}")]
    Store(#[from] crate::store::Error),
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Runs until `shutdown`, then drains what is under way and commits.
pub async fn run(
    kafka: &KafkaConfig,
    store: Arc<dyn Store>,
    producer: Producer,
    topics: &Topics,
    config: &DispatcherConfig,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let cache = Arc::new(SubscriptionCache::new(Arc::clone(&store)));
    cache.refresh().await?;
    let poller = tokio::spawn(Arc::clone(&cache).poll(shutdown.clone()));

    let (log, log_writer) = AttemptLog::spawn(store);
    let deliverer =
        Arc::new(Deliverer::new(log, config.request_timeout, config.response_body_cap)?);
    let (consumer, tracker) = consume::create_consumer(kafka, &topics.group_id, &topics.source)?;
    tracing::info!(topics = ?topics.source, group = %topics.group_id, "dispatcher started");

    let pipeline = Arc::new(Pipeline {
        consumer,
        tracker,
        cache,
        deliverer,
        producer,
        dlq_topic: topics.dlq.clone(),
    });
    Arc::clone(&pipeline).run(shutdown).await;
    // Dropping the last sender lets the attempt writer finish its queue.
    drop(pipeline);
    let _ = log_writer.await;
    let _ = poller.await;
    Ok(())
}
