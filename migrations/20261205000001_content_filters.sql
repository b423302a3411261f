-- A subscription's content filter (domain/filter.rs), as the API was sent
-- it; NULL: every event its types match.
ALTER TABLE subscriptions ADD COLUMN content_filter JSONB;
