//! Dead letters as indexed from the dead-letter topic, and bulk replay jobs.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{DeadLetterId, ReplayId, SubscriptionId, TenantId, WebhookId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterStatus {
    /// Waiting for an admin: replay it or discard it.
    Pending,
    /// Sent again through the deliveries topic.
    Replayed,
    /// Set aside for good.
    Discarded,
}

impl DeadLetterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Replayed => "replayed",
            Self::Discarded => "discarded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "replayed" => Some(Self::Replayed),
            "discarded" => Some(Self::Discarded),
            _ => None,
        }
    }
}

/// A Kafka record header as kept: text when it is text PostgreSQL can hold,
/// base64 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordHeader {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

impl RecordHeader {
    pub fn new(name: &str, value: Option<&[u8]>) -> Self {
        let name = name.replace('\0', "\u{fffd}");
        match value {
            None => Self { name, value: None, value_base64: None },
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(text) if !text.contains('\0') => {
                    Self { name, value: Some(text.to_owned()), value_base64: None }
                }
                _ => Self { name, value: None, value_base64: Some(B64.encode(bytes)) },
            },
        }
    }

    /// The value's bytes as they were on the record.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        match (&self.value, &self.value_base64) {
            (Some(text), _) => Some(text.as_bytes().to_vec()),
            (None, Some(encoded)) => B64.decode(encoded).ok(),
            (None, None) => None,
        }
    }
}

/// A dead letter as the indexer read it from the topic.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub id: DeadLetterId,
    pub dlq_topic: String,
    pub dlq_partition: i32,
    pub dlq_offset: i64,
    pub tenant_id: Option<TenantId>,
    pub subscription_id: Option<SubscriptionId>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub webhook_id: Option<WebhookId>,
    pub reason: String,
    pub error: Option<String>,
    pub last_status: Option<u16>,
    pub attempts: u32,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub dead_at: DateTime<Utc>,
    pub replay_of: Option<DeadLetterId>,
    pub headers: Vec<RecordHeader>,
    pub payload: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

/// A dead letter as stored, with what became of it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub record: NewDeadLetter,
    pub status: DeadLetterStatus,
    pub replay_id: Option<ReplayId>,
    pub status_changed_at: Option<DateTime<Utc>>,
}

/// Which dead letters to list or replay; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeadLetterFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<TenantId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<SubscriptionId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Dead-lettered at or after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// Dead-lettered before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<DeadLetterStatus>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplayStatus {
    Running,
    Completed,
    Cancelled,
}

impl ReplayStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "running" => Some(Self::Running),
            "completed" => Some(Self::Completed),
            "cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }
}

/// A bulk replay: the pending dead letters matching `filter`, up to
/// `upper_id`, sent again in id order at most `rate_per_second` a second.
#[derive(Debug, Clone)]
pub struct Replay {
    pub id: ReplayId,
    /// The tenant whose key asked for it; `None`: an admin.
    pub tenant_id: Option<TenantId>,
    pub filter: DeadLetterFilter,
    pub upper_id: Option<DeadLetterId>,
    pub url: Option<String>,
    pub rate_per_second: Option<u32>,
    pub status: ReplayStatus,
    pub total: u64,
    pub done: u64,
    pub failed: u64,
    pub skipped: u64,
    /// The last dead letter handled.
    pub cursor: Option<DeadLetterId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_their_bytes() {
        for value in [&b"text"[..], b"\xff\xfe", b"a\0b", b""] {
            let header = RecordHeader::new("h", Some(value));
            assert_eq!(header.bytes().as_deref(), Some(value));
            let json = serde_json::to_string(&header).expect("json");
            assert!(!json.contains("\\u0000"), "PostgreSQL refuses NUL in JSONB: {json}");
        }
        assert_eq!(RecordHeader::new("h", None).bytes(), None);
    }
}
