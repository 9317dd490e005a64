"""AGI Staffers request bodies and query strings, validated with pydantic v2.

Every model forbids unknown fields and refuses NUL characters (PostgreSQL cannot store them in text);
bodies are strict (a number is not a string, a string is not a boolean), query strings are lax only
where their values arrive as text (``limit``, UUIDs). These check shape and size; the services check
meaning (a hostable domain, a strong password, a plan that exists) and are the last word.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from functions.platform.schemas import Email, Name, NoNul, Reply

# The service's policy (10-200 characters, not one character repeated, not the e-mail) is the rule;
# these bounds only keep absurd input from reaching the hash.
Password = Annotated[str, StringConstraints(min_length=10, max_length=200)]
LoginPassword = Annotated[str, StringConstraints(min_length=1, max_length=200)]
PlanName = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[a-z][a-z0-9_]*$")]
TeamRole = Literal["owner", "member"]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=1000, strip_whitespace=True)]
# A token from secrets.token_urlsafe: base64url characters.
Token = Annotated[str, StringConstraints(min_length=16, max_length=200, pattern=r"^[A-Za-z0-9_-]+$")]
# A Unicode name may be written longer than 253 characters only through characters UTS #46 drops.
Domain = Annotated[str, StringConstraints(min_length=1, max_length=254, strip_whitespace=True)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
Phone = Annotated[
    str, StringConstraints(min_length=3, max_length=40, strip_whitespace=True, pattern=r"^\+?[0-9 ().-]+$")
]
Website = Annotated[str, StringConstraints(max_length=2048, strip_whitespace=True, pattern=r"^https?://\S+$")]
Address = Annotated[str, StringConstraints(min_length=1, max_length=1000, strip_whitespace=True)]
Query = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Cursor = Annotated[str, StringConstraints(min_length=1, max_length=512)]
Limit = Annotated[int, Field(ge=1, le=100)]

CustomerStatus = Literal["pending", "active", "suspended", "cancelled"]
SiteStatus = Literal["provisioning", "active", "suspended", "failed", "deleted"]


class Body(NoNul):
    """A JSON body: unknown fields, NULs and type coercion are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)


class QueryString(Body):
    """A query string: every value arrives as text, so numbers and UUIDs are parsed from it."""

    model_config = ConfigDict(extra="forbid", strict=False)


def _require_some(model: BaseModel, not_null: tuple[str, ...]) -> None:
    if not model.model_fields_set:
        raise ValueError("give at least one field to change")
    for name in not_null:
        if name in model.model_fields_set and getattr(model, name) is None:
            raise ValueError(f"{name} cannot be null")


# Accounts


class SignUp(Body):
    company_name: Name
    email: Email
    password: Password
    plan: PlanName = "starter"
    name: Name | None = None


class Login(Body):
    email: Email
    password: LoginPassword


class Invite(Body):
    email: Email
    role: TeamRole = "member"


class AcceptInvitation(Body):
    token: Token
    name: Name
    password: Password


class MemberRoleChange(Body):
    role: TeamRole


class StaffCreate(Body):
    email: Email
    name: Name
    password: Password


# Customers


class CustomerProfilePatch(Body):
    company_name: Name | None = None
    phone: Phone | None = None
    website: Website | None = None
    address: Address | None = None
    billing_email: Email | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> CustomerProfilePatch:
        _require_some(self, ("company_name",))
        return self

    def changes(self) -> dict[str, Any]:
        """What the service's ``update_profile`` takes: the fields that were given (null clears one)."""
        return self.model_dump(include=self.model_fields_set)


class Suspend(Body):
    reason: Reason


class Cancel(Body):
    reason: Reason | None = None


class ChangePlan(Body):
    plan: PlanName


class CustomerListQuery(QueryString):
    status: CustomerStatus | None = None
    plan: PlanName | None = None
    q: Query | None = None
    limit: Limit = 50
    cursor: Cursor | None = None


# Sites


class SiteCreate(Body):
    domain: Domain
    label: Label | None = None


class SitePatch(Body):
    label: Label | None = None
    # Staff only (the service refuses it from a customer's users).
    status: Literal["active", "suspended"] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> SitePatch:
        _require_some(self, ("status",))
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(include=self.model_fields_set)


class SiteListQuery(QueryString):
    status: SiteStatus | None = None
    q: Query | None = None
    customer_id: UUID | None = None
    limit: Limit = 50
    cursor: Cursor | None = None


# Monitoring


class MetricsQuery(QueryString):
    range: Literal["1h", "24h", "7d", "30d", "90d"] = "24h"


# Responses: what the handlers answer, for the API's document (functions/platform/openapi.py). The
# fields every answer carries; nested documents the services shape freely stay objects.


class User(Reply):
    id: UUID
    email: str
    name: str
    role: Literal["owner", "member", "admin"]
    customer_id: UUID | None


class UserReply(Reply):
    user: User


class Member(User):
    disabled_at: datetime | None
    created_at: datetime


class MemberReply(Reply):
    member: Member


class Members(Reply):
    items: list[Member]


class SessionStart(Reply):
    generation: int


class LoginReply(Reply):
    """The edge opens an AGI Staffers session for ``user`` under ``session.generation``."""

    user: User
    session: SessionStart


class CustomerSummary(Reply):
    id: UUID
    email: str
    company_name: str
    plan: str
    status: CustomerStatus


class SignUpReply(Reply):
    user: User
    customer: CustomerSummary


class MeReply(Reply):
    """The caller and, for a customer's users, the customer with its plan limits and usage."""

    user: User
    customer: CustomerSummary | None


class Plan(Reply):
    name: str
    max_sites: int
    max_members: int


class Plans(Reply):
    items: list[Plan]


class Customer(CustomerSummary):
    status_reason: str | None
    phone: str | None
    website: str | None
    address: str | None
    billing_email: str | None
    created_at: datetime
    updated_at: datetime


class CustomerReply(Reply):
    customer: Customer


class CustomerPage(Reply):
    items: list[Customer]
    next_cursor: str | None


class Site(Reply):
    id: UUID
    customer_id: UUID
    domain: str
    label: str | None
    status: SiteStatus
    created_at: datetime
    updated_at: datetime


class NewSite(Site):
    """The site's ingest token is shown in this answer only."""

    ingest_token: str


class SiteReply(Reply):
    site: Site


class NewSiteReply(Reply):
    site: NewSite


class SitePage(Reply):
    items: list[Site]
    next_cursor: str | None


class IngestToken(Reply):
    site_id: UUID
    ingest_token: str


class Invitation(Reply):
    id: UUID
    customer_id: UUID
    email: str
    role: TeamRole
    status: Literal["pending", "accepted", "revoked", "expired"]
    created_at: datetime
    expires_at: datetime


class InvitationReply(Reply):
    invitation: Invitation


class NewInvitation(Reply):
    """The acceptance token is shown in this answer only."""

    invitation: Invitation
    token: str


class Invitations(Reply):
    items: list[Invitation]


class OnboardingRun(Reply):
    id: UUID
    status: str
    steps: list[dict[str, Any]]


class OnboardingReply(Reply):
    onboarding: OnboardingRun


class IngestReport(Reply):
    accepted: int
    refused: int
    reasons: dict[str, int]
    refusals: list[dict[str, Any]]
    max_batch_samples: int


class SiteMetrics(Reply):
    site_id: UUID
    range: str
    resolution: str
    series: dict[str, Any]
    cache: Literal["hit", "miss"]


class CustomerDashboard(Reply):
    sites: list[dict[str, Any]]
    cache: Literal["hit", "miss"]


class StaffOverview(Reply):
    sites: dict[str, int]
    alerts: dict[str, int]
    cache: Literal["hit", "miss"]
