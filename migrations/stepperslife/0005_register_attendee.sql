-- Registration as one server-side step. The event row is locked for the whole decision (seat or
-- waiting list), so concurrent registrations queue on it and can never oversell; doing the decision
-- inside PostgreSQL keeps that lock for microseconds instead of several client round trips, which is
-- what lets a popular event take hundreds of registrations a second.
CREATE FUNCTION register_attendee(p_event_id uuid, p_user_id uuid)
RETURNS TABLE (outcome text, registration jsonb, waitlist_position bigint)
LANGUAGE plpgsql AS $$
DECLARE
    event_row record;
    existing  event_registrations%ROWTYPE;
    saved     event_registrations%ROWTYPE;
    new_seq   bigint;
BEGIN
    SELECT e.status, e.event_date < now() AS past, e.registered_count < e.capacity AS has_seat
      INTO event_row FROM events e WHERE e.id = p_event_id FOR UPDATE;
    IF NOT FOUND OR event_row.status = 'draft' THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::jsonb, NULL::bigint; RETURN;
    ELSIF event_row.status <> 'published' THEN
        RETURN QUERY SELECT 'cancelled'::text, NULL::jsonb, NULL::bigint; RETURN;
    ELSIF event_row.past THEN
        RETURN QUERY SELECT 'past'::text, NULL::jsonb, NULL::bigint; RETURN;
    END IF;

    SELECT * INTO existing FROM event_registrations r WHERE r.user_id = p_user_id AND r.event_id = p_event_id;
    IF FOUND AND existing.status <> 'cancelled' THEN
        saved := existing;
        outcome := 'already_registered';
    ELSE
        IF event_row.has_seat THEN
            UPDATE events SET registered_count = registered_count + 1 WHERE id = p_event_id;
            new_seq := NULL;
        ELSE
            UPDATE events SET waitlist_seq = waitlist_seq + 1 WHERE id = p_event_id RETURNING waitlist_seq INTO new_seq;
        END IF;
        -- A cancelled registration is renewed in place (the unique (user, event) pair stays).
        INSERT INTO event_registrations AS r (user_id, event_id, status, waitlist_seq)
        VALUES (p_user_id, p_event_id, CASE WHEN new_seq IS NULL THEN 'registered' ELSE 'waitlisted' END, new_seq)
        ON CONFLICT (user_id, event_id) DO UPDATE
            SET status = EXCLUDED.status, waitlist_seq = EXCLUDED.waitlist_seq,
                registration_date = now(), updated_at = now()
        RETURNING * INTO saved;
        outcome := 'ok';
    END IF;

    registration := to_jsonb(saved) - 'waitlist_seq';
    waitlist_position := NULL;
    IF saved.status = 'waitlisted' THEN
        SELECT count(*) INTO waitlist_position FROM event_registrations r
         WHERE r.event_id = p_event_id AND r.status = 'waitlisted' AND r.waitlist_seq <= saved.waitlist_seq;
    END IF;
    RETURN NEXT;
END
$$;
