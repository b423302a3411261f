-- Retention purges subscriptions deleted long enough ago, oldest first.
CREATE INDEX subscriptions_deleted ON subscriptions (deleted_at) WHERE deleted_at IS NOT NULL;
