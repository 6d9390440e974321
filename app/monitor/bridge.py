"""The bridge between the receive thread and the web server's event loop.

The receive loop runs on a plain thread; the web server's requests wait on an asyncio loop. A
:class:`Waker` lets a request long-poll for news (a camera's frame, a pose) without polling: the
receive thread calls :meth:`Waker.notify` with a key, which wakes the requests waiting on that
key, and only those, on their own loop. The receiver gets ``notify`` alone; the server gets the
waker and sets its loop while it serves.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable


class Waker:
    """Lets web requests wait for news from the receive thread without polling."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._events: dict[str, asyncio.Event] = {}
        self._waiting: collections.Counter[str] = collections.Counter()
        self._scheduled: set[str] = set()

    def notify(self, key: str) -> None:
        """Called by the receive thread: wake the requests waiting on ``key``."""
        loop = self.loop
        if loop is None or not self._waiting.get(key) or key in self._scheduled:
            return
        self._scheduled.add(key)
        try:
            loop.call_soon_threadsafe(self._wake, key)
        except RuntimeError:  # the loop has closed
            self._scheduled.discard(key)

    def _wake(self, key: str) -> None:
        self._scheduled.discard(key)
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    async def wait_for(self, key: str, ready: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``ready()`` (re-checked on each notify of ``key``) or the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not ready():
            left = deadline - loop.time()
            if left <= 0:
                return False
            event = self._events.setdefault(key, asyncio.Event())
            self._waiting[key] += 1
            try:
                if ready():
                    return True
                await asyncio.wait_for(event.wait(), left)
            except asyncio.TimeoutError:
                return ready()
            finally:
                self._waiting[key] -= 1
        return True
