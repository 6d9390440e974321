"""The TensorRT engine: the model's ONNX graph built into a serialized TensorRT engine for the
GPU at hand, cached on disk, and run through pinned host buffers on one CUDA stream.

This is the only module of the project that imports ``tensorrt`` (TensorRT 10) and the CUDA
runtime bindings of cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` in older
releases). Both are imported when an engine is made, so importing this module needs neither.

Building an engine takes seconds to minutes, so a built engine is kept in a cache folder
(``~/.cache/rigstream/engines``; the ``RIGSTREAM_ENGINE_CACHE`` environment variable or the
``cache_dir`` argument overrides it) as ``<model>-<key>.engine`` with a ``.json`` sidecar that
lists what the key covers: the ONNX file's sha256, the GPU's name and compute capability, the
TensorRT version, the input shape (views included: the engine's one optimization profile is
fixed at that shape) and the FP16 flag. An engine file that TensorRT refuses to load (a
corrupt or truncated file) is rebuilt and overwritten.

Per call the batch is copied into a pinned input buffer, copied to the GPU, run, and the
keypoints copied back into a pinned output buffer, all queued on the engine's stream; the
returned array is that pinned buffer (owned by the engine, overwritten by the next call and
invalid after :meth:`TensorRTEngine.close`).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from rigstream.config import InputError
from rigstream.inference.engines import Engine, _check_shape
from rigstream.inference.modeldir import ModelError, PoseModel
from rigstream.latency import latency_stats

logger = logging.getLogger(__name__)

CACHE_ENV = "RIGSTREAM_ENGINE_CACHE"
DEFAULT_CACHE = Path("~/.cache/rigstream/engines")
INSTALL_HINT = "the tensorrt engine needs TensorRT 10 and cuda-python (pip install rigstream[gpu])"
_FLOAT32_BYTES = 4


class TensorRTUnavailable(InputError, RuntimeError):
    """TensorRT or the CUDA runtime bindings cannot be imported (or are too old)."""


def import_backends() -> tuple[Any, Any]:
    """(tensorrt, cudart) or :class:`TensorRTUnavailable` naming what failed to import."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or an OSError from a missing libnvinfer
        raise TensorRTUnavailable(f"{INSTALL_HINT}; import failed: tensorrt: {exc}") from None
    try:
        from cuda.bindings import runtime as cudart
    except Exception:
        try:
            from cuda import cudart  # cuda-python < 12.6 spelling
        except Exception as exc:
            raise TensorRTUnavailable(f"{INSTALL_HINT}; import failed: cuda-python runtime "
                                      f"(cuda.bindings.runtime / cuda.cudart): {exc}") from None
    version = str(getattr(trt, "__version__", "?"))
    major = version.split(".", 1)[0]
    if not major.isdigit() or int(major) < 10:
        raise TensorRTUnavailable(f"{INSTALL_HINT}; found TensorRT {version}")
    return trt, cudart


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()


def cache_key_fields(onnx_sha256: str, gpu: str, compute_capability: tuple[int, int],
                     tensorrt_version: str, input_shape: tuple[int, ...], fp16: bool) -> dict[str, Any]:
    """Everything a built engine depends on; the cache key is the sha256 of these."""
    return {"onnx_sha256": onnx_sha256, "gpu": gpu,
            "compute_capability": f"{compute_capability[0]}.{compute_capability[1]}",
            "tensorrt": tensorrt_version, "input_shape": [int(d) for d in input_shape],
            "fp16": bool(fp16)}


def cache_key(fields: dict[str, Any]) -> str:
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def cache_file(cache_dir: Path, model_name: str, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("._") or "model"
    return cache_dir / f"{safe}-{key[:16]}.engine"


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class _Cuda:
    """Checked calls into cuda-python's runtime module: each returns a tuple whose first item
    is a cudaError_t; anything but cudaSuccess raises a RuntimeError naming the call."""

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def call(self, name: str, *args: Any) -> Any:
        result = getattr(self.rt, name)(*args)
        if not isinstance(result, tuple) or not result:
            raise RuntimeError(f"{name}: unexpected return value {result!r} from the CUDA runtime bindings")
        err, rest = result[0], result[1:]
        if err != self.rt.cudaError_t.cudaSuccess:
            raise RuntimeError(f"CUDA call {name} failed: {self._describe(err)}")
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else rest

    def _describe(self, err: Any) -> str:
        name = getattr(err, "name", None) or str(err)
        try:
            status, text = self.rt.cudaGetErrorString(err)
            if status == self.rt.cudaError_t.cudaSuccess:
                text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
                return f"{name} ({text})"
        except Exception:
            pass
        return str(name)


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        value = bytes(value).split(b"\0", 1)[0].decode(errors="replace")
    return str(value).strip()


def _pinned_array(address: int, shape: tuple[int, ...]) -> np.ndarray:
    """A float32 numpy view of ``prod(shape)`` floats at a host address (no copy)."""
    count = int(np.prod(shape))
    buffer = (ctypes.c_float * count).from_address(address)
    return np.ctypeslib.as_array(buffer).reshape(shape)


def _make_logger(trt: Any) -> Any:
    """A TensorRT logger that forwards to Python logging and keeps the recent errors, so a
    failed build or load can say why."""

    severity = trt.ILogger.Severity

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.recoverable = False  # errors we handle (a stale cache file) are only warnings

        def log(self, sev: Any, msg: str) -> None:
            if sev in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors.append(str(msg))
                del self.errors[:-20]
                logger.log(logging.WARNING if self.recoverable else logging.ERROR, "TensorRT: %s", msg)
            elif sev == severity.WARNING:
                logger.warning("TensorRT: %s", msg)
            elif sev == severity.INFO:
                logger.debug("TensorRT: %s", msg)

    return _Logger()


class TensorRTEngine(Engine):
    """A TensorRT engine for one model at a fixed number of views (one CUDA stream).

    ``cache_path`` is the engine file used, ``built`` whether this construction built it (a
    cache miss or an unloadable cached file), ``build_s`` the seconds spent building (0.0 when
    loaded), ``fp16`` whether the engine was built with FP16 enabled (asked for and supported).
    """

    name = "tensorrt"

    def __init__(self, model: PoseModel, views: int, cache_dir: str | Path | None = None,
                 fp16: bool = True, workspace_mb: int = 1024, device: int = 0) -> None:
        super().__init__(model, views)
        # Everything close() looks at, so a failed construction can release what it made.
        self._closed = True
        self._stream: Any = None
        self._d_input = self._d_output = 0
        self._h_input_ptr = self._h_output_ptr = 0
        self._h_input: np.ndarray | None = None
        self._h_output: np.ndarray | None = None
        self._context: Any = None
        self._engine: Any = None
        self._runtime: Any = None

        trt, cudart = import_backends()
        self._trt = trt
        self._cuda = _Cuda(cudart)
        self._trt_logger = _make_logger(trt)
        self.fp16_requested = bool(fp16)
        self.workspace_mb = int(workspace_mb)
        self.device = int(device)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self._closed = False
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # -- construction -------------------------------------------------------------------------

    def _open(self) -> None:
        cuda = self._cuda
        trt = self._trt
        cuda.call("cudaSetDevice", self.device)
        props = cuda.call("cudaGetDeviceProperties", self.device)
        self.gpu_name = _text(props.name)
        self.compute_capability = (int(props.major), int(props.minor))
        self.trt_version = str(trt.__version__)

        onnx = self.model.onnx_bytes()  # ModelError if the file does not match the card's sha256
        self.key_fields = cache_key_fields(hashlib.sha256(onnx).hexdigest(), self.gpu_name,
                                           self.compute_capability, self.trt_version,
                                           self.input_shape, self.fp16_requested)
        self.key = cache_key(self.key_fields)
        self.cache_path = cache_file(self.cache_dir, self.model.card.name, self.key)
        self.sidecar_path = self.cache_path.with_suffix(".json")
        self.built = False
        self.build_s = 0.0
        self.fp16 = self.fp16_requested

        self._runtime = trt.Runtime(self._trt_logger)
        engine = self._load_cached()
        if engine is None:
            blob = self._build(onnx)
            engine = self._deserialize(blob)
            if engine is None:
                raise ModelError(f"{self.model.onnx_path}: TensorRT cannot load the engine it just "
                                 f"built{self._trt_errors()}")
            self._engine = engine
            self._input_name, self._output_name = self._check_io(engine)
            self._write_cache(blob)  # only an engine that fits the model is kept
        else:
            self._engine = engine
            self._input_name, self._output_name = self._check_io(engine)
        self._context = engine.create_execution_context()
        if self._context is None:
            raise RuntimeError(f"TensorRT could not create an execution context for "
                               f"{self.cache_path}{self._trt_errors()}")
        self._bind()

    def _trt_errors(self, prefix: str = ": ") -> str:
        """The last errors TensorRT logged, for a message (empty if none)."""
        errors = self._trt_logger.errors
        return f"{prefix}{'; '.join(errors[-3:])}" if errors else ""

    def _deserialize(self, blob: bytes) -> Any:
        self._trt_logger.errors.clear()
        return self._runtime.deserialize_cuda_engine(blob)

    def _load_cached(self) -> Any:
        path = self.cache_path
        if not path.is_file():
            return None
        try:
            blob = path.read_bytes()
        except OSError as exc:
            logger.warning("cannot read the cached TensorRT engine %s (%s); rebuilding it", path, exc)
            return None
        self._trt_logger.recoverable = True
        try:
            engine = self._deserialize(blob) if blob else None
        except Exception as exc:  # the bindings may raise rather than return None on some input
            self._trt_logger.errors.append(f"{type(exc).__name__}: {exc}")
            engine = None
        finally:
            self._trt_logger.recoverable = False
        if engine is None:
            logger.warning("TensorRT cannot load the cached engine %s (corrupt, truncated or made "
                           "by another TensorRT build%s); rebuilding and overwriting it", path,
                           self._trt_errors(prefix=": TensorRT says "))
            return None
        try:
            self._check_io(engine)
        except ModelError as exc:
            logger.warning("the cached TensorRT engine %s does not fit the model (%s); rebuilding it",
                           path, exc)
            return None
        try:  # whether the build could honour fp16 (the key holds what was asked for)
            meta = json.loads(self.sidecar_path.read_text())
            self.fp16 = bool(meta.get("fp16_applied", self.fp16_requested))
        except (OSError, ValueError, AttributeError):
            pass
        logger.info("loaded the TensorRT engine %s", path)
        return engine

    def _build(self, onnx: bytes) -> bytes:
        trt = self._trt
        path = self.model.onnx_path
        logger.info("building a TensorRT engine for %s (%s, %d views, fp16=%s); this can take minutes",
                    path, self.gpu_name, self.views, self.fp16_requested)
        t0 = time.perf_counter()
        builder = trt.Builder(self._trt_logger)
        network = builder.create_network(0)  # TensorRT 10: every network is explicit-batch
        parser = trt.OnnxParser(network, self._trt_logger)
        if not parser.parse(onnx):
            errors = []
            for i in range(parser.num_errors):
                err = parser.get_error(i)
                desc = err.desc() if callable(getattr(err, "desc", None)) else str(err)
                errors.append(str(desc))
            detail = "; ".join(errors[:3]) or "no parser errors recorded"
            raise ModelError(f"{path}: TensorRT's ONNX parser cannot read it: {detail}")
        if network.num_inputs != 1 or network.num_outputs != 1:
            raise ModelError(f"{path}: expected one input and one output, the TensorRT network has "
                             f"{network.num_inputs} and {network.num_outputs}")
        tensor = network.get_input(0)
        _check_shape(self.model, "input", [d if d >= 0 else "?" for d in tensor.shape], self.input_shape)

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mb << 20)
        self.fp16 = False
        if self.fp16_requested:
            fp16_flag = getattr(trt.BuilderFlag, "FP16", None)
            if fp16_flag is None:
                logger.warning("TensorRT %s has no FP16 builder flag (weak typing removed); "
                               "building in FP32", self.trt_version)
            elif not getattr(builder, "platform_has_fast_fp16", True):
                logger.warning("%s has no fast FP16; building the TensorRT engine in FP32", self.gpu_name)
            else:
                config.set_flag(fp16_flag)
                self.fp16 = True
        profile = builder.create_optimization_profile()
        shape = tuple(self.input_shape)
        profile.set_shape(tensor.name, shape, shape, shape)
        config.add_optimization_profile(profile)

        self._trt_logger.errors.clear()
        blob = builder.build_serialized_network(network, config)
        if blob is None:
            raise ModelError(f"{path}: the TensorRT engine build failed for input {list(shape)} on "
                             f"{self.gpu_name}{self._trt_errors()}")
        data = bytes(memoryview(blob))
        del parser, network, config, builder
        self.build_s = time.perf_counter() - t0
        self.built = True
        logger.info("built the TensorRT engine in %.1f s", self.build_s)
        return data

    def _write_cache(self, blob: bytes) -> None:
        meta = {**self.key_fields, "key": self.key, "model": self.model.card.name,
                "onnx": str(self.model.onnx_path), "fp16_applied": self.fp16,
                "workspace_mb": self.workspace_mb, "build_s": round(self.build_s, 3),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "bytes": len(blob)}
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.cache_path, blob)
            _atomic_write(self.sidecar_path, (json.dumps(meta, indent=2) + "\n").encode())
        except OSError as exc:  # a read-only cache costs the next start a rebuild, nothing more
            logger.warning("cannot write the TensorRT engine cache %s: %s", self.cache_path, exc)

    def _check_io(self, engine: Any) -> tuple[str, str]:
        trt = self._trt
        where = f"{self.model.onnx_path} (TensorRT engine {self.cache_path.name})"
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1 or len(names) != 2:
            raise ModelError(f"{where}: expected one input and one output tensor, got inputs "
                             f"{inputs} and outputs {outputs}")
        for name, want in ((inputs[0], self.input_shape), (outputs[0], self.output_shape)):
            got = tuple(engine.get_tensor_shape(name))
            if len(got) != len(want) or any(g not in (-1, w) for g, w in zip(got, want, strict=True)):
                raise ModelError(f"{where}: tensor {name!r} has shape {list(got)}, the model needs "
                                 f"{list(want)}")
            dtype = engine.get_tensor_dtype(name)
            if dtype != trt.DataType.FLOAT:
                raise ModelError(f"{where}: tensor {name!r} is {dtype}, expected float32")
        return inputs[0], outputs[0]

    def _bind(self) -> None:
        """Stream, device and pinned buffers, and the tensor addresses (set once here)."""
        cuda, ctx = self._cuda, self._context
        if not ctx.set_input_shape(self._input_name, tuple(self.input_shape)):
            raise ModelError(f"{self.cache_path}: TensorRT rejects the input shape "
                             f"{list(self.input_shape)}{self._trt_errors()}")
        out_shape = tuple(ctx.get_tensor_shape(self._output_name))
        if out_shape != tuple(self.output_shape):
            raise ModelError(f"{self.model.onnx_path}: the TensorRT engine gives output shape "
                             f"{list(out_shape)} for input {list(self.input_shape)}, the model needs "
                             f"{list(self.output_shape)}")
        self._stream = cuda.call("cudaStreamCreate")
        in_bytes = int(np.prod(self.input_shape)) * _FLOAT32_BYTES
        out_bytes = int(np.prod(self.output_shape)) * _FLOAT32_BYTES
        self._d_input = int(cuda.call("cudaMalloc", in_bytes))
        self._d_output = int(cuda.call("cudaMalloc", out_bytes))
        self._h_input_ptr = int(cuda.call("cudaMallocHost", in_bytes))
        self._h_output_ptr = int(cuda.call("cudaMallocHost", out_bytes))
        self._h_input = _pinned_array(self._h_input_ptr, self.input_shape)
        self._h_output = _pinned_array(self._h_output_ptr, self.output_shape)
        self._in_bytes, self._out_bytes = in_bytes, out_bytes
        for name, address in ((self._input_name, self._d_input), (self._output_name, self._d_output)):
            if not ctx.set_tensor_address(name, address):
                raise RuntimeError(f"TensorRT rejects the device address for tensor {name!r}"
                                   f"{self._trt_errors()}")
        kind = cuda.rt.cudaMemcpyKind
        self._h2d = kind.cudaMemcpyHostToDevice
        self._d2h = kind.cudaMemcpyDeviceToHost
        self._stream_handle = int(self._stream)

    # -- inference ----------------------------------------------------------------------------

    def _do_infer(self, batch: np.ndarray) -> np.ndarray:
        if self._closed:
            raise RuntimeError(f"tensorrt engine for {self.model.card.name} is closed")
        cuda = self._cuda
        np.copyto(self._h_input, batch)
        cuda.call("cudaMemcpyAsync", self._d_input, self._h_input_ptr, self._in_bytes, self._h2d,
                  self._stream)
        if not self._context.execute_async_v3(self._stream_handle):
            raise RuntimeError(f"TensorRT execute_async_v3 failed for {self.cache_path.name}"
                               f"{self._trt_errors()}")
        cuda.call("cudaMemcpyAsync", self._h_output_ptr, self._d_output, self._out_bytes, self._d2h,
                  self._stream)
        cuda.call("cudaStreamSynchronize", self._stream)
        return self._h_output  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "cache": str(self.cache_path), "built": self.built,
                "build_s": round(self.build_s, 3), "gpu": self.gpu_name,
                "tensorrt": self.trt_version, "fp16": self.fp16}

    # -- teardown -----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the GPU buffers, the pinned buffers, the stream, then the context, engine and
        runtime. Safe to call more than once; the last output array is invalid afterwards."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        cuda = self._cuda
        failures: list[str] = []

        def attempt(call: str, *args: Any) -> None:
            try:
                cuda.call(call, *args)
            except Exception as exc:
                failures.append(str(exc))

        if self._stream is not None:  # nothing may still be in flight on the buffers
            attempt("cudaStreamSynchronize", self._stream)
        self._h_input = self._h_output = None
        for attr in ("_d_input", "_d_output"):
            if getattr(self, attr):
                attempt("cudaFree", getattr(self, attr))
                setattr(self, attr, 0)
        for attr in ("_h_input_ptr", "_h_output_ptr"):
            if getattr(self, attr):
                attempt("cudaFreeHost", getattr(self, attr))
                setattr(self, attr, 0)
        if self._stream is not None:
            attempt("cudaStreamDestroy", self._stream)
            self._stream = None
        self._context = None
        self._engine = None
        self._runtime = None
        if failures:
            raise RuntimeError(f"tensorrt engine for {self.model.card.name}: releasing CUDA resources "
                               f"failed: {'; '.join(failures)}")



def build_and_time(model: PoseModel, views: int, iterations: int = 200,
                   cache_dir: str | Path | None = None, fp16: bool = True) -> dict[str, Any]:
    """Build (or load) the engine and time ``iterations`` inferences (host to host, copies
    included) after a warm-up; the result is JSON-ready."""
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    batch = model.example_input(views)
    with TensorRTEngine(model, views, cache_dir=cache_dir, fp16=fp16) as engine:
        for _ in range(min(20, iterations)):
            engine.infer(batch)
        times = np.empty(iterations)
        t_start = time.perf_counter()
        for i in range(iterations):
            t0 = time.perf_counter()
            engine.infer(batch)
            times[i] = time.perf_counter() - t0
        total = time.perf_counter() - t_start
        ms = times * 1e3
        return {"engine": "tensorrt", "cache": str(engine.cache_path), "built": engine.built,
                "build_s": round(engine.build_s, 3), "views": views, "input": list(engine.input_shape),
                "latency_ms": latency_stats(ms),
                "framesets_per_s": float(iterations / total) if total > 0 else float("inf"),
                "gpu": engine.gpu_name, "tensorrt": engine.trt_version, "fp16": engine.fp16}
