"""Training a KeypointNet: from a DeepLabCut project or from the simulated rig.

Training runs on crops (``crop`` pixels square, at model-input scale) cut around the animal
with a random affine (rotation, scale, horizontal flip with left/right keypoints swapped),
plus photometric noise (brightness, contrast, blur, sensor noise). One crop in five is cut
anywhere in the frame so the net learns that background has no keypoints. The net is fully
convolutional, so the exported graph runs on whole frames at the model's input size.

Coordinates follow OpenCV and DeepLabCut: pixel centres at integer coordinates.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from rigstream.basics import InputError
from rigstream.inference.checkpoint import check_export, save_model_dir
from rigstream.inference.metrics import pixel_errors
from rigstream.inference.model import DecodedKeypointNet, KeypointNet, NetSpec, loss_fn, make_targets
from rigstream.inference.modeldir import PoseModel

logger = logging.getLogger(__name__)


@dataclass
class Augment:
    rotation_deg: float = 25.0
    scale: tuple[float, float] = (0.8, 1.2)
    flip: bool = True
    brightness: float = 30.0
    contrast: tuple[float, float] = (0.7, 1.3)
    blur_p: float = 0.2
    noise_p: float = 0.3
    noise_sd: float = 8.0
    background_p: float = 0.2
    """Share of crops cut anywhere in the frame instead of around the animal."""


@dataclass
class TrainConfig:
    iterations: int = 3000
    batch: int = 16
    crop: int = 160
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    widths: tuple[int, int, int, int] = (16, 24, 48, 96)
    blocks: tuple[int, int, int] = (2, 3, 3)
    augment: Augment = field(default_factory=Augment)


def resize_keypoints(kp: np.ndarray, scale_x: float, scale_y: float) -> np.ndarray:
    """Keypoints (…, 2) px of an image resized by (scale_x, scale_y), pixel centres at integers."""
    out = np.empty_like(kp)
    out[..., 0] = (kp[..., 0] + 0.5) * scale_x - 0.5
    out[..., 1] = (kp[..., 1] + 0.5) * scale_y - 0.5
    return out


def flip_permutation(keypoints: list[str], left_right: list[tuple[str, str]] | list[list[str]]) -> np.ndarray:
    perm = np.arange(len(keypoints))
    index = {k: i for i, k in enumerate(keypoints)}
    for a, b in left_right:
        perm[index[a]], perm[index[b]] = index[b], index[a]
    return perm


def augment_crop(image: np.ndarray, kp: np.ndarray, crop: int, rng: np.random.Generator, aug: Augment,
                 flip_perm: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """One training crop: image (H, W[, 3]) uint8, kp (K, 2) px NaN-invisible ->
    (crop, crop[, 3]) uint8 and (K, 2) px in the crop (NaN outside it)."""
    h, w = image.shape[:2]
    visible = np.isfinite(kp).all(axis=1)
    if visible.any() and rng.random() >= aug.background_p:
        centre = kp[visible].mean(axis=0) + rng.uniform(-crop / 3, crop / 3, 2)
    else:
        centre = np.array([rng.uniform(0, w - 1), rng.uniform(0, h - 1)])
    angle = rng.uniform(-aug.rotation_deg, aug.rotation_deg)
    scale = math.exp(rng.uniform(math.log(aug.scale[0]), math.log(aug.scale[1])))
    m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    m[:, 2] += (crop - 1) / 2.0 - centre  # centre of the source lands at the crop centre
    flipped = aug.flip and flip_perm is not None and rng.random() < 0.5
    if flipped:
        m = np.array([[-1.0, 0.0, crop - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    out = cv2.warpAffine(image, m, (crop, crop), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    pts = kp @ m[:, :2].T + m[:, 2]
    if flipped:
        pts = pts[flip_perm]
    inside = (pts >= 0).all(axis=1) & (pts <= crop - 1).all(axis=1)
    pts[~inside] = np.nan
    # Photometric.
    f = out.astype(np.float32)
    f = (f - 128.0) * rng.uniform(*aug.contrast) + 128.0 + rng.uniform(-aug.brightness, aug.brightness)
    if rng.random() < aug.blur_p:
        f = cv2.GaussianBlur(f, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < aug.noise_p:
        f += rng.normal(0.0, rng.uniform(0, aug.noise_sd), f.shape).astype(np.float32)
    return np.clip(f, 0, 255), pts.astype(np.float32)


SampleFn = Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]]
"""Draws one (image uint8 (H, W[, 3]) at model-input scale, keypoints (K, 2) px) pair."""


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    a = np.stack(images)
    a = a[:, None] if a.ndim == 3 else a.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def train_net(sample: SampleFn, keypoints: list[str], channels: int, cfg: TrainConfig,
              left_right: list | None = None, progress: bool = True,
              on_step: Callable[[int, float], None] | None = None) -> tuple[KeypointNet, dict[str, Any]]:
    """Train a fresh net; returns it with a record of the run (iterations, seconds, loss)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(cfg.seed)
    spec = NetSpec(keypoints=len(keypoints), channels=channels, widths=cfg.widths, blocks=cfg.blocks,
                   mean=(0.5,) * channels, std=(0.25,) * channels)
    net = KeypointNet(spec).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.iterations,
                                                pct_start=0.05)
    perm = flip_permutation(keypoints, left_right) if left_right else None
    bar = _progress(cfg.iterations, progress)
    started = time.monotonic()
    losses: list[float] = []
    for step in range(cfg.iterations):
        imgs, kps = [], []
        for _ in range(cfg.batch):
            image, kp = sample(rng)
            im, pts = augment_crop(image, kp, cfg.crop, rng, cfg.augment, perm)
            imgs.append(im)
            kps.append(pts)
        x = _to_tensor(imgs)
        targets = make_targets(torch.from_numpy(np.stack(kps)), cfg.crop, cfg.crop, spec.stride)
        scores, locref = net(x)
        loss = loss_fn(scores, locref, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar(step, float(np.mean(losses[-50:])))
        if on_step:
            on_step(step, losses[-1])
    bar(cfg.iterations, float(np.mean(losses[-50:])), done=True)
    record = {"iterations": cfg.iterations, "batch": cfg.batch, "crop_px": cfg.crop, "lr": cfg.lr,
              "seed": cfg.seed, "seconds": round(time.monotonic() - started, 1),
              "final_loss": round(float(np.mean(losses[-100:])), 5),
              "augment": asdict(cfg.augment), "threads": torch.get_num_threads()}
    return net.eval(), record


def _progress(total: int, enabled: bool) -> Callable[..., None]:
    """A tqdm bar on stderr when tqdm is installed, else a line every 5%."""
    if not enabled:
        return lambda *a, **k: None
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    if tqdm is not None:
        bar = tqdm(total=total, unit="it", file=sys.stderr, dynamic_ncols=True, desc="train",
                   mininterval=1.0 if sys.stderr.isatty() else 30.0)

        def update(step: int, loss: float, done: bool = False) -> None:
            if done:
                bar.close()
                return
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(loss=f"{loss:.4f}")
        return update
    every = max(1, total // 20)

    def plain(step: int, loss: float, done: bool = False) -> None:
        if done or step % every == 0:
            print(f"train: {step}/{total} loss {loss:.4f}", file=sys.stderr, flush=True)
    return plain


# -- prediction and errors ---------------------------------------------------------------


def predict(net: KeypointNet, images: list[np.ndarray], batch: int = 8) -> np.ndarray:
    """Run a net on whole frames (any size: padded to a multiple of 16) -> (N, K, 3)."""
    out = []
    with torch.inference_mode():
        decoders: dict[tuple[int, int], DecodedKeypointNet] = {}
        for i in range(0, len(images), batch):
            chunk = images[i:i + batch]
            h, w = chunk[0].shape[:2]
            ph, pw = -(-h // 16) * 16, -(-w // 16) * 16
            dec = decoders.get((ph, pw))
            if dec is None:
                dec = decoders[(ph, pw)] = DecodedKeypointNet(net.eval(), ph, pw).eval()
            padded = [_pad(im, ph, pw) for im in chunk]
            out.append(dec(_to_tensor(padded)).numpy())
    return np.concatenate(out) if out else np.zeros((0, net.spec.keypoints, 3), np.float32)


def _pad(image: np.ndarray, h: int, w: int) -> np.ndarray:
    if image.shape[:2] == (h, w):
        return image
    pad = ((0, h - image.shape[0]), (0, w - image.shape[1])) + (((0, 0),) if image.ndim == 3 else ())
    return np.pad(image, pad, mode="edge")


# -- the two training entry points used by ``rigstream train`` ---------------------------------
# Each checks first what could fail after the training (the exporter's packages, the model
# folder, the inputs), so a run of half an hour never ends in a traceback.


def train_sim(rig: Any, out: Path, input_wh: tuple[int, int], cfg: TrainConfig, test_frames: int = 200,
              progress: bool = True, command: str = "") -> tuple[PoseModel, dict[str, Any]]:
    """Train on frames rendered by the simulated rig ``rig`` (a RigConfig); the model takes the
    rig's frames resized to ``input_wh``. Errors are measured on fresh frames in frame pixels."""
    from rigstream.acquisition import sim_world
    from rigstream.inference.simdata import TEST_SEEDS, TRAIN_SEEDS, SimFrames

    check_export(out)
    cam = rig.cameras[0]
    sizes = {(c.width, c.height) for c in rig.cameras}
    if len(sizes) > 1:
        raise InputError(f"rig {rig.name}: train --sim needs cameras of one size, got {sorted(sizes)}")
    frames = SimFrames((cam.width, cam.height), input_wh, channels=cam.channels)
    keypoints = list(sim_world.KEYPOINTS)
    net, record = train_net(frames, keypoints, cam.channels, cfg, left_right=list(sim_world.LEFT_RIGHT),
                            progress=progress)
    errors = {}
    for split, seed, seeds in (("train", 0, TRAIN_SEEDS), ("test", 1, TEST_SEEDS)):
        images, truth = frames.test_set(test_frames, seed, seeds)
        pred = predict(net, images)
        full = np.stack([frames.transform.to_frame(p) for p in pred])
        errors[split] = pixel_errors(full, truth, keypoints)
    record["command"] = command
    record.update({"data": f"simulated rig {rig.name}: rings of 2-6 cameras at {cam.width}x{cam.height}, "
                           f"motion seeds {TRAIN_SEEDS.start}-{TRAIN_SEEDS.stop - 1} (test: unseen seeds)",
                   "frames_test": test_frames, "error_units": "frame pixels"})
    model = save_model_dir(out, net, name="sim", keypoints=keypoints, height=input_wh[1], width=input_wh[0],
                           skeleton=[list(e) for e in sim_world.SKELETON],
                           left_right=[list(p) for p in sim_world.LEFT_RIGHT], training=record,
                           errors=errors)
    return model, errors


def train_dlc(project: Path, out: Path, cfg: TrainConfig, test_fraction: float = 0.2,
              progress: bool = True, command: str = "") -> tuple[PoseModel, dict[str, Any]]:
    """Train on a DeepLabCut project's labeled frames with a held-out split (saved as
    ``split.json`` in the model folder); the model takes whole frames at the project's size."""
    from rigstream.inference import dlc

    check_export(out)
    data = dlc.load_dlc_project(project)
    sizes = set(data.image_sizes)
    if len(sizes) != 1:
        raise InputError(f"{project}: labeled frames come in several sizes {sorted(sizes)}; "
                         f"one model input size is needed")
    width, height = sizes.pop()
    if width % 16 or height % 16:
        raise InputError(f"{project}: frames are {width}x{height}; the model needs sides that are "
                         f"multiples of 16 (crop the frames first)")
    train_idx, test_idx = dlc.train_test_split(data, test_fraction, cfg.seed)
    dlc.write_split(out / "split.json", data, train_idx, test_idx)
    channels = 1
    images = [dlc.load_image(p, channels) for p in data.images]
    kps = data.keypoints_px

    def sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        i = train_idx[int(rng.integers(len(train_idx)))]
        return images[i], kps[i]

    net, record = train_net(sample, data.keypoints, channels, cfg, left_right=data.left_right,
                            progress=progress)
    errors = {}
    for split, idx in (("train", train_idx), ("test", test_idx)):
        pred = predict(net, [images[i] for i in idx])
        errors[split] = pixel_errors(pred, kps[idx], data.keypoints)
    record["command"] = command
    record.update({"data": f"DeepLabCut project {data.task} ({data.scorer}): {len(data.images)} labeled "
                           f"frames at {width}x{height}",
                   "project": str(Path(project).resolve()), "frames_train": len(train_idx),
                   "frames_test": len(test_idx), "split": "split.json", "error_units": "frame pixels"})
    model = save_model_dir(out, net, name=data.task or Path(project).name, keypoints=data.keypoints,
                           height=height, width=width, skeleton=[list(e) for e in data.skeleton],
                           left_right=[list(p) for p in data.left_right], training=record, errors=errors)
    return model, errors
