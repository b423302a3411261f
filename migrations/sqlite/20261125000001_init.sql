-- Tenants own subscriptions; `ten_default` is the built-in tenant that an
-- admin acts on when it names none.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
INSERT INTO tenants (id, name) VALUES ('ten_default', 'default');

-- One row, bumped in every transaction that changes a subscription. Its row
-- lock orders writers, so versions become visible in increasing order and a
-- dispatcher can load just the rows above the last version it saw.
CREATE TABLE subscription_version (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    version    INTEGER NOT NULL
);
INSERT INTO subscription_version (singleton, version) VALUES (1, 0);

CREATE TABLE subscriptions (
    id                     TEXT PRIMARY KEY,
    tenant_id              TEXT NOT NULL REFERENCES tenants (id),
    url                    TEXT NOT NULL,
    event_types            TEXT NOT NULL,
    secret                 TEXT NOT NULL,
    rate_limit_per_second  INTEGER,
    rate_limit_burst       INTEGER,
    max_in_flight          INTEGER,
    ordered                BOOLEAN NOT NULL DEFAULT FALSE,
    headers                TEXT NOT NULL DEFAULT '{}',
    status                 TEXT NOT NULL,
    disabled_reason        TEXT,
    description            TEXT,
    metadata               TEXT NOT NULL DEFAULT '{}',
    version                INTEGER NOT NULL,
    created_at             TEXT NOT NULL,
    updated_at             TEXT NOT NULL,
    -- Soft delete, so that dispatchers polling by version see deletions.
    deleted_at             TEXT
);
CREATE INDEX subscriptions_version ON subscriptions (version);
CREATE INDEX subscriptions_tenant ON subscriptions (tenant_id, id) WHERE deleted_at IS NULL;

CREATE TABLE attempts (
    id                TEXT PRIMARY KEY,
    event_id          TEXT NOT NULL,
    webhook_id        TEXT NOT NULL,
    subscription_id   TEXT NOT NULL,
    tenant_id         TEXT NOT NULL,
    event_type        TEXT NOT NULL,
    attempt           INTEGER NOT NULL,
    outcome           TEXT NOT NULL,
    status_code       INTEGER,
    latency_ms        INTEGER NOT NULL,
    error             TEXT,
    response_excerpt  TEXT,
    created_at        TEXT NOT NULL
);
CREATE INDEX attempts_subscription ON attempts (subscription_id, id);
CREATE INDEX attempts_event ON attempts (event_id, id);
CREATE INDEX attempts_created ON attempts (created_at);
