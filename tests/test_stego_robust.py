"""Robust in-pixel channel: invisibility, survival of common edits, and no false payloads."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from refacex.errors import ModelMissingError, NoPayloadError
from refacex.io.images import read_image
from refacex.models import resolve
from refacex.stego.robust import capacity_bytes, embed, extract, locate

Attack = Callable[[np.ndarray], np.ndarray]


def _sample(name: str) -> np.ndarray:
    try:
        return read_image(resolve(name))
    except ModelMissingError as exc:  # pragma: no cover - depends on the sample cache
        pytest.skip(f"sample photo missing: {exc}")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


def _jpeg(q: int) -> Attack:
    def f(img: np.ndarray) -> np.ndarray:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        assert ok
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)

    return f


def _scale(s: float) -> Attack:
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return lambda img: cv2.resize(img, None, fx=s, fy=s, interpolation=interp)


def _brightness(f: float) -> Attack:
    return lambda img: np.clip(img.astype(np.float64) * f, 0, 255).astype(np.uint8)


def _contrast(f: float) -> Attack:
    def g(img: np.ndarray) -> np.ndarray:
        x = img.astype(np.float64)
        return np.clip((x - x.mean()) * f + x.mean(), 0, 255).astype(np.uint8)

    return g


def _crop(left: float, top: float, right: float, bottom: float) -> Attack:
    def f(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        return img[int(h * top) : h - int(h * bottom), int(w * left) : w - int(w * right)]

    return f


COMMON: dict[str, Attack] = {
    "clean": lambda img: img,
    "jpeg75": _jpeg(75),
    "jpeg50": _jpeg(50),
    "scale0.5": _scale(0.5),
    "scale1.5": _scale(1.5),
    "scale2": _scale(2.0),
    "brightness+20": _brightness(1.2),
    "contrast-20": _contrast(0.8),
}
CROPS: dict[str, Attack] = {
    "crop3": _crop(0.03, 0.03, 0.03, 0.03),
    "crop3_left_top": _crop(0.03, 0.03, 0.0, 0.0),
    "scale0.5_jpeg75": lambda img: _jpeg(75)(_scale(0.5)(img)),
}


@pytest.fixture(scope="module")
def photo_large() -> np.ndarray:
    return _sample("t1")  # 1280x886 natural photo


@pytest.fixture(scope="module")
def photo_small() -> np.ndarray:
    return cv2.resize(_sample("astronaut"), (250, 250), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def marked_vga() -> tuple[np.ndarray, bytes]:
    """A 640x480 photo filled to capacity: too small for the pilot's spectral peak, so
    crops are found by the crop route (known scales, pilot phase, lattice fit)."""
    photo = cv2.resize(_sample("t1"), (640, 480), interpolation=cv2.INTER_AREA)
    data = np.random.default_rng(9).bytes(capacity_bytes(480, 640))
    return embed(photo, data), data


@pytest.fixture(scope="module")
def marked_large(photo_large: np.ndarray) -> tuple[np.ndarray, bytes]:
    h, w = photo_large.shape[:2]
    data = np.random.default_rng(7).bytes(min(capacity_bytes(h, w), 300))
    return embed(photo_large, data), data


@pytest.fixture(scope="module")
def marked_small(photo_small: np.ndarray) -> tuple[np.ndarray, bytes]:
    data = np.random.default_rng(8).bytes(min(capacity_bytes(250, 250), 40))
    return embed(photo_small, data), data


def test_capacity_grows_with_area() -> None:
    assert capacity_bytes(250, 250) >= 40
    assert capacity_bytes(480, 640) >= 200
    assert capacity_bytes(720, 1280) >= 500
    prev = 0
    for side in range(64, 2600, 37):
        cap = capacity_bytes(side * 3 // 4, side)
        assert cap >= prev
        prev = cap
    assert capacity_bytes(2000, 3000) > capacity_bytes(720, 1280) > capacity_bytes(250, 250)


def test_invisible(photo_large: np.ndarray, photo_small: np.ndarray, marked_large, marked_small):
    assert marked_large[0].shape == photo_large.shape and marked_large[0].dtype == np.uint8
    assert _psnr(marked_large[0], photo_large) >= 40.0
    assert _psnr(marked_small[0], photo_small) >= 40.0


@pytest.mark.parametrize("attack", [*COMMON, *CROPS])
def test_large_photo_survives(marked_large, attack: str) -> None:
    img, data = marked_large
    assert extract({**COMMON, **CROPS}[attack](img)) == data


@pytest.mark.parametrize("attack", list(COMMON))
def test_small_photo_survives(marked_small, attack: str) -> None:
    img, data = marked_small
    assert extract(COMMON[attack](img)) == data


VGA_CROPS: dict[str, Attack] = {
    "crop2": _crop(0.02, 0.02, 0.02, 0.02),
    "crop3_left_top": _crop(0.03, 0.03, 0.0, 0.0),
    "crop5_right_bottom": _crop(0.0, 0.0, 0.05, 0.05),
}


@pytest.mark.parametrize("attack", list(VGA_CROPS))
def test_vga_photo_survives_border_crops(marked_vga, attack: str) -> None:
    img, data = marked_vga
    assert extract(VGA_CROPS[attack](img)) == data


@pytest.mark.parametrize("attack", ["crop3_left_top", "scale0.5"])
def test_located_geometry_maps_back_to_the_original(marked_vga, attack: str) -> None:
    """``locate`` says where the received image sits on the original (what recovery uses
    to place faces after a crop or resize): within a pixel everywhere."""
    img, data = marked_vga
    got = {**COMMON, **VGA_CROPS}[attack](img)
    loc = locate(got)
    assert loc.data == data
    h, w = got.shape[:2]
    pts = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [w / 2, h / 2]], float)
    est = pts @ loc.to_original(640, 480)[:, :2].T + loc.to_original(640, 480)[:, 2]
    if attack == "scale0.5":
        truth = (pts + 0.5) * [640 / w, 480 / h] - 0.5
    else:
        truth = pts + [int(640 * 0.03), int(480 * 0.03)]
    assert np.abs(est - truth).max() < 1.0, est - truth


def test_png_roundtrip_strips_nothing(marked_small) -> None:
    img, data = marked_small
    ok, buf = cv2.imencode(".png", img)
    assert ok
    assert extract(cv2.imdecode(buf, cv2.IMREAD_COLOR)) == data


def test_unmarked_images_raise(photo_large: np.ndarray, photo_small: np.ndarray) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    for img in (photo_large, photo_small, noise, np.full((200, 200, 3), 128, np.uint8)):
        with pytest.raises(NoPayloadError):
            extract(img)


def test_too_large_payload_rejected(photo_small: np.ndarray) -> None:
    with pytest.raises(ValueError):
        embed(photo_small, bytes(capacity_bytes(250, 250) + 1))
