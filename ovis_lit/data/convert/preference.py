"""Preference data (chosen / rejected answers to the same image(s) and prompt) -> WebDataset shards for stage=dpo.

Input: a JSON list, JSON Lines or parquet file of records in either layout:
- RLAIF-V (openbmb/RLAIF-V-Dataset, parquet): {"idx"|"id", "image": path | {"bytes": ..., "path": ...},
  "question": "...", "chosen": "...", "rejected": "..."}. Its questions carry no `<image>` mark: one per image is
  put before the question.
- LLaVA style: {"id", "image"|"images": path | [paths], "conversations": [turns ending with a user turn],
  "chosen": "...", "rejected": "..."}; `--add-missing-image-token` as in data/convert_llava.py.
An answer may also be given as a turn ({"from": "gpt", "value": "..."}, or "role" / "content"). Optional
"ref_chosen_logp" / "ref_rejected_logp": reference log-probs computed elsewhere (they must match this
project's formatting; scripts/precompute_reference_logps.py computes them from the shards instead).
Image paths are relative to `--image-root` and must stay inside it; embedded bytes go through the same guarded
decoder. The checks are training's own (`validation.check_preference`), so training never skips a converted pair
for them; rejected records are counted by reason in the report (`empty_answer`, `identical_answers`,
`invalid_sample`, `missing_image`, `bad_image_path`, `decode_error`, ...).

    python data/convert_preference.py --input RLAIF-V-Dataset_000.parquet --output shards/rlaif_v
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...constants import IMAGE_TOKEN
from ...rejection import Rejected
from ..validation import check_image_count, check_preference, is_missing, preference_turns, turn_role
from .checks import Converted, Limits, image_member, object_entry_id
from .cli import files_parser, limits_from, options_from, run_command
from .files import read_image_file
from .runner import run_inputs
from .text import load_records as read_records

FIELDS = ("id", "idx", "image", "images", "question", "conversations", "chosen", "rejected", "ref_chosen_logp",
          "ref_rejected_logp")


def entry_key(entry: Any, index: int) -> str:
    key = object_entry_id(entry, index)
    if "id" not in entry and isinstance(entry.get("idx"), (str, int)):  # RLAIF-V names its index `idx`
        return str(entry["idx"])
    return key


def images_of(entry: dict, key: str) -> list[Any]:
    """The record's images: paths, or embedded bytes / {"bytes": ...} (a parquet image column)."""
    images = entry.get("image", entry.get("images"))
    if is_missing(images) or images == "":
        return []
    if isinstance(images, (str, bytes, bytearray, dict)):
        return [images]
    if isinstance(images, list):
        return images
    raise Rejected("bad_json", f"{key}: 'image' is neither a path, image bytes nor a list of them")


def answer_text(value: Any) -> Any:
    """An answer given as text or as one assistant turn; anything else is left for the checks to refuse."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        value = value.get("value", value.get("content"))
    return value


def prompt_turns(entry: dict, n_images: int, limits: Limits, key: str) -> list[dict]:
    """The turns before the answers: the LLaVA layout's conversations, or the RLAIF-V question as one user turn.
    Without any `<image>` mark, one per image goes first (always for a question, on request for conversations)."""
    if "conversations" in entry:
        turns = entry["conversations"]
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise Rejected("bad_json", f"{key}: 'conversations' is not a list of turns")
        turns, add_marks = [dict(t) for t in turns], limits.add_missing_image_token
    else:
        question = entry.get("question")
        if is_missing(question) or not isinstance(question, str) or not question.strip():
            raise Rejected("bad_json", f"{key}: neither 'conversations' nor a 'question'")
        turns, add_marks = [{"from": "human", "value": question}], True
    marks = sum(t["value"].count(IMAGE_TOKEN) for t in turns if isinstance(t.get("value"), str))
    if marks == 0 and n_images and add_marks and turns and isinstance(turns[0].get("value"), str):
        first_user = next((t for t in turns if turn_role(t) == "human"), turns[0])
        first_user["value"] = f"{IMAGE_TOKEN}\n" * n_images + first_user["value"]
    return turns


def reference_logps(entry: dict, key: str) -> list[float] | None:
    values = [entry.get("ref_chosen_logp"), entry.get("ref_rejected_logp")]
    if all(is_missing(v) for v in values):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise Rejected("bad_json", f"{key}: ref_chosen_logp / ref_rejected_logp must both be finite numbers")
    return [float(v) for v in values]


@dataclass
class PreferenceConverter:
    """One preference record -> a Converted pair (or Rejected). Runs in worker processes, so it pickles."""

    image_root: Path
    limits: Limits

    def __call__(self, index: int, entry: Any) -> Converted:
        key = entry_key(entry, index)
        images = images_of(entry, key)
        if len(images) > self.limits.max_images:
            raise Rejected("too_many_images", f"{key}: {len(images)} > {self.limits.max_images}")
        meta: dict[str, Any] = {"id": key, "prompt": prompt_turns(entry, len(images), self.limits, key),
                                "chosen": answer_text(entry.get("chosen")),
                                "rejected": answer_text(entry.get("rejected"))}
        ref = reference_logps(entry, key)
        if ref is not None:
            meta["ref_logps"] = ref
        check_preference(meta, key, self.limits.allows_system)  # training's checks
        for answer in ("chosen", "rejected"):
            check_image_count({"conversations": preference_turns(meta, answer)}, len(images), key)
        chars = sum(len(t["value"]) for t in meta["prompt"]) + len(meta["chosen"]) + len(meta["rejected"])
        if chars > self.limits.max_chars:
            raise Rejected("too_long", f"{key}: {chars} characters > {self.limits.max_chars}")
        members, rotated = [], 0
        for position, image in enumerate(images):
            if isinstance(image, dict):  # a Hugging Face datasets Image: {"bytes": ..., "path": ...}
                image = image.get("bytes") or image.get("path")
            if isinstance(image, (bytes, bytearray)):
                data, what = bytes(image), f"{key} (embedded image {position})"
            else:
                data, what = read_image_file(self.image_root, image, self.limits.max_image_bytes)
            suffix, data, exif_rotated = image_member(data, position, self.limits, what)
            members.append((suffix, data))
            rotated += exif_rotated
        if members:
            meta["images"] = [suffix for suffix, _ in members]
        return Converted(index, meta, members, exif_rotated=rotated)


def load_records(path: str | Path) -> tuple[Iterator[Any], int]:
    """Records of a JSON list / JSON Lines file, or of a parquet file (read in batches, its known columns only)."""
    return read_records(path, FIELDS, batch_size=256)


def convert(inputs: list[str | Path], image_root: str | Path, options, limits: Limits | None = None) -> dict:
    """Convert preference files (one shard set). Returns the report."""
    converter = PreferenceConverter(Path(image_root), limits or Limits())
    return run_inputs(converter, "preference", inputs, [load_records(f) for f in inputs], image_root, options)


def main(argv: list[str] | None = None) -> dict:
    parser = files_parser(__doc__, "--input", "preference JSON / JSON Lines / parquet file(s)",
                          "conversations with images but no <image> mark get one per image before the first user "
                          "turn (RLAIF-V questions always do)")
    return run_command(parser, argv, lambda args: convert(
        args.input, args.image_root, options_from(args, args.name or Path(args.input[0]).stem),
        limits_from(args)))[1]
