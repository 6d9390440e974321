"""Who may talk to the monitor: the check every HTTP request passes before its handler runs.

On loopback no token is needed, but requests must then name a loopback host, so a web page
elsewhere cannot reach the monitor by DNS rebinding. Bound to any other address a token is
required: given once as ``?token=`` (it is then kept in a cookie), or in the
``X-Monitor-Token`` header; a request without it gets 401, with a wrong one 403. POSTs must be
JSON from the page's own origin (a cross-site form cannot press the buttons). :class:`Guard`
also turns every failure into a JSON error (:func:`json_error`), so a bug answers one request
with its reason and the page goes on.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

logger = logging.getLogger(__name__)

TOKEN_COOKIE = "rigstream_monitor_token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback IPs (what no other machine can reach)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def json_error(status: int, message: str) -> web.Response:
    """The answer to a request the monitor does not serve: ``{"ok": false, "error": ...}``."""
    return web.json_response({"ok": False, "error": message}, status=status,
                             headers={"Cache-Control": "no-store"})


def refuse_post(request: web.Request) -> str | None:
    """Why a POST is refused (not JSON, or from another origin), or None."""
    if request.content_type != "application/json":
        return f"expected a JSON request (Content-Type: application/json), got {request.content_type!r}"
    origin = request.headers.get("Origin")
    if origin is not None and origin.split("://", 1)[-1] != request.host:
        return f"cross-origin request from {origin} refused"
    return None


class Guard:
    """The middleware in front of every route (see the module); counts the requests being
    answered now (:attr:`clients`)."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.clients = 0
        """Requests being answered now."""

    def middleware(self) -> Any:  # an aiohttp middleware
        @web.middleware
        async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.clients += 1
            try:
                return await self._checked(request, handler)
            finally:
                self.clients -= 1

        return guard

    async def _checked(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Token, same-origin POSTs and JSON errors for every request."""
        token = self.token
        if not token and not is_loopback_host(request.url.host or ""):
            return json_error(403, f"host {request.host!r} refused: without a token the monitor "
                                   f"answers only requests addressed to loopback")
        if token:
            given = (request.query.get("token") or request.headers.get("X-Monitor-Token")
                     or request.cookies.get(TOKEN_COOKIE))
            if not given:
                return json_error(401, "a token is required: open the URL that rigstream monitor "
                                       "printed (it ends in ?token=...)")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return json_error(403, "wrong token")
        if request.method == "POST":
            refused = refuse_post(request)
            if refused is not None:
                return json_error(403, refused)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if request.path.startswith("/api/") or exc.status >= 400:
                return json_error(exc.status, exc.reason)
            raise
        except Exception as exc:  # a bug answers one request with its reason; the page goes on
            logger.exception("monitor: %s %s failed", request.method, request.path)
            return json_error(500, f"{request.path}: {type(exc).__name__}: {exc}")
        if token and request.query.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
        return response
