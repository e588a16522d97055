"""A Gradio chat with a checkpoint on localhost: `python demo.py checkpoint=<.ckpt or dir> [port=7860]` (image upload,
multi-turn, streamed answers; thinking for Ovis2.5). No analytics and no share link. See conf/chat.yaml."""

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="chat", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from ovis_lit.chat.entry import demo  # imported here: `--cfg job` / `--help` need not load the model stack

    demo(cfg)


if __name__ == "__main__":
    main()
