"""The web server: the monitor page and its JSON API, on an aiohttp loop of its own thread.

Frames are pulled: a tile asks ``/api/frame/<camera>?after=<trigger_index>`` and gets a newer
frame as a JPEG (long-polled up to :data:`LONG_POLL_S`; while poses flow, the frame of the
newest Pose2D, else the newest frame), made by the frame encoder (:mod:`.encode`), which several
browsers share. The API (every route also answers a JSON error): ``GET /api/config`` (cameras,
keypoints, skeleton, rules and their regions), ``GET /api/state`` (health, pose, latency
histogram, rules, event log, the monitor's stats), ``GET /api/frame/<camera>?after=N``
(image/jpeg; headers ``X-Trigger-Index``, ``X-Pose-Index`` and ``X-Keypoints``: JSON
``[[x, y, conf] | null, ...]`` in JPEG pixels), ``GET /api/pose3d?after=N`` (the newest Pose3D,
NaN as null), and the buttons, ``POST /api/clip`` and ``POST /api/ttl`` (:mod:`.buttons`). Every
request passes the guard (:mod:`.security`) first. The server reads the state, waits on the
bridge (:mod:`.bridge`) and gets the monitor's stats from a callable: it holds no monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web

from rigstream.app.monitor.bridge import Waker
from rigstream.app.monitor.buttons import MAX_BODY_BYTES, TTL_WIDTH_MS, Buttons
from rigstream.app.monitor.encode import MAX_FPS, FrameEncoder
from rigstream.app.monitor.page import json_safe, rig_rules, rule_regions, skeleton_for
from rigstream.app.monitor.security import Guard, json_error
from rigstream.app.monitor.state import MonitorState
from rigstream.config import InputError, RigConfig

LONG_POLL_S = 1.0
"""How long a frame or pose request waits for something newer before answering 204."""

PAGE_FILES = {"/": ("index.html", "text/html"), "/monitor.js": ("monitor.js", "text/javascript"),
              "/monitor.css": ("monitor.css", "text/css")}


class WebServer:
    """The aiohttp app on its own thread and event loop. It is given what it serves: the rig (for
    ``/api/config``), the state, the bridge it waits on, the frame encoder, the buttons, the token
    (None on loopback) and ``stats``, the monitor's stats for ``/api/state``."""

    def __init__(self, rig: RigConfig, state: MonitorState, waker: Waker, encoder: FrameEncoder,
                 buttons: Buttons, token: str | None, stats: Callable[[], dict[str, Any]]) -> None:
        self.rig = rig
        self.state = state
        self.waker = waker
        self.encoder = encoder
        self.buttons = buttons
        self.stats = stats
        self.guard = Guard(token)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._pages = {route: resources.files("rigstream.app").joinpath("monitor_page", name).read_bytes()
                       for route, (name, _) in PAGE_FILES.items()}
        self._config = self._make_config()

    @property
    def clients(self) -> int:
        """Requests being answered now."""
        return self.guard.clients

    def _make_config(self) -> dict[str, Any]:
        rig = self.rig
        keypoints = self.state.keypoints
        return json_safe({
            "rig": rig.name, "rate_hz": rig.trigger.rate_hz,
            "cameras": [{"name": c.name, "width": c.width, "height": c.height,
                         "pixel_format": c.pixel_format} for c in rig.cameras],
            "keypoints": keypoints,
            "skeleton": [list(e) for e in skeleton_for(self.state.card_skeleton, keypoints)],
            "rules": [{k: v for k, v in r.items() if k != "when"} for r in rig_rules(rig)],
            "regions": rule_regions(rig),
            "clip": {"pre_s": rig.ring_buffer.pre_s, "post_s": rig.ring_buffer.post_s},
            "ttl_width_ms": TTL_WIDTH_MS, "max_fps": MAX_FPS,
        })

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self, host: str, port: int) -> int:
        """Start the server thread; returns the bound port. InputError if it cannot listen."""
        ready = threading.Event()
        result: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._serve, args=(host, port, ready, result),
                                        name="monitor-web", daemon=True)
        self._thread.start()
        ready.wait(30)
        if "error" in result:
            raise InputError(f"monitor: cannot listen on {host}:{port}: {result['error']}")
        if "port" not in result:
            raise InputError(f"monitor: the web server did not start on {host}:{port} within 30 s")
        return int(result["port"])

    def _serve(self, host: str, port: int, ready: threading.Event, result: dict[str, Any]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=1.0)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, host, port)
            loop.run_until_complete(site.start())
        except OSError as exc:
            result["error"] = str(exc)
            loop.run_until_complete(runner.cleanup())
            loop.close()
            ready.set()
            return
        self._stopping = asyncio.Event()
        self.buttons.open()  # the clip socket lives on this thread
        self.loop = loop
        self.waker.loop = loop
        result["port"] = runner.addresses[0][1]
        ready.set()
        try:
            loop.run_until_complete(self._stopping.wait())
        finally:
            self.waker.loop = None
            loop.run_until_complete(runner.cleanup())
            self.buttons.close()
            loop.close()

    def stop(self) -> None:
        loop, stopping = self.loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- the app ----------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard.middleware()], client_max_size=MAX_BODY_BYTES)
        app.router.add_get("/", self._page)
        app.router.add_get("/monitor.js", self._page)
        app.router.add_get("/monitor.css", self._page)
        app.router.add_get("/api/config", self._get_config)
        app.router.add_get("/api/state", self._get_state)
        app.router.add_get("/api/frame/{camera}", self._get_frame)
        app.router.add_get("/api/pose3d", self._get_pose3d)
        app.router.add_post("/api/clip", self.buttons.post_clip)
        app.router.add_post("/api/ttl", self.buttons.post_ttl)
        return app

    async def _page(self, request: web.Request) -> web.StreamResponse:
        kind = PAGE_FILES[request.path][1]
        return web.Response(body=self._pages[request.path], content_type=kind,
                            headers={"Cache-Control": "no-cache"})

    async def _get_config(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._config, headers={"Cache-Control": "no-store"})

    async def _get_state(self, request: web.Request) -> web.StreamResponse:
        state = self.state.snapshot()
        state["monitor"] = json_safe(self.stats())
        return web.json_response(state, headers={"Cache-Control": "no-store"})

    def _after(self, request: web.Request) -> int:
        raw = request.query.get("after", "-1")
        try:
            return int(raw)
        except ValueError:
            raise web.HTTPBadRequest(
                reason=f"after: expected an integer trigger index, got {raw!r}") from None

    async def _get_frame(self, request: web.Request) -> web.StreamResponse:
        camera = request.match_info["camera"]
        if camera not in self.state.feeds:
            return json_error(404, f"no camera named {camera!r} (cameras: {', '.join(self.state.cameras)})")
        after = self._after(request)
        waker, state = self.waker, self.state
        # With poses flowing, wait for a frame that has its keypoints (the pose engine may run
        # behind the cameras); else, or if none comes, the newest frame.
        posed = state.pose_live() and await waker.wait_for(
            "pose2d", lambda: state.has_posed_frame_after(camera, after), LONG_POLL_S)
        if not posed and not await waker.wait_for(
                camera, lambda: state.has_frame_after(camera, after), LONG_POLL_S):
            newest = str(state.feeds[camera].newest_index)
            return web.Response(status=204, headers={"Cache-Control": "no-store", "X-Newest-Index": newest})
        encoded = await self.encoder.newer_than(camera, after)
        if encoded is None:
            return web.Response(status=204, headers={"Cache-Control": "no-store"})
        state.served[camera] += 1
        return web.Response(body=encoded.jpeg, content_type="image/jpeg",
                            headers={**encoded.headers, "Cache-Control": "no-store",
                                     "X-Newest-Index": str(state.feeds[camera].newest_index)})

    async def _get_pose3d(self, request: web.Request) -> web.StreamResponse:
        after = self._after(request)
        if not await self.waker.wait_for(
                "pose3d", lambda: self.state.pose3d_after(after) is not None, LONG_POLL_S):
            return web.Response(status=204, headers={"Cache-Control": "no-store"})
        pose = self.state.pose3d_after(after)
        assert pose is not None
        body = {"trigger_index": pose.trigger_index, "t_pi_ns": pose.t_pi_ns, "keypoints": pose.keypoints,
                "xyz": pose.xyz, "score": pose.score, "edges": self.state.edges_for(pose.keypoints)}
        return web.json_response(json_safe(body), headers={"Cache-Control": "no-store"})
