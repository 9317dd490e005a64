"""SteppersLife's domain events: the topics its use cases announce through the platform's outbox."""

from __future__ import annotations

from functions.platform.outbox import Outbox

TOPICS = ("event.published", "event.updated", "event.cancelled", "registration.promoted")

outbox = Outbox(TOPICS)
