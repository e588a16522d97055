"""One-GPU check of a ~1 B-parameter Ovis: a few bf16 training steps, printing samples/s, tokens/s, MFU and peak
memory. Needs a CUDA GPU; not part of the tests.

    python benchmarks/gpu_check.py [--batch 8] [--crops 5] [--text 256] [--checkpointing none|selective|full]

The config: SigLIP-base-shaped ViT (12 x 768, 384 px, patch 16 -> 24x24 patches, hidden_stride 2 -> 144 visual
tokens per crop), visual vocabulary 16,384, and a TinyLlama-shaped LLM (22 x 2048, MLP 5632, 32k vocab): ~1.3 B
parameters, random weights. MFU counts 6 x parameters x tokens (matmuls, forward + backward) plus attention, over
the GPU's dense bf16 peak (--peak-tflops, 989 for an H100 SXM).
"""

from __future__ import annotations

import argparse
import time

import torch

from ovis_lit.constants import IGNORE_ID, IMAGE_ATOM_ID, INDICATOR_IDS
from ovis_lit.model.build import build_ovis

SPEC = {
    "backbone": {
        "model_type": "siglip_vision_model",
        "config": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=384, patch_size=16),
    },
    "llm": {
        "config": dict(model_type="llama", vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                       num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                       max_position_embeddings=4096, tie_word_embeddings=False),
        "attn_implementation": "sdpa",
    },
    "visual_vocab_size": 16384,
    "hidden_stride": 2,
    "dtype": "bfloat16",
}


def batch(b: int, crops: int, text: int, side: int, per_crop: int, device):
    ids = []
    for _ in range(crops):
        ids += [INDICATOR_IDS[0], *[IMAGE_ATOM_ID] * per_crop, INDICATOR_IDS[-1]]  # one -300 per visual token
    ids += list(range(100, 100 + text))
    input_ids = torch.tensor([ids] * b, device=device)
    labels = input_ids.clone()
    labels[:, : len(ids) - text // 2] = IGNORE_ID  # the answer half of the text is supervised
    pixels = torch.randn(b * crops, 3, side, side, device=device, dtype=torch.bfloat16)
    return input_ids, torch.ones_like(input_ids), labels, pixels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crops", type=int, default=5)
    parser.add_argument("--text", type=int, default=256)
    parser.add_argument("--checkpointing", choices=["none", "selective", "full"], default="none",
                        help="activation checkpointing of the ViT and LLM layers")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    model = build_ovis(SPEC).to(device)
    model.set_activation_checkpointing(vision=args.checkpointing, llm=args.checkpointing)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    side = SPEC["backbone"]["config"]["image_size"]
    inputs = batch(args.batch, args.crops, args.text, side, model.visual_tokenizer.tokens_per_crop(), device)
    tokens_per_sample = args.text + args.crops * (model.visual_tokenizer.tokens_per_crop() + 2)

    def step():
        loss = model(*inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.steps

    llm = model.llm.config
    vit = model.visual_tokenizer.backbone.config
    patches = (side // vit.patch_size) ** 2
    llm_tokens = args.batch * tokens_per_sample
    vit_tokens = args.batch * args.crops * patches
    vit_params = sum(p.numel() for p in model.visual_tokenizer.backbone.parameters())
    matmul_flops = 6 * (n_params - vit_params) * llm_tokens + 6 * vit_params * vit_tokens
    attn_flops = 12 * llm.num_hidden_layers * llm.hidden_size * tokens_per_sample * llm_tokens \
        + 12 * vit.num_hidden_layers * vit.hidden_size * patches * vit_tokens
    tflops = (matmul_flops + attn_flops) / seconds / 1e12
    print(f"device {torch.cuda.get_device_name()}  parameters {n_params / 1e9:.2f} B  "
          f"activation checkpointing {args.checkpointing}")
    print(f"batch {args.batch} x ({args.text} text + {args.crops} crops) = {tokens_per_sample} LLM tokens/sample")
    print(f"step {seconds * 1000:.0f} ms  {args.batch / seconds:.1f} samples/s  {llm_tokens / seconds:,.0f} tokens/s  "
          f"{tflops:.0f} TFLOP/s  MFU {tflops / args.peak_tflops:.1%}  "
          f"peak memory {torch.cuda.max_memory_allocated() / 1024**3:.1f} GiB  loss {loss.item():.3f}")


if __name__ == "__main__":
    main()
