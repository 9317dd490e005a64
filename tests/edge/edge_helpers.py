"""Small helpers the edge tests share."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class FakeClock:
    """A clock that moves only when a test moves it."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.current = now

    def now(self) -> float:
        return self.current

    def monotonic(self) -> float:
        return self.current
