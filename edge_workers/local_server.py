"""An ASGI app served by uvicorn over h11 from a background thread: the local edge's HTTP server, and
the dev stack's for its APIs and media CDN.

Why uvicorn rather than ``http.server``: a maintained HTTP/1.1 parser (h11) that refuses what it
cannot frame (a space before a header's colon, a bare CR) instead of guessing, one event loop that
serves slow uploaders without holding a thread each, and a real listen backlog (``http.server``'s
is 5: a burst of new connections overflowed it and waited for SYN retransmits).

The socket is bound in ``start()`` (a port in use raises ``OSError`` there) with ``SO_REUSEADDR``, so
a server restarts at once on the port it just left while old connections sit in TIME_WAIT.
Requests the parser refuses get the project's JSON error shape (``refusal``), not uvicorn's text.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from shared.errors import AppError, BadRequest, PayloadTooLarge

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# What a refused request is answered with: status, headers and body, from the parser's complaint.
Refusal = Callable[[h11.RemoteProtocolError | None], tuple[int, list[tuple[bytes, bytes]], bytes]]

BODY_IDLE_SECONDS = 60.0  # a client may stall this long mid-body before it gets a 408
NO_CONTENT_STATUSES = (204, 304)
BACKLOG = 2048
STARTUP_SECONDS = 10.0
GRACEFUL_SHUTDOWN_SECONDS = 5
MAX_HEAD_BYTES = 64 * 1024  # request line and header fields together; more is refused


class RequestTimeout(AppError):
    status = 408
    code = "request_timeout"


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request's whole body from the server; ``PayloadTooLarge`` as soon as it crosses ``limit``,
    ``RequestTimeout`` when the client stalls ``BODY_IDLE_SECONDS``. Waiting costs no thread."""
    data = bytearray()
    more = True
    while more:
        try:
            message = await asyncio.wait_for(receive(), BODY_IDLE_SECONDS)
        except TimeoutError as exc:
            raise RequestTimeout("the request body did not arrive in time") from exc
        if message["type"] != "http.request":
            raise BadRequest("the client went away before sending its body", code="bad_framing")
        data += message.get("body", b"")
        if len(data) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
        more = message.get("more_body", False)
    return bytes(data)


async def send_response(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """One whole response, its ``content-length`` added (204 and 304 have neither length nor body;
    uvicorn itself drops the body of an answer to HEAD)."""
    if status in NO_CONTENT_STATUSES:
        framed, body = headers, b""
    else:
        framed = [*headers, (b"content-length", str(len(body)).encode("ascii"))]
    await send({"type": "http.response.start", "status": status, "headers": framed})
    await send({"type": "http.response.body", "body": body})


def refusal_error(error: h11.RemoteProtocolError | None) -> BadRequest:
    """The error for a request the parser refused: ``bad_framing`` when its length or coding cannot
    be told (as the edge core says for the ones it sees), else ``malformed_request``. The parser's
    own words quote the client's bytes: they stay out of the answer."""
    reason = str(error) if error is not None else ""
    if "Content-Length" in reason or "Transfer-Encoding" in reason:
        return BadRequest("the body's length or coding cannot be determined", code="bad_framing")
    return BadRequest("the request is malformed", code="malformed_request")


def json_refusal(error: h11.RemoteProtocolError | None) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The project's JSON error shape for a request the parser refused."""
    refused = refusal_error(error)
    body = json.dumps(refused.body(), separators=(",", ":")).encode()
    return refused.status, [(b"content-type", b"application/json")], body


def bind_listening(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: any free one), ``SO_REUSEADDR`` set."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio turns Nagle's algorithm off only on sockets that say they are TCP
    # (proto 0 does not), and with it on each answer waits ~40 ms for the client's delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # Lets a restart bind while the last run's connections are in TIME_WAIT; a port another
        # process listens on is still refused (EADDRINUSE).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (TIME_WAIT leftovers do not count)."""
    try:
        bind_listening(host, port, backlog=1).close()
    except OSError:
        return False
    return True


class _RecordingConnection(h11.Connection):
    """h11's connection, remembering why it refused the peer's bytes (uvicorn drops the reason)."""

    refused: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.refused = exc
            raise


def _protocol_answering(refusal: Refusal) -> type[H11Protocol]:
    class JsonRefusalProtocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.conn = _RecordingConnection(h11.SERVER, MAX_HEAD_BYTES)

        def send_400_response(self, msg: str) -> None:
            conn = self.conn
            status, headers, body = refusal(conn.refused if isinstance(conn, _RecordingConnection) else None)
            headers = [*headers, (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
            for event in (
                h11.Response(status_code=status, headers=headers, reason=HTTPStatus(status).phrase),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(conn.send(event) or b"")
            self.transport.close()

    return JsonRefusalProtocol


def http_url(host: str, port: int) -> str:
    """``http://host:port``, an IPv6 host in brackets."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class BackgroundServer:
    """``app`` served on ``host:port`` by uvicorn (h11) on its own event loop in a daemon thread.

    ``executor_workers`` sizes the loop's default executor, where blocking calls (``to_thread``) wait.
    """

    def __init__(
        self,
        app: AsgiApp,
        host: str,
        port: int,
        *,
        name: str,
        refusal: Refusal = json_refusal,
        executor_workers: int = 64,
        backlog: int = BACKLOG,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.name = name
        self._refusal = refusal
        self._executor_workers = executor_workers
        self._backlog = backlog
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return http_url(self.host, self.port)

    def start(self) -> None:
        if self._server is not None:
            raise RuntimeError(f"{self.name} is already running")
        sock = bind_listening(self.host, self.port, self._backlog)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            http=_protocol_answering(self._refusal),
            ws="none",
            lifespan="off",
            interface="asgi3",
            log_config=None,
            log_level="warning",  # the dev stack logs its own start-up lines; uvicorn's say only trouble
            access_log=False,
            proxy_headers=False,
            server_header=False,
            backlog=self._backlog,
            h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        server = uvicorn.Server(config)
        self._server, self._failure = server, None
        self._thread = threading.Thread(target=self._run, args=(server, sock), name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_SECONDS
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        if not server.started:
            self.stop()
            raise RuntimeError(f"{self.name} did not start") from self._failure

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        loop.set_default_executor(
            concurrent.futures.ThreadPoolExecutor(max_workers=self._executor_workers, thread_name_prefix=self.name)
        )
        try:
            loop.run_until_complete(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported by start(); a thread has no one else to tell
            self._failure = exc
        finally:
            sock.close()
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def stop(self) -> None:
        """Stop accepting, let requests in flight finish (up to a few seconds), close the socket."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=GRACEFUL_SHUTDOWN_SECONDS + 5)
        self._server, self._thread = None, None

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
