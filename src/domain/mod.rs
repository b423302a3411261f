//! Domain types, free of I/O: ids, events, subscriptions, attempts and the
//! Standard Webhooks signature. Everything else moves these around.

pub mod attempt;
pub mod event;
pub mod ids;
pub mod signature;
pub mod subscription;
pub mod tenant;

pub use attempt::{Attempt, Outcome};
pub use event::Event;
pub use ids::{ApiKeyId, AttemptId, SubscriptionId, TenantId};
pub use signature::{SignatureError, SigningSecret};
pub use subscription::{
    EventTypePattern, PreviousSecret, RateLimit, Subscription, SubscriptionStatus,
};
pub use tenant::{ApiKey, EventType, NewApiKey, Tenant};
