"""Forward+backward time and peak memory: ovis-lit vs transformers' Ovis2 port, same shapes, same run.

    python benchmarks/model_step.py            # the issue's config, both models, then ovis-lit at V = 65,536
    python benchmarks/model_step.py --profile  # where ovis-lit's step time goes
    python benchmarks/model_step.py --config ovis25 --original-path PATH  # Ovis2.5 vs the original Ovis2.5 code

`--config ovis25` (native resolution, 8 images of 8 sizes; shapes, batch and models in `ovis25_step.py`, which says
how to make the original importable) measures ovis-lit against the original Ovis2.5 code run with the CPU flash-attn
stand-in, both loading one checkpoint; its rows are the original and ovis-lit without checkpointing and with
`{vision: full, llm: selective}` (`--original-checkpointing` adds the original with its trainer's gradient
checkpointing), and the ratios are to the original without checkpointing.

Each measurement runs in a fresh subprocess so peak RSS belongs to one model only. Memory is reported twice: peak RSS
(the process, including freed memory that glibc keeps resident) and the peak of glibc's heap in use (what the model
and libraries hold), sampled after every op of one extra step. Rows cover activation
checkpointing per ViT / LLM layer: none, full (transformers' own, for both models) and ovis-lit's selective mode
(matmul and attention outputs kept, the rest recomputed; see ovis_lit/model/checkpointing.py). Config: vision 4 layers,
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
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CROPS = [1, 3, 5, 7, 10, 1, 4, 9]
TEXT, LABELED, TEXT_VOCAB = 40, 10, 32000
SIDE, PATCH, HS = 112, 14, 2
VISION = {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
          "image_size": SIDE, "patch_size": PATCH}
LLM = {"model_type": "qwen2", "vocab_size": TEXT_VOCAB, "hidden_size": 512, "intermediate_size": 1536,
       "num_hidden_layers": 4, "num_attention_heads": 8, "num_key_value_heads": 4, "max_position_embeddings": 4096,
       "tie_word_embeddings": False}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _heap_in_use_mb():
    """glibc's bytes in use (arena chunks handed out + mmapped chunks), or None off glibc. Unlike RSS this leaves out
    freed memory that the allocator keeps resident, so it follows what the model holds."""
    import ctypes

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = Mallinfo2

    def in_use() -> float:
        info = mallinfo2()
        return (info.uordblks + info.hblkhd) / 2**20

    return in_use


def _peak_heap_in_use(one, in_use) -> float:
    """Peak of `in_use()` sampled after every aten op of one more step (forward and backward)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Sample(TorchDispatchMode):
        peak = 0.0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            Sample.peak = max(Sample.peak, in_use())
            return out

    with Sample():
        one()
    return Sample.peak


PER_CROP = ((SIDE // PATCH + HS - 1) // HS) ** 2  # visual tokens per crop: one image id each, in both models' ids


def _image_placeholders(n_crops: int, atom: int, indicators: list[int], per_crop: int) -> list[int]:
    """Ovis 1.6 layout for a 1 x (n-1) grid plus global view (or a single crop), one `atom` per visual token."""
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


def _ovis_lit(vocab: int, vision: str = "none", llm: str = "none"):
    from ovis_lit.constants import IMAGE_ATOM_ID, INDICATOR_IDS
    from ovis_lit.model.build import build_ovis

    model = build_ovis({
        "backbone": {"model_type": "aimv2_vision_model", "config": VISION},
        "llm": {"config": LLM},
        "visual_vocab_size": vocab,
        "hidden_stride": HS,
    })
    model.set_activation_checkpointing(vision=vision, llm=llm)
    input_ids, mask, labels, pixel_values = _batch(IMAGE_ATOM_ID, list(INDICATOR_IDS), PER_CROP)
    return model, lambda: model(input_ids, mask, labels, pixel_values).loss


def _port(vocab: int, vision: str = "none", llm: str = "none"):
    import transformers

    image_token, indicator_ids = TEXT_VOCAB, list(range(TEXT_VOCAB + 1, TEXT_VOCAB + 6))
    vision_config = transformers.Ovis2VisionConfig(**VISION, hidden_stride=HS, vocab_size=vocab, hidden_act="silu")
    text = dict(LLM)
    text.pop("model_type")
    text["vocab_size"] = TEXT_VOCAB + 6  # room for the placeholder ids the port needs in the text vocabulary
    config = transformers.Ovis2Config(
        vision_config=vision_config.to_dict(),
        text_config=transformers.Qwen2Config(**text).to_dict(),
        image_token_id=image_token,
        visual_indicator_token_ids=indicator_ids,
        hidden_size=LLM["hidden_size"],
        vocab_size=TEXT_VOCAB + 6,
        tie_word_embeddings=False,
    )
    model = transformers.Ovis2ForConditionalGeneration(config)
    if (vision, llm) == ("full", "full"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    input_ids, mask, labels, pixel_values = _batch(image_token, indicator_ids, PER_CROP)
    return model, lambda: model(input_ids=input_ids, attention_mask=mask, labels=labels, pixel_values=pixel_values).loss


def _build(which: str, vocab: int, vision: str, llm: str, checkpoint: str | None):
    """(model, step) of one row: ovis-lit or the port (Ovis2 config), ovis-lit or the original (Ovis2.5 config, from
    the checkpoint the parent wrote)."""
    if checkpoint is not None:
        import ovis25_step

        return (ovis25_step.ovis_lit if which == "ovis-lit" else ovis25_step.original)(checkpoint, vision, llm)
    if which == "port" and (vision != llm or vision == "selective"):
        raise ValueError("the port has transformers' own checkpointing only: none or full for both")
    return (_ovis_lit if which == "ovis-lit" else _port)(vocab, vision, llm)


def worker(which: str, vocab: int, steps: int, profile: bool, vision: str = "none", llm: str = "none",
           checkpoint: str | None = None) -> dict:
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, step = _build(which, vocab, vision, llm, checkpoint)
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
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as prof

        with prof(activities=[ProfilerActivity.CPU]) as p:
            one()
        print(p.key_averages().table(sort_by="cpu_time_total", row_limit=25))
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        loss = one()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    in_use = _heap_in_use_mb()  # after the timed steps: the per-op sampling slows the step it watches
    heap_peak = None if in_use is None else _peak_heap_in_use(one, in_use)
    return {"model": which, "checkpointing": _label(vision, llm), "vocab": vocab, "params_M": n_params / 1e6,
            "loss": loss, "step_s": statistics.median(times), "peak_rss_mb": peak, "rss_after_build_mb": rss_model,
            "peak_heap_in_use_mb": heap_peak}


def _label(vision: str, llm: str) -> str:
    return vision if vision == llm else f"vit {vision}, llm {llm}"


def run(which: str, vocab: int, steps: int, vision: str = "none", llm: str = "none", checkpoint: str | None = None,
        python: str = sys.executable, pythonpath: str | None = None) -> dict:
    """One row in a fresh process (its own peak RSS); `python`/`pythonpath` let the original run in its own stack."""
    cmd = [python, __file__, "--worker", which, "--vocab", str(vocab), "--steps", str(steps),
           "--vision-checkpointing", vision, "--llm-checkpointing", llm]
    if checkpoint is not None:
        cmd += ["--checkpoint", checkpoint]
    env = dict(os.environ) if pythonpath is None else {**os.environ, "PYTHONPATH": pythonpath}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"{which} ({_label(vision, llm)}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def medians(configs: list[tuple], repeats: int, measure) -> list[dict]:
    """Each configuration's figures as medians over `repeats` processes, run round-robin so that a slow spell on
    the machine does not land on one model only."""
    def one(config):
        result = measure(*config)
        print("# " + json.dumps(result), file=sys.stderr, flush=True)  # each process as it ends: a long run's record
        return result

    runs = [[one(c) for c in configs] for _ in range(repeats)]
    rows = []
    for i in range(len(configs)):
        samples = [rep[i] for rep in runs]
        row = dict(samples[0])
        for key in ("step_s", "peak_rss_mb", "rss_after_build_mb", "peak_heap_in_use_mb"):
            values = [s[key] for s in samples if s[key] is not None]
            row[key] = statistics.median(values) if values else None
        row["losses"] = sorted({s["loss"] for s in samples})
        rows.append(row)
    return rows


def _mb(x) -> str:
    return "n/a" if x is None else f"{x:.0f}"


def report(rows: list[dict], reference: dict, against: str) -> None:
    """The table, then each ovis-lit row's ratios to `reference` (the goal: at most 0.6x time and peak RSS)."""
    print(f"{'model':9} {'checkpointing':22} {'V':>6} {'params':>8} {'step s':>7} {'peak RSS MB':>12} "
          f"{'peak-build MB':>14} {'heap in use MB':>15} {'loss':>9}")
    for r in rows:
        print(f"{r['model']:9} {r['checkpointing']:22} {r['vocab']:>6} {r['params_M']:>7.1f}M {r['step_s']:>7.2f} "
              f"{r['peak_rss_mb']:>12.0f} {r['peak_rss_mb'] - r['rss_after_build_mb']:>14.0f} "
              f"{_mb(r['peak_heap_in_use_mb']):>15} {r['loss']:>9.6f}")
    print(f"\nratios to {against} (goal: <= 0.6x time and peak RSS):")
    ref_above = reference["peak_rss_mb"] - reference["rss_after_build_mb"]
    for r in rows:
        if r["model"] != "ovis-lit" or r["vocab"] != reference["vocab"]:
            continue
        above = (r["peak_rss_mb"] - r["rss_after_build_mb"]) / ref_above
        heap = ""
        if r["peak_heap_in_use_mb"] is not None and reference["peak_heap_in_use_mb"] is not None:
            heap = f", heap in use {r['peak_heap_in_use_mb'] / reference['peak_heap_in_use_mb']:.2f}x"
        print(f"  ovis-lit, checkpointing {r['checkpointing']:22} time {r['step_s'] / reference['step_s']:.2f}x, "
              f"peak RSS {r['peak_rss_mb'] / reference['peak_rss_mb']:.2f}x, peak above the built model {above:.2f}x"
              f"{heap}; loss difference {abs(r['loss'] - reference['loss']):.1e}")
    print("(peak RSS counts freed memory that glibc keeps resident; heap in use is what the allocator has handed out,"
          " sampled after every op of one extra step)")


def main_ovis25(args) -> None:
    import ovis25_step

    with tempfile.TemporaryDirectory() as tmp:
        ovis25_step.write_checkpoint(Path(tmp))
        v = ovis25_step.VISUAL_VOCAB
        configs = [("ovis-lit", v, "none", "none"), ("ovis-lit", v, "full", "selective")]
        if args.original_path:
            configs.insert(0, ("original", v, "none", "none"))
            if args.original_checkpointing:
                configs.insert(1, ("original", v, "full", "full"))

        def measure(which, vocab, vision, llm):
            if which == "original":
                return run(which, vocab, args.steps, vision, llm, tmp, args.original_python, args.original_path)
            return run(which, vocab, args.steps, vision, llm, tmp)

        rows = medians(configs, args.repeats, measure)
    if args.original_path:
        report(rows, rows[0], "the original Ovis2.5 code")
    else:
        report(rows, rows[0], "ovis-lit without checkpointing")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=["ovis2", "ovis25"], default="ovis2",
                    help="ovis2: vs transformers' Ovis2 port; ovis25: native resolution vs the original Ovis2.5 code")
    ap.add_argument("--original-path", default=None, help="ovis25: PYTHONPATH for the original (see ovis25_step.py)")
    ap.add_argument("--original-python", default=sys.executable, help="ovis25: interpreter for the original")
    ap.add_argument("--original-checkpointing", action="store_true",
                    help="ovis25: also the original with its trainer's gradient checkpointing (every layer, full)")
    ap.add_argument("--worker", choices=["ovis-lit", "port", "original"])
    ap.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=1, help="processes per configuration (round-robin)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--rows", default="all", choices=["all", "issue"],
                    help="ovis2: all rows, or only the port and ovis-lit with none and {vision: full, llm: selective}")
    modes = ["none", "selective", "full"]
    ap.add_argument("--vision-checkpointing", choices=modes, default="none", help="worker: per ViT layer")
    ap.add_argument("--llm-checkpointing", choices=modes, default="none", help="worker: per LLM layer")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.vocab, args.steps, args.profile, args.vision_checkpointing,
                                args.llm_checkpointing, args.checkpoint)))
        return
    if args.config == "ovis25":
        main_ovis25(args)
        return
    if args.profile:
        worker("ovis-lit", args.vocab, 1, True, args.vision_checkpointing, args.llm_checkpointing)
        return
    v = args.vocab
    configs = [("port", v, "none", "none"), ("port", v, "full", "full")]
    configs += [("ovis-lit", v, *c) for c in
                (("none", "none"), ("selective", "selective"), ("full", "selective"), ("full", "full"))]
    configs += [("ovis-lit", 65536, c, c) for c in ("none", "selective", "full")]
    if args.rows == "issue":  # the goal's rows, for a quicker side-by-side measurement
        configs = [c for c in configs if c in {("port", v, "none", "none"), ("ovis-lit", v, "none", "none"),
                                               ("ovis-lit", v, "full", "selective")}]
    rows = medians(configs, args.repeats, lambda which, vocab, vision, llm: run(which, vocab, args.steps, vision, llm))
    report(rows, rows[0], f"the port without checkpointing (V={v})")


if __name__ == "__main__":
    main()
