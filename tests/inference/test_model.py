"""The keypoint net's decoding, targets and augmentation: coordinates must survive every step."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs torch (pip install -e .[train])")

from rigstream.inference.model import STRIDE, DecodedKeypointNet, NetSpec, make_targets  # noqa: E402
from rigstream.inference.train import Augment, augment_crop, flip_permutation, resize_keypoints  # noqa: E402


class _FixedMaps(torch.nn.Module):
    """Stands in for a KeypointNet: returns the given score and locref maps."""

    def __init__(self, scores: torch.Tensor, locref: torch.Tensor) -> None:
        super().__init__()
        self.spec = NetSpec(keypoints=scores.shape[1])
        self.scores, self.locref = scores, locref

    def forward(self, images):
        return self.scores, self.locref


def _decode(scores, locref, h, w):
    return DecodedKeypointNet(_FixedMaps(scores, locref), h, w)(torch.zeros(scores.shape[0], 1, h, w))


def test_decoding_reads_the_peak_cell_plus_its_offset():
    h, w = 64, 96
    scores = torch.full((1, 2, h // STRIDE, w // STRIDE), -10.0)
    locref = torch.zeros((1, 2, 2, h // STRIDE, w // STRIDE))
    scores[0, 0, 5, 7] = 3.0
    locref[0, 0, :, 5, 7] = torch.tensor([0.25, -0.5])
    scores[0, 1, 0, 0] = 0.0
    out = _decode(scores, locref, h, w)[0]
    # cell (row 5, col 7) centre: x = 7*4 + 1.5, y = 5*4 + 1.5; offsets are in strides
    assert out[0, 0].item() == pytest.approx(7 * 4 + 1.5 + 0.25 * 4)
    assert out[0, 1].item() == pytest.approx(5 * 4 + 1.5 - 0.5 * 4)
    assert out[0, 2].item() == pytest.approx(1 / (1 + np.exp(-3.0)), rel=1e-5)
    assert out[1, :2].tolist() == pytest.approx([1.5, 1.5])
    assert out[1, 2].item() == pytest.approx(0.5)


def test_targets_decode_back_to_the_keypoints():
    h, w = 96, 128
    kp = torch.tensor([[[10.3, 20.7], [100.0, 5.2], [64.5, 90.1], [float("nan"), float("nan")]]])
    t = make_targets(kp, h, w)
    logits = torch.logit(t.scores.clamp(1e-4, 1 - 1e-4))
    out = _decode(logits, t.locref, h, w)[0]
    assert out[:3, :2].numpy() == pytest.approx(kp[0, :3].numpy(), abs=1e-4)
    assert out[3, 2].item() < 0.01  # not visible: no peak
    assert t.locref_weight[0, 3].sum() == 0


def test_resize_keypoints_matches_opencv_resize():
    import cv2

    image = np.zeros((120, 160), np.uint8)
    cv2.circle(image, (101, 37), 3, 255, -1)
    small = cv2.resize(image, (80, 60), interpolation=cv2.INTER_AREA)
    ys, xs = np.nonzero(small > 0)
    wts = small[ys, xs].astype(float)
    centroid = np.array([(xs * wts).sum() / wts.sum(), (ys * wts).sum() / wts.sum()])
    mapped = resize_keypoints(np.array([101.0, 37.0]), 0.5, 0.5)
    assert mapped == pytest.approx(centroid, abs=0.05)


def test_augment_moves_keypoints_with_the_pixels_and_swaps_left_right_on_flip():
    rng = np.random.default_rng(3)
    image = np.full((200, 240), 40, np.uint8)
    kp = np.array([[60.0, 100.0], [120.0, 80.0], [150.0, 130.0]], np.float32)  # left, right, other
    for (x, y), value in zip(kp, (250, 180, 110), strict=True):
        image[int(y) - 2:int(y) + 3, int(x) - 2:int(x) + 3] = value
    perm = flip_permutation(["left", "right", "tail"], [("left", "right")])
    quiet = Augment(brightness=0, contrast=(1, 1), blur_p=0, noise_p=0, background_p=0)
    flips = 0
    for _ in range(40):
        crop, pts = augment_crop(image, kp, 128, rng, quiet, perm)
        for k in range(3):
            if not np.isfinite(pts[k]).all():
                continue
            x, y = np.round(pts[k]).astype(int)
            got = crop[y, x]
            # the label follows its pixels; a flip swaps the names, not the pixels
            expected = {0: (250, 180), 1: (180, 250), 2: (110, 110)}[k]
            assert abs(got - expected[0]) < 25 or abs(got - expected[1]) < 25
            if abs(got - expected[1]) < 25 and expected[0] != expected[1]:
                flips += 1
    assert flips > 0  # flips happened and swapped the left/right labels


def test_flip_permutation_swaps_pairs_only():
    perm = flip_permutation(["a", "l", "r", "b"], [["l", "r"]])
    assert perm.tolist() == [0, 2, 1, 3]
