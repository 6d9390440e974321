"""The simulated apparatus: inputs driven by the simulated animal, as the real sensors are by
the real one.

An input with a ``sim`` section (``inputs[i].sim: {keypoint, min, max}``) is active while that
keypoint of the simulated animal is inside the box (world mm, the arena's frame). The animal is
the cameras' (:class:`~rigstream.acquisition.sim_world.AnimalMotion`, seed 0, posed at
:func:`~rigstream.acquisition.sim_camera.sim_pose_time_s`), so the sensor and the video agree.
The sensor is looked at once per camera pulse, when the frames are exposed: a touch that
begins at pulse ``k`` makes its edge at pulse ``k``'s time, so every edge's truth is a trigger
index (:meth:`SimApparatus.truth` lists them all, for tests).

It runs inside the simulated trigger daemon's process and drives the simulated pins the way
wires would: it watches the camera line's edges (``pins.watch``) and changes the input's level
(``pins.inject``), which then goes through the same debounce, callbacks and publishing as a
real input. The pose of each pulse is computed in a thread of its own, never in the pulse
thread. It knows nothing of the firmware: ``pins`` is anything with ``watch``, ``inject`` and
``settle`` (the simulated pin backend).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

import numpy as np

from rigstream.acquisition import sim_world
from rigstream.acquisition.sim_camera import sim_pose_time_s
from rigstream.config import ConfigError, InputConfig, RigConfig

logger = logging.getLogger(__name__)


class SimApparatus:
    """The rig's simulated inputs, one state machine each."""

    def __init__(self, rig: RigConfig) -> None:
        self.rig = rig
        self.lines: list[tuple[InputConfig, int, np.ndarray, np.ndarray]] = []
        for i, cfg in enumerate(rig.inputs):
            if cfg.sim is None:
                continue
            if cfg.sim.keypoint not in sim_world.KEYPOINTS:
                raise ConfigError(f"inputs[{i}] {cfg.name!r}: sim.keypoint {cfg.sim.keypoint!r} is not one "
                                  f"of the simulated animal's ({', '.join(sim_world.KEYPOINTS)})")
            self.lines.append((cfg, sim_world.KEYPOINTS.index(cfg.sim.keypoint),
                               np.asarray(cfg.sim.min, float), np.asarray(cfg.sim.max, float)))
        self.motion = sim_world.AnimalMotion()
        self.state = {cfg.name: False for cfg, *_ in self.lines}
        self._truth: list[tuple[str, int, bool]] = []
        self._queue: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._pins: Any = None
        self._pulses = 0

    def __bool__(self) -> bool:
        return bool(self.lines)

    def levels_at(self, trigger_index: int) -> list[tuple[InputConfig, int]]:
        """The inputs whose state changes at pulse ``trigger_index``, with their new electrical
        level; updates the states and the truth."""
        pose = self.motion.pose_at(sim_pose_time_s(self.rig, trigger_index))
        changed = []
        for cfg, k, lo, hi in self.lines:
            inside = bool(np.all(pose[k] >= lo) and np.all(pose[k] <= hi))
            if inside != self.state[cfg.name]:
                self.state[cfg.name] = inside
                self._truth.append((cfg.name, trigger_index, inside))
                active = 1 if cfg.active == "high" else 0
                changed.append((cfg, active if inside else 1 - active))
        return changed

    def truth(self) -> list[tuple[str, int, bool]]:
        """Every change so far: (input, trigger index, active)."""
        return list(self._truth)

    def attach(self, pins: Any) -> None:
        """Drive ``pins``' inputs from now on, at each camera pulse."""
        self._pins = pins
        # lines at rest: inactive (a pulled-up switch to ground rests high)
        for cfg, *_ in self.lines:
            pins.inject(cfg.pin, 0 if cfg.active == "high" else 1, None)
        self._thread = threading.Thread(target=self._run, name="sim-apparatus", daemon=True)
        self._thread.start()
        pins.watch(self.rig.trigger.camera_pin, self._camera_edge)
        logger.info("sim apparatus: %s", ", ".join(f"{cfg.name} on pin {cfg.pin} ({cfg.sim.keypoint} in "
                                                   f"{cfg.sim.min}..{cfg.sim.max} mm)"
                                                   for cfg, *_ in self.lines if cfg.sim is not None))

    def _camera_edge(self, level: int, t_ns: int) -> None:
        """From the pulse thread: hand the rising edge on (no work here)."""
        if level:
            self._queue.put((self._pulses, t_ns))
            self._pulses += 1

    def _run(self) -> None:
        pins = self._pins
        while True:
            item = self._queue.get()
            if item is None:
                return
            k, t_ns = item
            for cfg, level in self.levels_at(k):
                pins.inject(cfg.pin, level, t_ns)
            # A simulated level changes only at a pulse, so it holds until the next one: a change
            # whose debounce is shorter than the period is confirmed now, not a period later.
            pins.settle(t_ns + self.rig.trigger.period_ns - 1)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(5.0)
            self._thread = None
