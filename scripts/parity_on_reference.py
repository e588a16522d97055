#!/usr/bin/env python
"""Run ovis-lit's fixture parity checks (tests/parity.py) on any reference directory in the fixtures' layout.

Meant for references that `scripts/check_in_original.py --write-reference DIR` wrote with the ORIGINAL code for a
model that has no vendored fixture (e.g. a fresh CLIP-based Ovis 1.6 export): together the two scripts check that
ovis-lit computes what the original computes on that model. Run from the repository root in ovis-lit's venv:
    PYTHONPATH=$PWD python scripts/parity_on_reference.py DIR [DIR ...]
Prints one line per check and exits 1 when one fails.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ovis_lit.interop.original import load_original
from tests import parity


def checks(ref: parity.Reference):
    def forward_on_the_originals_layout():
        with parity.strided_vit_stream(ref.model):
            parity.check_forward(ref)

    def gradients(fast_path):
        def run():
            model = load_original(ref.checkpoint)[0]
            model.fast_path = fast_path
            parity.check_gradients(ref, model=model)

        return run

    yield "preprocessing (pixels 1e-5, placeholders)", lambda: parity.check_preprocess(ref)
    yield "prompts, ids, labels", lambda: parity.check_conversations(ref)
    yield "forward, the original's ViT layout (logits, loss, embeds 1e-5)", forward_on_the_originals_layout
    yield "forward, default speed-ups (logits 1e-4)", lambda: parity.check_forward(ref, tol=1e-4)
    yield "training loss path", lambda: parity.check_training_loss(ref)
    yield "visual tokens (1e-6)", lambda: parity.check_visual_tokens(ref)
    yield "gradients, fast path (1e-5)", gradients(True)
    yield "gradients, plain path (1e-5)", gradients(False)
    yield "greedy generation alone", lambda: parity.check_generation_alone(ref)
    if "batched_left_padded" in ref.expected["generate"] or len(parity.generation_cases(ref)) > 1:
        yield "greedy generation, left-padded batch", lambda: parity.check_generation_batched(ref, "left")


def main(argv: list[str]) -> int:
    failed = 0
    for root in map(Path, argv):
        model, processor = load_original(root / "checkpoint")
        ref = parity.Reference(
            root,
            json.loads((root / "expected.json").read_text()),
            load_file(root / "expected.safetensors"),
            model.eval(),
            processor,
        )
        print(f"== ovis-lit vs {root}")
        for name, check in checks(ref):
            try:
                check()
                print(f"  ok   {name}")
            except Exception as e:  # noqa: BLE001  (report every check, not only the first failure)
                failed += 1
                print(f"  FAIL {name}: {type(e).__name__}: {e}")
                traceback.print_exc(limit=-2)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
