"""Saving a trained net as a model folder (checkpoint, ONNX export, card) and loading it back."""

from __future__ import annotations

import importlib.util
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from rigstream.basics import InputError, write_error
from rigstream.inference.model import DecodedKeypointNet, KeypointNet, NetSpec
from rigstream.inference.modeldir import (
    InputSpec,
    ModelCard,
    ModelError,
    Normalization,
    PoseModel,
    sha256_file,
    write_card,
)

logger = logging.getLogger(__name__)

OPSET = 17

EXPORT_PACKAGES = ("onnx",)
"""What torch's ONNX exporter imports only when it runs, at the very end of a training run
(torch itself is imported with this module)."""


def check_export(folder: Path) -> None:
    """Raise InputError now, in one line, for what would otherwise fail only at export, after
    the whole training: a package the exporter needs, or a model folder that cannot be written
    (it is created, and a file made in it)."""
    missing = [name for name in EXPORT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise InputError(f"exporting the model to ONNX needs the package(s) {', '.join(missing)}, which "
                         f"are not installed (pip install -e .[train]); nothing was trained")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        why = write_error(folder)
    except OSError as exc:
        why = exc.strerror or str(exc)
    if why:
        raise InputError(f"{folder}: cannot write the model folder there ({why}); nothing was trained")


def export_onnx(net: KeypointNet, height: int, width: int, path: Path) -> None:
    """Export the decoded graph with a dynamic views axis: (views, C, H, W) -> (views, K, 3)."""
    decoded = DecodedKeypointNet(net, height, width).eval()
    example = torch.zeros(2, net.spec.channels, height, width)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export, which needs
        # onnxscript; the graph here is static and the classic exporter gives a plainer one.
        warnings.simplefilter("ignore")
        torch.onnx.export(decoded, (example,), buf, dynamo=False, opset_version=OPSET,
                          input_names=["images"], output_names=["keypoints"],
                          dynamic_axes={"images": {0: "views"}, "keypoints": {0: "views"}})
    path.write_bytes(buf.getvalue())


def save_model_dir(folder: Path, net: KeypointNet, *, name: str, keypoints: list[str], height: int,
                   width: int, skeleton: list[list[str]] | None = None,
                   left_right: list[list[str]] | None = None, training: dict[str, Any] | None = None,
                   errors: dict[str, Any] | None = None) -> PoseModel:
    folder.mkdir(parents=True, exist_ok=True)
    net = net.eval().cpu()
    spec = net.spec
    torch.save({"spec": spec.as_dict(), "state_dict": net.state_dict(), "keypoints": keypoints,
                "input_hw": [height, width]}, folder / "model.pt")
    export_onnx(net, height, width, folder / "model.onnx")
    card = ModelCard(
        name=name, keypoints=list(keypoints), skeleton=[list(e) for e in skeleton or []],
        left_right=[list(p) for p in left_right or []],
        input=InputSpec(width=width, height=height, channels=spec.channels),  # type: ignore[arg-type]
        normalization=Normalization(mean=list(spec.mean), std=list(spec.std)),
        stride=spec.stride, architecture={"name": "KeypointNet", **spec.as_dict(),
                                          "parameters": sum(p.numel() for p in net.parameters())},
        training=training or {}, errors=errors or {},
        onnx_sha256=sha256_file(folder / "model.onnx"))
    write_card(card, folder)
    return PoseModel(folder, card)


def load_net(model: PoseModel) -> KeypointNet:
    path = model.checkpoint_path
    if not path.is_file():
        raise ModelError(f"{path}: torch checkpoint missing (needed by the torch engine)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        net = KeypointNet(NetSpec.from_dict(ckpt["spec"]))
        net.load_state_dict(ckpt["state_dict"])
    except Exception as exc:
        raise ModelError(f"{path}: cannot load the checkpoint: {type(exc).__name__}: {exc}") from None
    if list(ckpt.get("keypoints", [])) != model.keypoints:
        raise ModelError(f"{path}: checkpoint keypoints {ckpt.get('keypoints')} differ from model.yaml")
    return net.eval()


def load_decoded(model: PoseModel) -> DecodedKeypointNet:
    h, w = model.input_hw
    return DecodedKeypointNet(load_net(model), h, w).eval()
