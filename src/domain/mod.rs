//! Domain types, free of I/O: ids, events, subscriptions, attempts and the
//! Standard Webhooks signature. Everything else moves these around; this
//! module imports from none of them.

pub mod attempt;
pub mod dead_letter;
pub mod event;
pub mod filter;
pub mod health;
pub mod ids;
pub mod operational;
pub mod park;
pub mod portal;
pub mod signature;
pub mod subscription;
pub mod tenant;

pub use attempt::{Attempt, Outcome};
pub use dead_letter::{
    DeadLetter, DeadLetterFilter, DeadLetterStatus, DeadReason, NewDeadLetter, RecordHeader,
    Replay, ReplayStatus, UnknownReason,
};
pub use event::{Audience, Event};
pub use ids::{
    ApiKeyId, AttemptId, DeadLetterId, EventId, ReplayId, SubscriptionId, TenantId, WebhookId,
};
pub use park::ParkReason;
pub use signature::{
    BadSecret, Ed25519Secret, PublicKey, SignatureError, SignatureScheme, SigningKey, SigningKeys,
    SigningSecret,
};
pub use subscription::{
    CircuitRecord, EndpointTls, EventTypePattern, OAuth2, PreviousSecret, RateLimit, Subscription,
    SubscriptionPatch, SubscriptionStatus,
};
pub use tenant::{ApiKey, EventType, NewApiKey, Scope, Tenant};
