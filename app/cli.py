"""The ``rigstream`` command: the demo, each component on its own, and tools."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rigstream.config import InputError, RigConfig, load_rig

logger = logging.getLogger("rigstream")


def _rig(args: argparse.Namespace) -> RigConfig:
    return load_rig(args.config)


def _add_component_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="rig file (default: the embedded simulated rig)")
    p.add_argument("--run", default="/tmp/rigstream",
                   help="runtime folder for ipc sockets ({run} in addresses)")
    p.add_argument("--status", help="supervisor's status address (set by the session)")


def cmd_demo(args: argparse.Namespace) -> int:
    from rigstream.app.session import SessionPlan, demo_rig

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
    _print_summary(summary)
    return 0 if _summary_ok(summary) else 1


def _summary_ok(s: dict[str, Any]) -> bool:
    return (not s.get("failed_components") and not s.get("restarted_components")
            and s["framesets_mixed"] == 0
            and s.get("pose", {}).get("out_of_order", 0) == 0
            and all(s["frames"].get(c, 0) + s["frames_dropped"].get(c, 0) == s["pulses_sent"]
                    for c in s["frames"]))


def _print_summary(s: dict[str, Any]) -> None:
    lines = [
        "",
        f"session     {s['out']}",
        f"duration    {s['duration_s']:.2f} s at {s['rate_hz']:g} Hz; pulses sent "
        f"{s['pulses_sent']} (sync line: {s['sync_pulses_sent']})",
    ]
    for cam, n in s["frames"].items():
        dropped = s["frames_dropped"].get(cam, 0)
        check = "ok" if n + dropped == s["pulses_sent"] else "MISMATCH"
        overrun = s.get("frames_overrun", {}).get(cam, 0)
        lines.append(f"camera {cam:5s} {n} frames + {dropped} dropped = {n + dropped} ({check}); "
                     f"flagged {s['frames_flagged'].get(cam, 0)}"
                     + (f"; {overrun} of the dropped overrun in the store before the recorder read "
                        f"them" if overrun else ""))
    lines.append(f"frame sets  {s['framesets_complete']} complete, "
                 f"{s['framesets_incomplete']} incomplete, {s['framesets_mixed']} mixed")
    lines.append(f"clips       {s['clips_saved']}: {', '.join(s['clips']) or '-'}")
    for name, why in s.get("failed_components", {}).items():
        lines.append(f"FAILED      {name}: {why} (the others kept recording)")
    early = s.get("recording_ended_early")
    if early:
        rows = ", ".join(f"{c} {n} rows to index {early['last_trigger_index'][c]}"
                         for c, n in early["rows"].items())
        lines.append(f"RECORDING   ended at {early['at_s']:.1f} s when the recorder failed ({rows}); "
                     f"later frames are only in the clips and the pose tables")
    if "pose" in s:
        p = s["pose"]
        lat = p["latency_pulse_to_pose2d_ms"]
        line = (f"pose        {p['framesets_posed']} frame sets posed, {p['framesets_skipped']} skipped "
                f"(latest-wins), {p['out_of_order']} out of order; {p['model']} on {p['engine']}; "
                f"pulse->Pose2D p50 {_ms(lat.get('p50'))} p99 {_ms(lat.get('p99'))}")
        err = p.get("error_2d_vs_truth")
        if err and err.get("median_px") is not None:
            line += f"; 2D error vs truth median {err['median_px']:.2f} px, p95 {err['p95_px']:.2f} px"
        lines.append(line)
        p3 = p.get("pose3d")
        if p3:
            tri = p3["triangulate_ms"]
            line = (f"3D          {p3['framesets']} frame sets, {p3['points']} points from "
                    f"{p3['cameras']} cameras; triangulation p50 {_us(tri.get('p50'))} "
                    f"p99 {_us(tri.get('p99'))} per frame set; filter {p3['filter']}")
            for key, label in (("error_3d_vs_truth", "3D error vs truth"),
                               ("error_3d_filtered_vs_truth", "filtered")):
                e3 = p3.get(key)
                if e3 and e3.get("median_mm") is not None:
                    line += f"; {label} median {e3['median_mm']:.2f} mm, p95 {e3['p95_mm']:.2f} mm"
            lines.append(line)
    cl = s.get("pose", {}).get("closed_loop")
    if cl is not None:
        lines.extend(_closed_loop_lines(s["pose"].get("rules", {}), cl))
    for r in s.get("restarted_components", []):
        lines.append(f"RESTARTED   {r['component']} at {r['t_s']:.1f} s: {r['why']}")
    nc = s.get("neural_clock")
    if nc:
        if nc.get("aligned"):
            m, e = nc["mapping"], nc["error_vs_truth"]
            lines.append(f"neural      {nc['kind']} recorder: {m['n_matched']} sync pulses matched "
                         f"({m['unmatched_a']} Pi / {m['unmatched_b']} recorder unmatched), drift "
                         f"{m['drift_ppm']:.1f} ppm; frame times vs truth RMS {e['rms_us']:.1f} us, "
                         f"max {e['max_us']:.1f} us; column {nc['column']}")
        else:
            lines.append(f"neural      not aligned: {nc.get('error') or nc.get('align_with')}")
    gaps = {k: v for k, v in s["transport_seq_gaps"].items() if v}
    if gaps:
        lines.append(f"transport   messages lost: {gaps}")
    lines.append(f"summary     {Path(s['out']) / 'summary.json'}")
    print("\n".join(lines))


def _closed_loop_lines(rules: dict[str, Any], cl: dict[str, Any]) -> list[str]:
    fired = ", ".join(f"{name} {st['fired']}x" for name, st in rules.items()) or "-"
    lines = [f"rules       {cl.get('firings', 0)} firings ({fired})"]
    ttl, act = cl.get("pulse_to_ttl_ms", {}), cl.get("pulse_to_action_ms", {})
    if ttl.get("n"):
        share = cl.get("infer_share_of_pulse_to_ttl")
        steps = cl.get("steps_ms", {})
        chain = " -> ".join(f"{k} {_ms(v.get('p50'))}" for k, v in steps.items() if v.get("n"))
        lines.append(f"latency     pulse->TTL edge p50 {_ms(ttl['p50'])} p99 {_ms(ttl['p99'])} max "
                     f"{_ms(ttl['max'])} (n {ttl['n']}); inference "
                     f"{'-' if share is None else f'{share:.0%}'} of it; p50 steps: {chain}")
    elif act.get("n"):
        lines.append(f"latency     pulse->rule decision p50 {_ms(act['p50'])} p99 {_ms(act['p99'])}")
    return lines


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def _us(ms: float | None) -> str:
    return "-" if ms is None else f"{ms * 1e3:.0f} us"


def cmd_trigger(args: argparse.Namespace) -> int:
    from rigstream.firmware.trigger import run_trigger
    from rigstream.transport import SignalStop

    # Ctrl-C or SIGTERM: the train stops, the pins close, and the daemon exits 0 like the others.
    run_trigger(_rig(args), args.run, stop=SignalStop().on_signals(), autostart=args.start,
                realtime_priority=args.realtime_priority)
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rigstream", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the simulated rig end to end, every component a process")
    p.add_argument("--config", help="rig file (default: the embedded simulated rig)")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--cameras", type=int, help="number of simulated cameras (default: rig's)")
    p.add_argument("--fps", type=float, help="trigger rate in Hz (default: rig's)")
    p.add_argument("--drop-rate", type=float, help="share of frames each camera loses")
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--codec", choices=["ffv1", "h264", "h264_lossless", "raw"])
    p.add_argument("--out", help="session folder (default: sessions/demo-<time>)")
    p.add_argument("--no-pose", action="store_true", help="run without the live pose engine")
    _add_monitor_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("run", help="run a rig: every component a process, supervised, until Ctrl-C")
    p.add_argument("--config", help="rig file (default: the embedded simulated rig)")
    p.add_argument("--seconds", type=float, help="stop after this long (default: run until Ctrl-C)")
    p.add_argument("--out", help="session folder (default: <recording.folder>/session-<time>)")
    _add_monitor_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("trigger", help="run the trigger daemon (on the Pi, or simulated)")
    _add_component_args(p)
    p.add_argument("--start", action="store_true", help="start pulsing at once")
    p.add_argument("--realtime-priority", type=int, choices=range(1, 100), metavar="1..99",
                   help="run the pulse thread SCHED_FIFO at this priority (root or CAP_SYS_NICE)")
    p.set_defaults(func=cmd_trigger)

    p = sub.add_parser("keys", help="make a CURVE key pair for the trigger's control socket")
    p.add_argument("--out", required=True, help="folder to write NAME.key and NAME.key_secret to")
    p.add_argument("--name", default="rigstream", help="file name of the pair (default: rigstream)")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("camera", help="run one camera node")
    _add_component_args(p)
    p.add_argument("--name", required=True)
    p.add_argument("--expect-subscribers", type=int, default=0,
                   help="wait for this many consumers before taking frames")
    p.set_defaults(func=cmd_camera)

    p = sub.add_parser("record", help="record every frame to videos + frames.csv")
    _add_component_args(p)
    p.add_argument("--out")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("bridge", help="fill this host's store of a camera on another host "
                       "(one per camera)")
    _add_component_args(p)
    p.add_argument("--camera", required=True, help="the camera's name in the rig")
    p.add_argument("--source", help="the camera node's tcp address (default: the camera's address "
                   "in the rig)")
    p.set_defaults(func=cmd_bridge)

    p = sub.add_parser("assemble", help="match frames by trigger index into frame sets")
    _add_component_args(p)
    p.set_defaults(func=cmd_assemble)

    p = sub.add_parser("pose", help="run the live pose engine on frame sets (latest-wins)")
    _add_component_args(p)
    p.add_argument("--out", help="folder for pose2d.csv and pose_timing.csv (default: none)")
    p.set_defaults(func=cmd_pose)

    p = sub.add_parser("ringbuffer", help="keep the last seconds of every camera; save clips")
    _add_component_args(p)
    p.add_argument("--out")
    p.set_defaults(func=cmd_ringbuffer)

    p = sub.add_parser("monitor", help="serve the live monitor page (frames, keypoints, 3D, health)")
    _add_component_args(p)
    p.add_argument("--port", type=int, default=8800, help="TCP port (default 8800; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default loopback; any other needs a token)")
    p.add_argument("--token", default=None,
                   help="access token (default: $RIGSTREAM_MONITOR_TOKEN; made and printed when "
                        "the host is not loopback and none is given)")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser("event", help="send an event to the ring buffer (saves a clip)")
    _add_component_args(p)
    p.add_argument("--name", default="manual")
    p.add_argument("--index", type=int, help="trigger index (default: the latest)")
    p.add_argument("--pre", type=float, metavar="S",
                   help="with --post: a clip of its own of exactly [n - S, n + post] (default: the "
                        "ring buffer's window, merged with overlapping clips)")
    p.add_argument("--post", type=float, metavar="S")
    p.set_defaults(func=cmd_event)

    p = sub.add_parser("check", help="validate a rig file")
    p.add_argument("--config")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("verify", help="check a session folder: rows, videos, clips")
    p.add_argument("session")
    p.add_argument("--truth", action="store_true",
                   help="simulated rig: compare every pixel with what the cameras rendered")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("doctor", help="check a rig step by step: cameras, settings, trigger and "
                                      "strobe wiring, disk speed")
    p.add_argument("--config", help="rig file (default: the embedded simulated rig)")
    p.add_argument("--pulses", type=int,
                   help="pulses of the wiring test (default: 2 s at the rig's rate, at least 100)")
    p.add_argument("--disk-mb", type=float,
                   help="size of the disk test file in MB (default 256; 16 for a simulated rig)")
    p.add_argument("--keep", metavar="DIR", help="keep the wiring test's session folder here")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("cameras", help="list the connected FLIR cameras (serial, model, firmware, "
                                       "interface)")
    p.add_argument("--sim", action="store_true", help="list the embedded simulated rig's cameras instead")
    p.set_defaults(func=cmd_cameras)

    p = sub.add_parser("train", help="train a pose model (DeepLabCut project or the simulated rig)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dlc-project", help="DeepLabCut project folder (config.yaml, labeled-data/)")
    src.add_argument("--sim", nargs="?", const="", metavar="RIG_FILE",
                     help="frames rendered by the simulated rig (default: the embedded one)")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--iterations", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--crop", type=int, help="training crop side, model-input pixels")
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share (DeepLabCut)")
    p.add_argument("--input-scale", type=float, default=0.5, help="sim: model input / camera size")
    p.add_argument("--input-width", type=int)
    p.add_argument("--input-height", type=int)
    p.add_argument("--eval-frames", type=int, default=200, help="sim: fresh frames for the error table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="pixel error of a model against a DeepLabCut project's labels")
    p.add_argument("--model", required=True)
    p.add_argument("--dlc-project", required=True)
    p.add_argument("--split", choices=["all", "test", "train"], default="all")
    p.add_argument("--engine", choices=["onnxruntime", "torch", "tensorrt"], default="onnxruntime")
    p.add_argument("--out", help="JSON report (default: MODEL/evaluation-SPLIT.json)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("build-engine", help="build (or load from the cache) and time a TensorRT engine")
    p.add_argument("--model", required=True)
    p.add_argument("--views", type=int, default=2, help="batch size = cameras per frame set")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--cache", help="engine cache folder (default ~/.cache/rigstream/engines)")
    p.add_argument("--fp32", action="store_true", help="build without FP16")
    p.set_defaults(func=cmd_build_engine)

    p = sub.add_parser("calibrate", help="calibrate cameras from views of a ChArUco board or checkerboard")
    p.add_argument("sources", nargs="+", metavar="CAM=SOURCE",
                   help="camera name and its folder of board images (paired across cameras by the "
                        "trailing number of the file name) or board video")
    p.add_argument("--board", required=True,
                   help="board file (anipose board.toml, or config.toml with [calibration]) or inline: "
                        "checkerboard:COLSxROWS:SQUARE (inner corners, e.g. checkerboard:9x6:30) or "
                        "charuco:XxY:SQUARE:MARKER[:4x4_1000] (squares)")
    p.add_argument("--out", required=True, help="calibration file to write (aniposelib TOML)")
    p.add_argument("--report", default=None, help="report JSON (default: OUT with .report.json)")
    p.add_argument("--model", default="auto",
                   help="lens model (auto: k1k2 with 8+ views per camera, else k1)")
    p.add_argument("--every", type=int, default=1, help="videos: use every k-th frame")
    p.add_argument("--workers", type=int, default=None, help="detection threads (default: CPU count)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("triangulate", help="2D keypoint files (one per camera) -> anipose 3D CSV")
    p.add_argument("files", nargs="+", metavar="CAM=FILE",
                   help="camera name and its 2D keypoints: DeepLabCut .h5/.csv or SLEAP analysis .h5")
    p.add_argument("--calibration", required=True, help="aniposelib calibration TOML")
    p.add_argument("--out", required=True, help="3D CSV to write (anipose layout)")
    p.add_argument("--min-score", type=float, default=0.3, help="views less confident are not used")
    p.add_argument("--max-error-px", type=float, default=15.0,
                   help="re-solve without the worst view above this mean reprojection error")
    p.add_argument("--unweighted", action="store_true", help="every used view counts the same")
    p.add_argument("--track", default=None, help="multi-animal files: the track or individual to use")
    p.add_argument("--report", default=None, help="also write the report as JSON")
    p.set_defaults(func=cmd_triangulate)

    p = sub.add_parser("align", help="match two sync-pulse trains and map one clock onto the other")
    p.add_argument("--a", help="edge times on clock A (the Pi's): CSV/TXT/NPY, FILE.ppd[:DIGITAL], "
                               "or an Open Ephys recording REC:LINE[:STREAM]")
    p.add_argument("--b", required=True, help="edge times on clock B (the recorder's), same forms")
    p.add_argument("--session", help="align a session folder's sync line (instead of --a) and add "
                                     "t_neural columns to its tables")
    p.add_argument("--out", help="mapping.json to write (converts times both ways)")
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("bench", help="benchmarks that print JSON")
    p.add_argument("what", choices=["throughput", "inference", "triangulate", "align", "closed-loop", "soak"])
    p.add_argument("--seconds", type=float, default=None,
                   help="throughput: per trial (default 30); align: simulated session (default 3600); "
                        "closed-loop: per configuration (default 30); soak: the session (default 1800)")
    p.add_argument("--rates", default="", help="comma-separated trigger rates to try")
    p.add_argument("--width", type=int, default=1440)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--codec", default="raw", choices=["ffv1", "h264", "h264_lossless", "raw"])
    p.add_argument("--out", default=None)
    p.add_argument("--model", default="sim", help="inference: model folder (default: the shipped sim model)")
    p.add_argument("--engine", default="onnxruntime,torch",
                   help="inference: comma-separated engines, timed side by side")
    p.add_argument("--views", type=int, default=2, help="inference: batch = views of one frame set")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--threads", type=int, default=2, help="inference: CPU threads per engine")
    p.add_argument("--cameras", default=None,
                   help="comma-separated camera counts: throughput (default 2), triangulate (default 2,4,6)")
    p.add_argument("--no-monitor", action="store_true", help="throughput: without the monitor")
    p.add_argument("--no-video", action="store_true",
                   help="throughput: whole-session video off (frames.csv still written)")
    p.add_argument("--pose", action="store_true", help="throughput: with the live pose engine")
    p.add_argument("--keep", action="store_true",
                   help="throughput, soak: keep the session folders (raw video: 0.7 GB/s at 2 x 226 Hz)")
    p.add_argument("--keypoints", type=int, default=20, help="triangulate: keypoints per frame set")
    p.set_defaults(func=cmd_bench)
    return parser


def _add_monitor_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--monitor", type=int, metavar="PORT",
                   help="serve the live monitor page on this port (0: any free port)")
    p.add_argument("--monitor-host", default="127.0.0.1",
                   help="address the monitor listens on (default loopback; any other needs a token, "
                        "made and printed if RIGSTREAM_MONITOR_TOKEN is not set)")


def _end_with_supervisor() -> None:
    """On Linux, have the kernel send this component SIGTERM (a clean stop: files closed) when its
    supervisor dies, even by SIGKILL, so no component of a killed session keeps running."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the supervisor died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)


HOST_MODULES = ("scipy", "cv2", "av", "onnxruntime", "numba", "h5py", "pandas", "tables", "aiohttp")
"""The imports of the ``host`` extra (pyproject.toml)."""
LIGHT_COMMANDS = frozenset({"trigger", "keys"})
"""What a light install (``rigstream[pi]`` on a Raspberry Pi) runs; every other command checks for
the host's libraries before it starts."""


def _missing_host_modules() -> list[str]:
    from importlib.util import find_spec

    return [m for m in HOST_MODULES if find_spec(m) is None]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if getattr(args, "status", None):  # a component started by a session's supervisor
        _end_with_supervisor()
        # A terminal's Ctrl-C is SIGINT to the whole foreground process group: the supervisor
        # handles it for every component, in order (SignalStop leaves an ignored SIGINT alone).
        # Not a process session of its own instead: with the kernel's autogroups each session
        # gets an equal CPU share, whatever its threads (the pose engine's inference pool among them).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.command not in LIGHT_COMMANDS and (missing := _missing_host_modules()):
        print(f"rigstream {args.command}: needs the host's libraries, and {', '.join(missing)} "
              f"{'is' if len(missing) == 1 else 'are'} not installed: pip install 'rigstream[host]' "
              "(a Raspberry Pi that runs only the trigger needs 'rigstream[pi]')", file=sys.stderr)
        return 2
    if args.command in ("demo", "run"):
        logging.getLogger().setLevel(logging.WARNING if not args.verbose else logging.DEBUG)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"rigstream: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
