"""Engines behind one interface; the shipped model; model folders that must be refused."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from rigstream.inference.backends import open_engine
from rigstream.inference.engines import OnnxRuntimeEngine
from rigstream.inference.modeldir import ModelError, load_model


def _sim_batch(model, views=2, seed=5):
    """Fresh simulated frames (unseen motion) at the model's input size."""
    from rigstream.inference.simdata import SimFrames

    frames = SimFrames((640, 480), (model.card.input.width, model.card.input.height))
    images, truth = frames.test_set(views, seed=seed)
    return np.stack(images)[:, None].astype(np.float32), truth, frames


def test_shipped_sim_model_loads_and_describes_itself():
    model = load_model("sim")
    card = model.card
    from rigstream.acquisition.sim_world import KEYPOINTS

    assert card.keypoints == list(KEYPOINTS)
    assert (card.input.width, card.input.height, card.input.channels) == (320, 240, 1)
    assert card.errors["test"]["all"]["median_px"] <= 2.0
    assert model.onnx_path.stat().st_size < 3_000_000  # small enough to live in the repository


def test_onnxruntime_and_torch_agree_on_the_shipped_model():
    pytest.importorskip("torch", reason="needs torch (pip install -e .[train])")
    model = load_model("sim")
    batch, _, _ = _sim_batch(model)
    with open_engine("onnxruntime", model, 2) as ort, open_engine("torch", model, 2) as tch:
        a = ort.infer(batch).copy()
        b = tch.infer(batch).copy()
    assert np.abs(a[..., :2] - b[..., :2]).max() <= 0.05
    assert np.abs(a[..., 2] - b[..., 2]).max() <= 1e-3


def test_shipped_model_finds_the_animal_on_fresh_frames():
    """The acceptance figure: median 2D error <= 2 px (frame pixels) on frames the model never saw."""
    model = load_model("sim")
    from rigstream.inference.simdata import SimFrames

    frames = SimFrames((640, 480), (320, 240))
    images, truth = frames.test_set(40, seed=11)
    errors = []
    with OnnxRuntimeEngine(model, 1) as eng:
        for image, kp in zip(images, truth, strict=True):
            out = eng.infer(image[None, None].astype(np.float32))[0]
            xy = frames.transform.to_frame(out)[:, :2]
            errors.append(np.linalg.norm(xy - kp, axis=1))
    assert np.median(np.concatenate(errors)) <= 2.0


def test_engine_checks_the_batch(tiny_model):
    with OnnxRuntimeEngine(tiny_model, 2) as eng:
        expected = r"expected a batch of \(2, 1, 64, 96\) float32, got \(1, 1, 64, 96\)"
        with pytest.raises(ValueError, match=expected):
            eng.infer(np.zeros((1, 1, 64, 96), np.float32))
        with pytest.raises(ValueError, match="float64"):
            eng.infer(np.zeros((2, 1, 64, 96)))
        out = eng.infer(tiny_model.example_input(2))
        assert out.shape == (2, 3, 3) and out.dtype == np.float32
        assert ((out[..., 2] >= 0) & (out[..., 2] <= 1)).all()


def test_torch_engine_matches_onnxruntime_on_a_fresh_model(tiny_model):
    pytest.importorskip("torch")
    x = tiny_model.example_input(3)
    with open_engine("onnxruntime", tiny_model, 3) as a, open_engine("torch", tiny_model, 3) as b:
        ra, rb = a.infer(x).copy(), b.infer(x).copy()
    same_peak = np.abs(ra[..., :2] - rb[..., :2]).max(axis=-1) < 0.05
    assert same_peak.mean() >= 0.8  # an untrained net can have near-ties; most peaks agree exactly


@pytest.fixture
def model_copy(tiny_model, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny_model.folder, dst)
    return dst


def test_corrupt_onnx_is_refused_with_the_file_named(model_copy):
    (model_copy / "model.onnx").write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(ModelError, match=r"model\.onnx: file does not match the sha256"):
        OnnxRuntimeEngine(load_model(model_copy), 1)
    # garbage that matches its (rewritten) hash still cannot load
    import hashlib

    import yaml

    card = yaml.safe_load((model_copy / "model.yaml").read_text())
    card["onnx_sha256"] = hashlib.sha256((model_copy / "model.onnx").read_bytes()).hexdigest()
    (model_copy / "model.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(ModelError, match=r"model\.onnx: ONNX Runtime cannot load it"):
        OnnxRuntimeEngine(load_model(model_copy), 1)


def test_model_folder_problems_are_named(model_copy, tmp_path):
    with pytest.raises(ModelError, match="model folder not found"):
        load_model(tmp_path / "nowhere")
    (model_copy / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelError, match="empty file"):
        load_model(model_copy)
    (model_copy / "model.yaml").write_text("name: x\nkeypoints: [a]\nbogus: 1\n")
    with pytest.raises(ModelError, match="bogus"):
        load_model(model_copy)
    (model_copy / "model.yaml").unlink()
    with pytest.raises(ModelError, match=r"no model\.yaml"):
        load_model(model_copy)


def test_checkpoint_reload_gives_the_exported_graph(tiny_model):
    torch = pytest.importorskip("torch")
    from rigstream.inference.checkpoint import load_decoded

    dec = load_decoded(tiny_model)
    x = tiny_model.example_input(1)
    with torch.inference_mode():
        a = dec(torch.from_numpy(x)).numpy()
    with OnnxRuntimeEngine(tiny_model, 1) as eng:
        b = eng.infer(x)
    assert np.abs(a[..., 2] - b[..., 2]).max() < 1e-4


def test_unknown_engine_is_refused(tiny_model):
    with pytest.raises(ValueError, match="unknown engine 'openvino'"):
        open_engine("openvino", tiny_model, 1)
