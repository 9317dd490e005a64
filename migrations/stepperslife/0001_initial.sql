-- SteppersLife: users, events, registrations (the seed's schema, made production-grade).
-- gen_random_uuid() is built in since PostgreSQL 13.

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Stored lower-case so that uniqueness is case-insensitive without citext.
    email         varchar(255) NOT NULL CHECK (email = lower(email) AND email LIKE '_%@_%'),
    name          varchar(255) NOT NULL CHECK (btrim(name) <> ''),
    password_hash text         NOT NULL CHECK (password_hash LIKE 'scrypt$%'),
    role          text         NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'customer', 'admin')),
    preferences   jsonb        NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(preferences) = 'object'),
    created_at    timestamptz  NOT NULL DEFAULT now(),
    updated_at    timestamptz  NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (email);

CREATE TABLE events (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- RESTRICT: removing an organizer who still owns events must be a deliberate act.
    user_id          uuid         NOT NULL REFERENCES users (id) ON DELETE RESTRICT,
    title            varchar(255) NOT NULL CHECK (btrim(title) <> ''),
    slug             varchar(120) NOT NULL CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    description      text         NOT NULL DEFAULT '',
    event_date       timestamptz  NOT NULL,
    ends_at          timestamptz  CHECK (ends_at IS NULL OR ends_at >= event_date),
    time_zone        varchar(64)  NOT NULL DEFAULT 'UTC',
    location         varchar(255),
    category         varchar(64)  NOT NULL DEFAULT 'general' CHECK (category ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    status           text         NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'published', 'cancelled')),
    capacity         integer      NOT NULL CHECK (capacity BETWEEN 1 AND 1000000),
    -- Seat counters kept in the event row: a registration takes a seat with one conditional UPDATE,
    -- which row-locks the event, so concurrent registrations can never oversell.
    registered_count integer      NOT NULL DEFAULT 0 CHECK (registered_count >= 0 AND registered_count <= capacity),
    waitlist_seq     bigint       NOT NULL DEFAULT 0 CHECK (waitlist_seq >= 0),
    images           jsonb        NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(images) = 'array'),
    metadata         jsonb        NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    published_at     timestamptz  CHECK ((status = 'draft') OR published_at IS NOT NULL),
    created_at       timestamptz  NOT NULL DEFAULT now(),
    updated_at       timestamptz  NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX events_slug_key ON events (slug);
CREATE INDEX events_user_id_idx ON events (user_id);
-- The public listing: published events newest-first by date, keyset on (event_date, id).
CREATE INDEX events_published_listing_idx ON events (event_date DESC, id DESC) WHERE status = 'published';

CREATE TABLE event_registrations (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- CASCADE: a registration has no meaning without its user or its event.
    user_id           uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    event_id          uuid        NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    registration_date timestamptz NOT NULL DEFAULT now(),
    status            varchar(50) NOT NULL DEFAULT 'registered'
                      CHECK (status IN ('registered', 'waitlisted', 'cancelled', 'checked_in')),
    -- Order in the waiting list; the position shown is the rank among those still waiting.
    waitlist_seq      bigint      CHECK ((status = 'waitlisted') = (waitlist_seq IS NOT NULL)),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_registrations_user_event_key UNIQUE (user_id, event_id)
);
-- user_id is covered by the unique (user_id, event_id) index.
CREATE INDEX event_registrations_event_id_idx ON event_registrations (event_id, status);
CREATE INDEX event_registrations_waitlist_idx ON event_registrations (event_id, waitlist_seq)
    WHERE status = 'waitlisted';
