"""train.py end to end in subprocesses: a 2-process CPU DDP fit, and a Hydra multirun of two jobs."""

import json
import os
import subprocess
import sys

import pytest

from .conftest import REPO
from .helpers import SMALL_DATA

pytestmark = pytest.mark.slow


def _train(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def _small(data_dir) -> list[str]:
    return [
        f"paths.data_dir={data_dir}", f"+data.prepare.scale={SMALL_DATA}", "data.num_workers=0", "logger=csv",
        "evaluate=false", "recipe.s3.batch_size=4",
    ]


@pytest.mark.parametrize("trainer", ["ddp", "fsdp"])
def test_two_process_cpu_fit(trainer, tmp_path, shapes_data):
    run_dir = tmp_path / trainer
    proc = _train([
        "stage=s3", f"trainer={trainer}", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true",
        "recipe.s3.max_steps=4", f"hydra.run.dir={run_dir}", *_small(shapes_data),
    ])
    assert proc.stdout.count("ovis-lit run finished") == 1  # rank 0 reports, once
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4
    assert summary["samples"] == 4 * 4 * 2  # steps x per-rank batch x 2 ranks
    assert summary["train_loss"] is not None and summary["train_loss"] == summary["train_loss"]  # not NaN
    last = run_dir / "checkpoints" / "last.ckpt"
    if trainer == "fsdp":  # one shard per rank, and one consolidated export
        assert sorted(p.name for p in last.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
        # evals/run.py reads the sharded checkpoint, and it holds the exported (final) weights
        import torch

        from ovis_lit.evaluation.loading import load_for_eval
        from ovis_lit.interop.original import load_original

        model, _, info = load_for_eval(last)
        exported, _ = load_original(run_dir / "export")
        assert info["format"].startswith("sharded")
        for (name, a), b in zip(model.state_dict().items(), exported.state_dict().values()):
            assert torch.equal(a, b), name
        # ckpt_path=last finds the sharded last.ckpt (a directory) and resumes from it through FSDP2Strategy
        resumed = _train([
            "stage=s3", f"trainer={trainer}", "trainer.accelerator=cpu", "trainer.devices=2",
            "trainer.precision=32-true", "recipe.s3.max_steps=6", f"hydra.run.dir={run_dir}", "ckpt_path=last",
            *_small(shapes_data),
        ])
        assert "Restored all states from the checkpoint" in resumed.stdout + resumed.stderr
        assert json.loads((run_dir / "summary.json").read_text())["steps"] == 6
    else:
        assert last.is_file()
    assert (run_dir / "export" / "config.json").is_file()


def test_hydra_multirun_of_two_jobs(tmp_path, shapes_data):
    sweep_dir = tmp_path / "sweep"
    _train([
        "-m", "stage=s3", "recipe.s3.max_steps=2", "recipe.s3.lr=1e-3,2e-3", f"hydra.sweep.dir={sweep_dir}",
        *_small(shapes_data),
    ])
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    for job, lr in zip(jobs, ["0.001", "0.002"]):
        assert json.loads((job / "summary.json").read_text())["steps"] == 2
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        assert f"recipe.s3.lr={lr}" in overrides


def test_a_finished_run_closes_its_process_group(tmp_path):
    # Left open, Gloo's threads can abort the process at exit (SIGABRT) after a run that succeeded.
    import torch.distributed as dist

    from ovis_lit.training.entry import close_process_group

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    close_process_group()
    assert not dist.is_initialized()
    close_process_group()  # nothing to close: a no-op
