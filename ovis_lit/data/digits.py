"""`digits`: real handwriting, scenes of four digits from scikit-learn's digits images (data source and held-out
benchmark of that name).

`sklearn.datasets.load_digits` ships with scikit-learn (1797 8 x 8 greyscale scans of handwritten digits, read
from a CSV file: nothing is downloaded, nothing unpickled). Each digit class's images are split once, by a fixed
seed, into disjoint pools: 70% for training scenes, 10% for validation scenes, 20% for held-out scenes, so the
held-out questions are about handwriting the model never saw.

A scene is 64 x 64 (one crop for the tiny processor; each visual token sees one quadrant): four different digits,
one per quadrant, each an image of its class from the split's pool, scaled to 24 x 24 as dark ink on a light
background. Questions: "Which digit is in the top left?" (answer 0-9) and "Where is the digit 7?" (a quadrant).
The four digits are a uniform draw, so answers are uniform and the text alone is at chance.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image

from .scene_sets import Question, Scene, ensure_scene_set, standard_scene_set
from .shapes import QUADRANTS

SIDE = 64
CELL = 24  # pixels a digit is drawn at (from 8 x 8)
DIGITS = tuple(str(d) for d in range(10))
POOL_SHARES = {"train": 0.7, "val": 0.1, "test": 0.2}  # of each class's images, in this order
POOL_SEED = 0
VERSION = 1


@lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """(images [n, 8, 8] in 0..16, labels [n]) of scikit-learn's bundled digits."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exn:  # an optional dependency: only this data set needs it
        raise ImportError("the digits data needs scikit-learn (pip install scikit-learn)") from exn
    data = load_digits()
    return np.asarray(data.images, dtype=np.float32), np.asarray(data.target, dtype=np.int64)


@lru_cache(maxsize=1)
def pools() -> dict[str, dict[int, np.ndarray]]:
    """{split: {digit: indices into the digits images}}: each class's images shuffled once (POOL_SEED) and cut by
    POOL_SHARES, so the splits share no image."""
    _, labels = _digits()
    rng = np.random.default_rng(POOL_SEED)
    out: dict[str, dict[int, np.ndarray]] = {split: {} for split in POOL_SHARES}
    for digit in range(10):
        members = rng.permutation(np.flatnonzero(labels == digit))
        cuts = np.round(np.cumsum(list(POOL_SHARES.values())) * len(members)).astype(int)
        for split, part in zip(POOL_SHARES, np.split(members, cuts[:-1])):
            out[split][digit] = part
    return out


def pool_split(split: str) -> str:
    if split not in POOL_SHARES:
        raise ValueError(f"unknown digits split {split!r}; choose from {sorted(POOL_SHARES)}")
    return split


def draw_digit(canvas: np.ndarray, image: np.ndarray, left: int, top: int, ink: float, background: float) -> None:
    """Blend an 8 x 8 scan (0 = paper, 16 = ink), scaled to CELL x CELL, into the greyscale canvas."""
    scan = Image.fromarray((image / 16.0 * 255).astype(np.uint8)).resize((CELL, CELL), Image.BILINEAR)
    weight = np.asarray(scan, dtype=np.float32) / 255.0
    region = canvas[top:top + CELL, left:left + CELL]
    region[:] = background + (ink - background) * weight


def make_scene(rng: np.random.Generator, split: str) -> Scene:
    """Four different digits, one per quadrant (in QUADRANTS order), each a scan from `split`'s pool."""
    images, _ = _digits()
    pool = pools()[pool_split(split)]
    digits = [int(d) for d in rng.permutation(10)[:4]]
    background, ink = float(rng.integers(215, 256)), float(rng.integers(0, 70))
    canvas = np.full((SIDE, SIDE), background, dtype=np.float32)
    half = SIDE // 2
    for quadrant, digit in enumerate(digits):
        scan = images[int(rng.choice(pool[digit]))]
        left = (quadrant % 2) * half + (half - CELL) // 2 + int(rng.integers(-2, 3))
        top = (quadrant // 2) * half + (half - CELL) // 2 + int(rng.integers(-2, 3))
        draw_digit(canvas, scan, left, top, ink, background)
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).convert("RGB")
    text = (f"The digits {digits[0]}, {digits[1]}, {digits[2]} and {digits[3]} at the top left, top right, "
            "bottom left and bottom right.")
    questions = tuple(Question(f"Which digit is in the {QUADRANTS[q]}?", str(d), DIGITS, "which digit")
                      for q, d in enumerate(digits))
    questions += tuple(Question(f"Where is the digit {d}?", QUADRANTS[q], QUADRANTS, "where")
                       for q, d in enumerate(digits))
    return Scene(image, text, questions)


DIGIT_SCENES = standard_scene_set("digits", VERSION, make_scene, first_seed=21,
                                  extra_spec=(SIDE, CELL, POOL_SEED, tuple(POOL_SHARES.items())))


def ensure_digits(directory, scale: float = 1.0):
    return ensure_scene_set(DIGIT_SCENES, directory, scale)
