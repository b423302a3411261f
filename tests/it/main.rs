//! Integration tests, one binary. They run against the real PostgreSQL and
//! Kafka that `scripts/test-env` starts (`HOOKGATE_TEST_DATABASE_URL`,
//! `HOOKGATE_TEST_KAFKA`), and against the built binary.

// A test that cannot go on fails with the expectation it names; the
// harness's items are this binary's own, whatever their visibility.
#![allow(clippy::expect_used, clippy::unwrap_used, unreachable_pub)]

// Shared with the chaos and isolation binaries: each uses a part of it.
#[allow(dead_code)]
mod harness;

mod api;
mod audience;
mod backpressure;
mod cli;
mod dead_letters;
mod delivery;
mod deploy;
mod dev_mode;
mod dispatch;
mod ed25519;
mod egress;
mod filters;
mod layout;
mod lifecycle;
mod liveness;
mod logs;
mod metrics;
mod mtls;
mod oauth2;
mod openapi;
mod ops;
mod publishing;
mod quotas;
mod rotation;
mod secrets_at_rest;
mod server_limits;
mod shutdown;
mod store;
mod subscriptions;
mod tenants;
mod traces;
