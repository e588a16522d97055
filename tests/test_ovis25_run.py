"""`python train.py model=ovis25_tiny` end to end, as a user runs it (tiny step counts): stages 1-3 train on the
shapes images, videos and thinking samples, and the run ends with held-out accuracy on images and on videos, each
with its blank-input baseline, printed and written to run_summary.json."""

import json
from collections import defaultdict

import pytest

from .helpers import SMALL_DATA
from .test_train_commands import _train

pytestmark = pytest.mark.slow


def test_ovis25_tiny_trains_on_images_videos_and_thinking_then_scores_both_heldout_sets(tmp_path, shapes_data):
    run, contents = tmp_path / "run", tmp_path / "batches.jsonl"
    proc = _train(
        "model=ovis25_tiny", f"hydra.run.dir={run}", f"paths.data_dir={shapes_data}",
        f"+data.prepare.scale={SMALL_DATA}", "data.num_workers=0", "logger=csv",
        "recipe.s1.max_steps=2", "recipe.s2.max_steps=2", "recipe.s3.max_steps=6",
        "recipe.s1.batch_size=4", "recipe.s2.batch_size=4", "recipe.s3.batch_size=8",
        "+callbacks.contents._target_=tests.helpers.BatchContents", f"+callbacks.contents.path={contents}",
    )
    summary = json.loads((run / "run_summary.json").read_text())
    assert [(s["stage"], s["steps"]) for s in summary["stages"]] == [("s1", 2), ("s2", 2), ("s3", 6)]

    seen = defaultdict(lambda: defaultdict(int))
    for line in contents.read_text().splitlines():
        batch = json.loads(line)
        for key in ("samples", "images", "videos", "thinking"):
            seen[batch["dir"].rsplit("/", 1)[-1]][key] += batch[key]
    # stages 1-2: captions of images only; stage 3: the recipe's mix of images, videos and thinking answers
    for stage in ("s1", "s2"):
        assert seen[stage]["images"] == seen[stage]["samples"] > 0 and not seen[stage]["videos"]
        assert not seen[stage]["thinking"]
    assert seen["s3"]["images"] > 0 and seen["s3"]["videos"] > 0 and seen["s3"]["thinking"] > 0

    for key, benchmark, categories in (("heldout", "shapes", {"colour", "count", "position", "shape"}),
                                       ("heldout_video", "shapes_video", {"direction", "order"})):
        result = summary[key]
        assert result["benchmark"] == benchmark and result["n"] > 0
        assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["blank_image_accuracy"] <= 1.0
        assert set(result["per_category"]) == categories
    assert "held-out multiple choice: accuracy" in proc.stdout and "blank-image baseline" in proc.stdout
    assert "held-out multiple choice (videos): accuracy" in proc.stdout and "blank-video baseline" in proc.stdout

    # evals/run.py on the stage's checkpoint takes the processor from its export: the tiny pixel range (16^2..64^2),
    # not the original code's 448^2 minimum, which turned each 64 px image into 784 visual tokens (garbage answers)
    from ovis_lit.evaluation.loading import load_for_eval

    _, processor, _ = load_for_eval(run / "s3" / "checkpoints" / "last.ckpt")
    pp = processor.image_preprocessor
    assert (pp.min_pixels, pp.max_pixels) == (256, 4096)


def test_thinking_samples_are_built_only_for_models_with_thinking_and_leave_the_other_splits_alone(tmp_path):
    import hashlib
    import tarfile

    from ovis_lit.data.shapes import ensure_shapes_dataset

    def digests(directory):  # every member's bytes (a tar's headers hold the time it was written)
        out = {}
        for path in sorted(directory.glob("*.tar")):
            with tarfile.open(path) as tar:
                out[path.name] = [(m.name, hashlib.sha256(tar.extractfile(m).read()).hexdigest())
                                  for m in tar.getmembers()]
        return out

    plain = ensure_shapes_dataset(tmp_path / "plain", scale=0.002)
    thinking = ensure_shapes_dataset(tmp_path / "thinking", scale=0.002, thinking=True)
    assert not list(plain.glob("think-*"))
    built = digests(thinking)
    assert {k: v for k, v in built.items() if not k.startswith("think-")} == digests(plain)  # Ovis 1.6's data
    answers = []
    for shard in sorted(thinking.glob("think-train-*.tar")):
        with tarfile.open(shard) as tar:
            answers += [json.loads(tar.extractfile(m).read())["conversations"][1]["value"]
                        for m in tar.getmembers() if m.name.endswith(".json")]
    assert answers and all(a.startswith("<think>\n") and "\n</think>\n\n" in a for a in answers)
