"""Event pictures, from the upload form to published variants.

1. ``start_upload`` hands the organizer a presigned POST for ``uploads/{event_id}/{image_id}``.
2. S3 notifies the queue; ``handle`` turns the upload into variants under ``public/`` (the layout of
   ``shared.media``, which the edge serves with immutable caching: a key never changes content),
   copies the original to the private ``originals/`` prefix, records the result in the event's
   ``images`` and removes the upload.

S3 and SQS deliver at least once, and a Lambda can die half-way, so every step is safe to repeat:
variant and original keys are fixed by (event, image, width, format) and rewritten whole; the upload
is removed only after the entry says ``ready`` (or ``failed`` for good), so a redelivery after a
crash finds either the upload to process again or a finished entry. Idempotency is by content hash
within an event: the same bytes uploaded twice are processed once and shown once.

Entry statuses: ``processing`` (claimed by a delivery), ``ready``, ``failed`` with a ``reason``,
``duplicate`` with ``duplicate_of``. Rejected files (not an image, over budget, corrupt) fail at once
and are removed. Other errors are retried by the queue; the last delivery before the DLQ marks the
entry ``failed`` and ``retryable`` and keeps the upload, so a redrive from the DLQ can try again. (A
Lambda killed during that last delivery leaves ``processing``: the DLQ alarm is the signal then.) A
duplicate upload (the same bytes as an image of the event that is ``processing`` or ``ready``) is not
processed: it gets an entry of its own, settled at once, whose ``duplicate_of`` names that image, so
a client polling for the id it was given gets an answer. Only ``ready`` entries are public
(``events.public_images``); the others are for the organizer and admins.

Every change to an entry makes the cached reads of the event and of the listings miss, at the origin
and at the edge (``EventInvalidation``).

Not a claim (``functions/platform/claims.py``): the entry is a state machine the event shows to its
readers, and taking it (``processing`` with its ``claimed_at`` lease) is decided together with the
duplicate check across the event's other entries, under the event's row lock, in one transaction. A
separate claim row would be a second record of the same state, outside that transaction.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import unquote_plus

from psycopg import Connection

from functions.platform.ports import ObjectNotFound, ObjectStore, ObjectTooLarge, Row, TransactionalDatabase
from functions.platform.topology import ORIGINALS_PREFIX, UPLOADS_PREFIX
from functions.stepperslife.services import images
from functions.stepperslife.services.events import can_manage
from functions.stepperslife.services.invalidation import EventInvalidation
from shared.envelope import Identity
from shared.errors import Conflict, Forbidden, NotFound, ValidationFailed
from shared.media import IMMUTABLE, variant_key

log = logging.getLogger("agistack.uploads")

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
UPLOAD_KEY = re.compile(rf"^{re.escape(UPLOADS_PREFIX)}(?P<event_id>{_UUID})/(?P<image_id>{_UUID})$")


class BadNotification(ValueError):
    """A message that can never succeed: retrying it would only fill the DLQ later."""


class ImageBusy(RuntimeError):
    """Another delivery of the same upload is processing it right now: try again later."""


class Outcome(StrEnum):
    READY = "ready"
    REJECTED = "rejected"  # marked failed with the reason, upload removed
    DUPLICATE = "duplicate"  # the same bytes are already an image of this event
    ALREADY_DONE = "already_done"  # a repeated delivery
    EVENT_GONE = "event_gone"
    UPLOAD_GONE = "upload_gone"


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


def upload_key(event_id: str, image_id: str) -> str:
    return f"{UPLOADS_PREFIX}{event_id}/{image_id}"


def original_key(event_id: str, image_id: str) -> str:
    return f"{ORIGINALS_PREFIX}{event_id}/{image_id}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _settled(entry: dict[str, Any]) -> bool:
    status = entry.get("status")
    return status in ("ready", "duplicate") or (status == "failed" and not entry.get("retryable"))


def _find(entries: list[dict[str, Any]], image_id: str) -> dict[str, Any] | None:
    return next((entry for entry in entries if entry.get("id") == image_id), None)


def _replaced(entries: list[dict[str, Any]], new: dict[str, Any]) -> list[dict[str, Any]]:
    """``entries`` with ``new`` in place of the entry with its id (order kept), or added at the end."""
    if _find(entries, new["id"]) is None:
        return [*entries, new]
    return [new if entry.get("id") == new["id"] else entry for entry in entries]


class UploadService:
    def __init__(
        self,
        db: TransactionalDatabase,
        store: ObjectStore,
        invalidation: EventInvalidation,
        *,
        policy: images.ImagePolicy = images.DEFAULT_POLICY,
        upload_expiry_seconds: int = 300,
        claim_seconds: int = 10,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        """``claim_seconds``: how long a ``processing`` claim keeps a concurrent duplicate delivery
        away. It must stay shorter than the queue's visibility timeout minus a batch's processing
        time, or the redelivery that follows a crash would find the claim still held."""
        self._db = db
        self._store = store
        self._invalidation = invalidation
        self._policy = policy
        self._upload_expiry = upload_expiry_seconds
        self._claim_for = timedelta(seconds=claim_seconds)
        self._now = now

    # --- the upload form -----------------------------------------------------------------------

    def start_upload(self, event_id: str, actor: Identity, content_type: str) -> dict[str, Any]:
        if content_type not in images.ACCEPTED_CONTENT_TYPES:
            raise ValidationFailed("this content type is not accepted", details=[{"loc": ["content_type"]}])
        with self._db.transaction() as conn:
            row = conn.execute("SELECT user_id, status FROM events WHERE id = %s", (event_id,)).fetchone()
        if row is None or (row["status"] == "draft" and not can_manage(actor, row)):
            raise NotFound("event not found")
        if not can_manage(actor, row):
            raise Forbidden("only the organizer or an admin may add pictures to this event")
        if row["status"] == "cancelled":
            raise Conflict("a cancelled event cannot get new pictures", code="event_cancelled")
        image_id = str(uuid.uuid4())
        post = self._store.presigned_post(
            upload_key(event_id, image_id),
            content_type=content_type,
            max_bytes=self._policy.max_bytes,
            expires_in_seconds=self._upload_expiry,
        )
        return {
            "image_id": image_id,
            "upload": {"url": post.url, "fields": post.fields},
            "max_bytes": self._policy.max_bytes,
            "expires_at": (self._now() + timedelta(seconds=self._upload_expiry)).isoformat(),
        }

    # --- processing ----------------------------------------------------------------------------

    def handle(self, upload: UploadedObject, *, attempt: int, final_attempt: bool) -> Outcome:
        """Process one uploaded object. Raises on a failure worth retrying; on the ``final_attempt``
        the entry is marked ``failed`` first, since the message is about to go to the DLQ."""
        match = UPLOAD_KEY.match(upload.key)
        if not match:
            raise BadNotification(f"not an upload key: {upload.key!r}")
        event_id, image_id = match["event_id"], match["image_id"]
        try:
            return self._handle(upload.key, event_id, image_id, attempt)
        except ImageBusy:
            raise
        except Exception:
            if final_attempt:
                try:
                    self._record_failure(
                        event_id, image_id, f"processing failed {attempt} times; upload the picture again", True
                    )
                except Exception:
                    log.exception("could not mark image %s of event %s failed", image_id, event_id)
            raise

    def _handle(self, key: str, event_id: str, image_id: str, attempt: int) -> Outcome:
        with self._db.transaction() as conn:
            row = conn.execute("SELECT images FROM events WHERE id = %s", (event_id,)).fetchone()
        if row is None:
            self._store.delete(key)  # nobody can ever see it
            return Outcome.EVENT_GONE
        entry = _find(row["images"], image_id)
        if entry is not None and _settled(entry):
            self._store.delete(key)  # left over when a crash came between the record and the removal
            return Outcome.ALREADY_DONE
        try:
            data = self._store.get(key, max_bytes=self._policy.max_bytes)
        except ObjectNotFound:
            log.warning("upload %s is gone; nothing to process", key)
            return Outcome.UPLOAD_GONE
        except ObjectTooLarge:
            limit = self._policy.max_bytes // (1024 * 1024)
            return self._reject(key, event_id, image_id, f"the file is larger than {limit} MB")
        claim = self._claim(event_id, image_id, data, attempt)
        if claim is not None:
            self._store.delete(key)
            return claim
        try:
            processed = images.process(data, self._policy)
        except images.ImageRejected as exc:
            return self._reject(key, event_id, image_id, exc.reason)
        written = self._publish(event_id, image_id, processed)
        ready = self._update(event_id, image_id, lambda entry: self._ready_entry(entry, event_id, processed))
        if not ready:
            # The event was deleted while we worked: its pictures must not outlive it.
            for written_key in [*written, original_key(event_id, image_id)]:
                self._store.delete(written_key)
        self._store.delete(key)
        return Outcome.READY if ready else Outcome.EVENT_GONE

    def _claim(self, event_id: str, image_id: str, data: bytes, attempt: int) -> Outcome | None:
        """Mark the entry ``processing`` under the event's row lock; None when this delivery should
        do the work, else why not."""
        digest = images.content_hash(data)
        now = self._now()
        with self._db.transaction() as conn:
            row = conn.execute("SELECT images FROM events WHERE id = %s FOR UPDATE", (event_id,)).fetchone()
            if row is None:
                return Outcome.EVENT_GONE
            entries: list[dict[str, Any]] = row["images"]
            entry = _find(entries, image_id)
            if entry is not None and _settled(entry):
                return Outcome.ALREADY_DONE
            same = next(
                (
                    other
                    for other in entries
                    if other.get("id") != image_id
                    and other.get("content_hash") == digest
                    and other.get("status") in ("processing", "ready")
                ),
                None,
            )
            if (
                same is None
                and entry is not None
                and entry.get("status") == "processing"
                and datetime.fromisoformat(entry["claimed_at"]) > now - self._claim_for
            ):
                raise ImageBusy(f"image {image_id} is being processed by another delivery")
            recorded: dict[str, Any] = {
                "id": image_id,
                "status": "processing" if same is None else "duplicate",
                "content_hash": digest,
                "bytes": len(data),
                "attempts": attempt,
                "created_at": entry["created_at"] if entry else now.isoformat(),
            }
            if same is None:
                recorded["claimed_at"] = now.isoformat()
            else:
                recorded["duplicate_of"] = same["id"]
            self._write(conn, event_id, _replaced(entries, recorded))
        self._invalidation.invalidate_event(event_id)
        return None if same is None else Outcome.DUPLICATE

    def _publish(self, event_id: str, image_id: str, processed: images.ProcessedImage) -> list[str]:
        """Variants to the public prefix, then the original to the private one. Returns the keys."""
        keys = []
        for variant in processed.variants:
            key = variant_key(event_id, image_id, variant.url_width, variant.encoding.extension)
            self._store.put(key, variant.data, content_type=variant.encoding.content_type, cache_control=IMMUTABLE)
            keys.append(key)
        self._store.copy(upload_key(event_id, image_id), original_key(event_id, image_id))
        return keys

    def _ready_entry(self, entry: dict[str, Any], event_id: str, processed: images.ProcessedImage) -> dict[str, Any]:
        image_id = entry["id"]
        return {
            "id": image_id,
            "status": "ready",
            "content_hash": entry.get("content_hash"),
            "original": {
                "key": original_key(event_id, image_id),
                "format": processed.format,
                "width": processed.width,
                "height": processed.height,
                "frames": processed.frames,
                "bytes": entry.get("bytes"),
            },
            "has_alpha": processed.has_alpha,
            "variants": [
                {
                    "url_width": variant.url_width,
                    "width": variant.width,
                    "height": variant.height,
                    "format": variant.encoding.name,
                    "content_type": variant.encoding.content_type,
                    "key": variant_key(event_id, image_id, variant.url_width, variant.encoding.extension),
                    "bytes": len(variant.data),
                }
                for variant in processed.variants
            ],
            "blurhash": processed.blurhash,
            "dominant_color": processed.dominant_color,
            "camera": processed.camera,
            "lens": processed.lens,
            "captured_at": processed.captured_at,
            "attempts": entry.get("attempts", 1),
            "created_at": entry.get("created_at", self._now().isoformat()),
            "processed_at": self._now().isoformat(),
        }

    def _reject(self, key: str, event_id: str, image_id: str, reason: str) -> Outcome:
        self._record_failure(event_id, image_id, reason, False)
        self._store.delete(key)
        return Outcome.REJECTED

    def _record_failure(self, event_id: str, image_id: str, reason: str, retryable: bool) -> None:
        now = self._now().isoformat()

        def failed(entry: dict[str, Any]) -> dict[str, Any]:
            kept: dict[str, Any] = {
                name: entry[name] for name in ("content_hash", "bytes", "attempts", "created_at") if name in entry
            }
            return {
                "created_at": now,
                **kept,
                "id": image_id,
                "status": "failed",
                "reason": reason,
                "retryable": retryable,
                "failed_at": now,
            }

        self._update(event_id, image_id, failed, unless_ready=True)

    def _update(
        self,
        event_id: str,
        image_id: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        unless_ready: bool = False,
    ) -> bool:
        """Replace (or add) the entry ``image_id`` with ``change(current)``; False when the event is gone."""
        with self._db.transaction() as conn:
            row = conn.execute("SELECT images FROM events WHERE id = %s FOR UPDATE", (event_id,)).fetchone()
            if row is None:
                return False
            entries: list[dict[str, Any]] = row["images"]
            current = _find(entries, image_id) or {"id": image_id}
            if unless_ready and current.get("status") == "ready":
                return True
            self._write(conn, event_id, _replaced(entries, change(current)))
        self._invalidation.invalidate_event(event_id)
        return True

    @staticmethod
    def _write(conn: Connection[Row], event_id: str, entries: list[dict[str, Any]]) -> None:
        conn.execute(
            "UPDATE events SET images = %s::jsonb, updated_at = now() WHERE id = %s", (json.dumps(entries), event_id)
        )
