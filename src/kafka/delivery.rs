//! Delivery records: one per event × subscription, on `hookgate.deliveries`
//! and the retry tier topics, keyed by subscription id so that one dispatcher
//! owns a subscription at a time. The event travels as in the source topic
//! (CloudEvents binary mode); `hookgate_*` headers carry the delivery state.

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::message::{Header, Headers, OwnedHeaders};

use super::envelope::{self, HeaderPair, Poison, RecordPosition};
use super::headers::{
    ATTEMPT, ATTEMPTS, CREATED, DUE, ERROR, EVENT_KEY, FIRST_ATTEMPT, FIRST_ATTEMPT_AT, LANE,
    LAST_ATTEMPT_AT, LAST_ERROR, LAST_STATUS, PARKED, REASON, REPLAY_JOB, REPLAY_OF, REPLAY_RATE,
    REPLAY_URL, SUBSCRIPTION, TENANT,
};
use crate::domain::{DeadReason, Event, SubscriptionId, TenantId};
use crate::trace::TraceHeaders;

#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: Event,
    pub subscription_id: SubscriptionId,
    /// The tenant whose subscription this is.
    pub tenant_id: TenantId,
    /// The attempt to make next, from 1.
    pub attempt: u32,
    /// When fan-out created it; the maximum age counts from here.
    pub created_ms: i64,
    pub first_attempt_ms: Option<i64>,
    /// Not to be attempted before this time (retries).
    pub due_ms: Option<i64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    /// How often it left the deliver stage without an attempt (its
    /// subscription could not take it then); each park waits longer.
    pub parked: u32,
    /// Its place in a parked lane of an `ordered` subscription (see
    /// `dispatcher::parked_lanes`), while it is out in a retry tier.
    pub lane: Option<LaneSeq>,
    /// The fan-out span's context: each attempt's span is its child.
    pub trace: Option<TraceHeaders>,
    /// Set on a replayed dead letter; carried through retries, so that a
    /// replay that fails again is dead-lettered with a link to the first.
    pub replay: Option<ReplayOrigin>,
}

/// A place in a parked lane: the lane's epoch (which dispatcher parked it,
/// and when) and the delivery's sequence number in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaneSeq {
    pub epoch: u64,
    pub seq: u64,
}

impl LaneSeq {
    fn encode(self) -> String {
        format!("{:x}:{:x}", self.epoch, self.seq)
    }

    fn decode(text: &str) -> Option<Self> {
        let (epoch, seq) = text.split_once(':')?;
        Some(Self {
            epoch: u64::from_str_radix(epoch, 16).ok()?,
            seq: u64::from_str_radix(seq, 16).ok()?,
        })
    }
}

/// Where a replayed delivery comes from, and how the replay asked it sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayOrigin {
    /// The dead letter replayed (`dl_…`).
    pub dead_letter: String,
    /// The bulk replay (`rpl_…`), if any.
    pub job: Option<String>,
    /// At most this many of the job's deliveries a second per subscription.
    pub rate_per_second: Option<u32>,
    /// Sent here instead of the subscription's URL.
    pub url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Event(#[from] Poison),
    #[error("delivery header {0} is missing or invalid")]
    Header(&'static str),
}

impl Delivery {
    pub fn new(event: Event, subscription_id: SubscriptionId, tenant_id: TenantId) -> Self {
        Self {
            event,
            subscription_id,
            tenant_id,
            attempt: 1,
            created_ms: Utc::now().timestamp_millis(),
            first_attempt_ms: None,
            due_ms: None,
            last_status: None,
            last_error: None,
            parked: 0,
            lane: None,
            replay: None,
            trace: None,
        }
    }

    /// A fresh delivery of what a dead letter holds: attempts count from 1
    /// again and the maximum age from now.
    pub fn replayed(mut self, origin: ReplayOrigin) -> Self {
        self.attempt = 1;
        self.created_ms = Utc::now().timestamp_millis();
        self.first_attempt_ms = None;
        self.due_ms = None;
        self.last_status = None;
        self.last_error = None;
        self.parked = 0;
        self.lane = None;
        self.replay = Some(origin);
        self
    }

    pub fn key(&self) -> &[u8] {
        self.subscription_id.as_str().as_bytes()
    }

    pub fn payload(&self) -> &[u8] {
        self.event.data.get().as_bytes()
    }

    pub fn headers(&self) -> OwnedHeaders {
        let mut headers = envelope::encode_headers(&self.event)
            .insert(text(SUBSCRIPTION, self.subscription_id.as_str()))
            .insert(text(TENANT, self.tenant_id.as_str()))
            .insert(text(ATTEMPT, &self.attempt.to_string()))
            .insert(text(CREATED, &self.created_ms.to_string()));
        if let Some(key) = &self.event.key {
            headers = headers.insert(Header { key: EVENT_KEY, value: Some(key.as_slice()) });
        }
        for (name, value) in [
            (FIRST_ATTEMPT, self.first_attempt_ms.map(|v| v.to_string())),
            (DUE, self.due_ms.map(|v| v.to_string())),
            (LAST_STATUS, self.last_status.map(|v| v.to_string())),
            (LAST_ERROR, self.last_error.clone()),
            (PARKED, (self.parked > 0).then(|| self.parked.to_string())),
            (LANE, self.lane.map(LaneSeq::encode)),
        ] {
            if let Some(value) = value {
                headers = headers.insert(text(name, &value));
            }
        }
        if let Some(replay) = &self.replay {
            headers = headers.insert(text(REPLAY_OF, &replay.dead_letter));
            for (name, value) in [
                (REPLAY_JOB, replay.job.clone()),
                (REPLAY_RATE, replay.rate_per_second.map(|r| r.to_string())),
                (REPLAY_URL, replay.url.clone()),
            ] {
                if let Some(value) = value {
                    headers = headers.insert(text(name, &value));
                }
            }
        }
        match &self.trace {
            Some(trace) => trace.write(headers),
            None => headers,
        }
    }

    /// The headers of a dead letter: the delivery's own, and why it died.
    pub fn dead_letter_headers(
        &self,
        reason: DeadReason,
        last_attempt_ms: Option<i64>,
    ) -> OwnedHeaders {
        let attempts = self.attempt.saturating_sub(1).to_string();
        let time = |ms: Option<i64>| {
            ms.and_then(DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        };
        let mut headers =
            self.headers().insert(text(REASON, reason.as_str())).insert(text(ATTEMPTS, &attempts));
        for (name, value) in [
            (ERROR, self.last_error.clone()),
            (FIRST_ATTEMPT_AT, time(self.first_attempt_ms)),
            (LAST_ATTEMPT_AT, time(last_attempt_ms)),
        ] {
            if let Some(value) = value {
                headers = headers.insert(text(name, &value));
            }
        }
        headers
    }

    pub fn decode(
        headers: Option<&impl Headers>,
        payload: Option<&[u8]>,
        position: &RecordPosition<'_>,
    ) -> Result<Self, DecodeError> {
        // Listed once for all that reads them.
        let pairs = envelope::listed(headers)?;
        let mut event = envelope::decode_pairs(&pairs, None, payload, position)?;
        let found = Found::read(&pairs);
        let subscription_id = string(found.subscription)
            .and_then(SubscriptionId::parse)
            .ok_or(DecodeError::Header(SUBSCRIPTION))?;
        let tenant_id =
            string(found.tenant).and_then(TenantId::parse).ok_or(DecodeError::Header(TENANT))?;
        event.key = found.event_key.map(<[u8]>::to_vec);
        let attempt = number(found.attempt)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| *n >= 1)
            .ok_or(DecodeError::Header(ATTEMPT))?;
        Ok(Self {
            event,
            subscription_id,
            tenant_id,
            attempt,
            created_ms: number(found.created).ok_or(DecodeError::Header(CREATED))?,
            first_attempt_ms: number(found.first_attempt),
            due_ms: number(found.due),
            last_status: number(found.last_status).and_then(|n| u16::try_from(n).ok()),
            last_error: string(found.last_error).map(str::to_owned),
            parked: number(found.parked).and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            // Unreadable: as if not in a lane (delivered out of order at
            // worst, never lost).
            lane: string(found.lane).and_then(LaneSeq::decode),
            replay: string(found.replay_of).map(|dead_letter| ReplayOrigin {
                dead_letter: dead_letter.to_owned(),
                job: string(found.replay_job).map(str::to_owned),
                rate_per_second: number(found.replay_rate)
                    .and_then(|r| u32::try_from(r).ok())
                    .filter(|r| *r > 0),
                url: string(found.replay_url).map(str::to_owned),
            }),
            trace: TraceHeaders::from_pairs(&pairs),
        })
    }
}

/// The delivery headers of a record, by name (the last of a name wins).
#[derive(Default)]
struct Found<'a> {
    subscription: Option<&'a [u8]>,
    tenant: Option<&'a [u8]>,
    event_key: Option<&'a [u8]>,
    attempt: Option<&'a [u8]>,
    created: Option<&'a [u8]>,
    first_attempt: Option<&'a [u8]>,
    due: Option<&'a [u8]>,
    last_status: Option<&'a [u8]>,
    last_error: Option<&'a [u8]>,
    parked: Option<&'a [u8]>,
    lane: Option<&'a [u8]>,
    replay_of: Option<&'a [u8]>,
    replay_job: Option<&'a [u8]>,
    replay_rate: Option<&'a [u8]>,
    replay_url: Option<&'a [u8]>,
}

impl<'a> Found<'a> {
    fn read(pairs: &[HeaderPair<'a>]) -> Self {
        let mut found = Self::default();
        for &(key, value) in pairs {
            let slot = match key {
                SUBSCRIPTION => &mut found.subscription,
                TENANT => &mut found.tenant,
                EVENT_KEY => &mut found.event_key,
                ATTEMPT => &mut found.attempt,
                CREATED => &mut found.created,
                FIRST_ATTEMPT => &mut found.first_attempt,
                DUE => &mut found.due,
                LAST_STATUS => &mut found.last_status,
                LAST_ERROR => &mut found.last_error,
                PARKED => &mut found.parked,
                LANE => &mut found.lane,
                REPLAY_OF => &mut found.replay_of,
                REPLAY_JOB => &mut found.replay_job,
                REPLAY_RATE => &mut found.replay_rate,
                REPLAY_URL => &mut found.replay_url,
                _ => continue,
            };
            *slot = value;
        }
        found
    }
}

/// A header's value as text; not UTF-8 reads as absent.
fn string(value: Option<&[u8]>) -> Option<&str> {
    value.and_then(|v| std::str::from_utf8(v).ok())
}

fn number(value: Option<&[u8]>) -> Option<i64> {
    string(value).and_then(|v| v.parse().ok())
}

fn text<'a>(key: &'a str, value: &'a str) -> Header<'a, &'a str> {
    Header { key, value: Some(value) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::headers::CE_TYPE;
    use serde_json::value::RawValue;

    #[test]
    fn round_trips_through_headers() {
        let event = Event {
            id: "evt_1".into(),
            event_type: "order.created".into(),
            source: "shop".into(),
            time: Utc::now(),
            key: Some(b"customer-7".to_vec()),
            data: RawValue::from_string(r#"{"n":1}"#.into()).expect("json").into(),
            audience: crate::domain::Audience::Tenant(TenantId::default_tenant()),
        };
        let mut delivery =
            Delivery::new(event, SubscriptionId::generate(), TenantId::default_tenant());
        delivery.attempt = 3;
        delivery.first_attempt_ms = Some(1_700_000_000_000);
        delivery.due_ms = Some(1_700_000_005_000);
        delivery.last_status = Some(503);
        delivery.last_error = Some("the endpoint answered 503".into());
        delivery.parked = 2;
        delivery.lane = Some(LaneSeq { epoch: u64::MAX, seq: 41 });
        delivery.replay = Some(ReplayOrigin {
            dead_letter: "dl_1".into(),
            job: Some("rpl_1".into()),
            rate_per_second: Some(50),
            url: Some("https://example.com/moved".into()),
        });
        delivery.trace = Some(TraceHeaders {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: None,
        });
        let position = RecordPosition { topic: "d", partition: 0, offset: 1, timestamp_ms: None };
        let decoded =
            Delivery::decode(Some(&delivery.headers()), Some(delivery.payload()), &position)
                .expect("decodes");
        assert_eq!(decoded.subscription_id, delivery.subscription_id);
        assert_eq!(decoded.tenant_id, delivery.tenant_id);
        assert_eq!(decoded.event.key.as_deref(), Some(&b"customer-7"[..]));
        assert_eq!(decoded.event.id, "evt_1");
        assert_eq!(decoded.attempt, 3);
        assert_eq!(decoded.created_ms, delivery.created_ms);
        assert_eq!(decoded.first_attempt_ms, delivery.first_attempt_ms);
        assert_eq!(decoded.due_ms, delivery.due_ms);
        assert_eq!(decoded.last_status, Some(503));
        assert_eq!(decoded.last_error, delivery.last_error);
        assert_eq!(decoded.parked, 2);
        assert_eq!(decoded.lane, delivery.lane);
        assert_eq!(decoded.replay, delivery.replay);
        assert_eq!(decoded.trace, delivery.trace);
        let fresh =
            decoded.replayed(ReplayOrigin { dead_letter: "dl_2".into(), ..Default::default() });
        assert_eq!((fresh.attempt, fresh.first_attempt_ms, fresh.last_status), (1, None, None));
        assert_eq!(fresh.lane, None, "a replay is a delivery of its own");
    }

    #[test]
    fn a_record_without_delivery_headers_is_refused() {
        let event_headers = OwnedHeaders::new().insert(text(CE_TYPE, "a.b"));
        let position = RecordPosition { topic: "d", partition: 0, offset: 1, timestamp_ms: None };
        assert!(matches!(
            Delivery::decode(Some(&event_headers), Some(b"{}"), &position),
            Err(DecodeError::Header(SUBSCRIPTION))
        ));
    }
}
