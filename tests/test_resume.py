"""Exact resume: a training process SIGKILLed mid-epoch and resumed from its last checkpoint produces the same
losses, on the same samples, as an uninterrupted run; the W&B run continues under the same id. For Ovis 1.6 with
batches of a fixed sample count, and for Ovis2.5 (native resolution) with batches by token budget."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO
from .helpers import SMALL_DATA

pytestmark = pytest.mark.slow

STEPS, EVERY, KILL_AFTER = 10, 4, 6


def _train(run_dir, data_dir, log, *extra, expect_kill=False):
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    args = [
        "stage=s3", f"paths.data_dir={data_dir}", f"+data.prepare.scale={SMALL_DATA}",
        "data.num_workers=2", "evaluate=false", f"recipe.s3.max_steps={STEPS}",
        f"callbacks.checkpoint.every_n_train_steps={EVERY}", "stage.val_every=1000", f"hydra.run.dir={run_dir}",
        "+callbacks.steplog._target_=tests.helpers.StepLog", f"+callbacks.steplog.path={log}", *extra,
    ]
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    if expect_kill:
        assert proc.returncode == -9, proc.stderr[-4000:]
    else:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-5000:]


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


BATCHING = {
    "ovis16-batch-size": ("recipe.s3.batch_size=4",),
    # 4-6 samples of 60-95 tokens per micro-batch, their number varying with their lengths
    "ovis25-token-budget": ("model=ovis25_tiny", "data.token_budget=400"),
}


@pytest.mark.parametrize("batching", list(BATCHING))
def test_sigkill_then_resume_gives_the_uninterrupted_losses_and_samples(tmp_path, shapes_data, batching):
    config = BATCHING[batching]
    straight_log, broken_log = tmp_path / "straight.jsonl", tmp_path / "broken.jsonl"
    _train(tmp_path / "straight", shapes_data, straight_log, "logger=csv", *config)
    run = tmp_path / "broken"
    _train(run, shapes_data, broken_log, "logger=wandb", f"+callbacks.steplog.kill_after_step={KILL_AFTER}", *config,
           expect_kill=True)
    killed = _lines(broken_log)
    assert [r["step"] for r in killed] == list(range(1, KILL_AFTER + 1))
    _train(run, shapes_data, broken_log, "logger=wandb", "ckpt_path=last", *config)

    straight, lines = _lines(straight_log), _lines(broken_log)
    resumed = lines[KILL_AFTER:]
    # the resumed run restarts after the last checkpoint (step 4) and runs to the end
    assert [r["step"] for r in resumed] == list(range(EVERY + 1, STEPS + 1))
    for a, b in zip(resumed, straight[EVERY:]):
        assert b["keys"] == a["keys"], f"step {a['step']}: other samples"
        assert b["loss"] == a["loss"], f"step {a['step']}: loss {a['loss']} != {b['loss']}"
    # within the epoch no sample twice, none skipped: the checkpointed prefix plus the resumed part is the
    # uninterrupted sequence, and it has no repeats
    seen = [k for r in lines[:EVERY] + resumed for k in r["keys"]]
    assert seen == [k for r in straight for k in r["keys"]]
    assert len(seen) == len(set(seen))
    if batching == "ovis25-token-budget":  # the batches were sized by the budget, not by a count
        assert len({len(r["keys"]) for r in straight}) > 1
    # one W&B run, continued
    runs = list((run / "wandb").glob("offline-run-*"))
    ids = {p.name.rsplit("-", 1)[-1] for p in runs}
    assert len(runs) == 2 and len(ids) == 1, runs
