//! The publisher of both phases: healthy and tarpit events straight to
//! the source topic (so that the figure is the dispatcher's, not the
//! API's), at the plan's rates, interleaved.

use tokio::time::Instant;

use chrono::Utc;
use futures::StreamExt as _;
use hookgate::domain::{Audience, Event, TenantId};
use hookgate::kafka::Producer;

use super::{Plan, HEALTHY_TYPE, PUBLISH_LIMIT, TARPIT_TYPE, TICK};

pub(super) struct Stream {
    pub(super) producer: Producer,
    pub(super) topic: String,
    pub(super) healthy_tenant: TenantId,
    pub(super) tarpit_tenant: TenantId,
}

pub(super) struct Published {
    pub(super) healthy: u64,
    pub(super) tarpit: u64,
    pub(super) failed: u64,
    /// When the last tick's events were handed to the producer.
    pub(super) ended: Instant,
}

impl Stream {
    fn event(&self, phase: u64, tarpit: bool, n: u64) -> Event {
        let (kind, event_type, tenant) = if tarpit {
            ("t", TARPIT_TYPE, &self.tarpit_tenant)
        } else {
            ("h", HEALTHY_TYPE, &self.healthy_tenant)
        };
        let data = format!(
            "{{\"phase\":{phase},\"n\":{n},\"sent_us\":{}}}",
            Utc::now().timestamp_micros()
        );
        Event {
            id: format!("evt_iso_{phase}_{kind}_{n}").into(),
            event_type: event_type.to_owned(),
            source: "bench".to_owned(),
            time: Utc::now(),
            key: Some(format!("{kind}{n}").into_bytes()),
            data: serde_json::value::RawValue::from_string(data).expect("valid JSON").into(),
            audience: Audience::Tenant(tenant.clone()),
        }
    }

    /// Publishes `events` (healthy, interleaved as given) and waits for the
    /// broker, at most `PUBLISH_LIMIT`; answers how many of each went.
    async fn publish(&self, events: Vec<Event>) -> (u64, u64) {
        let writes = events.iter().map(|event| async move {
            (event.event_type == TARPIT_TYPE, self.producer.publish(&self.topic, event).await)
        });
        let Ok(results) =
            tokio::time::timeout(PUBLISH_LIMIT, futures::future::join_all(writes)).await
        else {
            return (0, 0);
        };
        results.iter().fold((0, 0), |(h, t), (tarpit, result)| match (tarpit, result) {
            (false, Ok(())) => (h + 1, t),
            (true, Ok(())) => (h, t + 1),
            _ => (h, t),
        })
    }

    /// `n` healthy events at once (the warm-up).
    pub(super) async fn burst(&self, phase: u64, n: u64) -> u64 {
        self.publish((0..n).map(|i| self.event(phase, false, i)).collect()).await.0
    }

    /// The plan's stream: healthy and tarpit events at their rates over the
    /// window, interleaved, sent each `TICK`, every tick's writes awaited
    /// beside the next ones.
    pub(super) async fn sustained(&self, phase: u64, plan: &Plan) -> Published {
        let (healthy_total, tarpit_total) = (plan.healthy_events(), plan.tarpit_events());
        let window = plan.window.as_secs_f64();
        let started = Instant::now();
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut writes = futures::stream::FuturesUnordered::new();
        let (mut published, mut tarpit_published) = (0u64, 0u64);
        let (mut healthy_sent, mut tarpit_sent) = (0u64, 0u64);
        let mut ended = started;
        while healthy_sent < healthy_total || tarpit_sent < tarpit_total {
            tokio::select! {
                _ = ticker.tick() => {}
                Some((h, t)) = writes.next() => {
                    published += h;
                    tarpit_published += t;
                    continue;
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            let due = |total: u64| {
                if elapsed >= window {
                    total
                } else {
                    ((total as f64 * elapsed / window) as u64).min(total)
                }
            };
            let (healthy_due, tarpit_due) = (due(healthy_total), due(tarpit_total));
            let events = interleave(
                (healthy_sent..healthy_due).map(|n| self.event(phase, false, n)).collect(),
                (tarpit_sent..tarpit_due).map(|n| self.event(phase, true, n)).collect(),
            );
            (healthy_sent, tarpit_sent) = (healthy_due, tarpit_due);
            ended = Instant::now();
            writes.push(self.publish(events));
        }
        while let Some((h, t)) = writes.next().await {
            published += h;
            tarpit_published += t;
        }
        Published {
            healthy: published,
            tarpit: tarpit_published,
            failed: (healthy_total + tarpit_total) - (published + tarpit_published),
            ended,
        }
    }
}

/// `a` and `b` merged evenly, in order.
fn interleave(a: Vec<Event>, b: Vec<Event>) -> Vec<Event> {
    let (len_a, len_b) = (a.len(), b.len());
    let mut merged = Vec::with_capacity(len_a + len_b);
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    let (mut taken_a, mut taken_b) = (0usize, 0usize);
    while a.peek().is_some() || b.peek().is_some() {
        // From `a` while it is behind its share (or `b` is done).
        let from_a =
            b.peek().is_none() || (a.peek().is_some() && taken_a * len_b <= taken_b * len_a);
        if from_a {
            merged.extend(a.next());
            taken_a += 1;
        } else {
            merged.extend(b.next());
            taken_b += 1;
        }
    }
    merged
}
