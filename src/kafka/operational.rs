//! Writes operational events to their topic, as CloudEvents like any other,
//! with `ce_subject` naming the subscription they are about. The dispatcher
//! fans them out from there to the tenant's subscriptions that ask for
//! `hookgate.*` types (never to the one they are about).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::Header;
use serde_json::value::RawValue;

use super::envelope::encode_headers;
use super::headers::{CE_DATASCHEMA, CE_SUBJECT};
use super::Producer;
use crate::domain::operational::{Operational, SOURCE};
use crate::domain::{Audience, Event};

/// Tries before an operational event is given up (each waits up to the
/// producer's own timeout for a broker that is away).
const TRIES: u32 = 3;
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The writer of operational events; clone it freely.
#[derive(Debug, Clone)]
pub struct OperationalEvents {
    producer: Producer,
    topic: Arc<str>,
}

impl OperationalEvents {
    pub fn new(producer: Producer, topic: &str) -> Self {
        Self { producer, topic: topic.into() }
    }

    /// The record of `event`: its key is the subscription id, so that the
    /// events about one subscription stay in order.
    pub fn record(event: &Operational) -> (Event, rdkafka::message::OwnedHeaders) {
        let data = event.data().to_string();
        #[allow(clippy::expect_used, reason = "a serialized JSON value is valid JSON")]
        let data: Box<RawValue> = RawValue::from_string(data).expect("serialized JSON is JSON");
        let record = Event {
            id: Operational::event_id(),
            event_type: event.kind.as_str().to_owned(),
            source: SOURCE.to_owned(),
            time: event.at,
            key: Some(event.subscription_id.as_str().as_bytes().to_vec()),
            data: data.into(),
            audience: Audience::Tenant(event.tenant_id.clone()),
        };
        let schema = event.kind.data_schema_uri();
        let headers = encode_headers(&record)
            .insert(Header { key: CE_SUBJECT, value: Some(event.subscription_id.as_str()) })
            .insert(Header { key: CE_DATASCHEMA, value: Some(schema.as_str()) });
        (record, headers)
    }

    /// Writes `event` in the background: whoever reports it (a delivery, an
    /// API call) never waits for the broker.
    pub fn emit(&self, event: Operational) {
        let this = self.clone();
        tokio::spawn(async move { this.send(&event).await });
    }

    /// Writes `event`; answers whether the broker acknowledged it.
    pub async fn send(&self, event: &Operational) -> bool {
        let (record, headers) = Self::record(event);
        for tries in 1..=TRIES {
            let sent = self
                .producer
                .send(
                    &self.topic,
                    record.key.as_deref(),
                    headers.clone(),
                    record.data.get().as_bytes(),
                )
                .await;
            match sent {
                Ok(()) => {
                    tracing::info!(kind = event.kind.as_str(), subscription_id = %event.subscription_id, event_id = %record.id, "operational event written");
                    return true;
                }
                Err(error) if tries < TRIES => {
                    tracing::warn!(kind = event.kind.as_str(), %error, tries, "operational event not written; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(error) => {
                    tracing::error!(kind = event.kind.as_str(), subscription_id = %event.subscription_id, %error, "operational event given up");
                }
            }
        }
        false
    }
}
