"""The built-in dataset: deterministic images of coloured shapes, with captions, questions and a held-out
multiple-choice split that needs the image (a text-only model stays at chance).

A scene holds 1-4 copies of one shape in one colour, each in its own quadrant of a 64 x 64 image, so every
question has exactly one answer: the colour, the shape, how many, and (for a single shape) where. Answers are uniform over their value space and multiple-choice options are the
answer plus random distractors in random order, so the question text carries no information about the answer.

Splits:
- caption-{train,val}: WebDataset shards of {"caption"} + image (stages 1-2);
- chat-{train,val}: shards of LLaVA-style {"conversations"} + image: open questions and A-D multiple choice, and a
  few text-only conversations (stage 3);
- mc-test.tsv: the held-out multiple-choice split in VLMEvalKit's MMBench TSV layout (base64 PNG images);
- video-*: short videos with questions that need more than one frame (`shapes_video`);
- think-{train,val}: chat questions whose answers think first (`<think>` the scene's caption `</think>` the answer),
  for models whose chat format has thinking (Qwen3: Ovis2.5); built only for them, the other splits unchanged;
- shapes_hard-* and digits-*: scenes that need fine detail (`shapes_hard`) and handwritten digits (`digits`), with
  their own held-out TSVs (`scene_sets`); built only when a stage draws from them.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

COLOURS = {
    "red": (215, 40, 40),
    "green": (40, 160, 60),
    "blue": (45, 85, 225),
    "yellow": (235, 200, 25),
    "purple": (140, 55, 175),
    "orange": (245, 135, 30),
}
SHAPES = ("circle", "square", "triangle", "cross")
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")
NUMBERS = ("one", "two", "three", "four")
LETTERS = "ABCD"
MC_INSTRUCTION = "Please select the correct answer from the options above."
TEXT_ONLY_SHARE = 0.05
CAPTION_TEMPLATE = "<image>\nDescription:\n"
VERSION = 2  # bump when the generator's output changes: existing shards are then rebuilt


@dataclass(frozen=True)
class Item:
    shape: str
    colour: str
    quadrant: int


def draw_scene(items: list[Item], rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Shapes near the centre of their quadrant (a few pixels of jitter), so a small ViT sees each one whole."""
    background = int(rng.integers(225, 256))
    image = Image.new("RGB", (size, size), (background,) * 3)
    draw = ImageDraw.Draw(image)
    half = size // 2
    for item in items:
        r = int(rng.integers(int(half * 0.3), int(half * 0.4) + 1))  # radius: 9-12 px at 64 px
        cx = (item.quadrant % 2) * half + half // 2 + int(rng.integers(-2, 3))
        cy = (item.quadrant // 2) * half + half // 2 + int(rng.integers(-2, 3))
        draw_shape(draw, item.shape, cx, cy, r, jittered(item.colour, rng))
    return image


def jittered(colour: str, rng: np.random.Generator) -> tuple[int, int, int]:
    """The colour's RGB with each channel moved by up to 20 (so colours are not single values)."""
    return tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS[colour])


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: int, cy: int, r: int, fill: tuple[int, int, int]) -> None:
    """One shape of radius `r` centred on (cx, cy)."""
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    else:  # cross
        w = max(2, r // 2)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)


def random_scene(rng: np.random.Generator) -> list[Item]:
    n = int(rng.integers(1, 5))
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    return [Item(shape, colour, int(q)) for q in sorted(rng.permutation(4)[:n])]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(items: list[Item]) -> str:
    first, n = items[0], len(items)
    where = [f"the {QUADRANTS[i.quadrant]}" for i in items]
    places = where[0] if n == 1 else ", ".join(where[:-1]) + " and " + where[-1]
    if n == 1:
        return f"{_article(first.colour).capitalize()} {first.colour} {first.shape} at {places}."
    plural = first.shape + ("es" if first.shape.endswith("s") else "s")
    return f"{NUMBERS[n - 1].capitalize()} {first.colour} {plural} at {places}."


def questions(items: list[Item]) -> list[tuple[str, str, list[str]]]:
    """(question, answer, answer space) for every question the scene answers unambiguously."""
    first, n = items[0], len(items)
    qs = [
        ("How many shapes are there?", NUMBERS[n - 1], list(NUMBERS)),
        ("What colour is the shape?" if n == 1 else "What colour are the shapes?", first.colour, list(COLOURS)),
        ("What shape is shown?", first.shape, list(SHAPES)),
    ]
    if n == 1:
        qs.append(("Where is the shape?", QUADRANTS[first.quadrant], list(QUADRANTS)))
    return qs


def multiple_choice(answer: str, space: list[str], rng: np.random.Generator) -> tuple[list[str], str]:
    """Four options: the answer and three distractors from the same space, shuffled; returns (options, letter)."""
    distractors = [x for x in space if x != answer]
    options = [answer] + [distractors[k] for k in rng.permutation(len(distractors))[:3]]
    options = [options[k] for k in rng.permutation(4)]
    return options, LETTERS[options.index(answer)]


def mc_prompt(question: str, options: list[str]) -> str:
    return "\n".join([question] + [f"{LETTERS[k]}. {o}" for k, o in enumerate(options)] + [MC_INSTRUCTION])


def chat_sample(items: list[Item], rng: np.random.Generator) -> list[dict]:
    """One question about the image, open or (60%) multiple choice. The tiny model answers multiple choice with
    the chosen option's text, which VLMEvalKit-style extraction maps back to its letter."""
    q, a, space = questions(items)[int(rng.integers(len(questions(items))))]
    if rng.random() < 0.6:
        options, _ = multiple_choice(a, space, rng)
        q = mc_prompt(q, options)
    return [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]


def thinking_sample(items: list[Item], rng: np.random.Generator) -> list[dict]:
    """A chat question whose answer reasons first: the thinking describes the scene (its caption), then answers, in
    the Qwen3 layout `<think>\n...\n</think>\n\nanswer` (the whole turn, thinking included, is supervised)."""
    turns = chat_sample(items, rng)
    turns[1]["value"] = f"<think>\n{caption(items)}\n</think>\n\n{turns[1]['value']}"
    return turns


def preference_sample(items: list[Item], rng: np.random.Generator) -> dict:
    """A preference pair about the image (`data.preference`): a chat question, the right answer chosen and a wrong
    one from the same answer space rejected."""
    turns = chat_sample(items, rng)
    answer = turns[1]["value"]
    space = next(space for q, a, space in questions(items) if a == answer and q in turns[0]["value"])
    wrong = [x for x in space if x != answer]
    return {"prompt": turns[:1], "chosen": answer, "rejected": wrong[int(rng.integers(len(wrong)))]}


def text_only_sample(rng: np.random.Generator) -> list[dict]:
    """A question answered from the text alone (instruction data is never all multimodal)."""
    space = [list(COLOURS), list(SHAPES), list(QUADRANTS), list(NUMBERS)][int(rng.integers(4))]
    answer = space[int(rng.integers(len(space)))]
    options, _ = multiple_choice(answer, space, rng)
    return [{"from": "human", "value": f"The answer is {answer}.\n" + mc_prompt("Which option is it?", options)},
            {"from": "gpt", "value": answer}]


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def write_tar_shards(directory: Path, prefix: str, n: int, shards: int, record_of: Callable[[int], dict]) -> list[Path]:
    """Records `record_of(0)` .. `record_of(n - 1)`, in order, spread over `shards` tar files `<prefix>-NNNNNN.tar`;
    each file is visible only once complete (an interrupted build leaves no half shard behind)."""
    import webdataset as wds

    directory.mkdir(parents=True, exist_ok=True)
    per_shard = -(-n // shards)
    paths = []
    for shard in range(shards):
        path = directory / f"{prefix}-{shard:06d}.tar"
        tmp = path.with_suffix(".tar.tmp")
        with wds.TarWriter(str(tmp)) as sink:
            for k in range(shard * per_shard, min(n, (shard + 1) * per_shard)):
                sink.write(record_of(k))
        tmp.rename(path)
        paths.append(path)
    return paths


def write_shards(directory: Path, split: str, n: int, seed: int, kind: str, shards: int) -> list[Path]:
    rng = np.random.default_rng(seed)

    def record(k: int) -> dict:
        key = f"{split}{k:07d}"
        if kind == "chat" and rng.random() < TEXT_ONLY_SHARE:
            return {"__key__": key, "json": json.dumps({"conversations": text_only_sample(rng)}).encode()}
        items = random_scene(rng)
        image = draw_scene(items, rng)
        if kind == "caption":
            meta = {"caption": caption(items)}
        elif kind == "preference":
            meta = preference_sample(items, rng)
        else:
            meta = {"conversations": (thinking_sample if kind == "think" else chat_sample)(items, rng)}
        return {"__key__": key, "png": _png(image), "json": json.dumps(meta).encode()}

    return write_tar_shards(directory, f"{kind}-{split}", n, shards, record)


def write_mc_tsv(path: Path, n: int, seed: int) -> None:
    """Held-out A-D questions in the MMBench TSV layout: index, question, hint, A-D, answer, category, image."""
    rng = np.random.default_rng(seed)
    rows = ["\t".join(["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "image"])]
    for k in range(n):
        items = random_scene(rng)
        image = draw_scene(items, rng)
        pool = questions(items)
        q, a, space = pool[int(rng.integers(len(pool)))]
        options, letter = multiple_choice(a, space, rng)
        category = space_name(space)
        rows.append("\t".join([str(k), q, "", *options, letter, category, base64.b64encode(_png(image)).decode()]))
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(rows) + "\n")
    tmp.rename(path)


def space_name(space: list[str]) -> str:
    if space == list(SHAPES):
        return "shape"
    if space == list(QUADRANTS):
        return "position"
    if space == list(NUMBERS):
        return "count"
    return "colour"


SPLITS = {  # name: (kind, split, samples, seed, shards); conf/data/shapes.yaml names the same shard files
    "caption-train": ("caption", "train", 12000, 1, 6),
    "caption-val": ("caption", "val", 256, 2, 1),
    "chat-train": ("chat", "train", 24000, 3, 12),
    "chat-val": ("chat", "val", 256, 4, 1),
}
MC_TEST = ("mc-test.tsv", 400, 5)
THINK_SPLITS = {  # built only for models with thinking (their own seeds and stamp: the splits above are unchanged)
    "think-train": ("think", "train", 6000, 6, 3),
    "think-val": ("think", "val", 128, 7, 1),
}


PREFERENCE_SPLITS = {  # built only for stage=dpo (their own seeds and stamp: the splits above are unchanged)
    "preference-train": ("preference", "train", 4000, 8, 2),
    "preference-val": ("preference", "val", 128, 9, 1),
}


def ensure_shapes_dataset(directory: str | Path, scale: float = 1.0, videos: bool = False,
                          thinking: bool = False, preference: bool = False,
                          sources: tuple[str, ...] | list[str] = ()) -> Path:
    """Build the dataset under `directory` unless an up-to-date copy is there (with `videos`, the video splits of
    `shapes_video` too; with `thinking`, the thinking splits; each under its own stamp: the DataModule asks for them
    for models with a video input / a chat format with thinking). `sources`: the data sources the stage draws from;
    the scene sets among them (`shapes_hard`, `digits`: SCENE_SETS) are built too, each under its own stamp.
    Returns the directory. Processes building into one directory at once (the connector experiment's parallel
    runs, two train.py on one data_dir) take turns under a lock file: the first builds, the others find its stamps."""
    from filelock import FileLock

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(str(directory / ".build.lock")):
        return _ensure_shapes_dataset(directory, scale, videos, thinking, preference, sources)


def _ensure_shapes_dataset(directory: Path, scale: float, videos: bool, thinking: bool, preference: bool,
                           sources: tuple[str, ...] | list[str]) -> Path:
    for name in sources:
        if name in SCENE_SETS:
            ensure_scene_set(name, directory, scale)
    if videos:
        from .shapes_video import ensure_shapes_videos

        ensure_shapes_videos(directory, scale)
    if thinking:
        ensure_thinking_samples(directory, scale)
    if preference:
        ensure_preference_pairs(directory, scale)
    stamp = directory / "DONE.json"
    spec = {"version": VERSION, "scale": scale, "splits": SPLITS, "mc_test": MC_TEST}
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(spec)):
        return directory
    log.info("building the shapes dataset in %s", directory)
    for kind, split, n, seed, shards in SPLITS.values():
        write_shards(directory, split, max(shards, int(n * scale)), seed, kind, shards)
    name, n, seed = MC_TEST
    write_mc_tsv(directory / name, max(1, int(n * scale)), seed)
    stamp.write_text(json.dumps(spec))
    return directory


# The scene sets built next to the shapes data when a stage draws from them (data sources of these names in
# conf/data/shapes.yaml; held-out benchmarks of these kinds)
SCENE_SETS = ("shapes_hard", "digits")


def scene_set(name: str):
    """The `scene_sets.SceneSet` of a name in SCENE_SETS (imported on use: digits needs scikit-learn)."""
    if name == "shapes_hard":
        from .shapes_hard import SHAPES_HARD

        return SHAPES_HARD
    if name == "digits":
        from .digits import DIGIT_SCENES

        return DIGIT_SCENES
    raise ValueError(f"unknown scene set {name!r}; choose from {SCENE_SETS}")


def ensure_scene_set(name: str, directory: str | Path, scale: float = 1.0) -> Path:
    from .scene_sets import ensure_scene_set as ensure

    return ensure(scene_set(name), directory, scale)


def ensure_thinking_samples(directory: str | Path, scale: float = 1.0) -> Path:
    """Build the thinking splits under `directory` unless an up-to-date copy is there (their own stamp)."""
    return _ensure_stamped_splits(directory, "THINK_DONE.json", THINK_SPLITS, scale, "thinking samples")


def ensure_preference_pairs(directory: str | Path, scale: float = 1.0) -> Path:
    """Build the preference splits (right answer chosen, a wrong one rejected) unless an up-to-date copy is there."""
    return _ensure_stamped_splits(directory, "PREFERENCE_DONE.json", PREFERENCE_SPLITS, scale, "preference pairs")


def _ensure_stamped_splits(directory: str | Path, stamp_name: str, splits: dict, scale: float, what: str) -> Path:
    """Write `splits` ({name: (kind, split, n, seed, shards)}) under `directory` unless its stamp file `stamp_name`
    says they were written by this VERSION at this scale; the stamp is written last, so an interrupted build is
    redone."""
    directory = Path(directory)
    stamp = directory / stamp_name
    spec = {"version": VERSION, "scale": scale, "splits": splits}
    if stamp.is_file() and json.loads(stamp.read_text()) == json.loads(json.dumps(spec)):
        return directory
    log.info("building the shapes %s in %s", what, directory)
    for kind, split, n, seed, shards in splits.values():
        write_shards(directory, split, max(shards, int(n * scale)), seed, kind, shards)
    stamp.write_text(json.dumps(spec))
    return directory


def corpus() -> list[str]:
    """Text the tiny tokenizer learns its merges from: every word and phrase the dataset uses."""
    rng = np.random.default_rng(0)
    texts = [MC_INSTRUCTION, CAPTION_TEMPLATE, "Describe the image.", "What is in the picture?"]
    for _ in range(400):
        items = random_scene(rng)
        texts.append(caption(items))
        for q, a, space in questions(items):
            texts += [mc_prompt(q, multiple_choice(a, space, rng)[0]), a]
        texts.append(text_only_sample(rng)[0]["value"])
    return texts


def tokenizer(vocab_size: int = 512, chat_format: str = "qwen"):
    """The tiny models' tokenizer: byte-level BPE learnt from `corpus()` (deterministic), ChatML specials
    (`chat_format` qwen3: and the thinking tags)."""
    from ..processing.tokenizer import byte_level_tokenizer

    return byte_level_tokenizer(chat_format, corpus(), vocab_size)
