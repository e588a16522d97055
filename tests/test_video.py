"""Videos: decoding and uniform frame sampling, bad videos skipped and counted, converters to shards to a tiny
Ovis2.5 forward, the shapes videos, and the video benchmark end to end."""

import hashlib
import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict
from PIL import Image

from ovis_lit.constants import IMAGE_ATOM_ID
from ovis_lit.data import shapes, shapes_video
from ovis_lit.data.samples import SampleBuilder
from ovis_lit.data.stream import BatchStream, Source
from ovis_lit.processing.native_resolution import NATIVE_VIDEO_END_ID, NATIVE_VIDEO_START_ID
from ovis_lit.processing.video import VideoFrames, decode_video, read_frame_folder, uniform_indices
from ovis_lit.rejection import Rejected

from .conftest import REPO

av = pytest.importorskip("av")

FRAMES, SIDE = 20, 32


def grey_video(path: Path | None = None, n: int = FRAMES, fmt: str = "mp4", faststart: bool = True) -> bytes:
    """A video whose frame i is uniformly grey at 10 * i (so a decoded frame tells which it was)."""
    target = str(path) if path else io.BytesIO()
    options = {"movflags": "faststart"} if fmt == "mp4" and faststart and path else {}
    with av.open(target, mode="w", format=fmt, options=options) as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = SIDE, SIDE, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((SIDE, SIDE, 3), 10 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path).read_bytes() if path else target.getvalue()


def frame_number(image: Image.Image) -> int:
    return round(float(np.asarray(image)[..., 0].mean()) / 10)


# ------------------------------------------------------------------------------------------------ decoding
def test_uniform_indices_take_the_middle_of_equal_strides():
    assert uniform_indices(20, 4) == [2, 7, 12, 17]
    assert uniform_indices(3, 8) == [0, 1, 2]  # fewer frames than asked: all of them
    assert uniform_indices(8, 8) == list(range(8))


@pytest.mark.parametrize("fmt", ["mp4", "matroska"])
def test_a_video_decodes_to_n_uniformly_sampled_frames(tmp_path, fmt):
    data = grey_video(tmp_path / f"v.{fmt}", fmt=fmt)
    frames = decode_video(data, 4)
    assert isinstance(frames, VideoFrames) and [f.size for f in frames] == [(SIDE, SIDE)] * 4
    assert [frame_number(f) for f in frames] == [2, 7, 12, 17]
    assert [frame_number(f) for f in decode_video(tmp_path / f"v.{fmt}", 30)] == list(range(FRAMES))


def test_a_folder_of_frames_is_sampled_in_natural_order(tmp_path):
    for i in range(FRAMES):
        Image.new("RGB", (SIDE, SIDE), (10 * i,) * 3).save(tmp_path / f"frame_{i}.png")
    (tmp_path / "notes.txt").write_text("not a frame")
    assert [frame_number(f) for f in read_frame_folder(tmp_path, 4)] == [2, 7, 12, 17]


@pytest.mark.parametrize("damage", ["truncated_mp4", "truncated_mkv", "garbage", "empty"])
def test_corrupt_or_truncated_videos_are_refused_as_decode_errors(tmp_path, damage):
    mp4, mkv = grey_video(tmp_path / "v.mp4"), grey_video(tmp_path / "v.mkv", fmt="matroska")
    data = {"truncated_mp4": mp4[: len(mp4) * 2 // 3], "truncated_mkv": mkv[: len(mkv) // 2],
            "garbage": b"\x00\x01not a video" * 50, "empty": b""}[damage]
    with pytest.raises(Rejected) as info:
        decode_video(data, 4)
    assert info.value.reason == "decode_error"


def test_frames_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    with pytest.raises(Rejected, match="too_many_pixels"):
        decode_video(grey_video(tmp_path / "v.mp4"), 4, max_pixels=SIDE * SIDE - 1)


# ------------------------------------------------------------------------------------------------ the model side
def _ovis25_tiny(tmp_path):
    from ovis_lit.model.build import build_ovis
    from ovis_lit.training.run import build_processor

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["model=ovis25_tiny", f"paths.output_dir={tmp_path}"])
    torch.manual_seed(0)
    return build_ovis(OmegaConf.to_container(cfg.model.spec, resolve=True)), build_processor(cfg)


def test_a_query_with_video_frames_is_one_visual_input_on_the_temporal_axis(tmp_path):
    _, processor = _ovis25_tiny(tmp_path)
    frames = VideoFrames(Image.new("RGB", (48, 48), (20 * i, 0, 0)) for i in range(4))
    sample = processor.query("Which way?", frames)
    assert sample.grid_thws.tolist() == [[4, 6, 6]]  # t = frames, 8 px patches
    ids = sample.input_ids
    start, end = ids.index(NATIVE_VIDEO_START_ID), ids.index(NATIVE_VIDEO_END_ID)
    assert ids[start + 1 : end] == [IMAGE_ATOM_ID] * (4 * 9)  # 4 frames x 3 x 3 merged tokens


# ------------------------------------------------------------------------------------------------ training stream
def _write_shard(path: Path, records: list[dict]) -> str:
    import webdataset as wds

    with wds.TarWriter(str(path)) as sink:
        for record in records:
            sink.write(record)
    return str(path)


def _conversation(mark: str = "<video>") -> list[dict]:
    turns = [{"from": "human", "value": f"{mark}\nWhich way does it move?"}, {"from": "gpt", "value": "left"}]
    return turns


def test_corrupt_and_truncated_videos_in_a_shard_are_skipped_and_counted(tmp_path):
    _, processor = _ovis25_tiny(tmp_path)
    mp4 = grey_video(tmp_path / "v.mp4")
    png = lambda i: shapes._png(Image.new("RGB", (32, 32), (10 * i,) * 3))
    meta = lambda video: json.dumps({"conversations": _conversation(), "video": video}).encode()
    shard = _write_shard(tmp_path / "v.tar", [
        {"__key__": "frames", "json": meta(["v0.png", "v1.png", "v2.png"]), **{f"v{i}.png": png(i) for i in range(3)}},
        {"__key__": "file", "json": meta("video.mp4"), "video.mp4": mp4},
        {"__key__": "truncated", "json": meta("video.mp4"), "video.mp4": mp4[: len(mp4) // 2]},
        {"__key__": "corrupt", "json": meta("video.mkv"), "video.mkv": b"\x1aE\xdf\xa3 garbage" * 40},
        {"__key__": "bad_frame", "json": meta(["v0.png", "v1.png"]), "v0.png": png(0), "v1.png": png(1)[:60]},
        {"__key__": "no_frames", "json": meta(["v0.png"])},
    ])
    builder = SampleBuilder(processor, max_length=512, video_frames=4)
    stream = BatchStream([Source("video", (shard,))], builder, processor.collate, batch_size=8, train=False)
    batches = list(stream)
    assert sum(len(b["keys"]) for b in batches) == 2
    skipped = Counter()
    for b in batches:
        skipped.update(b["skipped"])
    assert skipped == {"decode_error": 3, "missing_image": 1}
    grids = batches[0]["grid_thws"].tolist()
    assert grids == [[3, 4, 4], [4, 4, 4]]  # three stored frames; four sampled from the 20-frame file


# ------------------------------------------------------------------------------------------------ converters
def test_a_converted_video_record_trains_the_tiny_ovis25(tmp_path):
    from ovis_lit.data.convert.llava import convert
    from ovis_lit.data.convert.runner import Options
    from ovis_lit.data.convert.video import VideoOptions
    from ovis_lit.data.datamodule import OvisDataModule

    root = tmp_path / "videos"
    (root / "clips").mkdir(parents=True)
    grey_video(root / "clips" / "a.mp4")
    (root / "frames" / "b").mkdir(parents=True)
    for i in range(6):
        Image.new("RGB", (48, 16), (30 * i, 90, 10)).save(root / "frames" / "b" / f"{i}.jpg")
    (root / "clips" / "cut.mp4").write_bytes((root / "clips" / "a.mp4").read_bytes()[:900])
    entries = [  # LLaVA-Video (its <image> mark), an Ovis2 folder and frame list, then bad ones
        {"id": "llava-video", "video": "clips/a.mp4", "conversations": _conversation("<image>")},
        {"id": "folder", "video": "frames/b", "conversations": _conversation()},
        {"id": "list", "video_frames": [f"frames/b/{i}.jpg" for i in range(6)], "conversations": _conversation()},
        {"id": "truncated", "video": "clips/cut.mp4", "conversations": _conversation()},
        {"id": "missing", "video": "clips/none.mp4", "conversations": _conversation()},
        {"id": "two_marks", "video": "clips/a.mp4", "conversations": _conversation("<video><video>")},
    ]
    (tmp_path / "data.json").write_text(json.dumps(entries))
    report = convert([tmp_path / "data.json"], root, Options(tmp_path / "shards", "vid", workers=1, progress=False),
                     video=VideoOptions(frames=4))
    assert report["written"]["train"] == 3
    assert report["rejected"] == {"decode_error": 1, "invalid_sample": 1, "missing_image": 1}

    model, processor = _ovis25_tiny(tmp_path)
    dm = OvisDataModule({"vid": {"train": report["urls"]["train"]}}, ["vid"], batch_size=3, num_workers=0,
                        shuffle_buffer=1, max_length=256, processor=processor)
    batch = next(iter(dm.train_dataloader()))
    assert sorted(batch["grid_thws"].tolist()) == [[4, 2, 6], [4, 2, 6], [4, 4, 4]]
    assert batch["skipped"] == {}
    model.train()
    out = model(batch["input_ids"], batch["attention_mask"], batch["labels"], batch["pixel_values"],
                grid_thws=batch["grid_thws"])
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert model.visual_tokenizer.backbone.embeddings.patch_embedding.weight.grad.abs().sum() > 0


def test_the_file_store_keeps_the_video_and_training_samples_it(tmp_path):
    from ovis_lit.data.convert.checks import Limits
    from ovis_lit.data.convert.llava import ConversationConverter
    from ovis_lit.data.convert.video import VideoOptions

    grey_video(tmp_path / "a.mp4")
    converter = ConversationConverter(tmp_path, Limits(), VideoOptions(frames=5, store="file"))
    converted = converter(0, {"id": "x", "video": "a.mp4", "conversations": _conversation()})
    assert converted.meta["video"] == "video.mp4" and converted.images[0][0] == "video.mp4"
    _, processor = _ovis25_tiny(tmp_path)
    record = {"__key__": "x", "json": json.dumps(converted.meta).encode(), "video.mp4": converted.images[0][1]}
    sample = SampleBuilder(processor, max_length=512, video_frames=5)(record)
    low, high = processor.pixel_budgets.limits(0, 5)  # each frame within the video budget
    _, grid, _ = processor.image_preprocessor.video(decode_video(tmp_path / "a.mp4", 5), low, high)
    assert sample.grid_thws.tolist() == [list(grid)] and grid[0] == 5


def test_models_without_a_video_input_get_the_frames_as_images():
    from ovis_lit.processing.image import ImagePreprocessor
    from ovis_lit.processing.processor import OvisProcessor
    from ovis_lit.processing.tokenizer import byte_level_tokenizer

    processor = OvisProcessor(byte_level_tokenizer("qwen"), "qwen", ImagePreprocessor(side=42), tokens_per_crop=4)
    frames = {f"v{i}.png": shapes._png(Image.new("RGB", (42, 42), (60 * i, 0, 0))) for i in range(3)}
    meta = {"conversations": _conversation(), "video": sorted(frames)}
    sample = SampleBuilder(processor, max_length=512)({"__key__": "k", "json": json.dumps(meta).encode(), **frames})
    assert sample.n_crops == 3  # one crop per frame (a frame among several images is not partitioned)


# ------------------------------------------------------------------------------------------------ shapes videos
def test_the_image_data_is_unchanged():
    """The same seeds give the same images as before the video data was added (pinned fingerprint)."""
    rng = np.random.default_rng(123)
    digest = hashlib.sha256()
    for _ in range(300):
        digest.update(shapes.draw_scene(shapes.random_scene(rng), rng).tobytes())
    assert digest.hexdigest() == "0aa0c87e9174aaabe7b8c26e62c8c49e7bc588dbad06d799fc9978877ca19bed"


def _centre(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image).astype(int)
    ys, xs = np.nonzero(np.abs(pixels - pixels[0, 0]).sum(-1) > 60)
    return np.array([xs.mean(), ys.mean()])


def test_motion_videos_move_the_way_their_answer_says_and_order_videos_add_the_second_shape_later():
    rng = np.random.default_rng(0)
    moves = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    seen = Counter()
    for _ in range(60):
        frames, direction = shapes_video.motion_video(rng)
        seen[direction] += 1
        steps = np.diff(np.stack([_centre(f) for f in frames]), axis=0)
        assert (np.sign(np.round(steps)) == np.array(moves[direction])).all()
        frames, first, second = shapes_video.order_video(rng)
        assert first != second
        counts = [len(np.unique(np.asarray(f).reshape(-1, 3), axis=0)) for f in frames]
        assert counts[0] > 1  # the first shape is there from the start
    assert set(seen) == set(moves)


def test_video_shards_read_into_samples_that_need_the_frames(tmp_path):
    _, processor = _ovis25_tiny(tmp_path)
    [shard] = shapes_video.write_video_shards(tmp_path, "train", 12, seed=11, shards=1)
    stream = BatchStream([Source("video", (str(shard),))], SampleBuilder(processor, max_length=256),
                         processor.collate, batch_size=12, train=False)
    [batch] = list(stream)
    assert batch["skipped"] == {} and batch["grid_thws"].tolist() == [[shapes_video.FRAMES, 6, 6]] * 12


# ------------------------------------------------------------------------------------------------ benchmark
def test_the_video_benchmark_scores_a_tiny_ovis25_export_end_to_end(tmp_path):
    from ovis_lit.evaluation.entry import evaluate
    from ovis_lit.interop.ovis25 import export_ovis25

    model, processor = _ovis25_tiny(tmp_path)
    export = export_ovis25(model, processor, tmp_path / "export")
    questions = tmp_path / "videomme" / "test.json"
    shapes_video.write_video_mc(questions, 5, seed=13)  # folders of frames under videomme/test/
    video_dir = questions.with_suffix("")
    grey_video(video_dir / "clip.mp4")
    (video_dir / "cut.mp4").write_bytes((video_dir / "clip.mp4").read_bytes()[:900])
    rows = json.loads(questions.read_text())
    extra = {**rows[0], "options": ["A. a", "B. b", "C. c", "D. d"], "answer": "B"}
    rows += [{**extra, "question_id": "mp4", "videoID": "clip"}, {**extra, "question_id": "cut", "videoID": "cut"},
             {**extra, "question_id": "gone", "videoID": "nowhere"}]
    questions.write_text(json.dumps(rows))

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("eval", overrides=[
            f"checkpoint={export}", "benchmark=[shapes_video,videomme]", f"benchmarks.shapes_video.path={questions}",
            f"benchmarks.shapes_video.video_dir={video_dir}", f"benchmarks.videomme.path={questions}",
            f"benchmarks.videomme.video_dir={video_dir}", "benchmarks.videomme.max_new_tokens=3",
            # the tiny model's budget (an export keeps the original's 448 x 448 minimum)
            *(f"benchmarks.{b}.{k}={v}" for b in ("shapes_video", "videomme") for k, v in
              (("min_pixels", 256), ("max_pixels", 4096))),
            f"output_dir={tmp_path / 'out'}", "progress=false", "device=cpu",
        ])
    with open_dict(cfg):
        cfg.pop("hydra", None)
    metrics = evaluate(cfg)
    assert metrics["shapes_video"]["questions"] == metrics["videomme"]["questions"] == 6  # 5 shapes + the mp4
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for name in ("shapes_video", "videomme"):
        assert summary["benchmarks"][name]["skipped"] == {"missing video": 1, "undecodable video": 1}
    assert 0.0 <= metrics["videomme"]["accuracy"] <= 1.0
    assert summary["benchmarks"]["videomme"]["max_pixels"] == 4096
    first = json.loads((tmp_path / "out" / "predictions" / "videomme.jsonl").read_text().splitlines()[0])
    assert first["prompt"].startswith("Select the best answer") and first["prompt"].endswith("The best answer is:")


def test_the_shapes_data_builds_videos_only_for_models_with_a_video_input(tmp_path):
    from ovis_lit.data.shapes import ensure_shapes_dataset
    from ovis_lit.training.run import build_processor, instantiate_datamodule

    from .helpers import compose_train

    asked = []
    for model, videos in (("ovis_tiny", False), ("ovis25_tiny", True)):
        cfg = compose_train([f"model={model}", "stage=s3"], tmp_path, tmp_path)
        dm = instantiate_datamodule(cfg, prepare=lambda **kw: asked.append(kw))
        dm.attach(build_processor(cfg))
        dm.prepare_data()  # the DataModule tells the builder whether the attached model reads videos (and thinks)
        told = asked.pop()
        assert told.pop("sources") == sorted(dm.use)  # the sets the stage draws from (optional ones built on use)
        assert told == {"videos": videos, "thinking": videos}
    ensure_shapes_dataset(tmp_path / "a", scale=0.001, videos=True)
    assert sorted(p.name for p in (tmp_path / "a").glob("video-*.tar")) == \
        ["video-train-000000.tar", "video-train-000001.tar", "video-train-000002.tar", "video-train-000003.tar",
         "video-val-000000.tar"]
    assert len(json.loads((tmp_path / "a" / "video-mc-test.json").read_text())) == 1
