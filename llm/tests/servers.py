"""Real local servers for the alert tests: an SMTP server (aiosmtpd) that Django's own SMTP
backend talks to, and an HTTP server (the standard library's) that receives webhooks. Each
listens on 127.0.0.1 on a port the kernel chose, in threads of this process."""

import email
import email.policy
import http.server
import threading
from collections import deque
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller


@dataclass
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage


class SMTPServer:
    """An SMTP server that keeps every message it accepts (`received`)."""

    def __init__(self):
        self.received: list[ReceivedMail] = []
        self._lock = threading.Lock()
        self._controller = _FreePortController(self, hostname="127.0.0.1", port=0)

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self._lock:
            self.received.append(ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    @property
    def port(self) -> int:
        return self._controller.port

    def start(self) -> "SMTPServer":
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


class _FreePortController(Controller):
    """aiosmtpd's Controller on port 0: it learns the port the kernel gave before it makes its
    first connection to the server (which it does to check the server answers)."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class ReceivedRequest:
    method: str
    path: str
    headers: email.message.Message  # case-insensitive, as HTTP header names are
    body: bytes


@dataclass
class WebhookServer:
    """An HTTP server that keeps every request (`received`) and answers each with the next
    status of `statuses` (200 once they run out). A status given as (code, location) is a
    redirect there."""

    received: list[ReceivedRequest] = field(default_factory=list)
    statuses: deque = field(default_factory=deque)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/hooks/budget") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def posts(self) -> list[ReceivedRequest]:
        with self._lock:
            return [request for request in self.received if request.method == "POST"]

    def start(self) -> "WebhookServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _respond(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            self.received.append(ReceivedRequest(handler.command, handler.path, handler.headers, body))
            status = self.statuses.popleft() if self.statuses else 200
        location = None
        if isinstance(status, tuple):
            status, location = status
        reply = b'{"ok": true}' if 200 <= status < 300 else b'{"error": "try again"}'
        handler.send_response(status)
        if location:
            handler.send_header("Location", location)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(reply)))
        handler.end_headers()
        handler.wfile.write(reply)

    def _handler_class(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                server._respond(self)

            def do_GET(self):
                server._respond(self)

            def log_message(self, format, *args):
                pass

        return Handler
