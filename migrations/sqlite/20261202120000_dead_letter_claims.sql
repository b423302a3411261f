-- A single replay claims its dead letter before it sends: `replay_claim`
-- (a token) until `replay_claimed_until`. Concurrent replays of one dead
-- letter then send it once; the claim of a replay that died runs out, so
-- the dead letter is never stuck. Nothing else moves a claimed one.
ALTER TABLE dead_letters ADD COLUMN replay_claim TEXT;
ALTER TABLE dead_letters ADD COLUMN replay_claimed_until TEXT;
