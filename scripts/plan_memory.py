"""Estimate per-GPU memory of a training config, and say whether it fits.

    python scripts/plan_memory.py model=ovis_9b stage=s3 trainer=fsdp trainer.devices=8 --gpu-gib 80
    python scripts/plan_memory.py model=ovis_tiny stage=s3 --crops 1 --text-tokens 60 --measure   # check on the CPU

Overrides are the same as train.py's. The workload per sample (text tokens, crops) defaults to the stage's
max length with `--crops` crops. `--measure` runs one real forward+backward+AdamW step of the config on the CPU
(small configs only) and prints its measured peak memory next to the estimate.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from ovis_lit.model.checkpointing import checkpoint_mode  # noqa: E402
from ovis_lit.training.memory import GiB, Workload, plan  # noqa: E402


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/plan", *overrides])


def measure(spec: dict, trainable: list[str], work: Workload, checkpointing: dict[str, str]) -> float:
    """Peak resident memory (bytes) added by one training step, above the built model."""
    from ovis_lit.constants import IGNORE_ID, IMAGE_ATOM_ID, INDICATOR_IDS
    from ovis_lit.model.build import build_ovis
    from ovis_lit.training.freezing import apply_trainable

    model = build_ovis(spec)
    apply_trainable(model, trainable)
    model.set_activation_checkpointing(**checkpointing)
    side = model.visual_tokenizer.backbone.config.image_size
    ids = []
    per_crop = model.visual_tokenizer.tokens_per_crop()
    for _ in range(work.crops):
        ids += [INDICATOR_IDS[0], *[IMAGE_ATOM_ID] * per_crop, INDICATOR_IDS[-1]]  # one -300 per visual token
    ids += [5] * work.text_tokens
    input_ids = torch.tensor([ids] * work.batch_size)
    labels = input_ids.clone()
    n_sup = int(work.text_tokens * work.supervised_fraction)
    labels[:, : len(ids) - n_sup] = IGNORE_ID
    pixels = torch.randn(work.batch_size * work.crops, 3, side, side)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    gc.collect()
    # Sample the resident set while the step runs (the process's high-water mark may already be higher from
    # earlier work, e.g. building the model, so ru_maxrss cannot be used).
    before = _resident_bytes()
    peak = [before]
    running = threading.Event()
    running.set()

    def sample():
        while running.is_set():
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = model(input_ids, torch.ones_like(input_ids), labels, pixels)
    out.loss.backward()
    optimizer.step()
    running.clear()
    sampler.join()
    return max(peak[0], _resident_bytes()) - before


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--gpu-gib", type=float, default=80.0)
    parser.add_argument("--crops", type=int, default=None, help="crops per sample (default: the max partition + 1)")
    parser.add_argument("--text-tokens", type=int, default=None, help="text tokens per sample")
    parser.add_argument("--measure", action="store_true")
    args = parser.parse_intermixed_args()

    cfg = _compose(args.overrides)
    spec = OmegaConf.to_container(cfg.model.spec, resolve=True)
    if cfg.stage.get("chain"):
        sys.exit("pick one stage (stage=s1, s2 or s3): the stages train different parts")
    from hydra.utils import instantiate

    from ovis_lit.training.run import stage_settings

    stage = stage_settings(cfg)
    strategy = str(OmegaConf.select(cfg, "trainer.strategy._target_", default="") or "")
    sharded = strategy.endswith("FSDP2Strategy")
    world = int(cfg.trainer.get("devices", 1) if str(cfg.trainer.get("devices")).isdigit() else 1) * int(
        cfg.trainer.get("num_nodes", 1) or 1)
    precision = str(cfg.trainer.precision)
    compute = "bfloat16" if (sharded and cfg.module.fsdp.param_dtype == "bfloat16") or precision.startswith("bf16") else (
        spec.get("dtype") or "float32")
    crops = args.crops if args.crops is not None else cfg.processor.max_partition + 1
    tpc = instantiate(cfg.model).tokens_per_crop()
    max_length = stage["data"]["max_length"]
    text = args.text_tokens if args.text_tokens is not None else max(16, max_length - crops * (tpc + 3))
    work = Workload(batch_size=stage["data"]["batch_size"], text_tokens=text, crops=crops)
    ac = cfg.recipe.activation_checkpointing
    checkpointing = {"vision": checkpoint_mode(ac.get("vision")), "llm": checkpoint_mode(ac.get("llm"))}
    master = "float32" if sharded else None
    p = plan(spec, list(stage["trainable"]), work, world, sharded, compute, master, checkpointing)
    print(f"{cfg.model.name} {stage['name']}: {p.details['parameters'] / 1e9:.3f} B parameters "
          f"({p.details['trainable'] / 1e9:.3f} B trainable), {'FSDP' if sharded else 'replicated'} over {world} "
          f"device(s), micro-batch {work.batch_size} x ({work.text_tokens} text + {work.crops} crops x {tpc}) tokens, "
          f"compute {compute}")
    print(p.table(args.gpu_gib))
    if args.measure:
        if sharded or world > 1:
            sys.exit("--measure runs one process: use a single-device config")
        measured = measure(spec, list(stage["trainable"]), work, p.checkpointing)
        estimate = p.gradients + p.optimizer + p.activations
        print(f"measured on the CPU, one step above the model: {measured / GiB:.3f} GiB; "
              f"estimate (gradients + optimizer + activations): {estimate / GiB:.3f} GiB "
              f"(ratio {estimate / max(measured, 1):.2f})")


if __name__ == "__main__":
    main()
