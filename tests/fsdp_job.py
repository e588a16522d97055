"""A small Lightning fit of a tiny Ovis in stage 2 (LLM frozen), run as its own script (`python -m tests.fsdp_job`)
because multi-process strategies re-launch the script they run in. Every rank reads the same fixed batches, so
the averaged gradient, and with it every loss, must equal a one-process run's.

Writes to --out: losses.json (rank 0's loss per step), report.json (sharding facts gathered on every rank),
full.safetensors (the consolidated weights after training), and a sharded checkpoint (ckpt/) under FSDP.
--resume: Lightning's resume (ckpt_path) from a checkpoint, e.g. the ckpt/ of an earlier run.
--plan FILE: several jobs, one after the other, in one launch (tests/conftest.py's `fsdp_runs`).
--budget-data DIR: Ovis2.5 tiny (model=ovis25_tiny) on shapes data in DIR, batched by a token budget: every rank
makes the same batches (before the process group exists, the stream reads as one process), so their number of
samples varies from step to step as in a budget-batched run.
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lightning as L
import torch
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor

from ovis_lit.interop.original import original_tokens_per_crop, read_original_config
from ovis_lit.model.build import build_ovis
from ovis_lit.model.source import ModelSource
from ovis_lit.training.entry import close_process_group
from ovis_lit.training.module import OvisLitModule
from ovis_lit.training.run import full_state_dict
from ovis_lit.training.strategies import FSDP2Strategy

from .test_model_invariants import _batch
from .tiny import tiny_spec

STAGE3 = {"name": "s3", "trainable": ["all"], "lr": 1e-3, "module_lr": {}, "warmup_ratio": 0.0, "min_lr_ratio": 1.0}
STAGE2 = {"name": "s2", "trainable": ["visual_tokenizer", "vte"], "lr": 3e-3, "module_lr": {}, "warmup_ratio": 0.0,
          "min_lr_ratio": 1.0}

LORA = {"r": 4, "alpha": 8, "dropout": 0.1, "target": ["llm", "visual_tokenizer.backbone"]}


def spec(tied: bool = False) -> dict:
    out = tiny_spec(llm="qwen2", vocab=64)
    out["llm"]["config"]["tie_word_embeddings"] = tied
    return out


class Record(L.Callback):
    def __init__(self, out: Path):
        self.out, self.losses = out, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module):
        model = pl_module.model
        params = dict(model.named_parameters())
        optimizer = trainer.optimizers[0]
        with_state = {n for n, p in params.items() if optimizer.state.get(p)}
        report = {
            "world": trainer.world_size,
            "global_step": trainer.global_step,
            "dtensor": sum(isinstance(p, DTensor) for p in params.values()),
            "params": len(params),
            "local_numel": sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params.values()),
            "full_numel": sum(p.numel() for p in params.values()),
            "with_optimizer_state": sorted(with_state),
            "trainable": sorted(n for n, p in params.items() if p.requires_grad),
            "frozen_with_grad": sorted(n for n, p in params.items() if not p.requires_grad and p.grad is not None),
        }
        reports = [None] * trainer.world_size
        if trainer.world_size > 1:
            torch.distributed.all_gather_object(reports, report)
        else:
            reports = [report]
        state = full_state_dict(model) or {k: v.detach().clone() for k, v in model.state_dict().items()}
        if trainer.is_global_zero:
            (self.out / "losses.json").write_text(json.dumps(self.losses))
            (self.out / "report.json").write_text(json.dumps(reports))
            save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, self.out / "full.safetensors")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--strategy", choices=["fsdp", "single"], default="fsdp")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tied", action="store_true", help="tie the LLM's input and output embeddings")
    parser.add_argument("--pretrained", help="an original Ovis checkpoint directory to start from")
    parser.add_argument("--checkpointing", default="none", help="activation checkpointing of the ViT and LLM layers")
    parser.add_argument("--resume", help="a checkpoint to resume from (Lightning's ckpt_path)")
    parser.add_argument("--budget-data", help="shapes data directory: ovis25_tiny with token-budget batches")
    parser.add_argument("--lora", action="store_true", help="stage 3 with LoRA adapters (dropout on) on the ViT and LLM")
    parser.add_argument("--plan", help="a JSON file of jobs, {name: [arguments]}: each runs in turn in this process "
                        "(in this process group), writing to --out/name; --strategy and --devices apply to all")
    parser.add_argument("--out", required=True)
    return parser


def main() -> None:
    parser = _parser()
    args = parser.parse_args()
    if args.plan:
        # Several fits in one launch: starting Python, torch and Lightning (and, under FSDP, the second process and
        # the process group) costs more than a tiny fit. Lightning launches the other rank once, for the first
        # fit, and that rank runs this same plan; the process group then stays up for the fits after it.
        shared = ["--strategy", args.strategy, "--devices", str(args.devices)]
        for name, job in json.loads(Path(args.plan).read_text()).items():
            run(parser.parse_args([*job, *shared, "--out", str(Path(args.out) / name)]))
    else:
        run(args)
    close_process_group()  # else the job can abort at exit after passing (Gloo threads outlive the interpreter)


def run(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    batches = []
    if args.budget_data:
        if torch.distributed.is_initialized():  # the ranks would read different shards, not the same batches
            raise RuntimeError("--budget-data makes its batches before the process group exists: put its job first")
        model, batches = budget_batches(Path(args.budget_data), out, args.steps)
    elif args.pretrained:
        per_crop = original_tokens_per_crop(read_original_config(args.pretrained))
    else:
        per_crop = build_ovis(spec(args.tied), device="meta").visual_tokenizer.tokens_per_crop()
    for _ in range(args.steps if not batches else 0):
        ids, mask, labels, pixels = _batch(None, crops_per_sample=(2, 0, 1, 3), pad_extra=(0, 3, 1, 0),
                                           per_crop=per_crop)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pixels})
    L.seed_everything(0)
    # a hand-made module (not build_stage): synthetic batches and a spec no config holds, the same FSDP2 path
    if not args.budget_data:
        model = ModelSource(pretrained=args.pretrained, spec={"dtype": "float32"}) if args.pretrained else ModelSource(
            spec=spec(args.tied), lora=LORA if args.lora else None)
    module = OvisLitModule(model, STAGE3 if args.tied or args.budget_data or args.lora else STAGE2,
                           fsdp={"param_dtype": None, "reduce_dtype": "float32"},
                           activation_checkpointing={"vision": args.checkpointing, "llm": args.checkpointing})
    strategy = FSDP2Strategy() if args.strategy == "fsdp" else "auto"
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, strategy=strategy, max_steps=args.steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        use_distributed_sampler=False,  # every rank reads the same batches
        gradient_clip_val=1.0, callbacks=[Record(out)],
    )
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None), ckpt_path=args.resume,
                weights_only=True)
    trainer.save_checkpoint(out / "ckpt")


def budget_batches(data_dir: Path, out: Path, steps: int, budget: int = 500) -> tuple[ModelSource, list[dict]]:
    """(ovis25_tiny's model config, `steps` batches of its DataModule under a token budget of `budget` tokens)."""
    from omegaconf import OmegaConf

    from ovis_lit.training.run import build_processor, instantiate_datamodule

    from .helpers import compose_train

    cfg = compose_train(["stage=s3", "model=ovis25_tiny", f"data.token_budget={budget}"], out / "compose", data_dir)
    dm = instantiate_datamodule(cfg)
    dm.attach(build_processor(cfg))
    it = iter(dm.train_dataloader())
    keep = ("input_ids", "attention_mask", "labels", "pixel_values", "grid_thws")
    batches = [{k: v for k, v in next(it).items() if k in keep} for _ in range(steps)]
    (out / "batch_sizes.json").write_text(json.dumps([b["input_ids"].shape[0] for b in batches]))
    return ModelSource(spec=OmegaConf.to_container(cfg.model.spec, resolve=True)), batches


if __name__ == "__main__":
    main()
