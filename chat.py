"""Talk to a checkpoint on the terminal: `python chat.py checkpoint=<.ckpt or dir>` (images with `/image PATH`,
multi-turn, streamed answers, thinking for Ovis2.5), or answer a JSONL file of questions in batches:
`python chat.py checkpoint=... batch=questions.jsonl`. See conf/chat.yaml for the options."""

import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="chat", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from ovis_lit.chat.entry import chat  # imported here: `--cfg job` / `--help` need not load the model stack

    chat(cfg)


def hydra_arguments(argv: list[str]) -> list[str]:
    """`--batch FILE` (the spelling the issue uses) as the Hydra override `batch=FILE`."""
    out, args = [], iter(argv)
    for arg in args:
        if arg == "--batch":
            out.append(f"batch={next(args, '')}")
        elif arg.startswith("--batch="):
            out.append("batch=" + arg.removeprefix("--batch="))
        else:
            out.append(arg)
    return out


if __name__ == "__main__":
    sys.argv[1:] = hydra_arguments(sys.argv[1:])
    main()
