-- AGI Staffers uptime checks: one row of check state per site (the schedule claims the due ones with
-- FOR UPDATE SKIP LOCKED), certificate-expiry incidents, and at most one open downtime incident per site.

CREATE TABLE uptime_checks (
    site_id               uuid PRIMARY KEY REFERENCES customer_sites (id) ON DELETE CASCADE,
    -- Optional: a check that finds the page without this text fails.
    keyword               varchar(200) CHECK (length(keyword) >= 1),
    state                 varchar(10)  NOT NULL DEFAULT 'unknown' CHECK (state IN ('unknown', 'up', 'down')),
    consecutive_failures  integer      NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    consecutive_successes integer      NOT NULL DEFAULT 0 CHECK (consecutive_successes >= 0),
    next_due              timestamptz  NOT NULL DEFAULT now(),
    last_checked_at       timestamptz,
    last_status           integer,
    last_latency_ms       double precision,
    last_error            varchar(300),
    -- The certificate seen last, and the tightest expiry warning (in days) already raised for it.
    cert_expires_at       timestamptz,
    cert_warned_days      integer      CHECK (cert_warned_days > 0),
    incident_id           uuid         REFERENCES incidents (id) ON DELETE SET NULL
);
-- The schedule's claim: the due rows, oldest first.
CREATE INDEX uptime_checks_next_due_idx ON uptime_checks (next_due);
CREATE INDEX uptime_checks_incident_idx ON uptime_checks (incident_id);

-- A certificate about to expire is an incident of its own kind (warned at 14 and at 3 days).
ALTER TABLE incidents ALTER COLUMN kind TYPE varchar(20), DROP CONSTRAINT incidents_kind_check;
ALTER TABLE incidents ADD CONSTRAINT incidents_kind_check CHECK (kind IN ('alert', 'downtime', 'certificate'));
-- One open downtime per site, whatever two overlapping check runs compute.
CREATE UNIQUE INDEX incidents_open_downtime_key ON incidents (site_id) WHERE kind = 'downtime' AND resolved_at IS NULL;
-- The staff log, newest first, across every site.
CREATE INDEX incidents_opened_idx ON incidents (opened_at DESC, id DESC);
