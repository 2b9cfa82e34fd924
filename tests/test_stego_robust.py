"""Robust in-pixel channel: invisibility, survival of common edits, and no false payloads."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from refacex.audit.distortions import brightness, contrast, crop, crop_px, jpeg, resize
from refacex.audit.metrics import psnr
from refacex.errors import ModelMissingError, NoPayloadError
from refacex.io.images import read_image
from refacex.models import resolve
from refacex.stego import robust
from refacex.stego.robust import capacity_bytes, embed, extract, locate

Attack = Callable[[np.ndarray], np.ndarray]


def _sample(name: str) -> np.ndarray:
    try:
        return read_image(resolve(name))
    except ModelMissingError as exc:  # pragma: no cover - depends on the sample cache
        pytest.skip(f"sample photo missing: {exc}")


COMMON: dict[str, Attack] = {
    "clean": lambda img: img,
    "jpeg75": lambda img: jpeg(img, 75),
    "jpeg50": lambda img: jpeg(img, 50),
    "scale0.5": lambda img: resize(img, 0.5),
    "scale1.5": lambda img: resize(img, 1.5),
    "scale2": lambda img: resize(img, 2.0),
    "brightness+20": lambda img: brightness(img, 0.2),
    "contrast-20": lambda img: contrast(img, -0.2),
}
CROPS: dict[str, Attack] = {
    "crop3": lambda img: crop(img, 0.03, 0.03, 0.03, 0.03),
    "crop3_left_top": lambda img: crop(img, 0.03, 0.03),
    "scale0.5_jpeg75": lambda img: jpeg(resize(img, 0.5), 75),
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
    assert psnr(marked_large[0], photo_large) >= 40.0
    assert psnr(marked_small[0], photo_small) >= 40.0


@pytest.mark.parametrize("attack", [*COMMON, *CROPS])
def test_large_photo_survives(marked_large, attack: str) -> None:
    img, data = marked_large
    assert extract({**COMMON, **CROPS}[attack](img)) == data


@pytest.mark.parametrize("attack", list(COMMON))
def test_small_photo_survives(marked_small, attack: str) -> None:
    img, data = marked_small
    assert extract(COMMON[attack](img)) == data


VGA_CROPS: dict[str, Attack] = {
    "crop2": lambda img: crop(img, 0.02, 0.02, 0.02, 0.02),
    "crop3_left_top": lambda img: crop(img, 0.03, 0.03),
    "crop5_right_bottom": lambda img: crop(img, right=0.05, bottom=0.05),
}


@pytest.mark.parametrize("attack", list(VGA_CROPS))
def test_vga_photo_survives_border_crops(marked_vga, attack: str) -> None:
    img, data = marked_vga
    assert extract(VGA_CROPS[attack](img)) == data


@pytest.fixture(scope="module", params=[False, True], ids=["normal", "dense"])
def marked_small_full(request, photo_small: np.ndarray) -> tuple[np.ndarray, bytes]:
    """A 250x250 photo filled to capacity, in either layout (public-key payloads on such
    photos use the dense one)."""
    dense = request.param
    data = np.random.default_rng(11).bytes(capacity_bytes(250, 250, dense))
    return embed(photo_small, data, dense), data


@pytest.mark.parametrize("attack", ["crop2", "crop3_left_top", "crop5_right_bottom"])
def test_small_photo_survives_border_crops(marked_small_full, attack: str) -> None:
    """Crops of a 250x250 photo: found by the crop route at the exact scales a crop
    leaves (both layouts), even with the payload at full capacity."""
    img, data = marked_small_full
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
        truth = pts + crop_px(img, 0.03, 0.03)[:2]
    assert np.abs(est - truth).max() < 1.0, est - truth


@pytest.mark.parametrize("attack", ["jpeg50", "contrast-20", "brightness+20"])
def test_same_size_copies_decode_at_the_first_hypothesis(marked_small, marked_small_full,
                                                        marked_vga, attack: str) -> None:
    """Re-encoded or re-lit but not resized or cropped (the commonest handling): decoded by
    the as-is hypothesis, before any search route runs, in either layout. (+20 %
    brightness clips the astronaut's sky: only the shorter payload survives that.)"""
    marked = [marked_small] if attack == "brightness+20" else [marked_small_full, marked_vga]
    for img, data in marked:
        first = next(iter(robust._candidates(COMMON[attack](img))))
        found = robust._decode(first, first.uncropped)
        assert first.z >= robust.Z_MIN and found is not None and found[0] == data


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
