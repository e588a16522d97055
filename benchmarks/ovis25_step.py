"""Ovis2.5 training step (forward + backward) at native resolution: ovis-lit vs the original Ovis2.5 code.

    python benchmarks/ovis25_step.py                                  # ovis-lit only
    python benchmarks/ovis25_step.py --original-path /src/Ovis:/stubs  # also the original, run from that PYTHONPATH

The original needs transformers 4.51 and flash-attn; on a CPU put `benchmarks/original_stubs` (a `deepspeed` stub:
the original imports it at module load and uses none of it without ZeRO), `../shared/reference/flash_attn_cpu` (the
CPU stand-in of flash-attn that made the reference fixture), a transformers 4.51.3 install (`pip install --no-deps
--target DIR transformers==4.51.3 tokenizers==0.21.1 huggingface_hub==0.30.2`) and the original repository's root
on `--original-path`, e.g. `benchmarks/original_stubs:../shared/reference/flash_attn_cpu:DIR:/src/Ovis`. Both load the same random checkpoint,
written by ovis-lit in the original layout, and take the same batch: 8 images of 8 different native sizes (16 to
192 visual tokens each), 40 text tokens per sample with labels on the last 10. Each side runs in its own
subprocess: peak RSS belongs to one model. Config: NaViT 4 layers (3 windowed, 1 full), hidden 256, MLP 1024,
4 heads, patch 16, hidden_stride 2, window 112 px; V = 16,384; Qwen3-style LLM 4 layers, hidden 512, MLP 1536,
8 heads, 4 KV heads, vocab 32,000, untied; fp32, 2 threads.

Measured (2 shared CPU cores, original at GitHub AIDC-AI/Ovis 4de4946; median of 3 steps): ovis-lit 16.5 s,
peak RSS 1729 MB (the step adds 1098 MB); original 53.2 s, 2484 MB (adds 1852 MB): time 0.31x, peak RSS 0.70x,
step memory 0.59x; the two losses are equal.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "ovis25-reference-tiny" / "checkpoint"  # its tokenizer and image processor

GRIDS = [(14, 14), (28, 20), (10, 40), (20, 20), (32, 24), (8, 8), (16, 30), (24, 24)]  # (h, w) in patches
TEXT, LABELED, TEXT_VOCAB, VISUAL_VOCAB = 40, 10, 32000, 16384
VIT = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
       "image_size": 512, "patch_size": 16, "num_patches": 1024, "hidden_stride": 2, "window_size": 112,
       "fullatt_block_indexes": "3", "temporal_patch_size": 1, "preserve_original_pe": True, "use_rope": True}
LLM = {"model_type": "qwen3", "vocab_size": TEXT_VOCAB, "hidden_size": 512, "intermediate_size": 1536,
       "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 64,
       "max_position_embeddings": 4096, "tie_word_embeddings": False, "pad_token_id": 0, "eos_token_id": 2}


def _batch():
    import torch

    g = torch.Generator().manual_seed(0)
    rows, labels = [], []
    for h, w in GRIDS:
        text = torch.randint(10, TEXT_VOCAB, (TEXT,), generator=g).tolist()
        ids = text[:5] + [-301] + [-300] * (h * w // 4) + [-302] + text[5:]
        rows.append(ids)
        labels.append([-100] * (len(ids) - LABELED) + ids[-LABELED:])
    longest = max(len(r) for r in rows)
    input_ids = torch.zeros(len(rows), longest, dtype=torch.long)
    label_ids = torch.full((len(rows), longest), -100, dtype=torch.long)
    mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        input_ids[i, : len(r)], label_ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), torch.tensor(lab), 1
    grid_thws = torch.tensor([[1, h, w] for h, w in GRIDS])
    pixel_values = torch.randn(int(grid_thws.prod(dim=1).sum()), 3 * 16 * 16, generator=g)
    return input_ids, mask, label_ids, pixel_values, grid_thws


def write_checkpoint(directory: Path) -> None:
    import torch

    sys.path.insert(0, str(REPO))

    from ovis_lit.interop.ovis25 import export_ovis25
    from ovis_lit.model.build import build_ovis
    from ovis_lit.processing.native_processor import NativeOvisProcessor

    torch.manual_seed(0)
    spec = {"backbone": {"model_type": "siglip2_navit", "config": VIT}, "llm": {"config": LLM},
            "visual_vocab_size": VISUAL_VOCAB, "n_indicators": 4, "hidden_stride": 2}
    model = build_ovis(spec)
    vit_config = json.loads((FIXTURE / "config.json").read_text())["vit_config"]
    processor = NativeOvisProcessor.from_pretrained(FIXTURE, "qwen3", vit_config)
    export_ovis25(model, processor, directory)


def measure(side: str, directory: str, steps: int) -> dict:
    import torch

    torch.set_num_threads(2)
    input_ids, mask, labels, pixel_values, grid_thws = _batch()
    if side == "ours":
        sys.path.insert(0, str(REPO))
        from ovis_lit.interop.ovis25 import load_ovis25

        model, _ = load_ovis25(directory)
        model.train()

        def step():
            return model(input_ids, mask, labels, pixel_values, grid_thws=grid_thws).loss
    else:
        from ovis.model.modeling_ovis import Ovis

        model = Ovis.from_pretrained(directory, torch_dtype=torch.float32, trust_remote_code=False).train()

        def step():
            return model(input_ids=input_ids, attention_mask=mask, pixel_values=pixel_values, grid_thws=grid_thws,
                         labels=labels).loss

    loaded_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times, loss = [], None
    for i in range(steps + 1):  # the first step warms up
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = step()
        loss.backward()
        if i:
            times.append(time.perf_counter() - start)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"side": side, "step_s": statistics.median(times), "loss": loss.item(), "peak_rss_mb": peak_mb,
            "step_rss_mb": peak_mb - loaded_mb}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--original-path", default=None, help="PYTHONPATH for the original code (see docstring)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--run", nargs=2, metavar=("SIDE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(measure(args.run[0], args.run[1], args.steps)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoint(Path(tmp))
        sides = [("ours", {"PYTHONPATH": str(REPO)})]
        if args.original_path:
            sides.append(("original", {"PYTHONPATH": args.original_path}))
        results = {}
        for side, env in sides:
            out = subprocess.run(
                [sys.executable, __file__, "--run", side, tmp, "--steps", str(args.steps)],
                env={**os.environ, **env}, capture_output=True, text=True, check=False,
            )
            if out.returncode:
                sys.exit(f"{side} failed:\n{out.stderr[-3000:]}")
            results[side] = json.loads(out.stdout.strip().splitlines()[-1])
            r = results[side]
            print(f"{side:9s} step {r['step_s']:.3f} s  peak RSS {r['peak_rss_mb']:.0f} MB "
                  f"(step adds {r['step_rss_mb']:.0f} MB)  loss {r['loss']:.6f}")
        if "original" in results:
            ours, theirs = results["ours"], results["original"]
            print(f"ratio ours/original: time {ours['step_s'] / theirs['step_s']:.2f}, "
                  f"peak RSS {ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}, "
                  f"step RSS {ours['step_rss_mb'] / max(theirs['step_rss_mb'], 1e-9):.2f}; "
                  f"loss difference {abs(ours['loss'] - theirs['loss']):.2e}")


if __name__ == "__main__":
    main()
