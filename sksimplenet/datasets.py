"""Datasets: a deterministic synthetic defect generator, and loaders for public layouts."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

TEXTURES = ("stripes", "grid", "noise", "dots", "object")
DEFECTS = ("scratch", "blob", "hole")


def _texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "stripes":
        angle = rng.uniform(-0.15, 0.15) + np.pi / 4
        phase = rng.uniform(0, 2 * np.pi)
        base = 0.5 + 0.3 * np.sin(2 * np.pi * 8 * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
    elif kind == "grid":
        phase = rng.uniform(0, 2 * np.pi, size=2)
        base = 0.5 + 0.15 * (np.sin(2 * np.pi * 6 * xx + phase[0]) + np.sin(2 * np.pi * 6 * yy + phase[1]))
    elif kind == "noise":
        base = ndimage.gaussian_filter(rng.normal(size=(size, size)), size / 32, mode="wrap")
        base = 0.5 + 0.2 * base / base.std()
    elif kind == "dots":
        base = np.full((size, size), 0.35, np.float32)
        for _ in range(12):
            cy, cx = rng.uniform(0, 1, size=2)
            base += 0.3 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.03**2))
    elif kind == "object":
        cy, cx = 0.5 + rng.uniform(-0.03, 0.03, size=2)
        radius = np.hypot(yy - cy, xx - cx)
        base = np.where(radius < 0.3, 0.7 - 0.3 * radius, 0.25).astype(np.float32)
    else:
        raise ValueError(f"Unknown texture {kind!r}; choose from {TEXTURES}")
    return base + rng.normal(0, 0.02, size=(size, size))


def _defect_mask(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    cy, cx = rng.uniform(0.3, 0.7, size=2)
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.2, 0.35)
        along = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        across = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        return (np.abs(along) < length / 2) & (np.abs(across) < max(1.5 / size, 0.015))
    radius = rng.uniform(0.06, 0.12)
    if kind == "blob":
        ry, rx = radius, radius * rng.uniform(0.6, 1.0)
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    if kind == "hole":
        return np.hypot(yy - cy, xx - cx) < radius * 0.7
    raise ValueError(f"Unknown defect {kind!r}; choose from {DEFECTS}")


def make_synthetic(
    n_normal: int = 20,
    n_anomalous: int = 10,
    *,
    texture: str = "stripes",
    defects=DEFECTS,
    size: int = 128,
    random_state: int = 0,
):
    """Generate normal texture images and defective copies with pixel masks.

    Normal images are one texture with random phase and pixel noise. Anomalous images are
    normal images with one defect painted in: a thin scratch, a blob of another
    intensity, or a dark hole.

    Parameters
    ----------
    n_normal, n_anomalous : int
        Numbers of normal and anomalous images (normal ones come first).
    texture : {"stripes", "grid", "noise", "dots", "object"}
    defects : sequence of {"scratch", "blob", "hole"}
        Defect kinds, used in turn.
    size : int
        Side of the square images, in pixels.
    random_state : int
        Seed; the same seed gives the same images.

    Returns
    -------
    images : ndarray of shape (n_normal + n_anomalous, size, size, 3), uint8
    labels : ndarray of shape (n_normal + n_anomalous,)
        +1 normal, -1 anomalous.
    masks : ndarray of shape (n_normal + n_anomalous, size, size), bool
        True on defect pixels.
    """
    rng = np.random.default_rng(random_state)
    n = n_normal + n_anomalous
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.zeros((n, size, size), bool)
    labels = np.where(np.arange(n) < n_normal, 1, -1)
    for i in range(n):
        gray = _texture(texture, size, rng)
        if i >= n_normal:
            kind = defects[(i - n_normal) % len(defects)]
            mask = _defect_mask(kind, size, rng)
            value = {"scratch": 0.95, "blob": float(rng.choice([0.05, 0.95])), "hole": 0.02}[kind]
            gray = np.where(mask, value + rng.normal(0, 0.02, size=gray.shape), gray)
            masks[i] = mask
        tint = np.array([1.0, 0.95, 0.9], np.float32)
        images[i] = np.clip(gray[..., None] * tint * 255, 0, 255).astype(np.uint8)
    return images, labels, masks
