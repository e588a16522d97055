"""Score a checkpoint on benchmarks with pinned prompts. `python evals/run.py checkpoint=<.ckpt or dir>` scores the
synthetic shapes set; see conf/eval.yaml for the options and evals/README.md for prompts and scoring rules."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # imported here: `--cfg job` / `--help` need not load the model stack
    from ovis_lit.evaluation.entry import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
