"""Request bodies and query strings, validated with pydantic v2.

Every model forbids unknown fields and refuses NUL characters (PostgreSQL cannot store them in text),
so bad input is a 422 before it reaches a service.
"""

from __future__ import annotations

import re
import zoneinfo
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$")
_SLUG = r"^[a-z0-9]+(-[a-z0-9]+)*$"


def _no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    if isinstance(value, dict):
        for key, item in value.items():
            _no_nul(key)
            _no_nul(item)
    if isinstance(value, list):
        for item in value:
            _no_nul(item)
    return value


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("not a valid e-mail address")
    return value.lower()


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("a time zone offset is required (e.g. 2027-05-01T19:00:00+00:00)")
    return value


def _time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("not an IANA time zone name") from exc
    return value


Email = Annotated[str, StringConstraints(max_length=255, strip_whitespace=True), AfterValidator(_email)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True)]
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


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False, str_strip_whitespace=False)

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        return _no_nul(data)


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
