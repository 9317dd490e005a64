"""The declarative route tables: which paths exist at the edge, and what each method requires.

A route names its handler, its origin and the prefix stripped before forwarding, its body limit and
cache policy; each method has its own access rule (authentication, rate-limit policy, Turnstile).
The most specific route wins: an exact route beats a prefix route, a longer prefix a shorter one.
Routes are matched on the normalised path (``edge_workers.core.paths``), never on the raw one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import Enum
from typing import NamedTuple

from shared.envelope import AGISTAFFERS, ROLES_BY_PRODUCT, STEPPERSLIFE
from shared.errors import MethodNotAllowed, NotFound

DEFAULT_BODY_LIMIT = 1024 * 1024
SMALL_BODY_LIMIT = 16 * 1024
# The periods the Workers Rate Limiting binding supports; the other backends keep to them too, so
# that a policy means the same thing whichever backend enforces it.
BINDING_PERIODS = (10, 60)


class Auth(Enum):
    ANONYMOUS = "anonymous"  # credentials are not looked at; forwarded without an identity
    OPTIONAL = "optional"  # the identity is forwarded when there is one
    REQUIRED = "required"  # no valid session or bearer token: 401


class Handler(Enum):
    PROXY = "proxy"
    LOGIN = "login"
    LOGOUT = "logout"
    END_SESSIONS = "end_sessions"
    HEALTH = "health"
    PREFERENCES = "preferences"
    FLAGS = "flags"
    IMAGE = "image"
    PUSH_SUBSCRIPTION = "push_subscription"
    VAPID_KEY = "vapid_key"


class _QuotaFields(NamedTuple):
    limit: int
    period: int  # seconds


class Quota(_QuotaFields):
    # A NamedTuple cannot define __new__ itself; a subclass can, to validate.
    __slots__ = ()

    def __new__(cls, limit: int, period: int) -> Quota:
        quota = super().__new__(cls, limit, period)
        if limit < 1 or period not in BINDING_PERIODS:
            raise ValueError(f"a quota is a positive limit per {BINDING_PERIODS} seconds; got {quota}")
        return quota


class RateLimitPolicy(NamedTuple):
    """A named limit: per client IP, and (when given) a separate, usually higher one per signed-in user."""

    name: str
    per_ip: Quota
    per_user: Quota | None = None

    def quota(self, by_user: bool) -> Quota:
        return self.per_user if by_user and self.per_user is not None else self.per_ip

    def keyed_by_user(self, has_user: bool) -> bool:
        return has_user and self.per_user is not None

    def binding(self, by_user: bool) -> str:
        """The Workers Rate Limiting binding that enforces this quota (declared in wrangler.toml)."""
        return f"RL_{self.name.upper()}_{'USER' if by_user else 'IP'}"

    def bindings(self) -> dict[str, Quota]:
        found = {self.binding(False): self.per_ip}
        if self.per_user is not None:
            found[self.binding(True)] = self.per_user
        return found


LOGIN_POLICY = RateLimitPolicy("login", Quota(5, 60))
# The other product's accounts: its own counter, so one product's sign-ins never lock out the other's.
AGI_LOGIN_POLICY = RateLimitPolicy("agi_login", Quota(5, 60))
FORMS_POLICY = RateLimitPolicy("forms", Quota(10, 60))
API_POLICY = RateLimitPolicy("api", Quota(100, 60), per_user=Quota(300, 60))
# Preferences are written to KV, which takes one write per second per key: keep writers well below.
PREFS_POLICY = RateLimitPolicy("prefs", Quota(10, 60), per_user=Quota(10, 60))
PUSH_POLICY = RateLimitPolicy("push", Quota(10, 60), per_user=Quota(10, 60))
MEDIA_POLICY = RateLimitPolicy("media", Quota(600, 60))
# Sites' agents post about once a minute each; many sites may share one egress address.
INGEST_POLICY = RateLimitPolicy("ingest", Quota(600, 60))


class Access(NamedTuple):
    auth: Auth
    rate_limit: RateLimitPolicy | None = API_POLICY
    turnstile: bool = False


class CachePolicy(NamedTuple):
    """GET/HEAD answers of this route may be kept in API_CACHE_KV.

    ``public``: the answer is the same for everyone, so it is cached even for requests that carry a
    session or Authorization (which otherwise bypass the cache).
    """

    public: bool = False


class Route(NamedTuple):
    path: str
    handler: Handler
    methods: Mapping[str, Access]
    exact: bool = False
    origin: str | None = None
    strip_prefix: str = ""
    body_limit: int = DEFAULT_BODY_LIMIT
    cache: CachePolicy | None = None
    # Request fields forwarded to the origin on this route besides the usual ones: a credential the
    # origin checks itself (the edge does not read it), such as a site's metrics ingest token.
    forwarded_headers: tuple[str, ...] = ()

    def matches(self, path: str) -> bool:
        return path == self.path if self.exact else path.startswith(self.path)

    def upstream_path(self, path: str) -> str:
        stripped = path[len(self.strip_prefix) :] if path.startswith(self.strip_prefix) else path
        return stripped if stripped.startswith("/") else "/" + stripped

    @property
    def allow(self) -> str:
        return ", ".join(sorted(self.methods))

    @property
    def product(self) -> str | None:
        """The product whose accounts this route serves: only that product's sessions count here."""
        return self.origin if self.origin in ROLES_BY_PRODUCT else None


class RouteMethodNotAllowed(MethodNotAllowed):
    def __init__(self, route: Route, method: str) -> None:
        super().__init__(f"{method} is not allowed here", details={"allow": sorted(route.methods)})
        self.allow = route.allow


class RouteMatch(NamedTuple):
    route: Route
    access: Access


def _reads(access: Access) -> dict[str, Access]:
    return {"GET": access, "HEAD": access}


_WRITES = ("POST", "PUT", "PATCH", "DELETE")
MEDIA = "media"


def _login(path: str, origin: str, strip_prefix: str, policy: RateLimitPolicy) -> Route:
    """A product's sign-in: the origin checks the password, the edge makes the session."""
    access = Access(Auth.ANONYMOUS, policy, turnstile=True)
    return Route(path, Handler.LOGIN, {"POST": access}, True, origin, strip_prefix, SMALL_BODY_LIMIT)


def _logout(path: str) -> Route:
    # Logout needs the cookie's id only, not the session behind it.
    return Route(path, Handler.LOGOUT, {"POST": Access(Auth.ANONYMOUS)}, exact=True, body_limit=SMALL_BODY_LIMIT)


def _end_sessions(path: str, origin: str, strip_prefix: str, policy: RateLimitPolicy = API_POLICY) -> Route:
    """A signed-in write after which the origin has ended every session of the account (log out
    everywhere, a password change): the edge drops the current one at once."""
    access = Access(Auth.REQUIRED, policy)
    return Route(path, Handler.END_SESSIONS, {"POST": access}, True, origin, strip_prefix, SMALL_BODY_LIMIT)


def _public_form(path: str, origin: str, strip_prefix: str) -> Route:
    """A write that needs no session (sign-up, accepting an invitation): bots are kept out by Turnstile."""
    access = Access(Auth.OPTIONAL, FORMS_POLICY, turnstile=True)
    return Route(path, Handler.PROXY, {"POST": access}, True, origin, strip_prefix, SMALL_BODY_LIMIT)


def _api(path: str, origin: str) -> Route:
    """A product's API: reads with an optional identity (cached at the edge), writes signed in."""
    methods = {**_reads(Access(Auth.OPTIONAL)), **dict.fromkeys(_WRITES, Access(Auth.REQUIRED))}
    return Route(path, Handler.PROXY, methods, origin=origin, strip_prefix=path.rstrip("/"), cache=CachePolicy())


def _api_description(path: str, origin: str, strip_prefix: str) -> Route:
    """A product API's OpenAPI document: the same for everyone, so cached even for signed-in readers
    (for the origin's s-maxage); no identity is forwarded, the origin answers it publicly."""
    access = Access(Auth.ANONYMOUS)
    return Route(path, Handler.PROXY, _reads(access), True, origin, strip_prefix, cache=CachePolicy(public=True))


GATEWAY_ROUTES: tuple[Route, ...] = (
    Route("/healthz", Handler.HEALTH, _reads(Access(Auth.ANONYMOUS)), exact=True),
    _login("/api/auth/login", STEPPERSLIFE, "/api", LOGIN_POLICY),
    _logout("/api/auth/logout"),
    # Both end every session of the account at the origin; the edge then drops this one at once.
    _end_sessions("/api/auth/logout-all", STEPPERSLIFE, "/api"),
    _end_sessions("/api/me/password", STEPPERSLIFE, "/api", FORMS_POLICY),
    # The origin has no list of users to read here.
    _public_form("/api/users", STEPPERSLIFE, "/api"),
    Route(
        "/api/me/preferences",
        Handler.PREFERENCES,
        {**_reads(Access(Auth.REQUIRED)), "PUT": Access(Auth.REQUIRED, PREFS_POLICY)},
        exact=True,
        origin=STEPPERSLIFE,
        strip_prefix="/api",
        body_limit=4 * 1024,
    ),
    Route("/api/flags", Handler.FLAGS, _reads(Access(Auth.ANONYMOUS)), exact=True),
    # AGI Staffers: its own accounts, signed in through the same session machinery; a session says
    # which product it belongs to and counts only on that product's routes.
    _login("/api/agi/auth/login", AGISTAFFERS, "/api/agi", AGI_LOGIN_POLICY),
    _logout("/api/agi/auth/logout"),
    _end_sessions("/api/agi/auth/logout-all", AGISTAFFERS, "/api/agi"),
    _public_form("/api/agi/signup", AGISTAFFERS, "/api/agi"),
    _public_form("/api/agi/invitations/accept", AGISTAFFERS, "/api/agi"),
    # A site's agent: no session, its ingest token is checked by the origin.
    Route(
        "/api/agi/metrics",
        Handler.PROXY,
        {"POST": Access(Auth.ANONYMOUS, INGEST_POLICY)},
        exact=True,
        origin=AGISTAFFERS,
        strip_prefix="/api/agi",
        forwarded_headers=("authorization", "x-ingest-token"),
    ),
    _api_description("/api/openapi.json", STEPPERSLIFE, "/api"),
    _api_description("/api/agi/openapi.json", AGISTAFFERS, "/api/agi"),
    _api("/api/agi/", AGISTAFFERS),
    _api("/api/", STEPPERSLIFE),
    # Customers' public status pages: the same HTML for everyone, cached briefly (the origin's s-maxage).
    Route(
        "/status/", Handler.PROXY, _reads(Access(Auth.ANONYMOUS)), origin=AGISTAFFERS, cache=CachePolicy(public=True)
    ),
    Route("/img/", Handler.IMAGE, _reads(Access(Auth.ANONYMOUS, MEDIA_POLICY)), origin=MEDIA),
)

# The push router is deployed on the gateway's host under /push/ (a more specific Workers route), so
# the host-only __Host-session cookie reaches it.
PUSH_ROUTES: tuple[Route, ...] = (
    Route(
        "/push/subscriptions",
        Handler.PUSH_SUBSCRIPTION,
        {
            "POST": Access(Auth.REQUIRED, PUSH_POLICY, turnstile=True),
            "DELETE": Access(Auth.REQUIRED, PUSH_POLICY),
        },
        exact=True,
        origin=STEPPERSLIFE,
        body_limit=8 * 1024,
    ),
    Route("/push/vapid-public-key", Handler.VAPID_KEY, _reads(Access(Auth.ANONYMOUS)), exact=True),
)


class RouteTable:
    def __init__(self, routes: Iterable[Route] = GATEWAY_ROUTES) -> None:
        # Most specific first, so that the first match is the right one.
        self.routes = sorted(routes, key=lambda route: (not route.exact, -len(route.path)))

    @classmethod
    def for_origins(cls, routes: Iterable[Route], origins: Iterable[str]) -> RouteTable:
        """The routes whose origin is configured (an unconfigured optional origin drops its routes)."""
        available = set(origins)
        return cls(route for route in routes if route.origin is None or route.origin in available)

    def origins(self) -> set[str]:
        return {route.origin for route in self.routes if route.origin is not None}

    def policies(self) -> set[RateLimitPolicy]:
        return {access.rate_limit for route in self.routes for access in route.methods.values() if access.rate_limit}

    def find(self, path: str) -> Route:
        for route in self.routes:
            if route.matches(path):
                return route
        raise NotFound("no such route", code="not_found")

    def match(self, path: str, method: str) -> RouteMatch:
        route = self.find(path)
        access = route.methods.get(method)
        if access is None:
            raise RouteMethodNotAllowed(route, method)
        return RouteMatch(route, access)
