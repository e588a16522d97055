"""Train an Ovis model. `python train.py` runs the tiny three-stage recipe on the CPU; see conf/train.yaml."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers + dataloader workers

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    # imported here: Lightning and the model stack take ~8 s to import, which `--cfg job` / `--help` do not need
    from ovis_lit.training.entry import train

    return train(cfg)


if __name__ == "__main__":
    main()
