"""What a converted sample must satisfy, and the checks that refuse the rest (`Rejected`, counted by reason).

The checks are training's own (`ovis_lit.data.validation`, and the guarded decoder
`processing.image_decoding`), so converted data is never skipped in training; the converter adds its limits on
top. Rejection reasons only a converter has: `missing_image`, `bad_image_path` (outside the image root),
`not_a_file` (a FIFO, device or directory), `image_too_large` (bytes), `too_many_images`, `empty_answer`,
`too_long` (characters), `bad_encoding` (not UTF-8, with its line).

Images are stored as their original bytes: their EXIF orientation is not applied (as in training, see
`processing.image_decoding`); the report counts those that declare one (`exif_rotated`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from ...constants import IMAGE_TOKEN
from ...processing.image_decoding import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, decode
from ...rejection import Rejected
from ..validation import check_caption as check_caption_sample
from ..validation import check_conversation, check_image_count, turn_role
from .text import Unparsable

# PIL format -> the member extension the training reader recognises (samples.IMAGE_EXTENSIONS)
FORMAT_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
                     "TIFF": "tiff"}


@dataclass
class Limits:
    """What a converted sample must satisfy (besides decoding)."""

    max_chars: int = 200_000  # characters of text (conversation or caption); longer entries are rejected
    max_images: int = 32  # images per sample
    max_image_pixels: int | None = MAX_IMAGE_PIXELS  # per image (a decompression-bomb guard)
    max_image_bytes: int | None = MAX_IMAGE_BYTES  # per image file read (or embedded)
    add_missing_image_token: bool = False  # LLaVA data that leaves `<image>` out: put one per image first
    allows_system: bool = True  # False for a chat format without a system turn (Gemma): such samples rejected


@dataclass
class Converted:
    """A validated sample: its JSON and its image members, ready to be written."""

    index: int
    meta: dict[str, Any]
    images: list[tuple[str, bytes]] = field(default_factory=list)  # (member suffix, bytes), in order
    exif_rotated: int = 0  # images whose EXIF orientation is not "as stored" (kept as stored; counted)
    json_bytes: bytes = b""  # the encoded meta, made in the worker (so that an unencodable one is a rejection)


def entry_id(entry: Any, index: int) -> str:
    if isinstance(entry, dict) and isinstance(entry.get("id"), (str, int)):
        return str(entry["id"])
    return str(index)


def object_entry_id(entry: Any, index: int) -> str:
    """The id of an input entry that is an object (a JSON object, a CSV / parquet row); Rejected for a record the
    reader could not parse (`Unparsable`: its reason, file and line) or one that is not an object (`bad_json`)."""
    if isinstance(entry, Unparsable):
        raise Rejected(entry.reason, f"{entry.where}: {entry.error}")
    if not isinstance(entry, dict):
        raise Rejected("bad_json", f"entry {index} is not an object")
    return entry_id(entry, index)


def image_member(data: bytes, position: int, limits: Limits, what: str) -> tuple[str, bytes, bool]:
    """Validate image bytes with the guarded decoder (within the byte and pixel limits, decoding completely, to
    RGB) and name their member by the format PIL found. Other formats are stored re-encoded as PNG.
    Returns (member suffix, bytes, whether its EXIF orientation is not "as stored")."""
    try:
        decoded = decode(data, limits.max_image_pixels, limits.max_image_bytes)
    except Rejected as exn:
        raise Rejected(exn.reason, f"{what}: {exn.detail}") from exn
    ext = FORMAT_EXTENSIONS.get(decoded.format or "")
    if ext is None:
        buf = io.BytesIO()
        decoded.image.save(buf, format="PNG")
        data, ext = buf.getvalue(), "png"
    return f"{position}.{ext}", data, decoded.exif_orientation != 1


def check_turns(conversations: Any, n_images: int, limits: Limits, key: str) -> list[dict]:
    """Training's checks on the conversation (`validation`), plus the converter's limits. Returns the turns to
    store (with `<image>` marks added first when `limits.add_missing_image_token` asks for them)."""
    check_conversation(conversations, key, limits.allows_system)
    turns = [dict(t) for t in conversations]
    marks = sum(t["value"].count(IMAGE_TOKEN) for t in turns)
    first_user = next((t for t in turns if turn_role(t) == "human"), None)
    if marks == 0 and n_images and limits.add_missing_image_token and first_user is not None:
        first_user["value"] = f"{IMAGE_TOKEN}\n" * n_images + first_user["value"]
    check_image_count({"conversations": turns}, n_images, key)
    if not any(t["value"].strip() for t in turns if turn_role(t) == "gpt"):
        raise Rejected("empty_answer", key)
    chars = sum(len(t["value"]) for t in turns)
    if chars > limits.max_chars:
        raise Rejected("too_long", f"{key}: {chars} characters > {limits.max_chars}")
    return turns


def check_caption(caption: Any, template: Any, limits: Limits, key: str) -> tuple[str, str | None]:
    """Training's checks on a caption and its template (`validation`), plus the converter's length limit."""
    check_caption_sample(caption, template, key)
    if len(caption) > limits.max_chars:
        raise Rejected("too_long", f"{key}: {len(caption)} characters > {limits.max_chars}")
    return caption, template
