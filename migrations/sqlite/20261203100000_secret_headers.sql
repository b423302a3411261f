-- Secrets at rest (HOOKGATE_SECRET_KEY): `secret`, the `secret` of each
-- `previous_secrets` entry and the values of secret headers may hold
-- `enc:v1:<key id>:<base64>` instead of plain text (store/sealing.rs).
-- Which headers are secret: the credential headers hookgate knows, and
-- those a subscription names here (a JSON array of header names).
ALTER TABLE subscriptions ADD COLUMN secret_headers TEXT NOT NULL DEFAULT '[]';
