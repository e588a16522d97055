"""The video of a sample record: which members hold it, its checks, and its frames.

A conversation record may carry one video instead of images (a sample holds images or one video, as in Ovis2.5).
Its JSON names the video under "video", in one of two ways:
- a list of member names, the frames in order (`<key>.v000.png`, ...): what the converters and the shapes data
  write, so that training decodes images only and needs no video library;
- one member name holding an encoded video file (`<key>.video.mp4`): decoded with PyAV when the sample is read
  (the `video` extra), frames sampled uniformly.
Either way `frames` frames at most are used, sampled uniformly (`processing.video.uniform_indices`). The
conversation holds one `<video>` mark where the video goes (LLaVA-Video's `<image>` mark is rewritten to it by the
converters).

Ovis2.5 takes the frames as one visual input (stacked on the temporal axis, `-303 ... -304`). Models without a
video input (Ovis 1.6 / Ovis2) get the frames as images, the `<video>` mark replaced by one `<image>` line per frame,
as the original Ovis2 code feeds a video.

Unusable videos raise Rejected with the image reasons (`missing_image`, `decode_error`, `too_many_pixels`,
`empty_video`), so bad videos are counted like bad images; a "video" field that is not a name or a list of names is
`bad_json`, a `<video>` mark count that does not match is `invalid_sample`.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from ..constants import IMAGE_TOKEN, VIDEO_TOKEN
from ..processing.image_decoding import MAX_IMAGE_PIXELS, decode_image, to_rgb
from ..processing.video import DEFAULT_FRAMES, VideoFrames, decode_video, uniform_indices
from ..rejection import Rejected

VIDEO_FIELD = "video"


def has_video(meta: dict) -> bool:
    return meta.get(VIDEO_FIELD) is not None


def video_members(meta: dict, key: str = "") -> list[str] | str | None:
    """The member names of the video: a list of frames, one encoded-video member, or None (no video)."""
    names = meta.get(VIDEO_FIELD)
    if names is None:
        return None
    if isinstance(names, str) and names:
        return names
    if isinstance(names, list) and names and all(isinstance(n, str) and n for n in names):
        return names
    raise Rejected("bad_json", f"{key}: 'video' must be a member name or a non-empty list of frame member names")


def count_video_marks(meta: dict) -> int:
    return sum(turn["value"].count(VIDEO_TOKEN) for turn in meta.get("conversations", ()))


def check_video(meta: dict, key: str = "") -> None:
    """A checked conversation (`validation.check_meta`): one `<video>` mark exactly when it has a video, and then no
    images (a sample holds images or one video)."""
    members = video_members(meta, key)
    marks = count_video_marks(meta) if "conversations" in meta else 0
    if members is None:
        if marks:
            raise Rejected("invalid_sample", f"{key}: {marks} {VIDEO_TOKEN} marks but no video")
        return
    if "conversations" not in meta:
        raise Rejected("invalid_sample", f"{key}: a caption sample cannot hold a video")
    if marks != 1:
        raise Rejected("invalid_sample", f"{key}: a video sample needs one {VIDEO_TOKEN} mark, has {marks}")
    if meta.get("images"):
        raise Rejected("invalid_sample", f"{key}: a sample holds images or one video, not both")


def record_video(record: dict, meta: dict, frames: int = DEFAULT_FRAMES,
                 max_pixels: int | None = MAX_IMAGE_PIXELS) -> VideoFrames | None:
    """The sample's video as frames (at most `frames`, sampled uniformly), or None when it has none."""
    key = record.get("__key__")
    members = video_members(meta, key)
    if members is None:
        return None
    try:
        if isinstance(members, str):
            return decode_video(_member(record, members, key), frames, max_pixels)
        return VideoFrames(_frame(record, members[i], key, max_pixels) for i in uniform_indices(len(members), frames))
    except Rejected as exn:
        raise Rejected(exn.reason, f"{key}: video: {exn}") from exn


def _member(record: dict, name: str, key: Any) -> Any:
    if name not in record or name.startswith("__"):
        raise Rejected("missing_image", f"{key}: no member {name!r}")
    data = record[name]
    if not isinstance(data, (bytes, bytearray, memoryview, Image.Image)):
        raise Rejected("decode_error", f"{key}: {name} is not an image or a video")
    return data


def _frame(record: dict, name: str, key: Any, max_pixels: int | None) -> Image.Image:
    data = _member(record, name, key)
    return to_rgb(data) if isinstance(data, Image.Image) else decode_image(data, max_pixels)


def video_as_images(conversations: list[dict], n_frames: int) -> list[dict]:
    """For a model without a video input: the `<video>` mark becomes one `<image>` line per frame (Ovis2's way)."""
    frames_text = "".join(f"{IMAGE_TOKEN}\n" for _ in range(n_frames))
    out = []
    for turn in conversations:
        value = turn["value"]
        if VIDEO_TOKEN in value:
            value = value.replace(f"{VIDEO_TOKEN}\n", frames_text).replace(VIDEO_TOKEN, frames_text)
        out.append({**turn, "value": value})
    return out
