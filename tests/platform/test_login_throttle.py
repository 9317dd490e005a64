"""Per-account login throttling and the password policy, on real Redis and both products' real apps."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from functions.platform.login_throttle import CAP_SECONDS, FREE_ATTEMPTS, LoginThrottle
from functions.platform.password_policy import MAX_PASSWORD_LENGTH, check_password
from shared.errors import RateLimited, ValidationFailed
from tests.conftest import EdgeSignedClient


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    for key in connection.scan_iter("throttle-test:*"):
        connection.delete(key)


def waits(throttle: LoginThrottle, email: str) -> int | None:
    """The Retry-After of a refused attempt, None when the attempt is let through."""
    try:
        throttle.attempt(email)
    except RateLimited as exc:
        assert exc.code == "too_many_attempts" and exc.status == 429
        return int(exc.details["retry_after"])
    return None


def test_failures_back_off_exponentially_up_to_the_cap(client: redis.Redis) -> None:
    clock = Clock()
    throttle = LoginThrottle(client, "throttle-test", clock=clock)
    email = f"victim-{secrets.token_hex(4)}@example.com"
    for _ in range(FREE_ATTEMPTS):
        assert waits(throttle, email) is None
    backoffs = []
    for _ in range(14):
        backoffs.append(waits(throttle, email))
        assert backoffs[-1] is not None
        # Refused attempts do not count: the wait is the same until it has passed.
        assert waits(throttle, email) == backoffs[-1]
        clock.now += backoffs[-1]
        assert waits(throttle, email) is None
    assert backoffs[:9] == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    # The owner is never kept out longer than the cap, however long the attack goes on.
    assert set(backoffs[9:]) == {int(CAP_SECONDS)}


def test_success_forgets_the_failures(client: redis.Redis) -> None:
    clock = Clock()
    throttle = LoginThrottle(client, "throttle-test", clock=clock)
    email = f"owner-{secrets.token_hex(4)}@example.com"
    for _ in range(FREE_ATTEMPTS):
        throttle.attempt(email)
    throttle.succeeded(email)
    for _ in range(FREE_ATTEMPTS - 1):
        assert waits(throttle, email) is None


def test_accounts_and_products_are_counted_apart(client: redis.Redis) -> None:
    clock = Clock()
    first, second = LoginThrottle(client, "throttle-test", clock=clock), LoginThrottle(client, "throttle-test:b")
    email = f"shared-{secrets.token_hex(4)}@example.com"
    for _ in range(FREE_ATTEMPTS):
        first.attempt(email)
    assert waits(first, email) is not None
    assert waits(first, "someone-else@example.com") is None
    assert waits(second, email) is None
    # The address is the account, whatever its case or surrounding blanks.
    assert waits(first, f"  {email.upper()} ") is not None


def test_parallel_guesses_cannot_all_slip_through(client: redis.Redis) -> None:
    throttle = LoginThrottle(client, "throttle-test", clock=Clock())
    email = f"burst-{secrets.token_hex(4)}@example.com"
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: waits(throttle, email), range(64)))
    assert results.count(None) == FREE_ATTEMPTS


def test_redis_down_lets_attempts_through() -> None:
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    throttle = LoginThrottle(down, "throttle-test")
    for _ in range(FREE_ATTEMPTS * 2):
        throttle.attempt("anyone@example.com")
    throttle.succeeded("anyone@example.com")


# --- both products' logins ------------------------------------------------------------------------


def _guess(api: EdgeSignedClient, path: str, email: str, password: str) -> tuple[int, str, str | None]:
    response = api.request("POST", path, json_body={"email": email, "password": password})
    return (
        response.status,
        response.json["error"]["code"] if response.status >= 400 else "",
        response.headers.get("Retry-After"),
    )


@pytest.mark.parametrize("product", ["stepperslife", "agistaffers"])
def test_login_is_throttled_per_account_and_unknown_emails_alike(
    product: str, api: EdgeSignedClient, agi_api: EdgeSignedClient, redis_url: str
) -> None:
    client = api if product == "stepperslife" else agi_api
    email = f"owner-{secrets.token_hex(4)}@example.com"
    password = "correct horse battery"
    if product == "stepperslife":
        assert client.request("POST", "/users", json_body={"email": email, "name": "O", "password": password}).status
    else:
        signup = {"company_name": "Owner Co", "email": email, "password": password, "plan": "starter"}
        assert client.request("POST", "/signup", json_body=signup).status == 201
    unknown = f"nobody-{secrets.token_hex(4)}@example.com"
    answers: dict[str, list[tuple[int, str, str | None]]] = {email: [], unknown: []}
    for target in (email, unknown):
        for _ in range(FREE_ATTEMPTS + 1):
            answers[target].append(_guess(client, "/auth/login", target, "wrong password guess"))
    # Known and unknown addresses answer exactly alike: first wrong credentials, then 429 with Retry-After.
    assert answers[email] == answers[unknown]
    assert {answer[:2] for answer in answers[email][:FREE_ATTEMPTS]} == {(401, "invalid_credentials")}
    assert answers[email][FREE_ATTEMPTS] == (429, "too_many_attempts", "1")
    # Even the right password waits its turn (otherwise guessing would go on at full speed).
    assert _guess(client, "/auth/login", email, password)[:2] == (429, "too_many_attempts")
    connection = redis.Redis.from_url(redis_url)
    for key in connection.scan_iter(f"{product}:login-attempts:*"):
        connection.delete(key)
    assert client.request("POST", "/auth/login", json_body={"email": email, "password": password}).status == 200


# --- the password policy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short1234", "too_short"),
        ("x" * (MAX_PASSWORD_LENGTH + 1), "too_long"),
        ("aaaaaaaaaaaa", "one_character"),
        ("jane.doe@example.com", "same_as_email"),
        ("JANE.DOE@EXAMPLE.COM", "same_as_email"),
        ("password123", "too_common"),
        ("Password1234", "too_common"),
        ("qwertyuiop", "too_common"),
        ("1234567890", "too_common"),
        ("iloveyou12", "too_common"),
        ("abc123abc123", "too_common"),
        ("1q2w3e4r5t", "too_common"),
        ("letmein2024", "too_common"),
        ("jane.doe2024", "too_common"),
        ("Acme Hosting1", "too_common"),
        ("correct horse battery", None),
        ("jane.doe.smith", None),
        ("Tr0ub4dor&3 x", None),
        ("y" * 20 + "a very long tail " * 10, None),
    ],
)
def test_password_policy(password: str, reason: str | None) -> None:
    def check() -> None:
        check_password(password, email="jane.doe@example.com", names=["Jane Doe", "Acme Hosting"])

    if reason is None:
        check()
        return
    with pytest.raises(ValidationFailed) as caught:
        check()
    assert caught.value.code == "weak_password"
    assert caught.value.details == [{"reason": reason}]


def test_sign_up_refuses_common_passwords_in_both_products(api: EdgeSignedClient, agi_api: EdgeSignedClient) -> None:
    sl = api.request("POST", "/users", json_body={"email": "a@example.com", "name": "A", "password": "password123"})
    agi = agi_api.request(
        "POST",
        "/signup",
        json_body={"company_name": "Co", "email": "b@example.com", "password": "qwerty123456", "plan": "starter"},
    )
    for response in (sl, agi):
        assert response.status == 422, response.body
        assert response.json["error"]["code"] == "weak_password"
        assert response.json["error"]["details"] == [{"reason": "too_common"}]
