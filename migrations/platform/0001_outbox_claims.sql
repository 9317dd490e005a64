-- The platform's tables, in every database: the transactional outbox and the claims ("do this once").

-- IF NOT EXISTS: stepperslife/0003 created this same table before the platform folder existed, and
-- stepperslife's files up to 0006 run before this one (migrations/README.md). Keep the two identical.
CREATE TABLE IF NOT EXISTS outbox (
    id           bigserial PRIMARY KEY,
    topic        varchar(100) NOT NULL CHECK (topic ~ '^[a-z_]+\.[a-z_]+$'),
    payload      jsonb        NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    -- The same fact announced twice (a retried request, a redelivered message) is stored once.
    dedup_key    varchar(200) NOT NULL,
    created_at   timestamptz  NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS outbox_dedup_key ON outbox (dedup_key);
CREATE INDEX IF NOT EXISTS outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

-- One row per thing done once, under a natural key the caller chooses (functions/platform/claims.py).
CREATE TABLE claims (
    scope        varchar(300) NOT NULL,
    key          varchar(300) NOT NULL,
    -- What the work was asked to do (a request's hash); the same key with another fingerprint is refused.
    fingerprint  text,
    status       varchar(20)  NOT NULL CHECK (status IN ('in_progress', 'done')),
    -- Who holds an in_progress claim: a holder whose lease lapsed cannot complete its successor's claim.
    holder       char(32)     NOT NULL,
    result       jsonb,
    claimed_at   timestamptz  NOT NULL,
    locked_until timestamptz  NOT NULL,
    completed_at timestamptz,
    PRIMARY KEY (scope, key),
    CHECK ((status = 'done') = (completed_at IS NOT NULL))
);
-- For the pruning of claims no retry can still need.
CREATE INDEX claims_claimed_at_idx ON claims (claimed_at);
