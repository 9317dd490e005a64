"""End to end through moto's real server: the presigned POST from the API, an upload with
``requests``, the S3 notification on the real queue, the queue pump that plays Lambda's event
source mapping, the handler, S3 objects and the event's JSON."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from devstack import aws_local, handlers
from devstack.services import start_moto
from functions.platform.config import Settings
from functions.platform.topology import IMAGE_UPLOADS
from functions.stepperslife.app import app
from functions.stepperslife.composition import configure, container
from functions.stepperslife.services.uploads import UploadService, original_key, upload_key
from shared.envelope import Identity
from shared.media import IMMUTABLE
from tests.conftest import EdgeSignedClient
from tests.stepperslife.images_fixtures import camera_jpeg
from tests.stepperslife.test_api import create_event

pytestmark = pytest.mark.e2e


@dataclasses.dataclass
class LocalAws:
    settings: Settings
    queue_url: str
    dlq_url: str
    pump: aws_local.QueuePump

    def client(self, service: str) -> Any:
        return aws_local.client(self.settings, service)

    def deliver(self, until: Any, rounds: int = 10) -> None:
        """Pump batches until ``until()`` is true (S3's first message is a test event to skip)."""
        for _ in range(rounds):
            self.pump.drain_once(wait_seconds=1)
            if until():
                return
        raise AssertionError("the queue never delivered what was expected")


@pytest.fixture(scope="module")
def local_aws(configured_app: Any, settings: Settings) -> Iterator[LocalAws]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "local")
        env.setenv("AWS_SECRET_ACCESS_KEY", "local")
        moto = start_moto()
        aws_settings = dataclasses.replace(settings, aws=dataclasses.replace(settings.aws, endpoint_url=moto.url))
        queue_urls = aws_local.ensure_resources(aws_settings)
        queue_url = queue_urls[IMAGE_UPLOADS.name]
        sqs = aws_local.client(aws_settings, "sqs")
        dlq_url = sqs.get_queue_url(QueueName=IMAGE_UPLOADS.dlq_name)["QueueUrl"]
        [handler] = [h for h in handlers.sqs_handlers(app) if h.queue == IMAGE_UPLOADS.name]
        pump = aws_local.QueuePump(aws_settings, queue_url, handler.function, handler.name, handler.batch_size)
        configure(aws_settings)
        try:
            yield LocalAws(aws_settings, queue_url, dlq_url, pump)
        finally:
            configure(settings)
            moto.stop()


def upload(api: EdgeSignedClient, who: Identity, event_id: str, data: bytes, content_type: str) -> str:
    form = api.request("POST", f"/events/{event_id}/images", identity=who, json_body={"content_type": content_type})
    assert form.status == 201, form.body
    post = form.json["upload"]
    response = requests.post(
        post["url"], data=post["fields"], files={"file": ("photo.jpg", data, content_type)}, timeout=10
    )
    assert response.status_code in (200, 201, 204), response.text
    image_id: str = form.json["image_id"]
    return image_id


def entry(api: EdgeSignedClient, who: Identity, event_id: str, image_id: str) -> dict[str, Any] | None:
    """The entry as the event's organizer (or an admin) sees it: every status, with its details."""
    images = api.request("GET", f"/events/{event_id}", identity=who).json["event"]["images"]
    return next((image for image in images if image["id"] == image_id), None)


def object_exists(s3: Any, bucket: str, key: str) -> bool:
    return "Contents" in s3.list_objects_v2(Bucket=bucket, Prefix=key)


def test_upload_to_published_variants(local_aws: LocalAws, api: EdgeSignedClient, users: dict[str, Identity]) -> None:
    event = create_event(api, users["user"], status="published")
    assert api.request("GET", f"/events/{event['id']}").json["event"]["images"] == []  # now cached
    data = camera_jpeg((700, 480))
    image_id = upload(api, users["user"], event["id"], data, "image/jpeg")

    def ready() -> bool:
        found = entry(api, users["user"], event["id"], image_id)
        return found is not None and found["status"] == "ready"

    local_aws.deliver(ready)
    image = entry(api, users["user"], event["id"], image_id)
    assert image is not None
    assert (image["original"]["width"], image["original"]["height"]) == (480, 700)
    assert image["blurhash"] and image["dominant_color"].startswith("#")
    assert len(image["variants"]) == 6
    s3 = local_aws.client("s3")
    bucket = local_aws.settings.aws.media_bucket
    for variant in image["variants"]:
        # Where the edge's GET /img/{event_id}/{image_id}/{width} looks (shared/media.py).
        extension = "jpg" if variant["format"] == "jpeg" else variant["format"]
        assert variant["key"] == f"public/{event['id']}/{image_id}/{variant['url_width']}.{extension}"
        head = s3.head_object(Bucket=bucket, Key=variant["key"])
        assert head["CacheControl"] == IMMUTABLE == "public, max-age=31536000, immutable"
        assert head["ContentType"] == variant["content_type"] and head["ContentLength"] == variant["bytes"]
    original = s3.get_object(Bucket=bucket, Key=original_key(event["id"], image_id))["Body"].read()
    assert original == data  # kept whole, in the private prefix
    assert not object_exists(s3, bucket, upload_key(event["id"], image_id))

    # The same bytes again: no new work, and the id the client polls answers with the picture it repeats.
    again = upload(api, users["user"], event["id"], data, "image/jpeg")
    local_aws.deliver(lambda: entry(api, users["user"], event["id"], again) is not None)
    duplicate = entry(api, users["user"], event["id"], again)
    assert duplicate is not None and (duplicate["status"], duplicate["duplicate_of"]) == ("duplicate", image_id)
    assert not object_exists(s3, bucket, upload_key(event["id"], again))
    assert not object_exists(s3, bucket, f"public/{event['id']}/{again}/")
    public = api.request("GET", f"/events/{event['id']}").json["event"]["images"]
    assert [picture["id"] for picture in public] == [image_id]


def test_a_pdf_fails_at_once_and_a_broken_pipeline_ends_in_the_dlq(
    local_aws: LocalAws, api: EdgeSignedClient, users: dict[str, Identity], monkeypatch: pytest.MonkeyPatch
) -> None:
    event = create_event(api, users["admin"], status="published")
    sqs = local_aws.client("sqs")
    # Failed deliveries come back at once instead of after the visibility timeout.
    sqs.set_queue_attributes(QueueUrl=local_aws.queue_url, Attributes={"VisibilityTimeout": "0"})
    try:
        pdf_id = upload(api, users["admin"], event["id"], b"%PDF-1.7\n1 0 obj<<>>endobj\n%%EOF\n", "image/jpeg")

        def pdf_settled() -> bool:
            found = entry(api, users["admin"], event["id"], pdf_id)
            return found is not None and found["status"] == "failed"

        local_aws.deliver(pdf_settled)
        pdf = entry(api, users["admin"], event["id"], pdf_id)
        assert pdf is not None and "PDF" in pdf["reason"] and pdf["attempts"] == 1 and not pdf["retryable"]

        def broken_put(*args: Any, **kwargs: Any) -> None:
            raise ConnectionError("S3 is down")

        monkeypatch.setattr(container().media_store, "put", broken_put)
        # With the visibility timeout at 0 the redeliveries come faster than the claim lapses.
        service = UploadService(
            container().db, container().media_store, container().event_invalidation, claim_seconds=0
        )
        monkeypatch.setitem(container().__dict__, "uploads", service)
        photo_id = upload(api, users["admin"], event["id"], camera_jpeg((320, 240)), "image/jpeg")

        def in_dlq() -> bool:
            attributes = sqs.get_queue_attributes(
                QueueUrl=local_aws.dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            return int(attributes["ApproximateNumberOfMessages"]) == 1

        local_aws.deliver(in_dlq, rounds=IMAGE_UPLOADS.max_receive_count + 3)
        photo = entry(api, users["admin"], event["id"], photo_id)
        assert photo is not None and photo["status"] == "failed" and photo["retryable"]
        assert photo["attempts"] == IMAGE_UPLOADS.max_receive_count
        assert f"failed {IMAGE_UPLOADS.max_receive_count} times" in photo["reason"]
    finally:
        visibility = str(IMAGE_UPLOADS.visibility_seconds)
        sqs.set_queue_attributes(QueueUrl=local_aws.queue_url, Attributes={"VisibilityTimeout": visibility})
