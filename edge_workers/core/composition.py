"""What each worker is made of, for both composition roots (Workers and local CPython).

The gateway and the push router run the same pipeline with their own route table, KV namespaces
and required settings. The adapters supply the runtime's KV stores, rate-limiting bindings, Durable
Object namespace and outbound fetch; ``build`` checks that everything the worker's routes and chosen
rate-limit backend need is there, so a misconfigured deployment fails at its first request with a
message naming what is missing, not later on some code path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from edge_workers.core.config import ConfigurationError, GatewayConfig
from edge_workers.core.context import GatewayDeps
from edge_workers.core.ports import (
    Clock,
    KeyValueStore,
    KvNamespaces,
    LimiterObjects,
    LogSink,
    OriginClient,
    PrintLog,
    RandomSource,
    RateLimitBinding,
    SystemClock,
    SystemRandom,
)
from edge_workers.core.ratelimit import BindingLimiter, DurableObjectLimiter, KvFixedWindowLimiter, RateLimiter
from edge_workers.core.routes import GATEWAY_ROUTES, PUSH_ROUTES, Quota, Route, RouteTable
from edge_workers.core.turnstile import Siteverify

LIMITER_OBJECTS_BINDING = "RATE_LIMITER"
LIMITER_OBJECT_CLASS = "RateLimiterObject"


class WorkerSpec(NamedTuple):
    name: str
    routes: tuple[Route, ...]
    kv: tuple[str, ...]  # required; FLAGS_KV is optional everywhere (no document means the defaults)
    settings: tuple[str, ...] = ()


GATEWAY = WorkerSpec("gateway", GATEWAY_ROUTES, ("SESSION_KV", "API_CACHE_KV", "USER_PREFS_KV"))
PUSH = WorkerSpec("push", PUSH_ROUTES, ("SESSION_KV", "PUSH_SUBS_KV"), settings=("VAPID_PUBLIC_KEY",))
WORKERS = {spec.name: spec for spec in (GATEWAY, PUSH)}


def route_table(spec: WorkerSpec, config: GatewayConfig) -> RouteTable:
    return RouteTable.for_origins(spec.routes, config.origins)


def required_rate_limit_bindings(table: RouteTable) -> dict[str, Quota]:
    """Binding name -> quota, for every quota the table's policies use (wrangler.toml declares them)."""
    return {name: quota for policy in table.policies() for name, quota in policy.bindings().items()}


def build(
    spec: WorkerSpec,
    config: GatewayConfig,
    *,
    stores: Mapping[str, KeyValueStore],
    origin: OriginClient,
    siteverify: Siteverify,
    bindings: Mapping[str, RateLimitBinding],
    objects: LimiterObjects | None,
    clock: Clock | None = None,
    random: RandomSource | None = None,
    log: LogSink | None = None,
) -> GatewayDeps:
    config.require(*spec.settings)
    clock = clock or SystemClock()
    needed = {*spec.kv, *(("RATE_LIMIT_KV",) if config.rate_limit_backend == "kv" else ())}
    missing = sorted(needed - set(stores))
    if missing:
        raise ConfigurationError(f"missing KV bindings: {', '.join(missing)}")
    kv = KvNamespaces(stores)
    table = route_table(spec, config)
    limiter: RateLimiter
    if config.rate_limit_backend == "binding":
        absent = sorted(set(required_rate_limit_bindings(table)) - set(bindings))
        if absent:
            raise ConfigurationError(f"missing rate limiting bindings: {', '.join(absent)}")
        limiter = BindingLimiter(bindings)
    elif config.rate_limit_backend == "durable_object":
        if objects is None:
            raise ConfigurationError(f"missing Durable Object binding {LIMITER_OBJECTS_BINDING}")
        limiter = DurableObjectLimiter(objects)
    else:
        limiter = KvFixedWindowLimiter(kv.RATE_LIMIT_KV, clock)
    return GatewayDeps(
        config=config,
        kv=kv,
        origin=origin,
        limiter=limiter,
        siteverify=siteverify,
        routes=table,
        worker=spec.name,
        clock=clock,
        random=random or SystemRandom(),
        log=log or PrintLog(),
    )
