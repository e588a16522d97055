"""Run one benchmark on an in-memory model: load items, generate (batched, greedy), score, time."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from tqdm.auto import tqdm

from ..model.ovis import OvisModel
from ..processing.image_decoding import decode_image
from ..processing.processor import OvisProcessor
from ..rejection import Rejected
from .benchmarks.base import Benchmark, Item, Scores
from .generation import generate_answers
from .tsv import image_bytes
from .video import open_video

log = logging.getLogger(__name__)


@dataclass
class BenchmarkResult:
    name: str
    benchmark: dict[str, Any]  # kind, path, pinned prompt, max_new_tokens
    scores: Scores
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows not scored
    seconds: float = 0.0  # generation only

    @property
    def samples_per_s(self) -> float:
        return round(len(self.scores.predictions) / self.seconds, 2) if self.seconds else 0.0


# What an image the guarded decoder refuses is counted as in a benchmark's `skipped` (the phrases evaluation
# summaries have always shown; the decoder's own reasons are training's snake_case codes)
EVAL_REASONS = {
    "decode_error": "undecodable image",
    "too_many_pixels": "image over the pixel limit",
    "missing_image": "missing image file",
    "not_a_file": "unreadable image file",
    "image_too_large": "unreadable image file",
}


def _decoded(item: Item) -> list[Image.Image]:
    """The item's images (or its video's sampled frames), through the guarded decoders training uses (Rejected
    for any that cannot be used)."""
    if item.video is not None:  # VideoFrames: the processor takes them as one video
        return open_video(item.video)
    return [decode_image(image_bytes(source)) for source in item.images]


def generate_for(
    model: OvisModel,
    processor: OvisProcessor,
    items: list[Item],
    max_new_tokens: int,
    batch_size: int = 8,
    progress: bool = True,
    desc: str = "generating",
) -> tuple[list[Item], list[str], Counter]:
    """Answers for the items whose images decode (images are decoded one batch at a time, to bound memory).
    Returns (answered items, answers, skip counts)."""
    answered: list[Item] = []
    answers: list[str] = []
    skipped: Counter = Counter()
    with tqdm(total=len(items), desc=desc, disable=not progress, unit="sample") as bar:
        for start in range(0, len(items), batch_size):
            chunk, queries = [], []
            for item in items[start : start + batch_size]:
                try:
                    queries.append((item.prompt, _decoded(item)))
                    chunk.append(item)
                except Rejected as e:  # the decoder and the file reader raise only this
                    skipped[EVAL_REASONS.get(e.reason, e.reason)] += 1
                    log.warning("%s %s: %s", desc, item.key, e)
            if queries:
                try:
                    answers += generate_answers(model, processor, queries, batch_size=len(queries),
                                                max_new_tokens=max_new_tokens, progress=False)
                    answered += chunk
                except Rejected:
                    # The processor refused an image the decoder accepted (e.g. an aspect ratio Ovis2.5's resize
                    # cannot represent) before anything was generated: answer this chunk's items one at a time, so
                    # only the refused ones are skipped (left padding: the batch size never changes an answer).
                    for item, query in zip(chunk, queries):
                        try:
                            answers += generate_answers(model, processor, [query], batch_size=1,
                                                        max_new_tokens=max_new_tokens, progress=False)
                            answered.append(item)
                        except Rejected as e:
                            skipped[EVAL_REASONS.get(e.reason, e.reason)] += 1
                            log.warning("%s %s: %s", desc, item.key, e)
            bar.update(len(items[start : start + batch_size]))
    return answered, answers, skipped


# metrics that count things: they stay numbers (0) when nothing was scored; every other metric becomes None
COUNT_METRICS = frozenset({"questions", "rows", "images", "failed_extractions", "empty_answers", "judge_failures",
                           "judge_calls", "random_guesses"})


def unscored(scores: Scores) -> Scores:
    """The scores of a benchmark with no scored item: no score (None), not a 0.0 that reads like a result."""
    metrics = {k: (v if k in COUNT_METRICS else None) for k, v in scores.metrics.items()}
    return Scores(metrics, scores.predictions, {**scores.details, "unscored": "no item was scored"})


def run_benchmark(
    model: OvisModel,
    processor: OvisProcessor,
    benchmark: Benchmark,
    name: str | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    progress: bool = True,
    items: list[Item] | None = None,
) -> BenchmarkResult:
    """`items`: the benchmark's items when the caller has loaded them already."""
    name = name or benchmark.kind
    items = benchmark.load() if items is None else items
    if limit is not None:
        items = items[:limit]
    started = time.perf_counter()
    answered, answers, skipped = generate_for(model, processor, items, benchmark.max_new_tokens, batch_size,
                                              progress, desc=name)
    seconds = time.perf_counter() - started
    scores = benchmark.score(answered, answers)
    if not answered:
        scores = unscored(scores)
        log.warning("%s: no item was scored (%d loaded, skipped: %s): no score is reported", name, len(items),
                    dict(skipped + benchmark.skipped) or "nothing")
    for item, prediction in zip(answered, scores.predictions):
        prediction["prompt"] = item.prompt
    skipped.update(benchmark.skipped)
    return BenchmarkResult(name, benchmark.describe(), scores, dict(sorted(skipped.items())), round(seconds, 3))
