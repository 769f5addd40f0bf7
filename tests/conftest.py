"""Shared fixtures: small generated data sets and one small fitted detector."""

from pathlib import Path

import pytest

from sksimplenet import SimpleNetDetector
from sksimplenet.datasets import make_synthetic

MTD_ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "mtd"

# Small and fast: the offline ImageNet backbone on 96-pixel images, a few epochs of 4 images
# with every patch (a few dozen steps). The hidden width of 1024 (the default before 0.3):
# in a few dozen steps on these tiny sets the default 512 learns less (measured: 40 % of new
# normal stripes flagged at the default threshold against at most 20 % at 1024), while over
# a default schedule of about 1,000 steps on real data the two agree (docs/performance.md).
FAST = dict(
    backbone="efficientnet_lite0",
    resize=96,
    epochs=4,
    batch_size=4,
    patch_fraction=1.0,
    hidden_dim=1024,
    random_state=0,
    device="cpu",
)

# Smaller still, for tests that fit many detectors: 64-pixel images, one epoch, a narrow
# discriminator. The packaged weights keep separate fits with one seed equal.
TINY = {**FAST, "resize": 64, "epochs": 1, "hidden_dim": 64}


@pytest.fixture(scope="session")
def stripes():
    """30 normal and 15 defective 96-pixel stripe images with masks."""
    return make_synthetic(30, 15, texture="stripes", size=96, random_state=0)


@pytest.fixture(scope="session")
def fitted(stripes):
    """A detector fitted on the first 20 normal stripe images."""
    images, _, _ = stripes
    return SimpleNetDetector(**FAST).fit(images[:20])
