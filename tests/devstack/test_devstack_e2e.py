"""End to end: the real `agistack dev` on free ports and embedded services, driven only from outside.

Proves the README's promise: the platform comes up with no DATABASE_URL/REDIS_URL/AWS_ENDPOINT_URL,
the smoke journey passes through the edge, S3 → SQS → handler is wired, a processed picture is
served at /img through the edge from a private bucket, schedules can be fired, a busy port is a
one-line error, Ctrl-C stops everything, and the stack starts again at once on the same ports with
its data.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from PIL import Image

from devstack.services import free_port
from devstack.smoke import EdgeClient
from tests.stepperslife.images_fixtures import camera_jpeg

pytestmark = pytest.mark.e2e

STACK_VARIABLES = ("DATABASE_URL", "REDIS_URL", "AWS_ENDPOINT_URL", "EDGE_SIGNING_SECRET")


def stack_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STACK_VARIABLES}
    env["LOG_LEVEL"] = "WARNING"
    return env


def agistack(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack.cli", *args],
        env={**stack_env(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class RunningStack:
    def __init__(self, data_dir: Path, ports: tuple[int, int, int] | None = None) -> None:
        self.data_dir = data_dir
        self.edge_port, self.api_port, self.agi_port = ports or (free_port(), free_port(), free_port())
        self.metrics_port = free_port()
        self.edge_url = f"http://127.0.0.1:{self.edge_port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devstack.cli", "dev", "--data-dir", str(data_dir),
             "--edge-port", str(self.edge_port), "--api-port", str(self.api_port), "--agi-port", str(self.agi_port),
             "--metrics-port", str(self.metrics_port)],
            env=stack_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"agistack dev exited: {self.process.stdout.read() if self.process.stdout else ''}"
                )
            try:
                with urllib.request.urlopen(f"{self.edge_url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise AssertionError("agistack dev did not become healthy in 90 s")

    @property
    def state(self) -> dict[str, str]:
        state: dict[str, str] = json.loads((self.data_dir / "stack.json").read_text())
        return state

    def stop(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        output, _ = self.process.communicate(timeout=60)
        return self.process.returncode, output


@pytest.fixture(scope="module")
def data_dir() -> Iterator[Path]:
    """Outside pytest's basetemp, which another pytest run on the machine may rotate away (and its
    clean-up make unreadable) while the stack's PostgreSQL still runs in it."""
    path = Path(tempfile.mkdtemp(prefix="agistack-e2e-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def stack(data_dir: Path) -> Iterator[RunningStack]:
    running = RunningStack(data_dir)
    yield running
    if running.process.poll() is None:
        running.stop()


def test_smoke_journey_through_the_edge(stack: RunningStack) -> None:
    # As an operator runs it: `agistack smoke` next to the stack's data dir adds the provisioning steps.
    smoke = agistack("smoke", "--base-url", stack.edge_url, "--data-dir", str(stack.data_dir), timeout=400)
    lines = [line for line in smoke.stdout.splitlines() if line.startswith(("ok", "FAIL"))]
    # SteppersLife's twelve steps, then AGI Staffers' seventeen (metrics, rollup, status page; activation,
    # onboarding, the welcome mail; the uptime check, an alert firing and resolving, the fake site
    # flipped down and up).
    assert smoke.returncode == 0 and len(lines) == 29, smoke.stdout + smoke.stderr
    assert all(line.startswith("ok") for line in lines), lines
    assert sum(" agi: " in line for line in lines) == 17
    assert "reserve → stack → dns → https → activate → welcome" in smoke.stdout
    assert "is down (HTTP 503)', on the status page, the owner mailed" in smoke.stdout
    health = json.loads(urllib.request.urlopen(f"{stack.edge_url}/healthz", timeout=5).read())
    assert health["status"] == "ok"
    api_health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{stack.api_port}/healthz", timeout=5).read())
    assert api_health == {"status": "ok", "checks": {"postgres": "up", "redis": "up"}}
    agi_health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{stack.agi_port}/healthz", timeout=5).read())
    assert agi_health == {"status": "ok", "checks": {"postgres": "up", "redis": "up"}}


def test_api_port_refuses_unsigned_requests(stack: RunningStack) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{stack.api_port}/events", timeout=5)
    assert refused.value.code == 401
    assert json.loads(refused.value.read())["error"]["code"] == "unsigned_request"


def test_s3_upload_reaches_the_queue_handler(stack: RunningStack) -> None:
    edge = EdgeClient(stack.edge_url)
    edge.call(
        "POST", "/api/users", {"email": "uploader@example.com", "name": "Up", "password": "correct horse 12"}, 201
    )
    edge.call("POST", "/api/auth/login", {"email": "uploader@example.com", "password": "correct horse 12"})
    event = edge.call(
        "POST", "/api/events",
        {"title": "Upload target", "event_date": "2031-01-01T20:00:00+00:00", "capacity": 5}, 201,
    )["event"]  # fmt: skip
    upload_id = str(uuid.uuid4())
    s3 = boto3.client("s3", endpoint_url=stack.state["aws"], region_name="us-east-1",
                      aws_access_key_id="local", aws_secret_access_key="local")  # fmt: skip
    s3.put_object(Bucket="agistack-media", Key=f"uploads/{event['id']}/{upload_id}", Body=b"not an image at all")
    deadline = time.monotonic() + 30
    images: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        images = edge.call("GET", f"/api/events/{event['id']}")["event"]["images"]
        if images:
            break
        time.sleep(0.3)
    assert [image["id"] for image in images] == [upload_id]


def test_a_processed_picture_is_served_at_img_through_the_edge(stack: RunningStack) -> None:
    """A real JPEG through the presigned upload, the S3 → SQS → handler pipeline and the media CDN's
    credentialed read of the private bucket, fetched as /img from the edge and decoded."""
    edge = EdgeClient(stack.edge_url)
    edge.call(
        "POST", "/api/users", {"email": "pictures@example.com", "name": "Pix", "password": "correct horse 12"}, 201
    )
    edge.call("POST", "/api/auth/login", {"email": "pictures@example.com", "password": "correct horse 12"})
    event = edge.call(
        "POST", "/api/events",
        {"title": "Pictures", "event_date": "2031-02-01T20:00:00+00:00", "capacity": 5}, 201,
    )["event"]  # fmt: skip
    form = edge.call("POST", f"/api/events/{event['id']}/images", {"content_type": "image/jpeg"}, 201)
    post = form["upload"]
    sent = requests.post(
        post["url"],
        data=post["fields"],
        files={"file": ("photo.jpg", camera_jpeg((700, 480)), "image/jpeg")},
        timeout=10,
    )
    assert sent.status_code in (200, 201, 204), sent.text
    image_id = form["image_id"]
    deadline = time.monotonic() + 60
    image: dict[str, Any] = {}
    while time.monotonic() < deadline and image.get("status") != "ready":
        images = edge.call("GET", f"/api/events/{event['id']}")["event"]["images"]
        image = next((found for found in images if found["id"] == image_id), {})
        time.sleep(0.3)
    assert image.get("status") == "ready", image
    [webp] = [v for v in image["variants"] if v["url_width"] == 320 and v["format"] == "webp"]

    with urllib.request.urlopen(
        urllib.request.Request(
            f"{stack.edge_url}/img/{event['id']}/{image_id}/320", headers={"Accept": "image/webp,*/*"}
        ),
        timeout=10,
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "image/webp"
        assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        picture = Image.open(io.BytesIO(response.read()))
        picture.load()
    assert picture.format == "WEBP"
    assert picture.size == (webp["width"], webp["height"]) and picture.width == 320

    # The bucket stays private: only the CDN's credentialed reads of public/ get through.
    cdn, aws = stack.state["media"], stack.state["aws"]
    assert requests.get(f"{aws}/agistack-media/{webp['key']}", timeout=10).status_code == 403
    assert requests.get(f"{cdn}/{webp['key']}", timeout=10).status_code == 200
    for private in (f"originals/{event['id']}/{image_id}", f"public/../originals/{event['id']}/{image_id}"):
        refused = requests.get(f"{cdn}/{private}", timeout=10)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "access_denied"
    assert requests.get(f"{cdn}/public/{event['id']}/{image_id}/9999.webp", timeout=10).status_code == 404
    missing = urllib.request.Request(f"{stack.edge_url}/img/{event['id']}/{uuid.uuid4()}/320")
    with pytest.raises(urllib.error.HTTPError) as not_there:
        urllib.request.urlopen(missing, timeout=10)
    assert not_there.value.code == 404


def test_staff_created_by_the_operator_run_the_back_office_through_the_edge(stack: RunningStack) -> None:
    email, password = f"ops-{uuid.uuid4().hex[:8]}@agistaffers.example", "a long staff passphrase"
    created = agistack("agi", "staff", email, "--data-dir", str(stack.data_dir), AGISTACK_PASSWORD=password)
    assert created.returncode == 0, created.stderr
    again = agistack("agi", "staff", email, "--data-dir", str(stack.data_dir), AGISTACK_PASSWORD=password)
    assert again.returncode == 0, again.stderr  # idempotent by e-mail
    customer = EdgeClient(stack.edge_url)
    customer.call(
        "POST", "/api/agi/signup", {"company_name": "Delta", "email": f"d-{email}", "password": password}, 201
    )
    staff = EdgeClient(stack.edge_url)
    staff.call("POST", "/api/agi/auth/login", {"email": email, "password": password})
    listed = staff.call("GET", "/api/agi/customers?q=Delta")["items"]
    assert [item["company_name"] for item in listed] == ["Delta"]
    customer_id = listed[0]["id"]
    staff.call("POST", f"/api/agi/customers/{customer_id}/activate")
    suspended = staff.call("POST", f"/api/agi/customers/{customer_id}/suspend", {"reason": "unpaid"})
    assert suspended["customer"]["status"] == "suspended"
    # A customer's login cannot reach the staff back office.
    customer.call("POST", "/api/agi/auth/login", {"email": f"d-{email}", "password": password})
    customer.call("GET", "/api/agi/customers", expect=403)


def test_handlers_can_be_fired_once(stack: RunningStack) -> None:
    scheduled = agistack("run", "reconcile_seat_counters", "--data-dir", str(stack.data_dir))
    assert scheduled.returncode == 0, scheduled.stderr
    assert "repaired" in scheduled.stdout
    queued = agistack("run", "image_uploaded", "--data-dir", str(stack.data_dir))
    assert queued.returncode == 0, queued.stderr
    assert "message(s) from agistack-image-uploads" in queued.stdout
    unknown = agistack("run", "no_such_handler", "--data-dir", str(stack.data_dir))
    assert unknown.returncode == 2 and "known:" in unknown.stderr


def test_backups_and_the_drill_run_on_the_embedded_server_with_its_own_tools(stack: RunningStack) -> None:
    """PostgreSQL 18 (embedded) with its own pg_dump/pg_restore; amcheck exists there too."""
    data_dir = ("--data-dir", str(stack.data_dir))
    created = agistack("backup", "create", "--kind", "incremental", *data_dir, timeout=120)
    assert created.returncode == 0, created.stderr
    assert "stepperslife: incremental/stepperslife/" in created.stdout
    assert "agistaffers: incremental/agistaffers/" in created.stdout
    fired = agistack("run", "backup_drill", *data_dir, timeout=180)  # the schedule's own handler
    assert fired.returncode == 0, fired.stderr
    assert "'succeeded': True" in fired.stdout and "'succeeded': False" not in fired.stdout
    drilled = agistack("backup", "drill", "--database", "agistaffers", *data_dir, timeout=180)
    assert drilled.returncode == 0, drilled.stderr
    assert "restored and verified" in drilled.stdout and "RTO" in drilled.stdout


def test_busy_port_is_a_one_line_error(stack: RunningStack, tmp_path: Path) -> None:
    second = agistack("dev", "--data-dir", str(tmp_path / "other"), "--edge-port", str(stack.edge_port),
                      "--api-port", str(free_port()))  # fmt: skip
    assert second.returncode == 1
    assert "Traceback" not in second.stderr
    errors = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and f"port {stack.edge_port}" in errors[0] and "already in use" in errors[0]


def test_ctrl_c_stops_everything_and_data_survives_a_restart(stack: RunningStack, data_dir: Path) -> None:
    edge = EdgeClient(stack.edge_url)
    edge.call(
        "POST", "/api/users", {"email": "keeper@example.com", "name": "Keeper", "password": "correct horse 12"}, 201
    )
    code, output = stack.stop()
    assert code == 0, output
    assert "Traceback" not in output
    assert not (data_dir / "stack.json").exists()
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "embedded PostgreSQL was left running"

    # At once, on the same ports: the last run's connections in TIME_WAIT do not block them.
    again = RunningStack(data_dir, (stack.edge_port, stack.api_port, stack.agi_port))
    try:
        login = EdgeClient(again.edge_url)
        user = login.call("POST", "/api/auth/login", {"email": "keeper@example.com", "password": "correct horse 12"})
        assert user["user"]["email"] == "keeper@example.com"
    finally:
        assert again.stop()[0] == 0
