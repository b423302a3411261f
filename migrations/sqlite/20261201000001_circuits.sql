-- The circuit breaker's state per subscription, as the dispatcher that owns
-- it last wrote it (on each change), for `GET /v1/subscriptions/{id}`.
-- Times are Unix milliseconds; a write older than the row is ignored, so
-- changes written out of order never roll the state back.
CREATE TABLE subscription_circuits (
    subscription_id  TEXT PRIMARY KEY,
    open             BOOLEAN NOT NULL,
    opened_ms        BIGINT,
    until_ms         BIGINT,
    changed_ms       BIGINT NOT NULL
);
