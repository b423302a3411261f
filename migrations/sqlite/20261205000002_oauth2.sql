-- OAuth 2.0 client credentials for the endpoint (domain::OAuth2), as JSON:
-- token_url, client_id, client_secret (sealed like `secret` when the server
-- has HOOKGATE_SECRET_KEY), scope, audience. NULL: none.
ALTER TABLE subscriptions ADD COLUMN oauth2 TEXT;
