"""The page's buttons: ``POST /api/clip`` and ``POST /api/ttl``, and the limits on pressing them.

A POST body is decoded as a typed message (:class:`ClipRequest`, :class:`TtlRequest`): anything
else is a 400 naming what was wrong, a body over :data:`MAX_BODY_BYTES` a 413. Only a stuck key
or a script presses faster than the rig should act: a clip request within
:data:`CLIP_INTERVAL_S` of the last one sent is merged into that clip or refused, test TTLs past
:data:`TTLS_PER_S` a second are refused (429); each refusal is answered with its reason and
counted (the monitor's stats, ``buttons``). What a press asks of the rig goes through
:class:`Controls` (the rig controls, given in); what happened goes to the page's event log.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Protocol, TypeVar

import msgspec
from aiohttp import web

from rigstream import protocol
from rigstream.app.monitor.page import json_safe
from rigstream.app.monitor.security import json_error
from rigstream.config import RigConfig
from rigstream.protocol import Event

logger = logging.getLogger(__name__)

TTL_WIDTH_MS = 10.0
"""Width of the test TTL pulse that the page's button fires."""
MAX_TTL_WIDTH_MS = 1000.0
"""The widest test TTL the page may ask for."""
TTLS_PER_S = 5
"""Test TTLs the page may fire in any one second, at most; more are refused, not queued. A
person pressing the button stays far below it, and each pulse drives the rig's output line (a
stimulus, a valve), so a stuck key or a script must not fire it hundreds of times."""
CLIP_INTERVAL_S = 1.0
"""The least time between two clip requests the page sends to the ring buffer. A press sooner
is merged into the last one's clip while that clip's window (``ring_buffer.post_s`` after it)
still holds the moment pressed, else refused: a flood of presses costs the ring buffer one clip,
never a rule's clip its rows."""
MAX_BODY_BYTES = 4096
"""The largest POST body the monitor reads (the buttons send a few bytes)."""


class ClipRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /api/clip``: nothing to ask (the clip has the rig's window)."""


class TtlRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of ``POST /api/ttl``."""

    width_ms: Annotated[float, msgspec.Meta(gt=0, le=MAX_TTL_WIDTH_MS)] = TTL_WIDTH_MS


Body = TypeVar("Body", ClipRequest, TtlRequest)


class Refused(Exception):
    """A press the monitor does not act on: its HTTP status, a short reason and what to say."""

    def __init__(self, status: int, reason: str, text: str) -> None:
        super().__init__(text)
        self.status, self.reason, self.text = status, reason, text


class Controls(Protocol):
    """What the buttons ask of the rig (:class:`~.controls.RigControls`)."""

    def open(self) -> None: ...

    def save_clip(self) -> Event | None: ...

    def fire_ttl(self, width_ms: float) -> protocol.Reply: ...

    def close(self) -> None: ...


class Buttons:
    """The two buttons' handlers, their limits and their counts. Runs on the web server's event
    loop, which opens and closes the controls (:meth:`open`, :meth:`close`) on its own thread;
    ``log(kind, text)`` writes the page's event log."""

    def __init__(self, controls: Controls, rig: RigConfig, log: Callable[[str, str], None]) -> None:
        self.controls = controls
        self.rig = rig
        self.log = log
        self.presses = {b: collections.Counter[str]() for b in ("clip", "ttl")}
        """Presses of each button by outcome: ``sent`` (or ``merged``, a clip)."""
        self.refused = {b: collections.Counter[str]() for b in ("clip", "ttl")}
        """Presses of each button refused, by reason."""
        self._refusal_logged = dict.fromkeys(self.refused, -math.inf)
        self._clip_sent_at = -math.inf
        """When the last clip request went to the ring buffer (monotonic s)."""
        self._ttls_sent: collections.deque[float] = collections.deque(maxlen=TTLS_PER_S)
        """When the newest test TTLs were sent (monotonic s)."""

    def open(self) -> None:
        self.controls.open()

    def close(self) -> None:
        self.controls.close()

    def stats(self) -> dict[str, Any]:
        """Presses of each button sent, merged and refused (the monitor's stats, ``buttons``)."""
        return {b: {**self.presses[b], "refused": dict(self.refused[b])} for b in self.presses}

    async def post_clip(self, request: web.Request) -> web.StreamResponse:
        return await self._press("clip", request, ClipRequest, self._save_clip)

    async def post_ttl(self, request: web.Request) -> web.StreamResponse:
        return await self._press("ttl", request, TtlRequest, self._fire_ttl)

    async def _press(self, button: str, request: web.Request, kind: type[Body],
                     act: Callable[[Body], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """``act`` on the body decoded as ``kind``; a refusal is answered with its reason,
        counted and logged (once a second at most per button, so a flood of presses does not
        push the rules out of the page's event log)."""
        try:
            return await act(await self._body(request, kind))
        except Refused as refused:
            counts = self.refused[button]
            counts[refused.reason] += 1
            now = time.monotonic()
            if now - self._refusal_logged[button] >= 1.0:
                self._refusal_logged[button] = now
                text = f"{button} refused ({refused.reason}, {sum(counts.values())} so far): {refused.text}"
                logger.warning("monitor: %s", text)
                self.log("button", text)
            return web.json_response({"ok": False, "refused": refused.reason, "error": refused.text},
                                     status=refused.status, headers={"Cache-Control": "no-store"})

    async def _body(self, request: web.Request, kind: type[Body]) -> Body:
        """The POST body as a ``kind`` message (none: its defaults). Its fields are typed, so a
        non-object, a bool for a number, a value out of range, an unknown field or nesting are
        refused at the first byte that does not fit (nothing recurses into them)."""
        size = request.content_length
        try:
            if size is not None and size > MAX_BODY_BYTES:
                raise web.HTTPRequestEntityTooLarge(MAX_BODY_BYTES, size)
            raw = await request.read()  # client_max_size stops a body sent without a length
        except web.HTTPRequestEntityTooLarge:
            raise Refused(413, "too-large", f"body: expected at most {MAX_BODY_BYTES} bytes, got "
                                            f"{size if size is not None else 'more'}") from None
        try:
            return msgspec.json.decode(raw or b"{}", type=kind)
        except msgspec.DecodeError as exc:  # ValidationError included
            raise Refused(400, "invalid-body", f"body: {exc}") from None

    async def _save_clip(self, body: ClipRequest) -> web.StreamResponse:
        now = time.monotonic()
        ring = self.rig.ring_buffer
        ago, post_s = now - self._clip_sent_at, ring.post_s
        if ago < post_s:
            self.presses["clip"]["merged"] += 1
            return web.json_response({"ok": True, "merged": True, "message": (
                f"merged: this moment is in the clip asked {ago:.2f} s ago (its window holds "
                f"{post_s - ago:.2f} s more)")})
        if ago < CLIP_INTERVAL_S:
            raise Refused(429, "too-soon", f"a clip was asked {ago:.2f} s ago and its window has "
                                           f"closed; ask again in {CLIP_INTERVAL_S - ago:.2f} s")
        event = self.controls.save_clip()
        if event is None:
            raise Refused(503, "ring-buffer-busy", "the ring buffer is not taking events (is it running?)")
        self._clip_sent_at = now
        self.presses["clip"]["sent"] += 1
        self.log("button", f"save clip now: asked the ring buffer for [-{ring.pre_s:g} s, "
                           f"+{ring.post_s:g} s] around its latest frame")
        return web.json_response({"ok": True, "event": msgspec.to_builtins(event)})

    async def _fire_ttl(self, body: TtlRequest) -> web.StreamResponse:
        now, sent = time.monotonic(), self._ttls_sent
        if len(sent) == TTLS_PER_S and now - sent[0] < 1.0:
            raise Refused(429, "rate-limit", f"the page fires at most {TTLS_PER_S} test TTLs a "
                                             f"second; ask again in {1.0 - (now - sent[0]):.2f} s")
        sent.append(now)
        self.presses["ttl"]["sent"] += 1
        width_ms = body.width_ms
        loop = asyncio.get_running_loop()
        try:
            reply = await loop.run_in_executor(None, self.controls.fire_ttl, width_ms)
        except TimeoutError as exc:
            self.log("button", f"test TTL: no reply ({exc})")
            return json_error(504, f"the trigger daemon did not answer: {exc}")
        except protocol.ProtocolError as exc:
            self.log("button", f"test TTL: bad reply ({exc})")
            return json_error(502, f"the trigger daemon's reply was malformed: {exc}")
        if not reply.ok:
            self.log("button", f"test TTL refused: {reply.error}")
            return web.json_response({"ok": False, "error": reply.error, "data": reply.data}, status=502)
        data = reply.data
        if data.get("merged"):
            self.log("button", f"test TTL ({width_ms:g} ms) joined TTL #{data.get('index', '?')}, "
                               "which was still high")
        else:
            self.log("button", f"test TTL #{data.get('index', '?')} ({width_ms:g} ms pulse): rising "
                               f"edge {_ms_between(data.get('t_command_ns'), data.get('t_edge_ns'))} "
                               "after the command reached the trigger daemon")
        return web.json_response({"ok": True, "data": json_safe(data)})


def _ms_between(a: Any, b: Any) -> str:
    if isinstance(a, int) and isinstance(b, int) and a >= 0 and b >= 0:
        return f"{(b - a) / 1e6:.2f} ms"
    return "?"
