"""Synthetic motion blur: determinism, shapes, blur vs motion, linear-light averaging, source split."""

from __future__ import annotations

import numpy as np
import pytest

from vdeblur.data import (
    BlurSettings,
    average_linear,
    demo_sources,
    linear_to_srgb,
    make_clip,
    natural_images,
    split_sources,
    srgb_to_linear,
)
from vdeblur.errors import UsageError
from vdeblur.metrics import psnr


def texture(h: int = 160, w: int = 200, seed: int = 0) -> np.ndarray:
    """Detailed uint8 RGB image (no scikit-image needed)."""
    rng = np.random.default_rng(seed)
    coarse = rng.random((h // 4, w // 4, 3))
    img = np.kron(coarse, np.ones((4, 4, 1))) * 0.7 + 0.3 * rng.random((h, w, 3))
    return (img * 255).astype(np.uint8)


def grad_energy(x: np.ndarray) -> float:
    return float(np.mean(np.diff(x, axis=-1) ** 2) + np.mean(np.diff(x, axis=-2) ** 2))


def test_srgb_round_trip_and_known_values() -> None:
    x = np.linspace(0, 1, 101, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)
    assert srgb_to_linear(np.float32(0.5)) == pytest.approx(0.21404, abs=1e-4)
    assert linear_to_srgb(np.float32(0.5)) == pytest.approx(0.73536, abs=1e-4)


def test_averaging_is_in_linear_light() -> None:
    black_white = np.stack([np.zeros((3, 4, 4), np.float32), np.ones((3, 4, 4), np.float32)])
    avg = average_linear(black_white)
    assert avg.shape == (3, 4, 4)
    np.testing.assert_allclose(avg, 0.7354, atol=1e-3)  # not 0.5


def test_make_clip_averages_in_linear_light() -> None:
    # Fine black/white noise under fast motion blurs to linear ~0.5, i.e. sRGB ~0.735 (a gamma-naive
    # average would give sRGB ~0.5).
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, (100, 100, 1)).astype(np.uint8) * 255
    img = np.kron(bits, np.ones((2, 2, 3), np.uint8))
    blurry, _ = make_clip(img, 2, 48, 48, subframes=17, seed=0, speed=30.0)
    assert 0.42 < float(srgb_to_linear(blurry).mean()) < 0.58
    assert float(blurry.mean()) > 0.65
    assert float(np.median(blurry)) == pytest.approx(0.735, abs=0.06)


def test_shapes_ranges_dtype() -> None:
    blurry, sharp = make_clip(texture(), frames=4, height=48, width=64, subframes=5, seed=3)
    for a in (blurry, sharp):
        assert a.shape == (4, 3, 48, 64)
        assert a.dtype == np.float32
        assert a.min() >= 0.0 and a.max() <= 1.0
    float_img = texture().astype(np.float32) / 255.0
    b2, s2 = make_clip(float_img, frames=4, height=48, width=64, subframes=5, seed=3)
    np.testing.assert_allclose(b2, blurry, atol=1e-5)
    np.testing.assert_allclose(s2, sharp, atol=1e-5)


def test_deterministic_given_seed() -> None:
    img = texture()
    a = make_clip(img, 3, 32, 40, subframes=5, seed=7)
    b = make_clip(img, 3, 32, 40, subframes=5, seed=7)
    c = make_clip(img, 3, 32, 40, subframes=5, seed=8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_no_motion_no_blur() -> None:
    blurry, sharp = make_clip(texture(), 3, 32, 40, subframes=5, seed=1, speed=0.0, rotation=0.0, zoom=0.0)
    np.testing.assert_allclose(blurry, sharp, atol=1e-5)


def test_blur_increases_with_motion() -> None:
    img = texture(240, 320)
    results = []
    for speed in (1.0, 4.0, 12.0):
        blurry, sharp = make_clip(img, 4, 64, 96, subframes=9, seed=2, speed=speed)
        results.append((psnr(blurry, sharp), grad_energy(blurry) / grad_energy(sharp)))
    psnrs, energy = zip(*results, strict=True)
    assert psnrs[0] > psnrs[1] > psnrs[2]
    assert energy[0] > energy[1] > energy[2]
    assert energy[2] < 0.5


def test_sharp_frames_follow_the_camera() -> None:
    # consecutive sharp frames differ (the camera moves) but are views of the same image
    _, sharp = make_clip(texture(), 3, 32, 40, subframes=5, seed=4, speed=5.0)
    assert psnr(sharp[0], sharp[1]) < 40


def test_small_image_magnifies_instead_of_leaving_the_image() -> None:
    blurry, sharp = make_clip(texture(40, 40), 4, 32, 32, subframes=3, seed=0, speed=10.0)
    assert np.isfinite(blurry).all() and sharp.std() > 0.01


def test_invalid_options() -> None:
    with pytest.raises(UsageError, match="unknown option"):
        make_clip(texture(), 2, 16, 16, bogus=1)
    with pytest.raises(UsageError, match="exposure"):
        make_clip(texture(), 2, 16, 16, exposure=2.0)
    with pytest.raises(UsageError, match="Expected \\(H, W, 3\\)"):
        make_clip(np.zeros((4, 4, 2), np.uint8), 2, 16, 16)
    with pytest.raises(UsageError, match="frames"):
        make_clip(texture(), 0, 16, 16)
    assert BlurSettings().subframes == 9


def test_split_is_deterministic_and_disjoint() -> None:
    names = [f"img{i}" for i in range(12)]
    train, held = split_sources(names, 0.25, seed=0)
    assert len(held) == 3 and len(train) == 9
    assert set(train).isdisjoint(held) and set(train) | set(held) == set(names)
    assert split_sources(list(reversed(names)), 0.25, seed=0)[1] == [n for n in reversed(names) if n in held]
    assert split_sources(names, 0.25, seed=0) == (train, held)
    assert len(split_sources(names, 2, seed=1)[1]) == 2
    pairs = [(n, None) for n in names]
    assert [n for n, _ in split_sources(pairs, 0.25, seed=0)[1]] == held
    with pytest.raises(UsageError, match="duplicate"):
        split_sources(["a", "a"])


def test_natural_images_and_demo_split() -> None:
    pytest.importorskip("skimage")
    images = natural_images()
    assert len(images) >= 4
    for name, img in images:
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, name
        assert min(img.shape[:2]) >= 300, name
    train, held = demo_sources(grey=True)
    train_names, held_names = {n for n, _ in train}, {n for n, _ in held}
    assert held_names == {"coffee", "rocket"}  # the bundled demo model and clip rely on this
    assert train_names.isdisjoint(held_names)
    name, img = held[0]
    blurry, sharp = make_clip(img, 2, 36, 64, subframes=3, seed=0)
    assert blurry.shape == sharp.shape == (2, 3, 36, 64)
