"""Synthetic motion blur from still images (numpy only; scikit-image supplies the source images).

A virtual camera looks at a still image and moves along a smooth random trajectory (translation,
in-plane rotation and zoom, each a smoothed random walk of its velocity). For every output frame
the shutter stays open for ``exposure`` of the frame interval; ``subframes`` sharp views are
rendered at evenly spaced times inside it (bilinear sampling of an affine warp), averaged in LINEAR
light (sRGB -> linear, mean, -> sRGB: the GoPro / DVD recipe) to form the blurry frame. The sharp
ground truth is the view at the centre of the exposure (the middle sub-frame when ``subframes`` is
odd). Everything is deterministic given the seed.

Camera model: an output pixel ``p`` (relative to the frame centre, in output pixels) at time ``u``
(in frame intervals) samples the source at ``origin + k * (c(u) + exp(z(u)) * R(theta(u)) @ p)``.
``c`` is the camera translation in output pixels, so ``speed`` is the image motion in output pixels
per frame whatever the magnification ``k`` (source pixels per output pixel, at most ``scale``; it
shrinks when the whole trajectory would not otherwise fit inside the source image).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vdeblur.errors import MissingDependencyError, UsageError

# --------------------------------------------------------------------------------------------
# Colour: sRGB transfer function (IEC 61966-2-1)
# --------------------------------------------------------------------------------------------


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light in [0, 1] (any shape, float32)."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] -> sRGB-encoded values in [0, 1] (any shape, float32)."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1.0 / 2.4) - 0.055).astype(np.float32)


def average_linear(subframes: np.ndarray, axis: int = 0) -> np.ndarray:
    """Average sRGB sub-frames in linear light: sRGB in [0, 1] -> sRGB in [0, 1] (``axis`` removed).

    Averaging a black and a white sub-frame gives sRGB ~0.735 (linear 0.5), not 0.5.
    """
    return linear_to_srgb(srgb_to_linear(subframes).mean(axis=axis))


# --------------------------------------------------------------------------------------------
# Camera trajectory
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BlurSettings:
    """How the virtual camera moves and exposes (defaults: moderate, GoPro-like blur).

    subframes: sharp views averaged per blurry frame; exposure: shutter-open fraction of the
    frame interval (blur length = speed * exposure); speed: mean image translation in output
    pixels per frame; rotation: typical in-plane rotation in degrees per frame; zoom: typical
    relative scale change per frame; turn: how fast the direction of motion wanders (radians
    per frame, standard deviation); smoothness in [0, 1): velocity persistence from one frame to
    the next (higher = smoother); scale: source pixels per output pixel at most (< 1 magnifies);
    noise: standard deviation of Gaussian noise added to the blurry frames (sRGB units).
    """

    subframes: int = 9
    exposure: float = 1.0
    speed: float = 6.0
    rotation: float = 0.3
    zoom: float = 0.005
    turn: float = 0.35
    smoothness: float = 0.8
    scale: float = 1.0
    noise: float = 0.0

    def check(self) -> None:
        if not isinstance(self.subframes, int) or self.subframes < 1:
            raise UsageError(f"synthetic_blur: subframes={self.subframes!r} is invalid. Expected an integer >= 1.")
        if not 0.0 <= self.exposure <= 1.0:
            raise UsageError(f"synthetic_blur: exposure={self.exposure} is invalid. Expected a value in [0, 1].")
        if not 0.0 <= self.smoothness < 1.0:
            raise UsageError(f"synthetic_blur: smoothness={self.smoothness} is invalid. Expected [0, 1).")
        for name in ("speed", "rotation", "zoom", "turn", "noise"):
            if getattr(self, name) < 0:
                raise UsageError(f"synthetic_blur: {name}={getattr(self, name)} is negative. Expected >= 0.")
        if self.scale <= 0:
            raise UsageError(f"synthetic_blur: scale={self.scale} is invalid. Expected a positive value.")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _smooth_walk(rng: np.random.Generator, n: int, sigma: float, persistence: float) -> np.ndarray:
    """(n,) zero-mean AR(1) sequence with stationary standard deviation ``sigma``."""
    out = np.empty(n, dtype=np.float64)
    out[0] = rng.normal(0.0, sigma)
    innovation = sigma * math.sqrt(1.0 - persistence**2)
    for i in range(1, n):
        out[i] = persistence * out[i - 1] + rng.normal(0.0, innovation)
    return out


def _integrate(knots: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Integral from time 0 of a velocity linear between integer knots (knot i at time i - 1)."""
    seg = 0.5 * (knots[1:] + knots[:-1])
    pos = np.concatenate(([0.0], np.cumsum(seg)))  # at times -1, 0, 1, ...
    u = times + 1.0
    i = np.clip(np.floor(u).astype(int), 0, len(knots) - 2)
    tau = u - i
    v0, v1 = knots[i], knots[i + 1]
    out = pos[i] + v0 * tau + 0.5 * (v1 - v0) * tau**2
    return out - pos[1]  # zero at time 0


def sample_times(frames: int, subframes: int, exposure: float) -> np.ndarray:
    """(frames, subframes) sub-frame times in frame intervals: frame t spans t +- exposure / 2."""
    if subframes == 1:
        offsets = np.zeros(1)
    else:
        offsets = exposure * (np.arange(subframes) / (subframes - 1) - 0.5)
    return np.arange(frames)[:, None] + offsets[None, :]


def camera_trajectory(frames: int, settings: BlurSettings, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Velocity knots of a smooth random camera motion, one per frame interval boundary.

    Returns a dict of (frames + 2,) arrays: "vx", "vy" (output pixels per frame), "omega"
    (radians per frame), "zeta" (log-scale per frame); knot i is the velocity at time i - 1.
    """
    n = frames + 2
    p = settings.smoothness
    direction = rng.uniform(0.0, 2.0 * math.pi) + np.cumsum(_smooth_walk(rng, n, settings.turn, p))
    magnitude = settings.speed * np.exp(_smooth_walk(rng, n, 0.25, p))
    return {
        "vx": magnitude * np.cos(direction),
        "vy": magnitude * np.sin(direction),
        "omega": _smooth_walk(rng, n, math.radians(settings.rotation), p),
        "zeta": _smooth_walk(rng, n, settings.zoom, p),
    }


def poses(trajectory: dict[str, np.ndarray], times: np.ndarray) -> dict[str, np.ndarray]:
    """Camera pose at ``times`` (any shape): "cx", "cy" (output pixels), "theta", "z" (log-scale)."""
    flat = times.reshape(-1)
    names = {"cx": "vx", "cy": "vy", "theta": "omega", "z": "zeta"}
    return {k: _integrate(trajectory[v], flat).reshape(times.shape) for k, v in names.items()}


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample (H, W, C) at float coordinates (any shape, edge-clamped) -> (..., C) float32."""
    h, w, c = img.shape
    x = np.clip(x, 0.0, w - 1.0)
    y = np.clip(y, 0.0, h - 1.0)
    x0 = np.minimum(np.floor(x), max(w - 2, 0)).astype(np.int64)
    y0 = np.minimum(np.floor(y), max(h - 2, 0)).astype(np.int64)
    dx = 1 if w > 1 else 0
    dy = w if h > 1 else 0
    wx = (x - x0).astype(np.float32)[..., None]
    wy = (y - y0).astype(np.float32)[..., None]
    flat = img.reshape(-1, c)
    i00 = y0 * w + x0
    top = flat[i00] * (1 - wx) + flat[i00 + dx] * wx
    bottom = flat[i00 + dy] * (1 - wx) + flat[i00 + dy + dx] * wx
    return top * (1 - wy) + bottom * wy


def _as_float_image(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise UsageError(f"synthetic_blur: image has shape {a.shape}. Expected (H, W, 3) RGB (or (H, W) grey).")
    a = a[:, :, :3]
    if a.dtype == np.uint8:
        return a.astype(np.float32) / 255.0
    if a.dtype == bool:
        return a.astype(np.float32)
    return np.clip(a.astype(np.float32), 0.0, 1.0)


def make_clip(
    image: np.ndarray,
    frames: int,
    height: int,
    width: int,
    subframes: int = 9,
    seed: int = 0,
    settings: BlurSettings | None = None,
    **overrides: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """A blurry clip and its sharp ground truth from one still image under a random camera motion.

    image: (H, W, 3) RGB, uint8 or float in [0, 1] ((H, W) grey is replicated). frames, height,
    width: the clip's size; subframes: sharp views averaged per blurry frame; seed: all
    randomness (same arguments -> same arrays); settings / overrides: :class:`BlurSettings`
    (e.g. ``speed=10.0``; ``subframes`` here overrides ``settings.subframes``).
    Returns (blurry, sharp), each float32 (T, 3, height, width) in [0, 1].
    """
    blurry, sharp, _ = render_clip(image, frames, height, width, subframes, seed, settings, **overrides)
    return blurry, sharp


def render_clip(
    image: np.ndarray,
    frames: int,
    height: int,
    width: int,
    subframes: int = 9,
    seed: int = 0,
    settings: BlurSettings | None = None,
    **overrides: Any,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """:func:`make_clip` plus a description of the camera: (blurry, sharp, info).

    info: "settings" (the BlurSettings used, as a dict), "magnification" (source pixels per
    output pixel), "origin" (source pixel of the frame centre at time 0, x and y), "speed_px"
    (mean image motion per frame at the frame centre, output pixels), "blur_px" (mean motion
    during one exposure, output pixels).
    """
    base = settings or BlurSettings()
    unknown = sorted(set(overrides) - set(BlurSettings.__dataclass_fields__))
    if unknown:
        raise UsageError(f"synthetic_blur: unknown option(s) {', '.join(unknown)}. "
                         f"Expected: {', '.join(BlurSettings.__dataclass_fields__)}.")
    s = BlurSettings(**{**base.as_dict(), **overrides, "subframes": subframes})
    s.check()
    for name, value in (("frames", frames), ("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise UsageError(f"synthetic_blur: {name}={value!r} is invalid. Expected a positive integer.")
    src = srgb_to_linear(_as_float_image(image))
    ih, iw = src.shape[:2]
    rng = np.random.default_rng(seed)

    times = sample_times(frames, s.subframes, s.exposure)  # (T, S)
    centre = np.arange(frames, dtype=np.float64)[:, None]  # the sharp frame's time
    all_times = np.concatenate((times, centre), axis=1)  # (T, S + 1)
    pose = poses(camera_trajectory(frames, s, rng), all_times)

    # Output pixel grid relative to the frame centre.
    gy, gx = np.meshgrid(np.arange(height) - (height - 1) / 2.0, np.arange(width) - (width - 1) / 2.0,
                         indexing="ij")
    corners = np.array([[gx[0, 0], gy[0, 0]], [gx[0, -1], gy[0, -1]], [gx[-1, 0], gy[-1, 0]],
                        [gx[-1, -1], gy[-1, -1]]])

    def unit_coords(px: np.ndarray, py: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # source offsets for magnification 1; px, py broadcast against the pose arrays
        sc = np.exp(pose["z"])[..., None]
        cos, sin = np.cos(pose["theta"])[..., None], np.sin(pose["theta"])[..., None]
        ux = pose["cx"][..., None] + sc * (cos * px - sin * py)
        uy = pose["cy"][..., None] + sc * (sin * px + cos * py)
        return ux, uy

    cx, cy = unit_coords(corners[:, 0], corners[:, 1])
    span_x, span_y = float(cx.max() - cx.min()), float(cy.max() - cy.min())
    k = min(s.scale, (iw - 1.0) / max(span_x, 1e-6), (ih - 1.0) / max(span_y, 1e-6))
    # origin placed at random so that every sampled point stays inside the image
    lo_x, hi_x = -k * cx.min(), (iw - 1.0) - k * cx.max()
    lo_y, hi_y = -k * cy.min(), (ih - 1.0) - k * cy.max()
    ox = rng.uniform(lo_x, hi_x) if hi_x > lo_x else 0.5 * (lo_x + hi_x)
    oy = rng.uniform(lo_y, hi_y) if hi_y > lo_y else 0.5 * (lo_y + hi_y)

    blurry = np.empty((frames, 3, height, width), dtype=np.float32)
    sharp = np.empty_like(blurry)
    flat_x, flat_y = gx.reshape(-1), gy.reshape(-1)
    for t in range(frames):
        sc = np.exp(pose["z"][t])[:, None]
        cos, sin = np.cos(pose["theta"][t])[:, None], np.sin(pose["theta"][t])[:, None]
        sx = ox + k * (pose["cx"][t][:, None] + sc * (cos * flat_x - sin * flat_y))
        sy = oy + k * (pose["cy"][t][:, None] + sc * (sin * flat_x + cos * flat_y))
        views = _bilinear(src, sx, sy)  # (S + 1, H*W, 3), linear light
        mean = views[:-1].mean(axis=0)
        blurry[t] = linear_to_srgb(mean).reshape(height, width, 3).transpose(2, 0, 1)
        sharp[t] = linear_to_srgb(views[-1]).reshape(height, width, 3).transpose(2, 0, 1)
    if s.noise > 0:
        noise_rng = np.random.default_rng([seed, 1])
        blurry = np.clip(blurry + noise_rng.normal(0.0, s.noise, blurry.shape).astype(np.float32), 0.0, 1.0)
    centre_path = np.stack((pose["cx"][:, -1], pose["cy"][:, -1]), axis=1)
    exposure_path = np.stack((pose["cx"][:, s.subframes - 1] - pose["cx"][:, 0],
                              pose["cy"][:, s.subframes - 1] - pose["cy"][:, 0]), axis=1)
    info = {
        "settings": s.as_dict(),
        "magnification": float(k),
        "origin": [float(ox), float(oy)],
        "speed_px": float(np.linalg.norm(np.diff(centre_path, axis=0), axis=1).mean()) if frames > 1 else 0.0,
        "blur_px": float(np.linalg.norm(exposure_path, axis=1).mean()),
    }
    return blurry, sharp, info


# --------------------------------------------------------------------------------------------
# Source images
# --------------------------------------------------------------------------------------------

# scikit-image's bundled images that are natural colour photographs large enough for a 320x180
# view ("chelsea" is the same photograph as "cat"; "stereo_motorcycle" is a stereo pair: left view).
COLOUR_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle", "immunohistochemistry",
                 "hubble_deep_field", "retina")
# Grey natural images (replicated to RGB): extra texture for training only.
GREY_IMAGES = ("camera", "brick", "grass", "gravel", "moon", "clock", "coins", "cell", "page", "text")


def _skimage_data() -> Any:
    try:
        import skimage.data
    except ImportError as e:
        raise MissingDependencyError(
            "scikit-image: not installed, but the synthetic-blur source images come from it. "
            "Install the demo extra: `pip install vdeblur[demo]` (or `pip install scikit-image`)."
        ) from e
    return skimage.data


def natural_images(grey: bool = False, min_size: int = 300, names: Sequence[str] | None = None
                   ) -> list[tuple[str, np.ndarray]]:
    """scikit-image's bundled natural images usable as sources: [(name, uint8 (H, W, 3))].

    Colour photographs (:data:`COLOUR_IMAGES`) with both sides >= ``min_size``, in a fixed order;
    with ``grey`` also the grey natural images (:data:`GREY_IMAGES`, replicated to three channels);
    ``names`` restricts the list. Needs no network (files bundled with scikit-image only; an image
    that this scikit-image version does not bundle is skipped).
    """
    data = _skimage_data()
    wanted = COLOUR_IMAGES + (GREY_IMAGES if grey else ())
    if names is not None:
        unknown = sorted(set(names) - set(COLOUR_IMAGES + GREY_IMAGES))
        if unknown:
            raise UsageError(f"natural_images: unknown image(s) {', '.join(unknown)}. "
                             f"Expected some of: {', '.join(COLOUR_IMAGES + GREY_IMAGES)}.")
        wanted = tuple(n for n in COLOUR_IMAGES + GREY_IMAGES if n in names)
    out: list[tuple[str, np.ndarray]] = []
    for name in wanted:
        try:
            img = getattr(data, name)()
        except (AttributeError, OSError, ModuleNotFoundError, ValueError):
            continue  # not bundled in this scikit-image version (would need pooch and a download)
        if isinstance(img, tuple):
            img = img[0]
        img = np.asarray(img)
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.repeat(img[:, :, None], 3, axis=2)
        img = np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)
        if min(img.shape[:2]) >= min_size:
            out.append((name, img))
    return out


def _rank(name: str, seed: int) -> str:
    return hashlib.sha256(f"vdeblur-split:{seed}:{name}".encode()).hexdigest()


def split_sources(
    items: Sequence[tuple[str, np.ndarray]] | Sequence[str],
    held_out: int | float = 0.25,
    seed: int = 0,
) -> tuple[list[Any], list[Any]]:
    """Deterministic train / held-out split of sources (names or (name, image) pairs).

    The items are ranked by a hash of (seed, name), independent of their order and of the other
    items; the first ``held_out`` (a count, or a fraction of the items, at least one when there
    are two or more) are held out. Returns (train, held_out), each in the input order.
    """
    names = [it if isinstance(it, str) else it[0] for it in items]
    if len(set(names)) != len(names):
        raise UsageError("split_sources: duplicate source names. Expected unique names.")
    n = len(names)
    if isinstance(held_out, float):
        if not 0.0 <= held_out < 1.0:
            raise UsageError(f"split_sources: held_out={held_out} is invalid. Expected a fraction in [0, 1).")
        count = max(1, round(held_out * n)) if n >= 2 and held_out > 0 else 0
    else:
        if held_out < 0 or held_out >= max(n, 1):
            raise UsageError(f"split_sources: held_out={held_out} is invalid for {n} sources. Expected 0..{n - 1}.")
        count = held_out
    chosen = set(sorted(names, key=lambda nm: _rank(nm, seed))[:count])
    train = [it for it, nm in zip(items, names, strict=True) if nm not in chosen]
    test = [it for it, nm in zip(items, names, strict=True) if nm in chosen]
    return train, test


# The split used by the bundled demo checkpoint and clip: holds out "coffee" and "rocket".
DEMO_SPLIT_SEED = 2


def demo_sources(grey: bool = True) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """(train, held_out) sources of the bundled demo model: a quarter of the colour images held
    out (:func:`split_sources` with seed :data:`DEMO_SPLIT_SEED`); the grey images (with ``grey``)
    are training-only."""
    train, held = split_sources(natural_images(), 0.25, seed=DEMO_SPLIT_SEED)
    if grey:
        train = train + natural_images(names=GREY_IMAGES)
    return train, held
