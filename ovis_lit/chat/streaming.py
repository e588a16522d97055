"""Streaming an answer as it is generated: transformers' TextStreamer (incremental decoding of the new tokens) with
each piece of text handed to a callback, told whether it is thinking (Ovis2.5, before `</think>`) or answer."""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers import TextStreamer

THINKING, ANSWER = "thinking", "answer"


class ChatStreamer(TextStreamer):
    """`on_text(text, part)` is called with each new piece of decoded text, `part` THINKING or ANSWER. With `thinking`
    the stream starts in the thinking and turns to the answer at the `</think>` token (which is not shown), as
    `evaluation.thinking.split_thinking` splits the finished answer."""

    def __init__(self, tokenizer, on_text: Callable[[str, str], None], thinking: bool = False):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text
        self.part = THINKING if thinking else ANSWER
        self.think_end = tokenizer.convert_tokens_to_ids("</think>") if thinking else None

    def put(self, value: torch.Tensor) -> None:
        if value.dim() > 1 and value.shape[0] > 1:
            raise ValueError("ChatStreamer follows one answer (batch size 1)")
        if self.skip_prompt and self.next_tokens_are_prompt:  # generate's first put is the prompt
            self.next_tokens_are_prompt = False
            return
        tokens = value.reshape(-1).tolist()
        if self.part == THINKING and self.think_end in tokens:
            cut = tokens.index(self.think_end)
            if cut:
                super().put(torch.tensor(tokens[:cut]))
            self._flush()
            self.part, tokens = ANSWER, tokens[cut + 1:]
        if tokens:
            super().put(torch.tensor(tokens))

    def _flush(self) -> None:
        """Hand over what the decoder still holds back (the end of the thinking), without ending the stream."""
        if self.token_cache:
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            self.on_finalized_text(text[self.print_len:])
        self.token_cache, self.print_len = [], 0

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text, self.part)
