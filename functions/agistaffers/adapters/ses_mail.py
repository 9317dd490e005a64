"""Transactional mail through Amazon SES v2 (``send_email`` with a plain-text and an HTML part); moto
locally. The boto3 client is built on first send (a cold start that sends nothing never imports it).

SES has no idempotency key, so the adapter says what it knows about a mail that was not confirmed:
``NoEffect`` when SES certainly did not accept it (it answered with an error, or was never
reached), anything else when it may have (the answer was lost). The client must not retry on its
own (``client_config``): botocore's retry of a timed-out ``send_email`` could send the mail twice."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from functions.agistaffers.services.saga import NoEffect


class SesMailer:
    def __init__(self, client_factory: Callable[[], Any], sender: str | None) -> None:
        self._factory = client_factory
        self._client: Any = None
        self._sender = sender

    @staticmethod
    def client_config() -> Any:
        """One attempt per call (retries are ours, after we know whether the last one was accepted)."""
        from botocore.config import Config  # lazily, like boto3

        return Config(connect_timeout=5, read_timeout=20, retries={"total_max_attempts": 1})

    def send(self, *, to: str, subject: str, text: str, html: str) -> str:
        from botocore.exceptions import ClientError, ConnectTimeoutError, EndpointConnectionError

        if not self._sender:
            raise NoEffect("no MAIL_SENDER is configured: the mail waits")
        if self._client is None:
            self._client = self._factory()
        try:
            answer = self._client.send_email(
                FromEmailAddress=self._sender,
                Destination={"ToAddresses": [to]},
                Content={
                    "Simple": {
                        "Subject": {"Data": subject, "Charset": "UTF-8"},
                        "Body": {
                            "Text": {"Data": text, "Charset": "UTF-8"},
                            "Html": {"Data": html, "Charset": "UTF-8"},
                        },
                    }
                },
            )
        except ClientError as exc:
            # SES answered, with an error (throttled, rejected, not verified): nothing was accepted.
            raise NoEffect(f"SES refused the mail: {exc.response.get('Error', {}).get('Code', 'error')}") from exc
        except (EndpointConnectionError, ConnectTimeoutError) as exc:
            # No connection was made. A read timeout or a closed connection is not caught: the request
            # was sent and may have been accepted.
            raise NoEffect("SES could not be reached") from exc
        return str(answer["MessageId"])
