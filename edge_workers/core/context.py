"""What a request handler works with: the worker's dependencies and the state of the request in flight."""

from __future__ import annotations

from collections.abc import Coroutine
from functools import cached_property
from typing import Any

from edge_workers.core.cache import ResponseCache
from edge_workers.core.config import ConfigurationError, GatewayConfig
from edge_workers.core.flags import FlagSource
from edge_workers.core.http import EdgeRequest
from edge_workers.core.observability import Trace
from edge_workers.core.ports import (
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
from edge_workers.core.ratelimit import Decision, RateLimiter
from edge_workers.core.routes import Route, RouteTable
from edge_workers.core.sessions import Session, SessionStore
from edge_workers.core.turnstile import Siteverify
from shared.envelope import Identity


# Plain classes with their methods written out: generating them at import (exec) costs about 1 ms
# of isolate start-up per class under Pyodide. GatewayDeps keeps a __dict__ for its cached properties.
class GatewayDeps:
    """Everything ``handle`` needs, chosen once per isolate by the runtime's composition root."""

    def __init__(
        self,
        *,
        config: GatewayConfig,
        kv: KvNamespaces,
        origin: OriginClient,
        limiter: RateLimiter,
        siteverify: Siteverify,
        routes: RouteTable,
        worker: str = "gateway",
        clock: Clock | None = None,
        random: RandomSource | None = None,
        log: LogSink | None = None,
    ) -> None:
        unknown = routes.origins() - set(config.origins)
        if unknown:
            raise ConfigurationError(f"routes refer to unconfigured origins: {', '.join(sorted(unknown))}")
        self.config = config
        self.kv = kv
        self.origin = origin
        self.limiter = limiter
        self.siteverify = siteverify
        self.routes = routes
        self.worker = worker
        self.clock: Clock = SystemClock() if clock is None else clock
        self.random: RandomSource = SystemRandom() if random is None else random
        self.log: LogSink = PrintLog() if log is None else log

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


class Exchange:
    """What is known about the request in flight, for the handlers, the response and the log line."""

    __slots__ = (
        "cache",
        "clear_cookie",
        "credential_error",
        "deferred",
        "error",
        "identity",
        "path",
        "rate",
        "renew_cookie",
        "request",
        "request_id",
        "route",
        "session",
        "trace",
        "turnstile",
    )

    def __init__(
        self,
        request: EdgeRequest,
        request_id: str,
        trace: Trace,
        *,
        path: str = "",
        route: Route | None = None,
        identity: Identity | None = None,
        session: Session | None = None,
        credential_error: str | None = None,
        clear_cookie: bool = False,
        renew_cookie: str | None = None,
        rate: Decision | None = None,
        cache: str | None = None,
        turnstile: str | None = None,
        error: str | None = None,
        deferred: list[Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        self.request = request
        self.request_id = request_id
        self.trace = trace
        self.path = path
        self.route = route
        self.identity = identity
        self.session = session
        self.credential_error = credential_error
        self.clear_cookie = clear_cookie
        self.renew_cookie = renew_cookie
        self.rate = rate
        self.cache = cache  # HIT, MISS or BYPASS
        self.turnstile = turnstile
        self.error = error
        self.deferred: list[Coroutine[Any, Any, None]] = [] if deferred is None else deferred

    def defer(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` after the response is ready (KV writes the client need not wait for)."""
        self.deferred.append(work)
