-- The attempt log's indexed ids compare bytewise: attempt and subscription
-- ids are hookgate's, and their order is the ULID's (time) order, never a
-- locale's; event ids (a producer's `ce_id` may be one) are only compared
-- for equality.
-- Under the database's default collation each index insert ran the
-- locale's comparison (a copy and `strcoll` per key compared); at tens of
-- thousands of attempts a second that was a fifth of PostgreSQL's CPU.
-- Changing only the collation keeps the rows and rebuilds the indexes on
-- these columns (under a lock for as long as that takes: on a large table,
-- run it in a quiet hour).
ALTER TABLE attempts
    ALTER COLUMN id TYPE TEXT COLLATE "C",
    ALTER COLUMN event_id TYPE TEXT COLLATE "C",
    ALTER COLUMN subscription_id TYPE TEXT COLLATE "C";
