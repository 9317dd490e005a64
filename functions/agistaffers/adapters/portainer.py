"""Portainer's HTTP API (``X-API-Key``): compose stacks on a standalone Docker environment.

Endpoints: ``GET /api/stacks?filters={"EndpointID":n}``, ``GET /api/stacks/{id}``,
``GET /api/stacks/{id}/file`` (``StackFileContent``), ``POST /api/stacks/create/standalone/string
?endpointId=n`` (``name``, ``stackFileContent``, ``env``), ``POST /api/stacks/{id}/start|stop
?endpointId=n``, ``DELETE /api/stacks/{id}?endpointId=n``. Errors are ``{"message", "details"}``.

Portainer has no idempotency keys, so the stack's name is the natural key: it is looked up before it
is created (a create that timed out may have happened), a 409 name clash is resolved by adopting the
existing stack, and a stack is adopted, started, stopped or deleted only when its compose file carries
our owner label for this site. A 200 to a create is verified by reading the stack back (an answer
that did not actually create is retried).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from functions.agistaffers.adapters.http_json import Answer, call
from functions.agistaffers.services.saga import Permanent, Transient

ACTIVE = 1  # Portainer's stack Status: 1 active, 2 inactive


class PortainerStacks:
    def __init__(self, *, url: str | None, api_key: str | None, endpoint_id: int, timeout_seconds: float) -> None:
        self._url = (url or "").rstrip("/")
        self._api_key = api_key
        self._endpoint = endpoint_id
        self._timeout = timeout_seconds

    def _call(self, method: str, path: str, body: Any = None) -> Answer:
        if not (self._url and self._api_key):
            raise Transient("Portainer is not configured (PORTAINER_URL, PORTAINER_API_KEY)")
        answer = call(
            method,
            self._url + path,
            headers={"X-API-Key": self._api_key, "Accept": "application/json"},
            body=body,
            timeout=self._timeout,
            what=f"Portainer {method} {path.split('?', maxsplit=1)[0]}",
        )
        if answer.status in (401, 403):
            # Our key or its rights: an operator fixes it, then the paused run is retried.
            raise Transient(f"Portainer refused the API key (HTTP {answer.status})")
        return answer

    def _find(self, name: str) -> dict[str, Any] | None:
        filters = quote(json.dumps({"EndpointID": self._endpoint}, separators=(",", ":")))
        answer = self._call("GET", f"/api/stacks?filters={filters}")
        if answer.status != 200 or not isinstance(answer.body, list):
            raise Transient(f"Portainer listed stacks with HTTP {answer.status}")
        found = [stack for stack in answer.body if isinstance(stack, dict) and stack.get("Name") == name]
        return found[0] if found else None

    def _owned(self, stack: dict[str, Any], owner: str) -> bool:
        answer = self._call("GET", f"/api/stacks/{int(stack['Id'])}/file")
        if answer.status == 404:
            raise Transient("the stack disappeared while it was read")
        content = str((answer.body or {}).get("StackFileContent", ""))
        return f'io.agistack.owner: "{owner}"' in content

    def ensure_stack(self, name: str, compose: str, owner: str) -> str:
        for _ in range(2):
            existing = self._find(name)
            if existing is not None:
                if not self._owned(existing, owner):
                    raise Permanent(f"a container called {name} exists and is not this site's")
                if existing.get("Status") != ACTIVE:
                    self._start_stop(existing, "start")
                return str(existing["Id"])
            answer = self._call(
                "POST",
                f"/api/stacks/create/standalone/string?endpointId={self._endpoint}",
                {"name": name, "stackFileContent": compose, "env": []},
            )
            if answer.status == 409:
                continue  # created meanwhile (by an attempt that timed out): look it up and adopt it
            if answer.status != 200 or not isinstance(answer.body, dict) or "Id" not in answer.body:
                message = (answer.body or {}).get("message") if isinstance(answer.body, dict) else None
                raise Permanent(f"the container host refused the site's container: {message or answer.status}")
            stack_id = int(answer.body["Id"])
            if self._call("GET", f"/api/stacks/{stack_id}").status != 200:
                raise Transient("Portainer acknowledged the stack but it does not exist")
            return str(stack_id)
        raise Transient(f"the stack {name} clashed on create but could not be found")

    def remove_stack(self, name: str, owner: str) -> None:
        existing = self._find(name)
        if existing is None or not self._owned(existing, owner):
            return
        answer = self._call("DELETE", f"/api/stacks/{int(existing['Id'])}?endpointId={self._endpoint}")
        if answer.status not in (200, 204, 404):
            raise Transient(f"Portainer refused to delete the stack: HTTP {answer.status}")

    def set_running(self, name: str, owner: str, running: bool) -> None:
        existing = self._find(name)
        if existing is None or not self._owned(existing, owner):
            return
        if (existing.get("Status") == ACTIVE) != running:
            self._start_stop(existing, "start" if running else "stop")

    def _start_stop(self, stack: dict[str, Any], action: str) -> None:
        answer = self._call("POST", f"/api/stacks/{int(stack['Id'])}/{action}?endpointId={self._endpoint}")
        message = str((answer.body or {}).get("message", "")) if isinstance(answer.body, dict) else ""
        # "Stack is already active/inactive": what we wanted.
        if answer.status != 200 and not (answer.status == 400 and "already" in message.lower()):
            raise Transient(f"Portainer could not {action} the stack: HTTP {answer.status} {message}")
