"""Batched greedy generation, samples/s: ovis-lit vs transformers' Ovis2 port, same weights, same prompts, same run.

    python benchmarks/generation_speed.py                 # batch 8, 16 forced new tokens, 5 rounds, medians + ratio
    python benchmarks/generation_speed.py --profile       # where ovis-lit's time goes (torch.profiler, one batch)
    python benchmarks/generation_speed.py --plain         # also ovis-lit with its generation speed-ups off
    python benchmarks/generation_speed.py --threads 1     # torch threads (default 2, the issue's setting)

Shapes are `model_step.py`'s (AIMv2 4 layers at 256 wide, 112 px crops, 16 visual tokens per crop, V = 16,384;
Qwen2 4 layers at 512 wide, vocab 32,000; 8 prompts with 1, 3, 5, 7, 10, 1, 4, 9 crops and 40 text tokens),
fp32, 2 threads unless `--threads`. The prompts are left-padded, as `evaluation/generation.py: generate_answers` (what
`chat.py --batch` and `evals/run.py` call) hands them to `OvisModel.generate`.

Same weights: the port is built from ovis-lit's `Ovis2Config` and state dict (`interop/hf_ovis2.py`), its
placeholder ids taken from the top of the text vocabulary (the -hf layout writes images as text ids), which the
prompts' text never uses. The port applies the final vision norm that ovis-lit (as the original Ovis2) skips, so the
two compute slightly different visual tokens: a speed comparison, not a parity one (tests hold the parity).

16 new tokens are forced (min_new_tokens = max_new_tokens), so both models decode the same number of steps whatever
they predict. Each round times one batch of each model back to back (ovis-lit, the port, [ovis-lit plain]; the order
reversed every other round), after one warm-up batch each; the medians over rounds and their ratio are printed, with
the load average before and after, and CPU time (process time) next to wall-clock, since wall-clock on a shared
machine follows the other jobs.

The speed-ups, all `OvisModel` switches on by default (`generation_speedups(False)` turns them off together; answers
tested identical, scores bitwise where the operations are the same):
- `packed_prefill`: the prompts' prefill on one unpadded row (`model/packed_prefill.py`; the padded batch is 1688
  positions for 1010 real tokens), skipping the last layer's queries, attention and MLP, which nothing reads (its keys
  and values are all the cache needs), and laying the cache out in the decode steps' buffers directly;
- `packed_decode_weights`: the decode steps' matmuls on MKL-packed weights, kept between calls
  (`model/packed_weights.py`; the [8, 512] x [512, 32000] head: 21 -> 10 ms at 1 thread);
- `lean_decode`: decode steps as a plain loop over the LLM's own modules (`model/lean_decode.py`: transformers'
  decorators, mask builder and module plumbing cost ~2-3 ms a step) writing into a KV cache with room
  (`model/kv_room.py`: no per-step concatenation of the whole cache, ~35 ms a batch);
- `greedy_loop`: plain greedy decoding as a loop over the LLM's forward (`model/greedy_loop.py`): `generate`'s
  per-step input preparation, logits copy, processors and stopping criteria cost ~1 ms a step, and its
  `torch.argmax` over [8, 32000] logits 0.31 ms where `first_argmax` (the same index from block maxima) takes 0.07;
- `inplace_mlps`: the ViT's and the LLM's SwiGLU MLPs write the activation and product over the gate projection
  (`model/inplace_mlp.py`): two fewer fresh 10 MB buffers per ViT layer, whose page faults cost more than the
  arithmetic (a fresh 42 MB tensor takes ~12 ms to fault in here, a reused one 1 ms).
At inference the model's fast path (`OvisModel.fast_path`, not a generation switch: `--plain` keeps it) also runs
the visual head's LayerNorm and the softmax one ~1 MB block of rows at a time over the head's output
(`visual_tokenizer.normed_softmax_`, bitwise): one [640, 16379] tensor (42 MB) fewer at the visual side's peak; its
time gain is within this machine's noise (toggled in one process over 20-21 rounds: 0 and 9 ms medians).

Measured with all of them (2 threads, wall-clock, nothing else of ours running; 14 whole runs of 9-11 rounds on
2026-12-01): ovis-lit / port 1.43x to 1.67x, median 1.54x, 12 of the 14 runs at 1.5x or more; ovis-lit 0.60-0.74 s a
batch, the port 0.85-1.16 s. Six of those runs alternated with six of the code before the greedy loop, the blocked
head and the trimmed prefill (same hour, same script, alternating): ovis-lit's own median 0.68 s against 0.71 s, the
port's 1.06 against 1.05 s, the ratio 1.55x against 1.48x (1.43-1.53); toggled within one process over 20 rounds, the
greedy loop alone took ovis-lit 702 -> 682 ms and left the port's time as it was (1073 vs 1057 ms after each). Before
them, 23 whole runs on two days: 1.37x to 1.56x, median 1.45x. The run-to-run spread on this shared machine is about
as wide as the distance between those medians: compare whole runs, and both models' times, not single rounds.

Where ovis-lit's time goes now (2 threads, wall-clock, medians of repeated calls, ~540 ms a batch at the time): the
visual side ~250 ms (ViT ~130, the visual head's matmul ~85-105 at ~210-250 GFLOP/s, its LayerNorm and the softmax over
the [640, 16379] logits ~11 in blocks, the table read ~40-45 at ~240 GFLOP/s: the same work the port does, at the
machine's matmul peak), the packed prefill ~105 ms, 16 decode steps ~175 ms (~11 ms a step, of which ~7.6 ms is the
packed matmuls reading the LLM's 115 MB of float32 weights at ~15 GB/s; sdpa ~1.2 ms, reading the 3.6 MB of keys and
values per layer from memory too), the loop around them ~10 ms. A step's weights are more than the ~64 MB of cache a
process gets on this machine, so every step streams them from memory: the 50 MB of layers or the 65 MB head alone
run at ~35 GB/s when repeated, the two in turn at ~13 GB/s (measured with the packed matmuls alone). What is left is
arithmetic both implementations do, and allocator behaviour both share (glibc returns big freed blocks to the
system, so each fresh big tensor is page-faulted in again: ~40,000 faults a batch for ovis-lit, ~100,000 for the
port; `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184` removes most
of them for both, ~5% each, so it does not change the ratio).

Tried and not kept (no gain beyond the noise, or not bitwise): the head's logits and its LayerNorm's output in buffers
kept between calls, or the LayerNorm alone written back over the logits row block by row block (10,000 page faults
fewer, the copy costs what they did; the LayerNorm and the softmax together per block, kept, save the copy and a pass);
the gate and up projections as one matmul (ViT at prefill, the decode steps' packed weights;
bitwise, not faster); MKL-packed weights for the big visual and prefill matmuls (not bitwise, not faster); the visual
head, softmax and table read in row chunks (slower, not bitwise); `torch.inference_mode` in place of `no_grad` (<1%);
the SwiGLU MLPs' gate and up outputs in two buffers shared by every layer of a call (bitwise; up to 20,000 faults
fewer, but nine whole runs of this benchmark, three each with it off, on, and kept to the call's end, gave ratios of
1.40-1.48, 1.38-1.44 and 1.47-1.50: no difference that the machine's noise does not cover). Page faults move with
glibc's heap state, which the other model's calls in the same process also shape, so only whole runs of this script
tell a speed-up from noise. The same buffers and the head's Linear output kept between calls halved ovis-lit's page
faults (~46,000 -> ~24,000) and raised the ratio (six whole runs: median 1.52x against 1.42x without), but ovis-lit's own
median time did not fall (626 vs 611 ms): the port's rose (940 vs 855 ms) on the heap that ovis-lit left it. A ratio
gain that is the other model slowing down is not a speed-up; read both times, not the ratio alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import model_step  # noqa: E402  (the shapes)

NEW_TOKENS = 16
PAD_ID = 0
IMAGE_ID = model_step.TEXT_VOCAB - 1  # the port's placeholder ids: the top 6 text ids, never in the prompts' text
INDICATOR_IDS_PORT = list(range(model_step.TEXT_VOCAB - 6, model_step.TEXT_VOCAB - 1))


def _prompts(atom: int, indicators: list[int]):
    """model_step's 8 prompts, left-padded: (input_ids [8, L], attention_mask [8, L], pixel_values [40, 3, S, S])."""
    import torch

    g = torch.Generator().manual_seed(0)
    rows = []
    for n in model_step.CROPS:
        text = torch.randint(10, model_step.TEXT_VOCAB - 6, (model_step.TEXT,), generator=g).tolist()
        rows.append(text[:5] + model_step._image_placeholders(n, atom, indicators, model_step.PER_CROP) + text[5:])
    longest = max(map(len, rows))
    input_ids = torch.full((len(rows), longest), PAD_ID)
    mask = torch.zeros((len(rows), longest), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, longest - len(r):] = torch.tensor(r)
        mask[i, longest - len(r):] = 1
    side = model_step.SIDE
    pixel_values = torch.randn(sum(model_step.CROPS), 3, side, side, generator=g)
    return input_ids, mask, pixel_values


def build():
    """(ovis-lit model, the port with the same weights), both in eval mode."""
    import torch
    import transformers

    from ovis_lit.interop.hf_ovis2 import hf_config, hf_state_dict
    from ovis_lit.model.build import build_ovis

    torch.manual_seed(0)
    ours = build_ovis({
        "backbone": {"model_type": "aimv2_vision_model", "config": model_step.VISION},
        "llm": {"config": model_step.LLM},
        "visual_vocab_size": 16384,
        "hidden_stride": model_step.HS,
    }).eval()
    config = hf_config(ours, IMAGE_ID, INDICATOR_IDS_PORT)
    port = transformers.Ovis2ForConditionalGeneration(config).eval()
    missing, unexpected = port.load_state_dict(hf_state_dict(ours), strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight" or not config.tie_word_embeddings]:
        raise RuntimeError(f"the port does not take ovis-lit's weights: missing {missing}, unexpected {unexpected}")
    return ours, port


def runners(ours, port):
    """name -> a callable that generates one batch and returns the new tokens [8, 16]."""
    import torch

    from ovis_lit.constants import IMAGE_ATOM_ID, INDICATOR_IDS

    ids, mask, pixels = _prompts(IMAGE_ATOM_ID, list(INDICATOR_IDS))
    port_ids, port_mask, port_pixels = _prompts(IMAGE_ID, INDICATOR_IDS_PORT)
    common = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=PAD_ID,
                  eos_token_id=None)

    def ovis_lit():
        return ours.generate(ids, mask, pixels, **common)

    def the_port():
        with torch.inference_mode():
            out = port.generate(input_ids=port_ids, attention_mask=port_mask, pixel_values=port_pixels, **common)
        return out[:, port_ids.shape[1]:]

    return {"ovis-lit": ovis_lit, "port": the_port}


def measure(rounds: int, plain: bool, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    ours, port = build()
    run = runners(ours, port)
    names = ["ovis-lit", "port"]
    if plain:
        names.append("ovis-lit plain")

    def call(name):
        if name == "ovis-lit plain":
            with ours.generation_speedups(False):
                return run["ovis-lit"]()
        return run[name]()

    batch = len(model_step.CROPS)
    for name in names:  # warm-up: allocator, kernels, lazy imports
        out = call(name)
        if tuple(out.shape) != (batch, NEW_TOKENS):
            raise RuntimeError(f"{name} generated {tuple(out.shape)} tokens, expected {(batch, NEW_TOKENS)}")
    load_before = os.getloadavg()
    times = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for r in range(rounds):
        # alternate which model goes first, so neither always runs on the heap and caches the other left behind
        for name in (names if r % 2 == 0 else names[::-1]):
            t, c = time.perf_counter(), time.process_time()
            call(name)
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
        print(f"# round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.3f} s" for n in names), file=sys.stderr, flush=True)
    load_after = os.getloadavg()
    print(f"batch {batch}, {NEW_TOKENS} forced new tokens, {rounds} rounds, {torch.get_num_threads()} threads; "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)")
    print(f"{'model':16} {'median s/batch':>15} {'samples/s':>10} {'min s':>7} {'max s':>7} {'CPU s/batch':>12}")
    median, median_cpu = {}, {}
    for name in names:
        median[name], median_cpu[name] = statistics.median(times[name]), statistics.median(cpu[name])
        print(f"{name:16} {median[name]:>15.3f} {batch / median[name]:>10.2f} {min(times[name]):>7.3f} "
              f"{max(times[name]):>7.3f} {median_cpu[name]:>12.3f}")
    for name in names:
        if name != "port":
            print(f"{name} / port samples/s: {median['port'] / median[name]:.2f}x wall-clock (goal >= 1.5x), "
                  f"{median_cpu['port'] / median_cpu[name]:.2f}x in CPU time")
    print("(CPU time: both threads' process time, less sensitive than wall-clock to other jobs on the machine)")


def profile(threads: int) -> None:
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as prof

    torch.set_num_threads(threads)
    ours, port = build()
    run = runners(ours, port)
    for name in ("ovis-lit", "port"):
        run[name]()
        with prof(activities=[ProfilerActivity.CPU]) as p:
            run[name]()
        print(f"==== {name}")
        print(p.key_averages().table(sort_by="cpu_time_total", row_limit=30))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--plain", action="store_true", help="also ovis-lit with its generation speed-ups off")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the acceptance figure: 2)")
    args = ap.parse_args()
    if args.profile:
        profile(args.threads)
    else:
        measure(args.rounds, args.plain, args.threads)


if __name__ == "__main__":
    main()
