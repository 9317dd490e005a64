-- The platform's claims table (platform/0001, applied before this file) now records Idempotency-Key
-- responses, finished processing steps and sent daily digests. What the three old tables hold moves
-- over under the keys the code now uses (functions/platform/http.py, functions/platform/processing.py,
-- functions/stepperslife/services/engagement.py), so that no retry after the deploy repeats work;
-- then they go. A request still in progress during the deploy is not moved: its retry runs again.
INSERT INTO claims (scope, key, fingerprint, status, holder, result, claimed_at, locked_until, completed_at)
SELECT 'http:' || user_id || ':' || route, key, request_hash, 'done', md5(random()::text),
       jsonb_build_object('status', status_code, 'body', response_body), created_at, created_at, created_at
FROM idempotency_keys WHERE status_code IS NOT NULL;

INSERT INTO claims (scope, key, status, holder, result, claimed_at, locked_until, completed_at)
SELECT 'step', dedup_key || ':' || step, 'done', md5(random()::text), 'null'::jsonb,
       completed_at, completed_at, completed_at
FROM processed_steps;

INSERT INTO claims (scope, key, status, holder, result, claimed_at, locked_until, completed_at)
SELECT 'digest', to_char(day, 'YYYY-MM-DD') || ':' || user_id, 'done', md5(random()::text), jsonb_build_object('event_ids', event_ids),
       sent_at, sent_at, sent_at
FROM digest_deliveries;

DROP TABLE idempotency_keys;
DROP TABLE processed_steps;
DROP TABLE digest_deliveries;
