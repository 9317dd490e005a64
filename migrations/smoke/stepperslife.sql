-- The application's own reads, run against a restored copy by the restore drill
-- (functions/platform/backups/restore.py): each must run without error. Statements end with ";" at
-- a line's end.

-- The public listing: published events with their seats taken (events.py, keyset order).
SELECT e.id, e.title, e.event_date, e.capacity, e.registered_count, count(r.id) AS registered
  FROM events e LEFT JOIN event_registrations r ON r.event_id = e.id AND r.status IN ('registered', 'checked_in')
 WHERE e.status = 'published'
 GROUP BY e.id ORDER BY e.event_date DESC, e.id DESC LIMIT 20;

-- Full-text search over the stored search vector.
SELECT id FROM events WHERE search_vector @@ websearch_to_tsquery('english', 'dance') LIMIT 10;

-- An account and its registrations.
SELECT u.email, count(r.id) FROM users u LEFT JOIN event_registrations r ON r.user_id = u.id
 GROUP BY u.email ORDER BY u.email LIMIT 10;

-- The outbox relay's read.
SELECT id, topic FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT 10;
