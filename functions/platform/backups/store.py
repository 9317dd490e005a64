"""The backup bucket: dumps streamed in as multipart uploads, manifests beside them, nothing overwritten.

Layout: ``<kind>/<database>/<YYYY>/<MM>/<DD>/<YYYYMMDDTHHMMSSZ>-<random>.dump`` and the same key ending
in ``.manifest.json``. The kind comes first so the bucket's lifecycle rules can select by prefix
(topology.BACKUP_KINDS); the time sorts keys in order; the random part keeps two runs in the same
second apart.

A dump never passes through memory whole: it is read from pg_dump's pipe in ``PART_BYTES`` parts,
each uploaded and hashed as it comes (at most one part in memory). Every write is conditional
(``If-None-Match: *``): a key that exists is never replaced. Every object version is put under
Object Lock in compliance mode until its kind's retention ends, explicitly after the upload (the
bucket's default retention covers what the request carried; stating it on the version we wrote also
holds where the default was not applied). No code here deletes: the functions' role may not.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from functions.platform import topology
from functions.platform.backups.errors import BackupError, BackupRefused
from functions.platform.backups.manifest import Manifest, manifest_key

# S3's minimum part size is 5 MiB; 16 MiB keeps a 5 GB dump far below the 10,000-part limit.
PART_BYTES = 16 * 1024 * 1024
DUMP_SUFFIX = ".dump"
KINDS = {kind.name: kind for kind in topology.BACKUP_KINDS}

# (bytes done so far, total bytes or None when unknown)
Progress = Callable[[int, int | None], None]


def no_progress(done: int, total: int | None) -> None:
    return None


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class StoredBackup:
    key: str
    database: str
    kind: str
    taken_at: datetime
    size: int
    storage_class: str

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.key)


def dump_key(database: str, kind: str, at: datetime) -> str:
    at = at.astimezone(UTC)
    return f"{KINDS[kind].prefix}{database}/{at:%Y/%m/%d/%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}{DUMP_SUFFIX}"


def parse_key(key: str) -> tuple[str, str, datetime] | None:
    """(kind, database, time) of a dump's key; None for anything else in the bucket."""
    parts = key.split("/")
    if len(parts) != 6 or parts[0] not in KINDS or not parts[5].endswith(DUMP_SUFFIX):
        return None
    try:
        taken = datetime.strptime(parts[5].split("-")[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None
    return parts[0], parts[1], taken


class BackupStore:
    def __init__(self, client: Callable[[], Any], bucket: str) -> None:
        self._client_factory = client
        self._client: Any = None
        self.bucket = bucket

    @property
    def s3(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def retain_until(self, kind: str, now: datetime) -> datetime:
        return now + timedelta(days=KINDS[kind].retention_days)

    def upload(self, key: str, stream: Readable, retain_until: datetime, progress: Progress = no_progress) -> str:
        """Stream ``stream`` to ``key`` as a multipart upload; returns the SHA-256 of what was sent.

        On any failure the upload is aborted, so no partial object ever appears under the key."""
        lock = {"ObjectLockMode": "COMPLIANCE", "ObjectLockRetainUntilDate": retain_until}
        upload_id = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key, **lock)["UploadId"]
        digest, sent, parts = hashlib.sha256(), 0, []
        try:
            for number, chunk in enumerate(_parts(stream), start=1):
                digest.update(chunk)
                etag = self.s3.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                )["ETag"]
                parts.append({"ETag": etag, "PartNumber": number})
                sent += len(chunk)
                progress(sent, None)
            if not parts:  # an empty stream: S3 needs one (empty) part
                etag = self.s3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"")
                parts.append({"ETag": etag["ETag"], "PartNumber": 1})
            done = self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, IfNoneMatch="*"
            )
        except BaseException:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        self._lock(key, done.get("VersionId"), retain_until)
        return digest.hexdigest()

    def put_manifest(self, manifest: Manifest, retain_until: datetime) -> str:
        key = manifest_key(manifest.dump_key)
        done = self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=manifest.to_json(),
            ContentType="application/json",
            IfNoneMatch="*",
            ObjectLockMode="COMPLIANCE",
            ObjectLockRetainUntilDate=retain_until,
        )
        self._lock(key, done.get("VersionId"), retain_until)
        return key

    def _lock(self, key: str, version_id: str | None, retain_until: datetime) -> None:
        extra = {"VersionId": version_id} if version_id else {}
        self.s3.put_object_retention(
            Bucket=self.bucket,
            Key=key,
            Retention={"Mode": "COMPLIANCE", "RetainUntilDate": retain_until},
            **extra,
        )

    def list(self, database: str | None = None, kind: str | None = None) -> list[StoredBackup]:
        """Dumps oldest first, whether or not their manifest exists (a restore checks that)."""
        found: list[StoredBackup] = []
        for kind_name in [kind] if kind else list(KINDS):
            prefix = KINDS[kind_name].prefix + (f"{database}/" if database else "")
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    parsed = parse_key(item["Key"])
                    if parsed is None:
                        continue
                    found.append(
                        StoredBackup(
                            item["Key"],
                            parsed[1],
                            parsed[0],
                            parsed[2],
                            int(item["Size"]),
                            item.get("StorageClass", "STANDARD"),
                        )
                    )
        return sorted(found, key=lambda backup: (backup.taken_at, backup.key))

    def latest(self, database: str) -> StoredBackup:
        """The newest dump of ``database`` that can be read at once (archived weekly ones cannot)."""
        ready = [
            backup
            for backup in self.list(database)
            if backup.storage_class not in ("GLACIER", "DEEP_ARCHIVE") and not KINDS[backup.kind].archived
        ]
        if not ready:
            raise BackupError(f"no backup of {database} in s3://{self.bucket}")
        return ready[-1]

    def manifest(self, dump_key: str) -> Manifest:
        key = manifest_key(dump_key)
        try:
            raw = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            raise BackupRefused(f"{dump_key}: no manifest beside it ({key}): an unfinished or foreign dump") from None
        manifest = Manifest.from_json(raw, key)
        if manifest.dump_key != dump_key:
            raise BackupRefused(f"{key}: the manifest describes {manifest.dump_key}, not {dump_key}")
        return manifest

    def download(self, key: str, dest: Path, progress: Progress = no_progress) -> tuple[int, str]:
        """Stream ``key`` into ``dest``; returns (bytes, SHA-256) of what arrived."""
        response = self.s3.get_object(Bucket=self.bucket, Key=key)
        total = int(response.get("ContentLength") or 0) or None
        digest, received = hashlib.sha256(), 0
        with dest.open("wb") as out:
            for chunk in response["Body"].iter_chunks(chunk_size=1024 * 1024):
                digest.update(chunk)
                out.write(chunk)
                received += len(chunk)
                progress(received, total)
        return received, digest.hexdigest()


def _parts(stream: Readable) -> Iterator[bytes]:
    """Full PART_BYTES parts (a pipe returns less than asked: keep reading), the last one shorter."""
    while True:
        buffer = bytearray()
        while len(buffer) < PART_BYTES:
            chunk = stream.read(PART_BYTES - len(buffer))
            if not chunk:
                break
            buffer += chunk
        if not buffer:
            return
        yield bytes(buffer)
        if len(buffer) < PART_BYTES:
            return
