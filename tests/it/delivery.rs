//! End to end through the real broker: publish → Kafka → dispatcher → signed POST.

use std::time::Duration;

use chrono::Utc;
use hookgate::domain::Outcome;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message};
use serde_json::json;

use crate::harness::{unique, TestApp, TestReceiver};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn published_event_arrives_once_signed_and_is_logged() {
    let app = TestApp::spawn("e2e").await;
    let receiver = TestReceiver::start().await;
    let subscription = app
        .subscribe(json!({"url": receiver.url, "event_types": ["order.*"], "secret": SECRET}))
        .await;
    let other = TestReceiver::start().await;
    app.subscribe(json!({"url": other.url, "event_types": ["invoice.paid"]})).await;

    let event_id = app
        .publish(json!({"type": "order.created", "data": {"order_id": 42, "items": ["a", "b"]}}))
        .await;

    let attempts = app.attempts_for(&event_id, DEADLINE).await;
    let received = receiver.received();
    assert_eq!(received.len(), 1, "exactly one POST");
    let webhook = &received[0];

    // A third-party Standard Webhooks verifier accepts it.
    standardwebhooks::Webhook::new(SECRET)
        .expect("secret")
        .verify(&webhook.body, &webhook.headers)
        .expect("signature verifies");

    let body: serde_json::Value = serde_json::from_slice(&webhook.body).expect("JSON body");
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(keys, ["data", "timestamp", "type"]);
    assert_eq!(body["type"], "order.created");
    assert_eq!(body["data"], json!({"order_id": 42, "items": ["a", "b"]}));
    assert!(
        chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().expect("string")).is_ok()
    );

    let header = |name: &str| webhook.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(header("content-type"), "application/json");
    assert!(header("webhook-id").starts_with("msg_"));
    let timestamp: i64 = header("webhook-timestamp").parse().expect("unix seconds");
    assert!((Utc::now().timestamp() - timestamp).abs() < 60);
    assert!(header("webhook-signature").starts_with("v1,"));
    assert!(header("user-agent").starts_with("hookgate/"));

    assert_eq!(attempts.len(), 1);
    let attempt = &attempts[0];
    assert_eq!(attempt.outcome, Outcome::Success);
    assert_eq!(attempt.status_code, Some(204));
    assert_eq!(attempt.attempt, 1);
    assert_eq!(attempt.subscription_id.as_str(), subscription["id"].as_str().expect("id"));
    assert_eq!(attempt.webhook_id, header("webhook-id"));
    assert!(other.received().is_empty(), "the invoice subscription gets no order event");
    app.stop().await;
}

#[tokio::test]
async fn cloudevents_record_from_a_plain_producer_is_delivered() {
    let app = TestApp::spawn("cloudevents").await;
    let receiver = TestReceiver::start().await;
    app.subscribe(json!({"url": receiver.url, "event_types": ["shipment.*"], "secret": SECRET}))
        .await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &app.kafka.brokers)
        .create()
        .expect("plain producer");
    let headers = OwnedHeaders::new()
        .insert(Header { key: "ce_specversion", value: Some("1.0") })
        .insert(Header { key: "ce_id", value: Some("ext-123") })
        .insert(Header { key: "ce_type", value: Some("shipment.sent") })
        .insert(Header { key: "ce_source", value: Some("/warehouse") })
        .insert(Header { key: "ce_time", value: Some("2026-01-02T03:04:05Z") })
        .insert(Header { key: "content-type", value: Some("application/json") });
    producer
        .send(
            FutureRecord::to(&app.topics.publish)
                .key("parcel-9")
                .payload(r#"{"parcel":9}"#)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("record written");

    let received = receiver.wait_for(1, DEADLINE).await;
    standardwebhooks::Webhook::new(SECRET)
        .expect("secret")
        .verify(&received[0].body, &received[0].headers)
        .expect("signature verifies");
    let body: serde_json::Value = serde_json::from_slice(&received[0].body).expect("JSON");
    assert_eq!(body["type"], "shipment.sent");
    assert_eq!(body["data"], json!({"parcel": 9}));
    assert_eq!(body["timestamp"], "2026-01-02T03:04:05.000Z");
    let attempts = app.attempts_for("ext-123", DEADLINE).await;
    assert_eq!(attempts[0].outcome, Outcome::Success);
    app.stop().await;
}

#[tokio::test]
async fn poison_record_goes_to_the_dead_letter_topic_and_the_partition_moves_on() {
    let app = TestApp::spawn("poison").await;
    let receiver = TestReceiver::start().await;
    app.subscribe(json!({"url": receiver.url, "event_types": ["*"]})).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &app.kafka.brokers)
        .create()
        .expect("plain producer");
    // Same key, so the same partition: the good record sits behind the bad one.
    producer
        .send(
            FutureRecord::to(&app.topics.publish).key("k").payload("not json at all"),
            Duration::from_secs(10),
        )
        .await
        .expect("poison written");
    let event_id = app.publish(json!({"type": "after.poison", "key": "k", "data": {}})).await;

    receiver.wait_for(1, DEADLINE).await;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &app.kafka.brokers)
        .set("group.id", unique("dlq-reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[app.topics.dlq.as_str()]).expect("subscribe");
    let message = tokio::time::timeout(DEADLINE, consumer.recv())
        .await
        .expect("a dead letter within the deadline")
        .expect("record");
    assert_eq!(message.payload(), Some(&b"not json at all"[..]));
    let headers = message.headers().expect("headers");
    let reason = headers
        .iter()
        .find(|h| h.key == "hookgate_error")
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("reason header");
    assert!(reason.contains("ce_type"), "reason names what is missing: {reason}");
    let attempts = app.attempts_for(&event_id, DEADLINE).await;
    assert_eq!(attempts[0].outcome, Outcome::Success);
    app.stop().await;
}

#[tokio::test]
async fn an_event_too_large_to_fan_out_is_dead_lettered_and_the_partition_moves_on() {
    let app = TestApp::spawn("too-large").await;
    let receiver = TestReceiver::start().await;
    app.subscribe(json!({"url": receiver.url, "event_types": ["*"]})).await;

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &app.kafka.brokers)
        .create()
        .expect("plain producer");
    // Just under the client's 1,000,000-byte limit: the delivery record, with
    // hookgate's headers added, is over it.
    let data = format!("\"{}\"", "x".repeat(999_700));
    let headers = OwnedHeaders::new()
        .insert(Header { key: "ce_id", value: Some("big-1") })
        .insert(Header { key: "ce_type", value: Some("big.event") });
    producer
        .send(
            FutureRecord::to(&app.topics.publish).key("k").payload(&data).headers(headers),
            Duration::from_secs(10),
        )
        .await
        .expect("large record written");
    let after = app.publish(json!({"type": "after.big", "key": "k", "data": {}})).await;

    app.attempts_for(&after, DEADLINE).await;
    let dead =
        crate::harness::kafka::read_topic(&app.kafka.brokers, &app.topics.dlq, 1, DEADLINE).await;
    let headers = crate::harness::kafka::headers_of(&dead[0]);
    assert_eq!(headers["hookgate_reason"], "refused_by_kafka");
    assert_eq!(headers["ce_id"], "big-1");
    assert!(rdkafka::Message::payload(&dead[0]).is_none_or(<[u8]>::is_empty));
    assert_eq!(receiver.received().len(), 1, "only the event after the large one");
    app.stop().await;
}
