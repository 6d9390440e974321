"""A model folder: ``model.onnx`` (the decoded graph), ``model.yaml`` (the model card) and
``model.pt`` (the torch checkpoint). Loading checks the card strictly and the files exist and
agree, so a bad model is a one-line error before a session starts.

Importing this module needs no torch: the ONNX Runtime path of a laptop or a rig host reads
only the card and the ONNX file.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

from rigstream.config import InputError

CARD_FORMAT = "rigstream-pose/1"


class ModelError(InputError):
    """A model folder that cannot be used; the message names the folder and what is wrong."""


class _Card(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class InputSpec(_Card, kw_only=True):
    width: int
    height: int
    channels: Literal[1, 3]
    dtype: Literal["float32"] = "float32"
    layout: Literal["NCHW"] = "NCHW"
    range: str = "0-255 raw pixel values"


class Normalization(_Card, kw_only=True):
    mean: list[float]
    """Per-channel mean of pixel / 255."""
    std: list[float]
    applied: Literal["in-graph"] = "in-graph"


class OutputSpec(_Card, kw_only=True):
    shape: list[str] = msgspec.field(default_factory=lambda: ["views", "keypoints", "3"])
    fields: list[str] = msgspec.field(default_factory=lambda: ["x", "y", "confidence"])
    units: str = "input-image pixels, pixel centres at integer coordinates"


class ModelCard(_Card, kw_only=True):
    format: Literal["rigstream-pose/1"] = CARD_FORMAT
    name: str
    keypoints: list[str]
    skeleton: list[list[str]] = []
    left_right: list[list[str]] = []
    input: InputSpec
    normalization: Normalization
    output: OutputSpec = OutputSpec()
    stride: int = 4
    architecture: dict[str, Any] = {}
    training: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    onnx: str = "model.onnx"
    onnx_sha256: str = ""
    checkpoint: str = "model.pt"


@dataclass(frozen=True)
class PoseModel:
    """A loaded model folder (card checked, files present)."""

    folder: Path
    card: ModelCard

    @property
    def onnx_path(self) -> Path:
        return self.folder / self.card.onnx

    @property
    def checkpoint_path(self) -> Path:
        return self.folder / self.card.checkpoint

    @property
    def keypoints(self) -> list[str]:
        return list(self.card.keypoints)

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.card.input.height, self.card.input.width

    def input_shape(self, views: int) -> tuple[int, int, int, int]:
        return (views, self.card.input.channels, self.card.input.height, self.card.input.width)

    def output_shape(self, views: int) -> tuple[int, int, int]:
        return (views, len(self.card.keypoints), 3)

    def onnx_bytes(self) -> bytes:
        data = self.onnx_path.read_bytes()
        if self.card.onnx_sha256 and hashlib.sha256(data).hexdigest() != self.card.onnx_sha256:
            raise ModelError(f"{self.onnx_path}: file does not match the sha256 in model.yaml "
                             f"(corrupt or replaced after training)")
        return data

    def example_input(self, views: int, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, self.input_shape(views)).astype(np.float32)


BUILTIN_MODELS = ("sim",)


def builtin_model_dir(name: str) -> Path:
    return Path(str(resources.files("rigstream").joinpath("models", name)))


def resolve_model_path(value: str, base: Path | None = None) -> Path:
    """A rig file's ``pose.model``: a shipped model's name (``sim``) or a folder path, relative
    to the rig file's folder."""
    if value in BUILTIN_MODELS:
        return builtin_model_dir(value)
    p = Path(value).expanduser()
    if not p.is_absolute() and base is not None:
        p = base / p
    return p


def load_model(folder: str | Path) -> PoseModel:
    folder = Path(folder)
    if folder.name in BUILTIN_MODELS and not folder.exists():
        folder = builtin_model_dir(folder.name)
    card_path = folder / "model.yaml"
    if not folder.is_dir():
        raise ModelError(f"{folder}: model folder not found")
    if not card_path.is_file():
        raise ModelError(f"{folder}: no model.yaml (the model card written by rigstream train)")
    card = parse_card(card_path.read_text(), str(card_path))
    onnx_path = folder / card.onnx
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path}: missing (named by {card_path})")
    if onnx_path.stat().st_size == 0:
        raise ModelError(f"{onnx_path}: empty file")
    return PoseModel(folder, card)


def parse_card(text: str, source: str) -> ModelCard:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModelError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ModelError(f"{source}: expected a mapping")
    try:
        card = msgspec.convert(doc, type=ModelCard, strict=True)
    except msgspec.ValidationError as exc:
        raise ModelError(f"{source}: {exc}") from None
    if len(set(card.keypoints)) != len(card.keypoints) or not card.keypoints:
        raise ModelError(f"{source}: keypoints must be a non-empty list of unique names")
    norm = card.normalization
    if len(norm.mean) != card.input.channels or len(norm.std) != card.input.channels:
        raise ModelError(f"{source}: normalization needs {card.input.channels} mean/std values")
    return card


def write_card(card: ModelCard, folder: Path) -> Path:
    import yaml

    path = folder / "model.yaml"
    doc = msgspec.to_builtins(card)
    path.write_text(yaml.safe_dump(doc, sort_keys=False, width=100))
    return path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
