"""The TensorRT engine driver, run against faithful fakes of TensorRT 10 and cuda-python's
runtime module (tests/inference/fake_tensorrt.py); one test runs the real TensorRT where it
and a GPU are present."""

from __future__ import annotations

import gc
import json
import logging
import sys
from pathlib import Path

import msgspec
import numpy as np
import pytest

from rigstream.inference.backends import open_engine
from rigstream.inference.engines import OnnxRuntimeEngine
from rigstream.inference.modeldir import ModelError, load_model, sha256_file, write_card
from rigstream.inference.trt_engine import (
    CACHE_ENV,
    TensorRTEngine,
    TensorRTUnavailable,
    build_and_time,
    default_cache_dir,
    import_backends,
)

from .conftest import make_model_dir
from .fake_tensorrt import FakeCuda, FakeTensorRT, cudaError_t, cudaMemcpyKind, install

TRT_LOG = "rigstream.inference.trt_engine"


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """Factory: install a fake GPU + TensorRT (replacing any installed before); returns both."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "engine-cache"))

    def make(gpu_name: str = "NVIDIA Fake A100-SXM4-80GB", capability: tuple[int, int] = (8, 0),
             version: str = "10.3.0", fast_fp16: bool = True, layout: str = "bindings"):
        cuda = FakeCuda(gpu_name, capability)
        trt = FakeTensorRT(cuda, version=version, fast_fp16=fast_fp16)
        install(monkeypatch, cuda, trt, layout=layout)
        return cuda, trt

    return make


def _released(cuda: FakeCuda) -> bool:
    return cuda.live() == {"device": [], "host": [], "streams": []}


# -- the engine cache ------------------------------------------------------------------------


def test_first_construction_builds_and_caches_second_loads(fake_gpu, tiny_model, tmp_path):
    _cuda, trt = fake_gpu()
    with TensorRTEngine(tiny_model, views=2) as first:
        assert first.built and first.build_s > 0
        path = first.cache_path
        assert path.parent == tmp_path / "engine-cache"  # RIGSTREAM_ENGINE_CACHE
        assert path.name.startswith("tiny-") and path.suffix == ".engine"
        assert len(path.stem.split("-")[-1]) == 16
        first.infer(tiny_model.example_input(2))
    assert trt.builds == 1
    assert path.is_file()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["onnx_sha256"] == tiny_model.card.onnx_sha256 == sha256_file(tiny_model.onnx_path)
    assert meta["gpu"] == "NVIDIA Fake A100-SXM4-80GB"
    assert meta["compute_capability"] == "8.0"
    assert meta["tensorrt"] == "10.3.0"
    assert meta["input_shape"] == [2, 1, 64, 96]
    assert meta["fp16"] is True and meta["fp16_applied"] is True
    assert meta["key"].startswith(path.stem.split("-")[-1])

    with TensorRTEngine(tiny_model, views=2) as second:
        assert not second.built and second.build_s == 0.0
        assert second.cache_path == path
        assert second.fp16
        assert second.describe()["cache"] == str(path)
    assert trt.builds == 1  # a cache hit: nothing built
    assert trt.loads == 2


def test_build_settings(fake_gpu, tiny_model, tmp_path):
    _cuda, trt = fake_gpu()
    with TensorRTEngine(tiny_model, views=3, cache_dir=tmp_path / "c", workspace_mb=64):
        pass
    config = trt.last_build_config
    assert config.get_memory_pool_limit(trt.module.MemoryPoolType.WORKSPACE) == 64 << 20
    assert config.get_flag(trt.module.BuilderFlag.FP16)
    (profile,) = config._profiles
    assert profile.get_shape("images") == [(3, 1, 64, 96)] * 3  # min = opt = max


@pytest.mark.parametrize("change", ["views", "gpu", "capability", "tensorrt", "fp16"])
def test_cache_key_covers(change, fake_gpu, tiny_model, tmp_path):
    cache = tmp_path / "shared-cache"
    _cuda, trt = fake_gpu()
    with TensorRTEngine(tiny_model, views=2, cache_dir=cache) as base:
        base_path = base.cache_path
    views, fp16 = 2, True
    if change == "views":
        views = 4
    elif change == "gpu":
        _cuda, trt = fake_gpu(gpu_name="NVIDIA GeForce RTX 4090")
    elif change == "capability":
        _cuda, trt = fake_gpu(capability=(9, 0))
    elif change == "tensorrt":
        _cuda, trt = fake_gpu(version="10.7.0")
    else:
        fp16 = False
    builds = trt.builds
    with TensorRTEngine(tiny_model, views=views, cache_dir=cache, fp16=fp16) as other:
        assert other.built
        assert other.cache_path != base_path
        assert other.cache_path.parent == cache
    assert trt.builds == builds + 1
    assert base_path.is_file() and other.cache_path.is_file()  # both kept side by side


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "other-tensorrt-version"])
def test_unloadable_cache_file_is_rebuilt(damage, fake_gpu, tiny_model, tmp_path, caplog):
    cache = tmp_path / "cache"
    _cuda, trt = fake_gpu()
    with TensorRTEngine(tiny_model, views=2, cache_dir=cache) as engine:
        path = engine.cache_path
    good = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"\x13\x37 not an engine plan" * 100)
    elif damage == "truncated":
        path.write_bytes(good[:40])
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a plan from another TensorRT build left under this name
        fake_gpu(version="10.0.1")
        with TensorRTEngine(tiny_model, views=2, cache_dir=tmp_path / "other") as old:
            path.write_bytes(old.cache_path.read_bytes())
        _cuda, trt = fake_gpu()
    builds = trt.builds
    with caplog.at_level(logging.WARNING, logger=TRT_LOG), \
            TensorRTEngine(tiny_model, views=2, cache_dir=cache) as engine:
        assert engine.built and engine.cache_path == path
        out = engine.infer(tiny_model.example_input(2))
        assert np.isfinite(out).all()
    assert trt.builds == builds + 1
    assert any(str(path) in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # recovered: warnings only
    assert path.read_bytes() == good  # overwritten with a good plan
    with TensorRTEngine(tiny_model, views=2, cache_dir=cache) as again:
        assert not again.built


def test_default_cache_dir(monkeypatch):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert default_cache_dir() == Path("~/.cache/rigstream/engines").expanduser()
    monkeypatch.setenv(CACHE_ENV, "/srv/engines")
    assert default_cache_dir() == Path("/srv/engines")


def test_unwritable_cache_still_runs(fake_gpu, tiny_model, tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    fake_gpu()
    with caplog.at_level(logging.WARNING, logger=TRT_LOG), \
            TensorRTEngine(tiny_model, views=1, cache_dir=blocker / "engines") as engine:
        assert engine.built
        engine.infer(tiny_model.example_input(1))
    assert "cannot write the TensorRT engine cache" in caplog.text


# -- inference -------------------------------------------------------------------------------


@pytest.mark.parametrize("views", [1, 3])
def test_output_matches_onnxruntime(views, fake_gpu, tiny_model, tmp_path):
    fake_gpu()
    with TensorRTEngine(tiny_model, views=views, cache_dir=tmp_path) as trt_engine, \
            OnnxRuntimeEngine(tiny_model, views=views) as ort_engine:
        for seed in (0, 1, 2):
            batch = tiny_model.example_input(views, seed=seed)
            got = trt_engine.infer(batch)
            want = ort_engine.infer(batch)
            assert got.shape == (views, 3, 3) and got.dtype == np.float32
            np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
        assert trt_engine.infer(batch) is got  # the engine's pinned buffer, reused


def test_open_engine_passes_options(fake_gpu, tiny_model, tmp_path):
    fake_gpu()
    with open_engine("tensorrt", tiny_model, 2, cache_dir=tmp_path, fp16=False) as engine:
        assert isinstance(engine, TensorRTEngine)
        assert engine.fp16 is False and engine.cache_path.parent == tmp_path
        described = engine.describe()
    assert described["engine"] == "tensorrt" and described["input"] == [2, 1, 64, 96]


def test_wrong_batch_is_a_clear_error(fake_gpu, tiny_model, tmp_path):
    fake_gpu()
    with TensorRTEngine(tiny_model, views=2, cache_dir=tmp_path) as engine:
        with pytest.raises(ValueError, match=r"expected a batch of \(2, 1, 64, 96\) float32"):
            engine.infer(tiny_model.example_input(3))
        with pytest.raises(ValueError, match="float64"):
            engine.infer(tiny_model.example_input(2).astype(np.float64))
        engine.infer(tiny_model.example_input(2))  # still usable


def test_fp16_not_forced_on_a_gpu_without_fast_fp16(fake_gpu, tiny_model, tmp_path, caplog):
    _cuda, trt = fake_gpu(fast_fp16=False)
    with caplog.at_level(logging.WARNING, logger=TRT_LOG), \
            TensorRTEngine(tiny_model, views=1, cache_dir=tmp_path, fp16=True) as engine:
        assert engine.fp16 is False
    assert not trt.last_build_config.get_flag(trt.module.BuilderFlag.FP16)
    assert "no fast FP16" in caplog.text
    with TensorRTEngine(tiny_model, views=1, cache_dir=tmp_path, fp16=True) as cached:
        assert not cached.built and cached.fp16 is False  # from the sidecar


# -- releasing resources ---------------------------------------------------------------------


def test_close_releases_everything(fake_gpu, tiny_model, tmp_path):
    cuda, trt = fake_gpu()
    engine = TensorRTEngine(tiny_model, views=2, cache_dir=tmp_path)
    live = cuda.live()
    assert len(live["device"]) == 2 and len(live["host"]) == 2 and len(live["streams"]) == 1
    engine.infer(tiny_model.example_input(2))
    engine.close()
    engine.close()  # idempotent
    assert _released(cuda)
    assert cuda.calls["cudaFree"] == 2 and cuda.calls["cudaFreeHost"] == 2
    assert cuda.calls["cudaStreamDestroy"] == 1
    gc.collect()
    assert len(trt.contexts) == 0 and len(trt.engines) == 0  # context and engine dropped
    with pytest.raises(RuntimeError, match="closed"):
        engine.infer(tiny_model.example_input(2))


def test_failed_construction_releases_what_it_made(fake_gpu, tiny_model, tmp_path, monkeypatch):
    cuda, _trt = fake_gpu()
    monkeypatch.setattr(cuda.module, "cudaMallocHost",
                        lambda size: (cudaError_t.cudaErrorMemoryAllocation, None))
    with pytest.raises(RuntimeError,
                       match=r"cudaMallocHost failed: cudaErrorMemoryAllocation \(out of memory\)"):
        TensorRTEngine(tiny_model, views=2, cache_dir=tmp_path)
    assert _released(cuda)  # the device buffers and the stream made before it were freed


def test_bad_device_names_the_call(fake_gpu, tiny_model, tmp_path):
    cuda, _trt = fake_gpu()
    with pytest.raises(RuntimeError, match="cudaSetDevice failed: cudaErrorInvalidDevice"):
        TensorRTEngine(tiny_model, views=1, cache_dir=tmp_path, device=1)
    assert _released(cuda)


# -- bad models ------------------------------------------------------------------------------


def test_garbage_onnx_is_a_model_error_naming_the_file(fake_gpu, tmp_path):
    model = make_model_dir(tmp_path / "broken")
    model.onnx_path.write_bytes(b"\x08\x07garbage that is not an ONNX model" * 10)
    write_card(msgspec.structs.replace(model.card, onnx_sha256=sha256_file(model.onnx_path)), model.folder)
    model = load_model(model.folder)
    _cuda, trt = fake_gpu()
    with pytest.raises(ModelError, match="ONNX parser cannot read it") as info:
        TensorRTEngine(model, views=1, cache_dir=tmp_path / "cache")
    assert str(model.onnx_path) in str(info.value)
    assert trt.builds == 0 and not (tmp_path / "cache").exists()


def test_onnx_not_matching_the_card_is_a_model_error(fake_gpu, tmp_path):
    model = make_model_dir(tmp_path / "replaced")
    model.onnx_path.write_bytes(model.onnx_path.read_bytes() + b"\0")
    fake_gpu()
    with pytest.raises(ModelError, match="sha256") as info:
        TensorRTEngine(model, views=1, cache_dir=tmp_path / "cache")
    assert str(model.onnx_path) in str(info.value)


def test_model_with_other_keypoints_is_rejected(fake_gpu, tmp_path):
    model = make_model_dir(tmp_path / "m")
    card = msgspec.structs.replace(model.card, keypoints=["a", "b"])  # the graph gives 3
    write_card(card, model.folder)
    fake_gpu()
    with pytest.raises(ModelError, match=r"'keypoints' has shape \[-1, 3, 3\], the model needs \[1, 2, 3\]"):
        TensorRTEngine(load_model(model.folder), views=1, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.engine"))  # a misfit engine is not cached


# -- benchmark -------------------------------------------------------------------------------


def test_build_and_time(fake_gpu, tiny_model, tmp_path):
    cuda, _trt = fake_gpu()
    report = build_and_time(tiny_model, 2, iterations=5, cache_dir=tmp_path)
    assert report["engine"] == "tensorrt" and report["built"] is True
    assert Path(report["cache"]).is_file()
    assert report["views"] == 2 and report["input"] == [2, 1, 64, 96]
    assert report["build_s"] > 0
    lat = report["latency_ms"]
    assert set(lat) == {"p50", "p99", "max"} and 0 < lat["p50"] <= lat["p99"] <= lat["max"]
    assert report["framesets_per_s"] > 0
    assert report["gpu"] == "NVIDIA Fake A100-SXM4-80GB" and report["tensorrt"] == "10.3.0"
    assert report["fp16"] is True
    json.dumps(report)
    assert _released(cuda)
    again = build_and_time(tiny_model, 2, iterations=3, cache_dir=tmp_path)
    assert again["built"] is False and again["cache"] == report["cache"]


# -- imports ---------------------------------------------------------------------------------


def test_missing_tensorrt_is_a_clear_error(monkeypatch, tiny_model):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTUnavailable) as info:
        open_engine("tensorrt", tiny_model, 1)
    message = str(info.value)
    assert "TensorRT 10 and cuda-python (pip install rigstream[gpu]); import failed: tensorrt" in message


def test_missing_cuda_python_is_a_clear_error(fake_gpu, monkeypatch, tiny_model):
    fake_gpu()
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(TensorRTUnavailable, match="import failed: cuda-python runtime"):
        TensorRTEngine(tiny_model, 1)


def test_old_tensorrt_is_refused(fake_gpu, tiny_model):
    fake_gpu(version="8.6.1")
    with pytest.raises(TensorRTUnavailable, match=r"found TensorRT 8\.6\.1"):
        TensorRTEngine(tiny_model, 1)


def test_legacy_cuda_cudart_module(fake_gpu, tiny_model, tmp_path):
    cuda, _trt = fake_gpu(layout="legacy")
    with TensorRTEngine(tiny_model, 1, cache_dir=tmp_path) as engine:
        engine.infer(tiny_model.example_input(1))
    assert _released(cuda)


# -- the fakes themselves keep the driver honest ---------------------------------------------


def test_fake_cuda_is_stream_ordered_and_strict():
    cuda = FakeCuda()
    rt = cuda.module
    ok = rt.cudaError_t.cudaSuccess
    err, stream = rt.cudaStreamCreate()
    _, dev = rt.cudaMalloc(16)
    _, host = rt.cudaMallocHost(16)
    _, back = rt.cudaMallocHost(16)
    src = np.ctypeslib.as_array((np.ctypeslib.ctypes.c_float * 4).from_address(host))
    dst = np.ctypeslib.as_array((np.ctypeslib.ctypes.c_float * 4).from_address(back))
    src[:] = [1, 2, 3, 4]
    h2d, d2h = cudaMemcpyKind.cudaMemcpyHostToDevice, cudaMemcpyKind.cudaMemcpyDeviceToHost
    assert rt.cudaMemcpyAsync(dev, host, 16, h2d, stream) == (ok,)
    assert rt.cudaMemcpyAsync(back, dev, 16, d2h, stream) == (ok,)
    assert not dst.any()  # queued, not done
    assert rt.cudaStreamSynchronize(stream) == (ok,)
    assert dst.tolist() == [1, 2, 3, 4]
    invalid = (rt.cudaError_t.cudaErrorInvalidValue,)
    assert rt.cudaMemcpyAsync(dev, host, 16, d2h, stream) == invalid  # direction does not match
    assert rt.cudaMemcpyAsync(dev, host, 32, h2d, stream) == invalid  # past the allocation
    assert rt.cudaMemcpyAsync(dev + 4096, host, 4, h2d, stream) == invalid  # not allocated
    pageable = np.zeros(4, np.float32)
    assert rt.cudaMemcpyAsync(dev, pageable.ctypes.data, 16, h2d, stream) == invalid
    assert rt.cudaFree(host) == invalid
    for call, arg in (("cudaFree", dev), ("cudaFreeHost", host), ("cudaFreeHost", back),
                      ("cudaStreamDestroy", stream)):
        assert getattr(rt, call)(arg) == (ok,)
    assert rt.cudaFree(dev) == invalid  # double free
    assert rt.cudaStreamSynchronize(stream) == (rt.cudaError_t.cudaErrorInvalidResourceHandle,)
    assert cuda.live() == {"device": [], "host": [], "streams": []}
    assert err == ok


def test_fake_tensorrt_refuses_what_tensorrt_refuses(tiny_model):
    cuda = FakeCuda()
    fake = FakeTensorRT(cuda)
    trt = fake.module
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(tiny_model.onnx_bytes())
    assert network.get_input(0).shape == (-1, 1, 64, 96)
    config = builder.create_builder_config()
    assert builder.build_serialized_network(network, config) is None  # dynamic input, no profile
    assert "no optimization profile" in logger.messages[-1][1]
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (2, 1, 64, 96), (2, 1, 64, 96), (2, 1, 64, 96))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    assert trt.Runtime(logger).deserialize_cuda_engine(b"junk") is None
    context = engine.create_execution_context()
    _, stream = cuda.module.cudaStreamCreate()
    assert not context.execute_async_v3(int(stream))  # no input shape, no addresses
    assert not context.set_input_shape("images", (3, 1, 64, 96))  # outside the profile
    assert context.set_input_shape("images", (2, 1, 64, 96))
    assert context.get_tensor_shape("keypoints") == (2, 3, 3)
    _, host = cuda.module.cudaMallocHost(2 * 64 * 96 * 4)
    context.set_tensor_address("images", host)
    context.set_tensor_address("keypoints", host)
    assert not context.execute_async_v3(int(stream))  # host memory is not device memory
    with pytest.raises(TypeError):
        context.execute_async_v3(stream)  # the raw handle (an int) is what TensorRT takes


# -- the real thing --------------------------------------------------------------------------


@pytest.mark.hardware
def test_real_tensorrt_matches_onnxruntime(tiny_model, tmp_path):
    try:
        _trt, cudart = import_backends()
    except TensorRTUnavailable as exc:
        pytest.skip(f"real TensorRT not usable here: {exc}")
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count < 1:
        pytest.skip(f"TensorRT is installed but no CUDA GPU is visible ({err})")
    views = 2
    with TensorRTEngine(tiny_model, views, cache_dir=tmp_path, fp16=True) as engine, \
            OnnxRuntimeEngine(tiny_model, views) as reference:
        for seed in (0, 1):
            batch = tiny_model.example_input(views, seed=seed)
            got = engine.infer(batch).copy()
            want = reference.infer(batch)
            xy_error = np.abs(got[..., :2] - want[..., :2]).max()
            assert xy_error <= 0.5, f"TensorRT FP16 is {xy_error:.3f} px from ONNX Runtime"
            np.testing.assert_allclose(got[..., 2], want[..., 2], atol=0.02)
    with TensorRTEngine(tiny_model, views, cache_dir=tmp_path, fp16=True) as cached:
        assert not cached.built
