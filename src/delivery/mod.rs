//! The delivery core, what the dispatcher's deliver stage and the API's test
//! send share: one signed webhook to one subscription.
//!
//! subscription row → `target` (secrets, headers, URL parsed once) →
//! `request` (signed POST: `webhook_id`, Standard Webhooks headers, trace
//! context, custom headers; no I/O) → `client` (hyper-util's pool, reqwest's
//! for an egress proxy or a subscription's own TLS settings; with an `oauth2`
//! token where the subscription asks, through the `egress` rules, the
//! response body capped) → `Sent` (status, latency, excerpt,
//! `DeliveryError`) → the caller, which records the attempt where it keeps
//! attempts and decides what follows.
//!
//! It imports neither the API nor the dispatcher.

pub mod client;
pub mod egress;
pub mod oauth2;
pub mod request;
pub mod target;
pub mod tls;
pub mod webhook_id;

pub use client::{Client, DeliveryError, Excerpts, Sent};
pub use egress::EgressRules;
pub use target::{Target, Unusable};
pub use webhook_id::webhook_id;
