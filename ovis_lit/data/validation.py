"""What a sample's JSON must satisfy, checked by training (`samples.SampleBuilder`) and by the converters alike, so
that a converter never keeps a sample that training would drop (and both count it under the same reason).

Every check raises `Rejected(reason, detail)` and nothing else, whatever JSON-like value it is given:
- `bad_json`: not a well-formed sample (conversations not a list of {"from"|"role": known role, "value": str},
  a caption that is neither a string nor missing, a caption template that is not a string);
- `empty_conversation`, `no_assistant_turn`;
- `empty_caption`: a caption that is missing (None, a float NaN from a spreadsheet or parquet file), or blank;
- `invalid_sample`: what the chat formatter would refuse: a system turn after the first turn (or any system turn,
  for a chat format without one), `<image>` marks and images differing in number, a caption containing `<image>`
  (in stages 2-3 a caption becomes an assistant turn, where the extra mark has no image), a caption template
  without exactly one `<image>`, a caption sample without exactly one image.

Training also skips for reasons only the image bytes or the tokenizer tell (`decode_error`, `too_many_pixels`,
`too_long` with truncation off, `no_supervised_tokens`); converters check the images with the same
`processing.image_decoding.decode_image`, and bound text by characters instead of tokens.
"""

from __future__ import annotations

import math
from typing import Any

from ..constants import IMAGE_TOKEN
from ..processing.conversation import ROLE_ALIASES
from ..rejection import Rejected


def is_text(value: Any) -> bool:
    """A string that is valid Unicode (JSON escapes can spell lone surrogates, which no tokenizer takes)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def turn_role(turn: dict) -> str | None:
    """The turn's role as the formatter names it (human / gpt / system), None when unknown or not a string."""
    role = turn.get("from", turn.get("role"))
    return ROLE_ALIASES.get(role) if isinstance(role, str) else None


def check_conversation(conversations: Any, key: str = "", allows_system: bool = True) -> None:
    """LLaVA-style turns: a non-empty list of {"from"|"role": known role, "value": str}, at most one system turn
    and only first (none if `allows_system` is False), at least one assistant turn."""
    if not isinstance(conversations, list):
        raise Rejected("bad_json", f"{key}: 'conversations' is not a list")
    if not conversations:
        raise Rejected("empty_conversation", key)
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
            raise Rejected("bad_json", f"{key}: turn {i} is not {{'from': ..., 'value': str}}")
        if not is_text(turn["value"]):
            raise Rejected("bad_json", f"{key}: turn {i} is not valid Unicode text (a lone surrogate)")
        if turn_role(turn) is None:
            raise Rejected("bad_json", f"{key}: turn {i} has unknown role {turn.get('from', turn.get('role'))!r}")
        if turn_role(turn) == "system":
            if not allows_system:
                raise Rejected("invalid_sample", f"{key}: the chat format has no system turn")
            if i != 0:
                raise Rejected("invalid_sample", f"{key}: a system turn at position {i} (only the first may be)")
    if not any(turn_role(turn) == "gpt" for turn in conversations):
        raise Rejected("no_assistant_turn", key)


def is_missing(value: Any) -> bool:
    """None or a float NaN: how spreadsheets, pandas and parquet files spell an empty cell."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def check_caption(caption: Any, template: Any = None, key: str = "") -> None:
    """A caption: a non-blank string without `<image>`; its template (optional) a string with one `<image>`."""
    if is_missing(caption):
        raise Rejected("empty_caption", f"{key}: no caption ({caption!r})")
    if not isinstance(caption, str):
        raise Rejected("bad_json", f"{key}: 'caption' is a {type(caption).__name__}, not a string")
    if not is_text(caption):
        raise Rejected("bad_json", f"{key}: 'caption' is not valid Unicode text (a lone surrogate)")
    if not caption.strip():
        raise Rejected("empty_caption", key)
    if IMAGE_TOKEN in caption:
        raise Rejected("invalid_sample", f"{key}: the caption contains {IMAGE_TOKEN}")
    if template is not None:
        if not is_text(template):
            raise Rejected("bad_json", f"{key}: 'caption_template' is not a string of valid Unicode text")
        if template.count(IMAGE_TOKEN) != 1:
            raise Rejected("invalid_sample", f"{key}: caption template {template!r} needs exactly one {IMAGE_TOKEN}")


def check_meta(meta: Any, key: str = "", allows_system: bool = True) -> None:
    """A sample's JSON object: a conversation or a caption sample (what the JSON alone tells)."""
    if not isinstance(meta, dict):
        raise Rejected("bad_json", f"{key}: not a JSON object")
    if "conversations" in meta:
        check_conversation(meta["conversations"], key, allows_system)
    elif "caption" in meta:
        check_caption(meta["caption"], meta.get("caption_template"), key)
    else:
        raise Rejected("bad_json", f"{key}: neither 'conversations' nor 'caption'")


def count_image_marks(meta: dict) -> int:
    """`<image>` marks of a checked sample (a caption sample's template holds exactly one)."""
    if "conversations" in meta:
        return sum(turn["value"].count(IMAGE_TOKEN) for turn in meta["conversations"])
    return 1


def check_image_count(meta: dict, n_images: int, key: str = "") -> None:
    """A checked sample has as many images as `<image>` marks."""
    marks = count_image_marks(meta)
    if marks != n_images:
        kind = "a caption sample needs one image" if "conversations" not in meta else f"{marks} {IMAGE_TOKEN} marks"
        raise Rejected("invalid_sample", f"{key}: {kind}, has {n_images} images")


def check_preference(meta: Any, key: str = "", allows_system: bool = True) -> None:
    """A preference pair's JSON (`data.preference`): "prompt", the turns before the answer (ending with a user
    turn), and two answers to it, "chosen" and "rejected" (non-blank, different strings without `<image>`), each
    with the prompt a conversation `check_conversation` accepts; optional "ref_logps": [chosen, rejected], the
    reference model's sequence log-probs (finite numbers)."""
    if not isinstance(meta, dict):
        raise Rejected("bad_json", f"{key}: not a JSON object")
    prompt = meta.get("prompt")
    if not isinstance(prompt, list) or not prompt:
        raise Rejected("bad_json", f"{key}: 'prompt' is not a non-empty list of turns")
    for name in ("chosen", "rejected"):
        answer = meta.get(name)
        if is_missing(answer):
            raise Rejected("empty_answer", f"{key}: no {name!r} answer")
        if not is_text(answer):
            raise Rejected("bad_json", f"{key}: {name!r} is not a string of valid Unicode text")
        if not answer.strip():
            raise Rejected("empty_answer", f"{key}: {name!r} is blank")
        if IMAGE_TOKEN in answer:
            raise Rejected("invalid_sample", f"{key}: the {name!r} answer contains {IMAGE_TOKEN}")
        check_conversation(prompt + [{"from": "gpt", "value": answer}], key, allows_system)
    if isinstance(prompt[-1], dict) and turn_role(prompt[-1]) != "human":
        raise Rejected("invalid_sample", f"{key}: the prompt must end with a user turn")
    if meta["chosen"].strip() == meta["rejected"].strip():
        raise Rejected("identical_answers", f"{key}: chosen and rejected are the same answer")
    ref = meta.get("ref_logps")
    if ref is not None and not (isinstance(ref, list) and len(ref) == 2
                                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                                        for x in ref)):
        raise Rejected("bad_json", f"{key}: 'ref_logps' must be [chosen, rejected], two finite numbers")


def preference_turns(meta: dict, answer: str) -> list[dict]:
    """The conversation of one answer of a checked preference pair: its prompt, then the answer."""
    return [dict(t) for t in meta["prompt"]] + [{"from": "gpt", "value": meta[answer]}]
