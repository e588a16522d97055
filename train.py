"""Train an Ovis model. `python train.py` runs the tiny three-stage recipe on the CPU; see conf/train.yaml."""

import os
import re
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers + dataloader workers

import hydra
from omegaconf import DictConfig

from ovis_lit.training.entry import train


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


def quote_numeric_stage(argv: list[str]) -> list[str]:
    """`stage=3` -> `stage='3'`: Hydra parses 3 as an int, which it refuses as a config-group choice."""
    pattern = re.compile(r"^(\+{0,2}stage)=(\d+(?:,\d+)*)$")
    out = []
    for arg in argv:
        match = pattern.match(arg)
        out.append(f"{match.group(1)}=" + ",".join(f"'{n}'" for n in match.group(2).split(",")) if match else arg)
    return out


if __name__ == "__main__":
    sys.argv = quote_numeric_stage(sys.argv)
    main()
