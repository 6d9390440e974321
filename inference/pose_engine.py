"""The live pose engine: frame sets in (latest-wins), one batch of all views, Pose2D out.

It subscribes to the assembler's frame sets, and on each turn drains what has queued and runs
only the newest set, so latency never grows with a backlog; the sets it passed over are
counted from the frame-set sequence numbers (``skipped``). A frame set carries no pixels, only
each view's slot in its camera's shared-memory frame store: the engine preprocesses the views
straight from the slots into its batch and then checks that each slot still holds its frame (a
view overwritten meanwhile, because the engine ran a whole ring behind, is posed as missing
and counted in ``overwritten``). All views of a set go through the engine as one batch.
Keypoints are mapped back to each camera's full-frame pixels and published as
:class:`~rigstream.protocol.Pose2D`, and written to ``pose2d.csv`` (one row per frame set and
camera, DeepLabCut-style ``<kp>_x, <kp>_y, <kp>_likelihood`` columns) with the per-set timing
in ``pose_timing.csv``. The tables (and ``firings.csv``) are flushed every
``recording.flush_interval_s``, as the recorder's are, so a killed engine loses at most that
interval of rows; a restarted one appends to them.

With a calibration in the rig, the same process then triangulates the views (confidence
weighted, worst view dropped where it disagrees), optionally filters and predicts ahead, and
publishes :class:`~rigstream.protocol.Pose3D` right after the Pose2D; ``pose3d.csv`` holds
the triangulated points in anipose's layout (``fnum`` = trigger index), and
``pose3d_filtered.csv`` what was published when a filter is on (filtered, or the filter's
prediction ``predict_ms`` past the pulse).

Setup problems (a corrupt model file, keypoints that differ from the rig file's, a camera
image the model cannot take) raise :class:`PoseSetupError` before anything runs.

Length: one job in stages (sets, preprocessing, inference, 2D, 3D, rules and their actions,
publishing and tables); just over 600 lines, each stage a method, read in order.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import zmq

from rigstream import protocol
from rigstream.calibration import CalibrationError
from rigstream.component import Component, StopWait
from rigstream.config import ConfigError, RigConfig
from rigstream.frames import CameraStores
from rigstream.framestore import FrameStore
from rigstream.inference.actions import ActionRunner, Chain
from rigstream.inference.anipose_csv import points3d_columns
from rigstream.inference.backends import make_filter, open_engine
from rigstream.inference.engines import Engine
from rigstream.inference.filters import PoseFilter
from rigstream.inference.input_feed import InputFeed
from rigstream.inference.modeldir import ModelError, PoseModel, load_model, resolve_model_path
from rigstream.inference.preprocess import ViewError, ViewTransform
from rigstream.inference.rules import RuleEngine, RuleError, validate_rules
from rigstream.inference.triangulate import Points3D, Triangulator
from rigstream.latency import LatencySamples, latency_stats
from rigstream.protocol import Pose2D, Pose3D
from rigstream.sync.assembler import NewestSet
from rigstream.sync.inputs import LIVE_INPUTS_FILE
from rigstream.sync.live_clock import live_neural_time
from rigstream.transport import (
    ControlListener,
    Publisher,
    SignalStop,
    StatusReporter,
    subscriber,
    trigger_client_keys,
)

logger = logging.getLogger(__name__)

LOG_FIRST = 5
LOG_EVERY_S = 10.0
"""Views lost to an overwritten slot: the first few are logged, then one line this often."""

FINISH_IDLE_S = 1.0
"""After a stop, finish once the last pulse's set was seen and nothing came for this long."""


class PoseSetupError(ConfigError):
    """The rig's pose section cannot run: names the model, camera or file at fault."""


@dataclass(frozen=True)
class PosePlan:
    model: PoseModel
    transforms: list[ViewTransform]
    """One per rig camera, in the rig's camera order (= batch order)."""
    triangulator: Triangulator | None = None
    """Live 3D, when the rig has a calibration and two or more cameras."""


def plan_pose(rig: RigConfig, open_check: bool = True) -> PosePlan:
    """Check the rig's pose section against its model; raises PoseSetupError."""
    cfg = rig.pose
    if cfg is None or not cfg.enabled:
        raise PoseSetupError(f"rig {rig.name!r} has no enabled pose section")
    try:
        model = load_model(resolve_model_path(cfg.model))
    except ModelError as exc:
        raise PoseSetupError(f"pose.model: {exc}") from None
    if cfg.keypoints is not None and list(cfg.keypoints) != model.keypoints:
        only_rig = [k for k in cfg.keypoints if k not in model.keypoints]
        only_model = [k for k in model.keypoints if k not in cfg.keypoints]
        detail = (f"rig only: {only_rig or '-'}; model only: {only_model or '-'}"
                  if only_rig or only_model else "same names, different order")
        raise PoseSetupError(f"pose.keypoints: the rig file expects {list(cfg.keypoints)} but model "
                             f"{model.card.name} ({model.folder}) has {model.keypoints} ({detail})")
    transforms = []
    for cam in rig.cameras:
        crop = cfg.crops.get(cam.name)
        try:
            transforms.append(ViewTransform.make(
                cam.name, (cam.width, cam.height), (model.card.input.width, model.card.input.height),
                tuple(crop) if crop else None))  # type: ignore[arg-type]
        except ViewError as exc:
            raise PoseSetupError(f"pose: {exc} (model {model.folder})") from None
    if open_check and cfg.engine == "onnxruntime":
        try:  # a corrupt or mismatched ONNX file fails here, before the session starts
            open_engine("onnxruntime", model, len(rig.cameras), threads=1).close()
        except ModelError as exc:
            raise PoseSetupError(f"pose.model: {exc}") from None
    triangulator = plan_triangulation(rig)
    try:
        validate_rules(rig.rules, model.keypoints, [c.name for c in rig.cameras],
                       has_3d=triangulator is not None, inputs=[i.name for i in rig.inputs],
                       outputs=[o.name for o in rig.outputs])
    except RuleError as exc:
        raise PoseSetupError(f"{exc} (model {model.card.name}: {model.folder})") from None
    return PosePlan(model, transforms, triangulator)


def plan_triangulation(rig: RigConfig) -> Triangulator | None:
    """The live triangulator for the rig's cameras (rig order), or None without a calibration."""
    cfg = rig.pose
    if cfg is None or not cfg.triangulation.enabled or rig.calibration is None or len(rig.cameras) < 2:
        return None
    try:
        from rigstream.calibration import Calibration

        cal = Calibration.load(rig.calibration).for_rig_cameras(rig.cameras)
        return Triangulator(cal, cfg.triangulation)
    except CalibrationError as exc:
        raise PoseSetupError(f"calibration: {exc}") from None


def make_pose_filter(rig: RigConfig) -> PoseFilter | None:
    assert rig.pose is not None
    tri = rig.pose.triangulation
    if tri.filter == "none":
        return None
    params = msgspec.to_builtins(tri.one_euro if tri.filter == "one_euro" else tri.kalman)
    return make_filter(tri.filter, max_gap_s=tri.max_gap_s, **params)


def make_engine(rig: RigConfig, plan: PosePlan) -> Engine:
    cfg = rig.pose
    assert cfg is not None
    views = len(rig.cameras)
    try:
        if cfg.engine == "onnxruntime":
            return open_engine("onnxruntime", plan.model, views, threads=cfg.threads)
        if cfg.engine == "torch":
            import torch

            torch.set_num_threads(cfg.threads)
            return open_engine("torch", plan.model, views, device=cfg.device)
        return open_engine("tensorrt", plan.model, views, cache_dir=cfg.engine_cache)
    except ModelError as exc:
        raise PoseSetupError(f"pose.model: {exc}") from None


class PoseEngineNode(Component):
    name = "pose engine"

    def __init__(self, rig: RigConfig, run: str, out: str | Path | None = None,
                 ctx: zmq.Context | None = None, status_address: str | None = None,
                 engine: Engine | None = None, plan: PosePlan | None = None) -> None:
        self.rig = rig
        ctx = ctx or zmq.Context.instance()
        self.plan = plan or plan_pose(rig, open_check=False)  # make_engine opens the model itself
        self.engine = engine or make_engine(rig, self.plan)
        self.cameras = [c.name for c in rig.cameras]
        self.keypoints = self.plan.model.keypoints
        self.model_name = self.plan.model.card.name
        self.stores = CameraStores(rig, run, ctx, "pose")
        """The cameras' frame stores, whose slots the frame sets name (read in place)."""
        direct = rig.pose is None or rig.pose.sets == "direct"
        self.sub = subscriber(ctx, [] if direct else rig.address("framesets", run), hwm=8)
        self.direct = NewestSet(self.stores, [c.name for c in rig.cameras],
                                rig.transport.frameset_deadline_ms / 1000) if direct else None
        """``pose.sets: direct``: sets found in the stores (else the assembler's messages)."""
        self._camera_index = {c: i for i, c in enumerate(self.cameras)}
        self.pub = Publisher(ctx, rig.address("poses", run), hwm=1000)
        self.status = StatusReporter(ctx, status_address, "pose")
        self.control = ControlListener(ctx, status_address and rig.address("control", run), "pose")
        self.malformed = protocol.MalformedCounter("pose engine")
        self.batch = np.zeros(self.engine.input_shape, np.float32)
        self.frame_xyc = np.full((len(self.cameras), len(self.keypoints), 3), np.nan, np.float32)
        self.seq = 0
        self.posed = 0
        self.skipped = 0
        self.out_of_order = 0
        self.overwritten: dict[str, int] = dict.fromkeys(self.cameras, 0)
        """Views whose slot was overwritten before (or while) the engine read them: posed
        without that camera."""
        self.no_store: dict[str, int] = dict.fromkeys(self.cameras, 0)
        """Views of a camera whose frame store could not be opened."""
        self._lost_logged_at = 0.0
        self.last_set_seq = -1
        self.last_index = -1
        self.latency_ms = LatencySamples()
        self.stage_ms: dict[str, LatencySamples] = {
            k: LatencySamples() for k in ("wait", "preprocess", "infer", "postprocess")}
        self.tri = self.plan.triangulator
        self.filter = make_pose_filter(rig) if self.tri is not None else None
        tri_cfg = rig.pose.triangulation if rig.pose is not None else None
        self.filter_name = tri_cfg.filter if self.filter is not None and tri_cfg else "none"
        """What Pose3D.xyz went through (what the summary and every message say)."""
        self.predict_s = tri_cfg.predict_ms / 1e3 if self.filter is not None and tri_cfg else 0.0
        self.seq3d = 0
        self._known_pulse: tuple[int, int] | None = None
        """The newest set with a pulse time: (trigger index, t_pi_ns)."""
        self.filter_resets = 0
        self.latency_3d_ms = LatencySamples()
        self.stage_3d_ms = {"triangulate": LatencySamples(), "filter": LatencySamples()}
        self.points_3d = 0
        if self.tri is not None:
            self.tri.warm_up()  # compile (or load) the kernel before frame sets arrive
        self._csv = self._timing_csv = None
        self._edges_csv: Any = None
        self._csv3d: list[Any] = []
        self._files: list[Any] = []
        self.flush_interval_s = rig.recording.flush_interval_s
        self._flushed_at = time.monotonic()
        self.neural = live_neural_time(rig, run, ctx)
        """The neural recorder's clock, mapped live (None without one)."""
        self._neural_column = f"live_t_neural_{self.neural.units}" if self.neural is not None else None
        """The tables' column of it (``t_neural_*`` columns are the final mapping's, added after)."""
        if out is not None:
            self._open_files(Path(out))
        self.rules: RuleEngine | None = None
        self.actions: ActionRunner | None = None
        if rig.rules:
            min_score = tri_cfg.min_score if tri_cfg is not None else 0.0
            self.rules = RuleEngine(rig.rules, self.keypoints, min_score_2d=min_score)
            self.actions = ActionRunner(rig, run, ctx, Path(out) if out is not None else None,
                                        trigger_client_keys(rig), neural_column=self._neural_column)
            self._rules_2d = any(r.kind == "2d" for r in rig.rules)
            self._rules_3d = any(r.kind == "3d" for r in rig.rules)
        self.input_feed = InputFeed(ctx, rig.address("pulses", run),
                                    on_sync=self.neural.add_pi if self.neural is not None else None)
        """The apparatus's input edges, for the rules (the session counts this engine among the
        pulse stream's subscribers, so it subscribes with or without rules)."""
        self._set_times = (-1, -1, -1)
        """The newest frame set's last camera frame (node receive time), its arrival here, and
        when the engine began to wait for it (ns): a set complete before that waited in a queue
        while the engine worked on the one before."""
        self._infer_ms = float("nan")

    def _open_files(self, out: Path) -> None:
        """Open the CSVs; a restarted engine (files already there) appends to them."""
        out.mkdir(parents=True, exist_ok=True)
        f, header = _open_table(out / "pose2d.csv")
        t, timing_header = _open_table(out / "pose_timing.csv")
        self._files = [f, t]
        self._csv = csv.writer(f)
        if header:
            self._csv.writerow(["trigger_index", "t_pi_ns", "t_pose_ns", "camera"]
                               + [f"{k}_{c}" for k in self.keypoints for c in ("x", "y", "likelihood")]
                               + ([self._neural_column] if self._neural_column else []))
        self._timing_csv = csv.writer(t)
        if timing_header:
            self._timing_csv.writerow(["trigger_index", "frameset_seq", "skipped_before", "cameras",
                                       "wait_ms", "preprocess_ms", "infer_ms", "postprocess_ms",
                                       "latency_ms"])
        if self.rig.inputs:  # the input edges as this engine saw them, with their live neural time
            fe, edges_header = _open_table(out / LIVE_INPUTS_FILE)
            self._files.append(fe)
            self._edges_csv = csv.writer(fe)
            if edges_header:
                self._edges_csv.writerow(["input", "state", "t_pi_ns", "trigger_index",
                                          *([self._neural_column] if self._neural_column else [])])
        if self.tri is not None:
            names = ["pose3d.csv"] + (["pose3d_filtered.csv"] if self.filter is not None else [])
            live = [self._neural_column] if self._neural_column else []
            columns = points3d_columns(self.keypoints, extra=("t_pi_ns", "t_pose_ns", *live))
            for name in names:
                f3, header3 = _open_table(out / name)
                self._files.append(f3)
                self._csv3d.append(csv.writer(f3))
                if header3:
                    self._csv3d[-1].writerow(columns)

    # -- the loop ------------------------------------------------------------------------------

    def should_stop(self, waiting: StopWait) -> bool:
        """After a stop that names the pulses sent, finish soon after the last one's set;
        otherwise after the usual idle wait."""
        if not waiting.poll():
            return False
        args = waiting.command.args if waiting.command is not None else {}
        seen_last = "pulses" not in args or self.last_index >= int(args["pulses"]) - 1
        idle = waiting.since_progress_s
        return (seen_last and idle > FINISH_IDLE_S) or idle > waiting.idle_s

    def turn(self) -> bool:
        posed = self.step(timeout_ms=20)
        edges = self.input_feed.poll()
        if self.neural is not None:
            self.neural.poll()
        for name, on, t_ns, n in edges:
            if self._edges_csv is not None:
                self._edges_csv.writerow([name, "on" if on else "off", t_ns, n,
                                          *self._neural_cell(self.neural.at(t_ns) if self.neural else None)])
            if self.rules is not None:
                self._input_rules(name, on, t_ns, n)
        if self.actions is not None:
            self.actions.poll()
        self.stores.wait(0)  # the camera headers only wake readers: drop them, open stores
        self.pub.poll_subscriptions()
        if time.monotonic() - self._flushed_at > self.flush_interval_s:
            self.flush()
        return posed

    def flush(self) -> None:
        """Hand every table's buffered rows to the OS: on a schedule, not per row, so a row
        costs no system call and a kill loses at most ``flush_interval_s`` of rows."""
        for f in self._files:
            f.flush()
        if self.actions is not None:
            self.actions.flush()
        self._flushed_at = time.monotonic()

    def finish(self) -> dict[str, Any]:
        if self.actions is not None:
            self.actions.close()  # outstanding TTL replies in, firings.csv written
        summary = self.summary()
        self._close_files()  # on disk before "done": the supervisor reads them next
        return summary

    def step(self, timeout_ms: int) -> bool:
        """Wait for frame sets, run the newest; True if one was posed."""
        t_wait = time.perf_counter()
        t_ready_ns = time.monotonic_ns()
        newest = self._newest_direct(timeout_ms) if self.direct is not None \
            else self._newest_message(timeout_ms)
        if newest is None:
            return False
        t_pre = time.perf_counter()
        t_set_ns = time.monotonic_ns()
        head, views = newest
        if head.seq <= self.last_set_seq or head.trigger_index <= self.last_index:
            self.out_of_order += 1
            logger.warning("pose: frame set %d (seq %d) arrived after %d (seq %d); not posed",
                           head.trigger_index, head.seq, self.last_index, self.last_set_seq)
            return False
        skipped = head.seq - self.last_set_seq - 1 if self.last_set_seq >= 0 else head.seq
        self._set_times = (max((h.t_host_ns for h in views), default=-1), t_set_ns, t_ready_ns)
        self.skipped += skipped
        present = np.zeros(len(self.cameras), bool)
        for h in views:
            i = self._camera_index.get(h.camera)
            if i is None:
                self.malformed(protocol.ProtocolError("unknown-camera", h.camera))
                continue
            present[i] = self._read_view(i, h)
        t_infer = time.perf_counter()
        out = self.engine.infer(self.batch)
        t_post = time.perf_counter()
        xyc = self.frame_xyc
        for i, tf in enumerate(self.plan.transforms):
            if present[i]:
                tf.to_frame(out[i], xyc[i])
            else:
                xyc[i] = np.nan
        msg = Pose2D(seq=self.seq, frameset_seq=head.seq, trigger_index=head.trigger_index,
                     t_pi_ns=head.t_pi_ns, t_host_ns=0, model=self.model_name, keypoints=self.keypoints,
                     views={c: xyc[i].tolist() for i, c in enumerate(self.cameras) if present[i]},
                     missing=[c for i, c in enumerate(self.cameras) if not present[i]], skipped=skipped,
                     t_neural=self.neural.at(head.t_pi_ns) if self.neural is not None else None)
        t_end = time.perf_counter()
        msg.timing_ms = {"wait": round((t_pre - t_wait) * 1e3, 3),
                         "preprocess": round((t_infer - t_pre) * 1e3, 3),
                         "infer": round((t_post - t_infer) * 1e3, 3),
                         "postprocess": round((t_end - t_post) * 1e3, 3)}
        msg.t_host_ns = time.monotonic_ns()
        self._infer_ms = msg.timing_ms["infer"]
        # Decide first, record after: the rules, 3D and the actions they fire come before the
        # messages and table rows, which nothing on the way to a TTL waits for.
        if self.rules is not None and self._rules_2d:
            self._run_rules(msg, msg.t_host_ns, -1)
        found3d = None
        if self.tri is not None:
            found3d = self._pose3d(head)
            if self.rules is not None and self._rules_3d:
                self._run_rules(found3d[0], msg.t_host_ns, found3d[0].t_host_ns)
        self.pub.send(msg)
        latency = (msg.t_host_ns - head.t_pi_ns) / 1e6 if head.t_pi_ns >= 0 else float("nan")
        self.seq += 1
        self.posed += 1
        self.last_set_seq = head.seq
        self.last_index = head.trigger_index
        self.latency_ms.append(latency)
        for k, v in msg.timing_ms.items():
            self.stage_ms[k].append(v)
        self._write(msg, latency)
        if found3d is not None:
            self._record3d(*found3d)
        return True

    def _newest_message(self, timeout_ms: int) -> tuple[protocol.FrameSetHeader,
                                                          list[protocol.FrameHeader]] | None:
        """The newest set the assembler sent (``pose.sets: assembler``)."""
        if not self.sub.poll(timeout_ms, zmq.POLLIN):
            return None
        newest = None
        while True:  # drain: keep only the newest valid set
            try:
                parts = self.sub.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                newest = protocol.decode_frameset(parts)
            except protocol.ProtocolError as err:
                self.malformed(err)
        return newest

    def _newest_direct(self, timeout_ms: int) -> tuple[protocol.FrameSetHeader,
                                                         list[protocol.FrameHeader]] | None:
        """The newest set in the stores themselves (``pose.sets: direct``), sleeping until the
        cameras write one when there is none newer than the last posed."""
        assert self.direct is not None
        return self.direct.wait(self.last_index, timeout_ms / 1e3)

    def _read_view(self, i: int, h: protocol.FrameHeader) -> bool:
        """Preprocess camera ``i``'s frame straight from its store slot into ``batch[i]``;
        False (the set is posed without the view) if the slot no longer holds the frame,
        before or after the read."""
        store = self._store(h.camera)
        n = h.trigger_index
        if store is None:
            self.no_store[h.camera] += 1
            self._log_lost(h, "its frame store is not open")
            return False
        if h.slot != n % store.capacity:
            self.malformed(protocol.ProtocolError(
                "invalid", f"{h.camera} frame {n}: slot {h.slot}, its store has {store.capacity} "
                f"slots (slot {n % store.capacity})"))
            return False
        if not store.holds(n):
            self.overwritten[h.camera] += 1
            self._log_lost(h, "its slot was overwritten before the engine read it")
            return False
        self.plan.transforms[i].apply(store.pixels(n), self.batch[i])
        if not store.holds(n):  # overwritten while it was read: the batch row is torn
            self.overwritten[h.camera] += 1
            self._log_lost(h, "its slot was overwritten while the engine read it")
            return False
        return True

    def _store(self, camera: str) -> FrameStore | None:
        store = self.stores.stores.get(camera)
        if store is None:
            self.stores.open_pending()
            store = self.stores.stores.get(camera)
        return store

    def _log_lost(self, h: protocol.FrameHeader, why: str) -> None:
        lost = sum(self.overwritten.values()) + sum(self.no_store.values())
        now = time.monotonic()
        if lost <= LOG_FIRST or now - self._lost_logged_at > LOG_EVERY_S:
            self._lost_logged_at = now
            logger.warning("pose: frame set %d posed without %s: %s (%d view(s) lost so far; "
                           "the engine runs more than the store's ring behind the cameras?)",
                           h.trigger_index, h.camera, why, lost)

    def _run_rules(self, pose: Pose2D | Pose3D, t_pose2d_ns: int, t_pose3d_ns: int) -> None:
        """Evaluate the rules on ``pose`` and carry out what fires, timing the chain."""
        assert self.rules is not None and self.actions is not None
        for firing in self.rules.update(pose):
            t_frames, t_set, t_ready = self._set_times
            queued_ms = max(0, t_ready - t_frames) / 1e6 if t_frames >= 0 else float("nan")
            chain = Chain(t_neural=pose.t_neural, t_pulse_ns=pose.t_pi_ns, t_frames_ns=t_frames,
                          t_set_ns=t_set,
                          t_pose2d_ns=t_pose2d_ns, t_pose3d_ns=t_pose3d_ns, t_rule_ns=firing.t_eval_ns,
                          infer_ms=self._infer_ms, queued_ms=queued_ms)
            self.actions.fire(firing, chain, pose)
            logger.info("rule %s fired on pulse %d (%s)", firing.rule, firing.trigger_index,
                        "+".join(a.kind for a in firing.actions))

    def _input_rules(self, name: str, on: bool, t_ns: int, trigger_index: int) -> None:
        """An input's edge: logged for the input tests; the rules that fire on it carry out their
        actions now (a clip of ``[n - pre, n + post]`` around the edge's frame ``n``)."""
        assert self.rules is not None and self.actions is not None
        for firing in self.rules.input_edge(name, on, t_ns, trigger_index):
            chain = Chain(t_neural=self.neural.at(t_ns) if self.neural is not None else None,
                          t_pulse_ns=t_ns, t_frames_ns=-1, t_set_ns=-1, t_pose2d_ns=-1, t_pose3d_ns=-1,
                          t_rule_ns=firing.t_eval_ns)
            self.actions.fire(firing, chain, None)
            logger.info("rule %s fired on input %s %s (pulse %d)", firing.rule, name, "on" if on else "off",
                        trigger_index)

    def _pose3d(self, head: protocol.FrameSetHeader) -> tuple[Pose3D, Points3D, np.ndarray, np.ndarray]:
        """Triangulate the frame set's views and filter: the Pose3D, the points, and the raw and
        filtered positions, for :meth:`_record3d` once the rules have run."""
        assert self.tri is not None
        t0 = time.perf_counter()
        xyc = self.frame_xyc
        pts = self.tri.triangulate(xyc[..., :2], xyc[..., 2])
        t1 = time.perf_counter()
        raw = pts.xyz
        xyz = raw
        if self.filter is not None:
            t_ns = self._pulse_time(head)
            last = self.filter.last_t_ns
            if last is not None and t_ns <= last:  # the timeline broke: start the filter afresh
                self.filter_resets += 1
                logger.warning("pose: frame set %d's time %d ns is not after the previous set's %d ns; "
                               "the 3D filter starts afresh (%d time(s) so far)", head.trigger_index,
                               t_ns, last, self.filter_resets)
                self.filter.reset()
            xyz = self.filter.update(t_ns, raw, np.isfinite(raw).all(axis=1))
            if self.predict_s > 0:
                xyz = self.filter.predict(self.predict_s)
        t2 = time.perf_counter()
        timing = {"triangulate": round((t1 - t0) * 1e3, 4), "filter": round((t2 - t1) * 1e3, 4)}
        msg = Pose3D(seq=self.seq3d, frameset_seq=head.seq, trigger_index=head.trigger_index,
                     t_pi_ns=head.t_pi_ns, t_host_ns=time.monotonic_ns(), keypoints=self.keypoints,
                     xyz=xyz.tolist(), error=pts.error.tolist(), ncams=pts.ncams.tolist(),
                     score=pts.score.tolist(),
                     xyz_raw=raw.tolist() if self.filter is not None else None,
                     filter=self.filter_name, predicted_ms=self.predict_s * 1e3,
                     timing_ms=timing,
                     t_neural=self.neural.at(head.t_pi_ns) if self.neural is not None else None)
        self.seq3d += 1
        return msg, pts, raw, xyz

    def _pulse_time(self, head: protocol.FrameSetHeader) -> int:
        """The set's pulse on the Pi's clock. Where the camera had no pulse time for its frame
        (the pulse message came later than its wait, on a loaded host), the last known pulse's
        time plus the periods since: the filter's timeline stays on one clock."""
        n, period = head.trigger_index, self.rig.trigger.period_ns
        if head.t_pi_ns >= 0:
            self._known_pulse = (n, head.t_pi_ns)
            return head.t_pi_ns
        if self._known_pulse is None:
            return n * period
        k, t_k = self._known_pulse
        return t_k + (n - k) * period

    def _record3d(self, msg: Pose3D, pts: Points3D, raw: np.ndarray, xyz: np.ndarray) -> None:
        """Publish a Pose3D, count it and write its rows (raw, and filtered with a filter)."""
        self.pub.send(msg)
        self.points_3d += int(np.count_nonzero(pts.ncams))
        if msg.t_pi_ns >= 0:
            self.latency_3d_ms.append((msg.t_host_ns - msg.t_pi_ns) / 1e6)
        for k, v in msg.timing_ms.items():
            self.stage_3d_ms[k].append(v)
        for writer, values in zip(self._csv3d, (raw, xyz), strict=False):
            writer.writerow(_points3d_row(values, pts.error, pts.ncams, pts.score, msg.trigger_index,
                                          (msg.t_pi_ns, msg.t_host_ns, *self._neural_cell(msg.t_neural))))

    def _neural_cell(self, value: float | None) -> list[str]:
        """The live neural column's cell (none without the column; empty before the lock)."""
        if self._neural_column is None:
            return []
        return ["" if value is None else f"{value:.3f}"]

    def _write(self, msg: Pose2D, latency_ms: float) -> None:
        if self._csv is None or self._timing_csv is None:
            return
        for cam, rows in msg.views.items():
            self._csv.writerow([msg.trigger_index, msg.t_pi_ns, msg.t_host_ns, cam]
                               + [f"{v:.3f}" if j % 3 < 2 else f"{v:.4f}"
                                  for row in rows for j, v in enumerate(row)]
                               + self._neural_cell(msg.t_neural))
        t = msg.timing_ms
        self._timing_csv.writerow([msg.trigger_index, msg.frameset_seq, msg.skipped, len(msg.views),
                                   t["wait"], t["preprocess"], t["infer"], t["postprocess"],
                                   f"{latency_ms:.3f}"])

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model_name, "engine": self.engine.name, "views": self.engine.views,
            "input": list(self.engine.input_shape),
            "framesets_posed": self.posed, "framesets_skipped": self.skipped,
            "out_of_order": self.out_of_order, "last_trigger_index": self.last_index,
            "overwritten": dict(self.overwritten), "no_store": dict(self.no_store),
            "latency_ms": latency_stats(self.latency_ms, count=True),
            "stage_ms": {k: latency_stats(v, count=True) for k, v in self.stage_ms.items()},
            "malformed": self.malformed.as_dict(),
            "stores": self.stores.stats(),
            **({"pose3d": self.summary_3d()} if self.tri is not None else {}),
            **(self.summary_rules() if self.rules is not None else {}),
        }

    def summary_rules(self) -> dict[str, Any]:
        assert self.rules is not None and self.actions is not None
        return {"rules": {name: msgspec.to_builtins(st) for name, st in self.rules.status().items()},
                "rule_poses": dict(self.rules.counters),
                "closed_loop": self.actions.summary()}

    def summary_3d(self) -> dict[str, Any]:
        return {
            "cameras": len(self.cameras), "keypoints": len(self.keypoints),
            "framesets": self.seq3d, "points": self.points_3d,
            "filter": self.filter_name, "filter_resets": self.filter_resets,
            "predict_ms": self.predict_s * 1e3,
            "latency_ms": latency_stats(self.latency_3d_ms, count=True),
            "stage_ms": {k: latency_stats(v, count=True) for k, v in self.stage_3d_ms.items()},
        }

    def _close_files(self) -> None:
        for f in self._files:
            f.close()
        self._files = []
        self._csv = self._timing_csv = self._edges_csv = None
        self._csv3d = []

    def close(self) -> None:
        if self.actions is not None:
            self.actions.close()
        self._close_files()
        self.sub.close(linger=0)
        for part in (self.stores, self.pub, self.status, self.control, self.input_feed,
                     *([self.neural] if self.neural is not None else [])):
            part.close()
        self.engine.close()


def _open_table(path: Path) -> tuple[Any, bool]:
    """``path`` opened for writing rows, and whether it needs its header (it is new or empty; a
    restarted engine appends to what its predecessor wrote)."""
    fresh = not path.is_file() or path.stat().st_size == 0
    return open(path, "w" if fresh else "a", newline=""), fresh


_IDENTITY_CENTER = ["1", "0", "0", "0", "1", "0", "0", "0", "1", "0", "0", "0"]


def _points3d_row(xyz: np.ndarray, error: np.ndarray, ncams: np.ndarray, score: np.ndarray,
                  fnum: int, extra: tuple[int | str, ...]) -> list[str]:
    """One row of anipose's 3D CSV (see anipose_csv.points3d_columns); NaN as empty cells."""
    row: list[str] = []
    for k in range(xyz.shape[0]):
        if ncams[k] == 0 or not np.isfinite(xyz[k]).all():
            row += ["", "", "", "", str(int(ncams[k])), f"{score[k]:.4f}"]
        else:
            x, y, z = xyz[k]
            row += [f"{x:.4f}", f"{y:.4f}", f"{z:.4f}", f"{error[k]:.4f}", str(int(ncams[k])),
                    f"{score[k]:.4f}"]
    return row + _IDENTITY_CENTER + [str(fnum), *map(str, extra)]


def run_pose(rig: RigConfig, run: str, out: str | None = None,
             status_address: str | None = None) -> dict[str, Any]:
    stop = SignalStop().on_signals()
    ctx = zmq.Context()
    try:
        return PoseEngineNode(rig, run, out, ctx, status_address).run_forever(stop)
    finally:
        ctx.destroy(linger=1000)
