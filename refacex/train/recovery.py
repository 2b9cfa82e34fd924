"""The learned face code and the detached recovery network (torch; training only).

Why learned, and why *detached* (ReFaceX's idea): the anonymised image the key holder
receives already holds the pose, hair, lighting, background and face outline; the code in
the pixels only has to carry what the anonymiser removed. So:

* ``CodeEncoder`` sees the original face **and** the anonymised face (both exist when the
  code is written) and writes a ``LATENT``-value code whose *prefix* is a coarser code
  (trained with nested truncation: ``RATES``), so one model serves every byte budget, from
  a 250 px photo's 13 bytes to a large photo's 289;
* ``RecoveryNet`` sees the anonymised face as received (after JPEG, resizing, a slightly
  off placement) and the decoded code, and gives back the original face; its output is a
  correction added to what it received, steered by the code (per-channel scale and shift,
  FiLM) at every decoder level;
* both see the anonymised face through ``detach``: the recovery loss never sends a
  gradient into whatever made the anonymised face (``recovery_loss``), so a learned
  anonymiser trained beside it (issue 13) is never rewarded for leaving identity in.

Values: ``LEVELS`` uniform levels in [-1, 1] that never include 0, so a zeroed (truncated)
value reads as "not sent". The runtime (``refacex.payload.learned_code``) packs each sent
value in ``BITS`` bits and runs both networks as ONNX, without torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from refacex.payload.learned_code import (  # noqa: F401  (RATES, RES: for the trainer)
    LATENT,
    LATENT_CH,
    LATENT_HW,
    LEVELS,
    RATES,
    RES,
)


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), _act())


def normalise(x: torch.Tensor) -> torch.Tensor:
    """BGR 0..255 (what the runtime feeds) to -1..1."""
    return x / 127.5 - 1.0


class CodeEncoder(nn.Module):
    """(original, anonymised) BGR 0..255 (N, 3, RES, RES) -> (N, LATENT) in (-1, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _conv(6, 32, 2),  # 32
            _conv(32, 64), _conv(64, 96, 2),  # 16
            _conv(96, 96), _conv(96, 128, 2),  # 8
            _conv(128, 128), _conv(128, 128, 2),  # 4
            nn.Conv2d(128, LATENT_CH, 1))

    def forward(self, original: torch.Tensor, anonymised: torch.Tensor) -> torch.Tensor:
        x = torch.cat([normalise(original), normalise(anonymised)], 1)
        return torch.tanh(self.net(x)).flatten(1)  # channel-major: prefix = first channels


def quantise(t: torch.Tensor) -> torch.Tensor:
    """Nearest of the ``LEVELS`` values (2j - L + 1) / (L - 1); straight-through gradient."""
    j = torch.clamp(torch.round((t + 1.0) * (LEVELS - 1) / 2.0), 0, LEVELS - 1)
    v = (2.0 * j - (LEVELS - 1)) / (LEVELS - 1)
    return t + (v - t).detach()


def truncate(code: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Zero every value from index ``k`` (per sample) on: what a ``k``-value code sends."""
    idx = torch.arange(code.shape[1], device=code.device)[None]
    return code * (idx < k[:, None]).to(code.dtype)


class _FiLM(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.proj = nn.Linear(LATENT, 2 * ch)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        g, b = self.proj(code)[:, :, None, None].chunk(2, 1)
        return x * (1.0 + g) + b


class RecoveryNet(nn.Module):
    """(received anonymised face BGR 0..255, code) -> the original face, BGR 0..255.

    A small U-Net on the received face; the code enters at the bottleneck as a spatial map
    (its 4x4 layout), steers every decoder level through FiLM, and adds a coarse 16x16
    correction of its own through a linear map.
    """

    def __init__(self) -> None:
        super().__init__()
        self.e0 = _conv(3, 24)  # 64
        self.e1 = nn.Sequential(_conv(24, 48, 2), _conv(48, 48))  # 32
        self.e2 = nn.Sequential(_conv(48, 96, 2), _conv(96, 96))  # 16
        self.e3 = nn.Sequential(_conv(96, 128, 2), _conv(128, 128))  # 8
        self.code_map = nn.Sequential(_conv(LATENT_CH, 128), _conv(128, 128))
        self.mid = nn.Sequential(_conv(256, 128), _conv(128, 128))
        self.f3 = _FiLM(128)
        self.d2 = nn.Sequential(_conv(128 + 96, 96), _conv(96, 96))
        self.f2 = _FiLM(96)
        self.d1 = nn.Sequential(_conv(96 + 48, 48), _conv(48, 48))
        self.f1 = _FiLM(48)
        self.d0 = _conv(48 + 24, 24)
        self.f0 = _FiLM(24)
        self.out = nn.Conv2d(24, 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # A linear path from the code to a 16x16 correction (a learned basis, like the PCA
        # code's): the encoder gets a direct, strong gradient from the first steps on,
        # while the U-Net learns to place detail.
        self.basis = nn.Linear(LATENT, 3 * 16 * 16)
        nn.init.zeros_(self.basis.weight)
        nn.init.zeros_(self.basis.bias)

    def forward(self, received: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        x0 = self.e0(normalise(received))
        x1 = self.e1(x0)
        x2 = self.e2(x1)
        x3 = self.e3(x2)
        cm = code.view(-1, LATENT_CH, LATENT_HW, LATENT_HW)
        cm = F.interpolate(self.code_map(cm), scale_factor=2, mode="nearest")
        y = self.f3(self.mid(torch.cat([x3, cm], 1)), code)
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear",  # noqa: E731
                                     align_corners=False)
        y = self.f2(self.d2(torch.cat([up(y), x2], 1)), code)
        y = self.f1(self.d1(torch.cat([up(y), x1], 1)), code)
        y = self.f0(self.d0(torch.cat([up(y), x0], 1)), code)
        # / 16: Adam moves every weight by ~lr a step, and 768 inputs would add up to
        # (measured) a divergence at lr 2e-3 without it.
        coarse = F.interpolate(self.basis(code).view(-1, 3, 16, 16) / 16, scale_factor=4,
                               mode="bilinear", align_corners=False)
        return received + 127.5 * (self.out(y) + coarse)


class RecoveryModel(nn.Module):
    """Encoder and recovery network trained together (the code is what links them)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = CodeEncoder()
        self.recovery = RecoveryNet()

    def forward(self, original: torch.Tensor, anonymised: torch.Tensor,
                received: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        # detach: no gradient of the recovery loss reaches what made the anonymised face.
        anonymised, received = anonymised.detach(), received.detach()
        code = truncate(quantise(self.encoder(original, anonymised)), k)
        return self.recovery(received, code)


def _ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over channels (7x7 box windows), inputs in 0..1."""
    c1, c2 = 0.01**2, 0.03**2
    pool = lambda t: F.avg_pool2d(t, 7, 1, 3, count_include_pad=False)  # noqa: E731
    ma, mb = pool(a), pool(b)
    va, vb, cov = pool(a * a) - ma * ma, pool(b * b) - mb * mb, pool(a * b) - ma * mb
    s = ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return s.mean()


def recovery_loss(model: RecoveryModel, original: torch.Tensor, anonymised: torch.Tensor,
                  received: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """L1 + SSIM between the recovered and the original face (inputs BGR 0..255)."""
    out = model(original, anonymised, received, k) / 255.0
    target = original / 255.0
    return F.l1_loss(out, target) + 0.25 * (1.0 - _ssim(out, target))
