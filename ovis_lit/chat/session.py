"""A multi-turn conversation with a loaded checkpoint: the turns so far in the model's chat format, the images they
hold, and the decoding settings; each answer comes from evaluation's `generate_answers`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

from ..constants import IMAGE_TOKEN
from ..evaluation.generation import generate_answers
from ..model.ovis import OvisModel
from ..processing.chat_processor import ChatProcessor, user_turn
from .streaming import ChatStreamer


@dataclass
class Decoding:
    """How answers are generated: greedy (temperature 0) unless a temperature is set; `max_new_tokens` counts the
    thinking too; `thinking` / `thinking_budget` as evals/run.py's (Ovis2.5 only)."""

    max_new_tokens: int = 512
    thinking: bool = False
    thinking_budget: int | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None

    def check(self, processor: ChatProcessor) -> Decoding:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
        if self.thinking and not processor.takes_thinking:
            raise ValueError(f"thinking needs an Ovis2.5 checkpoint (the qwen3 chat format); this one's format is "
                             f"{processor.chat_format!r}")
        if self.thinking_budget is not None and not self.thinking:
            raise ValueError("thinking_budget is set but thinking is off: pass thinking=true")
        if self.thinking_budget is not None and not 0 < self.thinking_budget <= self.max_new_tokens:
            raise ValueError(f"thinking_budget must be between 1 and max_new_tokens ({self.max_new_tokens}), got "
                             f"{self.thinking_budget}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or (self.top_k is not None and self.top_k < 1):
            raise ValueError(f"temperature must be >= 0 (0: greedy), top_p in (0, 1], top_k >= 1; got "
                             f"{self.temperature}, {self.top_p}, {self.top_k}")
        return self

    def sampling(self) -> dict | None:
        """model.generate's sampling options; None (greedy) at temperature 0."""
        if not self.temperature:
            return None
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p,
                **({} if self.top_k is None else {"top_k": self.top_k})}

    def options(self) -> dict:
        """generate_answers' keyword arguments."""
        return {"max_new_tokens": self.max_new_tokens, "thinking": self.thinking,
                "thinking_budget": self.thinking_budget if self.thinking else None, "sampling": self.sampling()}


class ChatSession:
    def __init__(self, model: OvisModel, processor: ChatProcessor, decoding: Decoding | None = None):
        self.model, self.processor = model, processor
        self.decoding = (decoding or Decoding()).check(processor)
        self.turns: list[dict] = []  # {"from": "human" | "gpt", "value": ...}, with one <image> mark per image
        self.images: list[Image.Image] = []  # the conversation's images, in the order of their marks

    def reset(self) -> None:
        self.turns, self.images = [], []

    def set_thinking(self, on: bool) -> None:
        """Thinking on or off from the next answer (the configured thinking budget applies whenever it is on)."""
        if on and not self.processor.takes_thinking:
            raise ValueError(f"thinking needs an Ovis2.5 checkpoint (the qwen3 chat format); this one's format is "
                             f"{self.processor.chat_format!r}")
        self.decoding.thinking = on

    def ask(self, text: str, images: Sequence[Image.Image] = (),
            on_text: Callable[[str, str], None] | None = None) -> str:
        """The model's answer to `text` (with `images`, marked at its start unless it holds `<image>` marks) after
        the turns so far; `on_text(piece, part)` is called as the answer streams (`streaming.ChatStreamer`). The
        question and answer join the history only once the answer is complete (an error leaves it as it was).
        With thinking, the history keeps the answer alone (as the original's chat does), not the thinking."""
        turns = self.turns + user_turn(text, len(images))
        if turns[-1]["value"].count(IMAGE_TOKEN) != len(images):
            raise ValueError(f"the message has {turns[-1]['value'].count(IMAGE_TOKEN)} {IMAGE_TOKEN} marks but "
                             f"{len(images)} images are attached")
        everything = self.images + list(images)
        streamer = None if on_text is None else ChatStreamer(self.processor.tokenizer, on_text,
                                                             self.decoding.thinking)
        answer = generate_answers(self.model, self.processor, [(turns, everything)], batch_size=1, progress=False,
                                  streamer=streamer, **self.decoding.options())[0]
        self.turns = turns + [{"from": "gpt", "value": answer}]
        self.images = everything
        return answer
