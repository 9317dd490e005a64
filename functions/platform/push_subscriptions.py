"""Storing a browser's push subscription: the one check and the one upsert both products run on
their own ``push_subscriptions`` table (the same columns in each database).

An endpoint belongs to one browser: subscribing it again, even from another account signed in on
that browser, moves it rather than duplicating it. Each user keeps their newest ``keep``
subscriptions, so an account cannot make us post to thousands of URLs.
"""

from __future__ import annotations

from psycopg import Connection

from functions.platform.ports import Row
from functions.platform.push import EndpointChecker, Subscription
from shared.errors import NotFound, ValidationFailed
from shared.kv_keys import endpoint_hash
from shared.net import MAX_URL_LENGTH, UnsafeUrl
from shared.push_subscription import validate_keys


def check_subscription(endpoint: str, p256dh: str, auth: str, check_endpoint: EndpointChecker) -> None:
    """422 ``invalid_endpoint`` for an endpoint the outbound guard refuses, ``invalid_subscription``
    for unusable keys."""
    try:
        if len(endpoint) > MAX_URL_LENGTH:
            raise UnsafeUrl("it is too long")
        check_endpoint(endpoint)
    except UnsafeUrl as exc:
        raise ValidationFailed(
            f"the endpoint is not acceptable: {exc}", details=[{"loc": ["endpoint"]}], code="invalid_endpoint"
        ) from None
    validate_keys(p256dh, auth)


def save_subscription(
    conn: Connection[Row], user_id: str, endpoint: str, p256dh: str, auth: str, *, keep: int
) -> tuple[Row, list[str]]:
    """Store (or move to ``user_id``) the subscription; returns it (with ``created``) and the endpoint
    hashes of the user's older subscriptions evicted beyond ``keep``."""
    row = conn.execute(
        "INSERT INTO push_subscriptions (user_id, endpoint, endpoint_hash, p256dh, auth) "
        "VALUES (%s, %s, %s, %s, %s) "
        "ON CONFLICT (endpoint) DO UPDATE SET user_id = EXCLUDED.user_id, p256dh = EXCLUDED.p256dh, "
        "auth = EXCLUDED.auth, updated_at = now() "
        "RETURNING id, endpoint, endpoint_hash, created_at, updated_at, (xmax = 0) AS created",
        (user_id, endpoint, endpoint_hash(endpoint), p256dh, auth),
    ).fetchone()
    assert row is not None
    evicted = conn.execute(
        "DELETE FROM push_subscriptions WHERE id IN (SELECT id FROM push_subscriptions WHERE user_id = %s "
        "ORDER BY updated_at DESC, id OFFSET %s) RETURNING endpoint_hash",
        (user_id, keep),
    ).fetchall()
    return row, [old["endpoint_hash"] for old in evicted]


def delete_subscription(conn: Connection[Row], user_id: str, endpoint: str) -> None:
    """Delete ``user_id``'s subscription for ``endpoint``; NotFound (404) when they have none (another
    user's looks absent)."""
    gone = conn.execute(
        "DELETE FROM push_subscriptions WHERE endpoint = %s AND user_id = %s RETURNING id", (endpoint, user_id)
    ).fetchone()
    if gone is None:
        raise NotFound("no such subscription", code="subscription_not_found")


def subscription_from_row(row: Row) -> Subscription:
    """A stored subscription (a ``push_subscriptions`` row) as push delivery takes it."""
    return Subscription(
        id=str(row["id"]),
        user_id=str(row["user_id"]),
        endpoint=row["endpoint"],
        endpoint_hash=row["endpoint_hash"],
        p256dh=row["p256dh"],
        auth=row["auth"],
    )
