"""Videos of benchmark items: where one lies (a file or a folder of frames) and its frames, sampled uniformly."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..processing.video import VIDEO_EXTENSIONS, VideoFrames, read_video
from ..rejection import Rejected

REJECTED_AS = {"too_many_pixels": "video over the pixel limit", "decode_error": "undecodable video",
               "empty_video": "video without frames"}


@dataclass(frozen=True)
class VideoSource:
    path: Path  # a video file or a folder of frame images
    frames: int  # sampled uniformly
    min_pixels: int | None = None  # each frame's pixel budget (None: the processor's)
    max_pixels: int | None = None


def find_video(video_dir: Path, video_id: str) -> Path:
    """`video_dir/<video_id>` as a folder of frames, else `video_dir/<video_id>.<ext>` for a video extension; it
    must lie inside video_dir (symbolic links resolved). Rejected when there is none."""
    if not video_id or "/" in video_id or "\\" in video_id or video_id in (".", ".."):
        raise Rejected("bad video id")
    root = Path(os.path.realpath(video_dir))
    candidates = [root / video_id] + [root / f"{video_id}.{ext}" for ext in VIDEO_EXTENSIONS]
    for path in candidates:
        if path.is_dir() or path.is_file():
            real = Path(os.path.realpath(path))
            if os.path.commonpath([root, real]) != str(root):
                raise Rejected("video outside the video folder")
            return real
    raise Rejected("missing video")


def open_video(source: VideoSource) -> VideoFrames:
    """The sampled frames; Rejected (counted as a skip at generation time) for a video that cannot be used."""
    path = source.path
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise Rejected("missing video", f"{path}: {e}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a FIFO would block the decoder
        raise Rejected("undecodable video", f"{path} is not a regular file or a folder")
    try:
        return read_video(path, source.frames).with_budget(source.min_pixels, source.max_pixels)
    except Rejected as e:
        raise Rejected(REJECTED_AS.get(e.reason, "undecodable video"), f"{path}: {e}") from e
