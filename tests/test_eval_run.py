"""evals/run.py end to end with a tiny random model: checkpoint loading (.ckpt, export), batch-size and run-to-run
invariance of greedy predictions, result files, W&B logging."""

import json
import sys
import types

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from ovis_lit.evaluation.benchmarks import build_benchmark
from ovis_lit.evaluation.loading import load_for_eval
from ovis_lit.evaluation.report import log_to_wandb
from ovis_lit.evaluation.suite import run_benchmark
from ovis_lit.interop.original_export import export_original
from ovis_lit.processing.image import ImagePreprocessor
from ovis_lit.processing.processor import OvisProcessor
from ovis_lit.processing.tokenizer import byte_level_tokenizer

from .conftest import REPO
from .test_eval_fixtures import COLOURS, png_b64, write_tsv
from .tiny import tiny_model, tiny_spec

SIZES = [(16, 16), (90, 30), (30, 90), (42, 42), (100, 100), (8, 60), (70, 20), (50, 50), (24, 36), (12, 12)]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = tiny_model(llm="qwen2").eval()
    processor = OvisProcessor(byte_level_tokenizer("qwen"), "qwen", ImagePreprocessor(side=42), tokens_per_crop=4)
    return model, processor


@pytest.fixture(scope="module")
def mmbench_file(tmp_path_factory):
    """Ten questions whose images differ in size, so prompts differ in length and batches get padded."""
    rows = []
    for k, size in enumerate(SIZES):
        options = COLOURS[k % 4 : k % 4 + 4]
        rows.append({"index": k, "question": f"What colour is shape {k}?", "hint": "A hint." if k % 3 == 0 else "",
                     **dict(zip("ABCD", options)), "answer": "ABCD"[k % 4], "category": "colour",
                     "image": png_b64(options[k % 4], size)})
    return write_tsv(tmp_path_factory.mktemp("bench") / "MMBench_DEV_EN.tsv", rows)


@pytest.mark.parametrize("which", ["tiny", "reference"])
def test_batch_size_and_repeats_do_not_change_predictions(which, request, mmbench_file):
    """Greedy answers at batch 1, 8 and 8 again are identical. The qwen2 tiny model tends to repeat one token
    whatever the input, so the reference fixture (a tiny random Gemma2 Ovis whose answers vary with the prompt)
    checks that padding really leaves every answer alone."""
    model, processor = request.getfixturevalue(which)
    runs = [run_benchmark(model, processor, build_benchmark("mmbench", path=mmbench_file, max_new_tokens=6),
                          batch_size=b, progress=False) for b in (1, 8, 8)]
    answers = [[p["answer"] for p in r.scores.predictions] for r in runs]
    assert len(answers[0]) == 10 and all(answers[0])
    assert answers[0] == answers[1] == answers[2]
    assert runs[0].scores.metrics == runs[1].scores.metrics == runs[2].scores.metrics
    if which == "reference":
        assert len(set(answers[0])) >= 5  # the answers depend on the prompt: the comparison means something


@pytest.fixture(scope="module")
def stage_dir(tiny, tmp_path_factory):
    """A train.py stage directory: checkpoints/last.ckpt (Lightning layout) and export/ (original Ovis layout)."""
    model, processor = tiny
    stage = tmp_path_factory.mktemp("run") / "stage3"
    (stage / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"model": {"spec": tiny_spec(llm="qwen2"), "pretrained": None}}},
               stage / "checkpoints" / "last.ckpt")
    export_original(model, processor, stage / "export", multimodal_max_length=1024)
    return stage


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_loads_a_lightning_checkpoint_and_an_export(tiny, stage_dir):
    model, _ = tiny
    from_ckpt, processor, info = load_for_eval(stage_dir / "checkpoints" / "last.ckpt")
    assert info["format"].startswith("lightning checkpoint") and processor.chat_format == "qwen"
    assert _same_weights(model, from_ckpt) and not from_ckpt.training
    from_export, processor, info = load_for_eval(stage_dir / "export")
    assert info["format"] == "ovis directory" and _same_weights(model, from_export)


def test_checkpoint_without_processor_is_a_clear_error(stage_dir, tmp_path):
    lone = tmp_path / "elsewhere" / "checkpoints"
    lone.mkdir(parents=True)
    (lone / "x.ckpt").write_bytes((stage_dir / "checkpoints" / "last.ckpt").read_bytes())
    with pytest.raises(FileNotFoundError, match="processor_dir="):
        load_for_eval(lone / "x.ckpt")
    _, processor, _ = load_for_eval(lone / "x.ckpt", processor=stage_dir / "export")
    assert processor.chat_format == "qwen"
    (lone.parent / ".hydra").mkdir()  # a run directory: the processor is rebuilt from the run's processor config
    (lone.parent / ".hydra" / "config.yaml").write_text(
        "processor:\n  _target_: ovis_lit.processing.build.crop_processor\n  _partial_: true\n  tokenizer:\n"
        "    _target_: ovis_lit.processing.tokenizer.byte_level_tokenizer\n    chat_format: qwen\n"
        "  chat_format: qwen\n  image: {side: 42}\n  max_partition: 9\n  multi_image_max_partition: 1\n")
    _, processor, _ = load_for_eval(lone / "x.ckpt")
    assert processor.image_preprocessor.side == 42
    with pytest.raises(FileNotFoundError, match="neither"):
        load_for_eval(tmp_path / "nothing")


def _eval_cfg(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("eval", overrides=overrides)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def test_evaluate_writes_identical_results_twice(stage_dir, mmbench_file, tmp_path, capsys):
    from ovis_lit.data import shapes
    from ovis_lit.evaluation.entry import evaluate

    shapes_file = tmp_path / "mc-test.tsv"
    shapes.write_mc_tsv(shapes_file, 6, 5)
    outputs = []
    for run in ("a", "b"):
        cfg = _eval_cfg([
            f"checkpoint={stage_dir / 'checkpoints' / 'last.ckpt'}", "benchmark=[shapes,mmbench]",
            f"benchmarks.shapes.path={shapes_file}", f"benchmarks.mmbench.path={mmbench_file}",
            "benchmarks.mmbench.max_new_tokens=6", f"output_dir={tmp_path / run}", "progress=false", "device=cpu",
        ])
        metrics = evaluate(cfg)
        outputs.append(tmp_path / run)
        assert set(metrics) == {"shapes", "mmbench"}
    printed = capsys.readouterr().out
    assert "| shapes |" in printed and "| mmbench |" in printed
    a, b = (json.loads((o / "summary.json").read_text()) for o in outputs)
    for name in ("shapes", "mmbench"):
        assert a["benchmarks"][name]["metrics"] == b["benchmarks"][name]["metrics"]
        assert (outputs[0] / "predictions" / f"{name}.jsonl").read_text() == \
            (outputs[1] / "predictions" / f"{name}.jsonl").read_text()
    assert a["benchmarks"]["shapes"]["prompt"].endswith(shapes.MC_INSTRUCTION)  # the pinned prompt is stored
    assert a["batch_size"] == 8 and a["decoding"] == "greedy"
    first = json.loads((outputs[0] / "predictions" / "mmbench.jsonl").read_text().splitlines()[0])
    assert {"key", "prompt", "answer", "extracted", "gold", "correct"} <= set(first)
    assert (outputs[0] / "summary.md").read_text().count("| mmbench |") >= 2


def test_wandb_only_when_a_run_is_active_or_named(tiny, mmbench_file, monkeypatch):
    calls = {}

    class FakeRun:
        def log(self, payload):
            calls["log"] = payload

        def finish(self):
            calls["finished"] = True

    def init(**kwargs):
        calls["init"] = kwargs
        return FakeRun()

    fake = types.SimpleNamespace(run=None, init=init, Table=lambda columns, data: ("table", columns, len(data)))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    result = run_benchmark(*tiny, build_benchmark("mmbench", path=mmbench_file, max_new_tokens=2), progress=False)
    assert log_to_wandb([result], {"name": None, "id": None}, {}) is False and not calls
    assert log_to_wandb([result], {"project": "p", "name": "eval-tiny", "mode": "offline"}, {"checkpoint": "x"})
    assert calls["init"]["mode"] == "offline" and calls["finished"]
    assert "eval/mmbench/accuracy" in calls["log"]
    assert calls["log"]["eval/mmbench/predictions"][2] == 10
    calls.clear()
    fake.run = FakeRun()  # e.g. the training run, in the same process: logged there, not finished
    assert log_to_wandb([result], {}, {}) and "init" not in calls and "finished" not in calls


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "conf" / "benchmark").glob("*.yaml")))
def test_every_benchmark_config_composes_and_builds(name):
    from omegaconf import OmegaConf

    from ovis_lit.evaluation.entry import benchmark_options

    cfg = _eval_cfg(["checkpoint=x", f"benchmark=[{name}]"])
    specs = OmegaConf.to_container(cfg.benchmarks, resolve=True)
    assert list(specs) == [name]
    kind, options = benchmark_options(name, specs[name])
    bench = build_benchmark(kind, **options)  # every option in the file is one the benchmark takes
    assert bench.describe()["prompt"] and bench.max_new_tokens > 0
