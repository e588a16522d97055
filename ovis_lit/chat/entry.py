"""chat.py's and demo.py's body: load the checkpoint as evals/run.py does, then chat on the terminal, answer a
batch file, or (demo.py) serve the web demo."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig

from ..evaluation.entry import resolve_device
from ..evaluation.loading import load_for_eval
from .session import ChatSession, Decoding

log = logging.getLogger(__name__)


def decoding_of(cfg: DictConfig) -> Decoding:
    top_k = cfg.get("top_k")
    budget = cfg.get("thinking_budget")
    return Decoding(max_new_tokens=int(cfg.max_new_tokens), thinking=bool(cfg.get("thinking", False)),
                    thinking_budget=None if budget is None else int(budget),
                    temperature=float(cfg.get("temperature", 0.0)), top_p=float(cfg.get("top_p", 1.0)),
                    top_k=None if top_k is None else int(top_k))


def load(cfg: DictConfig) -> tuple[ChatSession, dict]:
    """The checkpoint in a chat session with the configured decoding (checked against its processor)."""
    torch.manual_seed(cfg.get("seed", 0))
    decoding = decoding_of(cfg)
    model, processor, info = load_for_eval(cfg.checkpoint, cfg.get("processor_dir"), resolve_device(cfg.get("device", "auto")),
                                           cfg.get("dtype"))
    log.info("loaded %s (%s, chat format %s)", info["checkpoint"], info["format"], processor.chat_format)
    return ChatSession(model, processor, decoding), info


def batch_output(cfg: DictConfig) -> Path:
    if cfg.get("output"):
        return Path(cfg.output)
    source = Path(cfg.batch)
    return source.with_name(source.name.removesuffix(".jsonl") + ".answers.jsonl")


def chat(cfg: DictConfig) -> dict | None:
    """Batch mode when `batch` is set (returns its counts), else the interactive chat on stdin / stdout."""
    if cfg.get("batch"):
        from .batch import answer_file

        source = Path(cfg.batch)
        if not source.is_file():  # before the model is loaded
            raise FileNotFoundError(f"batch file {source} does not exist")
        session, _ = load(cfg)
        counts = answer_file(session.model, session.processor, source, batch_output(cfg), session.decoding,
                             int(cfg.batch_size), bool(cfg.get("progress", True)))
        print(json.dumps(counts), flush=True)
        return counts
    from .repl import chat_loop, lines_from

    session, info = load(cfg)
    print(f"{info['checkpoint']} ({info['format']}, {session.processor.chat_format} chat format)")
    chat_loop(session, lines_from(input), sys.stdout)
    return None


def demo(cfg: DictConfig) -> None:
    """The web demo (demo.py): the checkpoint behind a Gradio chat on cfg.host:cfg.port."""
    try:
        from .web import build_demo, serve
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"demo.py needs {e.name}: pip install -e '.[demo]'") from e

    session, info = load(cfg)
    serve(build_demo(session.model, session.processor, session.decoding, title=f"ovis-lit: {Path(info['checkpoint']).name}"),
          cfg.get("host", "127.0.0.1"), int(cfg.get("port", 7860)))
