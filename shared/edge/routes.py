"""The declarative route table: which paths exist at the edge, and what each method requires.

The most specific route wins: an exact route beats a prefix route, a longer prefix beats a shorter
one. Later capabilities (rate limits, caching, Turnstile) become further fields of ``Route``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from shared.errors import MethodNotAllowed, NotFound

DEFAULT_BODY_LIMIT = 1024 * 1024


class Auth(Enum):
    ANONYMOUS = "anonymous"  # the session is not looked up; forwarded without an identity
    OPTIONAL = "optional"  # the session's identity is forwarded when there is one
    REQUIRED = "required"  # no valid session: 401


class Handler(Enum):
    PROXY = "proxy"
    LOGIN = "login"
    LOGOUT = "logout"
    HEALTH = "health"


@dataclass(frozen=True)
class Route:
    path: str
    handler: Handler
    methods: Mapping[str, Auth]
    exact: bool = False
    origin: str | None = None
    strip_prefix: str = ""
    body_limit: int = DEFAULT_BODY_LIMIT

    def matches(self, path: str) -> bool:
        return path == self.path if self.exact else path.startswith(self.path)

    def upstream_path(self, path: str) -> str:
        stripped = path[len(self.strip_prefix) :] if path.startswith(self.strip_prefix) else path
        return stripped if stripped.startswith("/") else "/" + stripped

    @property
    def allow(self) -> str:
        return ", ".join(sorted(self.methods))


class RouteMethodNotAllowed(MethodNotAllowed):
    def __init__(self, route: Route, method: str) -> None:
        super().__init__(f"{method} is not allowed here", details={"allow": sorted(route.methods)})
        self.allow = route.allow


@dataclass(frozen=True)
class RouteMatch:
    route: Route
    auth: Auth


def _reads(auth: Auth) -> dict[str, Auth]:
    return {"GET": auth, "HEAD": auth}


_WRITES = ("POST", "PUT", "PATCH", "DELETE")
STEPPERSLIFE = "stepperslife"

DEFAULT_ROUTES: tuple[Route, ...] = (
    Route("/healthz", Handler.HEALTH, _reads(Auth.ANONYMOUS), exact=True),
    Route(
        "/api/auth/login",
        Handler.LOGIN,
        {"POST": Auth.ANONYMOUS},
        exact=True,
        origin=STEPPERSLIFE,
        strip_prefix="/api",
        body_limit=16 * 1024,
    ),
    # Logout needs the cookie's id only, not the session behind it.
    Route("/api/auth/logout", Handler.LOGOUT, {"POST": Auth.ANONYMOUS}, exact=True, body_limit=16 * 1024),
    # Sign-up is the one write that needs no session.
    Route(
        "/api/users",
        Handler.PROXY,
        {**_reads(Auth.OPTIONAL), "POST": Auth.OPTIONAL},
        exact=True,
        origin=STEPPERSLIFE,
        strip_prefix="/api",
        body_limit=16 * 1024,
    ),
    Route(
        "/api/",
        Handler.PROXY,
        {**_reads(Auth.OPTIONAL), **dict.fromkeys(_WRITES, Auth.REQUIRED)},
        origin=STEPPERSLIFE,
        strip_prefix="/api",
    ),
)


class RouteTable:
    def __init__(self, routes: Iterable[Route] = DEFAULT_ROUTES) -> None:
        # Most specific first, so that the first match is the right one.
        self.routes = sorted(routes, key=lambda route: (not route.exact, -len(route.path)))

    def origins(self) -> set[str]:
        return {route.origin for route in self.routes if route.origin is not None}

    def match(self, path: str, method: str) -> RouteMatch:
        for route in self.routes:
            if route.matches(path):
                auth = route.methods.get(method)
                if auth is None:
                    raise RouteMethodNotAllowed(route, method)
                return RouteMatch(route, auth)
        raise NotFound("no such route", code="not_found")
