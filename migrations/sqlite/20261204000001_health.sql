-- A subscription's failure record, written by the dispatchers' attempt log
-- writer with each batch of attempts: failed attempts in a row since the
-- last success, and the last success and failure. Times are Unix
-- milliseconds. Reset when the subscription is made active again.
CREATE TABLE subscription_health (
    subscription_id       TEXT PRIMARY KEY,
    consecutive_failures  BIGINT NOT NULL,
    failing_since_ms      BIGINT,
    last_success_ms       BIGINT,
    last_failure_ms       BIGINT,
    last_failure_status   BIGINT,
    last_failure_error    TEXT
);

-- Attempts per subscription, minute and latency bin (see
-- `domain::health::LATENCY_BOUNDS_MS`), added to in the same transaction as
-- the attempts themselves: `GET /v1/subscriptions/{id}/stats` sums at most
-- a week of minutes instead of scanning attempts.
CREATE TABLE attempt_rollups (
    subscription_id  TEXT NOT NULL,
    minute           BIGINT NOT NULL,
    latency_bin      BIGINT NOT NULL,
    attempts         BIGINT NOT NULL,
    successes        BIGINT NOT NULL,
    PRIMARY KEY (subscription_id, minute, latency_bin)
);
