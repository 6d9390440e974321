"""Training end to end on small inputs: the commands a lab runs, with real files."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

torch = pytest.importorskip("torch", reason="training needs torch (pip install -e .[train])")

from rigstream.app.cli import main  # noqa: E402
from rigstream.inference.modeldir import load_model  # noqa: E402
from rigstream.inference.train import Augment, TrainConfig, train_net  # noqa: E402

PARTS = ["nose", "left_ear", "right_ear"]


def blob_project(root, n=10, w=64, h=48, seed=0):
    """A DeepLabCut project whose keypoints are bright blobs of three brightnesses."""
    rng = np.random.default_rng(seed)
    (root / "labeled-data" / "v1").mkdir(parents=True)
    (root / "config.yaml").write_text(yaml.safe_dump(
        {"Task": "blobs", "scorer": "me", "bodyparts": PARTS, "skeleton": [["nose", "left_ear"]],
         "multianimalproject": False}))
    rows, index = [], []
    for i in range(n):
        image = np.full((h, w), 30, np.uint8)
        pts = rng.uniform([6, 6], [w - 7, h - 7], (3, 2))
        for (x, y), value in zip(pts, (250, 170, 110), strict=True):
            cv2.circle(image, (round(x), round(y)), 2, value, -1)
        name = f"img{i:03d}.png"
        cv2.imwrite(str(root / "labeled-data" / "v1" / name), image)
        index.append(f"labeled-data/v1/{name}")
        rows.append(np.round(pts, 0).ravel())
    cols = pd.MultiIndex.from_product([["me"], PARTS, ["x", "y"]], names=["scorer", "bodyparts", "coords"])
    labels = root / "labeled-data" / "v1" / "CollectedData_me.csv"
    pd.DataFrame(rows, index=index, columns=cols).to_csv(labels)
    return root


def test_training_lowers_the_loss():
    rng_img = np.random.default_rng(1)
    image = np.full((64, 64), 20, np.uint8)
    cv2.circle(image, (40, 22), 3, 255, -1)
    kp = np.array([[40.0, 22.0]], np.float32)
    losses = []
    cfg = TrainConfig(iterations=60, batch=4, crop=32, lr=3e-3, widths=(8, 8, 16, 16), blocks=(1, 1, 1),
                      augment=Augment(rotation_deg=0, flip=False, background_p=0))
    train_net(lambda rng: (image + rng_img.integers(0, 3, image.shape).astype(np.uint8), kp), ["dot"], 1,
              cfg, progress=False, on_step=lambda step, loss: losses.append(loss))
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])


def test_train_and_evaluate_a_deeplabcut_project(tmp_path, capsys):
    project = blob_project(tmp_path / "proj")
    out = tmp_path / "model"
    assert main(["train", "--dlc-project", str(project), "--out", str(out), "--iterations", "30",
                 "--batch", "4", "--crop", "32", "--quiet", "--test-fraction", "0.3"]) == 0
    table = capsys.readouterr().out
    assert "train mean" in table and "test mean" in table and "left_ear" in table
    model = load_model(out)
    assert model.keypoints == PARTS
    assert (model.card.input.width, model.card.input.height) == (64, 48)
    assert model.card.left_right == [["left_ear", "right_ear"]]
    assert model.card.training["frames_train"] == 7 and model.card.training["frames_test"] == 3
    assert (out / "model.pt").is_file() and (out / "split.json").is_file()
    split = json.loads((out / "split.json").read_text())
    assert len(split["test"]) == 3 and not set(split["test"]) & set(split["train"])
    assert main(["evaluate", "--model", str(out), "--dlc-project", str(project), "--split", "test"]) == 0
    report = json.loads((out / "evaluation-test.json").read_text())
    assert report["frames"] == 3 and set(report["predictions"]) == set(split["test"])
    assert set(report["errors"]) == {*PARTS, "all"}
    assert report["errors"]["all"]["n"] == 9
    # the card's test errors were computed by torch, the evaluation by ONNX Runtime: same model
    assert report["errors"]["all"]["mean_px"] == pytest.approx(model.card.errors["test"]["all"]["mean_px"],
                                                               abs=0.05)


def test_evaluate_refuses_a_project_with_other_keypoints(tmp_path, capsys):
    project = blob_project(tmp_path / "proj", n=4)
    out = tmp_path / "model"
    assert main(["train", "--dlc-project", str(project), "--out", str(out), "--iterations", "2",
                 "--batch", "2", "--crop", "32", "--quiet"]) == 0
    cfg = yaml.safe_load((project / "config.yaml").read_text())
    cfg["bodyparts"] = ["nose", "left_ear", "tail"]
    other = tmp_path / "other"
    blob_project(other, n=4)
    (other / "config.yaml").write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["evaluate", "--model", str(out), "--dlc-project", str(other)]) == 2
    assert "tail" in capsys.readouterr().err


def test_train_sim_writes_a_model_the_rig_can_load(tmp_path, capsys):
    out = tmp_path / "sim"
    assert main(["train", "--sim", "--out", str(out), "--iterations", "3", "--batch", "2", "--crop", "48",
                 "--input-width", "192", "--input-height", "144", "--eval-frames", "4", "--quiet"]) == 0
    model = load_model(out)
    assert (model.card.input.width, model.card.input.height) == (192, 144)
    assert model.card.errors["test"]["all"]["n"] == 4 * 12
    assert "simulated rig" in model.card.training["data"]
    capsys.readouterr()
    assert main(["train", "--sim", "--out", str(out), "--input-scale", "0.25"]) == 2
    assert "160x120 (camera 640x480 x 0.25) needs sides that are multiples of 16" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["dlc", "sim"])
def test_train_without_onnx_fails_at_once_before_any_training_step(tmp_path, capsys, monkeypatch, source):
    """The ONNX export comes after the whole training: without the onnx package, train stops
    first, with one line naming it, and trains nothing."""
    import importlib.util

    from rigstream.inference import train

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx" else real_find_spec(name, *a))

    def no_training(*args, **kwargs):
        raise AssertionError("training started without the onnx package")

    monkeypatch.setattr(train, "train_net", no_training)
    out = tmp_path / "model"
    given = ["--dlc-project", str(blob_project(tmp_path / "proj", n=4))] if source == "dlc" else ["--sim"]
    assert main(["train", *given, "--out", str(out), "--iterations", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rigstream: ") and "needs the package(s) onnx," in err
    assert not (out / "model.pt").exists()


def test_train_into_a_folder_it_cannot_write_fails_at_once(tmp_path, capsys, monkeypatch):
    from rigstream.inference import train

    monkeypatch.setattr(train, "train_net", lambda *a, **k: pytest.fail("training started"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["train", "--sim", "--out", str(blocker / "model"), "--iterations", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rigstream: {blocker / 'model'}: cannot write the model folder there (")


def test_evaluate_with_a_missing_engine_package_fails_in_one_line(tmp_path, capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real_find_spec(name, *a))
    project = blob_project(tmp_path / "proj", n=4)
    assert main(["evaluate", "--model", str(tmp_path / "none"), "--dlc-project", str(project),
                 "--engine", "torch"]) == 2
    assert capsys.readouterr().err == ("rigstream: evaluate --engine torch needs the torch package "
                                       "(pip install -e .[train])\n")
