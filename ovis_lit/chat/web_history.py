"""The web demo's conversation, without Gradio: the turns and images of the history Gradio's ChatInterface hands
to each call (the conversation lives in the browser), and an answer streamed from a worker thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from PIL import Image

from ..processing.chat_processor import user_turn
from .images import open_local_image
from .session import ChatSession
from .streaming import THINKING

THINKING_TITLE = "Thinking"
_DONE = object()


def _parts(content: Any) -> list[Any]:
    return content if isinstance(content, list) else [content]


def text_and_files(content: Any) -> tuple[str, list[str]]:
    """A Gradio message's text and file paths (content items: strings, {"type": "text"}, {"type": "file"},
    {"path": ...})."""
    texts, files = [], []
    for part in _parts(content):
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            texts.append(part.get("text") or "")
        elif isinstance(part, dict) and (part.get("type") == "file" or "path" in part):
            file = part.get("file", part)
            path = file.get("path") if isinstance(file, dict) else getattr(file, "path", None)
            if path:
                files.append(path)
    return "\n".join(t for t in texts if t), files


def message_files(message: dict) -> list[str]:
    """The paths of the files attached to a MultimodalTextbox message ({"text": ..., "files": [path or {"path"}]})."""
    files = message.get("files") or []
    return [f if isinstance(f, str) else f.get("path") for f in files if isinstance(f, str) or f.get("path")]


def conversation_from_history(history: list[dict]) -> tuple[list[dict], list[Image.Image]]:
    """Gradio's messages -> (turns, images) for a ChatSession. A user message is one human turn (its images marked at
    its start); a user message with no answer after it (its answer failed) is left out; the assistant's thinking
    messages are left out (the history keeps answers alone, as chat.py's does)."""
    turns, images = [], []
    pending: tuple[str, list[str]] | None = None
    for message in history:
        role = message.get("role")
        if role == "user":
            pending = text_and_files(message.get("content"))  # a previous unanswered one is dropped
        elif role == "assistant":
            if (message.get("metadata") or {}).get("title") == THINKING_TITLE:
                continue
            text, _ = text_and_files(message.get("content"))
            if pending is None:  # two answers in a row (a retry): the later one stands
                if turns and turns[-1]["from"] == "gpt":
                    turns[-1]["value"] = text
                continue
            question, files = pending
            images += [open_local_image(path) for path in files]
            turns += user_turn(question, len(files)) + [{"from": "gpt", "value": text}]
            pending = None
    return turns, images


def stream_answer(session: ChatSession, text: str, images: list[Image.Image]) -> Iterator[tuple[str, str]]:
    """(thinking so far, answer so far) as the answer is generated; the final pair is the complete one."""
    pieces: queue.Queue = queue.Queue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["answer"] = session.ask(text, images, on_text=lambda piece, part: pieces.put((piece, part)))
        except BaseException as e:  # handed to the handler, which reports it
            outcome["error"] = e
        finally:
            pieces.put(_DONE)

    threading.Thread(target=work, daemon=True).start()
    thinking, answer = "", ""
    while (item := pieces.get()) is not _DONE:
        piece, part = item
        if part == THINKING:
            thinking += piece
        else:
            answer += piece
        yield thinking, answer
    if "error" in outcome:
        raise outcome["error"]
    if not answer.strip() and outcome["answer"]:  # no </think> came: all of it is the answer (split_thinking)
        thinking = ""
    yield thinking.strip(), outcome["answer"]
