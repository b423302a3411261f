-- The complete REST API: tenant API keys, secret rotation, event types and
-- idempotency records.

-- Tenant API keys: only a SHA-256 of the key is kept (the key is random and
-- long, so a plain hash is as good as a slow one); `prefix` is what lists show.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    name        TEXT,
    prefix      TEXT NOT NULL,
    key_hash    TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id, id);

-- Secrets replaced by a rotation, each with the end of its grace period:
-- `[{"secret": "whsec_…", "expires_at": "…"}]`. Webhooks are signed with
-- every one not yet expired.
ALTER TABLE subscriptions ADD COLUMN previous_secrets TEXT NOT NULL DEFAULT '[]';
CREATE INDEX subscriptions_tenant_status ON subscriptions (tenant_id, status, id) WHERE deleted_at IS NULL;

CREATE TABLE event_types (
    name         TEXT PRIMARY KEY,
    description  TEXT,
    -- A JSON Schema that published `data` must satisfy; NULL: anything.
    json_schema  TEXT,
    created_at   TEXT NOT NULL
);

-- `Idempotency-Key`s per caller: inserted first (the primary key decides
-- which of concurrent requests publishes), then completed with the answer.
CREATE TABLE idempotency_keys (
    scope            TEXT NOT NULL,
    idem_key         TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    status           TEXT NOT NULL,
    response_status  INTEGER,
    response_body    TEXT,
    created_at       TEXT NOT NULL,
    PRIMARY KEY (scope, idem_key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
