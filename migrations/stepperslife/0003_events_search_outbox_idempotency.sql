-- Events gain tags and coordinates, full-text search (and typo tolerance where pg_trgm exists);
-- an outbox for domain events written in the same transaction as the change they announce;
-- and stored responses for Idempotency-Key retries.

-- array_to_string is only STABLE; tags are plain text, so this wrapper is safe to mark IMMUTABLE and
-- lets the search vector be a generated column.
CREATE FUNCTION immutable_tags_text(tags text[]) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT coalesce(array_to_string(tags, ' '), '') $$;

ALTER TABLE events
    ADD COLUMN tags      text[]        NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 20),
    ADD COLUMN latitude  numeric(9,6)  CHECK (latitude BETWEEN -90 AND 90),
    ADD COLUMN longitude numeric(9,6)  CHECK (longitude BETWEEN -180 AND 180),
    ADD CONSTRAINT events_coordinates_paired CHECK ((latitude IS NULL) = (longitude IS NULL)),
    ADD COLUMN search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', coalesce(title, '')), 'A') ||
        setweight(to_tsvector('english', immutable_tags_text(tags)), 'B') ||
        setweight(to_tsvector('english', coalesce(location, '')), 'B') ||
        setweight(to_tsvector('english', coalesce(description, '')), 'C')
    ) STORED;

CREATE INDEX events_search_idx ON events USING gin (search_vector);
CREATE INDEX events_tags_idx ON events USING gin (tags);
CREATE INDEX events_published_category_idx ON events (category, event_date DESC, id DESC) WHERE status = 'published';

-- Typo tolerance needs pg_trgm (a contrib module). Where it is not installed the search falls back to
-- full-text only; the application checks pg_extension to know which.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXECUTE 'CREATE INDEX events_title_trgm_idx ON events USING gin (lower(title) gin_trgm_ops)';
EXCEPTION WHEN undefined_file OR feature_not_supported OR insufficient_privilege THEN
    RAISE NOTICE 'pg_trgm is not available: search works without typo tolerance';
END
$$;

CREATE TABLE outbox (
    id           bigserial PRIMARY KEY,
    topic        varchar(100) NOT NULL CHECK (topic ~ '^[a-z_]+\.[a-z_]+$'),
    payload      jsonb        NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    -- The same fact announced twice (a retried request, a redelivered message) is stored once.
    dedup_key    varchar(200) NOT NULL,
    created_at   timestamptz  NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE UNIQUE INDEX outbox_dedup_key ON outbox (dedup_key);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE idempotency_keys (
    -- Keys are scoped per user and route, so two users cannot collide or read each other's results.
    user_id       uuid         NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    route         varchar(200) NOT NULL,
    key           varchar(200) NOT NULL CHECK (key ~ '^[A-Za-z0-9._:-]{1,200}$'),
    request_hash  char(64)     NOT NULL,
    status_code   integer      CHECK (status_code BETWEEN 100 AND 599),
    response_body jsonb,
    created_at    timestamptz  NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, route, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
