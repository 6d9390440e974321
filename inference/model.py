"""The keypoint network: a compact heatmap model in plain torch with its decoding built in.

Architecture (``KeypointNet``): a MobileNetV2-style encoder down to stride 16 (inverted
residual blocks, depthwise 3x3), a light top-down decoder back to stride 4 with skip
connections, and two 1x1 heads as in DeepLabCut: score maps (one logit map per keypoint) and
location-refinement offsets (dx, dy per keypoint, in units of ``stride`` input pixels).

``forward`` returns the raw maps (for training); :class:`DecodedKeypointNet` wraps a trained
net with the decoding so that an exported graph maps images to keypoints directly:

    images  (views, C, H, W) float32, raw pixel values 0..255 (normalization is in the graph)
    ->      (views, K, 3)    float32, x and y in input-image pixels (pixel centres at integer
                             coordinates) and confidence in [0, 1] (sigmoid of the peak score)

The decoding uses only max, compare, multiply and sum (no ArgMax/Gather with int64 indices),
so it runs unchanged in ONNX Runtime, TensorRT (FP16 included) and torch. A tie between equal
peaks averages their positions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 4
"""Output stride of the score maps relative to the input image."""


@dataclass(frozen=True)
class NetSpec:
    """Everything needed to rebuild a KeypointNet (stored in the checkpoint and model card)."""

    keypoints: int
    channels: int = 1
    """Input channels: 1 (mono) or 3 (RGB)."""
    widths: tuple[int, int, int, int] = (16, 24, 48, 96)
    """Channels at stride 2/4, 8 and 16 (the decoder reuses them)."""
    blocks: tuple[int, int, int] = (2, 3, 3)
    """Inverted-residual blocks at stride 4, 8 and 16."""
    expand: int = 4
    mean: tuple[float, ...] = (0.5,)
    """Per-channel mean of pixel/255, subtracted in the graph."""
    std: tuple[float, ...] = (0.25,)
    stride: int = STRIDE

    def as_dict(self) -> dict:
        return {"keypoints": self.keypoints, "channels": self.channels, "widths": list(self.widths),
                "blocks": list(self.blocks), "expand": self.expand, "mean": list(self.mean),
                "std": list(self.std), "stride": self.stride}

    @classmethod
    def from_dict(cls, d: dict) -> NetSpec:
        return cls(keypoints=int(d["keypoints"]), channels=int(d["channels"]),
                   widths=tuple(d["widths"]), blocks=tuple(d["blocks"]), expand=int(d["expand"]),
                   mean=tuple(d["mean"]), std=tuple(d["std"]), stride=int(d["stride"]))


def _conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            _conv_bn(cin, hidden, 1),
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            _conv_bn(hidden, cout, 1, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def _stage(cin: int, cout: int, n: int, expand: int) -> nn.Sequential:
    return nn.Sequential(*[InvertedResidual(cin if i == 0 else cout, cout, 2 if i == 0 else 1, expand)
                           for i in range(n)])


class _Up(nn.Module):
    """Upsample x2 (nearest), project, add the skip, refine with a depthwise-separable conv."""

    def __init__(self, cin: int, cskip: int) -> None:
        super().__init__()
        self.project = _conv_bn(cin, cskip, 1)
        self.refine = nn.Sequential(_conv_bn(cskip, cskip, 3, groups=cskip), _conv_bn(cskip, cskip, 1))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(self.project(x), scale_factor=2.0, mode="nearest")
        return self.refine(x + skip)


class KeypointNet(nn.Module):
    def __init__(self, spec: NetSpec) -> None:
        super().__init__()
        if spec.stride != STRIDE:
            raise ValueError(f"KeypointNet has output stride {STRIDE}, spec asks for {spec.stride}")
        if len(spec.mean) != spec.channels or len(spec.std) != spec.channels:
            raise ValueError(f"mean/std need {spec.channels} values, got {spec.mean} / {spec.std}")
        self.spec = spec
        w2, w4, w8, w16 = spec.widths
        self.stem = nn.Sequential(_conv_bn(spec.channels, w2, 3, 2), _conv_bn(w2, w2, 3, groups=w2),
                                  _conv_bn(w2, w2, 1))
        self.s4 = _stage(w2, w4, spec.blocks[0], spec.expand)
        self.s8 = _stage(w4, w8, spec.blocks[1], spec.expand)
        self.s16 = _stage(w8, w16, spec.blocks[2], spec.expand)
        self.up8 = _Up(w16, w8)
        self.up4 = _Up(w8, w4)
        self.scores = nn.Conv2d(w4, spec.keypoints, 1)
        self.locref = nn.Conv2d(w4, 2 * spec.keypoints, 1)
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, -1, 1, 1) * 255.0, persistent=False)
        self.register_buffer("inv_std", 1.0 / (torch.tensor(spec.std).view(1, -1, 1, 1) * 255.0),
                             persistent=False)
        nn.init.constant_(self.scores.bias, -4.0)  # start near "nothing here"
        nn.init.zeros_(self.locref.weight)
        nn.init.zeros_(self.locref.bias)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (N, C, H, W) raw 0..255 with H, W multiples of 16 -> (scores (N, K, H/4, W/4)
        logits, locref (N, K, 2, H/4, W/4) offsets in units of the stride)."""
        x = (images - self.mean) * self.inv_std
        f4 = self.s4(self.stem(x))
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        y = self.up4(self.up8(f16, f8), f4)
        n, _, h, w = y.shape
        return self.scores(y), self.locref(y).view(n, -1, 2, h, w)


class DecodedKeypointNet(nn.Module):
    """A trained KeypointNet plus its decoding, for export: images -> (views, K, 3)."""

    def __init__(self, net: KeypointNet, height: int, width: int) -> None:
        super().__init__()
        check_input_size(height, width)
        self.net = net
        s = net.spec.stride
        h, w = height // s, width // s
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        # Centre of each score-map cell in input pixels.
        self.register_buffer("cx", (xs.reshape(1, 1, -1) * s + (s - 1) / 2.0))
        self.register_buffer("cy", (ys.reshape(1, 1, -1) * s + (s - 1) / 2.0))
        self.stride = float(s)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores, locref = self.net(images)
        n, k = scores.shape[:2]
        flat = scores.reshape(n, k, -1)
        peak = flat.amax(dim=2, keepdim=True)
        mask = (flat >= peak).to(flat.dtype)
        count = mask.sum(dim=2)
        loc = locref.reshape(n, k, 2, -1)
        dx = (mask * loc[:, :, 0]).sum(dim=2) / count
        dy = (mask * loc[:, :, 1]).sum(dim=2) / count
        x = (mask * self.cx).sum(dim=2) / count + dx * self.stride
        y = (mask * self.cy).sum(dim=2) / count + dy * self.stride
        conf = torch.sigmoid(peak.squeeze(2))
        return torch.stack([x, y, conf], dim=2)


def check_input_size(height: int, width: int) -> None:
    if height % 16 or width % 16 or height < 32 or width < 32:
        raise ValueError(f"model input must be at least 32x32 with sides multiple of 16, "
                         f"got {width}x{height}")


@dataclass
class Targets:
    """Training targets on the score-map grid."""

    scores: torch.Tensor
    """(N, K, h, w) float32 in [0, 1]: a Gaussian around each visible keypoint."""
    locref: torch.Tensor
    """(N, K, 2, h, w) float32: offset from each cell centre to the keypoint, in strides."""
    locref_weight: torch.Tensor
    """(N, K, 1, h, w) float32: 1 within ``locref_radius`` cells of a visible keypoint."""
    visible: torch.Tensor = field(default_factory=lambda: torch.empty(0))


def make_targets(keypoints: torch.Tensor, height: int, width: int, stride: int = STRIDE,
                 sigma_cells: float = 1.0, locref_radius_cells: float = 2.5) -> Targets:
    """keypoints (N, K, 2) float32 input pixels, NaN where not visible."""
    n, k, _ = keypoints.shape
    h, w = height // stride, width // stride
    cy = torch.arange(h, dtype=torch.float32) * stride + (stride - 1) / 2.0
    cx = torch.arange(w, dtype=torch.float32) * stride + (stride - 1) / 2.0
    visible = torch.isfinite(keypoints).all(dim=2)
    kp = torch.where(visible.unsqueeze(2), keypoints, torch.zeros_like(keypoints))
    dx = (kp[..., 0, None, None] - cx.view(1, 1, 1, w)) / stride  # (N, K, 1, w)
    dy = (kp[..., 1, None, None] - cy.view(1, 1, h, 1)) / stride  # (N, K, h, 1)
    dx = dx.expand(n, k, h, w)
    dy = dy.expand(n, k, h, w)
    d2 = dx * dx + dy * dy
    vis = visible.float().view(n, k, 1, 1)
    scores = torch.exp(-d2 / (2 * sigma_cells ** 2)) * vis
    weight = ((d2 <= locref_radius_cells ** 2).float() * vis).unsqueeze(2)
    return Targets(scores=scores, locref=torch.stack([dx, dy], dim=2), locref_weight=weight,
                   visible=visible)


def loss_fn(scores: torch.Tensor, locref: torch.Tensor, t: Targets,
            locref_weight: float = 0.5) -> torch.Tensor:
    """Score maps: binary cross-entropy against the Gaussian targets, with the positives
    up-weighted so a small keypoint is not drowned by background. Locref: smooth L1 inside
    the radius."""
    pos = 1.0 + 20.0 * t.scores
    score_loss = (F.binary_cross_entropy_with_logits(scores, t.scores, reduction="none") * pos).mean()
    denom = t.locref_weight.sum().clamp(min=1.0)
    loc = F.smooth_l1_loss(locref, t.locref, reduction="none", beta=0.5) * t.locref_weight
    loc_loss = loc.sum() / denom
    return score_loss * 10.0 + locref_weight * loc_loss
