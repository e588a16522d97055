"""Estimate per-GPU memory of a training config, and say whether it fits.

    python scripts/plan_memory.py model=ovis_9b stage=s3 trainer=fsdp trainer.devices=8 --gpu-gib 80
    python scripts/plan_memory.py model=ovis_tiny stage=s3 --crops 1 --text-tokens 60 --measure   # check on the CPU
    python scripts/plan_memory.py experiment=ovis25_finetune --gpu-gib 80   # Ovis2.5-9B: one image at max_pixels
    python scripts/plan_memory.py model=ovis25_9b stage=s3 recipe.s3.batch_size=1 --methods   # full / LoRA / QLoRA

Overrides are the same as train.py's. The workload per sample (text tokens, crops) defaults to the stage's
max length with `--crops` crops. Native-resolution models (Ovis2.5): `--crops` images per sample (default 1) of
`--pixels` pixels each (default: the config's processor.image.max_pixels). `--measure` runs one real forward+backward+AdamW step of the config on the CPU
(small configs only) and prints its measured peak memory next to the estimate. `--methods`: one device, a table of
full fine-tuning, LoRA and QLoRA (model.lora's settings, or the defaults: r 16 on the LLM and ViT) against 24, 48
and 80 GiB GPUs (`--gpus`), trainable parameters with fp32 AdamW states, frozen ones in the model's dtype.
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
    from ovis_lit.processing.native_resolution import NATIVE_IMAGE_END_ID, NATIVE_IMAGE_START_ID
    from ovis_lit.training.freezing import apply_trainable

    model = build_ovis(spec)
    apply_trainable(model, trainable)
    model.set_activation_checkpointing(**checkpointing)
    vt = model.visual_tokenizer
    ids = []
    native = vt.native_resolution
    per_crop = work.tokens_per_image if native else vt.tokens_per_crop()
    begin, end = (NATIVE_IMAGE_START_ID, NATIVE_IMAGE_END_ID) if native else (INDICATOR_IDS[0], INDICATOR_IDS[-1])
    for _ in range(work.crops):
        ids += [begin, *[IMAGE_ATOM_ID] * per_crop, end]  # one -300 per visual token
    ids += [5] * work.text_tokens
    input_ids = torch.tensor([ids] * work.batch_size)
    labels = input_ids.clone()
    n_sup = int(work.text_tokens * work.supervised_fraction)
    labels[:, : len(ids) - n_sup] = IGNORE_ID
    grids = None
    if native:  # packed patches: each image a 1 x hs x (hs * tokens) patch grid
        cfg, hs = vt.backbone.config, vt.hidden_stride
        n_images = work.batch_size * work.crops
        grids = torch.tensor([[1, hs, hs * per_crop]] * n_images)
        patch_dim = cfg.num_channels * cfg.temporal_patch_size * cfg.patch_size**2
        pixels = torch.randn(n_images * per_crop * hs * hs, patch_dim)
    else:
        side = vt.backbone.config.image_size
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
    out = model(input_ids, torch.ones_like(input_ids), labels, pixels, grid_thws=grids)
    out.loss.backward()
    optimizer.step()
    running.clear()
    sampler.join()
    return max(peak[0], _resident_bytes()) - before


def print_methods(spec, stage, work: Workload, compute: str, checkpointing: dict[str, str], cfg,
                  gpus: list[float]) -> None:
    """Which of full fine-tuning, LoRA and QLoRA fits one GPU of each size, for this config and micro-batch."""
    from dataclasses import replace

    from ovis_lit.model.lora import LoraSettings

    configured = cfg.model.get("lora")
    lora = LoraSettings.from_config(OmegaConf.to_container(configured, resolve=True)) if configured else LoraSettings()
    methods = {"full": None, f"LoRA r={lora.r}": replace(lora, quantize=None),
               f"QLoRA r={lora.r} (nf4)": replace(lora, quantize="nf4")}
    frozen = spec.get("dtype") or "float32"
    label = checkpointing["vision"] if checkpointing["vision"] == checkpointing["llm"] else str(checkpointing)
    print(f"{cfg.model.name} {stage['name']} on one GPU: micro-batch {work.batch_size} x ({work.text_tokens} text + "
          f"{work.crops} x {work.tokens_per_image or 'crop'} visual tokens), compute {compute}, activation "
          f"checkpointing {label}; trainable parameters, gradients and AdamW states in float32, frozen parameters in "
          f"{frozen}; LoRA targets {lora.target}; a GPU fits when the total is under 90% of it")
    head = f"{'method':<22}{'trainable':>12}{'weights':>10}{'grads+AdamW':>13}{'activations':>13}{'total':>10}"
    head += "".join(f"{f'{g:g} GiB':>9}" for g in gpus)
    print(head)
    for name, settings in methods.items():
        p = plan(spec, list(stage["trainable"]), work, 1, False, compute, "float32", checkpointing, lora=settings,
                 frozen_dtype=frozen)
        fits = "".join(f"{'fits' if p.total <= 0.9 * g * GiB else 'no':>9}" for g in gpus)
        print(f"{name:<22}{p.details['trainable'] / 1e6:>10.1f} M{p.parameters / GiB:>8.1f} G"
              f"{(p.gradients + p.optimizer) / GiB:>11.1f} G{(p.activations + p.gather_buffers) / GiB:>11.1f} G"
              f"{p.total / GiB:>8.1f} G{fits}")


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--gpu-gib", type=float, default=80.0)
    parser.add_argument("--crops", type=int, default=None,
                        help="crops per sample (default: the max partition + 1); native resolution: images (default 1)")
    parser.add_argument("--pixels", type=int, default=None,
                        help="native resolution: pixels per image (default: processor.image.max_pixels)")
    parser.add_argument("--text-tokens", type=int, default=None, help="text tokens per sample")
    parser.add_argument("--measure", action="store_true")
    parser.add_argument("--methods", action="store_true", help="full / LoRA / QLoRA on one device, against --gpus")
    parser.add_argument("--gpus", default="24,48,80", help="GPU sizes (GiB) for --methods")
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
    native = str(cfg.processor._target_).endswith("native_processor")
    if native:  # one visual token per (patch * hidden_stride)^2 pixels
        image = cfg.processor.image
        pixels = args.pixels if args.pixels is not None else int(image.max_pixels)
        tpc = max(1, pixels // (image.patch_size * image.hidden_stride) ** 2)
        crops = args.crops if args.crops is not None else 1
    else:
        tpc = instantiate(cfg.model).tokens_per_crop()
        crops = args.crops if args.crops is not None else cfg.processor.max_partition + 1
    max_length = stage["data"]["max_length"]
    text = args.text_tokens if args.text_tokens is not None else max(16, max_length - crops * (tpc + 3))
    work = Workload(batch_size=stage["data"]["batch_size"], text_tokens=text, crops=crops,
                    tokens_per_image=tpc if native else None)
    ac = cfg.recipe.activation_checkpointing
    checkpointing = {"vision": checkpoint_mode(ac.get("vision")), "llm": checkpoint_mode(ac.get("llm"))}
    if args.methods:
        print_methods(spec, stage, work, compute, checkpointing, cfg, [float(g) for g in args.gpus.split(",")])
        return
    master = "float32" if sharded else None
    lora = OmegaConf.to_container(cfg.model.lora, resolve=True) if cfg.model.get("lora") else None
    p = plan(spec, list(stage["trainable"]), work, world, sharded, compute, master, checkpointing, lora=lora)
    print(f"{cfg.model.name} {stage['name']}: {p.details['parameters'] / 1e9:.3f} B parameters "
          f"({p.details['trainable'] / 1e9:.3f} B trainable), {'FSDP' if sharded else 'replicated'} over {world} "
          f"device(s), micro-batch {work.batch_size} x ({work.text_tokens} text + {work.crops} "
          f"{'images' if native else 'crops'} x {tpc}) tokens, "
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
