"""Data-pipeline throughput: samples/s that OvisDataModule's training loader delivers (tar reading, JPEG decoding,
dynamic partition into 384 px crops with max_partition 9, tokenising, collating) with 1 and 2 worker processes, on
real photos at several sizes, beside the forward+backward time of the tiny model on the same batches.

    python benchmarks/data_pipeline.py [--sizes 512 1024 2048] [--workers 1 2] [--samples 64] [--json out.json]
    python benchmarks/data_pipeline.py --config ovis25 [--inputs images|video] [--sizes 448 896 1792] [--token-budget N]

Photos: the sample photos that ship with scikit-image (pip install scikit-image; astronaut, coffee, chelsea,
rocket, hubble_deep_field, retina, immunohistochemistry), resized so that their longer side is each --sizes value,
saved as JPEG (quality 90), written as LLaVA-style one-image conversations with data/convert_llava.py's converter.
Model: conf/model/ovis_tiny.yaml at 384 px (ViT 3 x 128, patch 16, hidden_stride 2 -> 144 visual tokens per crop;
LLM 4 x 192), fp32 on this machine's CPU with the torch threads OMP_NUM_THREADS allows; the batch is one the
pipeline made (batch size 8, up to 10 crops per image). Timings are medians after a warm-up.

`--config ovis25`: Ovis2.5 at native resolution (inputs, processor and model in `native_data.py`): samples/s and
visual tokens/s of the training loader (JPEG decoding, smart_resize within --min-pixels..--max-pixels, default the
original's 448^2..1792x1344, patchifying, tokenising, batching by --token-budget), beside what the training step
of `model_step.py --config ovis25` consumes (its model and batch: 8 images, 861 visual tokens). Visual tokens are
the -300 ids of the batches, one per token the LLM sees for an image or a video. `--inputs video`: MPEG-4 clips
(32 frames, stored as the file, decoded by the loader with PyAV, 8 frames sampled, each within 448 x 448 pixels as
the original recipe's video budget).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")
HOLD = Path("/tmp/hold")  # on shared machines: a timed run elsewhere pauses niced processes while this exists


def wait_for_cpu() -> None:
    while HOLD.exists():
        time.sleep(1)


def write_photos(directory: Path, size: int, n: int) -> Path:
    """n JPEGs (cycling through the photos), longer side `size`; and a LLaVA JSON naming them."""
    import numpy as np
    import skimage.data
    from PIL import Image

    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        name = PHOTOS[i % len(PHOTOS)]
        photo = Image.fromarray(np.asarray(getattr(skimage.data, name)())).convert("RGB")
        w, h = photo.size
        scale = size / max(w, h)
        photo = photo.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
        photo.save(images / f"{i:04d}.jpg", quality=90)
        entries.append({"id": f"{name}-{i}", "image": f"{i:04d}.jpg", "conversations": [
            {"from": "human", "value": "<image>\nDescribe this photo in detail."},
            {"from": "gpt", "value": f"A photo ({name.replace('_', ' ')}), {w} by {h} pixels before resizing, "
                                     "with its main subject near the centre and a plain background."}]})
    path = directory / "llava.json"
    path.write_text(json.dumps(entries))
    return path


def compose_tiny_384(data_dir: Path, batch_size: int):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("train", overrides=[
            "stage=s3", f"paths.data_dir={data_dir}", f"paths.output_dir={data_dir}", "logger=csv",
            "model.spec.backbone.config.image_size=384", "processor.image.side=384",
            "processor.max_partition=9", "model.spec.llm.config.max_position_embeddings=8192",
            f"recipe.s3.batch_size={batch_size}", "recipe.s3.max_length=8192",
        ])


def ovis16_datamodule(cfg, urls: str, workers: int):
    from ovis_lit.training.run import build_processor, instantiate_datamodule, stage_settings

    stage = stage_settings(cfg)["data"]
    stage["use"] = ["photos"]
    dm = instantiate_datamodule(cfg, None, **stage, sources={"photos": {"train": urls}}, prepare=None, heldout=None,
                                num_workers=workers, shuffle_buffer=64)
    dm.attach(build_processor(cfg))
    return dm


def pipeline_rate(make_datamodule, workers: int, batches: int) -> dict:
    """Samples/s and visual tokens/s of the training loader in steady state (the first batch, which includes worker
    start-up and filling the shuffle buffer, is not timed)."""
    from ovis_lit.constants import IMAGE_ATOM_ID

    for attempt in range(3):
        wait_for_cpu()
        dm = make_datamodule(workers)
        it = iter(dm.train_dataloader())
        started = time.perf_counter()
        first = next(it)
        startup = time.perf_counter() - started
        held = HOLD.exists()
        started = time.perf_counter()
        n = visual = 0
        for _ in range(batches):
            batch = next(it)
            n += batch["input_ids"].shape[0]
            visual += int((batch["input_ids"] == IMAGE_ATOM_ID).sum())
            held |= HOLD.exists()
        seconds = time.perf_counter() - started
        del it
        if not held:
            break
    return {"workers": workers, "samples_per_s": round(n / seconds, 1),
            "visual_tokens_per_s": round(visual / seconds), "first_batch_s": round(startup, 2),
            "samples_per_batch": round(n / batches, 1), "visual_tokens_per_sample": round(visual / n, 1),
            # Ovis 1.6: crops; Ovis2.5: patches (hidden_stride^2 per visual token)
            ("patches_per_sample" if "grid_thws" in first else "crops_per_sample"):
                round(first["pixel_values"].shape[0] / first["input_ids"].shape[0], 2),
            # ids per sample: every visual token is one id (the LLM's length)
            "ids_per_sample": round(float(first["attention_mask"].sum()) / first["input_ids"].shape[0], 1),
            "paused_by_hold": held}


def model_step(cfg, batch, repeats: int = 3) -> dict:
    import torch

    from ovis_lit.training.run import build_stage

    module = build_stage(cfg).module  # train.py's module for this stage (freezing included)
    module.configure_model()
    model = module.model.train()
    times = []
    for k in range(repeats + 1):
        wait_for_cpu()
        started = time.perf_counter()
        out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["pixel_values"])
        out.loss.backward()
        model.zero_grad(set_to_none=True)
        if k:  # the first is a warm-up
            times.append(time.perf_counter() - started)
    step = statistics.median(times)
    b = batch["input_ids"].shape[0]
    return {"batch": b, "crops": int(batch["pixel_values"].shape[0]), "step_s": round(step, 3),
            "samples_per_s": round(b / step, 2), "torch_threads": torch.get_num_threads()}


def main_ovis25(args) -> None:
    import native_data
    from ovis_lit.data.convert.runner import Options
    from ovis_lit.data.convert.llava import convert
    from ovis_lit.data.convert.video import VideoOptions

    results = {"config": "ovis25", "inputs": args.inputs, "token_budget": args.token_budget,
               "pixels": [args.min_pixels, args.max_pixels], "sizes": {}, "cpu_count": os.cpu_count(),
               "load_avg": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = native_data.write_model(tmp / "model")
        proc = native_data.processor(checkpoint, args.min_pixels, args.max_pixels, native_data.VIDEO_PIXEL_BUDGETS)
        video = VideoOptions(store=native_data.VIDEO_STORE.get(args.inputs, "frames"))
        for size in args.sizes or [448, 896, 1792]:
            directory = tmp / f"{args.inputs}{size}"
            source = native_data.INPUTS[args.inputs](directory, size, args.samples)
            wait_for_cpu()
            report = convert([source], directory / "images", Options(output=directory / "shards", prefix="photos",
                                                                     workers=1, progress=False, maxcount=16),
                             video=video)
            urls = report["urls"]["train"]
            rows = [pipeline_rate(lambda w: native_data.datamodule(urls, proc, w, args.token_budget, args.batch_size,
                                                                   args.max_length), w, args.batches)
                    for w in args.workers]
            results["sizes"][size] = {"convert_samples_per_s": report["samples_per_s"], "pipeline": rows}
            print(f"{size:>5} px  " + "  ".join(
                f"{p['workers']} worker(s): {p['samples_per_s']:>6} samples/s, {p['visual_tokens_per_s']:>7} visual "
                "tokens/s" for p in rows) + f"  ({rows[0]['visual_tokens_per_sample']} visual tokens/sample, "
                f"{rows[0]['samples_per_batch']} samples/batch)", flush=True)
            if rows[0]["visual_tokens_per_sample"] == 0:
                raise RuntimeError(f"no visual token reached the batches of {args.inputs} at {size} px")
        wait_for_cpu()
        m = results["model_step"] = native_data.model_step(checkpoint)
        print(f"model_step.py --config ovis25 step (batch of {m['samples']} images, {m['visual_tokens']} visual "
              f"tokens): forward+backward {m['step_s']} s = {m['samples_per_s']} samples/s, "
              f"{m['visual_tokens_per_s']} visual tokens/s on {m['torch_threads']} CPU thread(s)")
        slowest = min(p["visual_tokens_per_s"] for row in results["sizes"].values() for p in row["pipeline"])
        print(f"slowest pipeline row / model step: {slowest / m['visual_tokens_per_s']:.1f}x the visual tokens/s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", choices=["ovis16", "ovis25"], default="ovis16",
                        help="ovis16: crops of the tiny Ovis at 384 px; ovis25: native resolution (native_data.py)")
    parser.add_argument("--inputs", default="images", help="ovis25: the kind of input (native_data.INPUTS)")
    parser.add_argument("--min-pixels", type=int, default=448 * 448, help="ovis25: per image")
    parser.add_argument("--max-pixels", type=int, default=1792 * 1344, help="ovis25: per image")
    parser.add_argument("--token-budget", type=int, default=8192,
                        help="ovis25: visual + text tokens per batch (0: --batch-size samples per batch)")
    parser.add_argument("--max-length", type=int, default=8192, help="ovis25: ids per sample")
    parser.add_argument("--sizes", type=int, nargs="+", default=None,
                        help="longer side of the photos (default 512 1024 2048; ovis25: 448 896 1792)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="data-loader worker counts")
    parser.add_argument("--samples", type=int, default=64, help="photos per size")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=6, help="timed batches per measurement")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.config == "ovis25":
        args.token_budget = args.token_budget or None
        return main_ovis25(args)
    args.sizes = args.sizes or [512, 1024, 2048]

    from ovis_lit.data.convert.llava import convert
    from ovis_lit.data.convert.runner import Options

    results = {"sizes": {}, "cpu_count": os.cpu_count(), "load_avg": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = compose_tiny_384(tmp, args.batch_size)
        for size in args.sizes:
            directory = tmp / f"p{size}"
            source = write_photos(directory, size, args.samples)
            wait_for_cpu()
            report = convert([source], directory / "images", Options(output=directory / "shards", prefix="photos",
                                                                     workers=1, progress=False, maxcount=16))
            row = {"convert_samples_per_s": report["samples_per_s"],
                   "jpeg_kb": round(sum(p.stat().st_size for p in (directory / "images").glob("*.jpg"))
                                    / args.samples / 1024, 1),
                   "pipeline": [pipeline_rate(lambda w: ovis16_datamodule(cfg, report["urls"]["train"], w), w,
                                              args.batches) for w in args.workers]}
            results["sizes"][size] = row
            print(f"{size:>5} px  convert {row['convert_samples_per_s']:>6} samples/s (1 process, validating)  "
                  + "  ".join(f"{p['workers']} worker(s): {p['samples_per_s']:>6} samples/s" for p in row["pipeline"])
                  + f"  ({row['pipeline'][0]['crops_per_sample']} crops/sample, {row['jpeg_kb']} KB/JPEG)", flush=True)
        # the model step on a batch of the largest photos
        dm = ovis16_datamodule(cfg, report["urls"]["train"], 0)
        batch = next(iter(dm.train_dataloader()))
        results["model_step"] = model_step(cfg, batch)
        m = results["model_step"]
        print(f"tiny model at 384 px, batch {m['batch']} ({m['crops']} crops): forward+backward {m['step_s']} s "
              f"= {m['samples_per_s']} samples/s on {m['torch_threads']} CPU thread(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
