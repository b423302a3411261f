//! Starts the roles one process runs (API, dispatcher or both) from an
//! `AppConfig`; used by the CLI and by the integration tests alike.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::AppConfig;
use crate::dispatcher;
use crate::health::Liveness;
use crate::kafka::{self, topics, Producer};
use crate::metrics::Metrics;
use crate::ops::{self, Ops};
use crate::shutdown;
use crate::store::{self, Store};

/// Failures before the process serves: bad configuration or unreachable
/// dependencies. The CLI exits 2 on these.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Kafka(#[from] kafka::Error),
    #[error("cannot set up the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Shutdown did not end within its deadline: `Running::wait` gave up on
/// the roles named.
#[derive(Debug, thiserror::Error)]
#[error("shutdown did not end within its deadline ({deadline:?}); still running: {}; unfinished work is read again after a restart", .left.join(", "))]
pub struct DeadlinePassed {
    pub deadline: Duration,
    pub left: Vec<&'static str>,
}

/// How long the producer may take to flush at exit, at most. Every record
/// whose source is committed was acknowledged already: what is still
/// queued belongs to work given up on, which is read again anyway.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Running {
    /// Where the API listens, when this process runs it.
    pub api_addr: Option<SocketAddr>,
    /// Where a dispatcher without the API serves its probes and metrics.
    pub ops_addr: Option<SocketAddr>,
    pub store: Arc<dyn Store>,
    producer: Producer,
    shutdown: CancellationToken,
    /// The longest drain of the roles run here.
    drain: Duration,
    roles: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

/// Connects, migrates and creates topics as configured, then starts the
/// roles. `listener`, when given, replaces binding `listen`.
pub async fn start(
    config: &AppConfig,
    listen: SocketAddr,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let store = store::connect_with(
        &config.database_url,
        Some(config.server.statement_timeout),
        config.secret_keys.clone(),
    )
    .await?;
    match config.secret_keys.current_id() {
        Some(key_id) => tracing::info!(key_id, "secrets at rest are encrypted"),
        None => tracing::info!("HOOKGATE_SECRET_KEY is not set: secrets are stored in clear"),
    }
    if config.migrate {
        store.migrate().await?;
    }
    register_operational_types(store.as_ref()).await?;
    let producer = Producer::new(&config.kafka)?;
    if config.create_topics {
        let spec = topics::TopicSpec {
            partitions: config.topics.partitions,
            replication: config.topics.replication,
        };
        let schedule =
            config.dispatcher.as_ref().map(|d| d.retry_schedule.clone()).unwrap_or_default();
        topics::ensure_topics(&config.kafka, &config.topics.to_create(&schedule), &spec).await?;
    }

    let metrics = Metrics::new();
    let liveness = Liveness::new();
    let mut running = Running {
        api_addr: None,
        ops_addr: None,
        store: Arc::clone(&store),
        producer: producer.clone(),
        shutdown: shutdown.clone(),
        drain: config.server.drain,
        roles: Vec::new(),
    };
    let listener = match listener {
        Some(listener) => listener,
        None => TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Listen { addr: listen, source })?,
    };
    if let Some(api_config) = &config.api {
        running.api_addr = listener.local_addr().ok();
        // Its own producer: publishing gives up sooner than the dispatcher's
        // writes do (PUBLISH_TIMEOUT), so that requests answer in time.
        let publishing = Producer::for_publishing(&config.kafka)?;
        running.roles.push(("Kafka producer (API)", watch_producer(&publishing, &shutdown)));
        let state = AppState::new(
            Arc::clone(&store),
            publishing,
            api_config.admin_tokens.clone(),
            &config.topics,
            Arc::new(config.egress.clone()),
            Arc::clone(&metrics),
        )
        .map_err(StartError::Http)?
        .with_limits(config.limits)
        .with_quotas(config.quotas)
        .with_liveness(Arc::clone(&liveness))
        .with_public_url(api_config.public_url.as_ref());
        let app = crate::portal::with_api(state.clone());
        let serve = api::serve(listener, state, app, config.server, shutdown.clone());
        running.roles.push(("API server", tokio::spawn(async { Ok(serve.await?) })));
    } else {
        // A dispatcher alone still answers probes and scrapes.
        running.ops_addr = listener.local_addr().ok();
        let ops = Ops {
            store: Arc::clone(&store),
            producer: producer.clone(),
            metrics: Arc::clone(&metrics),
            liveness: Arc::clone(&liveness),
        };
        let serve = ops::serve_within(listener, ops, config.server, shutdown.clone());
        running.roles.push(("ops endpoint", tokio::spawn(async { Ok(serve.await?) })));
    }
    running.roles.push(("Kafka producer", watch_producer(&producer, &shutdown)));
    if let Some(dispatcher_config) = &config.dispatcher {
        let (kafka, topics, dispatcher_config, limits) =
            (config.kafka.clone(), config.topics.clone(), dispatcher_config.clone(), config.limits);
        let egress = Arc::new(config.egress.clone());
        running.drain =
            running.drain.max(dispatcher::drain_deadline(dispatcher_config.request_timeout));
        let run = async move {
            dispatcher::run(
                &kafka,
                store,
                producer,
                &topics,
                &dispatcher_config,
                limits,
                egress,
                metrics,
                liveness,
                shutdown,
            )
            .await
        };
        running.roles.push(("dispatcher", tokio::spawn(async { Ok(run.await?) })));
    }
    Ok(running)
}

/// The operational event types, registered like any other so that the
/// catalogue shows them with their schemas; rewritten when this build's
/// description or schema differs from the stored one.
async fn register_operational_types(store: &dyn Store) -> Result<(), store::Error> {
    use crate::domain::operational::Kind;
    for kind in Kind::ALL {
        let wanted = crate::domain::EventType {
            name: kind.as_str().to_owned(),
            description: Some(kind.description().to_owned()),
            schema: Some(kind.schema()),
            visible_to: None,
            created_at: chrono::Utc::now(),
        };
        if store.create_event_type(&wanted).await? {
            continue;
        }
        let stored = store.get_event_type(&wanted.name).await?;
        let same = stored.as_ref().is_some_and(|s| {
            s.description == wanted.description
                && s.schema == wanted.schema
                && s.visible_to.is_none()
        });
        if !same {
            store.update_event_type(&wanted).await?;
        }
    }
    Ok(())
}

/// A role that ends, with an error, when the producer hits a fatal error
/// (every send fails from then on), and stops the others; at shutdown, it
/// ends quietly.
fn watch_producer(
    producer: &Producer,
    shutdown: &CancellationToken,
) -> JoinHandle<anyhow::Result<()>> {
    let (producer, shutdown) = (producer.clone(), shutdown.clone());
    tokio::spawn(async move {
        tokio::select! {
            reason = producer.failed() => {
                tracing::error!(%reason, "fatal Kafka producer error; exiting");
                anyhow::bail!("fatal Kafka producer error: {reason}")
            }
            () = shutdown.cancelled() => Ok(()),
        }
    })
}

impl Running {
    /// How long shutdown may take, from the signal to the end of `wait`:
    /// the longest drain of the roles plus `shutdown::GRACE`.
    pub fn shutdown_deadline(&self) -> Duration {
        self.drain + shutdown::GRACE
    }

    /// Waits for the roles to finish (after shutdown), then flushes Kafka;
    /// within `shutdown_deadline` of the shutdown, else `DeadlinePassed`.
    /// A role that ends stops the others.
    pub async fn wait(self) -> anyhow::Result<()> {
        let deadline = self.shutdown_deadline();
        let shutdown = self.shutdown;
        let names: Vec<&'static str> = self.roles.iter().map(|(name, _)| *name).collect();
        let finished: Vec<AtomicBool> = names.iter().map(|_| AtomicBool::new(false)).collect();
        let roles = futures::future::join_all(self.roles.into_iter().zip(&finished).map(
            |((name, role), finished)| {
                let shutdown = shutdown.clone();
                async move {
                    let result = match role.await {
                        Ok(result) => result,
                        Err(error) => Err(error.into()),
                    };
                    shutdown.cancel();
                    finished.store(true, Ordering::Release);
                    result.with_context(|| name)
                }
            },
        ));
        let mut roles = std::pin::pin!(roles);
        // The clock starts with the shutdown (roles end only after it, or
        // cancel it when they end).
        let mut end = None;
        let results = tokio::select! {
            results = &mut roles => results,
            () = shutdown.cancelled() => {
                let end = *end.insert(Instant::now() + deadline);
                match tokio::time::timeout_at(end, roles).await {
                    Ok(results) => results,
                    Err(_) => {
                        let left = names
                            .iter()
                            .zip(&finished)
                            .filter(|(_, done)| !done.load(Ordering::Acquire))
                            .map(|(name, _)| *name)
                            .collect();
                        return Err(DeadlinePassed { deadline, left }.into());
                    }
                }
            }
        };
        // Within what is left of the deadline, less the process's exit.
        let end = end.unwrap_or_else(|| Instant::now() + deadline) - shutdown::EXIT_WAIT;
        let flush = FLUSH_TIMEOUT.min(end.saturating_duration_since(Instant::now()));
        let producer = self.producer;
        tokio::task::spawn_blocking(move || producer.flush(flush)).await?;
        results.into_iter().collect()
    }
}
