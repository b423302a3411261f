//! One HTTP attempt to deliver an event to a subscription, as logged.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{AttemptId, SubscriptionId, TenantId, WebhookId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Self {
        if s == "success" {
            Self::Success
        } else {
            Self::Failed
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub id: AttemptId,
    pub event_id: String,
    pub webhook_id: WebhookId,
    pub subscription_id: SubscriptionId,
    pub tenant_id: TenantId,
    pub event_type: String,
    /// 1 for the first try of this event to this subscription.
    pub attempt: u32,
    pub outcome: Outcome,
    pub status_code: Option<u16>,
    pub latency_ms: u32,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    pub created_at: DateTime<Utc>,
}
