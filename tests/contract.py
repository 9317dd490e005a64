"""Contract fuzzing: schemathesis against a product API served over real HTTP, signed like the edge.

Each API's own document (``GET /openapi.json``) drives the run: for every operation and every role,
schemathesis generates valid and invalid requests (a small, fixed budget, derandomised), the edge's
envelope is added (``EdgeSigner``), and each answer is checked: never a 5xx, a documented status, the
documented content type and a body that matches the documented schema. Path ids are sometimes
replaced with ids of rows that exist, so handlers are reached beyond their 404.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import requests
import schemathesis
from chalice.app import Chalice
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.local_api import local_server
from shared import envelope
from shared.envelope import Identity
from tests.conftest import SIGNING_SECRET

CHECKS: list[CheckFunction] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Valid requests per operation and role its rule admits (and invalid ones, as one such role): small
# enough for the whole run of both APIs to stay around a minute on two cores; derandomised, so a
# finding reproduces. A role the rule refuses gets a few requests: its answer never depends on input.
MAX_EXAMPLES = 6
REFUSED_EXAMPLES = 2


@contextmanager
def served(app: Chalice) -> Iterator[str]:
    """``app`` on the dev stack's API server (what ``agistack dev`` runs), on a free port."""
    server = local_server(app, "127.0.0.1", 0)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


class EdgeSigner(requests.auth.AuthBase):
    """Adds the envelope the edge adds, over the request exactly as it is sent. ``generation`` reads
    the account's current session generation: like a user who logs in again after a "log out
    everywhere" the run produced, the next request carries a valid session."""

    def __init__(self, secret: str, identity: Identity | None, generation: Callable[[str], int]) -> None:
        self._secret = secret
        self._identity = identity
        self._generation = generation

    def admitted(self, access: Mapping[str, Any]) -> bool:
        """Whether an operation's access rule (its ``x-access``) lets this caller in."""
        roles = access.get("roles", ())
        return "anyone" in roles or (self._identity is not None and self._identity.role in roles)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        identity = self._identity
        if identity is not None:
            identity = identity._replace(generation=self._generation(identity.user_id))
        body = request.body or b""
        payload = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        assert request.method is not None
        request.headers.update(
            envelope.sign(
                self._secret,
                method=request.method,
                path=request.path_url,
                now=int(time.time()),
                identity=identity,
                body=payload,
            )
        )
        return request


def signers(roles: Mapping[str, Identity | None], conn: psycopg.Connection[Any]) -> dict[str, EdgeSigner]:
    """One signer per role; sessions follow the accounts' generations in the product's database."""

    def generation(user_id: str) -> int:
        row = conn.execute(
            "SELECT COALESCE((SELECT generation FROM session_generations WHERE user_id = %s), 0)", (user_id,)
        ).fetchone()
        return int(row[0]) if row else 0

    return {role: EdgeSigner(SIGNING_SECRET, identity, generation) for role, identity in roles.items()}


@dataclass
class FuzzReport:
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def assert_kept(self) -> None:
        """No finding, and not vacuously: the run reached the handlers and had answers to check."""
        print(f"contract fuzz: {self.requests} requests, statuses {dict(sorted(self.statuses.items()))}")
        assert not self.failures, "\n".join(self.failures)
        assert sum(count for status, count in self.statuses.items() if 200 <= status < 300) >= 20
        assert self.requests >= 200


def fuzz(
    document: dict[str, Any],
    base_url: str,
    signers: Mapping[str, EdgeSigner],
    *,
    known_ids: Mapping[str, list[str]],
    max_examples: int = MAX_EXAMPLES,
) -> FuzzReport:
    """Every operation of ``document`` as every role in ``signers``; invalid requests as the last
    role its rule admits (the most privileged, when ``signers`` are ordered so)."""
    schema = schemathesis.openapi.from_dict(document)
    report = FuzzReport()
    for result in schema.get_all_operations():
        if isinstance(result, Err):
            report.failures.append(f"the document describes an operation schemathesis cannot read: {result.err()}")
            continue
        operation = result.ok()
        access = operation.definition.raw["x-access"]
        admitted = [role for role, signer in signers.items() if signer.admitted(access)]
        for role, signer in signers.items():
            session = requests.Session()
            session.auth = signer
            examples = max_examples if role in admitted else REFUSED_EXAMPLES
            _run(operation, GenerationMode.POSITIVE, session, base_url, role, known_ids, examples, report)
            if admitted and role == admitted[-1] and _negatable(operation.definition.raw):
                _run(operation, GenerationMode.NEGATIVE, session, base_url, role, known_ids, examples, report)
    return report


def _negatable(definition: Mapping[str, Any]) -> bool:
    """Whether there is something to make invalid: a body, a query or a header (a path segment of any
    text is a valid one)."""
    return "requestBody" in definition or any(
        parameter.get("in") != "path" for parameter in definition.get("parameters", ())
    )


def _run(
    operation: Any,
    mode: GenerationMode,
    session: requests.Session,
    base_url: str,
    role: str,
    known_ids: Mapping[str, list[str]],
    max_examples: int,
    report: FuzzReport,
) -> None:
    names = [parameter.name for parameter in operation.path_parameters]
    # For each path id: the generated value, or one of the rows that exist.
    swaps = st.fixed_dictionaries(
        {name: st.one_of(st.none(), st.sampled_from(known_ids[name])) for name in names if known_ids.get(name)}
    )

    @settings(
        max_examples=max_examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), swap=swaps)
    def one(case: Any, swap: dict[str, str | None]) -> None:
        if case.path_parameters is not None:
            case.path_parameters.update({name: value for name, value in swap.items() if value is not None})
        response = case.call(base_url=base_url, session=session, timeout=30)
        report.requests += 1
        report.statuses[response.status_code] = report.statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as failure:  # one finding must not hide the others: all are reported at the end
            found = "; ".join(str(getattr(each, "title", each)) for each in failure.exceptions)
            report.failures.append(
                f"{operation.label} as {role} ({mode.value}): {case.method} {response.request.path_url} "
                f"-> {response.status_code} {response.text[:300]!r}: {found}"
            )

    try:
        one()
    except Unsatisfiable:
        report.failures.append(f"{operation.label} as {role} ({mode.value}): no request can be generated")
