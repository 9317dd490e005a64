"""Request bodies and query strings, validated with pydantic v2.

Every model forbids unknown fields and refuses NUL characters (PostgreSQL cannot store them in text),
so bad input is a 422 before it reaches a service.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, ConfigDict, Field, StringConstraints, model_validator

from functions.platform.schemas import Email, Name, NoNul

_SLUG = r"^[a-z0-9]+(-[a-z0-9]+)*$"


# The years an event date or a date filter may name. Python and PostgreSQL both hold years 1-9999, but
# not every offset at their edges (9999-12-31T23:00-05:00 is past PostgreSQL's and Python's UTC range),
# and every later step (local time in the event's zone, notifications) must be able to compute with it.
# The check is on the written year, before any conversion that could overflow.
FIRST_YEAR = 2000
LAST_YEAR = 2099


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("a time zone offset is required (e.g. 2027-05-01T19:00:00+00:00)")
    if not FIRST_YEAR <= value.year <= LAST_YEAR:
        raise ValueError(f"the date must be in the years {FIRST_YEAR}-{LAST_YEAR}")
    return value


def _time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("not an IANA time zone name") from exc
    return value


Password = Annotated[str, StringConstraints(min_length=10, max_length=256)]
AwareDatetime = Annotated[datetime, AfterValidator(_aware)]
TimeZone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_time_zone)]
Slug = Annotated[str, StringConstraints(min_length=1, max_length=120, pattern=_SLUG)]
Category = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=_SLUG)]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=_SLUG)]
Tags = Annotated[list[Tag], Field(max_length=20)]
Latitude = Annotated[float, Field(ge=-90, le=90)]
Longitude = Annotated[float, Field(ge=-180, le=180)]
Location = Annotated[str, StringConstraints(max_length=255, strip_whitespace=True)]


class Strict(NoNul):
    model_config = ConfigDict(extra="forbid", strict=False, str_strip_whitespace=False)


class SignUp(Strict):
    email: Email
    name: Name
    password: Password


LoginPassword = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class Login(Strict):
    email: Email
    password: LoginPassword


class PasswordChange(Strict):
    current_password: LoginPassword
    new_password: Password


def _paired_coordinates(latitude: float | None, longitude: float | None) -> None:
    if (latitude is None) != (longitude is None):
        raise ValueError("latitude and longitude go together")


class EventFields(Strict):
    description: Annotated[str, StringConstraints(max_length=20000)] = ""
    ends_at: AwareDatetime | None = None
    time_zone: TimeZone = "UTC"
    location: Location | None = None
    category: Category = "general"
    tags: Tags = []
    latitude: Latitude | None = None
    longitude: Longitude | None = None


class EventCreate(EventFields):
    title: Name
    event_date: AwareDatetime
    capacity: Annotated[int, Field(ge=1, le=1_000_000, strict=True)]
    slug: Slug | None = None
    status: Literal["draft", "published"] = "draft"

    @model_validator(mode="after")
    def _ends_after_start(self) -> EventCreate:
        if self.ends_at is not None and self.ends_at < self.event_date:
            raise ValueError("ends_at must not be before event_date")
        _paired_coordinates(self.latitude, self.longitude)
        return self


class EventPatch(Strict):
    title: Name | None = None
    description: Annotated[str, StringConstraints(max_length=20000)] | None = None
    event_date: AwareDatetime | None = None
    ends_at: AwareDatetime | None = None
    time_zone: TimeZone | None = None
    location: Location | None = None
    category: Category | None = None
    tags: Tags | None = None
    latitude: Latitude | None = None
    longitude: Longitude | None = None
    capacity: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] | None = None
    status: Literal["draft", "published", "cancelled"] | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> EventPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one field to change")
        for name in ("title", "event_date", "time_zone", "category", "tags", "capacity", "status"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class EventFilterQuery(Strict):
    starts_after: AwareDatetime | None = Field(default=None, alias="from")
    starts_before: AwareDatetime | None = Field(default=None, alias="to")
    category: Category | None = None
    location: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    organizer: UUID | None = None
    tag: Tag | None = None


class EventListQuery(EventFilterQuery):
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    cursor: Annotated[str, StringConstraints(max_length=512)] | None = None


class EventSearchQuery(EventFilterQuery):
    q: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    limit: Annotated[int, Field(ge=1, le=50)] = 20


class AttendeeQuery(Strict):
    status: Literal["registered", "waitlisted", "cancelled", "checked_in"] | None = None


class Preferences(Strict):
    """What a user wants to hear about: used by recommendations, push notifications and the digest."""

    categories: Annotated[list[Category], Field(max_length=20)] = []
    locations: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=100)]], Field(max_length=10)
    ] = []
    notify: bool = False
    digest: bool = False
