"""The Ovis2.5 configuration of `benchmarks/data_pipeline.py`: inputs at native resolution, the processor and the
DataModule that read them, and the model step they are compared with (`benchmarks/model_step.py --config ovis25`:
its model and its batch, from `ovis25_step.py`).

Inputs are made here, deterministically, so that the benchmark needs no download: "photos" are smooth colour fields
with ellipses and a little noise, saved as JPEG (quality 90), at several aspect ratios (4:3, 3:4, 16:9, 1:1, 2:1)
with the given longer side; each is a LLaVA-style one-image conversation written to shards by
data/convert_llava.py's converter. Kinds of input are registered in INPUTS: "images", and "video": MPEG-4 clips of
32 frames (a synthetic photo panning), LLaVA-Video records stored as the file and decoded by the loader (PyAV), 8
frames sampled uniformly, each within 448 x 448 pixels (the original recipe's video budget).

Measured (`python benchmarks/data_pipeline.py --config ovis25`: 64 photos per size, token budget 8192, pixels
448^2..1792x1344, 6 timed batches; 2 CPU cores shared with other work, load average 7.5), samples/s and visual
tokens/s with 1 / 2 loader workers:
  448 px longer side (upscaled to >= 448^2, 209 visual tokens/sample): 19.5 / 16.9 samples/s, 4089 / 3540 tokens/s
  896 px (571 visual tokens/sample): 5.8 / 5.5 samples/s, 3332 / 3126 tokens/s
  1792 px (at the max, 2014-2104 visual tokens/sample): 3.8 / 6.1 samples/s, 8014 / 12285 tokens/s
The training step of `model_step.py --config ovis25` (8 images, 861 visual tokens) took 31.76 s: 0.25 samples/s,
27.1 visual tokens/s, so the loader's slowest row delivers 115x what the step consumes.

Video (`python benchmarks/data_pipeline.py --config ovis25 --inputs video --sizes 448 896 --samples 24 --batches 4`,
token budget 8192, load average 0.9), samples/s and visual tokens/s with 1 / 2 loader workers:
  448 px longer side (1658 visual tokens/sample: 8 frames): 6.3 / 13.6 samples/s, 10469 / 22660 tokens/s
  896 px (1484 visual tokens/sample): 4.3 / 6.3 samples/s, 6423 / 9357 tokens/s
The same machine's model step (8 images, 861 visual tokens) took 2.7 s: 318.6 visual tokens/s, so the slowest video
row delivers 20x what the step consumes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ASPECTS = ((4, 3), (3, 4), (16, 9), (1, 1), (2, 1))  # width : height


def synthetic_photo(width: int, height: int, seed: int):
    """A deterministic RGB image with photo-like content for JPEG (smooth gradients, shapes, mild noise)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.5, 3, 2).tolist() + [rng.uniform(0, 6.3)]
        channels.append(127 + 90 * np.sin(fx * x / width * 6.3 + phase) * np.cos(fy * y / height * 6.3))
    array = np.stack(channels, -1) + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(array.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(max(2, width // 40), max(3, width // 6)))
        draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image


def write_images(directory: Path, size: int, n: int) -> Path:
    """n JPEGs with longer side `size` (aspect ratios cycling through ASPECTS); a LLaVA JSON naming them."""
    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        aw, ah = ASPECTS[i % len(ASPECTS)]
        width, height = (size, max(1, round(size * ah / aw))) if aw >= ah else (max(1, round(size * aw / ah)), size)
        synthetic_photo(width, height, seed=i).save(images / f"{i:04d}.jpg", quality=90)
        entries.append({"id": f"photo-{i}", "image": f"{i:04d}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe this photo in detail."},
            {"from": "gpt", "value": f"A synthetic photo of {width} by {height} pixels: coloured waves under a "
                                     "dozen overlapping discs of different sizes."}]})
    path = directory / "llava.json"
    path.write_text(json.dumps(entries))
    return path


CLIP_FRAMES, CLIP_FPS = 32, 8  # a 4-second clip; the loader samples DataModule.video_frames (8) of them uniformly


def write_videos(directory: Path, size: int, n: int) -> Path:
    """n MPEG-4 clips (PyAV, the `video` extra) of CLIP_FRAMES frames with longer side `size` (aspect ratios cycling
    through ASPECTS; sides even, as yuv420p needs): a synthetic photo panning across the frame. A LLaVA-Video-style
    JSON names them ("video": the file)."""
    import av
    import numpy as np

    videos = directory / "images"
    videos.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        aw, ah = ASPECTS[i % len(ASPECTS)]
        width, height = (size, round(size * ah / aw)) if aw >= ah else (round(size * aw / ah), size)
        width, height = max(2, width // 2 * 2), max(2, height // 2 * 2)
        scene = np.asarray(synthetic_photo(width * 2, height, seed=i))  # twice as wide: the pan's room
        with av.open(str(videos / f"{i:04d}.mp4"), mode="w") as container:
            stream = container.add_stream("mpeg4", rate=CLIP_FPS)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for k in range(CLIP_FRAMES):
                x = k * width // CLIP_FRAMES
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(scene[:, x:x + width]), format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        entries.append({"id": f"clip-{i}", "video": f"{i:04d}.mp4", "conversations": [
            {"from": "human", "value": "<video>\nDescribe what happens in this clip."},
            {"from": "gpt", "value": f"A {width} by {height} pan from left to right across coloured waves under a "
                                     "dozen overlapping discs of different sizes."}]})
    path = directory / "llava.json"
    path.write_text(json.dumps(entries))
    return path


# Kinds of input: (directory, size, count) -> a LLaVA-style JSON for data/convert_llava.py (its media beside it).
INPUTS: dict[str, Callable[[Path, int, int], Path]] = {"images": write_images, "video": write_videos}
# How the converter stores each kind's media: videos as the file, decoded by the training loader (the heavier path;
# `--video-store frames` of the converter would store the sampled frames as images instead)
VIDEO_STORE = {"video": "file"}
# Each video frame's pixel budget, as the original Ovis2.5 recipe (448 x 448 per frame, not a share of the image's)
VIDEO_PIXEL_BUDGETS = {"video_min_pixels": -1, "video_max_pixels": 448 * 448}


def write_model(directory: Path) -> Path:
    """The model of `model_step.py --config ovis25` (random, ovis-lit's export in the original layout)."""
    import ovis25_step

    ovis25_step.write_checkpoint(directory)
    return directory


def processor(checkpoint: Path, min_pixels: int, max_pixels: int, pixel_budgets: dict | None = None):
    """The checkpoint's processor (tokenizer, normalisation; patch 16, hidden_stride 2) with these pixel limits."""
    import ovis25_step

    from ovis_lit.processing.native_processor import NativeOvisProcessor

    return NativeOvisProcessor.from_pretrained(checkpoint, "qwen3", ovis25_step.VIT, pixel_budgets,
                                               min_pixels=min_pixels, max_pixels=max_pixels)


def datamodule(urls: list[str], proc, workers: int, token_budget: int | None, batch_size: int, max_length: int):
    from ovis_lit.data.datamodule import OvisDataModule

    dm = OvisDataModule({"photos": {"train": urls}}, ["photos"], batch_size=batch_size, num_workers=workers,
                        shuffle_buffer=64, max_length=max_length, token_budget=token_budget)
    dm.attach(proc)
    return dm


def model_step(checkpoint: Path, repeats: int = 2) -> dict:
    """Forward + backward of model_step.py --config ovis25's model on its batch (8 images, 861 visual tokens):
    what the training step consumes per second."""
    import statistics
    import time

    import ovis25_step
    import torch

    model, step = ovis25_step.ovis_lit(str(checkpoint))
    model.train()
    input_ids = ovis25_step.batch()[0]
    visual = int((input_ids == -300).sum())
    times = []
    for k in range(repeats + 1):
        started = time.perf_counter()
        step().backward()
        model.zero_grad(set_to_none=True)
        if k:  # the first is a warm-up
            times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    samples = input_ids.shape[0]
    return {"samples": samples, "visual_tokens": visual, "step_s": round(seconds, 2),
            "samples_per_s": round(samples / seconds, 2), "visual_tokens_per_s": round(visual / seconds, 1),
            "torch_threads": torch.get_num_threads()}
