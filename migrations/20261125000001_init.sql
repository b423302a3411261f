-- Tenants own subscriptions; `ten_default` is the built-in tenant that an
-- admin acts on when it names none.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
INSERT INTO tenants (id, name) VALUES ('ten_default', 'default');

-- One row, bumped in every transaction that changes a subscription. Its row
-- lock orders writers, so versions become visible in increasing order and a
-- dispatcher can load just the rows above the last version it saw.
CREATE TABLE subscription_version (
    singleton  BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    version    BIGINT NOT NULL
);
INSERT INTO subscription_version (singleton, version) VALUES (TRUE, 0);

CREATE TABLE subscriptions (
    id                     TEXT PRIMARY KEY,
    tenant_id              TEXT NOT NULL REFERENCES tenants (id),
    url                    TEXT NOT NULL,
    event_types            JSONB NOT NULL,
    secret                 TEXT NOT NULL,
    rate_limit_per_second  BIGINT,
    rate_limit_burst       BIGINT,
    max_in_flight          BIGINT,
    ordered                BOOLEAN NOT NULL DEFAULT FALSE,
    headers                JSONB NOT NULL DEFAULT '{}',
    status                 TEXT NOT NULL,
    disabled_reason        TEXT,
    description            TEXT,
    metadata               JSONB NOT NULL DEFAULT '{}',
    version                BIGINT NOT NULL,
    created_at             TIMESTAMPTZ NOT NULL,
    updated_at             TIMESTAMPTZ NOT NULL,
    -- Soft delete, so that dispatchers polling by version see deletions.
    deleted_at             TIMESTAMPTZ
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
    attempt           BIGINT NOT NULL,
    outcome           TEXT NOT NULL,
    status_code       BIGINT,
    latency_ms        BIGINT NOT NULL,
    error             TEXT,
    response_excerpt  TEXT,
    created_at        TIMESTAMPTZ NOT NULL
);
CREATE INDEX attempts_subscription ON attempts (subscription_id, id);
CREATE INDEX attempts_event ON attempts (event_id, id);
CREATE INDEX attempts_created ON attempts (created_at);
