"""Real receivers for the notifications: an SMTP server (aiosmtpd) and an HTTP endpoint.

Both listen on a port of their own (chosen by the kernel) in a thread, and keep what they
received for the test to read: on loopback as fixtures, or on another address (one pods
reach) with ``serving_smtp(host)`` and ``serving_http(host)``.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedMail:
    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage

    def body(self, subtype: str) -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        assert part is not None, f"no text/{subtype} part"
        content: str = part.get_content()  # type: ignore[attr-defined]
        return content


class _Inbox:
    """aiosmtpd's handler: every accepted message, parsed."""

    def __init__(self) -> None:
        self.mails: list[ReceivedMail] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.mails.append(ReceivedMail(str(envelope.mail_from), tuple(envelope.rcpt_tos),
                                       message))
        return "250 Message accepted for delivery"


@dataclass
class SmtpServer:
    host: str
    port: int
    inbox: _Inbox

    @property
    def mails(self) -> list[ReceivedMail]:
        return self.inbox.mails


@contextmanager
def serving_smtp(host: str = LOOPBACK) -> Iterator[SmtpServer]:
    """aiosmtpd's SMTP server on ``host``, on its own event loop thread."""
    inbox = _Inbox()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(
        loop.create_server(lambda: SMTP(inbox), host, 0), loop).result(10)
    port = server.sockets[0].getsockname()[1]
    try:
        yield SmtpServer(host, port, inbox)
    finally:
        # On the loop's own thread: asyncio's server is not safe to close from another.
        async def close() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    with serving_smtp() as server:
        yield server


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b"ok"
    content_type: str = "text/plain"

    @classmethod
    def of_json(cls, value: Any, status: int = 200) -> Reply:
        return cls(status, json.dumps(value).encode(), "application/json")


@dataclass
class HttpReceiver:
    """Records each POST; answers with the reply set for its path (``200 ok`` if none)."""

    url: str
    requests: list[ReceivedRequest] = field(default_factory=list)
    replies: dict[str, Reply] = field(default_factory=dict)

    def on(self, path: str, reply: Reply) -> None:
        self.replies[path] = reply

    def to(self, path: str) -> list[ReceivedRequest]:
        return [request for request in self.requests if request.path == path]


@contextmanager
def serving_http(host: str = LOOPBACK) -> Iterator[HttpReceiver]:
    """An :class:`HttpReceiver` on ``host``, in a thread."""
    receiver = HttpReceiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            receiver.requests.append(ReceivedRequest(
                self.path, {k.lower(): v for k, v in self.headers.items()},
                self.rfile.read(length)))
            reply = receiver.replies.get(self.path, Reply())
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads the requests instead."""

    server = ThreadingHTTPServer((host, 0), Handler)
    receiver.url = f"http://{host}:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def http_receiver() -> Iterator[HttpReceiver]:
    with serving_http() as receiver:
        yield receiver
