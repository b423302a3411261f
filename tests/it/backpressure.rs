//! Kafka away: publishing answers 503 with `Retry-After` within its bound,
//! `/readyz` turns unready, and both recover without a restart once the
//! broker is back. Runs on a private broker, since it kills it.

use std::time::Duration;

use hookgate::kafka::produce::PUBLISH_TIMEOUT;
use reqwest::Method;
use serde_json::json;
use tokio::time::Instant;

use crate::harness::broker::PrivateBroker;
use crate::harness::kafka::wait_for_group;
use crate::harness::{eventually, TestApp, ADMIN_TOKEN};

const RECOVERY: Duration = Duration::from_secs(90);

async fn publish(app: &TestApp) -> (u16, Option<String>, Duration) {
    let started = Instant::now();
    let response = app
        .admin(app.client.post(app.url("/v1/events")))
        .json(&json!({"type": "order.created", "data": {"n": 1}}))
        .send()
        .await
        .expect("the API answers");
    let retry_after =
        response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (response.status().as_u16(), retry_after, started.elapsed())
}

async fn ready(app: &TestApp) -> u16 {
    app.client.get(app.url("/readyz")).send().await.expect("the API answers").status().as_u16()
}

#[tokio::test]
async fn publishing_answers_503_while_the_broker_is_away_and_recovers() {
    let mut broker = PrivateBroker::start().await;
    let app = TestApp::spawn_on("backpressure", broker.bootstrap()).await;
    eventually("a first publish to succeed", RECOVERY, || async {
        (publish(&app).await.0 == 202).then_some(())
    })
    .await;
    assert_eq!(ready(&app).await, 200);

    broker.kill().await;

    // Every publish is refused within its bound, never accepted.
    let bound = PUBLISH_TIMEOUT + Duration::from_secs(2);
    let answers = futures::future::join_all((0..3).map(|_| publish(&app))).await;
    for (status, retry_after, took) in answers {
        assert_eq!(status, 503, "no 202 for an event that was not written");
        let retry_after: u32 = retry_after.expect("a Retry-After header").parse().expect("seconds");
        assert!(retry_after >= 1);
        assert!(took < bound, "answered in {took:?}, over the bound {bound:?}");
    }
    let (status, body) = app
        .call(
            Method::POST,
            "/v1/events",
            ADMIN_TOKEN,
            Some(json!({"type": "order.created", "data": {}})),
        )
        .await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "unavailable");
    eventually("/readyz to turn unready", RECOVERY, || async {
        (ready(&app).await == 503).then_some(())
    })
    .await;

    broker.restart().await;

    eventually("publishing to work again", RECOVERY, || async {
        (publish(&app).await.0 == 202).then_some(())
    })
    .await;
    eventually("/readyz to turn ready", RECOVERY, || async {
        (ready(&app).await == 200).then_some(())
    })
    .await;
    // Its stages rejoin their groups after the restart: stopped before they
    // have, their final commits have no group to go to.
    for stage in ["", ".deliveries", ".retries", ".dlq-index"] {
        let group = format!("{}{stage}", app.topics.group_id);
        wait_for_group(&broker.bootstrap(), &group, 1, RECOVERY).await;
    }
    app.stop().await;
}
