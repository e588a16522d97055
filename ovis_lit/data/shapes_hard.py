"""`shapes_hard`: shapes scenes whose answers need fine detail (data source and held-out benchmark of that name).

128 x 128 images (the tiny processor cuts them into a 2 x 2 partition plus the global view: 20 visual tokens, so
the detail is there to be seen at the crops' resolution), one of three kinds, equally often:
- count: 1-8 small copies (radius 4-6 px) of one shape in one colour anywhere, not touching: "How many shapes are
  there?" (one .. eight: counting beyond the four quadrants of the plain shapes data);
- small: one large shape (radius 16-22) and one small one (radius 4-5) of another shape and colour: "What shape is
  the small one?" / "What colour is the small shape?";
- relative: three different shapes in three colours at separated horizontal positions: "Which shape is furthest
  left?" / "... in the middle, from left to right?" / "... furthest right?".
Answers are uniform over their spaces (counts, shapes, colours), so the text alone is at chance. The files and
splits are `scene_sets`' (`shapes_hard-{train,val}-*.tar`, `shapes_hard-mc-test.tsv`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .scene_sets import Question, Scene, ensure_scene_set, standard_scene_set
from .shapes import COLOURS, SHAPES, draw_shape, jittered

SIDE = 128
COUNTS = ("one", "two", "three", "four", "five", "six", "seven", "eight")
POSITIONS = ("furthest left", "in the middle, from left to right", "furthest right")
KINDS = ("count", "small", "relative")
VERSION = 1


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _place(rng: np.random.Generator, radii: list[int], side: int = SIDE, gap: int = 3) -> list[tuple[int, int]]:
    """Centres for shapes of these radii inside the image, no two closer than the sum of their radii + `gap` (so
    they never touch); drawn again until they fit (always quickly at these sizes)."""
    while True:
        centres: list[tuple[int, int]] = []
        for r in radii:
            for _ in range(100):
                c = (int(rng.integers(r + 1, side - r - 1)), int(rng.integers(r + 1, side - r - 1)))
                if all(np.hypot(c[0] - x, c[1] - y) >= r + s + gap for (x, y), s in zip(centres, radii)):
                    centres.append(c)
                    break
            else:
                break
        if len(centres) == len(radii):
            return centres


def _canvas(rng: np.random.Generator) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    background = int(rng.integers(225, 256))
    image = Image.new("RGB", (SIDE, SIDE), (background,) * 3)
    return image, ImageDraw.Draw(image)


def count_scene(rng: np.random.Generator) -> Scene:
    n = int(rng.integers(1, len(COUNTS) + 1))
    shape, colour = SHAPES[int(rng.integers(len(SHAPES)))], list(COLOURS)[int(rng.integers(len(COLOURS)))]
    radii = [int(rng.integers(4, 7)) for _ in range(n)]
    image, draw = _canvas(rng)
    for (cx, cy), r in zip(_place(rng, radii), radii):
        draw_shape(draw, shape, cx, cy, r, jittered(colour, rng))
    words = f"{COUNTS[n - 1]} small {colour} {shape if n == 1 else _plural(shape)}"
    return Scene(image, words[0].upper() + words[1:] + ".",
                 (Question("How many shapes are there?", COUNTS[n - 1], COUNTS, "count"),))


def small_scene(rng: np.random.Generator) -> Scene:
    big, small = (SHAPES[int(k)] for k in rng.permutation(len(SHAPES))[:2])
    big_colour, small_colour = (list(COLOURS)[int(k)] for k in rng.permutation(len(COLOURS))[:2])
    radii = [int(rng.integers(16, 23)), int(rng.integers(4, 6))]
    image, draw = _canvas(rng)
    (bx, by), (sx, sy) = _place(rng, radii, gap=6)
    draw_shape(draw, big, bx, by, radii[0], jittered(big_colour, rng))
    draw_shape(draw, small, sx, sy, radii[1], jittered(small_colour, rng))
    text = f"{_article(big_colour).capitalize()} large {big_colour} {big} and a small {small_colour} {small}."
    return Scene(image, text, (Question("What shape is the small one?", small, SHAPES, "small"),
                               Question("What colour is the small shape?", small_colour, tuple(COLOURS), "small")))


def relative_scene(rng: np.random.Generator) -> Scene:
    shapes = [SHAPES[int(k)] for k in rng.permutation(len(SHAPES))[:3]]
    colours = [list(COLOURS)[int(k)] for k in rng.permutation(len(COLOURS))[:3]]
    r = int(rng.integers(7, 11))
    # three horizontal positions at least 2r + 8 apart, left to right in the order of `shapes`
    while True:
        xs = np.sort(rng.integers(r + 1, SIDE - r - 1, size=3))
        if np.all(np.diff(xs) >= 2 * r + 8):
            break
    image, draw = _canvas(rng)
    for shape, colour, x in zip(shapes, colours, xs):
        draw_shape(draw, shape, int(x), int(rng.integers(r + 1, SIDE - r - 1)), r, jittered(colour, rng))
    parts = [f"{_article(c)} {c} {s}" for c, s in zip(colours, shapes)]
    text = f"From left to right: {parts[0]}, {parts[1]} and {parts[2]}."
    return Scene(image, text, tuple(Question(f"Which shape is {where}?", s, SHAPES, "relative")
                                    for where, s in zip(POSITIONS, shapes)))


def make_scene(rng: np.random.Generator, split: str) -> Scene:
    """One scene of a kind drawn uniformly (the same generator for every split: held-out scenes are excluded from
    training by their pixels, `scene_sets.write_split`)."""
    return (count_scene, small_scene, relative_scene)[int(rng.integers(len(KINDS)))](rng)


SHAPES_HARD = standard_scene_set("shapes_hard", VERSION, make_scene, first_seed=11, extra_spec=(SIDE,))


def ensure_shapes_hard(directory, scale: float = 1.0):
    return ensure_scene_set(SHAPES_HARD, directory, scale)
