"""Videos as frames: uniform frame sampling, decoding with PyAV (the optional `video` extra), folders of frames.

A video reaches the model as a list of RGB frames (`VideoFrames`), which the Ovis2.5 processor stacks on the
temporal axis of one visual input (`NativeResolutionPreprocessor.video`). Frames are sampled uniformly: all of
them when the video has at most `n` frames, otherwise the middle frame of each of `n` equal strides (the rule of the
original Ovis code's frame sampling).

Everything that cannot be used raises `Rejected` (the image decoder's exception, so that training skips and
counts a bad video exactly like a bad image, and converters reject it under the same reason): `decode_error` for a
corrupt, truncated or unreadable video or frame, `too_many_pixels` for frames over the pixel limit (checked before
any frame is decoded), `empty_video` for a video or folder without frames.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image

from ..rejection import Rejected
from .image_decoding import MAX_IMAGE_PIXELS, decode_image

DEFAULT_FRAMES = 8
FRAME_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff")
VIDEO_EXTENSIONS = ("mp4", "mkv", "webm", "avi", "mov", "m4v", "mpg", "mpeg", "flv", "ts", "gifv")
# A decoded video that ends this much before the duration its container declares was cut short (a truncated file
# whose header survived): the larger of a few frame periods and a share of the duration, so that the rounding of
# timestamps is never taken for truncation. (A Matroska/WebM file declares only the container's duration, which an
# audio track longer than the video would stretch: more than 5% longer, such a file is refused as truncated.)
TRUNCATION_SLACK_FRAMES = 2
TRUNCATION_SLACK_FRACTION = 0.05


class VideoFrames(list):
    """The frames of one video, in order: a list of PIL images that a processor takes as one video (`<video>`),
    not as separate images. `min_pixels` / `max_pixels`: the pixel budget of each frame, when the video's source
    sets one (None: the processor's own)."""

    min_pixels: int | None = None
    max_pixels: int | None = None

    def with_budget(self, min_pixels: int | None, max_pixels: int | None) -> VideoFrames:
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        return self


def uniform_indices(total: int, n: int) -> list[int]:
    """Which of `total` frames to keep: all when total <= n, else the middle frame of each of n equal strides."""
    if n < 1:
        raise ValueError(f"the number of frames to sample must be positive, got {n}")
    if total <= n:
        return list(range(total))
    return [int((i + 0.5) * total / n) for i in range(n)]


def natural_key(name: str) -> list:
    """"frame_2.png" before "frame_10.png"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def is_video_name(name: str) -> bool:
    return name.rsplit(".", 1)[-1].lower() in VIDEO_EXTENSIONS


def frame_files(folder: str | Path) -> list[Path]:
    """The image files of a folder of frames, in natural name order (subfolders and other files ignored)."""
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
    except OSError as exn:
        raise Rejected("decode_error", f"{folder}: cannot list the frames ({type(exn).__name__}: {exn})") from exn
    files = [p for p in entries if p.suffix[1:].lower() in FRAME_EXTENSIONS and p.is_file()]
    if not files:
        raise Rejected("empty_video", f"{folder}: no frame images")
    return sorted(files, key=lambda p: natural_key(p.name))


def sample_frame_files(folder: str | Path, n: int = DEFAULT_FRAMES) -> list[Path]:
    files = frame_files(folder)
    return [files[i] for i in uniform_indices(len(files), n)]


def read_frame_folder(folder: str | Path, n: int = DEFAULT_FRAMES,
                      max_pixels: int | None = MAX_IMAGE_PIXELS) -> VideoFrames:
    """`n` frames sampled uniformly from a folder of frame images, each decoded completely."""
    return VideoFrames(decode_image(path, max_pixels) for path in sample_frame_files(folder, n))


def _av():
    try:
        import av
    except ImportError as exn:  # an optional extra: only videos stored as files need it
        raise ImportError("decoding video files needs PyAV: pip install 'ovis-lit[video]'") from exn
    return av


def decode_video(data: bytes | str | Path, n: int = DEFAULT_FRAMES,
                 max_pixels: int | None = MAX_IMAGE_PIXELS) -> VideoFrames:
    """`n` frames sampled uniformly from an encoded video (bytes or a file), as RGB images.

    Two passes: the first only demuxes (no decoding) to count the video stream's frames, the second decodes and
    keeps the sampled ones. A video that fails to open or demux, whose frames decode to fewer than it holds, or that
    ends well before the frame count or duration its container declares (a truncated file whose index survived)
    is refused as `decode_error`."""
    av = _av()
    source = io.BytesIO(bytes(data)) if isinstance(data, (bytes, bytearray, memoryview)) else str(data)
    try:
        with av.open(source, mode="r") as container:
            if not container.streams.video:
                raise Rejected("decode_error", "no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if max_pixels is not None and width * height > max_pixels:
                raise Rejected("too_many_pixels", f"{width} x {height} frames > {max_pixels} pixels")
            total = sum(1 for packet in container.demux(stream) if packet.size)
            declared, seconds = _declared_length(container, stream)
            if declared and total < declared:
                raise Rejected("decode_error", f"truncated: {total} of the {declared} frames it declares")
            if total == 0:
                raise Rejected("empty_video", "no frames")
            period = float(1 / stream.average_rate) if stream.average_rate else 0.0
            wanted = uniform_indices(total, n)
            keep = set(wanted)
            container.seek(0, stream=stream)
            frames, decoded, end = {}, 0, 0.0
            for frame in container.decode(stream):
                if frame.width * frame.height > (max_pixels or float("inf")):
                    raise Rejected("too_many_pixels", f"a {frame.width} x {frame.height} frame")
                if decoded in keep:
                    frames[decoded] = frame.to_image()  # RGB
                if frame.time is not None:
                    end = max(end, frame.time + period)
                decoded += 1
    except Rejected:
        raise
    except ImportError:
        raise
    except Exception as exn:  # av.error.* (InvalidDataError, EOFError, ...), OSError, ValueError, MemoryError
        raise Rejected("decode_error", f"{type(exn).__name__}: {exn}") from exn
    if decoded < total or any(i not in frames for i in wanted):
        raise Rejected("decode_error", f"truncated: {decoded} of {total} frames decode")
    if seconds and end < seconds - max(TRUNCATION_SLACK_FRAMES * (period or 0.05), TRUNCATION_SLACK_FRACTION * seconds):
        raise Rejected("decode_error", f"truncated: frames end at {end:.2f} s of the declared {seconds:.2f} s")
    return VideoFrames(frames[i] for i in wanted)


def _declared_length(container, stream) -> tuple[int, float | None]:
    """(frames, seconds) the container declares for the video stream (0 / None when it does not say)."""
    declared = int(stream.frames or 0)
    seconds = None
    if stream.duration is not None and stream.time_base is not None:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration is not None:  # microseconds, all streams
        seconds = container.duration / 1_000_000
    return declared, seconds


def read_video(source: bytes | str | Path, n: int = DEFAULT_FRAMES,
               max_pixels: int | None = MAX_IMAGE_PIXELS) -> VideoFrames:
    """A video file's (or bytes') frames, or a folder of frames, `n` sampled uniformly."""
    if isinstance(source, (str, Path)) and Path(source).is_dir():
        return read_frame_folder(source, n, max_pixels)
    return decode_video(source, n, max_pixels)


def as_frames(images: list[Image.Image]) -> VideoFrames:
    return images if isinstance(images, VideoFrames) else VideoFrames(images)
