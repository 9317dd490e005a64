"""What a request handler works with: the worker's dependencies and the state of the request in flight."""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from shared.edge.cache import ResponseCache
from shared.edge.config import ConfigurationError, GatewayConfig
from shared.edge.flags import FlagSource
from shared.edge.http import EdgeRequest
from shared.edge.observability import Trace
from shared.edge.ports import (
    Clock,
    KvNamespaces,
    LogSink,
    MissingBinding,
    OriginClient,
    PrintLog,
    RandomSource,
    SystemClock,
    SystemRandom,
)
from shared.edge.ratelimit import Decision, RateLimiter
from shared.edge.routes import Route, RouteTable
from shared.edge.sessions import Session, SessionStore
from shared.edge.turnstile import Siteverify
from shared.envelope import Identity


@dataclass(frozen=True)
class GatewayDeps:
    """Everything ``handle`` needs, chosen once per isolate by the runtime's composition root."""

    config: GatewayConfig
    kv: KvNamespaces
    origin: OriginClient
    limiter: RateLimiter
    siteverify: Siteverify
    routes: RouteTable
    worker: str = "gateway"
    clock: Clock = field(default_factory=SystemClock)
    random: RandomSource = field(default_factory=SystemRandom)
    log: LogSink = field(default_factory=PrintLog)

    def __post_init__(self) -> None:
        unknown = self.routes.origins() - set(self.config.origins)
        if unknown:
            raise ConfigurationError(f"routes refer to unconfigured origins: {', '.join(sorted(unknown))}")

    @cached_property
    def sessions(self) -> SessionStore:
        return SessionStore(
            self.kv.SESSION_KV, clock=self.clock, random=self.random, ttl_seconds=self.config.session_ttl_seconds
        )

    @cached_property
    def cache(self) -> ResponseCache:
        return ResponseCache(self.kv.API_CACHE_KV, self.clock, self.random)

    @cached_property
    def flags(self) -> FlagSource:
        # The in-isolate cache lives as long as these deps: one per isolate.
        try:
            store = self.kv.FLAGS_KV
        except MissingBinding:
            return FlagSource(None, self.clock, self.config.flags_cache_seconds)
        return FlagSource(store, self.clock, self.config.flags_cache_seconds)


@dataclass
class Exchange:
    """What is known about the request in flight, for the handlers, the response and the log line."""

    request: EdgeRequest
    request_id: str
    trace: Trace
    path: str = ""
    route: Route | None = None
    identity: Identity | None = None
    session: Session | None = None
    credential_error: str | None = None
    clear_cookie: bool = False
    renew_cookie: str | None = None
    rate: Decision | None = None
    cache: str | None = None  # HIT, MISS or BYPASS
    turnstile: str | None = None
    error: str | None = None
    deferred: list[Coroutine[Any, Any, None]] = field(default_factory=list)

    def defer(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` after the response is ready (KV writes the client need not wait for)."""
        self.deferred.append(work)
