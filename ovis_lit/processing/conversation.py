"""Conversation formats of Ovis 1.6 (Gemma, Qwen/ChatML, Llama 3) and Ovis2.5 (Qwen3, with thinking) with
assistant-only labels, and caption samples.

Each turn's text is tokenised as a whole, split at the literal `<image>` (so no BPE merge crosses an image), and
labels are assigned from character offsets: a token is supervised when it starts inside the assistant message or
its end token. The newline after an end token is never supervised.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from ..constants import IGNORE_ID, IMAGE_TOKEN, IMAGE_TOKEN_ID, VIDEO_TOKEN, VIDEO_TOKEN_ID

ROLE_ALIASES = {
    "human": "human",
    "user": "human",
    "gpt": "gpt",
    "assistant": "gpt",
    "system": "system",
    # Qwen3: formatted as an assistant turn, never supervised
    "ignored_gpt": "ignored_gpt",
}
ASSISTANT_ROLES = ("gpt", "ignored_gpt")


@dataclass(frozen=True)
class ChatFormat:
    name: str
    formatter_class: str  # the original's class name (written to exported configs)
    bos: str  # text that opens the prompt
    role_prefix: dict[str, str]  # each role's turn header (`_role_prefix`); a format without "system" has no system turn
    turn_end: str  # closes every finished turn
    default_system: str | None
    strip_messages: bool
    # Qwen3 thinking: prepended (unsupervised) to an assistant message that has no <think>...</think> block
    empty_think: str | None = None
    # Qwen3: a conversation that ends with an assistant turn ends at its end token (the last "\n" is dropped)
    drop_final_newline: bool = False
    video: bool = False  # `<video>` marks a video (VIDEO_TOKEN_ID)

    @property
    def supervised_end(self) -> str:
        """The part of turn_end that assistant labels include: the newline after an end token never is."""
        return self.turn_end.rstrip("\n")

    @property
    def allows_system(self) -> bool:
        return "system" in self.role_prefix


def _role_prefix(header: str, **names: str) -> dict[str, str]:
    """Each role's turn header: `header` around the role's name in the format's own words (user, model, ...)."""
    return {role: header.format(name) for role, name in names.items()}


# Qwen3's generation preface with thinking switched off (with thinking on the preface is empty); also what a Qwen3
# answer without thinking is trained after (`empty_think`)
NO_THINKING_PREFACE = "<think>\n\n</think>\n\n"
_CHATML = _role_prefix("<|im_start|>{}\n", system="system", human="user", gpt="assistant")
_QWEN = ChatFormat("qwen", "QwenConversationFormatter", bos="", role_prefix=_CHATML, turn_end="<|im_end|>\n",
                   default_system="You are a helpful assistant.", strip_messages=False)
CHAT_FORMATS = {
    f.name: f
    for f in (
        ChatFormat("gemma", "GemmaConversationFormatter", bos="<bos>", turn_end="<end_of_turn>\n",
                   role_prefix=_role_prefix("<start_of_turn>{}\n", human="user", gpt="model"),
                   default_system=None, strip_messages=True),
        _QWEN,
        ChatFormat("llama3", "Llama3ConversationFormatter", bos="<|begin_of_text|>", turn_end="<|eot_id|>",
                   role_prefix=_role_prefix("<|start_header_id|>{}<|end_header_id|>\n\n",
                                            system="system", human="user", gpt="assistant"),
                   default_system="You are a helpful and honest multimodal assistant.", strip_messages=True),
        # Qwen3 (Ovis2.5): ChatML without a default system prompt, with thinking, videos, and assistant turns that
        # are context only (ignored_gpt)
        replace(_QWEN, name="qwen3", formatter_class="Qwen3ConversationFormatter",
                role_prefix={**_CHATML, "ignored_gpt": _CHATML["gpt"]}, default_system=None,
                empty_think=NO_THINKING_PREFACE, drop_final_newline=True, video=True),
    )
}
FORMAT_BY_CLASS = {f.formatter_class: f for f in CHAT_FORMATS.values()}


def _has_thinking(message: str) -> bool:
    """The original's test: both tags anywhere in the message (then no empty block is added, and the message,
    thinking included, is supervised; an explicit empty block `<think>\n\n</think>\n\n` too)."""
    return "<think>" in message and "</think>" in message


@dataclass
class FormattedText:
    prompt: str
    input_ids: list[int]  # IMAGE_TOKEN_ID (-200) where an image goes
    labels: list[int]


class ConversationFormatter:
    def __init__(self, tokenizer, chat_format: str | ChatFormat):
        self.tokenizer = tokenizer
        if isinstance(chat_format, str):
            if chat_format not in CHAT_FORMATS:
                raise ValueError(f"unknown chat format {chat_format!r}; choose from {sorted(CHAT_FORMATS)}")
            chat_format = CHAT_FORMATS[chat_format]
        self.format_spec = chat_format
        for token in {chat_format.supervised_end} | ({chat_format.bos} if chat_format.bos else set()):
            if token not in tokenizer.get_vocab():
                raise ValueError(f"the tokenizer has no {token!r} token, which the {chat_format.name} format needs")

    # --------------------------------------------------------------------------------------------- tokenising
    def tokenize(self, text: str) -> tuple[list[int], list[int]]:
        """Token ids (IMAGE_TOKEN_ID for each `<image>`, VIDEO_TOKEN_ID for each `<video>` in formats with videos)
        and each token's start offset in `text`."""
        markers = {IMAGE_TOKEN: IMAGE_TOKEN_ID}
        if self.format_spec.video:
            markers[VIDEO_TOKEN] = VIDEO_TOKEN_ID
        ids: list[int] = []
        starts: list[int] = []
        offset = 0
        pieces = re.split("(" + "|".join(map(re.escape, markers)) + ")", text)
        for chunk in pieces:
            if chunk in markers:
                ids.append(markers[chunk])
                starts.append(offset)
                offset += len(chunk)
                continue
            if chunk:
                enc = self.tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
                ids.extend(enc["input_ids"])
                starts.extend(offset + s for s, _ in enc["offset_mapping"])
            offset += len(chunk)
        return ids, starts

    # ------------------------------------------------------------------------------------------ conversations
    def format(self, conversations: list[dict], generation_preface: str | None = None) -> FormattedText:
        """LLaVA-style turns ({"from": "human"|"gpt"|"system", "value": ...}) -> prompt, ids and labels.

        With `generation_preface` (inference) an open assistant turn starting with it ends the prompt, and no
        position is supervised.
        """
        spec = self.format_spec
        turns = [(self._role(t), t["value"]) for t in conversations]
        if not turns:
            raise ValueError("empty conversation")
        if turns[0][0] != "system" and spec.default_system is not None:
            turns.insert(0, ("system", spec.default_system))
        if generation_preface is not None:
            turns.append(("gpt", generation_preface))

        prompt, input_ids, labels = "", [], []
        for i, (role, message) in enumerate(turns):
            if role == "system" and not spec.allows_system:
                raise ValueError(f"the {spec.name} format has no system turn")
            if role == "system" and i != 0:
                raise ValueError("a system turn may only come first")
            if spec.strip_messages:
                message = message.strip()
            if role not in spec.role_prefix:
                raise ValueError(f"the {spec.name} format has no {role!r} turn")
            is_open = generation_preface is not None and i == len(turns) - 1
            head = (spec.bos if i == 0 else "") + spec.role_prefix[role]
            if role == "gpt" and not is_open and spec.empty_think and not _has_thinking(message):
                head += spec.empty_think  # an answer without thinking: the empty block is context, not a target
            text = head + message + ("" if is_open else spec.turn_end)
            ids, starts = self.tokenize(text)
            if role == "gpt" and generation_preface is None:
                lo, hi = len(head), len(head) + len(message) + len(spec.supervised_end)
                labels.extend(t if lo <= s < hi and t >= 0 else IGNORE_ID for t, s in zip(ids, starts))
            else:
                labels.extend([IGNORE_ID] * len(ids))
            prompt += text
            input_ids.extend(ids)
        if spec.drop_final_newline and generation_preface is None and turns[-1][0] in ASSISTANT_ROLES:
            # the original trains on "...<|im_end|>" without the newline after it (the prompt string keeps it)
            newline = self.tokenizer("\n", add_special_tokens=False)["input_ids"]
            if input_ids[-len(newline):] == newline:
                del input_ids[-len(newline):], labels[-len(newline):]
        return FormattedText(prompt, input_ids, labels)

    @staticmethod
    def _role(turn: dict) -> str:
        role = turn.get("from", turn.get("role"))
        if role not in ROLE_ALIASES:
            raise ValueError(f"unknown conversation role {role!r}; use human/gpt/system (or ignored_gpt in qwen3)")
        return ROLE_ALIASES[role]

    # ----------------------------------------------------------------------------------------------- captions
    def format_caption(self, caption: str, template: str = f"{IMAGE_TOKEN}\n") -> FormattedText:
        """Caption sample: template (with one `<image>`) + caption; labels on the caption only; no BOS/EOS."""
        if template.count(IMAGE_TOKEN) != 1:
            raise ValueError(f"a caption template needs exactly one {IMAGE_TOKEN}, got {template!r}")
        caption = caption.replace(IMAGE_TOKEN, "").strip()
        head_ids, _ = self.tokenize(template)
        caption_ids, _ = self.tokenize(caption)
        return FormattedText(template + caption, head_ids + caption_ids, [IGNORE_ID] * len(head_ids) + caption_ids)
