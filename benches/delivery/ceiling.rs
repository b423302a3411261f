//! What this machine can deliver at all, measured first, with nothing of
//! hookgate running: a minimal sender (hyper-util's client, keep-alive)
//! posts signed webhooks (Standard Webhooks, one signature per request, as
//! the dispatcher signs) to the same receiver, at the concurrency the
//! sustained phase may reach. Delivery figures are also given as a share of
//! it, which moves far less with the machine than the raw numbers do.

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::stream::StreamExt as _;
use hookgate::domain::SigningSecret;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::phases::Deliveries;

pub(crate) const EVENT_TYPE: &str = "bench.ceiling";

/// Posts `requests` webhooks to `receiver`, `concurrency` at a time;
/// answers the deliveries/s the receiver counted.
pub(crate) async fn measure(
    receiver: &Deliveries,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(concurrency).build_http();
    let secret = SigningSecret::generate();
    let url: hyper::Uri = receiver.url().parse()?;
    let started = Instant::now();
    let answered = futures::stream::iter(0..requests)
        .map(|n| {
            let (client, url) = (client.clone(), url.clone());
            let request = signed(&secret, url, n);
            async move {
                match client.request(request?).await {
                    Ok(response) => Ok(response.status().is_success()),
                    Err(error) => Err(anyhow::Error::from(error)),
                }
            }
        })
        .buffer_unordered(concurrency)
        .filter(|sent| std::future::ready(matches!(sent, Ok(true))))
        .count()
        .await;
    let counted = receiver.wait_until(EVENT_TYPE, answered as u64, Duration::from_secs(30)).await;
    if answered < requests {
        anyhow::bail!("the ceiling's receiver answered {answered} of {requests} requests");
    }
    Ok(counted as f64 / started.elapsed().as_secs_f64())
}

/// Webhook `n`: a body shaped like the dispatcher's, its id, timestamp and
/// signature headers.
fn signed(
    secret: &SigningSecret,
    url: hyper::Uri,
    n: usize,
) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    let id = format!("msg_ceiling_{n}");
    let now = Utc::now();
    let body = serde_json::to_vec(&serde_json::json!({
        "type": EVENT_TYPE,
        "timestamp": now.to_rfc3339(),
        "data": {"n": n},
    }))?;
    let timestamp = now.timestamp();
    let signature = secret.sign(&id, timestamp, &body);
    Ok(hyper::Request::post(url)
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(Full::new(Bytes::from(body)))?)
}
