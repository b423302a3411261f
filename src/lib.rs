//! hookgate: webhook delivery and event API gateway on Apache Kafka.
//!
//! Data flow: `api` (publish, subscriptions) → `kafka` (CloudEvents on source
//! topics) → `dispatcher` (match via the subscription cache, signed POST) →
//! `store` (attempt log). `domain` holds the types they pass along.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod dispatcher;
pub mod domain;
pub mod kafka;
pub mod listen;
pub mod metrics;
pub mod ops;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod trace;
