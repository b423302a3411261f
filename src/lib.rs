//! hookgate: webhook delivery and event API gateway on Apache Kafka.
//!
//! Data flow: `api` (publish, subscriptions) → `kafka` (CloudEvents on source
//! topics) → `dispatcher` (match via the subscription cache, signed POST) →
//! `store` (attempt log). `domain` holds the types they pass along.
//!
//! The API and the dispatcher never import each other: what both need is
//! below them. `delivery` sends one signed webhook (the dispatcher's
//! attempts, the API's test send), `health` answers liveness and readiness
//! (the API's `/healthz` and `/readyz`, the dispatcher's probe server in
//! `ops`), `error` walks error chains and cuts stored text.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod dispatcher;
pub mod domain;
pub mod error;
pub mod health;
pub mod kafka;
pub mod listen;
pub mod metrics;
pub mod ops;
pub mod portal;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod trace;
