-- One row per restore drill of this database (functions/platform/backups/drill.py): what was restored,
-- whether it came back intact, and the measured recovery figures. The monitoring reads the newest
-- successful row: none in 26 hours is an alert.
CREATE TABLE backup_drills (
    id                bigserial    PRIMARY KEY,
    dump_key          varchar(1024),
    started_at        timestamptz  NOT NULL,
    finished_at       timestamptz  NOT NULL,
    succeeded         boolean      NOT NULL,
    -- Why it failed, in one line (a corrupt dump, a mismatched count...); NULL when it succeeded.
    failure           text         CHECK (length(failure) BETWEEN 1 AND 4000),
    -- When the restored data was current (the dump's snapshot): RPO is the drill's start minus this.
    data_as_of        timestamptz,
    rpo_seconds       double precision CHECK (rpo_seconds >= 0),
    download_seconds  double precision CHECK (download_seconds >= 0),
    restore_seconds   double precision CHECK (restore_seconds >= 0),
    verify_seconds    double precision CHECK (verify_seconds >= 0),
    -- Measured RTO: restore plus verification.
    rto_seconds       double precision CHECK (rto_seconds >= 0),
    dump_bytes        bigint       CHECK (dump_bytes >= 0),
    restored_bytes    bigint       CHECK (restored_bytes >= 0),
    tables            integer      CHECK (tables >= 0),
    rows_restored     bigint       CHECK (rows_restored >= 0),
    indexes_checked   integer      CHECK (indexes_checked >= 0),
    CHECK (finished_at >= started_at),
    CHECK (succeeded = (failure IS NULL))
);
-- The freshness check: the newest successful drill.
CREATE INDEX backup_drills_succeeded_idx ON backup_drills (started_at DESC) WHERE succeeded;
