"""Forward+backward time and peak memory: ovis-lit vs transformers' Ovis2 port, same shapes, same run.

    python benchmarks/model_step.py            # the issue's config, both models, then ovis-lit at V = 65,536
    python benchmarks/model_step.py --profile  # where ovis-lit's step time goes

Each measurement runs in a fresh subprocess so peak RSS belongs to one model only. Config: vision 4 layers,
hidden 256, MLP 1024, 4 heads, 112 px crops, patch 14, hidden_stride 2 (16 visual tokens per crop), V = 16,384;
LLM Qwen2-style 4 layers, hidden 512, MLP 1536, 8 heads, 4 KV heads, vocab 32,000; batch 8 with
1, 3, 5, 7, 10, 1, 4, 9 crops, 40 text tokens each, labels on the last 10; fp32, 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CROPS = [1, 3, 5, 7, 10, 1, 4, 9]
TEXT, LABELED, TEXT_VOCAB = 40, 10, 32000
SIDE, PATCH, HS = 112, 14, 2
VISION = dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4, image_size=SIDE,
              patch_size=PATCH)
LLM = dict(model_type="qwen2", vocab_size=TEXT_VOCAB, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
           num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=4096, tie_word_embeddings=False)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _image_placeholders(n_crops: int, atom: int, indicators: list[int], per_crop: int) -> list[int]:
    """Ovis 1.6 layout for a 1 x (n-1) grid plus global view (or a single crop), atoms expanded by `per_crop`."""
    start, part, col, _row, end = indicators
    ids = [start] + [atom] * per_crop + [part]
    for k in range(n_crops - 1):
        ids += [atom] * per_crop + ([col] if k < n_crops - 2 else [])
    return ids + [end]


def _batch(atom, indicators, per_crop, pad_id=0):
    import torch

    g = torch.Generator().manual_seed(0)
    rows, labels = [], []
    for n in CROPS:
        text = torch.randint(10, TEXT_VOCAB, (TEXT,), generator=g).tolist()
        ids = text[:5] + _image_placeholders(n, atom, indicators, per_crop) + text[5:]
        rows.append(ids)
        labels.append([-100] * (len(ids) - LABELED) + ids[-LABELED:])
    longest = max(map(len, rows))
    input_ids = torch.full((len(rows), longest), pad_id)
    label_t = torch.full((len(rows), longest), -100)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        input_ids[i, : len(r)] = torch.tensor(r)
        label_t[i, : len(r)] = torch.tensor(lab)
        mask[i, : len(r)] = 1
    pixel_values = torch.randn(sum(CROPS), 3, SIDE, SIDE, generator=g)
    return input_ids, mask, label_t, pixel_values


def _ovis_lit(vocab: int, checkpointing: bool):
    from ovis_lit.constants import IMAGE_ATOM_ID, INDICATOR_IDS
    from ovis_lit.model.build import build_ovis

    model = build_ovis({
        "backbone": {"model_type": "aimv2_vision_model", "config": VISION},
        "llm": {"config": LLM},
        "visual_vocab_size": vocab,
        "hidden_stride": HS,
    })
    model.set_activation_checkpointing(vision=checkpointing, llm=checkpointing)
    input_ids, mask, labels, pixel_values = _batch(IMAGE_ATOM_ID, list(INDICATOR_IDS), per_crop=1)
    return model, lambda: model(input_ids, mask, labels, pixel_values).loss


def _port(vocab: int, checkpointing: bool):
    import transformers

    image_token, indicator_ids = TEXT_VOCAB, list(range(TEXT_VOCAB + 1, TEXT_VOCAB + 6))
    vision = transformers.Ovis2VisionConfig(**VISION, hidden_stride=HS, vocab_size=vocab, hidden_act="silu")
    text = dict(LLM)
    text.pop("model_type")
    text["vocab_size"] = TEXT_VOCAB + 6  # room for the placeholder ids the port needs in the text vocabulary
    config = transformers.Ovis2Config(
        vision_config=vision.to_dict(),
        text_config=transformers.Qwen2Config(**text).to_dict(),
        image_token_id=image_token,
        visual_indicator_token_ids=indicator_ids,
        hidden_size=LLM["hidden_size"],
        vocab_size=TEXT_VOCAB + 6,
        tie_word_embeddings=False,
    )
    model = transformers.Ovis2ForConditionalGeneration(config)
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    per_crop = ((SIDE // PATCH + HS - 1) // HS) ** 2
    input_ids, mask, labels, pixel_values = _batch(image_token, indicator_ids, per_crop)
    return model, lambda: model(input_ids=input_ids, attention_mask=mask, labels=labels, pixel_values=pixel_values).loss


def worker(which: str, vocab: int, steps: int, profile: bool, checkpointing: bool = False) -> dict:
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, step = (_ovis_lit if which == "ovis-lit" else _port)(vocab, checkpointing)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    rss_model = _rss_mb()

    def one():
        model.zero_grad(set_to_none=True)
        loss = step()
        loss.backward()
        return loss.item()

    one()  # warm-up (allocator, kernels)
    if profile:
        from torch.profiler import ProfilerActivity, profile as prof

        with prof(activities=[ProfilerActivity.CPU]) as p:
            one()
        print(p.key_averages().table(sort_by="cpu_time_total", row_limit=25))
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = one()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"model": which + (" +AC" if checkpointing else ""), "vocab": vocab, "params_M": n_params / 1e6, "loss": loss, "step_s": statistics.median(times),
            "peak_rss_mb": peak, "rss_after_build_mb": rss_model}


def run(which: str, vocab: int, steps: int, checkpointing: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--worker", which, "--vocab", str(vocab), "--steps", str(steps)]
    out = subprocess.run(cmd + (["--checkpointing"] if checkpointing else []), check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=["ovis-lit", "port"])
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--checkpointing", action="store_true", help="worker: activation checkpointing per ViT/LLM layer")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.vocab, args.steps, args.profile, args.checkpointing)))
        return
    if args.profile:
        worker("ovis-lit", args.vocab, 1, True)
        return
    rows = [run("port", args.vocab, args.steps), run("ovis-lit", args.vocab, args.steps)]
    rows += [run("port", args.vocab, args.steps, True), run("ovis-lit", args.vocab, args.steps, True)]
    rows += [run("ovis-lit", 65536, args.steps), run("ovis-lit", 65536, args.steps, True)]
    print(f"{'model':14} {'V':>6} {'params':>8} {'step s':>7} {'peak RSS MB':>12} {'peak-build MB':>14} {'loss':>7}")
    for r in rows:
        print(f"{r['model']:14} {r['vocab']:>6} {r['params_M']:>7.1f}M {r['step_s']:>7.2f} {r['peak_rss_mb']:>12.0f} "
              f"{r['peak_rss_mb'] - r['rss_after_build_mb']:>14.0f} {r['loss']:>7.3f}")
    port = rows[0]
    for ours in (rows[1], rows[3]):
        above = (ours["peak_rss_mb"] - ours["rss_after_build_mb"]) / (port["peak_rss_mb"] - port["rss_after_build_mb"])
        print(f"{ours['model']} / port (V={args.vocab}): time {ours['step_s'] / port['step_s']:.2f}x, "
              f"peak RSS {ours['peak_rss_mb'] / port['peak_rss_mb']:.2f}x, peak above the built model {above:.2f}x")


if __name__ == "__main__":
    main()
