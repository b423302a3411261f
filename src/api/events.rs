//! `POST /v1/events`: publish one event. The answer comes only once Kafka
//! acknowledged the write.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::auth::Caller;
use super::extract::Json;
use super::problem::{ApiError, FieldError};
use super::AppState;
use crate::domain::event::is_valid_event_type;
use crate::domain::ids::new_event_id;
use crate::domain::Event;

const MAX_ID_LEN: usize = 255;
const MAX_KEY_LEN: usize = 1024;
const DEFAULT_SOURCE: &str = "hookgate";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishEvent {
    #[serde(rename = "type")]
    event_type: String,
    data: Box<RawValue>,
    key: Option<String>,
    id: Option<String>,
    source: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Published {
    id: String,
}

pub async fn publish(
    State(state): State<AppState>,
    _caller: Caller,
    Json(req): Json<PublishEvent>,
) -> Result<(StatusCode, axum::Json<Published>), ApiError> {
    let event = validate(req)?;
    state.producer.publish(&state.publish_topic, &event).await.map_err(publish_error)?;
    tracing::debug!(event_id = %event.id, event_type = %event.event_type, "event published");
    Ok((StatusCode::ACCEPTED, axum::Json(Published { id: event.id })))
}

fn validate(req: PublishEvent) -> Result<Event, ApiError> {
    let mut errors = Vec::new();
    if !is_valid_event_type(&req.event_type) {
        errors.push(FieldError::new(
            "type",
            "dot-separated words of letters, digits, `_` and `-`, at most 255 characters",
        ));
    }
    if let Some(id) = &req.id {
        if !printable_token(id, MAX_ID_LEN) {
            errors.push(FieldError::new(
                "id",
                format!("1 to {MAX_ID_LEN} printable ASCII characters without spaces"),
            ));
        }
    }
    if req.key.as_ref().is_some_and(|k| k.is_empty() || k.len() > MAX_KEY_LEN) {
        errors.push(FieldError::new("key", format!("1 to {MAX_KEY_LEN} bytes")));
    }
    if let Some(source) = &req.source {
        if !printable_token(source, MAX_ID_LEN) {
            errors.push(FieldError::new(
                "source",
                format!("1 to {MAX_ID_LEN} printable ASCII characters without spaces"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    Ok(Event {
        id: req.id.unwrap_or_else(new_event_id),
        event_type: req.event_type,
        source: req.source.unwrap_or_else(|| DEFAULT_SOURCE.to_owned()),
        time: Utc::now(),
        key: req.key.map(String::into_bytes),
        data: req.data,
    })
}

fn printable_token(value: &str, max_len: usize) -> bool {
    !value.is_empty() && value.len() <= max_len && value.bytes().all(|b| b.is_ascii_graphic())
}

fn publish_error(error: KafkaError) -> ApiError {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => ApiError::PayloadTooLarge,
        _ => {
            tracing::warn!(%error, "publish failed");
            ApiError::Unavailable {
                detail: "the event could not be written to Kafka; nothing was published, try again"
                    .to_owned(),
                retry_after_secs: 5,
            }
        }
    }
}
