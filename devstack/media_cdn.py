"""The dev stack's stand-in for CloudFront in front of the media bucket (origin access control).

In production the bucket stays private and only the CDN reads it, with its own signed requests; the
edge fetches variants from the CDN (``MEDIA_PUBLIC_BASE_URL``). Locally this server does the same
over the local S3 endpoint (moto refuses anonymous reads, as a private bucket should): ``GET`` and
``HEAD`` of ``/public/...`` read that key with the dev stack's credentials; any other key is 403, as
the distribution's origin path and the bucket policy allow nothing else; a missing key is 404.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
from typing import Any

from edge_workers.local_server import BackgroundServer, Receive, Scope, Send, send_response
from functions.platform.config import Settings
from shared.errors import AppError, Forbidden, NotFound, UpstreamUnavailable
from shared.media import PUBLIC_PREFIX

# What CloudFront passes on from S3's answer.
_FORWARDED = ("content-type", "cache-control", "etag", "last-modified")


class MediaCdn:
    """The ASGI app: ``/public/<key>`` → that object of ``bucket``."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self._bucket = bucket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            status, headers, body = await self._serve(scope["method"], scope["path"])
        except AppError as error:
            body = json.dumps(error.body(), separators=(",", ":")).encode()
            status, headers = error.status, {"content-type": "application/json", "cache-control": "no-store"}
        pairs = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        await send_response(send, status, pairs, body)

    async def _serve(self, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
        if method not in ("GET", "HEAD"):
            raise Forbidden("the media CDN serves GET and HEAD only", code="access_denied")
        key = path.lstrip("/")
        # The decoded path, normalised as CloudFront does before it matches behaviours: no way out of
        # public/ through dot segments.
        if not key.startswith(PUBLIC_PREFIX) or posixpath.normpath(key) != key or "\x00" in key:
            raise Forbidden("only published media is served", code="access_denied")
        return await asyncio.to_thread(self._read, key)

    def _read(self, key: str) -> tuple[int, dict[str, str], bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            stored = self._s3.get_object(Bucket=self._bucket, Key=key)
            body = stored["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise NotFound("no such object", code="not_found") from exc
            raise UpstreamUnavailable("the media bucket refused the read") from exc
        except BotoCoreError as exc:
            raise UpstreamUnavailable("the media bucket is unreachable") from exc
        metadata = stored["ResponseMetadata"]["HTTPHeaders"]
        return 200, {name: metadata[name] for name in _FORWARDED if name in metadata}, body


def start_media_cdn(settings: Settings, host: str, port: int = 0) -> BackgroundServer:
    """The CDN for ``settings``' media bucket on ``host:port`` (0: a free port), started."""
    from devstack import aws_local

    cdn = MediaCdn(aws_local.client(settings, "s3"), settings.aws.media_bucket)
    server = BackgroundServer(cdn, host, port, name="media-cdn", executor_workers=16)
    server.start()
    return server
