"""Neural time live: the Event Broadcaster's messages read from their documented bytes, the
running clock fit against the simulated recorder's truth and the final offline fit, and the
simulated recorder streaming over ZeroMQ to the reader."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from rigstream import protocol
from rigstream.firmware.pins import SimPins
from rigstream.sync.align import align
from rigstream.sync.live_clock import LiveClock, OpenEphysEvents, SimRecorderStream, decode_event
from rigstream.sync.sim_recorder import SimRecorder, sync_train

# The documented JSON packet of a TTL event (Open Ephys GUI, Event Broadcaster plugin), as it
# travels: a type part, then the JSON text.
TTL_BYTES = [b"0", b'{"event_type": "ttl", "stream": "example_data", "source_node": 101, '
                   b'"sample_rate": 30000.0, "channel_name": "TTL Event Channel", "sample_number": 103922, '
                   b'"line": 2, "state": 1}']
SPIKE_BYTES = [b"1", b'{"event_type": "spike", "stream": "example_data", "source_node": 105, "electrode": '
                     b'"Electrode 1", "num_channels": 4, "sample_rate": 30000, "sample_number": 193722, '
                     b'"sorted_id": 0, "amp1": 210, "amp2": 150, "amp3": 20, "amp4": 5}']


def test_event_broadcaster_messages_decode_from_their_documented_bytes() -> None:
    edge = decode_event(TTL_BYTES)
    assert edge is not None
    assert (edge.sample_number, edge.sample_rate, edge.line, edge.state, edge.stream) == \
        (103922, 30000.0, 2, 1, "example_data")
    assert decode_event([b"\x00\x00\x00\x00", TTL_BYTES[1]]) == edge  # the type as a binary int
    assert decode_event(SPIKE_BYTES) is None
    for bad in ([TTL_BYTES[1]], [b"0", b"{not json"], [b"0", json.dumps({"event_type": "ttl"}).encode()],
                [b"\xff" * 20, TTL_BYTES[1]]):
        with pytest.raises(protocol.ProtocolError):
            decode_event(bad)


def feed(clock: LiveClock, t_pi_s: np.ndarray, samples: np.ndarray, rate: float, offset_s: float,
         delay_s: float) -> dict[int, float]:
    """Both trains in arrival order (the recorder's edges ``delay_s`` after the Pi's); the mapping
    of each Pi edge the moment it arrives (before its own recorder edge)."""
    events = [(round(t * 1e9), 0, None) for t in t_pi_s]
    events += [(round((s / rate - offset_s + delay_s) * 1e9), 1, int(s)) for s in samples]
    live = {}
    for t_ns, kind, sample in sorted(events, key=lambda e: (e[0], e[1])):
        if kind == 0:
            clock.add_pi(t_ns)
            live[t_ns] = clock.to_neural(t_ns)
        else:
            clock.add_recorder(sample, rate)
    return live


def test_the_running_fit_follows_the_recorder_within_microseconds() -> None:
    rec = SimRecorder(seed=3)  # 50 ppm drift wandering by 10, 5 % missed, 1 % glitches
    t = sync_train(60.0, 0.1, 1.0, seed=1, start_s=1000.0)
    samples, truth = rec.record(t)
    clock = LiveClock()
    live = feed(clock, t, samples, rec.rate_hz, rec.offset_s, delay_s=0.003)
    t_ns = np.array(sorted(live))
    mapped = np.array([live[k] for k in t_ns])
    assert np.isnan(mapped[:3]).all() and np.isfinite(mapped[10:]).all()  # locked within a few pulses
    err_us = np.abs(mapped - rec.true_samples(t_ns / 1e9)) / rec.rate_hz * 1e6
    mapping = align(t - t[0], samples.astype(np.float64), units_a="s", units_b="samples")
    final = mapping.to_b(t_ns / 1e9 - t[0])
    diff_us = np.abs(mapped - final) / rec.rate_hz * 1e6
    assert np.nanmax(err_us) < 50 and np.nanmedian(err_us) < 10, (np.nanmax(err_us), np.nanmedian(err_us))
    assert np.nanmax(diff_us) < 50
    seen = int((truth >= 0).sum())
    s = clock.summary()
    assert s["locked"] and s["paired"] >= seen - 2 and abs(s["drift_ppm"] - 50) < 15
    # the recorder's misses are counted (all but one or two around the lock and the end)
    assert len(t) - seen - 2 <= s["unpaired_pi"] <= len(t) - s["paired"]


def test_the_simulated_recorder_streams_to_the_reader_over_zeromq(tmp_path: Path) -> None:
    ctx = zmq.Context()
    address = f"ipc://{tmp_path}/ephys"
    rec = SimRecorder(seed=5, missing=0.0, spurious=0.0)
    stream = SimRecorderStream(rec, ctx, address, line=3)
    reader = OpenEphysEvents(ctx, address, line=3)
    pins = SimPins()
    pins.setup_output(23, 0)
    stream.attach(pins, 23)
    clock = LiveClock()
    try:
        time.sleep(0.2)  # the reader's subscription reaches the stream
        rng = np.random.default_rng(0)
        sent = []
        for _ in range(8):
            sent.append(pins.write(23, 1))
            time.sleep(0.002)
            pins.write(23, 0)
            time.sleep(float(rng.uniform(0.02, 0.08)))
        got = []
        deadline = time.monotonic() + 5
        while len(got) < len(sent) and time.monotonic() < deadline:
            got += reader.poll()
            time.sleep(0.01)
        assert [e.line for e in got] == [3] * 8 and reader.sample_rate == rec.rate_hz
        assert reader.skipped == 8  # the falling edges
        for t_ns, edge in zip(sent, got, strict=True):
            clock.add_pi(t_ns)
            clock.add_recorder(edge.sample_number, edge.sample_rate)
        assert clock.locked
        truth = dict(stream.truth)
        for t_ns in sent[-3:]:
            assert abs(clock.to_neural(t_ns) - truth[t_ns]) < 2.0  # samples: a stamp's rounding
    finally:
        stream.close()
        reader.close()
        pins.close()
        ctx.term()
