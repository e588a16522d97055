"""Composing the real configs for tests, pointed at small generated data."""

import json
import os
import signal
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

REPO = Path(__file__).resolve().parents[1]
SMALL_DATA = 0.03  # fraction of the full shapes dataset the tests generate


def compose_train(overrides: list[str], output_dir: Path, data_dir: Path):
    """conf/train.yaml with test overrides; hydra:runtime interpolations replaced by explicit paths."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"paths.output_dir={output_dir}",
                f"paths.data_dir={data_dir}",
                f"+data.prepare.scale={SMALL_DATA}",
                "logger=csv",
                "data.num_workers=0",
                *overrides,
            ],
        )
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def resolved(cfg, key):
    return OmegaConf.to_container(OmegaConf.select(cfg, key), resolve=True)



class StepLog(L.Callback):
    """A callback for subprocess tests (`+callbacks.steplog._target_=tests.helpers.StepLog`): appends one JSON line
    per optimiser step (step, loss, the records of the batch) and can SIGKILL its own process after a given step,
    a deterministic stand-in for a node dying mid-epoch."""

    def __init__(self, path: str, kill_after_step: int | None = None):
        self.path, self.kill_after_step = path, kill_after_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        line = {"step": trainer.global_step, "loss": float(outputs["loss"]), "keys": batch.get("keys"),
                "dir": str(trainer.default_root_dir)}  # which stage of a chain (each has its own directory)
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        if self.kill_after_step is not None and trainer.global_step == self.kill_after_step:
            os.kill(os.getpid(), signal.SIGKILL)


class BatchContents(L.Callback):
    """A callback for subprocess tests (`+callbacks.contents._target_=tests.helpers.BatchContents`): appends one
    JSON line per training batch with what it held: samples, images, videos (Ovis2.5's visual inputs with more than
    one frame) and samples whose supervised tokens include a thinking block."""

    def __init__(self, path: str):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        grids = batch.get("grid_thws")
        frames = [] if grids is None else grids[:, 0].tolist()
        think = trainer.datamodule.processor.tokenizer.convert_tokens_to_ids("<think>")
        labels = batch["labels"]
        line = {"dir": str(trainer.default_root_dir), "samples": int(labels.shape[0]),
                "images": sum(1 for t in frames if t == 1), "videos": sum(1 for t in frames if t > 1),
                "thinking": int((labels == think).any(dim=1).sum())}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")


class FsdpRuns:
    """The fits of tests/fsdp_job.py that the FSDP tests compare, each once on one process (`single`) and once
    sharded over two (`fsdp`), run by two launches in all (conftest's `fsdp_runs`): a launch of its own per fit
    would spend most of its time starting Python, torch and Lightning.

    Jobs, as {name: fsdp_job arguments}: the same fit in both plans, except that the sharded runs of `tied` and
    `lora` also recompute activations (selective checkpointing must not change the numbers) and `resumed` (Lightning's
    resume from `main`'s sharded checkpoint) is sharded only. `budget` goes first: its batches are made before the
    process group exists."""

    def __init__(self, root: Path, data_dir: Path, pretrained: Path):
        self.root = root
        common = {
            "budget": ["--budget-data", str(data_dir), "--steps", "6"],  # ovis25_tiny, token-budget batches
            "main": [],  # stage 2 (LLM frozen), 10 steps
            "tied": ["--tied", "--steps", "5"],  # stage 3, tied input/output embeddings
            "pretrained": ["--pretrained", str(pretrained), "--steps", "4"],  # an original Ovis 1.6 checkpoint
            "lora": ["--lora", "--steps", "4"],  # stage 3 with LoRA adapters, dropout on
        }
        selective = ["--checkpointing", "selective"]
        self.plans = {
            "single": common,
            "fsdp": {**common, "tied": common["tied"] + selective, "lora": common["lora"] + selective,
                     "resumed": ["--steps", "12", "--resume", str(self.dir("fsdp", "main") / "ckpt")]},
        }

    def run(self, timeout: int = 1200) -> "FsdpRuns":
        import subprocess
        import sys

        env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
        for strategy, devices in (("single", 1), ("fsdp", 2)):
            plan = self.root / f"{strategy}.json"
            plan.write_text(json.dumps(self.plans[strategy]))
            proc = subprocess.run(
                [sys.executable, "-m", "tests.fsdp_job", "--strategy", strategy, "--devices", str(devices),
                 "--plan", str(plan), "--out", str(self.root / strategy)],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        return self

    def dir(self, strategy: str, job: str) -> Path:
        return self.root / strategy / job

    def result(self, strategy: str, job: str) -> tuple[list[float], list[dict]]:
        """(rank 0's loss per step, every rank's report) of one job."""
        out = self.dir(strategy, job)
        return json.loads((out / "losses.json").read_text()), json.loads((out / "report.json").read_text())
