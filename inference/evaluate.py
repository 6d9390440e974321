"""Pixel error of a model folder against a DeepLabCut project's labels, run through an engine
(the same path the rig uses), and the inference benchmark."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from rigstream.basics import InputError
from rigstream.inference import dlc
from rigstream.inference.backends import ENGINES, open_engine
from rigstream.inference.metrics import pixel_errors
from rigstream.inference.modeldir import ModelError, load_model
from rigstream.inference.preprocess import ViewTransform
from rigstream.latency import latency_stats


def evaluate_dlc(model_dir: str | Path, project: str | Path, split: str = "all",
                 engine: str = "onnxruntime") -> dict[str, Any]:
    """``split``: ``all`` labeled frames, or ``test``/``train`` from the model's ``split.json``.
    The engine's package, the model and the labels are all checked before the first frame."""
    if engine == "torch" and importlib.util.find_spec("torch") is None:  # tensorrt says so itself
        raise InputError("evaluate --engine torch needs the torch package (pip install -e .[train])")
    model = load_model(model_dir)
    data = dlc.load_dlc_project(project)
    if data.keypoints != model.keypoints:
        raise ModelError(f"{model.folder}: model keypoints {model.keypoints} differ from the project's "
                         f"{data.keypoints} ({project})")
    if split == "all":
        idx = list(range(len(data)))
    else:
        split_path = model.folder / "split.json"
        if not split_path.is_file():
            raise ModelError(f"{split_path}: missing; --split {split} needs the split saved by rigstream "
                             f"train (use --split all)")
        train, test = dlc.read_split(split_path, data)
        idx = test if split == "test" else train
    channels = model.card.input.channels
    pred = np.full((len(idx), len(model.keypoints), 3), np.nan, np.float32)
    batch = np.zeros(model.input_shape(1), np.float32)
    with open_engine(engine, model, 1) as eng:
        for j, i in enumerate(idx):
            image = dlc.load_image(data.images[i], 3 if channels == 3 else 1)
            h, w = image.shape[:2]
            tf = ViewTransform.make(data.names[i], (w, h), (model.card.input.width, model.card.input.height))
            tf.apply(image, batch[0])
            tf.to_frame(eng.infer(batch)[0], pred[j])
    errors = pixel_errors(pred, data.keypoints_px[idx], data.keypoints)
    return {"model": str(model.folder), "project": str(Path(project).resolve()), "split": split,
            "engine": engine, "frames": len(idx), "keypoints": data.keypoints, "errors": errors,
            "units": "pixels of the labeled frames",
            "predictions": {data.names[i]: pred[j].round(3).tolist() for j, i in enumerate(idx)}}


def bench_inference(model_dir: str | Path, engines: list[str], views: int, iterations: int = 200,
                    warmup: int = 20, threads: int | None = None) -> dict[str, Any]:
    """Latency per batch of ``views`` for each engine, interleaved round by round so that the
    machine's load falls on all engines alike."""
    model = load_model(model_dir)
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise ValueError(f"unknown engine(s) {unknown} (choose from {', '.join(ENGINES)})")
    opened = {}
    for name in engines:
        opts: dict[str, Any] = {}
        if name == "onnxruntime" and threads:
            opts["threads"] = threads
        if name == "torch" and threads:
            import torch

            torch.set_num_threads(threads)
        opened[name] = open_engine(name, model, views, **opts)
    x = model.example_input(views)
    times: dict[str, list[float]] = {name: [] for name in engines}
    outputs = {}
    try:
        for _ in range(warmup):
            for eng in opened.values():
                eng.infer(x)
        for _ in range(iterations):
            for name, eng in opened.items():
                t = time.perf_counter()
                eng.infer(x)
                times[name].append((time.perf_counter() - t) * 1e3)
        for name, eng in opened.items():
            outputs[name] = eng.infer(x).copy()
    finally:
        for eng in opened.values():
            eng.close()
    result: dict[str, Any] = {
        "model": model.card.name, "input": list(model.input_shape(views)), "views": views,
        "iterations": iterations, "threads": threads, "engines": {}}
    for name, ts in times.items():
        latency = latency_stats(ts)
        result["engines"][name] = {"latency_ms": latency, "framesets_per_s": round(1e3 / latency["p50"], 1)}
    if len(outputs) > 1:
        names = list(outputs)
        ref = outputs[names[0]]
        result["max_keypoint_difference_px"] = {
            f"{names[0]} vs {n}": round(float(np.abs(outputs[n][..., :2] - ref[..., :2]).max()), 5)
            for n in names[1:]}
    if len(engines) >= 2:
        a, b = engines[0], engines[1]
        result[f"ratio_p50_{b}_over_{a}"] = round(
            result["engines"][b]["latency_ms"]["p50"] / result["engines"][a]["latency_ms"]["p50"], 3)
    return result


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2))
