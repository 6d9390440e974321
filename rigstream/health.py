"""What each component reports about itself, as typed records: the schema of ``Status.stats``.

Every component pushes a :class:`~rigstream.protocol.Status` to the session's supervisor; its
``stats`` travel as a plain map (msgpack), and whoever reads them (the supervisor's progress line
and summary.json, the monitor page) decodes them here into the struct of that component's kind
and reads attributes, not string paths. Decoding ignores keys a struct does not name, so a newer
component on another host does not break an older reader; ``tests/rigstream/test_health.py``
keeps every struct naming every key its component sends, on a real session. A map that does
not fit its struct (a wrong type) raises :class:`~rigstream.protocol.ProtocolError`, which the
reader counts as malformed and goes on with the defaults.
"""

from __future__ import annotations

from typing import Any

import msgspec

from rigstream.protocol import ProtocolError


class Latency(msgspec.Struct, kw_only=True, frozen=True):
    """p50 / p99 / max in ms over the samples (None before the first), and their count."""

    p50: float | None = None
    p99: float | None = None
    max: float | None = None
    n: int = 0


class _Health(msgspec.Struct, kw_only=True):
    error: str | None = None
    """Why it failed (a status in state ``error``)."""


class CameraHealth(_Health):
    """A camera node: frames written to its store, drops, and its clock against the pulses."""

    frames: int = 0
    dropped: int = 0
    dropped_indices: list[int] = []
    flagged: int = 0
    """Frames more than half a period off their pulse (kept, flagged ``timing``)."""
    no_pulse: int = 0
    pulses_seen: int = 0
    last_index: int = -1
    clock_drift_ppm: float | None = None
    clock_residual_us: float | None = None
    host_clock: dict[str, Any] = {}
    max_offset_us: float | None = None
    malformed_pulses: int = 0
    out_of_order: int = 0
    store: dict[str, Any] = {}
    camera: dict[str, Any] = {}
    """The backend's own counters (exposed frames, buffer underruns ...)."""


class RecorderHealth(_Health):
    """The recorder: rows and video per camera, what was dropped or overrun, pulses by line."""

    frames: dict[str, int] = {}
    frames_dropped: dict[str, int] = {}
    dropped_indices: dict[str, list[int]] = {}
    overruns: dict[str, int] = {}
    overrun_indices: dict[str, list[int]] = {}
    lost_in_transport: dict[str, int] = {}
    encode_backlog: dict[str, int] = {}
    pulses: dict[str, int] = {}
    video: str = ""
    video_errors: dict[str, str] = {}
    malformed: dict[str, Any] = {}
    stores_open: list[str] = []
    malformed_pulses: dict[str, Any] = {}
    codec: str = ""
    lossless: bool = True
    videos: dict[str, str] = {}
    seq_gaps: dict[str, int] = {}


class AssemblerHealth(_Health):
    """The assembler: the lossless frame-set accounting, and per camera why sets lack it."""

    framesets_complete: int = 0
    framesets_incomplete: int = 0
    framesets_mixed: int = 0
    missing: dict[str, int] = {}
    missing_indices: dict[str, list[int]] = {}
    missing_reasons: dict[str, dict[str, int]] = {}
    flagged: dict[str, int] = {}
    late: dict[str, int] = {}
    overruns: dict[str, int] = {}
    backlog: dict[str, int] = {}
    pending: int = 0
    malformed: dict[str, Any] = {}
    stores_open: list[str] = []
    seq_gaps: dict[str, int] = {}


class RingBufferHealth(_Health):
    """The clip service: clips saved and pending, and how full each camera's history is."""

    clips: list[str] = []
    """The newest clips' folders (at most ``CLIPS_LISTED``; summary.json lists them all)."""
    clips_saved: int = 0
    clips_pending: int = 0
    clips_refused: dict[str, int] = {}
    ring_fill: dict[str, float] = {}
    ring_capacity_frames: int = 0
    events_malformed: dict[str, Any] = {}
    clip_windows_clamped: int = 0
    malformed: dict[str, Any] = {}
    stores_open: list[str] = []
    seq_gaps: dict[str, int] = {}


class RuleHealth(msgspec.Struct, kw_only=True):
    fired: int = 0
    last_trigger_index: int | None = None
    last_t_pi_ns: int | None = None
    armed: bool = True
    active: bool = False


class ClosedLoopHealth(msgspec.Struct, kw_only=True):
    """The rules' actions: firings, their counts, and the latency chain of each."""

    firings: int = 0
    counts: dict[str, int] = {}
    pulse_to_ttl_ms: Latency = Latency()
    pulse_to_action_ms: Latency = Latency()
    steps_ms: dict[str, Latency] = {}
    infer_ms: Latency = Latency()
    infer_share_of_pulse_to_ttl: float | None = None
    ttl_pending: int = 0
    recent: list[dict[str, Any]] = []


class Pose3DHealth(msgspec.Struct, kw_only=True):
    """The pose engine's 3D stage: triangulation and its filter."""

    cameras: int = 0
    keypoints: int = 0
    framesets: int = 0
    points: int = 0
    filter: str = "none"
    filter_resets: int = 0
    predict_ms: float = 0.0
    latency_ms: Latency = Latency()
    stage_ms: dict[str, Latency] = {}


class PoseHealth(_Health):
    """The live pose engine: sets posed and skipped (latest-wins), latency, 3D and the rules."""

    model: str = ""
    engine: str = ""
    views: int = 0
    input: list[int] = []
    framesets_posed: int = 0
    framesets_skipped: int = 0
    out_of_order: int = 0
    last_trigger_index: int = -1
    overwritten: dict[str, int] = {}
    no_store: dict[str, int] = {}
    latency_ms: Latency = Latency()
    stage_ms: dict[str, Latency] = {}
    malformed: dict[str, Any] = {}
    stores: dict[str, Any] = {}
    pose3d: Pose3DHealth | None = None
    rules: dict[str, RuleHealth] = {}
    rule_poses: dict[str, int] = {}
    closed_loop: ClosedLoopHealth | None = None
    processes: int = 1
    """Processes whose counts are summed here (a restarted engine's earlier runs included)."""


class MonitorHealth(_Health):
    """The live page: its address, frames received and served, clients and button presses."""

    url: str | None = None
    frames_received: dict[str, int] = {}
    frames_skipped: dict[str, int] = {}
    frames_lost: dict[str, int] = {}
    frames_served: dict[str, int] = {}
    malformed: dict[str, Any] = {}
    clients: int = 0
    buttons: dict[str, Any] = {}


class InputLineHealth(msgspec.Struct, kw_only=True):
    """One apparatus input: active now (1) or not, and its activations so far."""

    state: int = 0
    activations: int = 0


class OutputLineHealth(msgspec.Struct, kw_only=True):
    """One named output: pulses started so far, and whether a pulse or train runs now."""

    pulses: int = 0
    busy: bool = False


class TriggerHealth(_Health):
    """The trigger daemon's ``status`` reply: the train, its lateness, the TTL line, refusals."""

    running: bool = False
    t0_ns: int = 0
    pulses_sent: int = 0
    sync_pulses_sent: int = 0
    ttl_pulses: int = 0
    ttl_merged: int = 0
    pulse_subscribers: int = 0
    line_subscribers: dict[str, int] = {}
    rate_hz: float = 0.0
    late_max_us: float = 0.0
    late_median_us: float = 0.0
    late_p99_us: float = 0.0
    overruns: int = 0
    malformed: int = 0
    refused_clients: int = 0
    inputs: dict[str, InputLineHealth] = {}
    outputs: dict[str, OutputLineHealth] = {}


HEALTH: dict[str, type[_Health]] = {
    "trigger": TriggerHealth,
    "camera": CameraHealth,
    "recorder": RecorderHealth,
    "assembler": AssemblerHealth,
    "ringbuffer": RingBufferHealth,
    "pose": PoseHealth,
    "monitor": MonitorHealth,
}
"""A component's kind (its name, or ``camera`` for ``camera:NAME``) -> the struct of its stats."""


class ComponentState(msgspec.Struct, kw_only=True):
    state: str = "?"
    stats: dict[str, Any] = {}


class SessionHealth(msgspec.Struct, kw_only=True):
    """The supervisor's health message (``transport.health``, for the monitor page): the session's
    time and pulses, each component's state and last stats, and what failed or was restarted.
    :meth:`decoded` gives the components' stats as their structs."""

    t_s: float | None = None
    pulses: int | None = None
    rate_hz: float | None = None
    components: dict[str, ComponentState] = {}
    failed: dict[str, str] = {}
    restarts: dict[str, int] = {}

    def decoded(self) -> tuple[dict[str, Any], list[ProtocolError]]:
        """Each component's stats as its kind's struct, and the errors of those that did not fit
        (left out)."""
        out: dict[str, Any] = {}
        errors: list[ProtocolError] = []
        for name, comp in self.components.items():
            if kind_of(name) in HEALTH:
                try:
                    out[name] = decode_health(name, comp.stats)
                except ProtocolError as err:
                    errors.append(err)
        return out, errors


def decode_session_health(stats: dict[str, Any]) -> SessionHealth:
    """The supervisor's health stats as :class:`SessionHealth`; ProtocolError if they do not fit."""
    return _convert(stats, SessionHealth, "session health")


def kind_of(component: str) -> str:
    """``camera:cam0`` -> ``camera``; every other component is its own kind."""
    return component.split(":", 1)[0]


def decode_health(component: str, stats: dict[str, Any]) -> Any:
    """``stats`` of ``component`` as its kind's struct; ProtocolError (``invalid-contents``) naming
    the component and the field when a value has the wrong type."""
    model = HEALTH.get(kind_of(component))
    if model is None:
        raise ProtocolError("invalid-contents", f"{component}: no health schema for this component")
    return _convert(stats, model, f"{component} status")


def _convert(stats: dict[str, Any], model: type[Any], what: str) -> Any:
    """``stats`` as ``model`` (keys it does not name ignored); ProtocolError naming ``what``."""
    try:
        return msgspec.convert(stats, model, strict=False)
    except msgspec.ValidationError as exc:
        raise ProtocolError("invalid-contents", f"{what}: {exc}") from None
