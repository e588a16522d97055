"""Generation throughput (samples/s) at several batch sizes on a benchmark's first items; not a test.

    python evals/throughput.py                                   # newest stage-3 checkpoint, shapes held-out set
    python evals/throughput.py --checkpoint /ckpt/Ovis1.6-Gemma2-9B --kind mmbench --file MMBench_DEV_EN.tsv \
        --device cuda --dtype bfloat16 --batch-sizes 1 8 16

Times prompt building, generation and decoding (images are decoded beforehand), after one warm-up batch per
batch size, and checks that every batch size gives the same answers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ovis_lit.evaluation.benchmarks import build_benchmark
from ovis_lit.evaluation.generation import generate_answers
from ovis_lit.evaluation.loading import load_for_eval
from ovis_lit.evaluation.tsv import image_bytes
from ovis_lit.processing.image_decoding import decode_image

REPO = Path(__file__).resolve().parents[1]


def newest_checkpoint() -> Path:
    found = sorted(REPO.glob("outputs/runs/*/s3/checkpoints/last.ckpt"))
    if not found:
        raise FileNotFoundError("no outputs/runs/*/s3/checkpoints/last.ckpt: train first or pass --checkpoint")
    return found[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--kind", default="shapes")
    parser.add_argument("--file", type=Path, default=REPO / "data" / "shards" / "shapes" / "mc-test.tsv")
    parser.add_argument("--n", type=int, default=64, help="items timed per batch size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the benchmark's")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None)
    args = parser.parse_args()

    checkpoint = args.checkpoint or newest_checkpoint()
    model, processor, info = load_for_eval(checkpoint, device=args.device, dtype=args.dtype)
    bench = build_benchmark(args.kind, path=args.file, max_new_tokens=args.max_new_tokens)
    items = bench.load()[: args.n]
    queries = [(item.prompt, [decode_image(image_bytes(s)) for s in item.images]) for item in items]

    report = {"checkpoint": str(checkpoint), "device": args.device, "dtype": info["dtype"], "benchmark": args.kind,
              "items": len(queries), "max_new_tokens": bench.max_new_tokens, "torch_threads": torch.get_num_threads()}
    answers_by_size = {}
    for batch_size in args.batch_sizes:
        generate_answers(model, processor, queries[:batch_size], batch_size, bench.max_new_tokens, progress=False)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        answers = generate_answers(model, processor, queries, batch_size, bench.max_new_tokens, progress=False)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        answers_by_size[batch_size] = answers
        report[f"batch_{batch_size}_samples_per_s"] = round(len(queries) / seconds, 1)
    report["same_answers_at_every_batch_size"] = len({tuple(a) for a in answers_by_size.values()}) == 1
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
