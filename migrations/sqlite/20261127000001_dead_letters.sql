-- Dead letters, indexed from the dead-letter topic, and bulk replay jobs.

-- A dead letter's place in the topic is unique: reading the topic again
-- (a new indexer, a reset group) inserts nothing twice.
CREATE TABLE dead_letters (
    id                 TEXT PRIMARY KEY,
    dlq_topic          TEXT NOT NULL,
    dlq_partition      INTEGER NOT NULL,
    dlq_offset         INTEGER NOT NULL,
    -- NULL for a record that named no tenant (poison): admins only.
    tenant_id          TEXT,
    subscription_id    TEXT,
    event_id           TEXT,
    event_type         TEXT,
    webhook_id         TEXT,
    reason             TEXT NOT NULL,
    error              TEXT,
    last_status        INTEGER,
    attempts           INTEGER NOT NULL,
    first_attempt_at   TEXT,
    last_attempt_at    TEXT,
    dead_at            TEXT NOT NULL,
    -- The dead letter whose replay failed again into this one.
    replay_of          TEXT,
    -- The record as it was, to replay from: `[{"name", "value" | "value_base64"}]`.
    headers            TEXT NOT NULL,
    payload            BLOB,
    status             TEXT NOT NULL,
    replay_id          TEXT,
    status_changed_at  TEXT,
    created_at         TEXT NOT NULL,
    UNIQUE (dlq_topic, dlq_partition, dlq_offset)
);
CREATE INDEX dead_letters_tenant ON dead_letters (tenant_id, id);
CREATE INDEX dead_letters_subscription ON dead_letters (subscription_id, id);
CREATE INDEX dead_letters_status ON dead_letters (status, id);
CREATE INDEX dead_letters_created ON dead_letters (created_at);

-- Bulk replays. The runner holding the lease replays in id order and saves
-- its cursor after each batch, so another process (or the same one,
-- restarted) resumes where it stopped once the lease expires.
CREATE TABLE replays (
    id                TEXT PRIMARY KEY,
    -- The tenant whose key asked for it; NULL: an admin.
    tenant_id         TEXT,
    filter            TEXT NOT NULL,
    -- Dead letters indexed after the job was made are not part of it.
    upper_id          TEXT,
    url               TEXT,
    rate_per_second   INTEGER,
    status            TEXT NOT NULL,
    total             INTEGER NOT NULL,
    done              INTEGER NOT NULL DEFAULT 0,
    failed            INTEGER NOT NULL DEFAULT 0,
    skipped           INTEGER NOT NULL DEFAULT 0,
    cursor            TEXT,
    lease_owner       TEXT,
    lease_expires_at  TEXT,
    created_at        TEXT NOT NULL,
    updated_at        TEXT NOT NULL,
    finished_at       TEXT
);
CREATE INDEX replays_status ON replays (status, id);
CREATE INDEX replays_tenant ON replays (tenant_id, id);
