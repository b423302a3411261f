-- Who may see an event type: NULL, every tenant; otherwise a JSON array of
-- the tenant ids that may. A tenant's `*` and `prefix.*` never match a type
-- it may not see, and a broadcast reaches only the tenants that may.
ALTER TABLE event_types ADD COLUMN visible_to TEXT;
-- From the subscription version counter when the type is made, so that
-- dispatchers load just the types made since they last looked. Types made
-- before this column are visible to all and need no loading: 0.
ALTER TABLE event_types ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
CREATE INDEX event_types_version ON event_types (version);
