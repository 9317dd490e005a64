"""Uploads that reach the media bucket: each becomes an entry in its event's ``images``.

S3 and SQS deliver at least once, so recording is idempotent by object key. The image pipeline
(variants, metadata) builds on these entries.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from functions.services.ports import TransactionalDatabase

UPLOAD_KEY = re.compile(
    r"^uploads/(?P<event_id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})/(?P<upload_id>[0-9a-f-]{36})$"
)


class BadNotification(ValueError):
    """A message that can never succeed: retrying it would only fill the DLQ later."""


@dataclass(frozen=True)
class UploadedObject:
    bucket: str
    key: str
    size: int
    etag: str


def parse_s3_notification(body: str) -> list[UploadedObject]:
    """The ObjectCreated records of an S3 notification; S3's initial ``s3:TestEvent`` yields none."""
    try:
        message = json.loads(body)
    except ValueError as exc:
        raise BadNotification("message body is not JSON") from exc
    if not isinstance(message, dict):
        raise BadNotification("message body is not an object")
    if message.get("Event") == "s3:TestEvent":
        return []
    objects = []
    for record in message.get("Records", []):
        if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
            continue
        s3 = record.get("s3", {})
        obj = s3.get("object", {})
        objects.append(
            UploadedObject(
                bucket=str(s3.get("bucket", {}).get("name", "")),
                key=unquote_plus(str(obj.get("key", ""))),  # S3 URL-encodes keys in notifications
                size=int(obj.get("size", 0)),
                etag=str(obj.get("eTag", "")),
            )
        )
    return objects


class UploadService:
    def __init__(self, db: TransactionalDatabase) -> None:
        self._db = db

    def record(self, upload: UploadedObject) -> dict[str, Any] | None:
        """Record ``upload`` on its event; returns the entry, or None when the event no longer exists."""
        match = UPLOAD_KEY.match(upload.key)
        if not match:
            raise BadNotification(f"not an upload key: {upload.key!r}")
        entry = {
            "id": match["upload_id"],
            "key": upload.key,
            "bytes": upload.size,
            "etag": upload.etag,
            "status": "received",
        }
        with self._db.transaction() as conn:
            row = conn.execute("SELECT images FROM events WHERE id = %s FOR UPDATE", (match["event_id"],)).fetchone()
            if row is None:
                return None
            existing = [image for image in row["images"] if image.get("id") == entry["id"]]
            if existing:
                return dict(existing[0])
            conn.execute(
                "UPDATE events SET images = images || %s::jsonb, updated_at = now() WHERE id = %s",
                (json.dumps([entry]), match["event_id"]),
            )
        return entry
