"""SteppersLife's response bodies, as the API's document describes them (functions/platform/openapi.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from functions.platform.responses import Reply


class Event(Reply):
    """An event as its reader may see it (``services/events.public_event``): everyone gets the ready
    pictures only; its organizer and admins every picture entry."""

    id: UUID
    organizer_id: UUID
    title: str
    slug: str
    description: str
    event_date: datetime
    ends_at: datetime | None
    time_zone: str
    location: str | None
    category: str
    tags: list[str]
    latitude: float | None
    longitude: float | None
    status: Literal["draft", "published", "cancelled"]
    capacity: int
    seats_left: int
    images: list[dict[str, Any]]
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime


class EventReply(Reply):
    event: Event


class EventPage(Reply):
    items: list[Event]
    next_cursor: str | None


class SearchHit(Event):
    rank: float


class SearchResult(Reply):
    items: list[SearchHit]
    query: str
    filters: dict[str, str]
    typo_tolerant: bool


class User(Reply):
    id: UUID
    email: str
    name: str
    role: Literal["user", "customer", "admin"]
    created_at: datetime


class UserReply(Reply):
    user: User


class SessionStart(Reply):
    generation: int


class LoginReply(Reply):
    """The edge opens a session for ``user`` under ``session.generation``."""

    user: User
    session: SessionStart


class PreferencesReply(Reply):
    preferences: dict[str, Any]


class Recommendation(Reply):
    event: Event
    score: float
    reasons: list[str]


class Recommendations(Reply):
    items: list[Recommendation]
    cached: bool


RegistrationStatus = Literal["registered", "waitlisted", "cancelled", "checked_in"]


class Registration(Reply):
    id: UUID
    user_id: UUID
    event_id: UUID
    registration_date: datetime
    status: RegistrationStatus
    updated_at: datetime
    waitlist_position: int | None


class RegistrationReply(Reply):
    registration: Registration


class Registrations(Reply):
    items: list[Registration]


class Attendee(Reply):
    id: UUID
    user_id: UUID
    name: str
    email: str
    status: RegistrationStatus
    registration_date: datetime
    updated_at: datetime
    waitlist_position: int | None


class Attendees(Reply):
    items: list[Attendee]


class PresignedPost(Reply):
    url: str
    fields: dict[str, str]


class UploadForm(Reply):
    """A presigned S3 POST for one picture; the picture appears in the event's ``images`` as processed."""

    image_id: str
    upload: PresignedPost
    max_bytes: int
    expires_at: datetime
