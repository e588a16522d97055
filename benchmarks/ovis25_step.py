"""The Ovis2.5 configuration of `benchmarks/model_step.py`: native resolution, images of mixed sizes, ovis-lit vs the
original Ovis2.5 code. It holds the shapes, the batch and the two models; model_step.py measures them.

    python benchmarks/model_step.py --config ovis25                                 # ovis-lit only
    python benchmarks/model_step.py --config ovis25 --original-path PATH [--original-python PY]  # and the original

The original needs transformers 4.51 and flash-attn; on a CPU put `benchmarks/original_stubs` (a `deepspeed` stub:
the original imports it at module load and uses none of it without ZeRO), `../shared/reference/flash_attn_cpu` (the
CPU stand-in of flash-attn that made the reference fixture), a transformers 4.51.3 install (`pip install --no-deps
--target DIR transformers==4.51.3 tokenizers==0.21.1 huggingface_hub==0.30.2`, or a venv's site-packages) and the
original repository's root on `--original-path`, e.g.
`benchmarks/original_stubs:../shared/reference/flash_attn_cpu:DIR:/src/Ovis`. Both load the same random checkpoint,
written by ovis-lit in the original layout, and take the same batch: 8 images of 8 different native sizes (16 to
192 visual tokens each, 861 in all), 40 text tokens per sample with labels on the last 10. Config: NaViT 4 layers
(3 windowed, 1 full), hidden 256, MLP 1024, 4 heads, patch 16, hidden_stride 2, window 112 px; V = 16,384;
Qwen3-style LLM 4 layers, hidden 512, MLP 1536, 8 heads, 4 KV heads, vocab 32,000, untied; fp32, 2 threads.

Measured (`--repeats 3 --steps 1`, medians, original from GitHub AIDC-AI/Ovis main, 2 CPU cores shared with other
work, load average 7-8): original 115 s, peak RSS 2344 MB, heap in use 1695 MB; ovis-lit without checkpointing
0.31x time, 0.67x peak RSS (0.51x heap); with `{vision: full, llm: selective}` 0.42x time, 0.56x peak RSS (0.33x
heap); equal losses. Where the memory goes (ovis-lit, no checkpointing): the NaViT's saved activations ~215 MB,
the visual head and its softmax [861, 16384] ~110 MB, the LLM's ~300 MB; the peak is at the end of the LLM forward.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

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


def batch():
    """(input_ids, attention_mask, labels, packed patches, grid_thws): one image per sample, right-padded."""
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
    """A random model of this config, exported by ovis-lit in the original Ovis2.5 layout."""
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


def ovis_lit(directory: str, vision: str = "none", llm: str = "none"):
    """(model, step) with ovis-lit's training forward; `step()` returns the loss."""
    sys.path.insert(0, str(REPO))
    from ovis_lit.interop.ovis25 import load_ovis25

    model, _ = load_ovis25(directory)
    model.set_activation_checkpointing(vision=vision, llm=llm)
    input_ids, mask, labels, pixel_values, grid_thws = batch()
    return model, lambda: model(input_ids, mask, labels, pixel_values, grid_thws=grid_thws).loss


def original(directory: str, vision: str = "none", llm: str = "none"):
    """(model, step) with the original Ovis2.5 code (importable from PYTHONPATH, see the module docstring)."""
    import torch
    from ovis.model.modeling_ovis import Ovis

    if (vision, llm) not in (("none", "none"), ("full", "full")):
        raise ValueError("the original has transformers' own checkpointing only: none or full for both")
    model = Ovis.from_pretrained(directory, torch_dtype=torch.float32, trust_remote_code=False)
    if vision == "full":  # what its trainer does with `--gradient_checkpointing` (ovis/train/arguments.py)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    input_ids, mask, labels, pixel_values, grid_thws = batch()
    return model, lambda: model(input_ids=input_ids, attention_mask=mask, pixel_values=pixel_values,
                                grid_thws=grid_thws, labels=labels).loss
