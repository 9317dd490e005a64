"""AGI Staffers request bodies and query strings, validated with pydantic v2.

Every model forbids unknown fields and refuses NUL characters (PostgreSQL cannot store them in text);
bodies are strict (a number is not a string, a string is not a boolean), query strings are lax only
where their values arrive as text (``limit``, UUIDs). These check shape and size; the services check
meaning (a hostable domain, a strong password, a plan that exists) and are the last word.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from functions.platform.schemas import Email, Name, NoNul

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


# Alerting

MetricName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Comparison = Literal[">", ">=", "<", "<="]
Threshold = Annotated[float, Field(allow_inf_nan=False)]
# The service checks the range again (0 to a day); these keep the schema honest for clients.
DurationSeconds = Annotated[int, Field(ge=0, le=86400)]


class AlertRuleCreate(Body):
    metric: MetricName
    comparison: Comparison
    threshold: Threshold
    for_seconds: DurationSeconds = 0
    keep_firing_for_seconds: DurationSeconds = 0


class AlertRulePatch(Body):
    threshold: Threshold | None = None
    for_seconds: DurationSeconds | None = None
    keep_firing_for_seconds: DurationSeconds | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> AlertRulePatch:
        _require_some(self, ("threshold", "for_seconds", "keep_firing_for_seconds"))
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(include=self.model_fields_set)


class WebhookCreate(Body):
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class IncidentListQuery(QueryString):
    site_id: UUID | None = None
    kind: Literal["alert", "downtime", "certificate"] | None = None
    open: bool | None = None
    limit: Limit = 50
    cursor: Cursor | None = None
