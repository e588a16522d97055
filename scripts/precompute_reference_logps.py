"""Precompute the DPO reference log-probs of preference shards (for `stage.dpo.reference=precomputed`).

    python scripts/precompute_reference_logps.py --output shards/rlaif_v_ref -- \
        model=ovis_9b init_from=/ckpt/Ovis1.6-Gemma2-9B data=my_preference_data

Overrides after `--` are train.py's (stage=dpo is implied): the same model, init_from, data and recipe settings as
the DPO run, so the pairs are formatted as that run formats them and the reference is the model it starts from.
Writes copies of the stage's preference shards with `ref_logps` in each pair's JSON and prints the `sources` entry
for a data config; then train with `stage.dpo.reference=precomputed` on those shards (no reference model held).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from hydra import compose, initialize_config_dir

from ovis_lit.training.reference_logps import precompute


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, type=Path, help="directory of the shards with reference log-probs")
    parser.add_argument("--splits", nargs="+", default=["train", "val"], help="which splits of each source")
    parser.add_argument("--pairs-per-batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("overrides", nargs="*", help="train.py overrides (model=..., init_from=..., data=...)")
    args = parser.parse_args(argv)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["stage=dpo", "paths.output_dir=/tmp/precompute", *args.overrides])
    report = precompute(cfg, args.output, tuple(args.splits), args.pairs_per_batch, device=args.device)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
