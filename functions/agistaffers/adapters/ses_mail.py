"""Transactional mail through Amazon SES v2 (``send_email`` with a plain-text and an HTML part); moto
locally. The boto3 client is built on first send (a cold start that sends nothing never imports it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from functions.agistaffers.services.saga import Transient


class SesMailer:
    def __init__(self, client_factory: Callable[[], Any], sender: str | None) -> None:
        self._factory = client_factory
        self._client: Any = None
        self._sender = sender

    def send(self, *, to: str, subject: str, text: str, html: str) -> str:
        if not self._sender:
            raise Transient("no MAIL_SENDER is configured: the mail waits")
        if self._client is None:
            self._client = self._factory()
        answer = self._client.send_email(
            FromEmailAddress=self._sender,
            Destination={"ToAddresses": [to]},
            Content={
                "Simple": {
                    "Subject": {"Data": subject, "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": text, "Charset": "UTF-8"}, "Html": {"Data": html, "Charset": "UTF-8"}},
                }
            },
        )
        return str(answer["MessageId"])
