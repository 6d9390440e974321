"""Benchmark for choosing rigstream's shared-memory frame transport (standalone; not part of the package).

It measures, for 1440x1080 uint8 (mono8) frames passed between two processes on this host:

  (a) iceoryx2 publish-subscribe through its documented Python API: the publisher loans an uninitialized
      sample of the frame size (``loan_uninit``), fills it with one numpy copy of a prepared frame, stamps a
      user header (sequence number, ``time.monotonic_ns()``) and sends; the subscriber receives, reads the
      pixels in place (sums the last row), and releases the sample.
  (b) a plain POSIX shared-memory ring: a file on /dev/shm (``os.open`` + ``mmap``) with N slots, each an
      int64 header (sequence number, two stamps) plus the pixels.  The writer copies the frame into slot
      i % N with one numpy copy under a seqlock (sequence := -1, pixels, sequence := i) and then publishes
      ``head = i``; readers map the file read-only, poll ``head`` and read slots in place, checking the
      sequence number before and after the read.
  (c) for reference, a single-process numpy copy of the same frame size (hot destination, and rotating
      over N destinations like the ring).

For (a) and (b) it reports frames/s and GB/s sustained for 5 s with the writer going as fast as it can
(writer rate, and the rate the reader saw intact frames), and the one-way latency p50/p99 with the writer
paced at the rig's 452 frames/s: ``lat_*`` runs from a writer stamp taken just before the frame is copied in,
``hand_*`` from a second stamp taken after the copy, just before publishing; both end when the reader has
read the frame in place.  Both readers busy-poll (no notification), so each measurement keeps two
cores busy.  It also checks, once, what each design allows: random access by index to the last N frames for
a reader that lags, whether a lagging reader is told which frames it lost while the writer never waits,
several independent readers, and what a SIGKILL of the writer leaves in /dev/shm (and /tmp/iceoryx2); for
comparison also what multiprocessing.shared_memory does when a reader exits or its creator is killed.

Run it with any Python >= 3.10 that has numpy and (optionally) iceoryx2 installed, e.g.:

    python3 -m venv /tmp/ipcvenv && /tmp/ipcvenv/bin/pip install numpy iceoryx2
    /tmp/ipcvenv/bin/python tools/bench_ipc_choice.py --repeat 3

It needs two free cores for meaningful numbers and takes about 20 s per repeat plus 8 s of checks.  Without
iceoryx2 it measures only the ring and the memcpy.  It removes the ring files it creates; iceoryx2 resources
left by the killed writer are removed through iceoryx2's own dead-node cleanup.  ``--json FILE`` also writes
all raw results.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

WIDTH, HEIGHT = 1440, 1080
FRAME_BYTES = WIDTH * HEIGHT
RIG_FPS = 452.0
SHM_DIR = Path("/dev/shm")
IOX2_ROOT = Path("/tmp/iceoryx2")
RING_PREFIX = "rigbench_ring_"
MAX_READERS = 2

# ring layout: a global header page, then page-aligned slots of [seq, stamp, sent (int64), pad to 64][pixels]
RING_MAGIC = 0x52494E4731
G_MAGIC, G_SLOTS, G_FRAME_BYTES, G_STRIDE, G_HEAD, G_DONE, G_WRITER_PID = range(7)
GLOBAL_BYTES = 4096
SLOT_HDR_BYTES = 64


# --------------------------------------------------------------------------------------------------- helpers
def make_frames(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Two different prepared frames; frame i uses frames[i & 1] so a reader can verify what it read."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(2, HEIGHT, WIDTH), dtype=np.uint8)
    return frames, frames[:, -1, :].sum(axis=1, dtype=np.int64)


def pace_until(deadline_s: float) -> None:
    """Sleep most of the way to the deadline, then spin: tight 452 fps pacing without burning a core."""
    while True:
        left = deadline_s - time.perf_counter()
        if left <= 0:
            return
        if left > 0.0006:
            time.sleep(left - 0.0004)


def latency_summary(lat_ns: list[int], prefix: str = "lat") -> dict[str, float]:
    """p50/p99/max in microseconds, skipping the first 20 frames (first touch of pages, caches)."""
    if not lat_ns:
        return {}
    arr = np.asarray(lat_ns[20:] if len(lat_ns) > 100 else lat_ns, dtype=np.float64) / 1000.0
    return {
        f"{prefix}_p50_us": float(np.percentile(arr, 50)),
        f"{prefix}_p99_us": float(np.percentile(arr, 99)),
        f"{prefix}_max_us": float(arr.max()),
        f"{prefix}_n": int(arr.size),
    }


def shm_listing() -> set[str]:
    names = {f"/dev/shm/{p.name}" for p in SHM_DIR.iterdir()}
    if IOX2_ROOT.exists():
        names |= {str(p) for p in IOX2_ROOT.rglob("*") if p.is_file()}
    return names


def emit(obj: Any) -> None:
    print(json.dumps(obj), flush=True)


def wait_for_line(proc: subprocess.Popen, expected: str) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != expected:
        err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
        raise RuntimeError(f"child said {line!r} instead of {expected!r}: {err}")


# ------------------------------------------------------------------------------------------------- the ring
def ring_stride() -> int:
    return -(-(SLOT_HDR_BYTES + FRAME_BYTES) // 4096) * 4096


class Ring:
    """N-slot seqlock frame ring in one /dev/shm file; ``create`` maps it read-write (the single writer)."""

    def __init__(self, path: Path, slots: int, create: bool = False) -> None:
        stride = ring_stride()
        size = GLOBAL_BYTES + slots * stride
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL if create else os.O_RDONLY
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            prot = mmap.PROT_READ | mmap.PROT_WRITE if create else mmap.PROT_READ
            self.mm = mmap.mmap(fd, size, mmap.MAP_SHARED, prot)
        finally:
            os.close(fd)
        buf = np.frombuffer(self.mm, dtype=np.uint8)  # read-only numpy views for readers
        self.g = np.ndarray((8,), np.int64, buffer=buf, offset=0)
        self.seq = np.ndarray((slots,), np.int64, buffer=buf, offset=GLOBAL_BYTES, strides=(stride,))
        self.stamp = np.ndarray((slots,), np.int64, buffer=buf, offset=GLOBAL_BYTES + 8, strides=(stride,))
        self.sent = np.ndarray((slots,), np.int64, buffer=buf, offset=GLOBAL_BYTES + 16, strides=(stride,))
        self.pix = np.ndarray(
            (slots, HEIGHT, WIDTH),
            np.uint8,
            buffer=buf,
            offset=GLOBAL_BYTES + SLOT_HDR_BYTES,
            strides=(stride, WIDTH, 1),
        )
        self.slots = slots
        if create:
            self.pix[...] = 0  # fault every page in now, not during the measurement
            self.seq[:] = -1
            self.g[G_SLOTS], self.g[G_FRAME_BYTES], self.g[G_STRIDE] = slots, FRAME_BYTES, stride
            self.g[G_HEAD], self.g[G_DONE], self.g[G_WRITER_PID] = -1, 0, os.getpid()
            self.g[G_MAGIC] = RING_MAGIC  # last: readers may attach once the magic is there
        elif int(self.g[G_MAGIC]) != RING_MAGIC or int(self.g[G_SLOTS]) != slots:
            raise RuntimeError("not a rigbench ring or wrong slot count")

    def write(self, i: int, frame: np.ndarray, stamp_ns: int) -> None:
        s = i % self.slots
        self.seq[s] = -1  # seqlock open: readers of this slot now see it as overwritten
        self.stamp[s] = stamp_ns
        np.copyto(self.pix[s], frame)
        self.sent[s] = time.monotonic_ns()
        self.seq[s] = i  # seqlock close (x86 stores are not reordered; ARM would need a fence here)
        self.g[G_HEAD] = i

    def oldest_available(self, head: int) -> int:
        """Lowest index certainly readable: slot of head+1 may be mid-write, so the window is N-1 frames."""
        return max(0, head - self.slots + 2)

    def try_read_row_sum(self, i: int) -> tuple[int, int, int] | None:
        """Read frame i in place (sum of its last row) and its stamps; None if overwritten meanwhile."""
        s = i % self.slots
        if self.seq[s] != i:
            return None
        stamp, sent = int(self.stamp[s]), int(self.sent[s])
        row = int(self.pix[s, -1].sum(dtype=np.int64))
        if self.seq[s] != i:
            return None
        return row, stamp, sent

    def close(self) -> None:
        del self.g, self.seq, self.stamp, self.sent, self.pix  # drop every numpy view before unmapping
        self.mm.close()


def role_ring_writer(spec: dict) -> None:
    path = Path(spec["path"])
    ring = Ring(path, spec["slots"], create=True)
    frames, _ = make_frames()
    emit("READY")
    sys.stdin.readline()  # GO
    n, period = 0, 1.0 / spec["fps"] if spec["fps"] else 0.0
    t0 = time.perf_counter()
    end = t0 + spec["duration"]
    now = t0
    while now < end:
        if period:
            pace_until(t0 + n * period)
        ring.write(n, frames[n & 1], time.monotonic_ns())
        n += 1
        now = time.perf_counter()
    ring.g[G_DONE] = 1
    emit({"sent": n, "elapsed_s": now - t0})
    sys.stdin.readline()  # EXIT
    ring.close()
    path.unlink()


def role_ring_reader(spec: dict) -> None:
    ring = Ring(Path(spec["path"]), spec["slots"])
    _, row_sums = make_frames()
    emit("READY")
    if spec.get("lag_s"):
        emit_lagging_ring_report(ring, spec)
        return
    nxt = max(0, int(ring.g[G_HEAD]) + 1)
    got = lost = torn = bad = 0
    lat: list[int] = []
    hand: list[int] = []
    t_first = t_last = 0.0
    deadline = time.perf_counter() + spec["duration"] + 10
    while True:
        head = int(ring.g[G_HEAD])
        if head < nxt:
            if ring.g[G_DONE] or time.perf_counter() > deadline:
                break
            continue
        oldest = ring.oldest_available(head)
        if nxt < oldest:  # the reader knows exactly which indices it lost, without touching them
            lost += oldest - nxt
            nxt = oldest
        res = ring.try_read_row_sum(nxt)
        now_ns = time.monotonic_ns()
        if res is None:
            torn += 1
        else:
            row, stamp, sent = res
            bad += row != row_sums[nxt & 1]
            lat.append(now_ns - stamp)
            hand.append(now_ns - sent)
            got += 1
            t_last = time.perf_counter()
            t_first = t_first or t_last
        nxt += 1
    emit(
        {
            "got": got,
            "lost": lost,
            "torn": torn,
            "bad_pixels": int(bad),
            "rx_span_s": t_last - t_first,
            **latency_summary(lat),
            **latency_summary(hand, "hand"),
        }
    )
    ring.close()


def emit_lagging_ring_report(ring: Ring, spec: dict) -> None:
    """A clip-writer style reader: falls behind, then reads history by index, in random order."""
    start = max(0, int(ring.g[G_HEAD]) + 1)
    time.sleep(spec["lag_s"])
    head = int(ring.g[G_HEAD])
    oldest = ring.oldest_available(head)
    order = np.random.default_rng(0).permutation(np.arange(oldest, head + 1))
    ok = sum(ring.try_read_row_sum(int(i)) is not None for i in order)
    gone = ring.try_read_row_sum(oldest - 5) is None if oldest >= 5 else None
    emit(
        {
            "lag_start": start,
            "head_after_lag": head,
            "known_lost": [start, oldest - 1],
            "random_access_ok": ok,
            "random_access_tried": len(order),
            "old_index_reported_gone": gone,
        }
    )
    ring.close()


# --------------------------------------------------------------------------------------------- iceoryx2
_IOX2: dict[str, Any] = {}


def iox2_types() -> tuple[Any, type, type]:
    if not _IOX2:
        import iceoryx2 as iox2  # optional dependency, imported only when measured

        class FrameHeader(ctypes.Structure):
            _fields_ = [("seq", ctypes.c_int64), ("stamp_ns", ctypes.c_int64), ("sent_ns", ctypes.c_int64)]

            @staticmethod
            def type_name() -> str:
                return "RigbenchFrameHeader"

        iox2.set_log_level_from_env_or(iox2.LogLevel.Error)
        _IOX2.update(mod=iox2, frame=ctypes.c_uint8 * FRAME_BYTES, header=FrameHeader)
    return _IOX2["mod"], _IOX2["frame"], _IOX2["header"]


def iox2_service(node: Any, name: str, slots: int) -> Any:
    iox2, frame_t, header_t = iox2_types()
    return (
        node.service_builder(iox2.ServiceName.new(name))
        .publish_subscribe(frame_t)
        .user_header(header_t)
        .max_publishers(1)
        .max_subscribers(MAX_READERS)
        .subscriber_max_buffer_size(slots)
        .subscriber_max_borrowed_samples(1)
        .history_size(0)
        .enable_safe_overflow(True)  # the publisher never waits: a full subscriber queue drops its oldest
        .open_or_create()
    )


def iox2_publish(pub: Any, i: int, frame: np.ndarray) -> None:
    _, frame_t, _ = iox2_types()
    stamp = time.monotonic_ns()
    sample = pub.loan_uninit()
    hdr = sample.user_header().contents
    hdr.seq, hdr.stamp_ns = i, stamp
    np.copyto(np.frombuffer(frame_t.from_address(sample.payload_ptr), np.uint8), frame.reshape(-1))
    hdr.sent_ns = time.monotonic_ns()
    sample.assume_init().send()


def role_ice_writer(spec: dict) -> None:
    iox2, _, _ = iox2_types()
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    service = iox2_service(node, spec["service"], spec["slots"])
    pub = service.publisher_builder().max_loaned_samples(1).create()
    frames, _ = make_frames()
    emit("READY")
    if spec.get("crash_test"):
        for i in range(5):
            iox2_publish(pub, i, frames[i & 1])
        time.sleep(600)  # parent SIGKILLs us
    sys.stdin.readline()  # GO
    n, period = 0, 1.0 / spec["fps"] if spec["fps"] else 0.0
    t0 = time.perf_counter()
    end = t0 + spec["duration"]
    now = t0
    while now < end:
        if period:
            pace_until(t0 + n * period)
        iox2_publish(pub, n, frames[n & 1])
        n += 1
        now = time.perf_counter()
    iox2_publish(pub, -1, frames[0])  # sentinel: safe overflow always keeps the newest sample
    emit({"sent": n, "elapsed_s": now - t0})
    sys.stdin.readline()  # EXIT
    pub.delete()
    del pub, service, node  # explicit: leaving them to interpreter shutdown left the segments behind


def role_ice_reader(spec: dict) -> None:
    iox2, frame_t, _ = iox2_types()
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    service = iox2_service(node, spec["service"], spec["slots"])
    sub = service.subscriber_builder().buffer_size(spec["slots"]).create()
    _, row_sums = make_frames()
    emit("READY")
    if spec.get("lag_s"):
        time.sleep(spec["lag_s"])
    nxt, got, lost, bad = 0, 0, 0, 0
    seqs: list[int] = []
    lat: list[int] = []
    hand: list[int] = []
    t_first = t_last = 0.0
    deadline = time.perf_counter() + spec["duration"] + 10
    while True:
        sample = sub.receive()
        if sample is None:
            if spec.get("lag_s") or time.perf_counter() > deadline:
                break
            continue
        hdr = sample.user_header().contents
        seq, stamp, sent = hdr.seq, hdr.stamp_ns, hdr.sent_ns
        if seq < 0:
            sample.delete()
            break
        pixels = np.frombuffer(frame_t.from_address(sample.payload_ptr), np.uint8).reshape(HEIGHT, WIDTH)
        row = int(pixels[-1].sum(dtype=np.int64))
        now_ns = time.monotonic_ns()
        del pixels
        sample.delete()
        lost += seq - nxt  # only our own sequence number tells; iceoryx2 does not report dropped samples
        nxt = seq + 1
        bad += row != row_sums[seq & 1]
        lat.append(now_ns - stamp)
        hand.append(now_ns - sent)
        seqs.append(seq)
        got += 1
        t_last = time.perf_counter()
        t_first = t_first or t_last
    out = {"got": got, "lost": lost, "torn": 0, "bad_pixels": int(bad), "rx_span_s": t_last - t_first}
    if spec.get("lag_s"):
        out.update(received_after_lag=[seqs[0], seqs[-1]] if seqs else [], received_n=len(seqs))
    else:
        out.update(latency_summary(lat), **latency_summary(hand, "hand"))
    emit(out)
    sub.delete()
    del sub, service, node


def role_ice_cleanup(spec: dict) -> None:
    iox2, _, _ = iox2_types()
    before = shm_listing()
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)  # default config cleans dead nodes on creation
    state = node.try_cleanup_dead_nodes()
    states = [type(s).__name__ for s in iox2.Node.list(iox2.ServiceType.Ipc, node.config)]
    del node
    emit(
        {
            "removed_by_node_creation_or_cleanup": len(before - shm_listing()),
            "explicit_cleanup": str(state),
            "node_states_seen": states,
        }
    )


# -------------------------------------------------------------------------------- posix_ipc via stdlib shm
def role_shm_writer(spec: dict) -> None:
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=spec["name"], create=True, size=FRAME_BYTES)
    emit("READY")
    time.sleep(600)  # parent SIGKILLs us
    shm.close()


def role_shm_attach(spec: dict) -> None:
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=spec["name"])  # a reader only attaches, never unlinks ...
    shm.close()
    emit("READY")  # ... and exits normally


ROLES = {
    "ring-writer": role_ring_writer,
    "ring-reader": role_ring_reader,
    "ice-writer": role_ice_writer,
    "ice-reader": role_ice_reader,
    "ice-cleanup": role_ice_cleanup,
    "shm-writer": role_shm_writer,
    "shm-attach": role_shm_attach,
}


# ------------------------------------------------------------------------------------------ orchestration
def spawn(role: str, spec: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--role", role, "--spec", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


def run_pair(kind: str, spec: dict, readers: list[dict]) -> dict:
    """Start the writer, then the readers, then let the writer go; return writer and reader results."""
    writer = spawn(f"{kind}-writer", spec)
    procs = [writer]
    try:
        wait_for_line(writer, '"READY"')
        for extra in readers:
            procs.append(spawn(f"{kind}-reader", {**spec, **extra}))
            wait_for_line(procs[-1], '"READY"')
        assert writer.stdin is not None and writer.stdout is not None
        writer.stdin.write("GO\n")
        writer.stdin.flush()
        w = json.loads(writer.stdout.readline())
        rs = []
        for p in procs[1:]:
            out, err = p.communicate(timeout=spec["duration"] + 30)
            if p.returncode:
                raise RuntimeError(f"{kind} reader failed: {err}")
            rs.append(json.loads(out.strip().splitlines()[-1]))
        writer.stdin.write("EXIT\n")
        writer.stdin.flush()
        _, err = writer.communicate(timeout=30)
        if writer.returncode:
            raise RuntimeError(f"{kind} writer failed: {err}")
        return {"writer": w, "readers": rs}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def throughput_and_latency(kind: str, base: dict, seconds: float, lat_seconds: float) -> dict:
    res: dict[str, float] = {}
    r = run_pair(kind, {**base, "fps": 0, "duration": seconds}, [{}])
    w, rd = r["writer"], r["readers"][0]
    res["max_fps_writer"] = w["sent"] / w["elapsed_s"]
    res["max_gbs_writer"] = res["max_fps_writer"] * FRAME_BYTES / 1e9
    res["max_fps_reader"] = rd["got"] / w["elapsed_s"]
    res["max_reader_lost_pct"] = 100.0 * (rd["lost"] + rd["torn"]) / max(1, w["sent"])
    res["max_bad_pixels"] = rd["bad_pixels"]
    r = run_pair(kind, {**base, "fps": RIG_FPS, "duration": lat_seconds}, [{}])
    w, rd = r["writer"], r["readers"][0]
    res["paced_fps_writer"] = w["sent"] / w["elapsed_s"]
    res["paced_lost"] = rd["lost"] + rd["torn"]
    res.update({k: v for k, v in rd.items() if k.startswith(("lat_", "hand_"))})
    return res


def capability_checks(kind: str, base: dict) -> dict:
    """Writer at 452 fps for 1 s; one live reader plus one reader that lags 0.5 s (both independent)."""
    r = run_pair(kind, {**base, "fps": RIG_FPS, "duration": 1.0}, [{}, {"lag_s": 0.5}])
    return {"writer": r["writer"], "live_reader": r["readers"][0], "lagging_reader": r["readers"][1]}


def crash_checks(base_name: str, slots: int, have_iox2: bool) -> dict:
    out: dict[str, Any] = {}
    # ring on /dev/shm: SIGKILL the writer
    path = SHM_DIR / f"{RING_PREFIX}{base_name}_crash"
    before = shm_listing()
    w = spawn("ring-writer", {"path": str(path), "slots": slots, "fps": RIG_FPS, "duration": 600})
    wait_for_line(w, '"READY"')
    assert w.stdin is not None
    w.stdin.write("GO\n")
    w.stdin.flush()
    time.sleep(0.3)
    w.send_signal(signal.SIGKILL)
    w.wait()
    left = sorted(shm_listing() - before)
    ring = Ring(path, slots)
    head = int(ring.g[G_HEAD])
    readable = ring.try_read_row_sum(head) is not None
    pid = int(ring.g[G_WRITER_PID])
    ring.close()
    path.unlink()
    out["ring"] = {
        "left_after_sigkill": left,
        "last_frame_readable_after_crash": readable,
        "writer_pid_dead_detectable": not Path(f"/proc/{pid}").exists(),
    }
    # multiprocessing.shared_memory and its resource_tracker on Python < 3.13 (no track=False there)
    name = f"{RING_PREFIX}{base_name}_stdlib"
    w = spawn("shm-writer", {"name": name})
    wait_for_line(w, '"READY"')
    a = spawn("shm-attach", {"name": name})
    a.communicate(timeout=30)
    time.sleep(0.3)
    survived_reader_exit = (SHM_DIR / name).exists()
    w.send_signal(signal.SIGKILL)
    w.wait()
    (SHM_DIR / name).unlink(missing_ok=True)
    w = spawn("shm-writer", {"name": name})  # a fresh segment, no reader: SIGKILL the creator
    wait_for_line(w, '"READY"')
    w.send_signal(signal.SIGKILL)
    w.wait()
    time.sleep(0.5)
    out["stdlib_shared_memory"] = {
        "segment_survives_a_reader_exiting": survived_reader_exit,
        "segment_left_after_creator_sigkill": (SHM_DIR / name).exists(),
    }
    (SHM_DIR / name).unlink(missing_ok=True)
    if have_iox2:
        before = shm_listing()
        w = spawn("ice-writer", {"service": f"rigbench/{base_name}/crash", "slots": slots, "crash_test": 1})
        wait_for_line(w, '"READY"')
        during = shm_listing()
        w.send_signal(signal.SIGKILL)
        w.wait()
        left = sorted(shm_listing() - before)
        c = spawn("ice-cleanup", {})
        cout, cerr = c.communicate(timeout=60)
        out["iceoryx2"] = {
            "created_while_running": len(during - before),
            "left_after_sigkill": len(left),
            "left_examples": left[:4],
            "cleanup": json.loads(cout.strip().splitlines()[-1]) if cout.strip() else cerr,
            "left_after_cleanup": sorted(shm_listing() - before),
        }
    return out


def memcpy_reference(slots: int, seconds: float = 1.0) -> dict:
    frames, _ = make_frames()
    src = frames[0]
    res = {}
    for label, dst in (
        ("hot", np.empty((1, HEIGHT, WIDTH), np.uint8)),
        ("rotating", np.empty((slots, HEIGHT, WIDTH), np.uint8)),
    ):
        dst[...] = 1
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            np.copyto(dst[n % len(dst)], src)
            n += 1
        dt = time.perf_counter() - t0
        res[f"memcpy_{label}_gbs"] = n * FRAME_BYTES / dt / 1e9
        res[f"memcpy_{label}_fps"] = n / dt
    return res


def median_table(runs: list[dict]) -> dict:
    keys = sorted({k for r in runs for k in r})
    return {k: statistics.median(r[k] for r in runs if k in r) for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats; medians are reported")
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of the max-rate run")
    ap.add_argument("--lat-seconds", type=float, default=4.0, help="duration of the paced 452 fps run")
    ap.add_argument("--slots", type=int, default=16, help="ring slots = iceoryx2 subscriber buffer size")
    ap.add_argument("--skip-iceoryx2", action="store_true")
    ap.add_argument("--json", type=Path, help="also write all raw results here")
    ap.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    ap.add_argument("--spec", default="{}", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        ROLES[args.role](json.loads(args.spec))
        return

    have_iox2, version = False, "not installed"
    if not args.skip_iceoryx2:
        try:
            from importlib.metadata import version as pkg_version

            iox2_types()
            have_iox2, version = True, pkg_version("iceoryx2")
        except ImportError as exc:
            version = f"not importable: {exc}"
    tag = str(os.getpid())
    shm_before = shm_listing()
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, iceoryx2 {version}, "
        f"cpus {os.cpu_count()}, frame {WIDTH}x{HEIGHT} mono8 = {FRAME_BYTES} B, slots {args.slots}",
        flush=True,
    )
    runs: dict[str, list[dict]] = {"memcpy": [], "ring": [], "iceoryx2": []}
    for rep in range(args.repeat):
        runs["memcpy"].append(memcpy_reference(args.slots))
        ring_base = {"path": str(SHM_DIR / f"{RING_PREFIX}{tag}_{rep}"), "slots": args.slots}
        runs["ring"].append(throughput_and_latency("ring", ring_base, args.seconds, args.lat_seconds))
        if have_iox2:
            ice_base = {"service": f"rigbench/{tag}/{rep}", "slots": args.slots}
            runs["iceoryx2"].append(throughput_and_latency("ice", ice_base, args.seconds, args.lat_seconds))
        print(
            f"repeat {rep + 1}/{args.repeat}: " + json.dumps({k: v[-1] for k, v in runs.items() if v}),
            flush=True,
        )
    caps = {
        "ring": capability_checks(
            "ring", {"path": str(SHM_DIR / f"{RING_PREFIX}{tag}_cap"), "slots": args.slots}
        )
    }
    if have_iox2:
        caps["iceoryx2"] = capability_checks("ice", {"service": f"rigbench/{tag}/cap", "slots": args.slots})
    crash = crash_checks(tag, args.slots, have_iox2)
    leftovers = sorted(p for p in shm_listing() - shm_before if RING_PREFIX in p)
    for p in leftovers:
        Path(p).unlink(missing_ok=True)

    med = {k: median_table(v) for k, v in runs.items() if v}
    print(f"\nmedians of {args.repeat} repeats")
    print(f"{'metric':34s}" + "".join(f"{k:>14s}" for k in med))
    for key in sorted({k for m in med.values() for k in m}):
        cells = "".join(f"{m[key]:14.2f}" if key in m else f"{'':14s}" for m in med.values())
        print(f"{key:34s}{cells}")
    print("\ncapability checks (writer 452 fps for 1 s, live reader + reader lagging 0.5 s):")
    print(json.dumps(caps, indent=1))
    print("\ncrash checks (SIGKILL of the writer):")
    print(json.dumps(crash, indent=1))
    print(f"\nring files left by this run and removed now: {leftovers}")
    print(f"new entries in /dev/shm or {IOX2_ROOT} vs. start: {sorted(shm_listing() - shm_before)}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"iceoryx2": version, "runs": runs, "medians": med, "capabilities": caps, "crash": crash},
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
