"""What both processors (crops: `processor.OvisProcessor`; native resolution: `native_processor.NativeOvisProcessor`)
share: the tokenizer and its chat format, the pad id, expanding each image mark of a formatted text into the
model's placeholder ids, and padding a batch's ids."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..constants import IGNORE_ID, IMAGE_TOKEN
from .conversation import ROLE_ALIASES, ConversationFormatter, FormattedText


class ChatProcessor:
    def __init__(self, tokenizer, chat_format: str):
        self.tokenizer = tokenizer
        self.formatter = ConversationFormatter(tokenizer, chat_format)
        self.pad_token_id = pad_token_id_of(tokenizer)
        self.tokenizer_source: Path | None = None  # the directory the tokenizer was read from (exports copy it)

    @property
    def chat_format(self) -> str:
        return self.formatter.format_spec.name

    @property
    def takes_thinking(self) -> bool:
        """Whether the chat format has thinking (`<think>...</think>` in assistant turns, supervised: Qwen3)."""
        return self.formatter.format_spec.empty_think is not None


def user_turn(question: str | list[dict], n_images: int) -> list[dict]:
    """One user turn of an inference prompt; `<image>` is prepended per image when the text has none. A list of turns
    is a conversation so far (a multi-turn chat), taken as it is: it must end with the user's turn and carry its own
    `<image>` marks, one per image, in order."""
    if not isinstance(question, str):
        turns = list(question)
        if not turns or ROLE_ALIASES.get(turns[-1].get("from", turns[-1].get("role"))) != "human":
            raise ValueError("a conversation to answer must end with the user's turn")
        return turns
    if n_images and IMAGE_TOKEN not in question:
        question = f"{IMAGE_TOKEN}\n" * n_images + question
    return [{"from": "human", "value": question}]


def expand_marks(text: FormattedText, expand: Callable[[int], list[int] | None]) -> tuple[list[int], list[int]]:
    """(ids, labels) of `text` with each mark id that `expand` knows replaced by the placeholder ids it returns
    (called once per mark, in order), which are never supervised; `expand` returns None for a text token."""
    input_ids, labels = [], []
    for token, label in zip(text.input_ids, text.labels):
        placeholders = expand(token)
        if placeholders is None:
            input_ids.append(token)
            labels.append(label)
        else:
            input_ids.extend(placeholders)
            labels.extend([IGNORE_ID] * len(placeholders))
    return input_ids, labels


def pad_token_id_of(tokenizer) -> int:
    """The id batches are padded with: the tokenizer's pad token, else its EOS (as the original's collator)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token to pad with")
    return pad


def pad_ids(samples: list, pad_token_id: int, padding_side: str = "right") -> dict[str, torch.Tensor]:
    """input_ids, attention_mask and labels of `samples` (each with `.input_ids` and `.labels`), padded to the longest
    on `padding_side` with the pad id, 0 and IGNORE_ID."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    longest = max(len(s.input_ids) for s in samples)
    batch = len(samples)
    input_ids = torch.full((batch, longest), pad_token_id, dtype=torch.long)
    labels = torch.full((batch, longest), IGNORE_ID, dtype=torch.long)
    attention_mask = torch.zeros((batch, longest), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        span = slice(0, n) if padding_side == "right" else slice(longest - n, longest)
        input_ids[i, span] = torch.tensor(s.input_ids, dtype=torch.long)
        labels[i, span] = torch.tensor(s.labels, dtype=torch.long)
        attention_mask[i, span] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
