"""Stand-ins for TensorRT 10's Python API (``tensorrt``) and cuda-python's CUDA runtime module
(``cuda.bindings.runtime``), so that :mod:`rigstream.inference.trt_engine` runs unchanged on a
machine without a GPU.

They follow the documented behaviour the driver depends on, and check more than the real
libraries do wherever a mistake would crash or silently misbehave on a GPU:

* CUDA: every call returns a tuple whose first item is a ``cudaError_t``. Device memory is
  emulated (integer addresses mapped to bytearrays); pinned host memory is real memory (ctypes
  buffers at real addresses) so the driver can wrap it with numpy. Work queued on a stream
  (``cudaMemcpyAsync``, ``execute_async_v3``) runs only at ``cudaStreamSynchronize`` (or at
  ``cudaStreamDestroy``), in order, as on a GPU: a driver that reads its output before
  synchronizing, or rewrites its input while a copy is in flight, gets the wrong numbers.
  A copy is refused (``cudaErrorInvalidValue``) when the direction does not match the two
  addresses, an address is unknown or the byte range leaves its allocation. Unlike CUDA, host
  addresses must come from ``cudaMallocHost``: the driver promises pinned buffers, and a copy
  from pageable memory would quietly turn synchronous on a GPU. Live allocations and streams
  are tracked (:meth:`FakeCuda.live`).
* TensorRT: ``OnnxParser`` checks the bytes with ``onnx`` (and that ONNX Runtime can load the
  graph); ``build_serialized_network`` needs an optimization profile for every dynamic input
  and returns an engine plan that embeds the ONNX model and the profile, tagged with the
  TensorRT version and the GPU's compute capability; ``Runtime.deserialize_cuda_engine``
  returns None for anything else (a corrupt file, another TensorRT version, another GPU
  generation). An execution context needs ``set_input_shape`` (inside the profile) and a device
  address for every I/O tensor before ``execute_async_v3``, which then runs the embedded graph
  with ONNX Runtime on the emulated device memory. Builds and loads are counted.

Numbers are computed in FP32 even when the FP16 flag is set (an FP16 engine is only expected
to agree with ONNX Runtime to a fraction of a pixel, which the real-GPU test checks).
"""

from __future__ import annotations

import ctypes
import enum
import json
import struct
import sys
import types
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------
# CUDA runtime (cuda-python's ``cuda.bindings.runtime``)
# ---------------------------------------------------------------------------------------------


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInvalidDevicePointer = 17
    cudaErrorInvalidMemcpyDirection = 21
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400
    cudaErrorIllegalAddress = 700


_ERROR_TEXT = {
    cudaError_t.cudaSuccess: "no error",
    cudaError_t.cudaErrorInvalidValue: "invalid argument",
    cudaError_t.cudaErrorMemoryAllocation: "out of memory",
    cudaError_t.cudaErrorInvalidDevicePointer: "invalid device pointer",
    cudaError_t.cudaErrorInvalidMemcpyDirection: "invalid copy direction for memcpy",
    cudaError_t.cudaErrorNoDevice: "no CUDA-capable device is detected",
    cudaError_t.cudaErrorInvalidDevice: "invalid device ordinal",
    cudaError_t.cudaErrorInvalidResourceHandle: "invalid resource handle",
    cudaError_t.cudaErrorIllegalAddress: "an illegal memory access was encountered",
}


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3
    cudaMemcpyDefault = 4


class cudaStream_t:
    """A stream handle as cuda-python returns it: ``int()`` gives the raw handle."""

    def __init__(self, init_value: int = 0) -> None:
        self._handle = int(init_value)

    def __int__(self) -> int:
        return self._handle

    def getPtr(self) -> int:
        return self._handle

    def __repr__(self) -> str:
        return f"<cudaStream_t {self._handle:#x}>"


class cudaDeviceProp:
    def __init__(self, name: bytes, major: int, minor: int) -> None:
        self.name = name  # bytes, like cuda-python's char[256] field
        self.major = major
        self.minor = minor
        self.totalGlobalMem = 80 << 30
        self.multiProcessorCount = 108


_OK = cudaError_t.cudaSuccess
_INVALID = cudaError_t.cudaErrorInvalidValue


class FakeCuda:
    """One emulated GPU (or several of the same kind) and the runtime module that drives it."""

    DEVICE_BASE = 0x7F00_0000_0000
    ALIGN = 256

    def __init__(self, gpu_name: str = "NVIDIA Fake A100-SXM4-80GB", capability: tuple[int, int] = (8, 0),
                 devices: int = 1) -> None:
        self.gpu_name = gpu_name
        self.capability = capability
        self.devices = devices
        self.current_device = 0
        self._device: dict[int, bytearray] = {}
        self._host: dict[int, ctypes.Array] = {}
        self._streams: dict[int, list[Callable[[], cudaError_t]]] = {0: []}  # 0: the legacy default
        self._next_device = self.DEVICE_BASE
        self._next_stream = 0x5000
        self.calls: Counter[str] = Counter()
        self.module = self._make_module()

    # -- bookkeeping for tests ----------------------------------------------------------------

    def live(self) -> dict[str, list[int]]:
        """Addresses and stream handles not yet released."""
        return {"device": sorted(self._device), "host": sorted(self._host),
                "streams": sorted(h for h in self._streams if h != 0)}

    # -- helpers ------------------------------------------------------------------------------

    def _stream_handle(self, stream: Any) -> int | None:
        if stream is None:
            return 0
        if isinstance(stream, cudaStream_t):
            handle = int(stream)
        elif isinstance(stream, int) and not isinstance(stream, bool):
            handle = stream
        else:
            raise TypeError(f"Argument 'stream' is not instance of type (expected int or cudaStream_t, "
                            f"found {type(stream).__name__})")
        return handle if handle in self._streams else None

    @staticmethod
    def _address(value: Any, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"Argument '{what}' is not instance of type (expected int, found "
                            f"{type(value).__name__})")
        return int(value)

    def _find(self, table: dict[int, Any], address: int, nbytes: int) -> memoryview | None:
        """The bytes [address, address + nbytes) inside one allocation of ``table``, or None."""
        for base, buf in table.items():
            size = len(buf) if isinstance(buf, bytearray) else ctypes.sizeof(buf)
            if base <= address < base + max(size, 1):
                if address + nbytes > base + size:
                    return None
                view = memoryview(buf).cast("B")
                return view[address - base:address - base + nbytes]
        return None

    def device_bytes(self, address: int, nbytes: int) -> memoryview | None:
        """For the fake TensorRT: device memory at an address (None if not allocated)."""
        return self._find(self._device, address, nbytes)

    def enqueue(self, handle: int, op: Callable[[], cudaError_t]) -> bool:
        if handle not in self._streams:
            return False
        self._streams[handle].append(op)
        return True

    def _drain(self, handle: int) -> cudaError_t:
        queue = self._streams[handle]
        first = _OK
        while queue:
            err = queue.pop(0)()
            if err != _OK and first == _OK:
                first = err
        return first

    def _classify(self, address: int, nbytes: int) -> tuple[str, memoryview] | None:
        view = self._find(self._device, address, nbytes)
        if view is not None:
            return "device", view
        view = self._find(self._host, address, nbytes)
        if view is not None:
            return "host", view
        return None

    # -- the runtime API ----------------------------------------------------------------------

    def cudaGetErrorName(self, error: cudaError_t) -> tuple[cudaError_t, bytes]:
        return _OK, cudaError_t(error).name.encode()

    def cudaGetErrorString(self, error: cudaError_t) -> tuple[cudaError_t, bytes]:
        return _OK, _ERROR_TEXT.get(cudaError_t(error), "unrecognized error code").encode()

    def cudaGetDeviceCount(self) -> tuple[cudaError_t, int]:
        self.calls["cudaGetDeviceCount"] += 1
        if self.devices < 1:
            return cudaError_t.cudaErrorNoDevice, 0
        return _OK, self.devices

    def cudaSetDevice(self, device: int) -> tuple[cudaError_t]:
        self.calls["cudaSetDevice"] += 1
        if self.devices < 1:
            return (cudaError_t.cudaErrorNoDevice,)
        if not 0 <= int(device) < self.devices:
            return (cudaError_t.cudaErrorInvalidDevice,)
        self.current_device = int(device)
        return (_OK,)

    def cudaGetDevice(self) -> tuple[cudaError_t, int]:
        return _OK, self.current_device

    def cudaGetDeviceProperties(self, device: int) -> tuple[cudaError_t, cudaDeviceProp | None]:
        self.calls["cudaGetDeviceProperties"] += 1
        if not 0 <= int(device) < self.devices:
            return cudaError_t.cudaErrorInvalidDevice, None
        return _OK, cudaDeviceProp(self.gpu_name.encode(), *self.capability)

    def cudaStreamCreate(self) -> tuple[cudaError_t, cudaStream_t | None]:
        self.calls["cudaStreamCreate"] += 1
        handle = self._next_stream
        self._next_stream += 0x10
        self._streams[handle] = []
        return _OK, cudaStream_t(handle)

    def cudaStreamSynchronize(self, stream: Any) -> tuple[cudaError_t]:
        self.calls["cudaStreamSynchronize"] += 1
        handle = self._stream_handle(stream)
        if handle is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        return (self._drain(handle),)

    def cudaDeviceSynchronize(self) -> tuple[cudaError_t]:
        first = _OK
        for handle in list(self._streams):
            err = self._drain(handle)
            first = err if first == _OK else first
        return (first,)

    def cudaStreamDestroy(self, stream: Any) -> tuple[cudaError_t]:
        self.calls["cudaStreamDestroy"] += 1
        handle = self._stream_handle(stream)
        if handle is None or handle == 0:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        self._drain(handle)  # queued work completes, as with cudaStreamDestroy on a GPU
        del self._streams[handle]
        return (_OK,)

    def cudaMalloc(self, size: int) -> tuple[cudaError_t, int | None]:
        self.calls["cudaMalloc"] += 1
        size = self._address(size, "size")
        if size < 0:
            return _INVALID, None
        if size == 0:
            return _OK, 0
        address = self._next_device
        self._next_device += (size + self.ALIGN - 1) // self.ALIGN * self.ALIGN + self.ALIGN
        self._device[address] = bytearray(size)
        return _OK, address

    def cudaFree(self, devPtr: int) -> tuple[cudaError_t]:
        self.calls["cudaFree"] += 1
        address = self._address(devPtr, "devPtr")
        if address == 0:
            return (_OK,)
        if address not in self._device:  # never allocated, already freed, or a host pointer
            return (_INVALID,)
        del self._device[address]
        return (_OK,)

    def cudaMallocHost(self, size: int) -> tuple[cudaError_t, int | None]:
        self.calls["cudaMallocHost"] += 1
        size = self._address(size, "size")
        if size < 0:
            return _INVALID, None
        if size == 0:
            return _OK, 0
        buf = (ctypes.c_ubyte * size)()
        address = ctypes.addressof(buf)
        self._host[address] = buf
        return _OK, address

    def cudaFreeHost(self, ptr: int) -> tuple[cudaError_t]:
        self.calls["cudaFreeHost"] += 1
        address = self._address(ptr, "ptr")
        if address == 0:
            return (_OK,)
        if address not in self._host:
            return (_INVALID,)
        del self._host[address]
        return (_OK,)

    def _copy_op(self, dst: Any, src: Any, count: Any, kind: Any) -> tuple[cudaError_t, Any]:
        dst_a, src_a, n = self._address(dst, "dst"), self._address(src, "src"), self._address(count, "count")
        try:
            kind = cudaMemcpyKind(kind)
        except ValueError:
            return cudaError_t.cudaErrorInvalidMemcpyDirection, None
        if n < 0:
            return _INVALID, None
        d, s = self._classify(dst_a, n), self._classify(src_a, n)
        if d is None or s is None:
            return _INVALID, None
        expected = {cudaMemcpyKind.cudaMemcpyHostToHost: ("host", "host"),
                    cudaMemcpyKind.cudaMemcpyHostToDevice: ("device", "host"),
                    cudaMemcpyKind.cudaMemcpyDeviceToHost: ("host", "device"),
                    cudaMemcpyKind.cudaMemcpyDeviceToDevice: ("device", "device")}.get(kind)
        if expected is not None and (d[0], s[0]) != expected:
            return _INVALID, None

        def run() -> cudaError_t:  # resolved again: memory freed while queued is a fault
            d, s = self._classify(dst_a, n), self._classify(src_a, n)
            if d is None or s is None:
                return cudaError_t.cudaErrorIllegalAddress
            d[1][:] = s[1]
            return _OK

        return _OK, run

    def cudaMemcpyAsync(self, dst: Any, src: Any, count: int, kind: Any, stream: Any) -> tuple[cudaError_t]:
        self.calls["cudaMemcpyAsync"] += 1
        handle = self._stream_handle(stream)
        if handle is None:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        err, op = self._copy_op(dst, src, count, kind)
        if err != _OK:
            return (err,)
        self._streams[handle].append(op)
        return (_OK,)

    def cudaMemcpy(self, dst: Any, src: Any, count: int, kind: Any) -> tuple[cudaError_t]:
        self.calls["cudaMemcpy"] += 1
        err, op = self._copy_op(dst, src, count, kind)
        if err != _OK:
            return (err,)
        self._drain(0)
        return (op(),)

    def _make_module(self) -> types.ModuleType:
        mod = types.ModuleType("cuda.bindings.runtime", "fake cuda-python runtime bindings")
        mod.cudaError_t = cudaError_t
        mod.cudaMemcpyKind = cudaMemcpyKind
        mod.cudaStream_t = cudaStream_t
        mod.cudaDeviceProp = cudaDeviceProp
        for name in dir(self):
            if name.startswith("cuda"):
                setattr(mod, name, getattr(self, name))
        mod.fake = self
        return mod


# ---------------------------------------------------------------------------------------------
# TensorRT 10 (``tensorrt``)
# ---------------------------------------------------------------------------------------------


class _Enum(enum.Enum):
    """pybind11-style enum: ``str()`` gives ``Type.NAME``, ``int()`` the value."""

    def __str__(self) -> str:
        return f"{type(self).__name__}.{self.name}"

    def __int__(self) -> int:
        return int(self.value)


class DataType(_Enum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9


_ONNX_TYPES = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32,
               9: DataType.BOOL, 2: DataType.UINT8, 16: DataType.BF16, 7: DataType.INT64}


class TensorIOMode(_Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class MemoryPoolType(_Enum):
    WORKSPACE = 0
    DLA_MANAGED_SRAM = 1
    DLA_LOCAL_DRAM = 2
    DLA_GLOBAL_DRAM = 3
    TACTIC_DRAM = 4
    TACTIC_SHARED_MEMORY = 5


class BuilderFlag(_Enum):
    FP16 = 0
    INT8 = 1
    DEBUG = 2
    GPU_FALLBACK = 3
    REFIT = 5
    TF32 = 7
    BF16 = 17


class NetworkDefinitionCreationFlag(_Enum):
    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class Severity(_Enum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ErrorCode(_Enum):
    SUCCESS = 0
    INTERNAL_ERROR = 1
    MEM_ALLOC_FAILED = 2
    MODEL_DESERIALIZE_FAILED = 3
    INVALID_VALUE = 4
    INVALID_GRAPH = 5
    INVALID_NODE = 6
    UNSUPPORTED_GRAPH = 7
    UNSUPPORTED_NODE = 8


class Dims(tuple):
    """Shapes come back as Dims: a sequence of ints, -1 for a dimension fixed only at runtime."""

    def __repr__(self) -> str:
        return f"({', '.join(str(d) for d in self)})"


class ILogger:
    """Subclasses must call ``ILogger.__init__(self)`` (pybind11 insists) and define ``log``."""

    Severity = Severity
    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self) -> None:
        self._fake_base_initialised = True

    def log(self, severity: Severity, msg: str) -> None:
        raise NotImplementedError


class Logger(ILogger):
    def __init__(self, min_severity: Severity = Severity.WARNING) -> None:
        ILogger.__init__(self)
        self.min_severity = min_severity
        self.messages: list[tuple[Severity, str]] = []

    def log(self, severity: Severity, msg: str) -> None:
        if severity.value <= self.min_severity.value:
            self.messages.append((severity, msg))


def _check_logger(logger: Any) -> ILogger:
    if not isinstance(logger, ILogger):
        raise TypeError(f"incompatible constructor arguments: expected tensorrt.ILogger, got "
                        f"{type(logger).__name__}")
    if not getattr(logger, "_fake_base_initialised", False):
        raise TypeError(f"{type(logger).__name__}.__init__() must be called when overriding __init__")
    return logger


class ITensor:
    def __init__(self, name: str, shape: tuple[int, ...], dtype: DataType, symbols: tuple[str | None, ...],
                 is_input: bool) -> None:
        self.name = name
        self.shape = Dims(shape)
        self.dtype = dtype
        self.is_network_input = is_input
        self.is_network_output = not is_input
        self._symbols = symbols  # ONNX dim_param names, to resolve output shapes from input shapes


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.name = "Unnamed Network 0"
        self._inputs: list[ITensor] = []
        self._outputs: list[ITensor] = []
        self._onnx: bytes | None = None

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    @property
    def num_layers(self) -> int:
        return 0 if self._onnx is None else 1

    def get_input(self, index: int) -> ITensor | None:
        return self._inputs[index] if 0 <= index < len(self._inputs) else None

    def get_output(self, index: int) -> ITensor | None:
        return self._outputs[index] if 0 <= index < len(self._outputs) else None


class ParserError:
    def __init__(self, code: ErrorCode, desc: str, node: int = -1) -> None:
        self._code, self._desc, self._node = code, desc, node

    def code(self) -> ErrorCode:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def __str__(self) -> str:
        return f"In node {self._node} with name:  and operator:  (parse): {self._code.name}: {self._desc}"


def _tensors_from_graph(graph: Any, inputs: bool) -> list[ITensor]:
    initializers = {t.name for t in graph.initializer}
    values = [v for v in graph.input if v.name not in initializers] if inputs else list(graph.output)
    tensors = []
    for value in values:
        ttype = value.type.tensor_type
        dims, symbols = [], []
        for dim in ttype.shape.dim:
            fixed = dim.HasField("dim_value")
            dims.append(int(dim.dim_value) if fixed else -1)
            symbols.append(None if fixed else (dim.dim_param or None))
        tensors.append(ITensor(value.name, tuple(dims), _ONNX_TYPES.get(ttype.elem_type, DataType.FLOAT),
                               tuple(symbols), inputs))
    return tensors


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger) -> None:
        if not isinstance(network, INetworkDefinition):
            raise TypeError("OnnxParser: network must be a tensorrt.INetworkDefinition")
        self._network = network
        self._logger = _check_logger(logger)
        self._errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> ParserError | None:
        return self._errors[index] if 0 <= index < len(self._errors) else None

    def clear_errors(self) -> None:
        self._errors.clear()

    def _fail(self, code: ErrorCode, desc: str) -> bool:
        self._errors.append(ParserError(code, desc))
        self._logger.log(Severity.ERROR, f"ModelImporter.cpp: {desc}")
        return False

    def parse(self, model: bytes, path: str | None = None) -> bool:
        import onnx
        import onnxruntime as ort

        data = bytes(model)
        if self._network._onnx is not None:
            return self._fail(ErrorCode.INVALID_GRAPH, "the network already holds a parsed model")
        try:
            proto = onnx.load_from_string(data)
            onnx.checker.check_model(proto)
        except Exception as exc:
            return self._fail(ErrorCode.MODEL_DESERIALIZE_FAILED,
                              f"Failed to parse ONNX model from file: {path or '<bytes>'}: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        try:
            ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        except Exception as exc:
            return self._fail(ErrorCode.UNSUPPORTED_NODE, f"cannot import the graph: {str(exc)[:200]}")
        inputs, outputs = _tensors_from_graph(proto.graph, True), _tensors_from_graph(proto.graph, False)
        if not outputs:
            return self._fail(ErrorCode.INVALID_GRAPH, "the graph has no outputs")
        self._network._inputs, self._network._outputs = inputs, outputs
        self._network._onnx = data
        return True


class IOptimizationProfile:
    def __init__(self) -> None:
        self._shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:  # TensorRT's names
        self._shapes[input] = (Dims(int(d) for d in min), Dims(int(d) for d in opt),
                               Dims(int(d) for d in max))

    def get_shape(self, input: str) -> list[Dims]:
        return list(self._shapes.get(input, ()))


class IBuilderConfig:
    def __init__(self) -> None:
        self._pools: dict[MemoryPoolType, int] = {}
        self._flags: set[BuilderFlag] = set()
        self._profiles: list[IOptimizationProfile] = []

    def set_memory_pool_limit(self, pool: MemoryPoolType, pool_size: int) -> None:
        if not isinstance(pool, MemoryPoolType) or int(pool_size) < 0:
            raise TypeError("set_memory_pool_limit(pool: MemoryPoolType, pool_size: int)")
        self._pools[pool] = int(pool_size)

    def get_memory_pool_limit(self, pool: MemoryPoolType) -> int:
        return self._pools.get(pool, 80 << 30)

    def set_flag(self, flag: BuilderFlag) -> None:
        if not isinstance(flag, BuilderFlag):
            raise TypeError("set_flag(flag: BuilderFlag)")
        self._flags.add(flag)

    def clear_flag(self, flag: BuilderFlag) -> None:
        self._flags.discard(flag)

    def get_flag(self, flag: BuilderFlag) -> bool:
        return flag in self._flags

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        if not isinstance(profile, IOptimizationProfile) or not profile._shapes:
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)


class IHostMemory(bytes):
    """The serialized engine: supports the buffer protocol, like TensorRT's IHostMemory."""

    @property
    def nbytes(self) -> int:
        return len(self)


_MAGIC = b"FAKE-TRT-PLAN\0"


def _profile_error(tensor: ITensor, shapes: tuple[Dims, Dims, Dims]) -> str | None:
    lo, opt, hi = shapes
    if not len(lo) == len(opt) == len(hi) == len(tensor.shape):
        return f"profile shapes for {tensor.name} have the wrong rank (network: {tensor.shape})"
    for i, d in enumerate(tensor.shape):
        if not 0 <= lo[i] <= opt[i] <= hi[i]:
            return f"{tensor.name}: profile needs 0 <= min <= opt <= max, got {lo} {opt} {hi}"
        if d >= 0 and not lo[i] == opt[i] == hi[i] == d:
            return f"{tensor.name}: dimension {i} is fixed at {d} in the network, profile gives {lo}..{hi}"
    return None


class FakeTensorRT:
    """The fake ``tensorrt`` module, its GPU (a :class:`FakeCuda`) and counters for tests."""

    def __init__(self, cuda: FakeCuda, version: str = "10.3.0", fast_fp16: bool = True) -> None:
        self.cuda = cuda
        self.version = version
        self.fast_fp16 = fast_fp16
        self.builds = 0
        self.failed_builds = 0
        self.loads = 0
        self.failed_loads = 0
        self.executions = 0
        self.last_build_config: IBuilderConfig | None = None
        self.engines: weakref.WeakSet[Any] = weakref.WeakSet()
        self.contexts: weakref.WeakSet[Any] = weakref.WeakSet()
        self.module = self._make_module()

    # -- what the classes below call back into ------------------------------------------------

    def _device(self) -> tuple[str, tuple[int, int]]:
        return self.cuda.gpu_name, self.cuda.capability

    def _build(self, logger: ILogger, network: INetworkDefinition,
               config: IBuilderConfig) -> IHostMemory | None:
        def fail(msg: str) -> None:
            self.failed_builds += 1
            logger.log(Severity.ERROR, msg)

        if not isinstance(network, INetworkDefinition) or not isinstance(config, IBuilderConfig):
            raise TypeError("build_serialized_network(network: INetworkDefinition, config: IBuilderConfig)")
        if network._onnx is None or not network._outputs:
            return fail("IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (Network must "
                        "have at least one output)")
        profiles: list[dict[str, list[list[int]]]] = []
        for profile in config._profiles:
            entry = {}
            for tensor in network._inputs:
                if tensor.name not in profile._shapes:
                    if any(d < 0 for d in tensor.shape):
                        return fail(f"Error Code 4: API Usage Error (optimization profile is missing "
                                    f"values for dynamic input tensor {tensor.name})")
                    continue
                problem = _profile_error(tensor, profile._shapes[tensor.name])
                if problem:
                    return fail(f"Error Code 4: API Usage Error ({problem})")
                entry[tensor.name] = [list(s) for s in profile._shapes[tensor.name]]
            unknown = set(profile._shapes) - {t.name for t in network._inputs}
            if unknown:
                return fail(f"Error Code 4: API Usage Error (profile names unknown inputs {sorted(unknown)})")
            profiles.append(entry)
        if not profiles and any(d < 0 for t in network._inputs for d in t.shape):
            return fail("Error Code 4: API Usage Error (Network has dynamic or shape inputs, but no "
                        "optimization profile has been defined.)")
        name, capability = self._device()
        header = {"tensorrt": self.version, "gpu": name, "capability": list(capability),
                  "fp16": config.get_flag(BuilderFlag.FP16),
                  "workspace": config.get_memory_pool_limit(MemoryPoolType.WORKSPACE),
                  "profiles": profiles,
                  "tensors": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype.name,
                               "symbols": list(t._symbols), "input": t.is_network_input}
                              for t in network._inputs + network._outputs]}
        head = json.dumps(header).encode()
        self.builds += 1
        self.last_build_config = config
        return IHostMemory(_MAGIC + struct.pack("<I", len(head)) + head + network._onnx)

    def _deserialize(self, logger: ILogger, blob: Any) -> Any:
        def fail(msg: str) -> None:
            self.failed_loads += 1
            logger.log(Severity.ERROR, f"IRuntime::deserializeCudaEngine: {msg}")

        data = bytes(blob)
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
            return fail("Error Code 1: Serialization (Serialization assertion magicTagRead == kMAGIC_TAG "
                        "failed.Magic tag does not match)")
        (n,) = struct.unpack_from("<I", data, len(_MAGIC))
        start = len(_MAGIC) + 4
        try:
            header = json.loads(data[start:start + n])
            onnx_bytes = data[start + n:]
        except ValueError:
            return fail("Error Code 1: Serialization (corrupt engine plan)")
        if header.get("tensorrt") != self.version:
            return fail(f"Error Code 6: API Usage Error (The engine plan file is not compatible with this "
                        f"version of TensorRT, expecting library version {self.version} got "
                        f"{header.get('tensorrt')}, please rebuild.)")
        _name, capability = self._device()
        if header.get("capability") != list(capability):
            return fail(f"Error Code 1: Serialization (the engine plan file is generated on an "
                        f"incompatible device, expecting compute {capability[0]}.{capability[1]} got "
                        f"compute {'.'.join(map(str, header.get('capability', [])))}, please rebuild.)")
        try:
            import onnxruntime as ort

            session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        except Exception:
            return fail("Error Code 1: Serialization (corrupt engine plan)")
        self.loads += 1
        engine = self.module.ICudaEngine(self, header, session, logger)
        self.engines.add(engine)
        return engine

    # -- the module ---------------------------------------------------------------------------

    def _make_module(self) -> types.ModuleType:
        fake = self

        class Builder:
            def __init__(self, logger: ILogger) -> None:
                self._logger = _check_logger(logger)

            @property
            def platform_has_fast_fp16(self) -> bool:
                return fake.fast_fp16

            @property
            def platform_has_tf32(self) -> bool:
                return fake.cuda.capability >= (8, 0)

            def create_network(self, flags: int = 0) -> INetworkDefinition:
                if isinstance(flags, bool) or not isinstance(flags, int) or flags < 0 or flags >> 2:
                    raise TypeError(f"create_network(flags: int = 0): bad flags {flags!r}")
                return INetworkDefinition(flags)

            def create_builder_config(self) -> IBuilderConfig:
                return IBuilderConfig()

            def create_optimization_profile(self) -> IOptimizationProfile:
                return IOptimizationProfile()

            def build_serialized_network(self, network: INetworkDefinition,
                                         config: IBuilderConfig) -> IHostMemory | None:
                return fake._build(self._logger, network, config)

        class Runtime:
            def __init__(self, logger: ILogger) -> None:
                self._logger = _check_logger(logger)

            def deserialize_cuda_engine(self, serialized_engine: Any) -> Any:
                return fake._deserialize(self._logger, serialized_engine)

        class ICudaEngine:
            def __init__(self, owner: FakeTensorRT, header: dict[str, Any], session: Any,
                         logger: ILogger) -> None:
                self._fake = owner
                self._logger = logger  # the runtime's: objects it makes log through it
                self._header = header
                self._session = session
                self._tensors = {t["name"]: t for t in header["tensors"]}
                self._names = [t["name"] for t in header["tensors"]]

            @property
            def num_io_tensors(self) -> int:
                return len(self._names)

            @property
            def num_optimization_profiles(self) -> int:
                return len(self._header["profiles"])

            def get_tensor_name(self, index: int) -> str:
                if not 0 <= index < len(self._names):
                    raise IndexError("io tensor index out of range")
                return self._names[index]

            def get_tensor_mode(self, name: str) -> TensorIOMode:
                t = self._tensors.get(name)
                if t is None:
                    return TensorIOMode.NONE
                return TensorIOMode.INPUT if t["input"] else TensorIOMode.OUTPUT

            def get_tensor_shape(self, name: str) -> Dims:
                t = self._tensors.get(name)
                return Dims(t["shape"]) if t else Dims((-1,))

            def get_tensor_dtype(self, name: str) -> DataType:
                t = self._tensors.get(name)
                return DataType[t["dtype"]] if t else DataType.FLOAT

            def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
                shapes = self._header["profiles"][profile_index].get(name)
                return [Dims(s) for s in shapes] if shapes else []

            def create_execution_context(self) -> Any:
                context = IExecutionContext(self)
                self._fake.contexts.add(context)
                return context

        class IExecutionContext:
            def __init__(self, engine: Any) -> None:
                self.engine = engine
                self._shapes: dict[str, Dims] = {}
                self._addresses: dict[str, int] = {}

            def _error(self, msg: str) -> bool:
                self.engine._logger.log(Severity.ERROR, f"IExecutionContext: {msg}")
                return False

            def set_input_shape(self, name: str, shape: Any) -> bool:
                t = self.engine._tensors.get(name)
                shape = Dims(int(d) for d in shape)
                if t is None or not t["input"]:
                    return self._error(f"setInputShape: {name!r} is not an input tensor")
                profiles = self.engine._header["profiles"]
                profile = profiles[0].get(name) if profiles else None
                if len(shape) != len(t["shape"]):
                    return self._error(f"setInputShape: {name!r} has rank {len(t['shape'])}, got {shape}")
                if profile is not None:
                    lo, _opt, hi = profile
                    if any(not lo[i] <= shape[i] <= hi[i] for i in range(len(shape))):
                        return self._error(f"setInputShape: {shape} for {name!r} is outside the "
                                           f"optimization profile {lo}..{hi}")
                elif any(s != d for s, d in zip(shape, t["shape"], strict=True)):
                    return self._error(f"setInputShape: {name!r} is fixed at {t['shape']}, got {shape}")
                self._shapes[name] = shape
                return True

            def _symbols(self) -> dict[str, int]:
                values: dict[str, int] = {}
                for name, shape in self._shapes.items():
                    for sym, d in zip(self.engine._tensors[name]["symbols"], shape, strict=True):
                        if sym:
                            values[sym] = d
                return values

            def get_tensor_shape(self, name: str) -> Dims:
                t = self.engine._tensors.get(name)
                if t is None:
                    return Dims((-1,))
                if t["input"]:
                    return self._shapes.get(name, Dims(t["shape"]))
                values = self._symbols()
                return Dims(d if d >= 0 else values.get(sym or "", -1)
                            for d, sym in zip(t["shape"], t["symbols"], strict=True))

            def set_tensor_address(self, name: str, memory: int) -> bool:
                if isinstance(memory, bool) or not isinstance(memory, int):
                    raise TypeError(f"set_tensor_address(name: str, memory: int): got "
                                    f"{type(memory).__name__}")
                if name not in self.engine._tensors:
                    return self._error(f"setTensorAddress: no tensor named {name!r}")
                if memory % 4:
                    return self._error(f"setTensorAddress: address {memory:#x} of {name!r} is misaligned")
                self._addresses[name] = memory
                return True

            def get_tensor_address(self, name: str) -> int:
                return self._addresses.get(name, 0)

            @property
            def all_input_dimensions_specified(self) -> bool:
                return all(n in self._shapes for n, t in self.engine._tensors.items() if t["input"])

            def execute_async_v3(self, stream_handle: int) -> bool:
                if isinstance(stream_handle, bool) or not isinstance(stream_handle, int):
                    raise TypeError(f"execute_async_v3(stream_handle: int): got "
                                    f"{type(stream_handle).__name__}")
                cuda = fake.cuda
                bound: dict[str, tuple[int, Dims]] = {}
                for name, t in self.engine._tensors.items():
                    shape = self.get_tensor_shape(name)
                    if any(d < 0 for d in shape):
                        return self._error(f"enqueueV3: the shape of {name!r} is not specified")
                    if name not in self._addresses:
                        return self._error(f"enqueueV3: no address set for tensor {name!r}")
                    if t["dtype"] != "FLOAT":
                        return self._error(f"enqueueV3: the fake runs float32 tensors only ({name!r})")
                    view = cuda.device_bytes(self._addresses[name], int(np.prod(shape)) * 4)
                    if view is None:  # host memory, unallocated or too small: a fault on a GPU
                        return self._error(f"enqueueV3: {self._addresses[name]:#x} is not device memory "
                                           f"holding {name!r} {shape} float32")
                    bound[name] = (self._addresses[name], shape)
                tensors, session = self.engine._tensors, self.engine._session

                def run() -> cudaError_t:
                    # Resolved when the stream gets here: memory freed while queued is a fault.
                    views = {name: cuda.device_bytes(address, int(np.prod(shape)) * 4)
                             for name, (address, shape) in bound.items()}
                    if any(v is None for v in views.values()):
                        return cudaError_t.cudaErrorIllegalAddress
                    feeds = {name: np.frombuffer(views[name], np.float32).reshape(shape).copy()
                             for name, (_a, shape) in bound.items() if tensors[name]["input"]}
                    outputs = [n for n, t in tensors.items() if not t["input"]]
                    for name, value in zip(outputs, session.run(outputs, feeds), strict=True):
                        value = np.ascontiguousarray(value, np.float32)
                        if value.shape != tuple(bound[name][1]):
                            return cudaError_t.cudaErrorIllegalAddress
                        views[name][:] = value.tobytes()  # type: ignore[index]
                    return cudaError_t.cudaSuccess

                if not cuda.enqueue(stream_handle, run):
                    return self._error(f"enqueueV3: {stream_handle:#x} is not a live CUDA stream")
                fake.executions += 1
                return True

        mod = types.ModuleType("tensorrt", "fake TensorRT 10 Python API")
        mod.__version__ = self.version
        for obj in (Builder, Runtime, ICudaEngine, IExecutionContext):
            obj.__module__ = "tensorrt"
            setattr(mod, obj.__name__, obj)
        for obj in (ILogger, Logger, OnnxParser, ParserError, INetworkDefinition, ITensor,
                    IBuilderConfig, IOptimizationProfile, IHostMemory, Dims, DataType, TensorIOMode,
                    MemoryPoolType, BuilderFlag, NetworkDefinitionCreationFlag, ErrorCode):
            setattr(mod, obj.__name__, obj)
        mod.fake = self
        return mod


def install(monkeypatch: Any, cuda: FakeCuda, trt: FakeTensorRT, layout: str = "bindings") -> None:
    """Put the fakes into ``sys.modules`` (undone by monkeypatch). ``layout``: "bindings" for
    cuda-python >= 12.6 (``cuda.bindings.runtime``), "legacy" for ``cuda.cudart`` only."""
    cuda_pkg = types.ModuleType("cuda")
    cuda_pkg.__path__ = []  # a package, so "from cuda import x" looks in sys.modules
    monkeypatch.setitem(sys.modules, "cuda", cuda_pkg)
    if layout == "bindings":
        bindings = types.ModuleType("cuda.bindings")
        bindings.__path__ = []
        bindings.runtime = cuda.module
        cuda_pkg.bindings = bindings
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cuda.module)
    elif layout == "legacy":
        monkeypatch.setitem(sys.modules, "cuda.bindings", None)  # import fails, like an old release
        cuda_pkg.cudart = cuda.module
        monkeypatch.setitem(sys.modules, "cuda.cudart", cuda.module)
    else:
        raise ValueError(layout)
    monkeypatch.setitem(sys.modules, "tensorrt", trt.module)
