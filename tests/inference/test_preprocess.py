from __future__ import annotations

import numpy as np
import pytest

from rigstream.inference.preprocess import ViewError, ViewTransform


def test_round_trip_through_crop_and_resize():
    tf = ViewTransform.make("cam0", (640, 480), (320, 240), (0, 0, 640, 480))
    pts = np.array([[100.0, 50.0, 0.9], [639.0, 479.0, 0.5]], np.float32)
    back = tf.to_frame(np.concatenate([tf.to_input(pts[:, :2]), pts[:, 2:]], axis=1).astype(np.float32))
    assert back == pytest.approx(pts, abs=1e-4)
    crop = ViewTransform.make("cam0", (640, 480), (160, 120), (100, 60, 320, 240))
    assert crop.to_frame(np.array([[0.0, 0.0, 1.0]], np.float32))[0, :2] == pytest.approx([100.5, 60.5])


def test_apply_fills_the_batch_slot():
    frame = np.arange(480 * 640, dtype=np.uint32).reshape(480, 640).astype(np.uint8)
    out = np.zeros((1, 240, 320), np.float32)
    ViewTransform.make("cam0", (640, 480), (320, 240)).apply(frame, out)
    import cv2

    assert np.array_equal(out[0], cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA))
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[..., 1] = 200
    out3 = np.zeros((3, 480, 640), np.float32)
    ViewTransform.make("cam0", (640, 480), (640, 480)).apply(rgb, out3)
    assert out3[1].min() == 200 and out3[0].max() == 0
    mono_from_rgb = np.zeros((1, 480, 640), np.float32)
    ViewTransform.make("cam0", (640, 480), (640, 480)).apply(rgb, mono_from_rgb)
    assert 100 < mono_from_rgb.mean() < 130  # luma of pure green


def test_views_the_model_cannot_take_are_named():
    with pytest.raises(ViewError, match=r"camera cam2: the model takes 320x240 .* camera gives 640x360"):
        ViewTransform.make("cam2", (640, 360), (320, 240))
    with pytest.raises(ViewError, match=r"camera cam0: crop \[600, 0, 100, 75\] does not fit its 640x480"):
        ViewTransform.make("cam0", (640, 480), (320, 240), (600, 0, 100, 75))
