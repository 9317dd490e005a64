"""HTTP messages as the core sees them: plain data, independent of the runtime that carries them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from shared.errors import PayloadTooLarge

# RFC 9110 token characters: anything else in a field name is refused.
_FIELD_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Names already checked, lower-cased: the same few dozen recur on every request, and each regex match
# costs noticeably under Pyodide. Bounded, since clients choose names.
_CHECKED_NAMES: dict[str, str] = {}
_MAX_CHECKED_NAMES = 512


class Headers:
    """Ordered, case-insensitive, multi-valued header fields. Names are kept in lower case."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        pairs = items.items() if isinstance(items, Mapping) else items
        for name, value in pairs:
            self.add(name, value)

    @staticmethod
    def _checked(name: str, value: str) -> tuple[str, str]:
        lowered = _CHECKED_NAMES.get(name)
        if lowered is None:
            if not _FIELD_NAME.match(name):
                raise ValueError(f"invalid header name {name!r}")
            lowered = name.lower()
            if len(_CHECKED_NAMES) < _MAX_CHECKED_NAMES:
                _CHECKED_NAMES[name] = lowered
        # CR, LF and NUL in a value would let a client split or smuggle header fields.
        if "\r" in value or "\n" in value or "\x00" in value:
            raise ValueError(f"invalid characters in the value of header {name!r}")
        return lowered, value.strip(" \t")

    def add(self, name: str, value: str) -> None:
        self._items.append(self._checked(name, value))

    def set(self, name: str, value: str) -> None:
        checked = self._checked(name, value)
        self.remove(name)
        self._items.append(checked)

    def remove(self, name: str) -> None:
        lowered = name.lower()
        self._items = [(key, value) for key, value in self._items if key != lowered]

    def get(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self._items:
            if key == lowered:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self._items if key == lowered]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def copy(self) -> Headers:
        clone = Headers()
        clone._items = list(self._items)
        return clone

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class BodySource(Protocol):
    """A request body that is read only when the core decides to, and never past a limit."""

    async def read(self, limit: int) -> bytes:
        """The whole body; raises ``PayloadTooLarge`` as soon as more than ``limit`` bytes arrive."""
        ...


class BytesBody:
    """A body already in memory (tests, and runtimes that hand over the body as bytes)."""

    def __init__(self, data: bytes = b"") -> None:
        self._data = data

    async def read(self, limit: int) -> bytes:
        if len(self._data) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        return self._data


# Plain classes with their methods written out: generating them at import (exec) costs about 1 ms
# of isolate start-up per class under Pyodide.
class EdgeRequest:
    """An incoming request. ``target`` is the origin-form request target: raw path and optional query."""

    __slots__ = ("body", "client_ip", "headers", "method", "target")

    def __init__(
        self,
        method: str,
        target: str,
        headers: Headers | None = None,
        body: BodySource | None = None,
        client_ip: str = "",
    ) -> None:
        self.method = method
        self.target = target
        self.headers = Headers() if headers is None else headers
        self.body: BodySource = BytesBody() if body is None else body
        self.client_ip = client_ip

    def __repr__(self) -> str:
        return (
            f"EdgeRequest(method={self.method!r}, target={self.target!r}, headers={self.headers!r}, "
            f"client_ip={self.client_ip!r})"
        )

    @property
    def raw_path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def raw_query(self) -> str:
        return self.target.partition("?")[2]


class EdgeResponse:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Headers | None = None, body: bytes = b"") -> None:
        self.status = status
        self.headers = Headers() if headers is None else headers
        self.body = body

    def __repr__(self) -> str:
        return f"EdgeResponse(status={self.status!r}, headers={self.headers!r}, body={self.body!r})"

    @classmethod
    def json(cls, status: int, payload: Any, headers: Headers | None = None) -> EdgeResponse:
        response_headers = headers.copy() if headers is not None else Headers()
        response_headers.set("content-type", "application/json")
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        return cls(status=status, headers=response_headers, body=body)


class OutboundRequest:
    """A request the gateway sends to an origin. ``timeout`` is in seconds."""

    __slots__ = ("body", "headers", "method", "timeout", "url")

    def __init__(self, method: str, url: str, headers: Headers, body: bytes, timeout: float) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
