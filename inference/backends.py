"""The inference plug-ins by name: engines and 3D filters, the tables a rig file chooses from.

The base modules define the interfaces and know no plug-in by name (:mod:`.engines`: the
``Engine`` interface with the onnxruntime and torch engines; :mod:`.trt_engine`: TensorRT, which
imports the base; :mod:`.filters`: ``PoseFilter`` and its kinds). Choosing happens here, above
them: adding an engine or a filter is its class and one row below. TensorRT is imported only
when chosen (it needs a GPU and its own packages).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .engines import Engine, OnnxRuntimeEngine, TorchEngine
from .filters import KalmanFilter, OneEuroFilter, PoseFilter
from .modeldir import PoseModel


def _tensorrt(model: PoseModel, views: int, **options: Any) -> Engine:
    from .trt_engine import TensorRTEngine

    return TensorRTEngine(model, views, **options)


ENGINE_MAKERS: dict[str, Callable[..., Engine]] = {
    "onnxruntime": OnnxRuntimeEngine,  # CPU, the embedded default (options: threads)
    "torch": TorchEngine,  # the checkpoint on the CPU or CUDA (options: device)
    "tensorrt": _tensorrt,  # GPU (options: cache_dir, fp16, ...)
}
"""Engine name -> maker (model, views, **options)."""
ENGINES = tuple(ENGINE_MAKERS)


def open_engine(kind: str, model: PoseModel, views: int, **options: Any) -> Engine:
    """The engine ``kind`` for ``model`` and a batch of ``views``; ValueError for an unknown kind."""
    maker = ENGINE_MAKERS.get(kind)
    if maker is None:
        raise ValueError(f"unknown engine {kind!r} (choose from {', '.join(ENGINES)})")
    return maker(model, views, **options)


FILTER_CLASSES: dict[str, type[PoseFilter] | None] = {
    "none": None,  # no filtering
    "one_euro": OneEuroFilter,
    "kalman": KalmanFilter,
}
"""3D filter kind -> class (``None``: no filter)."""
FILTER_KINDS: tuple[str, ...] = tuple(FILTER_CLASSES)
"""Kinds accepted by :func:`make_filter`."""


def make_filter(kind: str, **params: float) -> PoseFilter | None:
    """A filter by kind name: ``"none"`` -> None (no filtering), ``"one_euro"`` -> :class:`OneEuroFilter`,
    ``"kalman"`` -> :class:`KalmanFilter`, with that class's keyword parameters (units in their names).

    Raises:
        ValueError: unknown kind (the message lists the kinds), unknown parameter (the message lists the
            kind's parameters), or a parameter value out of range.
    """
    if kind not in FILTER_CLASSES:
        raise ValueError(f"filter kind: expected one of {list(FILTER_KINDS)}, got {kind!r}")
    cls = FILTER_CLASSES[kind]
    if cls is None:
        if params:
            raise ValueError(f"filter kind 'none' takes no parameters, got {sorted(params)}")
        return None
    accepted = [name for name in inspect.signature(cls.__init__).parameters if name != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"filter kind {kind!r}: unknown parameter(s) {unknown}; expected some of {accepted}")
    return cls(**params)
