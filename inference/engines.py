"""Inference engines behind one interface: a batch of views in, keypoints out.

    engine = open_engine("onnxruntime", load_model("sim"), views=2)   # from .backends
    keypoints = engine.infer(batch)   # (2, C, H, W) float32 0..255 -> (2, K, 3) float32

``onnxruntime`` (CPU, the embedded default), ``torch`` (the checkpoint, CPU or CUDA) and
``tensorrt`` (GPU; :mod:`rigstream.inference.trt_engine`, which alone imports tensorrt). Every
engine runs the same decoded graph, so all return x, y, confidence in model-input pixels.
An engine checks the batch shape and dtype on every call; the output array is owned by the
engine and overwritten by the next call (copy it to keep it).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from rigstream.inference.modeldir import ModelError, PoseModel

logger = logging.getLogger(__name__)


class Engine(ABC):
    """One loaded model for a fixed number of views."""

    name = "?"

    def __init__(self, model: PoseModel, views: int) -> None:
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        self.model = model
        self.views = views
        self.input_shape = model.input_shape(views)
        self.output_shape = model.output_shape(views)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """batch (views, C, H, W) float32 raw pixels -> (views, K, 3) float32 x, y, confidence."""
        if batch.shape != self.input_shape or batch.dtype != np.float32:
            raise ValueError(f"{self.name} engine for {self.model.card.name}: expected a batch of "
                             f"{self.input_shape} float32, got {batch.shape} {batch.dtype}")
        return self._do_infer(batch)

    @abstractmethod
    def _do_infer(self, batch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "model": self.model.card.name, "views": self.views,
                "input": list(self.input_shape)}

    def close(self) -> None:  # noqa: B027 (engines without resources need nothing)
        """Release the engine's resources; idempotent."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OnnxRuntimeEngine(Engine):
    name = "onnxruntime"

    def __init__(self, model: PoseModel, views: int, threads: int | None = None) -> None:
        super().__init__(model, views)
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # Worker threads sleep between runs instead of spinning: on a rig host the cameras,
        # recorder and encoder share the cores, and a spinning pool would starve them.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(model.onnx_bytes(), sess_options=opts,
                                                providers=["CPUExecutionProvider"])
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
            raise ModelError(f"{model.onnx_path}: ONNX Runtime cannot load it: "
                             f"{str(exc).splitlines()[0][:300]}") from None
        inputs = self.session.get_inputs()
        outputs = self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{model.onnx_path}: expected one input and one output, got "
                             f"{len(inputs)} and {len(outputs)}")
        _check_shape(model, "input", inputs[0].shape, self.input_shape)
        _check_shape(model, "output", outputs[0].shape, self.output_shape)
        self._input = inputs[0].name
        self._output = outputs[0].name
        self._out = np.empty(self.output_shape, np.float32)
        self._binding = self.session.io_binding()

    def _do_infer(self, batch: np.ndarray) -> np.ndarray:
        b = self._binding
        b.bind_cpu_input(self._input, np.ascontiguousarray(batch))
        b.bind_output(self._output, "cpu", element_type=np.float32, shape=self.output_shape,
                      buffer_ptr=self._out.ctypes.data)
        self.session.run_with_iobinding(b)
        return self._out


def _check_shape(model: PoseModel, what: str, got: list[Any], want: tuple[int, ...]) -> None:
    """ONNX dims are ints or symbolic names (the views axis); fixed ones must match the card."""
    if len(got) != len(want) or any(isinstance(g, int) and g != w for g, w in zip(got, want, strict=True)):
        raise ModelError(f"{model.onnx_path}: {what} shape {got} does not fit the model card's "
                         f"{list(want)} (views first)")


class TorchEngine(Engine):
    name = "torch"

    def __init__(self, model: PoseModel, views: int, device: str = "cpu") -> None:
        super().__init__(model, views)
        import torch

        from rigstream.inference.checkpoint import load_decoded

        self._torch = torch
        self.device = torch.device(device)
        self.module = load_decoded(model).to(self.device).eval()
        self._out = np.empty(self.output_shape, np.float32)

    def _do_infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.module(torch.from_numpy(batch).to(self.device))
        self._out[...] = out.cpu().numpy()
        return self._out
