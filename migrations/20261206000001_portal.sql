-- The consumer portal (src/portal/): one-time links an admin hands a tenant,
-- and the browser sessions they open. Only hashes of the secrets are kept.
CREATE TABLE portal_links (
    token_hash  TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    read_only   BOOLEAN NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);

-- tenant_id NULL: an admin's session, opened with the admin token whose
-- SHA-256 is admin_token_hash (the session ends when that token is no
-- longer configured).
CREATE TABLE portal_sessions (
    id_hash          TEXT PRIMARY KEY,
    tenant_id        TEXT REFERENCES tenants (id),
    admin_token_hash TEXT,
    read_only   BOOLEAN NOT NULL,
    csrf_token  TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

CREATE INDEX portal_links_expiry ON portal_links (expires_at);
CREATE INDEX portal_sessions_expiry ON portal_sessions (expires_at);
CREATE INDEX portal_sessions_tenant ON portal_sessions (tenant_id);
CREATE INDEX portal_links_tenant ON portal_links (tenant_id);
