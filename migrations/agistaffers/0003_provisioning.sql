-- AGI Staffers provisioning: sagas (onboarding a site, tearing it down, stopping/starting its container)
-- recorded step by step, so that a crash anywhere resumes from these rows (services/saga.py).

-- What a plan gives each site's container: the compose template's resource limits.
ALTER TABLE plans
    ADD COLUMN site_cpus      numeric(4,2) NOT NULL DEFAULT 0.5 CHECK (site_cpus > 0 AND site_cpus <= 64),
    ADD COLUMN site_memory_mb integer      NOT NULL DEFAULT 256 CHECK (site_memory_mb BETWEEN 64 AND 262144);
UPDATE plans SET site_cpus = 1.0, site_memory_mb = 512 WHERE name = 'business';
UPDATE plans SET site_cpus = 2.0, site_memory_mb = 2048 WHERE name = 'enterprise';

-- Why a site is failed (or suspended), in words the customer can read.
ALTER TABLE customer_sites ADD COLUMN status_reason text CHECK (length(status_reason) BETWEEN 1 AND 1000);

CREATE TABLE saga_runs (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- RESTRICT: a site's history of runs goes with the site only when someone decides so.
    site_id         uuid         NOT NULL REFERENCES customer_sites (id) ON DELETE RESTRICT,
    kind            varchar(20)  NOT NULL CHECK (kind IN ('onboard', 'teardown', 'suspend', 'reinstate', 'remove')),
    -- queued: waits for the site's active run to end (one run per site at a time);
    -- running / compensating: being worked on; failed: stopped after exhausting retries, resources
    -- kept, waiting for staff (retry or cancel); succeeded / compensated: ended.
    status          varchar(20)  NOT NULL
                    CHECK (status IN ('queued', 'running', 'compensating', 'failed', 'succeeded', 'compensated')),
    -- What started it (a request, an outbox event): the same trigger never starts two runs.
    trigger         varchar(200) NOT NULL,
    next_attempt_at timestamptz  NOT NULL DEFAULT now(),
    -- A worker's lease on the run while it executes a step; a crash leaves it to lapse.
    locked_until    timestamptz,
    holder          char(32),
    -- How often a worker took the run over from a holder whose lease had lapsed (a crash).
    resumes         integer      NOT NULL DEFAULT 0 CHECK (resumes >= 0),
    -- How often the schedule re-sent a due run's message (each one a distinct outbox row).
    kicks           integer      NOT NULL DEFAULT 0 CHECK (kicks >= 0),
    cancel_requested boolean     NOT NULL DEFAULT false,
    -- The customer-readable reason a run failed or was compensated.
    reason          text         CHECK (length(reason) BETWEEN 1 AND 1000),
    created_at      timestamptz  NOT NULL DEFAULT now(),
    updated_at      timestamptz  NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CHECK ((status IN ('succeeded', 'compensated')) = (finished_at IS NOT NULL))
);
CREATE UNIQUE INDEX saga_runs_trigger_key ON saga_runs (trigger);
-- One run works on a site at a time: the others queue behind it.
CREATE UNIQUE INDEX saga_runs_one_active_per_site ON saga_runs (site_id)
    WHERE status IN ('running', 'compensating', 'failed');
-- The schedule's pick-up of due runs, and a site's runs newest first.
CREATE INDEX saga_runs_due_idx ON saga_runs (next_attempt_at) WHERE status IN ('running', 'compensating');
CREATE INDEX saga_runs_site_idx ON saga_runs (site_id, created_at DESC);

CREATE TABLE saga_steps (
    run_id          uuid         NOT NULL REFERENCES saga_runs (id) ON DELETE CASCADE,
    position        smallint     NOT NULL CHECK (position >= 0),
    name            varchar(40)  NOT NULL CHECK (name ~ '^[a-z_]+$'),
    -- pending → succeeded | failed; a compensated step's effect was undone (compensating → compensated).
    state           varchar(20)  NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'succeeded', 'failed', 'compensating', 'compensated')),
    attempts        integer      NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at timestamptz,
    last_error      text,
    -- What the step created outside (a stack id, DNS record ids): what compensation removes.
    external_ids    jsonb        NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(external_ids) = 'object'),
    started_at      timestamptz,
    finished_at     timestamptz,
    PRIMARY KEY (run_id, name),
    UNIQUE (run_id, position)
);
