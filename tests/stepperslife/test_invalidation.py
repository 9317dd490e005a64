"""Invalidating an event, once: an event update, a processing step and an image change each make the
origin's Redis reads (``events`` and ``event:{id}``) and the edge's cached reads (``ver:events``) miss.

The edge's KV is reached through Cloudflare's API, an outside system: a recording stand-in of that
adapter (``EdgeCache``) takes its place; Redis and PostgreSQL are real."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from functions.stepperslife.composition import Container, container
from functions.stepperslife.services.invalidation import CACHE_SERVICE, LIST_FAMILY, event_family
from functions.stepperslife.services.uploads import Outcome, UploadedObject, UploadService, upload_key
from shared.envelope import Identity
from tests.conftest import EdgeSignedClient
from tests.stepperslife.images_fixtures import MemoryStore, camera_jpeg
from tests.stepperslife.test_api import create_event
from tests.stepperslife.test_processing import delivered


class RecordingEdgeCache:
    def __init__(self) -> None:
        self.families: list[str] = []

    def invalidate(self, family: str) -> None:
        self.families.append(family)


@pytest.fixture
def edge(api: EdgeSignedClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingEdgeCache]:
    """The container rewired to the recording edge cache: everything built on the old one is rebuilt."""
    recording = RecordingEdgeCache()
    current = container()
    monkeypatch.setitem(current.__dict__, "edge_cache", recording)
    for built in ("event_invalidation", "events", "uploads", "event_processor"):
        monkeypatch.delitem(current.__dict__, built, raising=False)
    yield recording


def versions(wiring: Container, event_id: str) -> tuple[int, int]:
    return wiring.cache.version(CACHE_SERVICE, LIST_FAMILY), wiring.cache.version(CACHE_SERVICE, event_family(event_id))


def assert_both_bumped(before: tuple[int, int], after: tuple[int, int], edge: RecordingEdgeCache) -> None:
    assert after[0] > before[0] and after[1] > before[1]
    assert edge.families == ["events"]


@pytest.fixture
def event(api: EdgeSignedClient, users: dict[str, Identity]) -> dict[str, Any]:
    return create_event(api, users["user"], status="published")


def test_an_event_update_invalidates_both_caches(
    api: EdgeSignedClient, users: dict[str, Identity], event: dict[str, Any], edge: RecordingEdgeCache
) -> None:
    before = versions(container(), event["id"])
    response = api.request("PATCH", f"/events/{event['id']}", identity=users["user"], json_body={"title": "New"})
    assert response.status == 200, response.body
    assert_both_bumped(before, versions(container(), event["id"]), edge)


def test_a_processing_step_invalidates_both_caches(event: dict[str, Any], edge: RecordingEdgeCache) -> None:
    before = versions(container(), event["id"])
    message = {"topic": "event.updated", "dedup_key": f"inv-{uuid.uuid4()}", "payload": {"event_id": event["id"]}}
    container().event_processor.handle(delivered(json.dumps(message)))
    assert_both_bumped(before, versions(container(), event["id"]), edge)


def test_an_image_change_invalidates_both_caches(event: dict[str, Any], edge: RecordingEdgeCache) -> None:
    store = MemoryStore()
    service = UploadService(container().db, store, container().event_invalidation)
    data = camera_jpeg((320, 240))
    key = upload_key(event["id"], str(uuid.uuid4()))
    store.upload(key, data)
    before = versions(container(), event["id"])
    outcome = service.handle(UploadedObject("agistack-media", key, len(data), "x"), attempt=1, final_attempt=False)
    assert outcome is Outcome.READY
    after = versions(container(), event["id"])
    # The entry changes twice (claimed as processing, then ready): each change invalidates.
    assert after[0] >= before[0] + 2 and after[1] >= before[1] + 2
    assert edge.families == ["events", "events"]
