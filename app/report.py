"""What ``rigstream demo`` and ``rigstream run`` print at the end: the session's summary.json
read back as a few lines (frames, drops, sets, clips, pose, the rules' latency) and whether
the session went as it should."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def summary_ok(s: dict[str, Any]) -> bool:
    return (not s.get("failed_components") and not s.get("restarted_components")
            and s["framesets_mixed"] == 0
            and s.get("pose", {}).get("out_of_order", 0) == 0
            and all(s["frames"].get(c, 0) + s["frames_dropped"].get(c, 0) == s["pulses_sent"]
                    for c in s["frames"]))


def print_summary(s: dict[str, Any]) -> None:
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
                f"pulse->Pose2D p50 {fmt_ms(lat.get('p50'))} p99 {fmt_ms(lat.get('p99'))}")
        err = p.get("error_2d_vs_truth")
        if err and err.get("median_px") is not None:
            line += f"; 2D error vs truth median {err['median_px']:.2f} px, p95 {err['p95_px']:.2f} px"
        lines.append(line)
        p3 = p.get("pose3d")
        if p3:
            tri = p3["triangulate_ms"]
            line = (f"3D          {p3['framesets']} frame sets, {p3['points']} points from "
                    f"{p3['cameras']} cameras; triangulation p50 {fmt_us(tri.get('p50'))} "
                    f"p99 {fmt_us(tri.get('p99'))} per frame set; filter {p3['filter']}")
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
            live = nc.get("live")
            if live and "vs_final_us" in live:
                truth = live.get("vs_truth_us", {})
                lines.append(f"neural live {live['mapped_live']} of {live['framesets']} posed sets mapped "
                             f"live ({live['before_lock']} before the lock); live - final max "
                             f"{live['vs_final_us']['max']:.1f} us"
                             + (f", vs truth max {truth['max']:.1f} us" if truth else ""))
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
        chain = " -> ".join(f"{k} {fmt_ms(v.get('p50'))}" for k, v in steps.items() if v.get("n"))
        lines.append(f"latency     pulse->TTL edge p50 {fmt_ms(ttl['p50'])} p99 {fmt_ms(ttl['p99'])} max "
                     f"{fmt_ms(ttl['max'])} (n {ttl['n']}); inference "
                     f"{'-' if share is None else f'{share:.0%}'} of it; p50 steps: {chain}")
    elif act.get("n"):
        lines.append(f"latency     pulse->rule decision p50 {fmt_ms(act['p50'])} p99 {fmt_ms(act['p99'])}")
    return lines


def fmt_ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f} ms"


def fmt_us(ms: float | None) -> str:
    return "-" if ms is None else f"{ms * 1e3:.0f} us"
