-- Alert notifications beyond the owner's e-mail: customers' webhook endpoints with a record of every
-- delivery (one per endpoint and state change), and staff's web push subscriptions.

-- A customer's webhook endpoint. The secret is kept as issued (not hashed): an HMAC is computed with
-- the key itself, so a hash would be useless, and encrypting it with a key held in the same function's
-- configuration would only protect a copy of the database taken without that configuration. What it
-- guards (forging alert notifications to this customer's own endpoint) is worth less than the rest of
-- this database; it is shown once, and deleting the endpoint forgets it.
CREATE TABLE webhook_endpoints (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id uuid          NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    url         text          NOT NULL CHECK (length(url) <= 2048 AND url ~ '^https?://'),
    secret      varchar(100)  NOT NULL,
    created_by  uuid          REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz   NOT NULL DEFAULT now(),
    UNIQUE (customer_id, url)
);
CREATE INDEX webhook_endpoints_created_by_idx ON webhook_endpoints (created_by);

-- One delivery per (endpoint, state change): the unique key is what makes a redelivered message or a
-- second worker find the delivery already done instead of posting again. ``attempts`` counts across
-- redeliveries, so the number of posts stays bounded; a delivery that ran out of attempts, or that
-- the endpoint refused for good, stays 'failed' with its last answer for the customer to see.
CREATE TABLE webhook_deliveries (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    endpoint_id  uuid         NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    dedup_key    varchar(200) NOT NULL,
    status       varchar(10)  NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts     integer      NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_status  integer,
    last_error   varchar(300),
    created_at   timestamptz  NOT NULL DEFAULT now(),
    updated_at   timestamptz  NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, dedup_key)
);

-- Staff's browsers (the same subscription contract as SteppersLife's: shared/push_subscription.py).
CREATE TABLE push_subscriptions (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id       uuid          NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    endpoint      text          NOT NULL UNIQUE CHECK (length(endpoint) <= 2048 AND endpoint ~ '^https?://'),
    -- sha256(endpoint) in hex, as SteppersLife keeps it (the push delivery logs it, never the URL).
    endpoint_hash char(64)      NOT NULL CHECK (endpoint_hash ~ '^[0-9a-f]{64}$'),
    p256dh        varchar(100)  NOT NULL,
    auth          varchar(40)   NOT NULL,
    created_at    timestamptz   NOT NULL DEFAULT now(),
    updated_at    timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX push_subscriptions_user_idx ON push_subscriptions (user_id, updated_at DESC);
