"""The functions' real log output in a test: the JSON lines the Powertools handler on ``agistack``
writes (functions/platform/telemetry.py), caught by pointing its stream at a buffer for a while."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def json_log_lines() -> Iterator[list[dict[str, Any]]]:
    """The lines logged inside the block, parsed, in the list yielded (filled when the block ends)."""
    # Exactly Powertools' StreamHandler: pytest adds handlers of its own (subclasses) next to it.
    handlers = [handler for handler in logging.getLogger("agistack").handlers if type(handler) is logging.StreamHandler]
    assert handlers, "configure_logging has not run"
    stream = io.StringIO()
    previous = [handler.setStream(stream) for handler in handlers]
    lines: list[dict[str, Any]] = []
    try:
        yield lines
    finally:
        for handler, old in zip(handlers, previous, strict=True):
            if old is not None:
                handler.setStream(old)
        lines.extend(json.loads(line) for line in stream.getvalue().splitlines() if line.strip())
