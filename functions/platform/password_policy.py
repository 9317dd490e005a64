"""The password policy of every product: one function, applied at sign-up, password change and
invitation acceptance (never at login: an old password still opens its account).

A password is refused when it is too short or too long, one character repeated, the account's e-mail
address (or its local part), or easy to guess: a common password, a keyboard walk, a sequence, a
repeated word, a date, or a variation of the user's own e-mail or name. The last test is zxcvbn
(Dropbox's estimator, maintained Python port, its frequency lists bundled in the wheel: nothing is
downloaded): it matches the password against its list of the most common passwords (30,000, from
leaked-password corpora), English words, names and patterns, and estimates the guesses an attacker
needs; fewer than ``MIN_GUESSES`` is refused. A plain list lookup would let ``Password2024!`` or
``qwerty123456`` through.

zxcvbn's cost grows with the length; it reads the first ``_ESTIMATED_PREFIX`` characters (about 1 ms).
Refusals are ``ValidationFailed(code="weak_password", details=[{"reason": ...}])``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.errors import ValidationFailed

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 200
# 10^6 guesses: zxcvbn's score 2 ("somewhat guessable: protection from unthrottled online attacks").
MIN_GUESSES = 10**6
# zxcvbn refuses longer input (72 by default); a longer password is judged by its start.
_ESTIMATED_PREFIX = 72


def _weak(reason: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, code="weak_password", details=[{"reason": reason}])


def check_password(password: Any, *, email: str, names: Iterable[str] = ()) -> None:
    """Raise ``ValidationFailed`` unless ``password`` is acceptable for the account ``email``;
    ``names`` are the user's other words (display name, company) that a guesser would try first."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise _weak("too_short", f"a password has at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise _weak("too_long", f"a password has at most {MAX_PASSWORD_LENGTH} characters")
    if len(set(password)) == 1:
        raise _weak("one_character", "a password is more than one character repeated")
    email = email.lower()
    local_part = email.partition("@")[0]
    if password.lower() in (email, local_part):
        raise _weak("same_as_email", "a password cannot be the e-mail address")
    # Imported here: the estimator's dictionaries cost a few milliseconds that only these calls need.
    from zxcvbn import zxcvbn

    estimate = zxcvbn(password[:_ESTIMATED_PREFIX], user_inputs=[email, local_part, *names])
    if float(estimate["guesses"]) < MIN_GUESSES:
        raise _weak("too_common", "this password is too common or too easy to guess")
