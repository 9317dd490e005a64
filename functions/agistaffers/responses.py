"""AGI Staffers' response bodies, as the API's document describes them (functions/platform/openapi.py):
the fields every answer carries; nested documents the services shape freely stay objects."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from functions.agistaffers.schemas import CustomerStatus, SiteStatus, TeamRole
from functions.platform.responses import Reply


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


class AlertRule(Reply):
    id: UUID
    site_id: UUID | None
    plan: str | None
    metric: str
    comparison: Literal[">", ">=", "<", "<="]
    threshold: float
    for_seconds: int
    keep_firing_for_seconds: int
    created_at: datetime


class PlanDefault(AlertRule):
    replaced: bool


class AlertRuleReply(Reply):
    rule: AlertRule


class SiteAlertRules(Reply):
    rules: list[AlertRule]
    plan_rules: list[PlanDefault]


class PlanAlertRules(Reply):
    rules: list[AlertRule]


class AlertNow(Reply):
    id: UUID
    rule_id: UUID
    metric: str
    comparison: str
    threshold: float
    state: Literal["inactive", "pending", "firing", "resolved"]
    value: float | None
    evaluated_at: datetime | None
    incident_id: UUID | None


class AlertIncident(Reply):
    id: UUID
    alert_id: UUID | None
    title: str
    fired_at: datetime
    resolved_at: datetime | None
    peak: float | None
    acknowledged_at: datetime | None


class AlertHistory(Reply):
    alerts: list[AlertNow]
    incidents: list[AlertIncident]


class Webhook(Reply):
    id: UUID
    url: str
    created_at: datetime


class ListedWebhook(Webhook):
    last_status: str | None
    last_http_status: int | None
    last_error: str | None
    last_delivery_at: datetime | None


class Webhooks(Reply):
    webhooks: list[ListedWebhook]


class NewWebhook(Reply):
    """The signing secret is shown here once."""

    webhook: Webhook
    secret: str


class UptimeState(Reply):
    """A site's check state (``unknown`` until its first check)."""

    state: Literal["unknown", "up", "down"]
    last_checked_at: datetime | None


class SiteUptime(Reply):
    uptime: UptimeState


class Incident(Reply):
    id: UUID
    site_id: UUID
    domain: str
    kind: Literal["alert", "downtime", "certificate"]
    title: str
    opened_at: datetime
    resolved_at: datetime | None
    peak: float | None
    acknowledged_by: UUID | None
    acknowledged_at: datetime | None


class IncidentReply(Reply):
    incident: Incident


class IncidentPage(Reply):
    items: list[Incident]
    next_cursor: str | None
