"""The README's main commands, run as a user runs them: `python train.py experiment=smoke` end to end (all three
stages, the held-out evaluation with its blank-image baseline, the final report), and a `stage=all` chain killed
mid-stage and resumed with `ckpt_path=last` (finished stages are not trained again)."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO
from .helpers import SMALL_DATA

pytestmark = pytest.mark.slow

ENV = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _train(*args, expect_kill=False):
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=900)
    if expect_kill:
        assert proc.returncode == -9, proc.stdout[-2000:] + proc.stderr[-4000:]
    else:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]
    return proc


def test_smoke_experiment_runs_every_stage_then_evaluates_and_reports(tmp_path):
    run = tmp_path / "run"
    proc = _train("experiment=smoke", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path / 'data'}")

    summary = json.loads((run / "run_summary.json").read_text())
    stages = summary["stages"]
    assert [s["stage"] for s in stages] == ["s1", "s2", "s3"]
    assert [s["steps"] for s in stages] == [5, 5, 40]  # the smoke recipe's steps
    for s in stages:
        assert s["train_loss"] is not None and s["train_loss"] > 0
        assert json.loads((run / s["stage"] / "summary.json").read_text()) == s
        assert (run / s["stage"] / "export" / "config.json").is_file()
    # each stage starts from the previous one: stage 3 trains on, its loss ends below stage 1's
    assert stages[2]["train_loss"] < stages[0]["train_loss"]
    heldout = summary["heldout"]
    assert heldout["n"] > 0
    assert 0.0 <= heldout["accuracy"] <= 1.0 and 0.0 <= heldout["blank_image_accuracy"] <= 1.0
    assert set(heldout) >= {"failed_extractions", "per_category", "eval_samples_per_s"}
    # only plain values: the summary is JSON through and through (no live objects leaked into it)
    assert all(not k.startswith("_") for s in stages for k in s)
    # the final report
    assert "held-out multiple choice: accuracy" in proc.stdout and "blank-image baseline" in proc.stdout
    for name in ("s1", "s2", "s3"):
        assert f"stage  {name}:" in proc.stdout


def test_killed_chain_resumes_and_skips_the_finished_stages(tmp_path, shapes_data):
    run, log = tmp_path / "run", tmp_path / "steps.jsonl"
    args = [
        f"hydra.run.dir={run}", f"paths.data_dir={shapes_data}", f"+data.prepare.scale={SMALL_DATA}",
        "data.num_workers=0", "logger=csv", "evaluate=false",
        "recipe.s1.max_steps=2", "recipe.s2.max_steps=4", "recipe.s3.max_steps=2",
        "recipe.s1.batch_size=4", "recipe.s2.batch_size=4", "recipe.s3.batch_size=4",
        "callbacks.checkpoint.every_n_train_steps=1",
        "+callbacks.steplog._target_=tests.helpers.StepLog", f"+callbacks.steplog.path={log}",
    ]
    # killed at step 3 of stage 2 (s1 has only 2 steps, so the kill cannot fire there)
    _train(*args, "+callbacks.steplog.kill_after_step=3", expect_kill=True)
    first = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["dir"].rsplit("/", 1)[-1], r["step"]) for r in first] == [
        ("s1", 1), ("s1", 2), ("s2", 1), ("s2", 2), ("s2", 3)]
    stage1_summary = (run / "s1" / "summary.json").read_text()
    stage1_ckpt = (run / "s1" / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    assert not (run / "s2" / "summary.json").exists()

    _train(*args, "ckpt_path=last")
    resumed = [json.loads(line) for line in log.read_text().splitlines()][len(first):]
    where = [(r["dir"].rsplit("/", 1)[-1], r["step"]) for r in resumed]
    # stage 1 is not trained again; stage 2 continues from its last checkpoint (saved after step 2: the kill came
    # before step 3's save), stage 3 starts fresh
    assert where == [("s2", 3), ("s2", 4), ("s3", 1), ("s3", 2)]
    assert (run / "s1" / "summary.json").read_text() == stage1_summary
    assert (run / "s1" / "checkpoints" / "last.ckpt").stat().st_mtime_ns == stage1_ckpt
    summary = json.loads((run / "run_summary.json").read_text())
    assert [(s["stage"], s["steps"]) for s in summary["stages"]] == [("s1", 2), ("s2", 4), ("s3", 2)]
