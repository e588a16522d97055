"""Short synthetic "videos" for the shapes dataset: questions that need more than one frame.

Each video is `FRAMES` square frames (`MOTION_SIDE` or `ORDER_SIDE` pixels), of one of two kinds:
- motion: one shape moves a fixed step per frame left, right, up or down along a path centred at a random point (so
  no single frame tells the direction); "In which direction does the shape move?"
- order: two different shapes; the first is there from the first frame, the second appears later (and the first
  may vanish before or when it does); "Which shape appears first?" / "Which shape appears second?".
Answers are uniform over their value space; multiple-choice options are the four values in random order, so the
text never tells the answer (chance is 25%).

Splits (next to the image splits, built by `shapes.ensure_shapes_dataset`; their own seeds and stamp, so the image
data is unchanged):
- video-{train,val}: shards of {"conversations", "video": [frame members]} with the frames as PNG members
  (`<key>.v0.png`, ...): open questions and A-D multiple choice (stage 3);
- video-mc-test.json + video-mc-test/<videoID>/<frame>.png: the held-out multiple choice in Video-MME's question
  layout (video_id, duration, domain, sub_category, videoID, question_id, task_type, question, options
  ["A. ...", ...], answer), each video a folder of frames (benchmark kind `shapes_video`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .shapes import (
    COLOURS,
    LETTERS,
    SHAPES,
    _png,
    draw_shape,
    jittered,
    mc_prompt,
    multiple_choice,
    write_tar_shards,
)

log = logging.getLogger(__name__)

FRAMES = 4
# Frame sizes by kind (a video's frames share one size; videos of a split differ, as real ones do).
# Order videos take the image scenes' size: their two shapes are drawn as the images draw them (radius 9-12 px,
# each centred in its 32 px quadrant), so at 16 px per visual token each shape fills its own 2 x 2 tokens as in an
# image and the shape names the images teach carry over. (At 48 px a quadrant is 1.5 tokens: a shape straddled the
# token grid, the middle row and column mixed both shapes, and "which shape appears first/second" stayed at 48%.)
# Motion videos keep 48 px (3 x 3 tokens a frame), where the tiny run learns the direction (99%); at 64 px, with
# the same small shape and step, it did not within the default run (33%).
ORDER_SIDE = 64
MOTION_SIDE = 48
STEP = 8  # pixels a moving shape travels per frame
DIRECTIONS = ("left", "right", "up", "down")
_MOVES = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
MOTION_QUESTION = "In which direction does the shape move?"
ORDER_QUESTIONS = ("Which shape appears first?", "Which shape appears second?")
VIDEO_VERSION = 3  # bump when the generator's output changes: existing video splits are then rebuilt


@dataclass(frozen=True)
class Sprite:
    """A shape drawn at `positions[k]` in frame k, or not at all where that is None."""

    shape: str
    colour: tuple[int, int, int]
    radius: int
    positions: tuple[tuple[int, int] | None, ...]


def render(sprites: list[Sprite], rng: np.random.Generator, frames: int, side: int) -> list[Image.Image]:
    background = int(rng.integers(225, 256))
    images = []
    for k in range(frames):
        image = Image.new("RGB", (side, side), (background,) * 3)
        draw = ImageDraw.Draw(image)
        for sprite in sprites:
            if sprite.positions[k] is not None:
                draw_shape(draw, sprite.shape, *sprite.positions[k], sprite.radius, sprite.colour)
        images.append(image)
    return images


def motion_video(rng: np.random.Generator, frames: int = FRAMES,
                 side: int = MOTION_SIDE) -> tuple[list[Image.Image], str]:
    """One shape moving STEP pixels a frame; its path is centred on a random point, so the middle of the motion is
    anywhere and the first frame's position does not give the direction away. Returns (frames, direction)."""
    direction = DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = jittered(list(COLOURS)[int(rng.integers(len(COLOURS)))], rng)
    r = int(rng.integers(5, 8))
    half = STEP * (frames - 1) / 2
    along = float(rng.uniform(r + half, side - 1 - r - half))
    across = int(rng.integers(r + 1, side - r - 1))
    dx, dy = _MOVES[direction]
    sign = dx or dy  # along x for left / right, along y for up / down (image rows grow downwards)
    positions = []
    for k in range(frames):
        a = round(along + sign * (k - (frames - 1) / 2) * STEP)
        positions.append((a, across) if dx else (across, a))
    return render([Sprite(shape, colour, r, tuple(positions))], rng, frames, side), direction


def order_video(rng: np.random.Generator, frames: int = FRAMES,
                side: int = ORDER_SIDE) -> tuple[list[Image.Image], str, str]:
    """Two different shapes in two quadrants: the first from frame 0 until a frame `end`, the second from a frame
    `start` >= 1 to the last (end >= start: they may overlap or not). Returns (frames, first shape, second shape)."""
    first, second = (SHAPES[int(k)] for k in rng.permutation(len(SHAPES))[:2])
    start = int(rng.integers(1, frames))
    end = int(rng.integers(start, frames + 1))
    quadrants = rng.permutation(4)[:2]
    half = side // 2
    sprites = []
    for shape, q, span in ((first, quadrants[0], range(end)), (second, quadrants[1], range(start, frames))):
        r = int(rng.integers(int(half * 0.3), int(half * 0.4) + 1))
        cx = int(q % 2) * half + half // 2 + int(rng.integers(-1, 2))
        cy = int(q // 2) * half + half // 2 + int(rng.integers(-1, 2))
        colour = jittered(list(COLOURS)[int(rng.integers(len(COLOURS)))], rng)
        sprites.append(Sprite(shape, colour, r, tuple((cx, cy) if k in span else None for k in range(frames))))
    return render(sprites, rng, frames, side), first, second


def random_video(rng: np.random.Generator) -> tuple[list[Image.Image], str, str, list[str], str]:
    """(frames, question, answer, answer space, task type): motion or order, equally often."""
    if rng.random() < 0.5:
        frames, direction = motion_video(rng)
        return frames, MOTION_QUESTION, direction, list(DIRECTIONS), "direction"
    frames, first, second = order_video(rng)
    which = int(rng.integers(2))
    return frames, ORDER_QUESTIONS[which], (first, second)[which], list(SHAPES), "order"


def chat_turns(question: str, answer: str, space: list[str], rng: np.random.Generator) -> list[dict]:
    """Open question or (60%) A-D multiple choice answered with the option's text, as the image chat data."""
    if rng.random() < 0.6:
        options, _ = multiple_choice(answer, space, rng)
        question = mc_prompt(question, options)
    return [{"from": "human", "value": f"<video>\n{question}"}, {"from": "gpt", "value": answer}]


def write_video_shards(directory: Path, split: str, n: int, seed: int, shards: int) -> list[Path]:
    rng = np.random.default_rng(seed)

    def record(k: int) -> dict:
        frames, question, answer, space, _ = random_video(rng)
        names = [f"v{i}.png" for i in range(len(frames))]
        meta = {"conversations": chat_turns(question, answer, space, rng), "video": names}
        members = {name: _png(frame) for name, frame in zip(names, frames)}
        return {"__key__": f"{split}{k:07d}", "json": json.dumps(meta).encode(), **members}

    return write_tar_shards(directory, f"video-{split}", n, shards, record)


def write_video_mc(path: Path, n: int, seed: int) -> None:
    """Held-out A-D questions in Video-MME's layout (a JSON list), each video a folder of PNG frames next to it."""
    rng = np.random.default_rng(seed)
    frames_dir = path.with_suffix("")
    rows = []
    for k in range(n):
        frames, question, answer, space, task = random_video(rng)
        options, letter = multiple_choice(answer, space, rng)
        video_id = f"shapes{k:05d}"
        folder = frames_dir / video_id
        folder.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(frames):
            (folder / f"{i}.png").write_bytes(_png(frame))
        rows.append({"video_id": f"{k:05d}", "duration": "short", "domain": "shapes", "sub_category": task,
                     "url": "", "videoID": video_id, "question_id": f"{k:05d}-1", "task_type": task,
                     "question": question, "options": [f"{LETTERS[i]}. {o}" for i, o in enumerate(options)],
                     "answer": letter})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    tmp.rename(path)


VIDEO_SPLITS = {  # name: (split, samples, seed, shards); conf/data/shapes.yaml names the same shard files
    "video-train": ("train", 8000, 11, 4),
    "video-val": ("val", 256, 12, 1),
}
VIDEO_MC_TEST = ("video-mc-test.json", 400, 13)


def ensure_shapes_videos(directory: str | Path, scale: float = 1.0) -> Path:
    """Build the video splits under `directory` unless an up-to-date copy is there (its own stamp: the image
    splits are not rebuilt for them)."""
    directory = Path(directory)
    stamp = directory / "VIDEO_DONE.json"
    spec = {"version": VIDEO_VERSION, "scale": scale, "frames": FRAMES,
            "side": {"motion": MOTION_SIDE, "order": ORDER_SIDE}, "splits": VIDEO_SPLITS,
            "mc_test": VIDEO_MC_TEST}
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(spec)):
        return directory
    log.info("building the shapes videos in %s", directory)
    for split, n, seed, shards in VIDEO_SPLITS.values():
        write_video_shards(directory, split, max(shards, int(n * scale)), seed, shards)
    name, n, seed = VIDEO_MC_TEST
    write_video_mc(directory / name, max(1, int(n * scale)), seed)
    stamp.write_text(json.dumps(spec))
    return directory
