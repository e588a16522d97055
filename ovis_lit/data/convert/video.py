"""Conversation entries whose visual input is a video: LLaVA-Video and Ovis-style records -> sample records.

An entry names its video in one of these ways (paths relative to the image root, and held inside it as image paths
are, see `files`):
- `"video": "clips/x.mp4"`: a video file (LLaVA-Video-178K, Ovis2); decoded with PyAV (the `video` extra);
- `"video": "clips/x/"`: a folder of frame images (natural name order);
- `"video_frames": ["x/0001.jpg", ...]`: the frames listed in order (Ovis2).
`frames` frames are sampled uniformly (`processing.video.uniform_indices`). With `store="frames"` (the default) the
shard carries the sampled frames as image members `<key>.v0.png`, ... (decoded video frames are stored as PNG,
losslessly; frame files keep their own bytes), named in order by the JSON's "video", so that training needs neither
the video files nor a video decoder. With `store="file"` it carries the video file itself (`<key>.video.mp4`, checked
to decode), and training samples its frames when it reads it (`SampleBuilder.video_frames`).

The conversation holds one `<video>` mark: LLaVA-Video marks the video with `<image>`, which is rewritten to
`<video>` when the entry has no images; an entry with no mark gets one before its first user turn only with
`add_missing_image_token`. Unreadable videos are rejected under the image reasons (`decode_error` for a corrupt or
truncated file, `too_many_pixels`, `missing_image`, `not_a_file`, `image_too_large` for a file over
`max_video_bytes`), and `empty_video` for a video or folder without frames.
"""

from __future__ import annotations

import argparse
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...constants import IMAGE_TOKEN, VIDEO_TOKEN
from ...processing.video import DEFAULT_FRAMES, decode_video, frame_files, is_video_name, uniform_indices
from ...rejection import Rejected
from ..validation import turn_role
from ..video_records import check_video
from .checks import Converted, Limits, check_turns, image_member
from .files import read_image_file, resolve_image

MAX_VIDEO_BYTES = 2**30  # 1 GiB per video file (read into memory to be decoded)


@dataclass
class VideoOptions:
    frames: int = DEFAULT_FRAMES  # frames sampled uniformly from each video
    store: str = "frames"  # "frames": the sampled frames as images; "file": the video file (decoded in training)
    max_video_bytes: int | None = MAX_VIDEO_BYTES

    def __post_init__(self):
        if self.store not in ("frames", "file"):
            raise ValueError(f"video store must be 'frames' or 'file', got {self.store!r}")
        if self.frames < 1:
            raise ValueError(f"video frames must be positive, got {self.frames}")


def has_video(entry: dict) -> bool:
    return entry.get("video") not in (None, "") or entry.get("video_frames") not in (None, [])


def video_marks(turns: list[dict], add_missing: bool) -> list[dict]:
    """One `<video>` mark: LLaVA-Video's single `<image>` becomes `<video>`; none at all gets one before the first
    user turn when `add_missing` asks for it. Anything else is left for the checks to refuse."""
    turns = [dict(t) for t in turns]
    videos = sum(t["value"].count(VIDEO_TOKEN) for t in turns)
    images = sum(t["value"].count(IMAGE_TOKEN) for t in turns)
    if videos == 0 and images == 1:
        for turn in turns:
            turn["value"] = turn["value"].replace(IMAGE_TOKEN, VIDEO_TOKEN)
    elif videos == 0 and images == 0 and add_missing:
        first_user = next((t for t in turns if turn_role(t) == "human"), None)
        if first_user is not None:
            first_user["value"] = f"{VIDEO_TOKEN}\n{first_user['value']}"
    return turns


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _frames_from_files(root: Path, names: list[Any], options: VideoOptions, limits: Limits) -> tuple[list, int]:
    """The sampled frame files' members (their own bytes, checked to decode) and how many declare an EXIF turn."""
    members, rotated = [], 0
    for position, i in enumerate(uniform_indices(len(names), options.frames)):
        data, what = read_image_file(root, names[i], limits.max_image_bytes)
        suffix, data, exif_rotated = image_member(data, position, limits, what)
        members.append((f"v{suffix}", data))
        rotated += exif_rotated
    return members, rotated


def _folder_names(root: Path, name: str) -> list[str]:
    """The frame files of a folder named relative to root, as names relative to root (so each is checked to lie
    inside it when read)."""
    files = frame_files(resolve_image(root, name))
    return [f"{name.rstrip('/')}/{f.name}" for f in files]


def video_members(root: Path, entry: dict, key: str, options: VideoOptions, limits: Limits
                  ) -> tuple[list[tuple[str, bytes]], list[str] | str, int]:
    """(members, the JSON's "video" value, EXIF-rotated frames) for the entry's video."""
    frames = entry.get("video_frames")
    if frames not in (None, []):
        if entry.get("video") not in (None, ""):
            raise Rejected("bad_json", f"{key}: both 'video' and 'video_frames'")
        if not isinstance(frames, list) or not all(isinstance(f, str) for f in frames):
            raise Rejected("bad_json", f"{key}: 'video_frames' is not a list of paths")
        members, rotated = _frames_from_files(root, frames, options, limits)
        return members, [m for m, _ in members], rotated
    name = entry.get("video")
    if not isinstance(name, str):
        raise Rejected("bad_json", f"{key}: 'video' is not a path")
    if os.path.isdir(resolve_image(root, name)):
        members, rotated = _frames_from_files(root, _folder_names(root, name), options, limits)
        return members, [m for m, _ in members], rotated
    if not is_video_name(name):
        raise Rejected("decode_error", f"{key}: {name!r} is neither a folder nor a video file by its extension")
    data, what = read_image_file(root, name, options.max_video_bytes)
    try:
        decoded = decode_video(data, options.frames, limits.max_image_pixels)
    except Rejected as exn:
        raise Rejected(exn.reason, f"{what}: {exn}") from exn
    if options.store == "file":
        member = f"video.{name.rsplit('.', 1)[-1].lower()}"
        return [(member, data)], member, 0
    members = [(f"v{i}.png", _png(frame)) for i, frame in enumerate(decoded)]
    return members, [m for m, _ in members], 0


def convert_video_entry(root: Path, entry: dict, key: str, limits: Limits, options: VideoOptions) -> Converted:
    """One conversation entry with a video -> a Converted sample (index set by the caller), or Rejected."""
    if entry.get("image", entry.get("images")) not in (None, "", []):
        raise Rejected("invalid_sample", f"{key}: a sample holds images or one video, not both")
    conversations = entry.get("conversations")
    if isinstance(conversations, list) and all(isinstance(t, dict) and isinstance(t.get("value"), str)
                                               for t in conversations):
        conversations = video_marks(conversations, limits.add_missing_image_token)
    turns = check_turns(conversations, 0, limits, key)
    members, video, rotated = video_members(root, entry, key, options, limits)
    meta: dict[str, Any] = {"id": key, "conversations": turns, "video": video}
    check_video(meta, key)  # training's check: one <video> mark
    return Converted(0, meta, members, exif_rotated=rotated)


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("video")
    g.add_argument("--video-frames", type=int, default=DEFAULT_FRAMES,
                   help=f"frames sampled uniformly from each video (default {DEFAULT_FRAMES})")
    g.add_argument("--video-store", choices=("frames", "file"), default="frames",
                   help="store the sampled frames (default) or the video file (decoded in training, needs PyAV)")
    g.add_argument("--max-video-bytes", type=int, default=MAX_VIDEO_BYTES,
                   help=f"bytes per video file at most (default {MAX_VIDEO_BYTES})")


def video_options_from(args: argparse.Namespace) -> VideoOptions:
    return VideoOptions(frames=args.video_frames, store=args.video_store, max_video_bytes=args.max_video_bytes)
