-- One daily digest per user and day, however often the schedule fires (EventBridge may deliver twice).
CREATE TABLE digest_deliveries (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day        date        NOT NULL,
    event_ids  uuid[]      NOT NULL,
    sent_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, day)
);
CREATE INDEX digest_deliveries_day_idx ON digest_deliveries (day);
