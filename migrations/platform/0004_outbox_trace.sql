-- The trace of the request that wrote an outbox row (W3C traceparent, null outside a trace): the relay
-- puts it on the message, so the event's handler continues that trace even when the scheduled relay,
-- in a trace of its own, sends the row.
ALTER TABLE outbox ADD COLUMN traceparent varchar(55);
