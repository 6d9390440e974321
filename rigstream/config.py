"""The rig file: one YAML document decoded into strict, typed models.

Unknown keys and bad values are errors that name the key path
(``rig.yaml: cameras[1].exposure_us: expected an integer >= 1, got -5``); raw dicts never
travel inward. Units are in the field names.
"""

from __future__ import annotations

import math
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from rigstream.basics import (  # re-exported: the rest of the code imports them from here
    InputError,
    Name,
    NonNegFloat,
    NonNegInt,
    PositiveFloat,
    PositiveInt,
    Probability,
)
from rigstream.framestore import StoreLayout
from rigstream.rules import Rule, RuleError, parse_rules


class ConfigError(InputError):
    """A rig file that cannot be used; the message names the file and the key path."""


class _Model(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class FaultConfig(_Model, kw_only=True):
    """Fault injection for the simulated camera (ignored by real backends)."""

    drop_rate: Probability = 0.0
    """Share of frames lost in transport after exposure (FrameID still advances)."""
    incomplete_rate: Probability = 0.0
    """Share of frames delivered incomplete (counted as drops, as Spinnaker reports them)."""
    skip_trigger_rate: Probability = 0.0
    """Share of trigger edges the camera misses (no exposure, no strobe, FrameID not advanced)."""
    jitter_us: NonNegFloat = 0.0
    """Standard deviation of the camera timestamp's jitter."""
    stall_at_s: NonNegFloat | None = None
    """Seconds after the first frame at which the camera's transport stalls."""
    stall_s: NonNegFloat = 0.0
    """How long the stall lasts; frames exposed meanwhile queue in the stream buffers."""
    fail_at_s: NonNegFloat | None = None
    """Seconds after the first frame at which the camera fails for good (a cable pulled, a
    driver error): ``get_frame`` raises and the camera node exits with an error."""
    seed: int = 0


class CameraConfig(_Model, kw_only=True):
    name: Name
    serial: str = ""
    role: Literal["primary", "secondary"]
    backend: Literal["sim", "pyspin"] = "sim"
    width: PositiveInt
    height: PositiveInt
    pixel_format: Literal["mono8", "rgb8", "bayer_rg8"] = "mono8"
    """``mono8`` and ``bayer_rg8`` (a colour sensor's raw mosaic) are one channel, ``rgb8`` three."""
    exposure_us: PositiveInt = 1000
    buffer_count: PositiveInt = 64
    """Stream buffers between the camera and the host (frames beyond them are dropped)."""
    offset_x: NonNegInt = 0
    """Left edge of the region of interest on the sensor, px (FLIR: ``OffsetX``)."""
    offset_y: NonNegInt = 0
    """Top edge of the region of interest on the sensor, px (FLIR: ``OffsetY``)."""
    trigger_line: Literal["Line3", "Line0"] = "Line3"
    """FLIR input the camera is triggered on (rising edge): Line3 (GPIO, non-isolated) or Line0
    (opto-isolated). The Pi drives the primary's; the primary's strobe drives each secondary's."""
    strobe_line: Literal["Line2", "Line1"] = "Line2"
    """FLIR output the primary drives high while exposing (``ExposureActive``), wired to the
    secondaries' ``trigger_line``: Line2 (GPIO) or Line1 (opto-isolated)."""
    strobe_3v3: bool = False
    """Primary only, with ``strobe_line: Line1``: turn on the 3.3 V supply on Line2's pin
    (``V3_3Enable``) to pull up the opto-isolated output, as FLIR's multi-camera wiring does.
    (Line2 as the strobe needs an external pull-up; it cannot be a supply at the same time.)"""
    address: str | None = None
    """Where this camera's node publishes frames; default: transport.frames with {camera}."""
    faults: FaultConfig = FaultConfig()
    prerender_s: PositiveFloat | None = None
    """Simulated cameras only: render a loop of this many seconds of the animal once at start
    and deliver each frame from it by one copy, as a real camera's driver hands over a buffer
    (the benches use it so they measure the pipeline, not the renderer); None renders every
    frame at its pulse. Every simulated camera of a rig must have the same value (one animal)."""

    def __post_init__(self) -> None:  # also checks direct construction (msgspec checks decoding)
        if self.prerender_s is not None:
            if self.backend != "sim":
                raise ValueError(f"prerender_s is for simulated cameras only (backend sim), got "
                                 f"backend {self.backend} for camera {self.name}")
            if not self.prerender_s > 0:
                raise ValueError(f"prerender_s: expected a loop longer than 0 s, got "
                                 f"{self.prerender_s} for camera {self.name}")

    @property
    def channels(self) -> int:
        return 3 if self.pixel_format == "rgb8" else 1


class SyncLineConfig(_Model, kw_only=True):
    """Random-interval pulses into the neural recorder's digital input (as pyControl's Rsync)."""

    enabled: bool = True
    pin: NonNegInt = 23
    min_interval_s: PositiveFloat = 0.1
    max_interval_s: PositiveFloat = 1.0
    pulse_width_ms: PositiveFloat = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_interval_s < self.min_interval_s:
            raise ValueError(
                f"max_interval_s ({self.max_interval_s}) must be >= min_interval_s "
                f"({self.min_interval_s})"
            )
        if self.pulse_width_ms / 1000 >= self.min_interval_s:
            raise ValueError(
                f"pulse_width_ms ({self.pulse_width_ms}) must be shorter than min_interval_s"
            )


class ControlKeysConfig(_Model, kw_only=True):
    """ZeroMQ CURVE keys that guard the trigger daemon's control socket (``rigstream keys``
    makes them). Paths are used as given (absolute, or relative to the working directory).
    The Pi needs the first two, the host that sends commands (the session supervisor) the
    last two; one rig file can hold both, each machine reading its own."""

    server_secret_file: str | None = None
    """On the Pi: the daemon's key pair, a ``NAME.key_secret`` file (it holds the public key too)."""
    authorized_dir: str | None = None
    """On the Pi: a folder of the public keys (``*.key``) of the clients allowed to send commands."""
    server_public_file: str | None = None
    """On the host: the daemon's public key (``NAME.key``)."""
    client_secret_file: str | None = None
    """On the host: this client's key pair (``NAME.key_secret``; its ``NAME.key`` goes into the
    daemon's ``authorized_dir``)."""

    def __post_init__(self) -> None:
        if (self.server_secret_file is None) != (self.authorized_dir is None):
            raise ValueError("server_secret_file and authorized_dir go together (the daemon's side)")
        if (self.server_public_file is None) != (self.client_secret_file is None):
            raise ValueError("server_public_file and client_secret_file go together (the client's side)")


class TriggerConfig(_Model, kw_only=True):
    rate_hz: PositiveFloat
    backend: Literal["sim", "rpigpio", "pigpio"] = "sim"
    camera_pin: NonNegInt = 18
    """BCM pin driving the primary camera's trigger input."""
    ttl_pin: NonNegInt = 24
    """BCM pin for closed-loop TTL outputs."""
    pulse_width_us: PositiveFloat = 100.0
    control_keys: ControlKeysConfig | None = None
    """CURVE keys for the control socket: required when ``transport.trigger_control`` is
    reachable from the network (not ipc, inproc or loopback tcp); used wherever given."""

    def __post_init__(self) -> None:
        if self.pulse_width_us * 1e-6 >= 1.0 / self.rate_hz:
            raise ValueError(
                f"pulse_width_us ({self.pulse_width_us}) must be shorter than the trigger period "
                f"({1e6 / self.rate_hz:.1f} us at {self.rate_hz} Hz)"
            )

    @property
    def period_ns(self) -> int:
        return round(1e9 / self.rate_hz)


class RingBufferConfig(_Model, kw_only=True):
    pre_s: NonNegFloat = 2.0
    post_s: NonNegFloat = 1.0
    margin_s: NonNegFloat = 1.0
    """Extra history kept so clip writing can lag behind acquisition."""


DISK_FLOOR_BYTES = 16 << 20
"""Free space a session keeps whatever its rate: tables, logs, summary.json."""


class RecordingConfig(_Model, kw_only=True):
    folder: str = "sessions"
    codec: Literal["ffv1", "h264", "h264_lossless", "raw"] = "h264_lossless"
    """ffv1 and h264_lossless and raw are lossless; h264 is lossy (crf)."""
    crf: Annotated[int, msgspec.Meta(ge=0, le=51)] = 18
    flush_interval_s: PositiveFloat = 1.0
    video: Literal["on", "off"] = "on"
    """``off`` keeps frames.csv and pulses.csv but writes no whole-session video: the buffered
    clips are the video, as labs that record at high rate want (YAML's bare ``off``/``false``
    and ``on``/``true`` are taken too)."""
    try_codec: bool = False
    """Record with ``codec`` even where the check before a session measures that this host
    cannot encode it at the rig's rate (:mod:`rigstream.acquisition.codecs`)."""
    disk_reserve_s: PositiveFloat = 10.0
    """A session does not start, and stops in order, where the recording folder's free space is
    under this many seconds of the rig's frames uncompressed plus DISK_FLOOR_BYTES: room for
    the frames in flight, the clips being written, the tables, logs and summary to land whole
    (:meth:`RigConfig.disk_reserve_bytes`)."""


EngineKind = Literal["onnxruntime", "tensorrt", "torch"]


class OneEuroConfig(_Model, kw_only=True):
    """One-Euro filter (Casiez et al. 2012): ``min_cutoff_hz`` lowers jitter at rest, ``beta``
    (per mm/s) lowers lag when the keypoint moves fast."""

    min_cutoff_hz: PositiveFloat = 1.0
    beta: Annotated[float, msgspec.Meta(ge=0)] = 0.05
    d_cutoff_hz: PositiveFloat = 1.0


class KalmanConfig(_Model, kw_only=True):
    """Constant-velocity Kalman filter per coordinate."""

    accel_noise_mm_s2: PositiveFloat = 1000.0
    """Process noise: the white acceleration's strength, mm/s^2 per sqrt(Hz) (its spectral
    density is the square); raise it for fast, jerky keypoints (paws), lower it to smooth more."""
    meas_noise_mm: PositiveFloat = 1.0
    """Measurement noise of a triangulated keypoint, mm (standard deviation)."""


class TriangulationConfig(_Model, kw_only=True):
    """Live 3D from every Pose2D, with the rig's ``calibration``."""

    enabled: bool = True
    """Triangulate when the rig has a calibration (at least two cameras)."""
    min_score: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.3
    """Views whose keypoint confidence is below this are not used."""
    max_error_px: PositiveFloat = 15.0
    """Where a view reprojects further than this (px), re-solve leaving out the view that
    explains it (three or more views)."""
    weighted: bool = True
    """Weight each view by its confidence."""
    filter: Literal["none", "one_euro", "kalman"] = "none"
    one_euro: OneEuroConfig = OneEuroConfig()
    kalman: KalmanConfig = KalmanConfig()
    max_gap_s: PositiveFloat = 0.1
    """A filtered keypoint missing for longer than this is NaN, then starts afresh."""
    predict_ms: Annotated[float, msgspec.Meta(ge=0, le=100)] = 0.0
    """Publish the filtered pose this far after the trigger pulse (latency compensation);
    needs a filter."""

    def __post_init__(self) -> None:  # also checks direct construction (msgspec checks decoding)
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score: expected 0..1, got {self.min_score}")
        if not self.max_error_px > 0.0:
            raise ValueError(f"max_error_px: expected > 0, got {self.max_error_px}")
        if self.predict_ms > 0 and self.filter == "none":
            raise ValueError("predict_ms needs a filter (one_euro or kalman) to extrapolate with")


class PoseConfig(_Model, kw_only=True):
    """The live pose engine: a model folder run on every frame set, latest-wins."""

    enabled: bool = True
    model: str = "sim"
    """A shipped model's name (``sim``) or a model folder, relative to the rig file."""
    engine: EngineKind = "onnxruntime"
    keypoints: list[str] | None = None
    """The keypoints the rig expects, in order; the model must have exactly these."""
    crops: dict[str, Annotated[list[NonNegInt], msgspec.Meta(min_length=4, max_length=4)]] = {}
    """Per camera ``[x, y, width, height]`` of the frame to feed the model (default: all)."""
    threads: PositiveInt = 2
    """CPU threads for the onnxruntime and torch engines."""
    engine_cache: str | None = None
    """Folder for built TensorRT engines (default ~/.cache/rigstream/engines)."""
    device: str = "cpu"
    """torch engine device (``cpu``, ``cuda``, ``cuda:1``)."""
    sets: Literal["direct", "assembler"] = "direct"
    """Where the engine gets its frame sets: ``direct``, the newest set found in the camera
    stores in the engine's own process (no hop; woken by the cameras' writes), or
    ``assembler``, the assembler process's set messages (a socket hop each way). Direct has
    the shorter median and tail on the closed-loop bench (see the README). The assembler runs
    either way, for the lossless per-set accounting."""
    triangulation: TriangulationConfig = TriangulationConfig()


class TransportConfig(_Model, kw_only=True):
    """ZeroMQ addresses. ``{run}`` is the session's runtime folder (ipc sockets live there);
    ``{camera}`` is a camera's name. tcp:// addresses let components run on other hosts."""

    pulses: str = "ipc://{run}/pulses"
    trigger_control: str = "ipc://{run}/trigger-control"
    frames: str = "ipc://{run}/frames-{camera}"
    local_headers: str = "ipc://{run}/headers-{camera}"
    """Where a store's headers go on its own host when the camera's frame address is a network
    one: the camera node publishes [header, pixels] there for other hosts' bridges and the
    headers alone here for its own host's consumers; a bridge (``rigstream bridge``) republishes
    here what it wrote into its host's store. Each store names the address its headers go to,
    so consumers need not know which case they are in."""
    framesets: str = "ipc://{run}/framesets"
    events: str = "ipc://{run}/events"
    control: str = "ipc://{run}/control"
    status: str = "ipc://{run}/status"
    poses: str = "ipc://{run}/poses"
    rule_events: str = "ipc://{run}/rule-events"
    neural_events: str = "ipc://{run}/neural-events"
    """The simulated neural recorder's live sync edges (Event Broadcaster format)."""
    """The pose engine publishes here an Event for every rule firing (with its latency chain)."""
    health: str = "ipc://{run}/health"
    """The session supervisor publishes here, twice a second, every component's latest status
    (a Status from component ``session``; the monitor page reads it)."""
    sim_lines: str = "ipc://{run}/line-{line}"
    """Simulated electrical lines (trigger, strobes) between the sim pin backend and cameras."""
    frame_hwm: PositiveInt = 2000
    """Frames queued per subscriber before ZeroMQ drops (drops show up as sequence gaps)."""
    frameset_deadline_ms: PositiveFloat = 500.0
    """How long the assembler waits for a late camera before emitting an incomplete set."""


class SimInputConfig(_Model, kw_only=True):
    """What drives a simulated input: the line is active while the simulated animal's
    ``keypoint`` is inside the box ``[min, max]`` (world mm) at a camera pulse, and changes at
    that pulse's time, so the truth of every edge is a trigger index."""

    keypoint: str
    min: Annotated[list[float], msgspec.Meta(min_length=3, max_length=3)]
    max: Annotated[list[float], msgspec.Meta(min_length=3, max_length=3)]

    def __post_init__(self) -> None:
        if any(not math.isfinite(v) for v in (*self.min, *self.max)):
            raise ValueError("min and max must be finite numbers")
        if any(lo >= hi for lo, hi in zip(self.min, self.max, strict=True)):
            raise ValueError(f"min {self.min} must be below max {self.max} on every axis")


class InputConfig(_Model, kw_only=True):
    """A line from the behaviour apparatus into the Pi (a knob's touch sensor, a lever, a beam
    break, a lick sensor), watched by the trigger daemon."""

    name: Name
    pin: NonNegInt
    """BCM pin."""
    pull: Literal["up", "down", "off"] = "off"
    """The Pi's internal pull resistor."""
    active: Literal["high", "low"] = "high"
    """The level that means "on" (touched, pressed, broken): ``low`` for a switch to ground
    with ``pull: up``."""
    debounce_us: NonNegInt = 1000
    """A change counts only once the level has held this long (its time is when it began)."""
    sim: SimInputConfig | None = None
    """The simulated twin (``trigger.backend: sim``): what makes the line change."""


class OutputConfig(_Model, kw_only=True):
    """A named output line to the apparatus (a reward valve, an LED, a laser), driven by the
    trigger daemon with ``pulse`` and ``train`` actions."""

    name: Name
    pin: NonNegInt
    active: Literal["high", "low"] = "high"
    """The level that means "on"; the line rests at the other."""
    max_width_ms: PositiveFloat = 1000.0
    """The longest pulse the line accepts (a valve left open floods the cage)."""


class SimRecorderConfig(_Model, kw_only=True):
    """The simulated neural recorder: its own clock, sampling, and imperfect sync input."""

    rate_hz: PositiveFloat = 30000.0
    offset_s: float = 1234.5
    """Recorder time at Pi time 0."""
    drift_ppm: Annotated[float, msgspec.Meta(ge=-200, le=200)] = 50.0
    wander_ppm: Annotated[float, msgspec.Meta(ge=0, le=100)] = 10.0
    """Slow wandering of the drift around ``drift_ppm``."""
    missing: Annotated[float, msgspec.Meta(ge=0, lt=0.5)] = 0.05
    """Fraction of sync pulses the recorder misses."""
    spurious: Annotated[float, msgspec.Meta(ge=0, lt=0.5)] = 0.01
    """Spurious edges per true pulse."""
    seed: int = 0


class NeuralClockConfig(_Model, kw_only=True):
    """The neural recorder whose clock every row is mapped to (via the sync line)."""

    kind: Literal["sim", "recorder"] = "recorder"
    """``sim``: a simulated recorder, aligned at the end of the session; ``recorder``: a real
    one, aligned after the fact with ``rigstream align --session DIR --b FILE``."""
    name: str = "neural"
    units: str = "samples"
    """Units of the recorder's times (``t_neural_<units>`` columns)."""
    sim: SimRecorderConfig = SimRecorderConfig()
    live: bool = True
    """Map times to the recorder's clock while the session runs, from the recorder's sync edges
    streamed live (the simulated recorder streams them; a real one needs ``events_address``)."""
    events_address: str | None = None
    """A real recorder's live events: the Open Ephys GUI's Event Broadcaster (``tcp://HOST:5557``)."""
    sync_input_line: NonNegInt = 0
    """The recorder's TTL line the sync line is wired to (the simulated recorder uses it too)."""
    events_stream: str | None = None
    """Only the Event Broadcaster's events of this stream (default: any)."""


class RigConfig(_Model, kw_only=True):
    name: str = "rig"
    cameras: list[CameraConfig]
    trigger: TriggerConfig
    sync_line: SyncLineConfig = SyncLineConfig()
    ring_buffer: RingBufferConfig = RingBufferConfig()
    recording: RecordingConfig = RecordingConfig()
    transport: TransportConfig = TransportConfig()
    pose: PoseConfig | None = None
    neural_clock: NeuralClockConfig | None = None
    calibration: str | None = None
    """The cameras' calibration (aniposelib TOML), relative to the rig file. Live 3D uses it,
    and simulated cameras are placed by it (default for them: a ring around the arena)."""
    inputs: list[InputConfig] = []
    """Lines from the apparatus, watched by the trigger daemon; their edges go to ``inputs.csv``."""
    outputs: list[OutputConfig] = []
    """Named output lines the rules (and ``rigstream output``) pulse."""
    rules: list[Rule] = []
    """Closed-loop rules on the live pose (see rigstream.rules); checked against the model's
    keypoints and the cameras when a session (or ``rigstream check``) plans the pose engine."""

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ValueError("at least one camera is required")
        names = [c.name for c in self.cameras]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"camera names must be unique, repeated: {', '.join(dup)}")
        primaries = [c.name for c in self.cameras if c.role == "primary"]
        if len(primaries) != 1:
            secondaries = [c.name for c in self.cameras if c.role == "secondary"]
            if not primaries:
                raise ValueError(
                    f"exactly one camera must have role primary; found none "
                    f"(secondaries {', '.join(secondaries)} need a primary's strobe)"
                )
            raise ValueError(f"exactly one primary camera allowed, found {', '.join(primaries)}")
        for cam in self.cameras:
            if cam.exposure_us * 1000 >= self.trigger.period_ns:
                raise ValueError(
                    f"camera {cam.name}: exposure_us ({cam.exposure_us}) must be shorter than "
                    f"the trigger period ({self.trigger.period_ns / 1000:.0f} us)"
                )
        sims = [c for c in self.cameras if c.backend == "sim"]
        if len({c.prerender_s for c in sims}) > 1:  # one loop, or the views show different poses
            each = ", ".join(f"{c.name} {'unset' if c.prerender_s is None else f'{c.prerender_s:g}'}"
                             for c in sims)
            raise ValueError(f"prerender_s must be the same for every simulated camera (they "
                             f"show one animal), got {each}")
        self._check_lines()
        if self.pose is not None:
            unknown = sorted(set(self.pose.crops) - set(names))
            if unknown:
                raise ValueError(f"pose.crops names cameras not in the rig: {', '.join(unknown)}")

    def _check_lines(self) -> None:
        """Every pin has one role, and every apparatus line a name of its own."""
        used: dict[int, str] = {self.trigger.camera_pin: "trigger.camera_pin"}
        if self.sync_line.enabled:
            used.setdefault(self.sync_line.pin, "sync_line.pin")
        used.setdefault(self.trigger.ttl_pin, "trigger.ttl_pin")
        seen: dict[str, str] = {}
        for kind, lines in (("inputs", self.inputs), ("outputs", self.outputs)):
            for i, line in enumerate(lines):
                key = f"{kind}[{i}] {line.name!r}"
                if line.name in seen:
                    raise ValueError(f"{key}: the name is already {seen[line.name]}")
                if line.name in ("camera", "sync", "ttl"):
                    raise ValueError(f"{key}: {line.name!r} names one of the trigger's own lines")
                if line.pin in used:
                    raise ValueError(f"{key}: pin {line.pin} is already {used[line.pin]}")
                seen[line.name] = key
                used[line.pin] = key

    @property
    def primary(self) -> CameraConfig:
        return next(c for c in self.cameras if c.role == "primary")

    def camera(self, name: str) -> CameraConfig:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise ConfigError(
            f"no camera named {name!r} in rig {self.name!r} "
            f"(cameras: {', '.join(c.name for c in self.cameras)})"
        )

    def frames_address(self, camera: str, run: str) -> str:
        cam = self.camera(camera)
        template = cam.address or self.transport.frames
        return template.format(run=run, camera=camera)

    def address(self, key: str, run: str, **fields: str) -> str:
        template: str = getattr(self.transport, key)
        return template.format(run=run, **fields)

    def clip_window_max_s(self) -> tuple[float, float]:
        """The longest (pre_s, post_s) any clip may ask for: the ring buffer's own window and
        every rule's ``clip`` action (the ring buffer keeps that much history)."""
        clips = [a.clip for r in self.rules for a in r.actions if a.clip is not None]
        return (max([self.ring_buffer.pre_s, *(c.pre_s for c in clips)]),
                max([self.ring_buffer.post_s, *(c.post_s for c in clips)]))

    def store_frames(self) -> int:
        """Slots in each camera's frame store (:mod:`rigstream.framestore`), which is also the
        pre-trigger ring: the longest clip ``pre_s`` any rule or the rig asks for plus
        ``ring_buffer.margin_s`` (at least 1 s and 16 frames, so lossless readers have slack)."""
        max_pre_s, _ = self.clip_window_max_s()
        return max(self.frames_per(max_pre_s + self.ring_buffer.margin_s), self.frames_per(1.0), 16)

    def store_bytes(self) -> dict[str, int]:
        """Shared memory each camera's store takes, bytes (what ``rigstream check`` prints)."""
        n = self.store_frames()
        return {c.name: StoreLayout(n, c.height, c.width, c.channels).total_bytes for c in self.cameras}

    def disk_reserve_bytes(self) -> int:
        """The free space a session keeps in its folder (``recording.disk_reserve_s``)."""
        per_s = sum(c.width * c.height * c.channels for c in self.cameras) * self.trigger.rate_hz
        return DISK_FLOOR_BYTES + round(self.recording.disk_reserve_s * per_s)

    def frames_per(self, seconds: float) -> int:
        """Trigger indices in ``seconds`` at the rig's trigger rate."""
        return math.ceil(round(seconds * self.trigger.rate_hz, 6))


_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]+)`(?: - at `\$(?P<path>[^`]*)`)?")
_AT = re.compile(r"^(?P<msg>.*) - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"Object missing required field `(?P<key>[^`]+)`(?: - at `\$(?P<path>[^`]*)`)?")


def _format_error(err: msgspec.ValidationError, source: str) -> str:
    text = str(err)
    if m := _UNKNOWN.match(text):
        path = ((m["path"] or "").lstrip(".") + "." + m["key"]).lstrip(".")
        return f"{source}: {path}: unknown key"
    if m := _MISSING.match(text):
        path = ((m["path"] or "").lstrip(".") + "." + m["key"]).lstrip(".")
        return f"{source}: {path}: required key is missing"
    if m := _AT.match(text):
        msg = m["msg"]
        msg = re.sub(r"^Expected `(\w+)`", lambda g: f"expected {g[1]}", msg)
        return f"{source}: {m['path'].lstrip('.') or '(top level)'}: {msg}"
    return f"{source}: {text}"


def _bad_value_detail(doc: object, path: str) -> str:
    """The offending value at a dotted/indexed path, for 'got ...' in messages."""
    node = doc
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        try:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]  # type: ignore[index]
        except (KeyError, IndexError, TypeError, ValueError):
            return ""
    return f", got {node!r}"


def _resolve_calibration(doc: dict, base_dir: Path | None) -> None:
    value = doc.get("calibration")
    if base_dir is None or not isinstance(value, str):
        return
    p = Path(value).expanduser()
    doc["calibration"] = str(p if p.is_absolute() else (base_dir / p).resolve())


def _resolve_model(doc: dict, base_dir: Path | None) -> None:
    """Make ``pose.model`` a path that holds wherever the rig is written again (a session
    copies the rig file into its folder): relative folders are resolved against the rig file."""
    pose = doc.get("pose")
    if base_dir is None or not isinstance(pose, dict) or not isinstance(pose.get("model"), str):
        return
    value = pose["model"]
    if "/" not in value and "\\" not in value and not (base_dir / value).exists():
        return  # a shipped model's name
    p = Path(value).expanduser()
    pose["model"] = str(p if p.is_absolute() else (base_dir / p).resolve())


def parse_rig(text: str | bytes, source: str = "<rig>", base_dir: Path | None = None) -> RigConfig:
    """Decode a rig file's YAML text; raises ConfigError with one clear line."""
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(doc).__name__}")
    _resolve_model(doc, base_dir)
    _resolve_calibration(doc, base_dir)
    recording = doc.get("recording")
    if isinstance(recording, dict) and isinstance(recording.get("video"), bool):
        recording["video"] = "on" if recording["video"] else "off"  # YAML 1.1 reads off as false
    if doc.get("rules") is not None:  # first, for messages that name the rule (rules[1] 'reach': ...)
        try:
            parse_rules(doc["rules"], source)
        except RuleError as exc:
            raise ConfigError(str(exc)) from None
    else:
        doc.pop("rules", None)  # an empty ``rules:`` is no rules
    try:
        return msgspec.convert(doc, type=RigConfig, strict=True)
    except msgspec.ValidationError as exc:
        message = _format_error(exc, source)
        m = _AT.match(str(exc))
        if m and "got" not in message and "unknown key" not in message and "missing" not in message:
            message += _bad_value_detail(doc, m["path"].lstrip("."))
        raise ConfigError(message) from None


def load_rig(path: str | Path | None = None) -> RigConfig:
    """Load a rig file; ``None`` gives the embedded default (the simulated rig)."""
    if path is None:
        rigs = resources.files("rigstream").joinpath("rigs")
        text = rigs.joinpath("sim.yaml").read_text()
        return parse_rig(text, "sim.yaml (embedded default)", base_dir=Path(str(rigs)))
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read rig file: {exc.strerror}") from None
    return parse_rig(text, str(p), base_dir=p.resolve().parent)


def with_overrides(rig: RigConfig, **changes: object) -> RigConfig:
    """A copy of ``rig`` with top-level fields replaced (re-validated)."""
    doc = msgspec.to_builtins(rig)
    doc.update({k: msgspec.to_builtins(v) for k, v in changes.items()})
    try:
        return msgspec.convert(doc, type=RigConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(_format_error(exc, "overrides")) from None
