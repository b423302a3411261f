//! The names of the Kafka record headers hookgate reads and writes, in one
//! place: the event's (CloudEvents binary mode), a delivery's state, and
//! why a record is in the dead-letter topic. Only the trace context
//! (`ce_traceparent`, `ce_tracestate`) is named in `crate::trace`, which
//! reads and writes it.

// The event: CloudEvents Kafka protocol binding, binary mode.
pub const CE_SPECVERSION: &str = "ce_specversion";
pub const CE_ID: &str = "ce_id";
pub const CE_TYPE: &str = "ce_type";
pub const CE_SOURCE: &str = "ce_source";
pub const CE_TIME: &str = "ce_time";
/// The data's media type; read under either spelling.
pub const CONTENT_TYPE: &str = "content-type";
pub const CONTENT_TYPE_UNDERSCORE: &str = "content_type";
/// Extension attribute naming the tenant an event is for.
pub const CE_TENANT_ID: &str = "ce_tenantid";
/// Extension attribute marking an event for every tenant.
pub const CE_BROADCAST: &str = "ce_broadcast";
/// What an operational event is about: the subscription's id.
pub const CE_SUBJECT: &str = "ce_subject";
/// The URI of an operational event's data shape (see `domain::operational`).
pub const CE_DATASCHEMA: &str = "ce_dataschema";

// A delivery's state, on the deliveries and retry tier topics.
pub const SUBSCRIPTION: &str = "hookgate_subscription";
pub const TENANT: &str = "hookgate_tenant";
/// The event's partition key (the record key is the subscription id).
pub const EVENT_KEY: &str = "hookgate_event_key";
pub const ATTEMPT: &str = "hookgate_attempt";
pub const CREATED: &str = "hookgate_created_ms";
pub const FIRST_ATTEMPT: &str = "hookgate_first_attempt_ms";
pub const DUE: &str = "hookgate_due_ms";
pub const LAST_STATUS: &str = "hookgate_last_status";
pub const LAST_ERROR: &str = "hookgate_last_error";
pub const PARKED: &str = "hookgate_parked";
pub const LANE: &str = "hookgate_lane";
pub const REPLAY_OF: &str = "hookgate_replay_of";
pub const REPLAY_JOB: &str = "hookgate_replay_job";
pub const REPLAY_RATE: &str = "hookgate_replay_rate";
pub const REPLAY_URL: &str = "hookgate_replay_url";

// Why a record is in the dead-letter topic, added to its own headers.
/// A `DeadReason`.
pub const REASON: &str = "hookgate_reason";
/// Attempts made.
pub const ATTEMPTS: &str = "hookgate_attempts";
/// The last error, or why a poison record could not be read.
pub const ERROR: &str = "hookgate_error";
pub const FIRST_ATTEMPT_AT: &str = "hookgate_first_attempt_at";
pub const LAST_ATTEMPT_AT: &str = "hookgate_last_attempt_at";
/// Where a poison record was read.
pub const SOURCE_TOPIC: &str = "hookgate_source_topic";
pub const SOURCE_PARTITION: &str = "hookgate_source_partition";
pub const SOURCE_OFFSET: &str = "hookgate_source_offset";
/// Kafka's error for a delivery record it refused.
pub const REFUSED_BY_KAFKA: &str = "hookgate_refused_by_kafka";
