"""Shards and held-out multiple choice for a scene generator: what `shapes_hard` and `digits` share.

A scene set is a function making one random scene (image, caption, the questions it answers unambiguously) plus
its splits. From it come, under the shapes data directory (file names start with the set's name):
- `<name>-{train,val}-NNNNNN.tar`: WebDataset shards, each record a caption ({"caption"}, `CAPTION_SHARE` of them)
  or one question ({"conversations"}: open, or A-D multiple choice 60% of the time, as `shapes.chat_sample`), so
  the source trains in any stage;
- `<name>-mc-test.tsv`: held-out A-D questions in VLMEvalKit's MMBench layout (benchmark kind `<name>`), scored
  after training with a blank-image baseline (`training/entry.py`).

Answers are uniform over their value space and options are the answer plus three random distractors in random
order, so the text alone is at chance (25%). Held-out scenes never appear in training or validation: a train or
val scene whose pixels equal a held-out one is drawn again (`heldout_fingerprints`), and a generator may keep its
own pools disjoint too (the digits split their handwriting images).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .shapes import _png, mc_prompt, multiple_choice, write_tar_shards

log = logging.getLogger(__name__)

CAPTION_SHARE = 0.25  # training records that describe the scene instead of asking about it
MC_SHARE = 0.6  # questions asked as A-D multiple choice (the rest open), as the shapes chat data


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    space: tuple[str, ...]  # every value the answer could take (the distractors come from here)
    category: str  # the held-out TSV's category column (per-category accuracy)


@dataclass(frozen=True)
class Scene:
    image: Image.Image
    caption: str
    questions: tuple[Question, ...]


@dataclass(frozen=True)
class SceneSet:
    """`make(rng, split)` draws one scene for `split` ("train", "val" or "test"). `splits`: {split: (samples,
    seed, shards)} for train and val; `mc_test`: (questions, seed). Bump `version` when the generator changes."""

    name: str
    version: int
    make: Callable[[np.random.Generator, str], Scene]
    splits: dict[str, tuple[int, int, int]]
    mc_test: tuple[int, int]
    extra_spec: tuple = ()  # whatever else the cached files depend on (stamped)

    def shard_pattern(self, split: str) -> str:
        """The brace pattern of a split's shards (what conf/data/shapes.yaml names)."""
        _, _, shards = self.splits[split]
        last = f"{shards - 1:06d}"
        return f"{self.name}-{split}-{{000000..{last}}}.tar" if shards > 1 else f"{self.name}-{split}-000000.tar"

    @property
    def mc_test_name(self) -> str:
        return f"{self.name}-mc-test.tsv"


def standard_scene_set(name: str, version: int, make: Callable[[np.random.Generator, str], Scene], first_seed: int,
                       extra_spec: tuple = ()) -> SceneSet:
    """A scene set in the sizes every built-in one has: 12,000 training scenes in 6 shards and 256 validation scenes
    in one (the shard files conf/data/shapes.yaml names), 400 held-out questions; its seeds are `first_seed` (train),
    the next (val) and the one after (the held-out questions)."""
    return SceneSet(name=name, version=version, make=make,
                    splits={"train": (12000, first_seed, 6), "val": (256, first_seed + 1, 1)},
                    mc_test=(400, first_seed + 2), extra_spec=extra_spec)


def fingerprint(image: Image.Image) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


def heldout_scenes(scene_set: SceneSet, n: int | None = None):
    """(scene, question, rng) for each held-out row, in order: the one definition the TSV and the exclusion share."""
    total, seed = scene_set.mc_test
    rng = np.random.default_rng(seed)
    for _ in range(total if n is None else n):
        scene = scene_set.make(rng, "test")
        yield scene, scene.questions[int(rng.integers(len(scene.questions)))], rng


def heldout_fingerprints(scene_set: SceneSet, n: int) -> set[str]:
    return {fingerprint(scene.image) for scene, _, _ in heldout_scenes(scene_set, n)}


def write_mc_tsv(scene_set: SceneSet, path: Path, n: int | None = None) -> None:
    """The held-out A-D questions in the MMBench TSV layout: index, question, hint, A-D, answer, category, image."""
    rows = ["index\tquestion\thint\tA\tB\tC\tD\tanswer\tcategory\timage"]
    for k, (scene, q, rng) in enumerate(heldout_scenes(scene_set, n)):
        options, letter = multiple_choice(q.answer, list(q.space), rng)
        rows.append("\t".join([str(k), q.text, "", *options, letter, q.category,
                               base64.b64encode(_png(scene.image)).decode()]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(rows) + "\n")
    tmp.rename(path)


def training_record(scene: Scene, rng: np.random.Generator) -> dict:
    """A caption, or one question (open, or multiple choice answered with the option's text, as the shapes chat
    data: VLMEvalKit-style extraction maps the text back to its letter)."""
    if rng.random() < CAPTION_SHARE:
        return {"caption": scene.caption}
    q = scene.questions[int(rng.integers(len(scene.questions)))]
    text = q.text
    if rng.random() < MC_SHARE:
        options, _ = multiple_choice(q.answer, list(q.space), rng)
        text = mc_prompt(q.text, options)
    return {"conversations": [{"from": "human", "value": f"<image>\n{text}"}, {"from": "gpt", "value": q.answer}]}


def write_split(scene_set: SceneSet, directory: Path, split: str, n: int, excluded: set[str]) -> list[Path]:
    _, seed, shards = scene_set.splits[split]
    rng = np.random.default_rng(seed)

    def record(k: int) -> dict:
        scene = scene_set.make(rng, split)
        while fingerprint(scene.image) in excluded:  # a held-out scene: never trained on
            scene = scene_set.make(rng, split)
        meta = training_record(scene, rng)
        return {"__key__": f"{split}{k:07d}", "png": _png(scene.image), "json": json.dumps(meta).encode()}

    return write_tar_shards(directory, f"{scene_set.name}-{split}", n, shards, record)


def ensure_scene_set(scene_set: SceneSet, directory: str | Path, scale: float = 1.0) -> Path:
    """Build the set's shards and held-out TSV under `directory` unless an up-to-date copy is there (its own stamp
    `<name>.DONE.json`: the other shapes splits are not rebuilt for it). `scale` shrinks every split (tests)."""
    directory = Path(directory)
    stamp = directory / f"{scene_set.name}.DONE.json"
    spec = {"version": scene_set.version, "scale": scale, "splits": scene_set.splits, "mc_test": scene_set.mc_test,
            "extra": list(scene_set.extra_spec)}
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(spec)):
        return directory
    log.info("building %s in %s", scene_set.name, directory)
    n_test = max(1, int(scene_set.mc_test[0] * scale))
    write_mc_tsv(scene_set, directory / scene_set.mc_test_name, n_test)
    excluded = heldout_fingerprints(scene_set, n_test)
    for split, (n, _, shards) in scene_set.splits.items():
        write_split(scene_set, directory, split, max(shards, int(n * scale)), excluded)
    stamp.write_text(json.dumps(spec))
    return directory
