//! Dead letters as indexed from the dead-letter topic, and bulk replay jobs.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{DeadLetterId, ReplayId, SubscriptionId, TenantId, WebhookId};

/// Declares `DeadReason` from one list, so that a new reason is one line:
/// the variant, its text and its place in `ALL` cannot drift apart.
macro_rules! dead_reasons {
    ($($(#[doc = $doc:literal])* $variant:ident => $text:literal,)+) => {
        /// Why a delivery, or a record, ended in the dead-letter topic: the
        /// `hookgate_reason` header, a stored dead letter's `reason`, and a
        /// label of `hookgate_dead_letters_total`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DeadReason {
            $($(#[doc = $doc])* $variant,)+
        }

        impl DeadReason {
            /// Every reason, in the order they are listed here.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }
    };
}

dead_reasons! {
    /// Every attempt of the retry schedule failed.
    Exhausted => "exhausted",
    /// The delivery was older than the maximum age.
    Expired => "expired",
    /// The endpoint answered with a status that retrying will not change.
    NotRetryable => "not_retryable",
    /// The endpoint answered 410 Gone; the subscription is now disabled.
    Gone => "gone",
    /// The destination resolves to an address deliveries may not go to.
    Forbidden => "forbidden_destination",
    /// The record could not be understood.
    Poison => "poison",
    /// The subscription was paused while the delivery waited.
    Paused => "subscription_paused",
    /// The subscription is disabled.
    Disabled => "subscription_disabled",
    /// Kafka refuses the record (too large); dead-lettered without payload.
    Refused => "refused_by_kafka",
    /// The record names no reason hookgate knows: another producer wrote
    /// it to the topic. Never given by the dispatcher, only read back.
    Unknown => "unknown",
}

impl DeadReason {
    /// Why a dead letter of this reason cannot be sent again, if it cannot:
    /// the record holds no delivery to replay.
    pub fn why_not_replayable(self) -> Option<&'static str> {
        match self {
            Self::Poison => {
                Some("the record could not be read (poison), so there is no delivery to replay")
            }
            Self::Refused => {
                Some("Kafka refused the record for its size; the payload was not kept")
            }
            _ => None,
        }
    }

    /// Whether a dead letter of this reason may hold a delivery to send
    /// again (it must still name one: see `NewDeadLetter::is_replayable`).
    pub fn is_replayable(self) -> bool {
        self.why_not_replayable().is_none()
    }
}

impl fmt::Display for DeadReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reason text that is none of `DeadReason::ALL`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dead-letter reason {0:?}")]
pub struct UnknownReason(pub String);

impl FromStr for DeadReason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|reason| reason.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

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
    pub reason: DeadReason,
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

impl NewDeadLetter {
    /// Whether it can be sent again: it names the delivery it held (read
    /// from the index, so that lists need no payloads) and its reason left
    /// the delivery whole.
    pub fn is_replayable(&self) -> bool {
        self.subscription_id.is_some() && self.event_id.is_some() && self.reason.is_replayable()
    }
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
    fn every_reason_reads_back_as_itself() {
        let mut texts = std::collections::HashSet::new();
        for reason in DeadReason::ALL {
            assert_eq!(reason.as_str().parse::<DeadReason>(), Ok(*reason));
            assert!(texts.insert(reason.as_str()), "{reason} twice");
        }
        assert_eq!(
            "exhausted ".parse::<DeadReason>(),
            Err(UnknownReason("exhausted ".into())),
            "only the exact text"
        );
    }

    #[test]
    fn only_unreadable_or_refused_records_cannot_be_replayed() {
        let not: Vec<_> = DeadReason::ALL.iter().filter(|r| !r.is_replayable()).collect();
        assert_eq!(not, [&DeadReason::Poison, &DeadReason::Refused]);
    }

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
