"""The ``rigstream`` commands: one function per subcommand (``args`` from :mod:`.cli`'s parser),
each importing what it runs when it runs, so a command loads only its own layer."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rigstream.app.report import print_summary, summary_ok
from rigstream.config import InputError, RigConfig, load_rig

logger = logging.getLogger("rigstream")


def _rig(args: argparse.Namespace) -> RigConfig:
    return load_rig(args.config)


def cmd_demo(args: argparse.Namespace) -> int:
    from rigstream.app.demo import demo_rig
    from rigstream.app.session import SessionPlan

    if not args.seconds > 0:
        raise InputError(f"demo: --seconds must be positive, got {args.seconds:g}")
    rig = demo_rig(_rig(args), cameras=args.cameras, fps=args.fps, drop_rate=args.drop_rate,
                   width=args.width, height=args.height, codec=args.codec,
                   pose=False if args.no_pose else None)
    pulses = round(args.seconds * rig.trigger.rate_hz)
    out = Path(args.out or Path(rig.recording.folder) / time.strftime("demo-%Y%m%d-%H%M%S"))
    post = rig.frames_per(rig.ring_buffer.post_s)
    pre = rig.frames_per(rig.ring_buffer.pre_s)
    events: list[int] = []
    if not rig.rules:  # without a rule to fire: a clip with its full history, then two events
        first = max(pre, pulses // 4)  # close enough to merge into one clip
        second = first + pre + post + 2
        events = [n for n in (first, second, second + max(1, post // 2)) if n + post < pulses]
        events = events or [max(0, pulses - post - 1)]
    rules = ", ".join(r.name for r in rig.rules) or f"none (clips at pulses {events})"
    print(f"rigstream demo: {len(rig.cameras)} simulated cameras at {rig.trigger.rate_hz:g} Hz "
          f"({rig.cameras[0].width}x{rig.cameras[0].height} {rig.cameras[0].pixel_format}), "
          f"{pulses} pulses; rules: {rules} -> {out}", file=sys.stderr)
    return _run_session(SessionPlan(rig, out, pulses, events, monitor=_monitor_plan(args)))


def cmd_run(args: argparse.Namespace) -> int:
    from rigstream.app.session import SessionPlan

    rig = _rig(args)
    if args.seconds is not None and args.seconds <= 0:
        raise InputError(f"run: --seconds must be positive, got {args.seconds:g}")
    from rigstream.acquisition.codecs import check_codec

    codec = check_codec(rig, args.config or "embedded sim.yaml")  # refuses one the rate cannot take
    out = Path(args.out or Path(rig.recording.folder) / time.strftime("session-%Y%m%d-%H%M%S"))
    until = f"for {args.seconds:g} s" if args.seconds else "until Ctrl-C"
    print(f"rigstream run: rig {rig.name!r}, {len(rig.cameras)} cameras at {rig.trigger.rate_hz:g} Hz, "
          f"{len(rig.rules)} rules, {until} -> {out}; {codec}", file=sys.stderr)
    return _run_session(SessionPlan(rig, out, None, seconds=args.seconds, monitor=_monitor_plan(args)))


def _monitor_plan(args: argparse.Namespace) -> Any:
    from rigstream.app.session import MonitorPlan

    if args.monitor is None:
        return None
    if not 0 <= args.monitor <= 65535:
        raise InputError(f"--monitor: expected a port 0..65535 (0: any free port), got {args.monitor}")
    return MonitorPlan(port=args.monitor, host=args.monitor_host)


def _run_session(plan: Any) -> int:
    """Run a session in the foreground: Ctrl-C (SIGINT, or SIGTERM) asks it to stop cleanly,
    a second Ctrl-C stops without waiting for clips; prints the summary."""
    from rigstream.app.session import Session, SessionError

    session = Session(plan, progress=lambda line: print(line, file=sys.stderr, flush=True))

    def on_signal(signum: int, frame: Any) -> None:
        print("\nrigstream: stopping (Ctrl-C again to stop without waiting for clips)",
              file=sys.stderr, flush=True)
        session.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = session.run()
    except SessionError as exc:  # a component failed: stopped in order, or before it started
        print(f"rigstream: session failed: {exc}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print_summary(summary)
    return 0 if summary_ok(summary) else 1


def cmd_trigger(args: argparse.Namespace) -> int:
    from rigstream.firmware.trigger import run_trigger
    from rigstream.transport import SignalStop

    rig = _rig(args)
    # Ctrl-C or SIGTERM: the train stops, the pins close, and the daemon exits 0 like the others.
    run_trigger(rig, args.run, stop=SignalStop().on_signals(), autostart=args.start,
                realtime_priority=args.realtime_priority, attach=_sim_devices(rig, args.run))
    return 0


def _sim_devices(rig: Any, run: str) -> Callable[[Any], Callable[[], None]] | None:
    """What the simulated trigger's pins drive besides the cameras: the simulated apparatus's
    sensors and the simulated neural recorder's live stream (None on a real Pi)."""
    if rig.trigger.backend != "sim":
        return None
    nc = rig.neural_clock
    apparatus = any(i.sim is not None for i in rig.inputs)
    recorder = (nc is not None and nc.kind == "sim" and nc.live and rig.sync_line.enabled
                and nc.events_address is None)
    if not (apparatus or recorder):
        return None

    def attach(pins: Any) -> Callable[[], None]:
        closers: list[Callable[[], None]] = []
        if apparatus:
            from rigstream.acquisition.sim_apparatus import SimApparatus  # numpy and the sim world

            sim = SimApparatus(rig)
            sim.attach(pins)
            closers.append(sim.close)
        if recorder:
            import zmq

            from rigstream.sync.live_clock import SimRecorderStream
            from rigstream.sync.sim_recorder import SimRecorder

            c = nc.sim
            ctx = zmq.Context()
            stream = SimRecorderStream(
                SimRecorder(rate_hz=c.rate_hz, offset_s=c.offset_s, drift_ppm=c.drift_ppm,
                            wander_ppm=c.wander_ppm, missing=c.missing, spurious=c.spurious, seed=c.seed),
                ctx, rig.address("neural_events", run), line=nc.sync_input_line, stream=nc.name)
            stream.attach(pins, rig.sync_line.pin)
            closers += [stream.close, ctx.term]

        def detach() -> None:
            for close in closers:
                close()

        return detach

    return attach


def cmd_keys(args: argparse.Namespace) -> int:
    from rigstream.transport import create_curve_keys

    public, secret = create_curve_keys(args.out, args.name)
    print(f"{public}: public key (copy it to the trigger's authorized folder, or to clients "
          f"as the server's key)\n{secret}: secret key (keep it on this machine only)")
    return 0


def cmd_camera(args: argparse.Namespace) -> int:
    from rigstream.acquisition.camera_node import run_camera

    summary = run_camera(_rig(args), args.name, args.run, args.status, args.expect_subscribers)
    logger.info("camera %s done: %s", args.name, summary)
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from rigstream.acquisition.recorder import run_recorder

    rig = _rig(args)
    out = args.out or str(Path(rig.recording.folder) / time.strftime("session-%Y%m%d-%H%M%S"))
    run_recorder(rig, args.run, out, args.status)
    return 0


def cmd_bridge(args: argparse.Namespace) -> int:
    from rigstream.acquisition.bridge import run_bridge

    summary = run_bridge(_rig(args), args.camera, args.run, args.status, args.source)
    logger.info("bridge %s done: %s", args.camera, summary)
    return 0


def cmd_assemble(args: argparse.Namespace) -> int:
    from rigstream.sync.assembler import run_assembler

    run_assembler(_rig(args), args.run, args.status)
    return 0


def cmd_pose(args: argparse.Namespace) -> int:
    from rigstream.inference.pose_engine import run_pose

    run_pose(_rig(args), args.run, args.out, args.status)
    return 0


def cmd_ringbuffer(args: argparse.Namespace) -> int:
    from rigstream.acquisition.ringbuffer import run_ringbuffer

    rig = _rig(args)
    out = args.out or str(Path(rig.recording.folder) / time.strftime("clips-%Y%m%d-%H%M%S"))
    run_ringbuffer(rig, args.run, out, args.status)
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    import os
    import secrets

    from rigstream.app.monitor import run_monitor
    from rigstream.app.monitor.security import is_loopback_host

    token = args.token if args.token is not None else os.environ.get("RIGSTREAM_MONITOR_TOKEN")
    if not token and not is_loopback_host(args.host):
        token = secrets.token_urlsafe(24)
        print(f"monitor: {args.host} is reachable from the network; made a token for this run "
              f"(set RIGSTREAM_MONITOR_TOKEN or --token to choose one)", file=sys.stderr)
    run_monitor(_rig(args), args.run, args.status, host=args.host, port=args.port, token=token or None,
                announce=lambda url: print(f"monitor: {url}", file=sys.stderr, flush=True))
    return 0


def cmd_event(args: argparse.Namespace) -> int:
    import zmq

    from rigstream.acquisition.ringbuffer import send_event
    from rigstream.protocol import Event

    rig = _rig(args)
    data: dict[str, Any] = {}
    if (args.pre is None) != (args.post is None):
        raise InputError("event: give --pre and --post together (seconds before and after)")
    if args.pre is not None:
        if not (args.pre >= 0 and args.post >= 0) or args.pre + args.post == 0:
            raise InputError(f"event: --pre and --post must be >= 0 s and not both 0, got {args.pre:g} "
                             f"and {args.post:g}")
        data["clip"] = {"pre_s": args.pre, "post_s": args.post}
    event = Event(name=args.name, source="cli", trigger_index=args.index,
                  t_host_ns=time.monotonic_ns(), data=data)
    send_event(zmq.Context.instance(), rig.address("events", args.run), event)
    where = args.index if args.index is not None else "latest"
    print(f"event {args.name!r} sent (trigger index: {where})")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    rig = _rig(args)
    cams = ", ".join(f"{c.name} ({c.role}, {c.backend}, {c.width}x{c.height})" for c in rig.cameras)
    pose = "no pose engine"
    if rig.pose is not None and rig.pose.enabled:
        from rigstream.inference.pose_engine import plan_pose

        plan = plan_pose(rig)
        card = plan.model.card
        pose = (f"pose model {card.name} ({len(card.keypoints)} keypoints, {card.input.width}x"
                f"{card.input.height}) on {rig.pose.engine}")
        if plan.triangulator is not None:
            pose += f"; live 3D from {len(plan.triangulator.names)} cameras"
    calibration = "no calibration"
    if rig.calibration is not None:
        from rigstream.calibration import Calibration

        Calibration.load(rig.calibration).for_rig_cameras(rig.cameras)
        calibration = f"calibration {rig.calibration}"
    rules = "no rules"
    if rig.rules:
        if rig.pose is None or not rig.pose.enabled:
            raise InputError(f"{args.config or 'embedded sim.yaml'}: rules "
                             f"({', '.join(r.name for r in rig.rules)}) run on the live pose: enable the "
                             f"pose section (pose.enabled)")
        rules = "rules " + ", ".join(f"{r.name} ({r.kind}: {'+'.join(a.kind for a in r.actions)})"
                                     for r in rig.rules)  # checked against the model by plan_pose
    from rigstream.acquisition.codecs import check_codec
    from rigstream.framestore import check_fits

    where = args.config or "embedded sim.yaml"
    memory = check_fits(rig.store_bytes(), where)
    codec = check_codec(rig, where)
    from rigstream.transport import check_addresses

    # The session's runtime folder is made in the temporary folder with 8 random characters.
    addresses = check_addresses(rig, os.path.join(tempfile.gettempdir(), "rigstream-xxxxxxxx"))
    print(f"{where}: rig {rig.name!r} ok: {cams}; trigger "
          f"{rig.trigger.rate_hz:g} Hz ({rig.trigger.backend}); {pose}; {calibration}; {rules}; "
          f"{memory} ({rig.store_frames()} frames per camera); {codec}; {addresses}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from rigstream.app.verify import verify_session

    report = verify_session(args.session, truth=args.truth)
    print(json.dumps(report, indent=2))
    return 0 if not report["problems"] else 1


def cmd_doctor(args: argparse.Namespace) -> int:
    from rigstream.app.doctor import DoctorOptions, StepResult, run_doctor, wiring_pulses

    rig = _rig(args)
    if not args.verbose:  # the steps' results are the output; the components' logs go to files
        logging.getLogger().setLevel(logging.WARNING)
    if args.pulses is not None and args.pulses < 1:
        raise InputError(f"doctor: --pulses must be at least 1, got {args.pulses}")
    if args.disk_mb is not None and args.disk_mb <= 0:
        raise InputError(f"doctor: --disk-mb must be positive, got {args.disk_mb:g}")
    print(f"rigstream doctor: rig {rig.name!r} ({args.config or 'embedded sim.yaml'}): "
          f"{len(rig.cameras)} cameras at {rig.trigger.rate_hz:g} Hz; wiring test of "
          f"{wiring_pulses(rig, args.pulses)} pulses", flush=True)

    def report(r: StepResult) -> None:
        print(f"{r.status}  {r.name}: {r.detail}", flush=True)
        if r.check and r.ok is not True:
            print(f"      check: {r.check}", flush=True)

    options = DoctorOptions(pulses=args.pulses, disk_test_mb=args.disk_mb,
                            keep=Path(args.keep) if args.keep else None,
                            progress=(lambda line: print(f"      {line}", file=sys.stderr, flush=True))
                            if args.verbose else None)
    results = run_doctor(rig, options, report)
    failed = [r.name for r in results if r.ok is False]
    if failed:
        print(f"doctor: {len(failed)} of {len(results)} checks failed: {', '.join(failed)}")
        return 1
    print(f"doctor: all {len(results)} checks passed")
    return 0


def cmd_cameras(args: argparse.Namespace) -> int:
    if args.sim:
        rig = load_rig()
        cameras = [{"serial": c.serial, "model": f"simulated {c.role} {c.width}x{c.height} {c.pixel_format}",
                    "firmware": "-", "interface": "sim"} for c in rig.cameras]
    else:
        from rigstream.acquisition.camera import CameraError
        from rigstream.app.doctor import list_connected_cameras

        try:
            cameras = list_connected_cameras()
        except CameraError as exc:
            raise InputError(f"cameras: {exc} (`rigstream cameras --sim` lists the simulated "
                             f"rig's)") from None
    if not cameras:
        print("no FLIR cameras found (check the USB3 cables; SpinView should see them too)")
        return 1
    keys = ("serial", "model", "firmware", "interface")
    rows = [[str(c.get(k, "?")) for k in keys] for c in cameras]
    widths = [max(len(k), *(len(r[i]) for r in rows)) for i, k in enumerate(keys)]
    for line in ([k.upper() for k in keys], *rows):
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    return 0


def _train_config(args: argparse.Namespace, **defaults: Any) -> Any:
    from rigstream.inference.train import TrainConfig

    cfg = TrainConfig(**defaults)
    for key in ("iterations", "batch", "crop", "lr", "seed"):
        value = getattr(args, key)
        if value is not None:
            setattr(cfg, key, value)
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    if args.crop is not None and (args.crop % 16 or args.crop < 32):
        raise InputError(f"train: --crop {args.crop} must be a multiple of 16, at least 32")
    from rigstream.inference.metrics import format_error_table
    from rigstream.inference.train import train_dlc, train_sim

    out = Path(args.out)
    command = "rigstream " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["train"] else "rigstream train"
    if args.sim is not None:
        rig = load_rig(args.sim or None)
        cam = rig.cameras[0]
        scale = args.input_scale
        input_wh = (args.input_width or round(cam.width * scale),
                    args.input_height or round(cam.height * scale))
        if input_wh[0] % 16 or input_wh[1] % 16:
            raise InputError(f"train --sim: model input {input_wh[0]}x{input_wh[1]} (camera {cam.width}x"
                             f"{cam.height} x {scale:g}) needs sides that are multiples of 16; "
                             f"set --input-width/--input-height")
        cfg = _train_config(args, iterations=6000, crop=112)
        model, errors = train_sim(rig, out, input_wh, cfg, test_frames=args.eval_frames,
                                  progress=not args.quiet, command=command)
    else:
        cfg = _train_config(args, iterations=4000, crop=192)
        model, errors = train_dlc(Path(args.dlc_project), out, cfg, args.test_fraction,
                                  progress=not args.quiet, command=command)
    print(format_error_table(errors))
    t = model.card.training
    print(f"\nmodel {model.card.name}: {model.folder} ({t['iterations']} iterations in {t['seconds']:.0f} s; "
          f"input {model.card.input.width}x{model.card.input.height})")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rigstream.inference.evaluate import evaluate_dlc

    report = evaluate_dlc(args.model, args.dlc_project, split=args.split, engine=args.engine)
    from rigstream.inference.metrics import format_error_table

    print(format_error_table({report["split"]: report["errors"]}))
    out = Path(args.out) if args.out else Path(args.model) / f"evaluation-{report['split']}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nmean error {report['errors']['all']['mean_px']:.2f} px over {report['frames']} frames -> {out}")
    return 0


def cmd_build_engine(args: argparse.Namespace) -> int:
    from rigstream.inference.modeldir import load_model
    from rigstream.inference.trt_engine import build_and_time

    result = build_and_time(load_model(args.model), args.views, iterations=args.iterations,
                            cache_dir=args.cache, fp16=not args.fp32)
    print(json.dumps(result, indent=2))
    return 0


def camera_pairs(pairs: list[str], what: str, example: str) -> dict[str, str]:
    """``["back=a/b", "mid=c"]`` -> ``{"back": "a/b", "mid": "c"}``; InputError on a bad pair."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not name or not value:
            raise InputError(f"{pair!r}: expected CAM={what} (e.g. {example})")
        if name in out:
            raise InputError(f"{pair!r}: camera {name} given twice")
        out[name] = value
    return out


def cmd_triangulate(args: argparse.Namespace) -> int:
    from rigstream.config import TriangulationConfig
    from rigstream.inference.triangulate import triangulate_files

    files = camera_pairs(args.files, "FILE", "back=back.analysis.h5")
    config = TriangulationConfig(min_score=args.min_score, max_error_px=args.max_error_px,
                                 weighted=not args.unweighted)
    report = triangulate_files(args.calibration, files, args.out, config, track=args.track)
    err = report["reprojection_error_px"]
    print(f"{report['points']} of {report['points_possible']} points triangulated "
          f"({report['frames']} frames x {len(report['keypoints'])} keypoints, cameras "
          f"{', '.join(report['cameras'])}); {report['points_under_two_views']} seen by fewer than two "
          f"confident views; {report['views_dropped_by_resolve']} views dropped by the worst-view re-solve")
    if err["median"] is not None:
        print(f"reprojection error: median {err['median']:.2f} px, p95 {err['p95']:.2f} px, "
              f"mean {err['mean']:.2f} px; cameras used {report['ncams']}")
    print(f"-> {report['out']}")
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rigstream.inference.dlc_files import export_session

    logging.getLogger("numexpr").setLevel(logging.WARNING)  # pandas' import says its thread count
    if not args.no_nwb:
        from rigstream.inference.nwb_files import require_nwb

        require_nwb("rigstream export (or --no-nwb)")  # before any file is written
    report = export_session(args.session, args.out, scorer=args.scorer)
    for cam in report.cameras:
        print(f"-> {cam.h5}")
        print(f"-> {cam.csv}")
        skipped = [f"{n} {why}" for n, why in ((cam.skipped_dropped, "without a video frame (dropped)"),
                                               (cam.skipped_unknown, "not in frames.csv"),
                                               (cam.duplicates, "repeating a posed frame"))
                   if n]
        print(f"{cam.camera}: {cam.video_frames} video frames: {cam.posed} posed, {cam.nan_rows} NaN"
              + (f"; pose rows skipped: {', '.join(skipped)}" if skipped else ""))
    if report.without_video:
        print(f"no video, no files: {', '.join(report.without_video)}")
    for camera, n in report.not_in_frames.items():
        print(f"{camera}: {n} pose rows skipped (camera not in frames.csv)")
    print(f"scorer {report.scorer}, {len(report.keypoints)} keypoints")
    if not args.no_nwb:
        from rigstream.inference.nwb_files import export_session_nwb

        session = Path(args.session).expanduser()
        out = Path(args.out).expanduser() / f"{session.resolve().name}.nwb" if args.out else None
        print(f"-> {export_session_nwb(session, out, neural_rate_hz=args.neural_rate_hz)}")
    return 0


def _print_mapping(summary: dict[str, Any], a_count: int, b_count: int) -> None:
    ub = summary["units_b"]
    print(f"pulses: {a_count} in A, {b_count} in B; matched {summary['n_matched']} "
          f"({summary['n_outliers']} rejected by the fit as outliers); unmatched: "
          f"{summary['unmatched_a']} in A, {summary['unmatched_b']} in B")
    print(f"scale {summary['scale']:.9g} {ub} per {summary['units_a']}; drift up to "
          f"{summary['drift_ppm']:.2f} ppm; residuals RMS {summary['residual_rms']:.4g} {ub}, "
          f"max {summary['residual_max']:.4g} {ub}")


def cmd_align(args: argparse.Namespace) -> int:
    from rigstream.sync.align import align
    from rigstream.sync.recorders import read_edges

    b = read_edges(args.b)
    if args.session:
        from rigstream.sync.session_align import MAPPING_FILE, align_session, read_pulses

        units = b.units if b.units != "?" else "units"
        mapping = align_session(args.session, b.times, units=units)
        _print_mapping(mapping.summary(), int(read_pulses(Path(args.session))[0].size), len(b.times))
        print(f"-> {Path(args.session) / MAPPING_FILE}; t_neural_{units} added to the session's tables")
        return 0
    if not args.a:
        raise InputError("align: give --a EDGES (or --session DIR) and --b EDGES")
    a = read_edges(args.a)
    mapping = align(a.times, b.times, units_a=a.units, units_b=b.units)
    _print_mapping(mapping.summary(), len(a.times), len(b.times))
    if args.out:
        mapping.save(args.out)
        print(f"-> {args.out}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from rigstream.app.calibrate_cmd import calibrate_main

    return calibrate_main(args, camera_pairs(args.sources, "SOURCE", "back=calib/back or back=back.mp4"))


def cmd_bench(args: argparse.Namespace) -> int:
    from rigstream.app.bench import run_bench

    result = run_bench(args.what, args)
    print(json.dumps(result, indent=2))
    return 0
