//! Starts the roles one process runs (API, dispatcher or both) from an
//! `AppConfig`; used by the CLI and by the integration tests alike.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::AppConfig;
use crate::dispatcher;
use crate::kafka::{self, topics, Producer};
use crate::metrics::Metrics;
use crate::ops::{self, Ops};
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

pub struct Running {
    /// Where the API listens, when this process runs it.
    pub api_addr: Option<SocketAddr>,
    /// Where a dispatcher without the API serves its probes and metrics.
    pub ops_addr: Option<SocketAddr>,
    pub store: Arc<dyn Store>,
    producer: Producer,
    api: Option<JoinHandle<std::io::Result<()>>>,
    ops: Option<JoinHandle<std::io::Result<()>>>,
    dispatcher: Option<JoinHandle<Result<(), dispatcher::Error>>>,
}

/// Connects, migrates and creates topics as configured, then starts the
/// roles. `listener`, when given, replaces binding `listen`.
pub async fn start(
    config: &AppConfig,
    listen: SocketAddr,
    listener: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<Running, StartError> {
    let store = store::connect(&config.database_url).await?;
    if config.migrate {
        store.migrate().await?;
    }
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
    let mut running = Running {
        api_addr: None,
        ops_addr: None,
        store: Arc::clone(&store),
        producer: producer.clone(),
        api: None,
        ops: None,
        dispatcher: None,
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
        let state = AppState::new(
            Arc::clone(&store),
            Producer::for_publishing(&config.kafka)?,
            api_config.admin_tokens.clone(),
            &config.topics.publish,
            &config.topics.deliveries,
            // An API without a dispatcher (`hookgate api`) keeps the guard on.
            config.dispatcher.as_ref().is_some_and(|d| d.allow_private_targets),
            Arc::clone(&metrics),
        )
        .map_err(StartError::Http)?
        .with_limits(config.limits);
        running.api = Some(tokio::spawn(api::serve(listener, state, shutdown.clone())));
    } else {
        // A dispatcher alone still answers probes and scrapes.
        running.ops_addr = listener.local_addr().ok();
        let ops = Ops {
            store: Arc::clone(&store),
            producer: producer.clone(),
            metrics: Arc::clone(&metrics),
        };
        running.ops = Some(tokio::spawn(ops::serve(listener, ops, shutdown.clone())));
    }
    if let Some(dispatcher_config) = &config.dispatcher {
        let (kafka, topics, dispatcher_config, limits) =
            (config.kafka.clone(), config.topics.clone(), dispatcher_config.clone(), config.limits);
        running.dispatcher = Some(tokio::spawn(async move {
            dispatcher::run(
                &kafka,
                store,
                producer,
                &topics,
                &dispatcher_config,
                limits,
                metrics,
                shutdown,
            )
            .await
        }));
    }
    Ok(running)
}

impl Running {
    /// Waits for the roles to finish (after shutdown), then flushes Kafka.
    pub async fn wait(self) -> anyhow::Result<()> {
        let mut result = Ok(());
        if let Some(api) = self.api {
            if let Err(error) = api.await? {
                result = Err(anyhow::Error::new(error).context("API server"));
            }
        }
        if let Some(ops) = self.ops {
            if let Err(error) = ops.await? {
                result = Err(anyhow::Error::new(error).context("ops endpoint"));
            }
        }
        if let Some(dispatcher) = self.dispatcher {
            if let Err(error) = dispatcher.await? {
                result = Err(anyhow::Error::new(error).context("dispatcher"));
            }
        }
        let producer = self.producer;
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await?;
        result
    }
}
