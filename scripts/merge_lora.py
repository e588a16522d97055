"""Fold LoRA adapters into their base: one full export in the original Ovis layout, that evals/run.py, chat.py and
the original Ovis code load like any released checkpoint.

    python scripts/merge_lora.py outputs/runs/<run>/export outputs/runs/<run>/adapters outputs/runs/<run>/merged

`base`: what the adapters were trained on top of: the LoRA stage's `export/` (the base with what trained fully, e.g.
the visual head and table), an original Ovis directory, or a train.py `.ckpt`; `adapters`: a directory in peft's
layout (adapter_config.json + adapter_model.safetensors; a pickled adapter_model.bin is refused). `--processor`: the
tokenizer's directory when `base` is a `.ckpt` without one nearby.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ovis_lit.evaluation.loading import load_for_eval  # noqa: E402
from ovis_lit.interop.original_export import export_original  # noqa: E402


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the base: a LoRA stage's export/, an original Ovis directory or a .ckpt")
    parser.add_argument("adapters", help="the adapters directory (peft layout)")
    parser.add_argument("out", help="output directory (original Ovis layout)")
    parser.add_argument("--processor", help="tokenizer / image settings directory, for a .ckpt base")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        parser.error(f"{out} exists and is not empty")
    # the same loading as evaluation: the base in its own dtype, the adapters injected, checked and merged
    model, processor, info = load_for_eval(args.base, args.processor, adapters=args.adapters)
    max_length = getattr(processor, "multimodal_max_length", None)
    export_original(model, processor, out, **({"multimodal_max_length": max_length} if max_length else {}))
    print(f"merged {info['format']} -> {out}")
    return out


if __name__ == "__main__":
    main()
