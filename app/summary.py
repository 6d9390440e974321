"""What a session writes about itself when it ends, and how the supervisor reads its components.

:class:`SessionSummary` is the part of :class:`rigstream.app.session.Session` that turns the
components' last health (typed, :mod:`rigstream.health`), the trigger's status and the files on
disk into ``summary.json``: frames, drops and overruns, frame sets, clips, pose and its latency
chain, the rules, what was malformed, what failed or was restarted, where a failed recorder's
tables end, and the session on the neural clock (the simulated recorder's).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from rigstream import protocol
from rigstream.config import InputError, RigConfig
from rigstream.health import HEALTH, Latency, TriggerHealth, decode_health, kind_of

if TYPE_CHECKING:
    from rigstream.app.session import Component

logger = logging.getLogger("rigstream.app.session")


class SessionSummary:
    """The summary half of a session (a mixin of :class:`~rigstream.app.session.Session`)."""

    rig: RigConfig
    out: Path
    components: dict[str, Component]
    fatal: str | None
    failed: dict[str, str]
    restarted: list[dict[str, Any]]
    recorder_failed_s: float | None
    monitor_url: str | None
    status_malformed: protocol.MalformedCounter
    pulse_malformed: protocol.MalformedCounter

    def _neural_clock(self) -> dict[str, Any]:
        """Put the session on the neural clock: the simulated recorder now; a real one after
        the fact (``rigstream align --session DIR --b FILE``)."""
        nc = self.rig.neural_clock
        assert nc is not None
        if nc.kind != "sim":
            return {"kind": nc.kind, "aligned": False,
                    "align_with": f"rigstream align --session {self.out} --b RECORDER_FILE"}
        from rigstream.sync.session_align import align_session, score_alignment, simulate_recorder

        try:
            sim = simulate_recorder(self.out, nc.sim)
            mapping = align_session(self.out, sim["samples"].astype(np.float64), units=nc.units)
        except InputError as exc:  # too short a session to align, say: the recording stands
            logger.warning("neural clock: %s", exc)
            return {"kind": "sim", "aligned": False, "error": str(exc)}
        out = {"kind": "sim", "aligned": True, "column": f"t_neural_{nc.units}",
               "mapping": mapping.summary(), "error_vs_truth": score_alignment(self.out, sim)}
        live = self._live_vs_final(nc.units, sim["recorder"])
        if live is not None:
            out["live"] = live
        return out

    def _live_vs_final(self, units: str, recorder: Any = None) -> dict[str, Any] | None:
        """The live neural times the pose engine wrote (``live_t_neural_<units>`` in pose2d.csv)
        against the final mapping's (``t_neural_<units>``), and against the simulated recorder's
        truth; per frame set, in µs."""
        path = self.out / "pose2d.csv"
        live_col, final_col = f"live_t_neural_{units}", f"t_neural_{units}"
        if not path.is_file():
            return None
        t_pi, live, final = {}, {}, {}
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if live_col not in (reader.fieldnames or []):
                return None
            for row in reader:
                n = row["trigger_index"]
                t_pi[n] = row["t_pi_ns"]
                live[n] = row.get(live_col) or ""
                final[n] = row.get(final_col) or ""
        both = [n for n in live if live[n] and final[n]]
        rate = self.rig.neural_clock.sim.rate_hz if self.rig.neural_clock is not None else None
        out: dict[str, Any] = {"column": live_col, "framesets": len(live), "mapped_live": len(both),
                               "before_lock": sum(1 for n in live if not live[n])}
        if not both or not rate:
            return out
        diff = np.array([float(live[n]) - float(final[n]) for n in both]) / rate * 1e6
        out["vs_final_us"] = {"max": round(float(np.abs(diff).max()), 3),
                              "p99": round(float(np.percentile(np.abs(diff), 99)), 3),
                              "median": round(float(np.median(np.abs(diff))), 3)}
        if recorder is not None:
            t = np.array([int(t_pi[n]) for n in both], dtype=np.int64)
            err = (np.array([float(live[n]) for n in both]) - recorder.true_samples(t / 1e9)) / rate * 1e6
            out["vs_truth_us"] = {"max": round(float(np.abs(err).max()), 3),
                                  "rms": round(float(np.sqrt(np.mean(err**2))), 3)}
        return out

    def _inputs_summary(self, trigger: TriggerHealth | None) -> dict[str, Any]:
        """``inputs.csv`` from the recorded pulses, and per input the activations the daemon
        counted beside the rows recorded (a difference is a pulse message lost or a recorder
        that stopped early)."""
        from rigstream.sync.inputs import write_inputs_table

        try:
            recorded = write_inputs_table(self.out)
        except InputError as exc:
            logger.warning("inputs: %s", exc)
            return {"error": str(exc)}
        counted = trigger.inputs if trigger is not None else {}
        return {cfg.name: {"activations": counted[cfg.name].activations if cfg.name in counted else None,
                           "recorded": recorded.get(cfg.name, 0)} for cfg in self.rig.inputs}

    def _trigger_health(self, data: dict[str, Any]) -> TriggerHealth | None:
        """The trigger daemon's status reply, typed; None for no reply or a malformed one (counted)."""
        if not data:
            return None
        try:
            return decode_health("trigger", data)
        except protocol.ProtocolError as err:
            self.status_malformed(err)
            return None

    def _health(self, name: str) -> Any:
        """The component's last stats as its kind's struct (its defaults before any)."""
        comp = self.components.get(name)
        if comp is None or comp.health is None:
            return HEALTH[kind_of(name)]()
        return comp.health

    def _summary(self, pulses_sent: int, duration_s: float,
                 trigger: TriggerHealth | None) -> dict[str, Any]:
        def raw(name: str) -> dict[str, Any]:  # a component's whole last record, as sent
            st = self.components[name].last
            return dict(st.stats) if st else {}

        rec, asm, ring = self._health("recorder"), self._health("assembler"), self._health("ringbuffer")
        cams = {c.name: self._health(f"camera:{c.name}") for c in self.rig.cameras}
        summary = {
            "rig": self.rig.name,
            "out": str(self.out),
            "duration_s": round(duration_s, 3),
            "rate_hz": self.rig.trigger.rate_hz,
            "pulses_sent": pulses_sent,
            "sync_pulses_sent": trigger.sync_pulses_sent if trigger else 0,
            "frames": rec.frames,
            "frames_dropped": rec.frames_dropped,
            "dropped_indices": rec.dropped_indices,
            "frames_overrun": rec.overruns,
            "overrun_indices": rec.overrun_indices,
            "frames_flagged": {c: h.flagged for c, h in cams.items()},
            "framesets_complete": asm.framesets_complete,
            "framesets_incomplete": asm.framesets_incomplete,
            "framesets_mixed": asm.framesets_mixed,
            # every clip saved (the ring buffer's status lists only its newest few)
            "clips": sorted(str(p.parent.relative_to(self.out)) for p in self.out.glob("clips/*/event.json")),
            "clips_saved": ring.clips_saved,
            "trigger_late_max_us": trigger.late_max_us if trigger else None,
            "trigger_late_p99_us": trigger.late_p99_us if trigger else None,
            # Headers lost on their way to a consumer lose nothing (the stores are read by
            # index); these stay for consumers that still receive frames as messages.
            "transport_seq_gaps": {"recorder": rec.seq_gaps, "assembler": asm.seq_gaps,
                                   "ringbuffer": ring.seq_gaps},
            "malformed": self._malformed(trigger),
            "components": {"cameras": {c: raw(f"camera:{c}") for c in cams}, "recorder": raw("recorder"),
                           "assembler": raw("assembler"), "ringbuffer": raw("ringbuffer")},
            "failure": self.fatal,
            "failed_components": dict(self.failed),
            "restarted_components": list(self.restarted),
        }
        if self.recorder_failed_s is not None:
            summary["recording_ended_early"] = self._recording_ended_early()
        if "monitor" in self.components:  # what the page's buttons sent, merged and refused
            summary["monitor"] = {"buttons": self._health("monitor").buttons, "url": self.monitor_url}
        if "pose" in self.components:
            summary["pose"] = self._pose_summary(self._health("pose"))
            summary["components"]["pose"] = raw("pose")
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _malformed(self, trigger: TriggerHealth | None) -> dict[str, dict[str, Any]]:
        """Messages refused by each component (every ``*malformed*`` count in its last status),
        the trigger daemon's and the supervisor's own; a component that refused none is left
        out."""
        out: dict[str, dict[str, Any]] = {}
        for comp in self.components.values():
            st = comp.last.stats if comp.last else {}
            found = {k: v for k, v in st.items() if "malformed" in k and v}
            if found:
                out[comp.name] = found
        if trigger is not None and trigger.malformed:
            out["trigger"] = {"malformed": trigger.malformed}
        counters = (("status", self.status_malformed), ("pulses", self.pulse_malformed))
        own = {k: c.as_dict() for k, c in counters if c.total}
        if own:
            out["supervisor"] = own
        return out

    def _recording_ended_early(self) -> dict[str, Any]:
        """What the tables of a recorder that failed mid-session hold: the whole rows per camera
        and the last trigger index (a row cut off by the failure is not counted)."""
        assert self.recorder_failed_s is not None
        rows: dict[str, int] = {c.name: 0 for c in self.rig.cameras}
        last: dict[str, int] = {c.name: -1 for c in self.rig.cameras}
        path = self.out / "frames.csv"
        if path.is_file():
            with open(path, newline="") as f:
                lines = f.read().split("\n")
            for line in lines[1:-1]:  # the last piece is "" or a row cut off
                parts = line.split(",")
                if len(parts) > 2 and parts[0] in rows and parts[2].lstrip("-").isdigit():
                    rows[parts[0]] += 1
                    last[parts[0]] = max(last[parts[0]], int(parts[2]))
        return {"at_s": self.recorder_failed_s, "rows": rows, "last_trigger_index": last,
                "note": "the recorder failed: frames.csv, pulses.csv and the videos end here; "
                        "later frames are only in the clips and the pose tables"}

    def _pose_summary(self, p: Any) -> dict[str, Any]:
        earlier = self.components["pose"].earlier
        out = {
            "model": p.model, "engine": p.engine, "input": p.input,
            # counted over every process of a restarted engine (the latencies are the last one's)
            **{k: getattr(p, k) + sum(getattr(e, k) for e in earlier)
               for k in ("framesets_posed", "framesets_skipped", "out_of_order")},
            "processes": 1 + len(earlier),
            "latency_pulse_to_pose2d_ms": msgspec.to_builtins(p.latency_ms),
            "stage_ms": msgspec.to_builtins(p.stage_ms),
        }
        pose_csv = self.out / "pose2d.csv"
        if pose_csv.is_file() and all(c.backend == "sim" for c in self.rig.cameras):
            from rigstream.inference.simdata import pose2d_errors

            out["error_2d_vs_truth"] = pose2d_errors(self.rig, pose_csv)
        if p.pose3d is not None:
            out["pose3d"] = self._pose3d_summary(p.pose3d)
        if p.rules:
            out["rules"] = msgspec.to_builtins(p.rules)
            out["closed_loop"] = msgspec.to_builtins(p.closed_loop) if p.closed_loop else {}
        return out

    def _pose3d_summary(self, p3: Any) -> dict[str, Any]:
        out = {
            "framesets": p3.framesets, "points": p3.points, "cameras": p3.cameras,
            "keypoints": p3.keypoints, "filter": p3.filter, "predict_ms": p3.predict_ms,
            "triangulate_ms": msgspec.to_builtins(p3.stage_ms.get("triangulate", Latency())),
            "filter_ms": msgspec.to_builtins(p3.stage_ms.get("filter", Latency())),
            "latency_pulse_to_pose3d_ms": msgspec.to_builtins(p3.latency_ms),
        }
        if all(c.backend == "sim" for c in self.rig.cameras):
            from rigstream.inference.simdata import pose3d_errors

            for key, name in (("error_3d_vs_truth", "pose3d.csv"),
                              ("error_3d_filtered_vs_truth", "pose3d_filtered.csv")):
                if (self.out / name).is_file():
                    out[key] = pose3d_errors(self.rig, self.out / name)
        return out
