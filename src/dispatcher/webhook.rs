//! The deliver stage's attempts: sent by the delivery core, each recorded
//! here in the dispatcher's attempt log (written in batches, off the
//! delivery path).

use crate::delivery::{Client, DeliveryError, Target};
use crate::domain::Event;
use crate::store::AttemptLog;
use crate::trace::TraceHeaders;

#[derive(Debug)]
pub struct Webhooks {
    client: Client,
    log: AttemptLog,
}

impl Webhooks {
    pub fn new(client: Client, log: AttemptLog) -> Self {
        Self { client, log }
    }

    /// Makes attempt number `attempt`, logs it, and answers how it went.
    pub async fn attempt(
        &self,
        event: &Event,
        target: &Target,
        attempt: u32,
        trace: TraceHeaders,
    ) -> Result<(), DeliveryError> {
        let sent = self.client.send(event, target, Some(trace)).await;
        if let Some(error) = &sent.error {
            tracing::debug!(subscription_id = %target.subscription.id, event_id = %event.id, attempt, %error, "delivery attempt failed");
        }
        self.log.record(sent.record(event, target, attempt)).await;
        sent.into_result()
    }
}
