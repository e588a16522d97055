"""The data that needs vision: `shapes_hard` (fine detail) and `digits` (real handwriting), as training sources and
held-out A-D benchmarks: deterministic, train and held-out disjoint, answers right on hand-checked scenes, and a
text-only answerer at chance."""

import base64
import io
import json
import tarfile
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from ovis_lit.data import digits, scene_sets, shapes_hard
from ovis_lit.data.scene_sets import Question, Scene, SceneSet
from ovis_lit.data.shapes import ensure_shapes_dataset
from ovis_lit.evaluation.benchmarks import build_benchmark

pytest.importorskip("sklearn")

# The first six held-out rows of each set, checked by eye on the pictures (2026-12-01): (question, answer text)
HAND_CHECKED = {
    "shapes_hard": [
        ("Which shape is furthest right?", "cross"),  # red circle, green triangle, orange cross at the right
        ("Which shape is in the middle, from left to right?", "triangle"),  # square, triangle, circle
        ("What shape is the small one?", "square"),  # a large red triangle, a small green square
        ("How many shapes are there?", "three"),  # three small green triangles
        ("Which shape is in the middle, from left to right?", "circle"),  # triangle, circle, square
        ("What shape is the small one?", "triangle"),  # a large purple cross, a small orange triangle
    ],
    "digits": [
        ("Which digit is in the bottom right?", "5"),  # 3 6 / 2 5
        ("Where is the digit 2?", "top right"),  # 4 2 / 1 7
        ("Which digit is in the bottom right?", "8"),  # 7 3 / 9 8
        ("Where is the digit 0?", "bottom left"),  # 8 6 / 0 2
        ("Which digit is in the top right?", "5"),  # 9 5 / 4 6
        ("Which digit is in the top left?", "1"),  # 1 7 / 0 8
    ],
}
SETS = {"shapes_hard": shapes_hard.SHAPES_HARD, "digits": digits.DIGIT_SCENES}


def _rows(path):
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def _image(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB")


@pytest.mark.parametrize("name", sorted(SETS))
def test_held_out_answers_match_the_hand_checked_scenes(name, tmp_path):
    scene_sets.write_mc_tsv(SETS[name], tmp_path / "t.tsv", n=6)
    got = [(r["question"], r[r["answer"]]) for r in _rows(tmp_path / "t.tsv")]
    assert got == HAND_CHECKED[name]


def test_count_answers_equal_the_shapes_drawn():
    """Every count scene's answer is the number of separate blobs of ink in its picture."""
    rng = np.random.default_rng(0)
    for _ in range(12):
        scene = shapes_hard.count_scene(rng)
        ink = np.asarray(scene.image).astype(int)
        mask = np.abs(ink - ink[0, 0]).sum(-1) > 30  # the background is one grey
        assert _blobs(mask) == shapes_hard.COUNTS.index(scene.questions[0].answer) + 1


def _blobs(mask: np.ndarray) -> int:
    seen, blobs = np.zeros_like(mask), 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        blobs += 1
        stack = [start]
        while stack:
            y, x = stack.pop()
            if 0 <= y < mask.shape[0] and 0 <= x < mask.shape[1] and mask[y, x] and not seen[y, x]:
                seen[y, x] = True
                stack += [(y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)]
    return blobs


def test_digit_pools_split_every_class_without_overlap():
    _, labels = digits._digits()
    pools = digits.pools()
    every = np.concatenate([idx for split in pools.values() for idx in split.values()])
    assert sorted(every.tolist()) == list(range(len(labels)))  # each image in exactly one pool
    for split, share in digits.POOL_SHARES.items():
        for digit, idx in pools[split].items():
            assert (labels[idx] == digit).all()
            assert abs(len(idx) - share * (labels == digit).sum()) <= 1


def test_held_out_digit_scenes_use_only_held_out_handwriting(monkeypatch):
    """Each digit drawn in a test scene comes from the test pool (and a train scene's from the train pool)."""
    drawn = []
    real_choice = np.random.Generator.choice

    class Spy(np.random.Generator):
        def choice(self, a, *args, **kwargs):
            picked = real_choice(self, a, *args, **kwargs)
            drawn.append(int(picked))
            return picked

    pools = digits.pools()
    for split in ("test", "train"):
        drawn.clear()
        rng = Spy(np.random.PCG64(1))
        for _ in range(5):
            digits.make_scene(rng, split)
        allowed = set(np.concatenate(list(pools[split].values())).tolist())
        assert len(drawn) == 20 and set(drawn) <= allowed


def _toy(colours):
    """A scene set with only `len(colours)` possible pictures: the held-out exclusion has something to do."""

    def make(rng, split):
        colour = colours[int(rng.integers(len(colours)))]
        return Scene(Image.new("RGB", (8, 8), colour), f"A {colour} square.",
                     (Question("What colour?", colour, ("red", "green", "blue", "white"), "colour"),))

    return SceneSet("toy", 1, make, {"train": (40, 1, 2), "val": (8, 2, 1)}, (1, 3))


def test_training_and_validation_never_hold_a_held_out_scene(tmp_path):
    toy = _toy(["red", "green", "blue"])
    scene_sets.ensure_scene_set(toy, tmp_path)
    test_images = {_image(r["image"]).tobytes() for r in _rows(tmp_path / "toy-mc-test.tsv")}
    trained = set()
    for shard in tmp_path.glob("toy-*.tar"):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".png"):
                    trained.add(Image.open(io.BytesIO(tar.extractfile(member).read())).convert("RGB").tobytes())
    assert len(test_images) == 1 and len(trained) == 2 and not trained & test_images


def test_builds_are_deterministic_cached_and_versioned(tmp_path):
    ensure_shapes_dataset(tmp_path / "a", scale=0.004, sources=["caption", "chat"])
    assert not list((tmp_path / "a").glob("digits*")) + list((tmp_path / "a").glob("shapes_hard*"))  # unless used
    for d in ("a", "b"):
        ensure_shapes_dataset(tmp_path / d, scale=0.004, sources=["shapes_hard", "digits", "caption"])
    for name in ("shapes_hard-mc-test.tsv", "digits-mc-test.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for name in ("digits-val-000000.tar", "shapes_hard-train-000005.tar"):  # the same members (tar headers hold
        assert _members(tmp_path / "a" / name) == _members(tmp_path / "b" / name)  # the time of writing)
    stamp = tmp_path / "a" / "digits.DONE.json"
    before = (tmp_path / "a" / "digits-mc-test.tsv").stat().st_mtime_ns
    scene_sets.ensure_scene_set(digits.DIGIT_SCENES, tmp_path / "a", scale=0.004)  # up to date: untouched
    assert (tmp_path / "a" / "digits-mc-test.tsv").stat().st_mtime_ns == before
    assert json.loads(stamp.read_text())["version"] == digits.VERSION


def _members(shard):
    with tarfile.open(shard) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_records_are_captions_and_questions_the_sample_builder_reads(tmp_path):
    scene_sets.ensure_scene_set(digits.DIGIT_SCENES, tmp_path, scale=0.004)
    kinds = Counter()
    with tarfile.open(tmp_path / "digits-train-000000.tar") as tar:
        for member in tar.getmembers():
            if member.name.endswith(".json"):
                meta = json.loads(tar.extractfile(member).read())
                kinds["caption" if "caption" in meta else "question"] += 1
                if "conversations" in meta:
                    assert meta["conversations"][0]["value"].startswith("<image>\n")
    assert kinds["caption"] and kinds["question"]


@pytest.mark.parametrize("name", sorted(SETS))
def test_the_question_text_alone_is_at_chance(name):
    """The best text-only answerer (per question text, the answer most often right in 600 training scenes) scores
    near chance on the held-out rows, as a blank image should."""
    scene_set = SETS[name]
    rng = np.random.default_rng(99)
    prior = defaultdict(Counter)
    for _ in range(600):
        for q in scene_set.make(rng, "train").questions:
            prior[q.text][q.answer] += 1
    right = total = 0
    for scene, q, qrng in scene_sets.heldout_scenes(scene_set, 300):
        options, _ = scene_sets.multiple_choice(q.answer, list(q.space), qrng)
        guess = max(options, key=lambda o: prior[q.text][o])
        right += guess == q.answer
        total += 1
    assert 0.15 <= right / total <= 0.35, right / total


def test_held_out_benchmarks_build_on_first_use_and_score_like_shapes(tmp_path):
    for kind in SETS:
        bench = build_benchmark(kind, path=tmp_path / f"{kind}-mc-test.tsv")
        items = bench.load()
        assert len(items) == SETS[kind].mc_test[0]
        assert items[0].prompt.endswith("Please select the correct answer from the options above.")
        answers = [it.target["options"][it.target["answer"]] for it in items]  # the option's text, as trained
        assert bench.score(items, answers).metrics["accuracy"] == 1.0
