//! The API's answers read into types, so that a story asserts
//! `dead.reason == DeadReason::Exhausted` rather than comparing JSON text.

use hookgate::domain::{DeadLetterStatus, DeadReason};
use serde::{Deserialize, Deserializer};

/// A dead letter as `GET /v1/dead-letters` lists it.
#[derive(Debug, Deserialize)]
pub struct DeadLetterAnswer {
    pub id: String,
    #[serde(deserialize_with = "reason")]
    pub reason: DeadReason,
    #[serde(deserialize_with = "status")]
    pub status: DeadLetterStatus,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub webhook_id: Option<String>,
    pub replayable: bool,
}

impl DeadLetterAnswer {
    /// Reads one item of a list; a shape the API does not answer fails the test.
    pub fn of(value: &serde_json::Value) -> Self {
        serde_json::from_value(value.clone()).unwrap_or_else(|error| {
            panic!("a dead letter as the API answers it ({error}): {value}")
        })
    }
}

fn reason<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DeadReason, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| serde::de::Error::custom(format!("unknown reason `{text}`")))
}

fn status<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DeadLetterStatus, D::Error> {
    let text = String::deserialize(deserializer)?;
    DeadLetterStatus::parse(&text)
        .ok_or_else(|| serde::de::Error::custom(format!("unknown status `{text}`")))
}
