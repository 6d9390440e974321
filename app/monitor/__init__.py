"""The live monitor: a web page that shows a running rig (``rigstream monitor``).

Two threads share one state store: the receive loop (the calling thread) takes what the rig
publishes into it, and the web server (aiohttp, its own thread and event loop) serves the page
from it. The parts, each a module with one job, and the direction of their arrows (A -> B: A
calls or reads B; nothing points back):

- :mod:`.compose` -> every part below: builds them and wires them, in :class:`Monitor` (the
  component: loop, lifecycle, summary) and :func:`run_monitor`. Nothing imports it but this.
- :mod:`.receiver` -> :mod:`.state` (writes frames, poses, rules, health), and calls a
  ``notify(key)`` it is given (the bridge's); it knows no server.
- :mod:`.server` -> :mod:`.state` (reads), :mod:`.bridge` (waits for news), :mod:`.encode`
  (JPEGs), :mod:`.buttons` (the POST routes), :mod:`.security` (the guard), :mod:`.page` (the
  config), and a ``stats()`` callable it is given for ``/api/state``; it holds no monitor.
- :mod:`.buttons` -> the rig controls through a small protocol (:class:`.buttons.Controls`),
  a ``log`` callable (the state's event log), :mod:`.security` and :mod:`.page` (JSON helpers).
- :mod:`.controls` -> the ring buffer and the trigger daemon, over ZeroMQ.
- :mod:`.encode` -> :mod:`.state` (the frame to show); :mod:`.state` -> :mod:`.page`.
- :mod:`.bridge`, :mod:`.security` and :mod:`.page` import no other part.

The page's assets are in ``rigstream.app.monitor_page``.
"""

from __future__ import annotations

from rigstream.app.monitor.compose import Monitor, run_monitor

__all__ = ["Monitor", "run_monitor"]
