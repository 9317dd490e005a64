"""Request-model building blocks both products' schemas use (pydantic v2).

PostgreSQL cannot store NUL characters in text, so every request model refuses them anywhere in its
input, nested values and keys included: the client gets a 422 instead of the database's error.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, StringConstraints, model_validator

_EMAIL = re.compile(r"^[^@\s]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+$")


def refuse_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("text must not contain NUL characters")
    if isinstance(value, dict):
        for key, item in value.items():
            refuse_nul(key)
            refuse_nul(item)
    if isinstance(value, list):
        for item in value:
            refuse_nul(item)
    return value


def _email(value: str) -> str:
    if not _EMAIL.match(value):
        raise ValueError("not a valid e-mail address")
    return value.lower()


Email = Annotated[str, StringConstraints(max_length=255, strip_whitespace=True), AfterValidator(_email)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255, strip_whitespace=True)]


class NoNul(BaseModel):
    """A request model that refuses NUL characters anywhere in its input."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_nul(cls, data: Any) -> Any:
        return refuse_nul(data)
