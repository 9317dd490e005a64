"""Object storage: the S3 implementation (AWS, moto, MinIO) of the port in ``functions.platform.ports``.

boto3 is imported on first use, so a Lambda that never touches S3 does not pay for it at cold start.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from functions.platform.ports import ObjectNotFound, ObjectTooLarge, PresignedPost

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


_CHUNK = 1024 * 1024


class S3ObjectStore:
    def __init__(self, bucket: str, *, region: str, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self._region = region
        self._endpoint_url = endpoint_url
        self._lock = threading.Lock()
        self._s3: S3Client | None = None

    @property
    def client(self) -> S3Client:
        with self._lock:
            if self._s3 is None:
                import boto3
                from botocore.config import Config

                # Path-style addressing for local endpoints (moto, MinIO): no per-bucket host names.
                config = Config(
                    s3={"addressing_style": "path" if self._endpoint_url else "auto"},
                    retries={"mode": "standard", "max_attempts": 3},
                )
                self._s3 = boto3.session.Session(region_name=self._region).client(
                    "s3", endpoint_url=self._endpoint_url, config=config
                )
            return self._s3

    def get(self, key: str, *, max_bytes: int) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _is_missing(exc):
                raise ObjectNotFound(key) from exc
            raise
        body = response["Body"]
        try:
            if response.get("ContentLength", 0) > max_bytes:
                raise ObjectTooLarge(f"{key} is larger than {max_bytes} bytes")
            chunks: list[bytes] = []
            size = 0
            while chunk := body.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise ObjectTooLarge(f"{key} is larger than {max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            body.close()

    def put(self, key: str, data: bytes, *, content_type: str, cache_control: str) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, CacheControl=cache_control
        )

    def copy(self, source_key: str, destination_key: str) -> None:
        try:
            self.client.copy_object(
                Bucket=self.bucket, Key=destination_key, CopySource={"Bucket": self.bucket, "Key": source_key}
            )
        except Exception as exc:
            if _is_missing(exc):
                raise ObjectNotFound(source_key) from exc
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def presigned_post(self, key: str, *, content_type: str, max_bytes: int, expires_in_seconds: int) -> PresignedPost:
        post: dict[str, Any] = self.client.generate_presigned_post(
            Bucket=self.bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]],
            ExpiresIn=expires_in_seconds,
        )
        return PresignedPost(url=str(post["url"]), fields={name: str(value) for name, value in post["fields"].items()})


def _is_missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    code = str(response.get("Error", {}).get("Code", "")) if isinstance(response, dict) else ""
    return code in ("NoSuchKey", "404", "NotFound")
