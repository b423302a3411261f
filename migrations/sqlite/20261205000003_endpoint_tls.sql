-- TLS to the endpoint (domain::EndpointTls), as JSON: client_certificate,
-- client_key (sealed like `secret` when the server has HOOKGATE_SECRET_KEY),
-- ca_certificates; PEM each. NULL: none.
ALTER TABLE subscriptions ADD COLUMN tls TEXT;
