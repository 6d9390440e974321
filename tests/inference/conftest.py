"""Fixtures for the inference tests: small model folders made on the spot (untrained nets
with fixed seeds, so engines can be compared without a shipped model)."""

from __future__ import annotations

from pathlib import Path

import pytest


def make_model_dir(folder: Path, keypoints: int = 3, height: int = 64, width: int = 96,
                   channels: int = 1, seed: int = 0):
    torch = pytest.importorskip("torch", reason="model folders are made with torch (pip install -e .[train])")
    from rigstream.inference.checkpoint import save_model_dir
    from rigstream.inference.model import KeypointNet, NetSpec

    torch.manual_seed(seed)
    spec = NetSpec(keypoints=keypoints, channels=channels, widths=(8, 8, 16, 16), blocks=(1, 1, 1),
                   expand=2, mean=(0.5,) * channels, std=(0.25,) * channels)
    net = KeypointNet(spec)
    # Random (not zero) heads, so peaks and offsets differ between keypoints and views.
    torch.nn.init.normal_(net.locref.weight, std=0.5)
    return save_model_dir(folder, net, name="tiny", keypoints=[f"kp{i}" for i in range(keypoints)],
                          height=height, width=width)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A loaded PoseModel: 3 keypoints, 96x64 mono input."""
    return make_model_dir(tmp_path_factory.mktemp("tiny_model"))
