"""The guard around every request: a request id, a bound on the body, security headers, and a JSON
500 (logged with the request id) when something raises, so one failed run never takes the server down.

A plain ASGI middleware rather than Starlette's BaseHTTPMiddleware: it passes streamed responses
(the diffusion SSE) through untouched and still sees the client hang up.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from contextvars import ContextVar

from http import HTTPStatus

from fastapi import HTTPException

log = logging.getLogger("glassbox.requests")

# The current request's id, for log lines and error bodies written deeper down.
request_id: ContextVar[str] = ContextVar("request_id", default="-")

_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")  # a proxy's X-Request-ID is kept only if it is this tame

SECURITY_HEADERS = {
    # Plotly sets inline styles on its SVG; scripts only from this server, never inline.
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'self'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
# Swagger UI starts itself with one inline script: /docs alone may run it.
DOCS_CSP = SECURITY_HEADERS["content-security-policy"].replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")


class BodyTooLarge(HTTPException):
    """Raised while the body is read, so FastAPI's body parsing passes it on as the 413 it is."""

    def __init__(self, limit: int):
        super().__init__(413, f"The request body is larger than {limit:,} bytes, the limit for this endpoint.")


class Guard:
    def __init__(self, app, max_body_bytes: int, self_bounded: frozenset[str] = frozenset()):
        """self_bounded: paths that read their body under a bound of their own (an upload, with its
        own message); every other body is held to max_body_bytes."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.self_bounded = self_bounded

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _CLIENT_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        path = scope["path"]
        limit = float("inf") if path in self.self_bounded else self.max_body_bytes
        status = 0

        async def send_guarded(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = {**SECURITY_HEADERS, "x-request-id": rid}
                if path == "/docs":
                    extra["content-security-policy"] = DOCS_CSP
                kept = [(k, v) for k, v in message.get("headers", []) if k.decode("latin-1").lower() not in extra]
                message["headers"] = kept + [(k.encode(), v.encode()) for k, v in extra.items()]
            await send(message)

        received = 0

        async def receive_bounded():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            declared = headers.get(b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                await self._error(send_guarded, 413, BodyTooLarge(limit).detail)  # refused before reading a byte
            else:
                await self.app(scope, receive_bounded, send_guarded)
        except BodyTooLarge as e:  # raised outside FastAPI's body parsing (a streamed read)
            if not status:
                await self._error(send_guarded, 413, e.detail)
        except Exception as e:  # noqa: BLE001 - the server answers and goes on
            log.exception("request %s %s %s failed", rid, scope["method"], path)
            if not status:
                await self._error(send_guarded, 500, f"{type(e).__name__}: {e}".strip()[:500])
        finally:
            if status >= 400:
                log.warning("request %s %s %s -> %d", rid, scope["method"], path, status)
            request_id.reset(token)

    @staticmethod
    async def _error(send, status: int, detail: str) -> None:
        body = json.dumps(error_body(status, detail)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def http_reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "error"


def error_body(status: int, detail: str, error: str | None = None) -> dict:
    """Every error the API sends: {"error", "detail", "request_id"} (the id is in the server's log too)."""
    return {"error": error or http_reason(status), "detail": detail, "request_id": request_id.get()}
