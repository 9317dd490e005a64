-- Web push: the durable copy of each browser's subscription (the edge keeps a copy in PUSH_SUBS_KV
-- under push:{endpoint_hash}), and the record of which processing steps a domain event has finished.
--
-- users.preferences drives who hears about a newly published event:
--   {"notify": true, "categories": ["social", ...], "locations": ["Chicago", ...]}
-- notify must be true; an empty or missing list does not restrict on that field; a location matches
-- when it appears (case-insensitively) in the event's location text.

CREATE TABLE push_subscriptions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- CASCADE: a deleted account's browsers must not keep receiving its notifications.
    user_id       uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    endpoint      text        NOT NULL CHECK (length(endpoint) <= 2048 AND endpoint ~ '^https?://'),
    -- sha256(endpoint) in hex: the edge's KV key, so a pruned subscription is removed there too.
    endpoint_hash char(64)    NOT NULL CHECK (endpoint_hash ~ '^[0-9a-f]{64}$'),
    p256dh        varchar(100) NOT NULL,
    auth          varchar(40) NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX push_subscriptions_endpoint_key ON push_subscriptions (endpoint);
CREATE INDEX push_subscriptions_user_id_idx ON push_subscriptions (user_id);

-- A redelivered domain event skips the steps already recorded here.
CREATE TABLE processed_steps (
    dedup_key    varchar(200) NOT NULL,
    step         varchar(64)  NOT NULL,
    completed_at timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (dedup_key, step)
);
-- For the daily pruning of records older than any message SQS could still redeliver.
CREATE INDEX processed_steps_completed_at_idx ON processed_steps (completed_at);
