-- Sessions that follow the account (functions/platform/sessions.py), in every database: a user's
-- session generation. A session carries the generation it was opened under; the origin refuses one
-- whose generation is no longer the account's (401 session_revoked). Revoking every session of an
-- account (log out everywhere, a password or role change) is one increment here.
-- No row means generation 0: accounts need no row until their first revocation. No foreign key: the
-- platform knows no product's users table; a deleted account's sessions end because the account is
-- gone, and its row here is a few bytes, removed with it by the product when it deletes the user.
CREATE TABLE session_generations (
    user_id     uuid        PRIMARY KEY,
    generation  bigint      NOT NULL CHECK (generation > 0),
    revoked_at  timestamptz NOT NULL DEFAULT now()
);
