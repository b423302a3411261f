//! Events on Kafka in the CloudEvents Kafka protocol binding, binary mode:
//! `ce_*` headers, the partition key as record key, `data` as the value.

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use serde_json::value::RawValue;

use super::headers::{
    CE_BROADCAST, CE_ID, CE_SOURCE, CE_SPECVERSION, CE_TENANT_ID, CE_TIME, CE_TYPE, CONTENT_TYPE,
    CONTENT_TYPE_UNDERSCORE,
};
use crate::domain::event::is_valid_event_type;
use crate::domain::{Audience, Event, EventId, TenantId};

pub const SPEC_VERSION: &str = "1.0";
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// Why a record is a poison record. Goes into the dead-letter headers.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Poison {
    #[error("no ce_type header")]
    NoType,
    #[error("ce_type is not a valid event type name")]
    BadType,
    #[error("header {0} is not UTF-8")]
    NotUtf8(&'static str),
    #[error("unsupported content-type {0:?}: only JSON data is delivered")]
    ContentType(String),
    #[error("a header name is not UTF-8")]
    BadHeaderName,
    #[error("the record has no value")]
    NoData,
    #[error("the value is not valid JSON: {0}")]
    BadJson(String),
    #[error("ce_tenantid is not a tenant id")]
    BadTenant,
    #[error("ce_broadcast is neither true nor false")]
    BadBroadcast,
    #[error("ce_broadcast is true and ce_tenantid names a tenant: which is meant?")]
    TwoAudiences,
}

pub fn encode_headers(event: &Event) -> OwnedHeaders {
    let time = event.time.to_rfc3339_opts(SecondsFormat::Micros, true);
    let headers = OwnedHeaders::new_with_capacity(7)
        .insert(header(CE_SPECVERSION, SPEC_VERSION))
        .insert(header(CE_ID, event.id.as_str()))
        .insert(header(CE_TYPE, &event.event_type))
        .insert(header(CE_SOURCE, &event.source))
        .insert(header(CE_TIME, &time))
        .insert(header(CONTENT_TYPE, CONTENT_TYPE_JSON));
    match &event.audience {
        Audience::Tenant(tenant) => headers.insert(header(CE_TENANT_ID, tenant.as_str())),
        Audience::Broadcast => headers.insert(header(CE_BROADCAST, "true")),
    }
}

fn header<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header { key, value: Some(value) }
}

/// Where a record came from, to name events that carry no `ce_id`.
#[derive(Debug)]
pub struct RecordPosition<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// The record's timestamp, used when `ce_time` is absent.
    pub timestamp_ms: Option<i64>,
}

impl<'a> RecordPosition<'a> {
    pub fn of(message: &'a impl rdkafka::Message) -> Self {
        Self {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            timestamp_ms: message.timestamp().to_millis(),
        }
    }
}

pub type HeaderPair<'a> = (&'a str, Option<&'a [u8]>);

/// A record's headers as (name, value) pairs, or `None` when a name is not
/// UTF-8: rdkafka panics reading such a name, and a record must never stop a
/// partition, so the panic is caught here and the record is poison.
pub fn header_list(headers: &impl Headers) -> Option<Vec<HeaderPair<'_>>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        headers.iter().map(|h| (h.key, h.value)).collect()
    }))
    .ok()
}

pub fn decode(
    headers: Option<&impl Headers>,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    position: &RecordPosition<'_>,
) -> Result<Event, Poison> {
    decode_pairs(&listed(headers)?, key, payload, position)
}

/// A record's headers as pairs (none: no pairs); an unreadable name is poison.
pub fn listed(headers: Option<&impl Headers>) -> Result<Vec<HeaderPair<'_>>, Poison> {
    headers.map_or(Ok(Vec::new()), |headers| header_list(headers).ok_or(Poison::BadHeaderName))
}

/// `decode` of headers already listed, for a caller that reads more of them.
pub fn decode_pairs(
    pairs: &[HeaderPair<'_>],
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    position: &RecordPosition<'_>,
) -> Result<Event, Poison> {
    let mut id = None;
    let mut event_type = None;
    let mut source = None;
    let mut time = None;
    let mut content_type = None;
    let mut tenant = None;
    let mut broadcast = None;
    {
        for &(key, value) in pairs {
            let slot = match key {
                CE_ID => &mut id,
                CE_TYPE => &mut event_type,
                CE_SOURCE => &mut source,
                CE_TIME => &mut time,
                CONTENT_TYPE | CONTENT_TYPE_UNDERSCORE => &mut content_type,
                CE_TENANT_ID => &mut tenant,
                CE_BROADCAST => &mut broadcast,
                _ => continue,
            };
            *slot = value;
        }
    }
    let text = |value: Option<&[u8]>, name: &'static str| -> Result<Option<String>, Poison> {
        value
            .map(|v| std::str::from_utf8(v).map(str::to_owned).map_err(|_| Poison::NotUtf8(name)))
            .transpose()
    };

    let event_type = text(event_type, CE_TYPE)?.ok_or(Poison::NoType)?;
    if !is_valid_event_type(&event_type) {
        return Err(Poison::BadType);
    }
    if let Some(content_type) = text(content_type, CONTENT_TYPE)? {
        if !is_json(&content_type) {
            return Err(Poison::ContentType(content_type));
        }
    }
    let payload = payload.ok_or(Poison::NoData)?;
    let data: Box<RawValue> =
        serde_json::from_slice(payload).map_err(|e| Poison::BadJson(e.to_string()))?;

    // An id is what makes the webhook-id stable across redeliveries; a record
    // without one is named by its position, which is just as stable.
    let id = text(id, CE_ID)?.filter(|s| !s.is_empty()).unwrap_or_else(|| {
        format!("kafka:{}:{}:{}", position.topic, position.partition, position.offset)
    });
    let time = text(time, CE_TIME)?
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
        .or_else(|| position.timestamp_ms.and_then(DateTime::from_timestamp_millis))
        .unwrap_or_else(Utc::now);

    // Anything unclear about the audience is poison: guessing could only
    // widen it.
    let broadcast = match text(broadcast, CE_BROADCAST)?.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Poison::BadBroadcast),
    };
    let tenant = match text(tenant, CE_TENANT_ID)? {
        None => None,
        Some(raw) => Some(TenantId::parse(&raw).ok_or(Poison::BadTenant)?),
    };
    let audience = match (broadcast, tenant) {
        (true, Some(_)) => return Err(Poison::TwoAudiences),
        (true, None) => Audience::Broadcast,
        (false, Some(tenant)) => Audience::Tenant(tenant),
        (false, None) => Audience::Tenant(TenantId::default_tenant()),
    };

    Ok(Event {
        id: EventId::from(id),
        event_type,
        source: text(source, CE_SOURCE)?.unwrap_or_else(|| position.topic.to_owned()),
        time,
        key: key.map(<[u8]>::to_vec),
        data: data.into(),
        audience,
    })
}

fn is_json(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    media == CONTENT_TYPE_JSON || (media.starts_with("application/") && media.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position() -> RecordPosition<'static> {
        RecordPosition {
            topic: "t",
            partition: 2,
            offset: 7,
            timestamp_ms: Some(1_700_000_000_000),
        }
    }

    fn sample() -> Event {
        Event {
            id: "evt_1".into(),
            event_type: "order.created".into(),
            source: "shop".into(),
            time: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("valid"),
            key: Some(b"k1".to_vec()),
            data: RawValue::from_string(r#"{"n":1}"#.into()).expect("json").into(),
            audience: Audience::Tenant(TenantId::from_trusted("ten_a".into())),
        }
    }

    #[test]
    fn round_trips_through_headers() {
        let event = sample();
        let headers = encode_headers(&event);
        let decoded =
            decode(Some(&headers), Some(b"k1"), Some(br#"{"n":1}"#), &position()).expect("decodes");
        assert_eq!(decoded.id, event.id);
        assert_eq!(decoded.event_type, event.event_type);
        assert_eq!(decoded.source, event.source);
        assert_eq!(decoded.time, event.time);
        assert_eq!(decoded.key, event.key);
        assert_eq!(decoded.data.get(), r#"{"n":1}"#);
        assert_eq!(decoded.audience, event.audience);
        let broadcast = Event { audience: Audience::Broadcast, ..event };
        let headers = encode_headers(&broadcast);
        let decoded = decode(Some(&headers), None, Some(b"1"), &position()).expect("decodes");
        assert_eq!(decoded.audience, Audience::Broadcast);
    }

    #[test]
    fn names_records_without_id_by_position() {
        let headers = OwnedHeaders::new().insert(header(CE_TYPE, "a.b"));
        let decoded = decode(Some(&headers), None, Some(b"1"), &position()).expect("decodes");
        assert_eq!(decoded.id, "kafka:t:2:7");
        assert_eq!(decoded.time.timestamp_millis(), 1_700_000_000_000);
        assert_eq!(decoded.source, "t");
        assert_eq!(
            decoded.audience,
            Audience::Tenant(TenantId::default_tenant()),
            "no header: for the default tenant, not for every tenant"
        );
    }

    #[test]
    fn poison_records() {
        let typed = OwnedHeaders::new().insert(header(CE_TYPE, "a.b"));
        let no_headers: Option<&OwnedHeaders> = None;
        assert_eq!(decode(no_headers, None, Some(b"{}"), &position()).unwrap_err(), Poison::NoType);
        assert_eq!(decode(Some(&typed), None, None, &position()).unwrap_err(), Poison::NoData);
        assert!(matches!(
            decode(Some(&typed), None, Some(b"{nope"), &position()).unwrap_err(),
            Poison::BadJson(_)
        ));
        let xml = OwnedHeaders::new()
            .insert(header(CE_TYPE, "a.b"))
            .insert(header(CONTENT_TYPE, "application/xml"));
        assert!(matches!(
            decode(Some(&xml), None, Some(b"<a/>"), &position()).unwrap_err(),
            Poison::ContentType(_)
        ));
        let vendor_json = OwnedHeaders::new()
            .insert(header(CE_TYPE, "a.b"))
            .insert(header(CONTENT_TYPE, "application/vnd.shop+json; charset=utf-8"));
        assert!(decode(Some(&vendor_json), None, Some(b"{}"), &position()).is_ok());
        let unclear = |extra: &[(&'static str, &'static str)]| {
            let mut headers = OwnedHeaders::new().insert(header(CE_TYPE, "a.b"));
            for (name, value) in extra {
                headers = headers.insert(header(name, value));
            }
            decode(Some(&headers), None, Some(b"{}"), &position()).unwrap_err()
        };
        assert_eq!(unclear(&[(CE_BROADCAST, "yes")]), Poison::BadBroadcast);
        assert_eq!(unclear(&[(CE_TENANT_ID, "acme")]), Poison::BadTenant);
        assert_eq!(
            unclear(&[(CE_BROADCAST, "true"), (CE_TENANT_ID, "ten_a")]),
            Poison::TwoAudiences
        );
    }
}
