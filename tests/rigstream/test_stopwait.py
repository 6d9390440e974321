"""StopWait: the stop-then-idle rule every consumer finishes by."""

from __future__ import annotations

import threading
import time

import zmq

from rigstream.component import StopWait
from rigstream.transport import ControlListener


def test_wait_starts_at_the_stop_and_restarts_with_progress():
    stop = threading.Event()
    waiting = StopWait(ControlListener(zmq.Context.instance(), None, "t"), stop, idle_s=0.15)
    assert not waiting.poll() and not waiting.expired
    time.sleep(0.2)
    assert not waiting.expired, "idle time before the stop does not count"
    stop.set()
    assert waiting.poll() and waiting.command is None
    assert not waiting.expired
    time.sleep(0.1)
    waiting.progressed()
    time.sleep(0.1)
    assert not waiting.expired, "progress after the stop restarts the wait"
    assert waiting.since_progress_s < 0.15
    time.sleep(0.1)
    assert waiting.expired
