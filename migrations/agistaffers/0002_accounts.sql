-- AGI Staffers accounts: plans as data, the users and invitations of a customer (and the staff, who
-- belong to no customer), the customer's profile and status history, and sites that are deleted by
-- marking them so (their domain can then be added again, by anyone).

-- Plans are rows, not a CHECK list: the limits live beside the name, and a new plan is an INSERT.
CREATE TABLE plans (
    name                       varchar(100) PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,99}$'),
    max_sites                  integer      NOT NULL CHECK (max_sites >= 0),
    -- At least 1: the owner who signed up is a member.
    max_members                integer      NOT NULL CHECK (max_members >= 1),
    metrics_retention_days     integer      NOT NULL CHECK (metrics_retention_days BETWEEN 1 AND 3650),
    min_check_interval_seconds integer      NOT NULL CHECK (min_check_interval_seconds BETWEEN 1 AND 86400),
    created_at                 timestamptz  NOT NULL DEFAULT now()
);
INSERT INTO plans (name, max_sites, max_members, metrics_retention_days, min_check_interval_seconds) VALUES
    ('starter',     3,   3,  7, 300),
    ('business',   25,  10, 30,  60),
    ('enterprise', 250, 50, 90,  30);

-- The FK replaces 0001's CHECK list. RESTRICT: a plan someone is on cannot disappear under them.
ALTER TABLE customers DROP CONSTRAINT customers_plan_check;
ALTER TABLE customers
    ADD CONSTRAINT customers_plan_fkey FOREIGN KEY (plan) REFERENCES plans (name) ON UPDATE CASCADE ON DELETE RESTRICT;
-- Serves the FK (a plan's deletion or rename checks its customers) and the staff listing's plan filter.
CREATE INDEX customers_plan_idx ON customers (plan);

-- customers.email is the contact address (the owner's at sign-up); the login identity is users.email,
-- which is unique. Keeping customers.email unique would refuse a sign-up by someone whose address was
-- once the contact of a customer they have since left, so it becomes a plain index (staff search).
DROP INDEX customers_email_key;
CREATE INDEX customers_email_idx ON customers (email);

-- Profile: small and free-form; the API validates formats, the database bounds sizes.
ALTER TABLE customers
    ADD COLUMN phone             varchar(40)  CHECK (length(phone) >= 1),
    ADD COLUMN website           varchar(2048) CHECK (website ~ '^https?://'),
    ADD COLUMN address           text         CHECK (length(address) BETWEEN 1 AND 1000),
    ADD COLUMN billing_email     varchar(255) CHECK (billing_email = lower(billing_email) AND billing_email LIKE '_%@_%'),
    -- Why the customer is in its status (a suspension's cause, a cancellation's note), and since when.
    ADD COLUMN status_reason     text         CHECK (length(status_reason) BETWEEN 1 AND 1000),
    ADD COLUMN status_changed_at timestamptz;
ALTER TABLE customers ADD CONSTRAINT customers_company_name_check CHECK (length(btrim(company_name)) >= 1);
-- The staff listing pages by (created_at, id), newest first.
CREATE INDEX customers_created_idx ON customers (created_at DESC, id DESC);

CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- CASCADE: a customer's logins have no meaning without it. NULL for staff.
    customer_id   uuid         REFERENCES customers (id) ON DELETE CASCADE,
    -- Stored lower-cased so uniqueness is case-insensitive without citext.
    email         varchar(255) NOT NULL CHECK (email = lower(email) AND email LIKE '_%@_%'),
    name          varchar(255) NOT NULL CHECK (length(btrim(name)) >= 1),
    password_hash text         NOT NULL CHECK (length(password_hash) >= 1),
    role          varchar(20)  NOT NULL CHECK (role IN ('owner', 'member', 'admin')),
    disabled_at   timestamptz,
    created_at    timestamptz  NOT NULL DEFAULT now(),
    updated_at    timestamptz  NOT NULL DEFAULT now(),
    -- Staff (admin) belong to no customer; everyone else belongs to exactly one.
    CONSTRAINT users_staff_have_no_customer CHECK ((role = 'admin') = (customer_id IS NULL))
);
-- One login per address across customers and staff alike.
CREATE UNIQUE INDEX users_email_key ON users (email);
-- A customer's team, and the FK.
CREATE INDEX users_customer_idx ON users (customer_id, created_at);

CREATE TABLE invitations (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id uuid         NOT NULL REFERENCES customers (id) ON DELETE CASCADE,
    email       varchar(255) NOT NULL CHECK (email = lower(email) AND email LIKE '_%@_%'),
    role        varchar(20)  NOT NULL CHECK (role IN ('member', 'owner')),
    -- Only the SHA-256 of the token is kept: a copy of this table cannot accept an invitation.
    token_hash  char(64)     NOT NULL CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    -- SET NULL: removing the inviter does not void the invitations they sent.
    invited_by  uuid         REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz  NOT NULL DEFAULT now(),
    expires_at  timestamptz  NOT NULL DEFAULT now() + interval '7 days',
    accepted_at timestamptz,
    revoked_at  timestamptz,
    CHECK (expires_at > created_at),
    -- An invitation ends one way.
    CHECK (accepted_at IS NULL OR revoked_at IS NULL)
);
CREATE UNIQUE INDEX invitations_token_hash_key ON invitations (token_hash);
-- At most one open invitation per address and customer. Expiry cannot be in an index predicate (now()
-- is not immutable), so the service closes an expired one (revoked_at) before inviting that address again.
CREATE UNIQUE INDEX invitations_open_key ON invitations (customer_id, email)
    WHERE accepted_at IS NULL AND revoked_at IS NULL;
-- A customer's invitations newest first (the owner's list), and the FK's cascade.
CREATE INDEX invitations_customer_idx ON invitations (customer_id, created_at DESC, id DESC);
-- The FK's SET NULL when an inviter is removed.
CREATE INDEX invitations_invited_by_idx ON invitations (invited_by);

-- Sites: a display name the customer chooses, and deletion by marking.
ALTER TABLE customer_sites
    ADD COLUMN label      varchar(100) CHECK (length(btrim(label)) >= 1),
    ADD COLUMN deleted_at timestamptz,
    ADD CONSTRAINT customer_sites_deleted_at_check CHECK ((status = 'deleted') = (deleted_at IS NOT NULL));
-- 0001 required an all-letter TLD, which refuses internationalised TLDs (xn--p1ai). The service stores
-- the normalised A-label form; this CHECK keeps anything else out: LDH labels of 1-63 characters and a
-- last label that is letters or an A-label, never all digits (an IPv4 address is not a domain).
ALTER TABLE customer_sites DROP CONSTRAINT customer_sites_domain_check;
ALTER TABLE customer_sites ADD CONSTRAINT customer_sites_domain_check CHECK (
    domain = lower(domain)
    AND length(domain) <= 253
    AND domain ~ '^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+([a-z]{2,63}|xn--[a-z0-9-]{1,59})$'
);
-- A deleted site's domain may be added again (by its old customer or another one): uniqueness holds
-- among the sites that are not deleted only.
DROP INDEX customer_sites_domain_key;
CREATE UNIQUE INDEX customer_sites_live_domain_key ON customer_sites (domain) WHERE status <> 'deleted';
-- Keyset pagination, newest first: the staff listing over everyone, and a customer's own listing
-- (which also serves the FK, so 0001's index on customer_id alone goes).
DROP INDEX customer_sites_customer_id_idx;
CREATE INDEX customer_sites_created_idx ON customer_sites (created_at DESC, id DESC);
CREATE INDEX customer_sites_customer_created_idx ON customer_sites (customer_id, created_at DESC, id DESC);
