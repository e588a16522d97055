"""LLaVA-style conversation JSON + an image folder -> WebDataset shards.

Input: a JSON list (or JSON Lines) of {"id", "image": "rel/path" | ["p1", "p2", ...] (optional; also "images"),
"conversations": [{"from": "human"|"gpt"|"system", "value": "...<image>..."}]}; image paths are relative to
`--image-root` and must stay inside it (see `files`). An entry without images is a text-only sample. An entry may
hold a video instead ("video": a file or a folder of frames, or "video_frames": [paths]; LLaVA-Video's layout),
stored as sampled frames (see `video`). The file may start with a UTF-8 BOM; an entry holding bytes that are not
UTF-8 is rejected (`bad_encoding`, with its line).

    python data/convert_llava.py --json llava_v1_5_mix665k.json --image-root /data/llava --output shards/llava
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...rejection import Rejected
from .checks import Converted, Limits, check_turns, image_member, object_entry_id
from .cli import files_parser, limits_from, options_from, run_command
from .files import read_image_file
from .runner import run_inputs
from .text import load_json_entries
from .video import VideoOptions, add_video_arguments, convert_video_entry, has_video, video_options_from


def load_entries(path: str | Path) -> list[Any]:
    """The entries of a JSON list or a JSON Lines file (records that do not parse become Unparsable)."""
    return load_json_entries(path)


def image_list(entry: dict, key: str) -> list[Any]:
    images = entry.get("image", entry.get("images"))
    if images is None or images == "":
        return []
    if isinstance(images, str):
        return [images]
    if isinstance(images, list):
        return images
    raise Rejected("bad_json", f"{key}: 'image' is neither a path nor a list of paths")


@dataclass
class ConversationConverter:
    """One LLaVA entry -> a Converted sample (or Rejected). Runs in worker processes, so it pickles."""

    image_root: Path
    limits: Limits
    video: VideoOptions = field(default_factory=VideoOptions)  # entries with a "video" / "video_frames" (`video`)

    def __call__(self, index: int, entry: Any) -> Converted:
        key = object_entry_id(entry, index)
        if has_video(entry):
            converted = convert_video_entry(self.image_root, entry, key, self.limits, self.video)
            converted.index = index
            return converted
        names = image_list(entry, key)
        if len(names) > self.limits.max_images:
            raise Rejected("too_many_images", f"{key}: {len(names)} > {self.limits.max_images}")
        turns = check_turns(entry.get("conversations"), len(names), self.limits, key)
        members, rotated = [], 0
        for position, name in enumerate(names):
            data, what = read_image_file(self.image_root, name, self.limits.max_image_bytes)
            suffix, data, exif_rotated = image_member(data, position, self.limits, what)
            members.append((suffix, data))
            rotated += exif_rotated
        meta: dict[str, Any] = {"id": key, "conversations": turns}
        if members:
            meta["images"] = [suffix for suffix, _ in members]
        return Converted(index, meta, members, exif_rotated=rotated)


def convert(json_files: list[str | Path], image_root: str | Path, options, limits: Limits | None = None,
            video: VideoOptions | None = None) -> dict:
    """Convert LLaVA JSON files (one shard set). Returns the report."""
    lists = [load_entries(f) for f in json_files]
    converter = ConversationConverter(Path(image_root), limits or Limits(), video or VideoOptions())
    return run_inputs(converter, "llava", json_files, [(rows, len(rows)) for rows in lists], image_root, options)


def main(argv: list[str] | None = None) -> dict:
    parser = files_parser(__doc__, "--json", "LLaVA-style JSON / JSON Lines file(s)",
                          "entries with images but no <image> mark get one per image before the first user turn")
    add_video_arguments(parser)
    return run_command(parser, argv, lambda args: convert(
        args.json, args.image_root, options_from(args, args.name or Path(args.json[0]).stem), limits_from(args),
        video_options_from(args)))[1]
